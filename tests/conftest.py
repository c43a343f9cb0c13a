"""Fixtures shared by several test files.

``inn_models`` / ``models_dir``: tiny random-weight INN models, exported to ONNX like a trained one, so shrink and
restore run end to end (plugin, engine, CLI, job queue, GUI) without a trained model and without ``../shared``.
They need PyTorch (the ``[train]`` extra) to export; without it the tests that use them skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


def tiny_net(scale: int) -> Any:
    """An IRN with a few hundred parameters, its weights nudged off the identity-like initialisation."""
    import torch

    from model_export.archs import build_arch

    torch.manual_seed(scale)
    net = build_arch("irn", scale=scale, hidden=4, blocks=(1,) * (scale // 2), depth=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.03)
    return net.eval()


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The session's own cache folder (OpenVINO's compiled models, measured engine choices), never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="session")
def inn_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, Any]]:
    """A folder with tiny x2 and x4 INN models (both directions, ``tiny_x2`` / ``tiny_x4``) and their nets."""
    pytest.importorskip("torch")
    from model_export.export_inn import export_inn

    folder = tmp_path_factory.mktemp("inn_models")
    nets = {}
    for scale in (2, 4):
        nets[scale] = tiny_net(scale)
        export_inn(nets[scale], folder, f"tiny_x{scale}", trained_on="nothing (test)", check_size=(5, 7))
    return folder, nets


@pytest.fixture
def models_dir(
    inn_models: tuple[Path, dict[int, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Path, dict[int, Any]]:
    """The tiny INN models as the only models the plugins see (a bundled model would change what ``auto`` picks)."""
    folder, nets = inn_models
    monkeypatch.setenv("INVSR_MODELS_DIR", str(folder))
    monkeypatch.setattr("invsr_desktop.engine.model_files.bundled_models_dir", lambda: tmp_path / "no-bundled-models")
    return folder, nets
