"""``invsr-bench --peers``: the same network in the engines other desktop upscalers run, beside this app's paths.

- **PyTorch eager** fp32 (what chaiNNer runs): the architecture rebuilt from the model's ``invsr.arch`` metadata
  and the ONNX file's weights (needs the ``[train]`` extra).
- **ncnn** fp32 on the CPU (the engine Upscayl runs): the ONNX file converted by ``pnnx`` (PyPI's converter,
  which takes ONNX directly) into a temporary folder, run through ncnn's Python binding; or, for a model imported
  from an ncnn pair (``invsr-bench --model X.onnx --ncnn X.param``), that pair itself: Upscayl's own files, and no
  conversion (pnnx peaks at 23 GB on Real-ESRGAN x4plus). Both come from PyPI
  (``pip install ncnn pnnx``; the ``[dev]`` extra has them) and are never required: without them the table says
  how to get the row.
- with ``--process``, **the whole** ``invsr-upscale`` **process** (start, model load, upscale, PNG write) on a
  ``size`` x ``size`` photo, timed from outside: the figure a user waits for, which the speed issue holds against
  ncnn's inference alone.

Every peer row is timed like the engine's (median of ``repeat`` after a warm-up, the same threads) and carries its
agreement (PSNR) with ONNX Runtime fp32 run on the same whole image. Only plain ``lr`` -> ``sr`` models take part
(the ESRGAN family and ``--model`` files): a sampler or an INN is not one network call.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from invsr_desktop.engine import model_metadata as keys
from invsr_desktop.engine.model_files import file_sha256, read_metadata, scan
from invsr_desktop.engine.sessions import cache_dir
from model_export.commands.bench import Row, median_seconds, photo_input, psnr

NCNN_INSTALL = "pip install ncnn pnnx"
PROCESS_ROW = "invsr-upscale, whole process"


@dataclass(frozen=True)
class PeerModel:
    """One backend's ONNX file and the input every peer runs (NCHW float32: the same photo,
    :func:`~model_export.commands.bench.photo_input`)."""

    backend: str
    path: Path
    image: np.ndarray
    reference: np.ndarray  # ONNX Runtime fp32 on the whole image: what every peer's agreement is against


def peer_models(backends: Sequence[str], files: dict[str, Path], size: int, threads: int) -> list[PeerModel]:
    """The backends that are a single ``lr`` -> ``sr`` model file (the esrgan plugin's, and ``files``: the
    ``--model`` ones by backend id), with their ONNX Runtime fp32 reference."""
    import onnxruntime as ort

    files = {m.id: m.path for m in scan("esrgan")} | dict(files)
    image = np.ascontiguousarray(photo_input(size).transpose(2, 0, 1)[None])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    models = []
    for backend in backends:
        path = files.get(backend)
        if path is None or not path.is_file():
            continue
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        models.append(PeerModel(backend, path, image, session.run(["sr"], {"lr": image})[0]))
    return models


def _row(model: PeerModel, path: str, seconds: float, output: np.ndarray, baseline: dict[str, float]) -> Row:
    out_mp = output.shape[-1] * output.shape[-2] / 1e6
    return Row(model.backend, path, seconds, out_mp / seconds, baseline.get(model.backend, float("nan")) / seconds,
               psnr(output, model.reference), None, None, None, "whole image")  # fmt: skip


def torch_row(model: PeerModel, threads: int, repeat: int, baseline: dict[str, float]) -> Row | None:
    """PyTorch eager fp32, for a model whose architecture ``model_export.archs`` rebuilds (None otherwise)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from model_export.archs import build_arch

    meta = read_metadata(model.path)
    try:
        net = build_arch(meta[keys.ARCH], **json.loads(meta.get(keys.ARCH_OPTIONS, "{}"))).eval()
    except (KeyError, ValueError):
        return None
    state = net.state_dict()
    for init in onnx.load(str(model.path)).graph.initializer:
        if init.name in state and tuple(state[init.name].shape) == tuple(init.dims):
            state[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy())
    net.load_state_dict(state)
    torch.set_num_threads(threads)
    x = torch.from_numpy(model.image)
    with torch.inference_mode():
        seconds = median_seconds(lambda: net(x), repeat)
        output = net(x).numpy()
    return _row(model, "PyTorch eager fp32 (peer)", seconds, output, baseline)


