"""``invsr-bench``: how fast every backend runs on this machine, on each inference path, in one run.

::

    invsr-bench [--backend ID ...] [--model FILE.onnx ...] [--size 512] [--threads 1] [--repeat 3] [--peers [--process]]
                [--json FILE]
    invsr-bench --memory 4000x3000 [--memory-scale 2] [--backend ID ...] [--threads N] [--json FILE]

For every registered backend (or those named) and every ``--model`` file, on the sample photo resized to a
``--size`` square, at the backend's native scale, through the app's own engine (tiling and the backend's loops
included, file I/O not):

- output megapixels per second, the median of ``--repeat`` runs after one warm-up run, on each path this machine
  offers: ONNX Runtime fp32 on the CPU (the baseline every ratio is against), OpenVINO f32, OpenVINO bf16 where the
  CPU runs it natively, the model's int8 copy (``invsr-quantize``) where it has one on ONNX Runtime (and on OpenVINO
  where the CPU has no bf16), and ONNX Runtime's GPU providers where installed;
- each path's agreement with the baseline (PSNR of the outputs, dB);
- on the baseline path, the tiling overhead: the engine's default tiles (overlap and blend) against one tile of
  the whole image;
- the achieved GFLOP/s (FLOPs of every model call, counted from the ONNX graph by :mod:`model_export.flops`)
  against this machine's attainable peak, measured in the same run by a large matrix product on the fastest CPU
  path with the same threads;
- with ``--peers``, the same network in PyTorch eager (what chaiNNer runs) and in ncnn (what Upscayl runs), and
  with ``--process`` the whole ``invsr-upscale`` process on the same image, each with its agreement with ONNX
  Runtime fp32 (:mod:`model_export.commands.bench_peers`).

It ends with the peak resident memory of the process. ``--memory WxH`` instead measures the peak resident memory of a
whole ``invsr-upscale`` run of a synthetic photo of that size per backend, against issue 22's bound
(:mod:`model_export.commands.bench_memory`; the diffusion sampler only where named: hours on a CPU at that size). ``--json`` writes everything as JSON. Imports torch only for
``--peers``: the command works with the app's own install.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from invsr_desktop.engine import openvino_sessions, provider_race
from invsr_desktop.engine.pipeline import Engine, EngineOptions
from invsr_desktop.engine.registry import Registry
from invsr_desktop.engine.sessions import SessionPool, available_providers
from model_export.flops import model_flops, shapes_of

PEAK_N = 2048  # the matrix product's side: 17 GFLOP, large enough to reach the kernels' steady state
INT8_CPU = "ONNX Runtime CPU int8"


@dataclass(frozen=True)
class InferencePath:
    """One inference path: what the engine is configured with, and the name the table prints."""

    name: str
    provider: str
    precision: str


def inference_paths(available: Sequence[str] | None = None, bf16: bool | None = None) -> list[InferencePath]:
    """The paths this machine offers, the ONNX Runtime CPU baseline first."""
    available = list(available if available is not None else available_providers())
    core = openvino_sessions.openvino_core()
    bf16 = bf16 if bf16 is not None else (core is not None and openvino_sessions.bf16_supported(core))
    # fast on ONNX Runtime is a model's int8 copy (a row only where there is one); on OpenVINO it is bf16 where the
    # CPU runs it natively, else the copy too (engine.sessions)
    paths = [InferencePath("ONNX Runtime CPU fp32", "cpu", "fp32"), InferencePath(INT8_CPU, "cpu", "fast")]
    if "OpenVINO" in available:
        paths.append(InferencePath("OpenVINO f32", "openvino", "fp32"))
        paths.append(InferencePath("OpenVINO bf16", "openvino", "fast") if bf16 else
                     InferencePath("OpenVINO int8", "openvino", "fast"))  # fmt: skip
    if "CUDAExecutionProvider" in available:
        paths.append(InferencePath("ONNX Runtime CUDA fp32", "cuda", "fp32"))
    if "TensorrtExecutionProvider" in available:
        paths.append(InferencePath("ONNX Runtime TensorRT fp16", "tensorrt", "fast"))
    return paths


class _CountedSession:
    """A session that records the input shapes of every call, so the FLOPs of a backend's run can be counted
    (a diffusion backend calls its model once per step; a tiled run once per tile)."""

    def __init__(self, session: Any, model: str, calls: Counter) -> None:
        self._session, self._model, self._calls = session, model, calls

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self._calls[(self._model, shapes_of(feeds))] += 1
        return self._session.run(output_names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


@dataclass
class CountingPool(SessionPool):
    """The engine's session pool, its sessions wrapped to count calls per (model file, input shapes)."""

    calls: Counter = field(default_factory=Counter)

    def session(self, model: Any, precision: Any = None) -> Any:
        inner = super().session(model, precision)
        key = model if isinstance(model, bytes) else str(Path(model).resolve())
        return _CountedSession(inner, key, self.calls)


