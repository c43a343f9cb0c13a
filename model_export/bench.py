"""Speed benchmark: output megapixels per second of each model, ONNX Runtime against PyTorch eager, in one run.

::

    python -m model_export.bench [MODEL.onnx ...] [--size 128] [--threads 2] [--repeat 3]

Without arguments it measures every bundled ONNX model that has an ``invsr.arch`` this package can rebuild. For each
model it times, on the same random LR image and with the same number of threads:

- PyTorch eager: the architecture rebuilt from the file's ``invsr.arch`` / ``invsr.arch_options`` metadata, its
  weights copied from the ONNX initializers where the names match (speed does not depend on the values);
- ONNX Runtime: one session run on the whole image (what the model costs);
- the app's engine: ``Engine.upscale_array`` on the same image, tiling and blending included (what a user gets).

It prints megapixels of output per second and the ratios to PyTorch. The median of ``--repeat`` runs after one
warm-up run is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from model_export.archs import build_arch


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: session creation, allocator growth, oneDNN kernel selection
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_net(model: onnx.ModelProto) -> tuple[torch.nn.Module, int]:
    """The PyTorch twin of an exported model: same architecture and options, initializers copied by name."""
    meta = {p.key: p.value for p in model.metadata_props}
    net = build_arch(meta["invsr.arch"], **json.loads(meta.get("invsr.arch_options", "{}")))
    state = net.state_dict()
    for init in model.graph.initializer:
        if init.name in state and tuple(state[init.name].shape) == tuple(init.dims):
            state[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy()).to(state[init.name].dtype)
    net.load_state_dict(state)
    return net.eval(), int(float(meta["invsr.scale"]))


def bench_model(path: Path, size: int, threads: int, repeat: int) -> dict[str, float | str]:
    from invsr_desktop.engine.pipeline import Engine, EngineOptions
    from invsr_desktop.engine.registry import default_registry
    from invsr_desktop.engine.sessions import SessionPool
    from plugins.model_folder import read_metadata

    model = onnx.load(str(path))
    net, scale = torch_net(model)
    rng = np.random.default_rng(0)
    lr = rng.random((size, size, 3), dtype=np.float32)
    x = torch.from_numpy(lr.transpose(2, 0, 1)[None].copy())
    out_mp = (size * scale) ** 2 / 1e6

    torch.set_num_threads(threads)
    with torch.inference_mode():
        t_torch = median_seconds(lambda: net(x), repeat)

    session = SessionPool(provider="cpu", threads=threads).session(path)
    t_ort = median_seconds(lambda: session.run(["sr"], {"lr": x.numpy()}), repeat)

    backend_id = path.stem
    engine = Engine(default_registry(), EngineOptions(provider="cpu", threads=threads))
    meta = read_metadata(path)
    if backend_id in {s.id for s in engine.registry.backends()}:
        t_engine = median_seconds(lambda: engine.upscale_array(lr, backend_id, scale), repeat)
    else:
        t_engine = float("nan")
    return {
        "model": path.name,
        "name": meta.get("invsr.name", path.stem),
        "torch_mp_s": out_mp / t_torch,
        "ort_mp_s": out_mp / t_ort,
        "engine_mp_s": out_mp / t_engine,
        "ort_vs_torch": t_torch / t_ort,
        "engine_vs_torch": t_torch / t_engine,
    }


def bundled_models() -> list[Path]:
    from invsr_desktop.resources import MODELS

    found = []
    for path in sorted(MODELS.glob("*.onnx")):
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if meta.get("invsr.arch") in ("rrdbnet",):
            found.append(path)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_export.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", type=Path, help="ONNX files (default: the bundled feed-forward models)")
    parser.add_argument("--size", type=int, default=128, help="LR side in pixels (default 128)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after a warm-up (default 3)")
    args = parser.parse_args(argv)
    models = args.models or bundled_models()
    if not models:
        print("no models to measure", file=sys.stderr)
        return 3
    print(f"LR {args.size}x{args.size}, {args.threads} thread(s), median of {args.repeat}; output MP/s")
    print(f"| model | PyTorch eager | ONNX Runtime | engine (tiled) | ORT / PyTorch | engine / PyTorch |")
    print("|---|---|---|---|---|---|")
    for path in models:
        r = bench_model(path, args.size, args.threads, args.repeat)
        print(
            f"| {r['name']} | {r['torch_mp_s']:.3f} | {r['ort_mp_s']:.3f} | {r['engine_mp_s']:.3f} "
            f"| {r['ort_vs_torch']:.2f}x | {r['engine_vs_torch']:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
