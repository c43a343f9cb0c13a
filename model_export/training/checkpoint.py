"""Checkpoints: atomic writes, ``torch.load(..., weights_only=True)``-loadable content, RNG state capture.

Two files in the run folder:

``latest.pt`` (resume): ``{"format": "invsr-train/1", "family", "step", "wall_time_s", "config",
"model": <family state: nets, optimizers, ema>, "rng": <python / numpy / torch states of rank 0>,
"rng_ranks": <the same for every DDP process, in rank order>,
"data": {"next_sample": step * batch, "batch_size", "seed"}, "log": {...}}``.

``model_<arch>_x<scale>.pt`` (export, evaluation): ``{"format": "invsr-model/1", "family", "arch", "arch_kwargs",
"scale", "params_ema": <EMA state dict, BasicSR naming>, "config", "meta": {step, wall_time_s, val_psnr,
parameters, data, torch, saved}}``. ``params_ema`` is also where BasicSR keeps its EMA weights, so tools that
read BasicSR files read these.

Only tensors, dicts, lists, strings, numbers, booleans and None are stored (RNG states as tensors / lists).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAIN_FORMAT = "invsr-train/1"
MODEL_FORMAT = "invsr-model/1"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint, loaded with ``weights_only=True`` (a checkpoint is untrusted input)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def get_rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": int(py[0]), "state": list(py[1]), "gauss": py[2]},
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