def photo_input(size: int) -> np.ndarray:
    """The bundled sample photo resized to ``size`` x ``size`` (H, W, 3) float32 in [0, 1]: every path's input. A
    photo, not noise: the int8 paths are calibrated on photos, and uniform noise drives their activations past the
    calibrated ranges (esrgan-faithful-x4's int8 copy: 47 dB against fp32 on Set5, 25 dB on noise)."""
    from PIL import Image

    from invsr_desktop.resources import SAMPLES

    with Image.open(SAMPLES / "astronaut.png") as photo:
        resized = photo.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(resized, np.float32) / 255.0


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: compilation, allocator growth, kernel selection
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@dataclass
class Row:
    backend: str
    path: str
    seconds: float
    output_mp_s: float
    vs_baseline: float
    psnr_vs_fp32: float | None
    gflop: float | None
    gflop_s: float | None
    of_peak: float | None
    note: str = ""
    tiling_overhead: float | None = None  # the engine's default tiles against one whole-image tile (baseline row)


def gflop_of(calls: Counter, runs: int) -> float | None:
    """GFLOPs of one run from the calls recorded over ``runs`` runs (None when a model was held in memory)."""
    total = 0.0
    for (model, shapes), n in calls.items():
        if isinstance(model, bytes):
            return None
        total += model_flops(model, shapes).total * n
    return total / runs / 1e9


