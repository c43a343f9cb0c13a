"""Loading untrusted checkpoints into architectures: ours, BasicSR / Real-ESRGAN, and the original ESRGAN's.

A checkpoint is untrusted input (a downloaded ``.pth`` is a pickle, and unpickling runs code), so every file is read
with ``torch.load(path, map_location="cpu", weights_only=True)``: tensors, dicts, lists, strings and numbers only.
A file that needs more is refused with :class:`CheckpointError` before any of its code runs. The one class allowed
beyond those is ``torch.torch_version.TorchVersion`` (a ``str`` subclass that ``torch.__version__`` is; checkpoints
that record the torch version in their metadata contain it).

What is understood:

- our model files (``model_<arch>_x<scale>.pt``, ``"format": "invsr-model/1"``, see
  :mod:`model_export.training.checkpoint`): ``arch``, ``arch_kwargs``, ``params_ema``, ``config``, ``meta``;
- BasicSR / Real-ESRGAN files: ``{"params_ema": state}`` or ``{"params": state}`` (the EMA is preferred), or a bare
  state dict, and the original ESRGAN repository's two namings (``model.N`` sequential, ``RRDB_trunk``): the
  architecture's ``convert_state_dict`` maps them to our names and ``infer_options`` reads its constructor
  arguments (features, blocks, growth, scale: a Real-ESRGAN x2 model's ``conv_first`` takes the 12 channels of a
  pixel-unshuffled input) from the tensor shapes.

A checkpoint of another architecture than the one asked for is an error naming both.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from invsr_desktop.engine.errors import InvsrError
from model_export.archs import available_archs, build_arch, count_parameters
from invsr_desktop.engine.model_files import file_sha256

MODEL_FORMAT = "invsr-model/1"  # model_export.training.checkpoint.MODEL_FORMAT (not imported: the kit is in flux)
TRAIN_FORMAT = "invsr-train/1"

_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net_g", "generator")


class CheckpointError(InvsrError):
    """A checkpoint that cannot be used; the message names the file and says why, for the user."""


def _safe_globals() -> list:
    extra = []
    try:
        from torch.torch_version import TorchVersion

        extra.append(TorchVersion)
    except ImportError:  # pragma: no cover - older torch
        pass
    return extra


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip whose entries include the compiled ``code/`` (a weights file has none)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in f"/{name}" or name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_untrusted(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors a user can act on.

    A pickle that references any Python class or function (beyond tensors and plain containers) is refused with
    "checkpoint contains Python objects; refusing to unpickle untrusted code", naming the first offending global.
    """
    path = Path(path)
    if not path.is_file():
        from model_export.start_files import history_hint

        hint = history_hint(path)
        raise CheckpointError(f"checkpoint not found: {path}" + (f".{hint}" if hint else ""))
    if is_torchscript(path):
        raise CheckpointError(
            f"{path}: this is a TorchScript model (torch.jit.save), not a checkpoint of weights. If you trust it, "
            "load it in Python with torch.jit.load(...) and save its weights with torch.save(model.state_dict(), "
            "'weights.pth'), then export that file (TorchScript holds code, which is never run here)."
        )
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        glob = re.search(r"GLOBAL ([\w.]+)", text)
        if glob or "global" in text.lower():
            what = f" (it references {glob.group(1)})" if glob else ""
            raise CheckpointError(
                f"{path}: checkpoint contains Python objects; refusing to unpickle untrusted code{what}. Only "
                "tensors, dicts, lists, strings and numbers are loaded (torch.load weights_only=True). If you trust "
                "where the file comes from, re-save just its weights with torch.save(state_dict, ...) and export that."
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", text, re.S)
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint that can be loaded safely "
            f"({detail.group(1).strip() if detail else 'unpickling failed'})"
        ) from None
    except EOFError:
        raise CheckpointError(f"{path}: the file is empty or truncated") from None
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read the checkpoint (corrupt or truncated?): {first}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (IndexError, KeyError, ValueError, TypeError, AttributeError, MemoryError, OverflowError) as exc:
        # torch's weights-only unpickler runs a pickle opcode by opcode: random bytes that parse as a legacy pickle
        # end in whatever its stack does (seen: "IndexError: pop from empty list"), never in UnpicklingError
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (corrupt?): {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# Architectures: how to recognise, convert and size a foreign state dict


@dataclass(frozen=True)
class ArchLoader:
    """How a foreign state dict of one architecture is recognised, renamed to our keys and sized."""

    detect: Callable[[set[str]], bool]
    convert: Callable[[dict], dict[str, torch.Tensor]]
    infer: Callable[[dict[str, torch.Tensor]], dict[str, Any]]
    default_backend: str


def _rrdbnet_detect(keys: set[str]) -> bool:
    return (
        any(re.match(r"body\.\d+\.rdb1\.conv1\.", k) for k in keys)
        or any(re.match(r"model\.1\.sub\.\d+\.RDB1\.", k) for k in keys)
        or any(re.match(r"RRDB_trunk\.\d+\.RDB1\.", k) for k in keys)
    )


def _rrdbnet_convert(state: dict) -> dict[str, torch.Tensor]:
    from model_export.archs.rrdbnet import convert_state_dict

    return convert_state_dict(state)


def _rrdbnet_infer(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    from model_export.archs.rrdbnet import infer_options

    return infer_options(state)


ARCH_LOADERS: dict[str, ArchLoader] = {
    "rrdbnet": ArchLoader(_rrdbnet_detect, _rrdbnet_convert, _rrdbnet_infer, "esrgan"),
}

# Architectures we cannot build but can name when someone feeds one in (for "holds X, not Y" errors).
_OTHER_SIGNATURES: list[tuple[str, Callable[[set[str]], bool]]] = [
    ("HAT", lambda ks: any(".overlap_attn." in k for k in ks)),
    ("SwinIR", lambda ks: any(".residual_group.blocks." in k for k in ks)),
    ("RCAN", lambda ks: any(re.match(r"body\.\d+\.body\.\d+\.body\.\d+\.", k) for k in ks) and "head.0.weight" in ks),
    ("EDSR", lambda ks: "head.0.weight" in ks and any(k.startswith("tail.") for k in ks)),
    ("SRVGGNetCompact (Real-ESRGAN compact)", lambda ks: "body.0.weight" in ks and "body.1.weight" in ks
     and not any(k.startswith("conv_first") for k in ks)),
]


def detect_arch(keys: set[str]) -> str | None:
    """The name of the architecture a state dict's keys look like: one of ours, a known other one, or None."""
    for name, loader in ARCH_LOADERS.items():
        if loader.detect(keys):
            return name
    for name, test in _OTHER_SIGNATURES:
        if test(keys):
            return name
    return None


def default_backend(arch: str) -> str:
    loader = ARCH_LOADERS.get(arch)
    return loader.default_backend if loader else arch


# ---------------------------------------------------------------------------------------------------------------
# Resolving a loaded object to (architecture, options, state dict)


@dataclass
class Checkpoint:
    """A checkpoint ready to build: architecture, its constructor options, a state dict in our naming, and what
    is known about where it came from (for the ONNX metadata)."""

    path: Path
    arch: str
    options: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    source: str
    trained_on: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    suggested_name: str = ""
    sha256: str = ""

    @property
    def scale(self) -> int:
        return int(self.options["scale"])

    def build(self) -> nn.Module:
        """The network with the checkpoint's weights, in eval mode, float32, on the CPU."""
        try:
            net = build_arch(self.arch, **self.options)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: cannot build {self.arch} with {self.options}: {exc}") from None
        state = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
                 for k, v in self.state_dict.items()}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            own = net.state_dict()
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            shape = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} key(s), e.g. {', '.join(missing[:3])}")
            if unexpected:
                parts.append(f"unexpected {len(unexpected)} key(s), e.g. {', '.join(unexpected[:3])}")
            if shape:
                parts.append(f"{len(shape)} tensor(s) of the wrong shape, e.g. {sorted(shape)[0]}")
            why = "; ".join(parts) or str(exc).splitlines()[0]
            raise CheckpointError(f"{self.path}: the weights do not fit {self.arch} {self.options}: {why}") from None
        return net.float().eval()

    def num_parameters(self) -> int:
        return count_parameters(self.build())


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and any(
        torch.is_tensor(v) for v in obj.values()
    )