def ncnn_missing() -> str:
    """Why the ncnn peer cannot run here ('' when it can)."""
    missing = [name for name in ("ncnn", "pnnx") if importlib.util.find_spec(name) is None]
    return f"{' and '.join(missing)} not installed ({NCNN_INSTALL})" if missing else ""


def pnnx_executable() -> Path:
    """The converter binary the ``pnnx`` wheel ships (found without importing the package, which imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder / ("pnnx.exe" if os.name == "nt" else "pnnx")


def to_ncnn(onnx_path: Path, folder: Path | None = None, side: int = 32, fp16: bool = False) -> tuple[Path, Path]:
    """``onnx_path`` converted by pnnx into ncnn's ``.param`` / ``.bin`` (fp32 weights; float16 with ``fp16``, as
    Upscayl's model files are), kept in ``folder`` (default: this app's cache, one folder per model content) so
    the conversion runs once per model.

    pnnx needs an input shape to trace; the ncnn graph it writes runs at any size (convolutions and scale-factor
    resizes). Its peak memory is large: 23 GB for the 16.7 M-parameter Real-ESRGAN x4plus network (177 s), so a
    converter killed by the kernel is said to be that."""
    folder = folder or cache_dir() / "ncnn" / f"{onnx_path.stem}-{file_sha256(onnx_path)[:16]}"
    param, weights = folder / "model.ncnn.param", folder / "model.ncnn.bin"
    if param.is_file() and weights.is_file():
        return param, weights
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "model.onnx"  # pnnx writes its other outputs beside its input: here, never beside the model
    source.unlink(missing_ok=True)
    source.symlink_to(onnx_path.resolve())
    args = [str(pnnx_executable()), str(source), f"inputshape=[1,3,{side},{side}]", f"fp16={int(fp16)}",
            f"ncnnparam={param}.part", f"ncnnbin={weights}.part"]
    done = subprocess.run(args, cwd=folder, capture_output=True, text=True)
    if done.returncode != 0 or not Path(f"{param}.part").is_file():
        why = (f"killed by signal {-done.returncode} (out of memory?)" if done.returncode < 0
               else " / ".join((done.stdout + done.stderr).strip().splitlines()[-3:]))
        raise RuntimeError(f"pnnx could not convert {onnx_path.name}: {why}")
    for other in folder.iterdir():  # pnnx's own graph, its Python and ONNX copies: tens of MB not needed here
        if (other.is_file() or other.is_symlink()) and not other.name.endswith(".part"):
            other.unlink()
    os.replace(f"{weights}.part", weights)
    os.replace(f"{param}.part", param)  # last: a param file means a complete pair
    return param, weights


def blob_names(param: Path) -> tuple[str, str]:
    """(input, output) blob names of a text ``.param``: the Input layer's top and the last layer's (pnnx writes
    ``in0`` / ``out0``, realesrgan-ncnn-vulkan's files ``data`` / ``output``)."""
    from model_export.ncnn_weights import NcnnModelError, read_layers

    layers = read_layers(param)
    inputs = [layer.tops[0] for layer in layers if layer.kind == "Input" and layer.tops]
    if not inputs or not layers[-1].tops:
        raise NcnnModelError(f"{param}: no Input layer, or a last layer without output")
    return inputs[0], layers[-1].tops[0]


class NcnnNet:
    """An ncnn network on the CPU in fp32 (fp16 and bf16 storage off, as for the ONNX Runtime baseline)."""

    def __init__(self, param: Path, weights: Path, threads: int) -> None:
        import ncnn

        self._ncnn = ncnn
        self.blobs = blob_names(param)
        self.net = ncnn.Net()
        self.net.opt.num_threads = threads
        for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
            setattr(self.net.opt, flag, False)
        self.net.load_param(str(param))
        self.net.load_model(str(weights))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """NCHW (N = 1) in, NCHW out. ncnn's Mat borrows the array's memory: the array lives until the run ends."""
        chw = np.ascontiguousarray(image[0])
        with self.net.create_extractor() as extractor:
            extractor.input(self.blobs[0], self._ncnn.Mat(chw))
            status, out = extractor.extract(self.blobs[1])
            if status != 0:
                raise RuntimeError(f"ncnn failed to run the model (status {status})")
            return np.array(out)[None].copy()


def ncnn_row(model: PeerModel, threads: int, repeat: int, baseline: dict[str, float], pair: Path | None = None) -> Row:
    """ncnn on the model converted by pnnx, or on ``pair`` (the ncnn files it was imported from)."""
    from model_export.ncnn_weights import pair_paths

    net = NcnnNet(*(pair_paths(pair) if pair else to_ncnn(model.path)), threads=threads)
    seconds = median_seconds(lambda: net(model.image), repeat)
    row = _row(model, "ncnn fp32 (peer)", seconds, net(model.image), baseline)
    return replace(row, note=f"{row.note}; {pair.stem}'s own ncnn files") if pair else row


def process_row(model: PeerModel, threads: int, repeat: int, baseline: dict[str, float], folder: Path) -> Row:
    """The whole ``invsr-upscale`` process on the peers' image saved as a PNG, timed from outside (the median of
    ``repeat`` runs after one that fills OpenVINO's compiled-model cache, as a user's second start finds it)."""
    from PIL import Image

    photo = folder / "photo.png"
    Image.fromarray(np.round(model.image[0].transpose(1, 2, 0) * 255).astype(np.uint8)).save(photo)
    backend = model.backend if not model.backend.startswith("file:") else model.path.stem
    env = dict(os.environ, INVSR_MODELS_DIR=str(model.path.parent)) if model.backend.startswith("file:") else None
    scale = round(model.reference.shape[-1] / model.image.shape[-1])
    runs = itertools.count()
    said: list[str] = []

    def run() -> Path:  # a folder per run: the CLI never writes over a result
        out = folder / f"out{next(runs)}"
        command = [sys.executable, "-m", "invsr_desktop.cli", str(photo), "--backend", backend, "--scale", str(scale),
                   "--threads", str(threads), "-o", str(out), "--quiet"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"invsr-upscale failed: {done.stderr.strip()[-300:]}")
        said[:] = re.findall(r"ran on: ([^)]+)\)", done.stdout + done.stderr)
        return out

    seconds = median_seconds(run, repeat)
    (result,) = run().glob("*.png")
    output = np.asarray(Image.open(result).convert("RGB"), np.float32).transpose(2, 0, 1)[None] / 255
    ran_on = f" ({said[-1]})" if said else ""  # the CLI's own words: which engine and precision the process took
    return _row(model, PROCESS_ROW + ran_on, seconds, output, baseline)


def peer_rows(backends: Sequence[str], files: dict[str, Path], size: int, threads: int, repeat: int,
              baseline: dict[str, float], process: bool = False, log: Callable[[str], None] = print,
              ncnn_pairs: dict[str, Path] | None = None) -> list[Row]:
    """Every peer on every plain model among ``backends``; a peer that is not installed is said once, by ``log``.
    ``ncnn_pairs`` maps a model file's stem to the ncnn pair the ncnn peer runs for it instead of a conversion."""
    ncnn_pairs = ncnn_pairs or {}
    rows: list[Row] = []
    models = peer_models(backends, files, size, threads)
    torch_ok = importlib.util.find_spec("torch") is not None
    missing = ncnn_missing()
    if not torch_ok:
        log("PyTorch peer: torch not installed (the [train] extra)")
    if missing:
        log(f"ncnn peer: {missing}")
    for model in models:
        with tempfile.TemporaryDirectory(prefix="invsr-bench-peer-") as tmp:
            peers = [lambda: torch_row(model, threads, repeat, baseline)] if torch_ok else []
            if not missing:
                peers.append(lambda: ncnn_row(model, threads, repeat, baseline, ncnn_pairs.get(model.path.stem)))
            if process:
                peers.append(lambda: process_row(model, threads, repeat, baseline, Path(tmp)))
            for peer in peers:
                rows += [row for row in [_safely(peer, model.backend)] if row is not None]
    return rows


def _safely(peer: Callable[[], Row | None], backend: str) -> Row | None:
    """A peer that fails is a row that says why, not the end of the benchmark."""
    try:
        return peer()
    except Exception as exc:  # noqa: BLE001 - a converter or runtime of someone else's
        return Row(backend, "peer", float("nan"), float("nan"), float("nan"), None, None, None, None, f"failed: {exc}")