def measure_backend(
    registry: Registry, backend: str, size: int, threads: int, repeat: int, paths: Sequence[InferencePath], peak: float
) -> list[Row]:
    """One row per path for one backend, the first path being the baseline of the ratios and the PSNR."""
    spec = registry.get(backend)
    scale = spec.scales[-1] if spec.direction == "up" else spec.scales[0]
    target = (size * scale, size * scale) if spec.direction == "up" else (size // scale, size // scale)
    image = photo_input(size)
    rows: list[Row] = []
    reference: np.ndarray | None = None
    for path in paths:
        engine = Engine(registry, EngineOptions(provider=path.provider, threads=threads, precision=path.precision))
        engine.sessions = pool = CountingPool(path.provider, threads, precision=path.precision)  # type: ignore[arg-type]
        try:
            _, runner = engine.runner(backend, scale)
            run = lambda: engine.run_array(image, spec, runner, target)  # noqa: E731
            output = run()
            if path.name.endswith("int8") and not any(p.endswith("int8") for p in pool.paths_in_use()):
                continue  # no int8 copy beside this backend's model: the row would repeat the fp32 one
            pool.calls.clear()
            seconds = median_seconds(run, repeat)
        except Exception as exc:  # a path that cannot run this backend is a row that says why, not a crash
            rows.append(Row(backend, path.name, float("nan"), float("nan"), float("nan"), None, None, None, None,
                            f"failed: {exc}"))  # fmt: skip
            continue
        out_mp = output.shape[0] * output.shape[1] / 1e6
        gflop = gflop_of(pool.calls, repeat + 1)
        gflop_s = gflop / seconds if gflop is not None else None
        overhead = None
        if reference is None:
            reference, baseline = output, seconds
            overhead = tiling_overhead(registry, backend, scale, image, target, threads, repeat, path, seconds)
        rows.append(Row(
            backend, path.name, seconds, out_mp / seconds, baseline / seconds,
            None if output is reference else psnr(output, reference), gflop, gflop_s,
            gflop_s / peak if gflop_s is not None and peak else None,
            ", ".join(pool.paths_in_use()), overhead,
        ))  # fmt: skip
    return rows


def tiling_overhead(registry: Registry, backend: str, scale: int, image: np.ndarray, target: tuple[int, int],
                    threads: int, repeat: int, path: InferencePath, tiled_seconds: float) -> float | None:
    """How much longer the engine's default tiling (overlaps, blend) takes than one tile of the whole image, as a
    fraction; None for a whole-image runner (it tiles each of its passes itself) or when one tile does not fit."""
    size = max(image.shape[:2])
    options = EngineOptions(provider=path.provider, threads=threads, precision=path.precision, tile=size)
    engine = Engine(registry, options)
    spec, runner = engine.runner(backend, scale)
    if getattr(runner, "whole_image", False):
        return None
    try:
        whole = median_seconds(lambda: engine.run_array(image, spec, runner, target), repeat)
    except Exception:  # noqa: BLE001 - out of memory for one big tile: the overhead is not measurable here
        return None
    return tiled_seconds / whole - 1.0


def peak_gflops(threads: int, repeat: int = 3) -> tuple[float, str]:
    """Attainable GFLOP/s of this machine: one large float32 matrix product on the fastest CPU path."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "peak",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [PEAK_N, PEAK_N]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [PEAK_N, PEAK_N])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    pool = SessionPool("auto", threads, precision="fp32", available=lambda: [
        p for p in available_providers() if p in ("OpenVINO", "CPUExecutionProvider")])  # fmt: skip
    session = pool.session(model.SerializeToString())
    rng = np.random.default_rng(0)
    feeds = {n: rng.random((PEAK_N, PEAK_N), dtype=np.float32) for n in ("a", "b")}
    seconds = median_seconds(lambda: session.run(["c"], feeds), repeat)
    return 2.0 * PEAK_N**3 / seconds / 1e9, ", ".join(pool.paths_in_use())


def register_models(registry: Registry, models: Sequence[Path]) -> dict[str, Path]:
    """``--model`` files as backends of their own (the esrgan plugin's runner: ``lr`` -> ``sr``), by backend id."""
    from invsr_desktop.engine.backend import BackendSpec
    from invsr_desktop.engine.hookspecs import hookimpl
    from invsr_desktop.engine.model_files import metadata_scale, read_metadata
    from plugins.onnx_runner import OnnxRunner

    ids: dict[str, Path] = {}
    for path in models:
        meta = read_metadata(path)
        scale = metadata_scale(meta, path)
        backend_id = f"file:{path.name}"

        def build(request: Any, path: Path = path, scale: int = scale) -> OnnxRunner:
            return OnnxRunner(session=request.sessions.session(path), scale=float(scale), model_name=path.name)

        spec = BackendSpec(id=backend_id, name=path.name, kind="gan", scales=(scale,), build=build)

        class Plugin:
            @staticmethod
            @hookimpl
            def invsr_backends(spec: BackendSpec = spec) -> list[BackendSpec]:
                return [spec]

        registry.register(Plugin(), backend_id)
        ids[backend_id] = path
    return ids


def machine() -> dict[str, str]:
    cpu = provider_race.cpu_name()
    core = openvino_sessions.openvino_core()
    caps = ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")) if core is not None else "no OpenVINO"
    return {"cpu": cpu, "openvino_capabilities": caps, "python": platform.python_version()}


def table(rows: Sequence[Row]) -> list[str]:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None or value != value else format(value, fmt)

    lines = ["| backend | path | output MP/s | vs ORT fp32 | PSNR vs fp32 (dB) | GFLOP/run | GFLOP/s | of peak "
             "| tiling overhead |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.backend} | {r.path} | {num(r.output_mp_s, '.3f')} | {num(r.vs_baseline, '.2f')}x "
            f"| {num(r.psnr_vs_fp32, '.1f')} | {num(r.gflop, '.1f')} | {num(r.gflop_s, '.1f')} "
            f"| {num(None if r.of_peak is None else 100 * r.of_peak, '.0f')}% "
            f"| {num(None if r.tiling_overhead is None else 100 * r.tiling_overhead, '+.0f')}% |"
            + (f" {r.note}" if r.note.startswith("failed") else "")
        )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="invsr-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", action="append", default=[], help="measure only this backend (repeatable)")
    p.add_argument("--model", action="append", default=[], type=Path, metavar="FILE.onnx",
                   help="also measure this ONNX model (lr -> sr, invsr.scale metadata), e.g. from invsr-export")
    p.add_argument("--size", type=int, default=512, help="input side in pixels (default 512)")
    p.add_argument("--threads", type=int, default=1, help="inference threads for every path (default 1)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs after a warm-up (default 3)")
    p.add_argument("--peers", action="store_true",
                   help="add PyTorch eager (needs [train]) and ncnn (needs ncnn and pnnx) on the same weights")
    p.add_argument("--process", action="store_true",
                   help="with --peers: also time the whole invsr-upscale process on the same image")
    p.add_argument("--ncnn", action="append", default=[], type=Path, metavar="FILE.param",
                   help="with --peers: the ncnn peer runs this pair (e.g. Upscayl's realesrgan-x4plus.param and .bin) "
                        "for the --model of the same name, instead of converting that model with pnnx")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--memory", default=None, metavar="WxH",
                   help="measure instead the peak memory of an invsr-upscale run of a WxH photo, per backend")
    p.add_argument("--memory-scale", type=float, default=2.0, help="the scale of the --memory runs (default 2)")
    return p.parse_args(argv)