def _unwrap(obj: dict) -> tuple[dict, str]:
    """The state dict inside a BasicSR-style wrapper (EMA preferred), and which key held it."""
    for key in _WRAPPER_KEYS:
        if key in obj and _is_state_dict(obj[key]):
            return obj[key], key
    return obj, ""


def _check_arch(path: Path, found: str, wanted: str | None) -> None:
    if wanted is not None and found != wanted:
        raise CheckpointError(f"{path} holds a {found} network, not {wanted} (asked for with --arch {wanted})")


def _check_scale(path: Path, found: int, wanted: int | None, how: str) -> None:
    if wanted is not None and int(wanted) != int(found):
        raise CheckpointError(f"{path} is a x{found} model ({how}), but --scale {wanted} was given")


def _folder_label(folder: str) -> str:
    """A training folder's name (never its full path: it would ship in the model), with its subfolders' names
    when it still exists here (``train (BSD200, BSDS500_test, T91)``)."""
    path = Path(folder)
    label = path.name or folder
    try:
        subs = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        subs = []
    return f"{label} ({', '.join(subs)})" if subs else label


def _trained_on_ours(meta: dict) -> str:
    data = meta.get("data") or []
    names = ", ".join(_folder_label(str(d)) for d in data) if isinstance(data, list) else str(data)
    parts = [names or "unknown data"]
    details = []
    if meta.get("degradation"):
        details.append(f"{meta['degradation']} degradation")
    if meta.get("step") is not None:
        details.append(f"{meta['step']} steps")
    if details:
        parts.append(f"({', '.join(details)})")
    return " ".join(parts)


