"""Checkpoints: atomic writes, ``torch.load(..., weights_only=True)``-loadable content, RNG state capture.

Two files in the run folder:

``latest.pt`` (resume): ``{"format": "invsr-train/1", "family", "step", "wall_time_s", "config",
"model": <family state: nets, optimizers, ema>, "rng": <python / numpy / torch states of rank 0>,
"rng_ranks": <the same for every DDP process, in rank order>,
"data": {"next_sample": step * batch, "batch_size", "seed"}, "log": {...}}``.

``model_<arch>_x<scale>.pt`` (export, evaluation): ``{"format": "invsr-model/1", "family", "arch", "arch_kwargs",
"scale", "params_ema": <EMA state dict, BasicSR naming>, "config", "meta": {step, wall_time_s, val_psnr,
parameters, data, torch, saved}}``, plus any other key of the family's ``export_payload`` (the diffusion family's
``prior``: its frozen condition network). ``params_ema`` is also where BasicSR keeps its EMA weights, so tools that
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


def compact(state: dict) -> dict:
    """``state`` (a ``latest.pt``) with the optimizers' moment tensors in bfloat16, for committing a resume point.

    Why: Adam's two moments are half of a checkpoint, and a resume point that lives in git is paid for in every
    clone. ``Optimizer.load_state_dict`` casts them back to the parameters' dtype, so a compacted file resumes
    like the original up to bfloat16 rounding of the moments (about 3 significant digits); the weights, the EMA
    and the RNG and data states are kept exactly.
    """

    def walk(obj: Any, in_optimizer: bool) -> Any:
        if isinstance(obj, dict):
            is_opt = in_optimizer or ("state" in obj and "param_groups" in obj)
            return {k: walk(v, is_opt) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v, in_optimizer) for v in obj]
        if in_optimizer and torch.is_tensor(obj) and obj.is_floating_point() and obj.numel() > 1:
            return obj.to(torch.bfloat16)
        return obj

    return {**state, "model": walk(state["model"], False)}


def main(argv: list[str] | None = None) -> int:
    """``python -m model_export.training.checkpoint compact IN OUT``: see :func:`compact`."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m model_export.training.checkpoint")
    p.add_argument("action", choices=["compact"])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    args = p.parse_args(argv)
    atomic_save(compact(load(args.src)), args.dst)
    print(f"wrote {args.dst} ({args.dst.stat().st_size / 1e6:.1f} MB, from {args.src.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