def fresh_registry() -> Registry:
    """This command's own registry, loaded now: the process-wide one may predate a change of model folder, and the
    command must not add its ``--model`` backends to it."""
    registry = Registry()
    registry.load_entry_points()
    return registry


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    registry = fresh_registry()
    if args.memory:
        return memory_main(args, registry)
    unmatched = [p.name for p in args.ncnn if p.stem not in {m.stem for m in args.model}]
    if unmatched:
        print(f"invsr-bench: --ncnn {', '.join(unmatched)}: no --model of the same name (X.param goes with X.onnx)",
              file=sys.stderr)
        return 2
    files = register_models(registry, args.model)
    named = args.backend + [b for b in files if b not in args.backend]
    backends = named if args.backend else [s.id for s in registry.backends()]
    unknown = [b for b in backends if b not in {s.id for s in registry.backends()}]
    if unknown:
        print(f"invsr-bench: unknown backend(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    paths = inference_paths()
    peak, peak_path = peak_gflops(args.threads)
    info = machine()
    print(f"{info['cpu']} ({info['openvino_capabilities']}); {args.threads} thread(s); "
          f"{args.size}x{args.size} input; median of {args.repeat} after a warm-up")
    print(f"attainable peak: {peak:.1f} GFLOP/s ({PEAK_N}x{PEAK_N} float32 matrix product on {peak_path})")
    rows: list[Row] = []
    for backend in backends:
        new = measure_backend(registry, backend, args.size, args.threads, args.repeat, paths, peak)
        print("\n".join(table(new)[2 if rows else 0:]))
        rows += new
    if args.peers:
        rows += peers(backends, files, args, {r.backend: r.seconds for r in rows if r.path == paths[0].name})
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this run: {peak_rss:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "threads": args.threads, "size": args.size,
                                         "peak_gflop_s": peak, "peak_path": peak_path, "peak_rss_mb": peak_rss,
                                         "rows": [asdict(r) for r in rows]}, indent=2) + "\n")  # fmt: skip
    return 0


def peers(backends: Sequence[str], files: dict[str, Path], args: argparse.Namespace,
          baseline: dict[str, float]) -> list[Row]:
    """The peer rows (:mod:`model_export.commands.bench_peers`), printed, and the speed issue's figure: the whole
    ``invsr-upscale`` process against ncnn's inference alone, where both ran."""
    from model_export.commands.bench_peers import PROCESS_ROW, peer_rows

    rows = peer_rows(backends, files, args.size, args.threads, args.repeat, baseline, process=args.process,
                     ncnn_pairs={pair.stem: pair for pair in args.ncnn})
    print("\n".join(table(rows)[2:]))
    for backend in backends:
        by_path = {r.path: r.seconds for r in rows if r.backend == backend}
        ncnn = by_path.get("ncnn fp32 (peer)")
        process = next((seconds for path, seconds in by_path.items() if path.startswith(PROCESS_ROW)), None)
        if ncnn and process and ncnn == ncnn and process == process:
            print(f"{backend}: the whole invsr-upscale process takes {process:.2f} s, ncnn's inference alone "
                  f"{ncnn:.2f} s: {ncnn / process:.2f}x")
    return rows


def memory_main(args: argparse.Namespace, registry: Registry) -> int:
    """``--memory``: one child ``invsr-upscale`` run per backend, its peak RSS against the bound."""
    from model_export.commands import bench_memory

    try:
        size = bench_memory.parse_size(args.memory)
    except ValueError as exc:
        print(f"invsr-bench: --memory: {exc}", file=sys.stderr)
        return 2
    ups = [s for s in registry.backends() if s.direction == "up"]
    backends = args.backend or [s.id for s in ups if s.kind != "diffusion"]
    print("\n".join(bench_memory.header(size, args.memory_scale)), flush=True)
    rows = bench_memory.run(backends, size, args.memory_scale, max(1, args.threads))
    left_out = [s.id for s in ups if s.id not in backends]
    if left_out:
        print(f"not measured: {', '.join(left_out)} (name with --backend)")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "memory": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0 if all(r.holds for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