def resolve(obj: Any, path: str | os.PathLike, arch: str | None = None, scale: int | None = None) -> Checkpoint:
    """Turn a loaded checkpoint object into a :class:`Checkpoint` for ``arch`` (None: whatever it holds)."""
    path = Path(path)
    if arch is not None and arch not in available_archs():
        raise CheckpointError(f"unknown architecture {arch!r}; available: {', '.join(available_archs())}")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), found a {type(obj).__name__}")

    fmt = obj.get("format")
    if fmt == TRAIN_FORMAT:
        raise CheckpointError(
            f"{path} is a training state for resuming (format {TRAIN_FORMAT}); export the model file "
            "model_<arch>_x<scale>.pt from the same run folder instead"
        )
    if fmt == MODEL_FORMAT or ("arch" in obj and "params_ema" in obj and isinstance(obj.get("arch"), str)):
        return _from_model_file(obj, path, arch, scale)
    return _from_state_dict(obj, path, arch, scale)


def _from_model_file(obj: dict, path: Path, arch: str | None, scale: int | None) -> Checkpoint:
    """One of this project's model files (``invsr-train``'s ``model_<arch>_x<scale>.pt``): arch, options and the
    EMA weights as written, the training facts for the card."""
    fmt = obj.get("format")
    found = str(obj["arch"])
    _check_arch(path, found, arch)
    if found not in available_archs():
        raise CheckpointError(f"{path} holds a {found} network, which this exporter cannot build "
                              f"(available: {', '.join(available_archs())})")
    options = dict(obj.get("arch_kwargs") or {})
    if "scale" not in options and obj.get("scale") is not None:
        options["scale"] = int(obj["scale"])
    if "scale" not in options:
        raise CheckpointError(f"{path}: the model file does not say its scale (no arch_kwargs.scale or scale)")
    _check_scale(path, int(options["scale"]), scale, "from its arch_kwargs")
    state, _ = _unwrap(obj)
    if not _is_state_dict(state):
        raise CheckpointError(f"{path}: the model file holds no weights (params_ema)")
    meta = obj.get("meta") or {}
    training = {k: meta[k] for k in ("step", "wall_time_s", "val_psnr", "val_images", "degradation", "saved",
                                     "torch", "parameters") if k in meta}
    if obj.get("family"):
        training["family"] = obj["family"]
    config = obj.get("config") or {}
    return Checkpoint(
        path=path,
        arch=found,
        options=options,
        state_dict=dict(state),
        source=f"{path.name} ({fmt or 'invsr model file'}, params_ema)",
        trained_on=_trained_on_ours(meta),
        training=_jsonable(training),
        suggested_name=str(config.get("name") or path.stem),
    )


