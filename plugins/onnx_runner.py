"""The runner shared by backends that are one ONNX model mapping ``lr`` to ``sr`` (NCHW float32 RGB in [0, 1])."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class OnnxRunner:
    """Runs one tile through a session: (H, W, 3) -> (sH, sW, 3), float32."""

    session: Any
    scale: float
    multiple: int = 1
    extra_inputs: dict[str, np.ndarray] | None = None

    def __call__(self, tile: np.ndarray) -> np.ndarray:
        lr = np.ascontiguousarray(tile.transpose(2, 0, 1)[None], dtype=np.float32)
        feeds = {"lr": lr, **(self.extra_inputs or {})}
        (sr,) = self.session.run(["sr"], feeds)
        return sr[0].transpose(1, 2, 0)


def read_metadata(model_path: str | os.PathLike) -> dict[str, str]:
    """The model's metadata props (``invsr.scale``, ``invsr.arch``, ...) without loading its weights into ORT."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}