def _from_state_dict(obj: dict, path: Path, arch: str | None, scale: int | None) -> Checkpoint:
    """A bare (or wrapped) state dict from elsewhere (ESRGAN, Real-ESRGAN): the architecture detected from its keys,
    its options read from the tensor shapes."""
    state, wrapper = _unwrap(obj)
    if not _is_state_dict(state):
        raise CheckpointError(
            f"{path}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:8])) or 'none'})"
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    keys = set(state)
    found = detect_arch(keys)
    if found is None:
        sample = ", ".join(sorted(keys)[:4])
        what = arch or "any architecture this exporter knows"
        raise CheckpointError(f"{path} holds an unrecognised network (keys like {sample}), not {what}")
    _check_arch(path, found, arch)
    if found not in ARCH_LOADERS:
        raise CheckpointError(f"{path} holds a {found} network, which this exporter cannot build "
                              f"(available: {', '.join(available_archs())})")
    loader = ARCH_LOADERS[found]
    try:
        converted = loader.convert(state)
        options = loader.infer(converted)
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path}: looks like {found} but its keys do not convert: {exc}") from None
    _check_scale(path, int(options["scale"]), scale, "read from its tensor shapes")
    naming = _naming(keys)
    return Checkpoint(
        path=path,
        arch=found,
        options=options,
        state_dict=converted,
        source=f"{path.name} ({naming}{', ' + wrapper if wrapper else ''})",
        trained_on="",
        suggested_name=path.stem,
    )


def _naming(keys: set[str]) -> str:
    if any(k.startswith("model.1.sub.") for k in keys):
        return "original ESRGAN naming (model.N)"
    if any(k.startswith("RRDB_trunk.") for k in keys):
        return "original ESRGAN naming (RRDB_trunk)"
    return "BasicSR naming"


def _jsonable(value: Any) -> Any:
    """Plain JSON types only (tensors become lists, anything else its str)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if torch.is_tensor(v) else str(v)))


def load_checkpoint(path: str | os.PathLike, arch: str | None = None, scale: int | None = None) -> Checkpoint:
    """Load an untrusted checkpoint file and resolve it (see :func:`resolve`)."""
    path = Path(path)
    if is_ncnn_pair(path):
        return _from_ncnn(path, arch, scale)
    obj = load_untrusted(path)
    ckpt = resolve(obj, path, arch=arch, scale=scale)
    ckpt.sha256 = file_sha256(path)
    return ckpt


def is_ncnn_pair(path: Path) -> bool:
    """An ncnn model's ``.param``, or a ``.bin`` with its ``.param`` beside it (Upscayl's model files)."""
    return path.suffix == ".param" or (path.suffix == ".bin" and path.with_suffix(".param").is_file())


def _from_ncnn(path: Path, arch: str | None, scale: int | None) -> Checkpoint:
    """An ncnn pair's RRDBNet (see :mod:`model_export.ncnn_weights`), resolved like a BasicSR state dict; its
    identity is the ``.bin``'s SHA-256 (the weights)."""
    from model_export.ncnn_weights import NcnnModelError, pair_paths, read_rrdbnet, weight_storage

    try:
        state = {k: torch.from_numpy(v) for k, v in read_rrdbnet(path).items()}
        storage = weight_storage(path)
    except NcnnModelError as exc:
        raise CheckpointError(str(exc)) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    param, weights = pair_paths(path)
    ckpt = _from_state_dict(state, param, arch, scale)
    ckpt.source = f"{param.name} + {weights.name} (ncnn model, {storage} weights)"
    ckpt.sha256 = file_sha256(weights)
    return ckpt


__all__ = ["CheckpointError", "Checkpoint", "load_untrusted", "resolve", "load_checkpoint", "detect_arch",
           "ARCH_LOADERS", "default_backend"]
