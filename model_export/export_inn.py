"""ONNX export of an invertible rescaling network (``irn``): two files, one per direction.

``inn_<name>_down.onnx`` (shrink): input ``hr`` (N, 3, H, W), H and W multiples of the scale; outputs ``lr``
(N, 3, H/s, W/s) and ``z`` (N, 3 s^2 - 3, H/s, W/s).

``inn_<name>_up.onnx`` (restore / upscale): inputs ``lr`` (N, 3, h, w, any size), ``z`` (N, 3 s^2 - 3, h, w: a unit
normal sample, or zeros) and ``temperature`` (shape [1]: z is multiplied by it, 0 = the mean); output ``sr``
(N, 3, s h, s w). The 1x1 convolutions' inverses are precomputed (float64 inversion) and stored as constants.

Metadata props: ``invsr.backend = inn``, ``invsr.arch = irn``, ``invsr.scale``, ``invsr.version``,
``invsr.trained_on``, ``invsr.name``, plus ``invsr.direction`` (down / up), ``invsr.z_channels``,
``invsr.input_multiple``, ``invsr.noise_max`` (the largest z scale training saw: temperatures above it leave
what the model learned) and ``invsr.stored_as`` (``png``, or ``jpeg`` for a shrink trained through the JPEG
simulation: the app's shrink picks that model when it writes JPEG).

Every export is checked: ONNX Runtime against PyTorch on a random input of an odd size, both directions, and the
round trip through the two ONNX files against the input; the maximum absolute differences are returned.

    python -m model_export.export_inn runs/inn_x4/model_irn_x4.pt --name irn_x4 --out resources/models
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from invsr_desktop.engine import model_metadata as keys

OPSET = 18


@dataclass
class INNExport:
    down: Path
    up: Path
    max_diff_down: float  # ORT vs torch, lr and z
    max_diff_up: float  # ORT vs torch, sr at temperature 0.7
    round_trip: float  # ORT down -> ORT up at z = forward z, against the input
    check_size: tuple[int, int]  # the LR size of the check


class _Down(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, hr: torch.Tensor):
        return self.net(hr)


class _Up(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, lr: torch.Tensor, z: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        return self.net.inverse(lr, z * temperature)


def load_inn(path: str | Path) -> tuple[nn.Module, dict]:
    """The EMA network of an ``invsr-train inn`` model file (or a training checkpoint) and the file's dict."""
    from model_export.archs import build_arch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if "params_ema" in state:  # model file
        arch, kwargs, params = state["arch"], dict(state["arch_kwargs"]), state["params_ema"]
    elif "model" in state and "ema" in state["model"]:  # training checkpoint (latest.pt)
        cfg = state["config"]
        kwargs = dict(cfg["network"])
        arch = kwargs.pop("arch")
        kwargs["scale"] = cfg["scale"]
        params = state["model"]["ema"]["params"]
    else:
        raise ValueError(f"{path}: not an invsr-train model file or checkpoint")
    if arch != "irn":
        raise ValueError(f"{path}: architecture {arch!r} is not irn")
    net = build_arch(arch, **kwargs)
    net.load_state_dict(params)
    return net.eval(), state


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dyn: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                              dynamic_axes=dyn, opset_version=OPSET, dynamo=False)  # fmt: skip
        except Exception:  # noqa: BLE001 - a torch without the TorchScript exporter: use torch.export
            dims = {k: {a: torch.export.Dim(f"{k}_{n}") for a, n in v.items()} for k, v in dyn.items() if k in inputs}
            shapes = {k: dims.get(k) for k in inputs}
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                              dynamic_shapes=shapes, opset_version=OPSET, dynamo=True)  # fmt: skip


def _set_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_inn(
    net: nn.Module,
    out_dir: str | Path,
    name: str,
    trained_on: str = "",
    noise_max: float = 1.0,
    check_size: tuple[int, int] = (19, 23),
    extra_metadata: dict[str, str] | None = None,
    stored_as: str = "png",
    supersedes: str = "",
    jpeg_qualities: tuple[int, int] | None = None,
) -> INNExport:
    """Write ``inn_<name>_down.onnx`` and ``inn_<name>_up.onnx`` into ``out_dir`` and check them (see module doc)."""
    from invsr_desktop import __version__

    net = net.eval().float().cpu()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s, zc = int(net.scale), int(net.z_channels)
    down_path, up_path = out_dir / f"inn_{name}_down.onnx", out_dir / f"inn_{name}_up.onnx"
    _write_pair(net, down_path, up_path)
    common = {
        keys.BACKEND: "inn",
        keys.ARCH: "irn",
        keys.SCALE: str(s),
        keys.VERSION: __version__,
        keys.TRAINED_ON: trained_on or "unknown",
        keys.NAME: name,
        keys.Z_CHANNELS: str(zc),
        keys.NOISE_MAX: repr(float(noise_max)),
        keys.STORED_AS: stored_as,
        **({keys.SUPERSEDES: supersedes} if supersedes else {}),
        **({keys.JPEG_QUALITIES: f"{jpeg_qualities[0]}-{jpeg_qualities[1]}"} if jpeg_qualities else {}),
        **(extra_metadata or {}),
    }
    _set_metadata(down_path, {**common, keys.DIRECTION: "down", keys.INPUT_MULTIPLE: str(s)})
    _set_metadata(up_path, {**common, keys.DIRECTION: "up", keys.INPUT_MULTIPLE: "1"})
    return INNExport(down_path, up_path, *_check_pair(net, down_path, up_path, check_size), check_size)


def _write_pair(net: nn.Module, down_path: Path, up_path: Path) -> None:
    """The forward (hr -> lr, z) and the inverse (lr, z, temperature -> sr) as two graphs with dynamic sizes."""
    s, zc = int(net.scale), int(net.z_channels)
    axes = {0: "batch", 2: "height", 3: "width"}
    net.freeze_inverse()
    try:
        hr0 = torch.rand(1, 3, 8 * s, 8 * s)
        _export(_Down(net), (hr0,), down_path, ["hr"], ["lr", "z"], {"hr": axes, "lr": axes, "z": axes})
        lr0, z0 = torch.rand(1, 3, 8, 8), torch.randn(1, zc, 8, 8)
        _export(_Up(net), (lr0, z0, torch.ones(1)), up_path, ["lr", "z", "temperature"], ["sr"],
                {"lr": axes, "z": axes, "sr": axes})  # fmt: skip
    finally:
        net.unfreeze_inverse()


def _check_pair(net: nn.Module, down_path: Path, up_path: Path, check_size: tuple[int, int]) -> tuple[float, ...]:
    """(max |diff| of the forward, of the inverse, of the ONNX round trip) on an odd-sized random input, the graphs
    on ONNX Runtime's CPU provider against PyTorch."""
    import onnxruntime as ort

    s, zc = int(net.scale), int(net.z_channels)
    h, w = check_size
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(1, 3, h * s, w * s, generator=g)
    z = torch.randn(1, zc, h, w, generator=g)
    temperature = torch.tensor([0.7])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    down = ort.InferenceSession(str(down_path), so, providers=["CPUExecutionProvider"])
    up = ort.InferenceSession(str(up_path), so, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        lr_t, z_t = net(hr)
        sr_t = net.inverse(lr_t, z * temperature)
    lr_o, z_o = down.run(["lr", "z"], {"hr": hr.numpy()})
    (sr_o,) = up.run(["sr"], {"lr": lr_t.numpy(), "z": z.numpy(), "temperature": temperature.numpy()})
    (rt_o,) = up.run(["sr"], {"lr": lr_o, "z": z_o, "temperature": np.ones(1, np.float32)})
    diff_down = max(float(np.abs(lr_o - lr_t.numpy()).max()), float(np.abs(z_o - z_t.numpy()).max()))
    diff_up = float(np.abs(sr_o - sr_t.numpy()).max())
    return diff_down, diff_up, float(np.abs(rt_o - hr.numpy()).max())


def _qualities(text: str) -> tuple[int, int]:
    """argparse type of ``--jpeg-qualities``: the plugin's own parser, so what is written is what it reads."""
    from plugins.inn import quality_range

    try:
        return quality_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("invsr.jpeg_qualities", "--jpeg-qualities")) from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.export_inn", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model_irn_x<s>.pt (or latest.pt) from invsr-train inn")
    p.add_argument("--name", required=True, help="model name: files inn_<name>_down.onnx / inn_<name>_up.onnx")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder")
    p.add_argument("--trained-on", default="", help="what it was trained on (default: from the model file)")
    p.add_argument("--stored-as", choices=keys.STORED_AS_VALUES, default=None,
                   help="the small-image format the shrink was trained for (default: jpeg when the run trained "
                        "through the JPEG simulation, inn.jpeg_prob > 0, else png)")  # fmt: skip
    p.add_argument("--jpeg-qualities", type=_qualities, default=None, metavar="LO-HI",
                   help="the JPEG qualities a jpeg shrink is for: model=auto picks it for a small image saved at "
                        "one of them, before a jpeg shrink without a range (measure where it beats the other)")
    p.add_argument("--install", action="store_true", help="also copy both files into the user model folder")
    p.add_argument("--supersedes", default="", metavar="NAME",
                   help="the model this one replaces for model=auto; keep that one installed so what it shrank restores")
    args = p.parse_args(argv)
    if not args.name.replace("_", "").replace("-", "").isalnum():
        p.error("--name may hold letters, digits, '_' and '-' only (it is the model's id in file names and markers)")
    net, state = load_inn(args.model)
    cfg = state.get("config", {})
    meta = state.get("meta", {})
    trained_on = args.trained_on or ", ".join(Path(f).name for f in meta.get("data", cfg.get("data", {}).get("folders", [])))
    steps = meta.get("step", state.get("step"))
    if steps is not None:
        trained_on += f" ({cfg.get('data', {}).get('degradation', 'bicubic')} LR, {steps} steps)"
    noise_max = float(cfg.get("inn", {}).get("noise_max", 1.0))
    stored_as = args.stored_as or ("jpeg" if float(cfg.get("inn", {}).get("jpeg_prob", 0.0)) > 0 else "png")
    if args.jpeg_qualities and stored_as != "jpeg":
        p.error("--jpeg-qualities is for a shrink stored as jpeg")
    result = export_inn(net, args.out, args.name, trained_on=trained_on, noise_max=noise_max, stored_as=stored_as,
                        supersedes=args.supersedes, jpeg_qualities=args.jpeg_qualities)
    print(f"wrote {result.down} and {result.up}")
    print(f"check at LR {result.check_size[0]}x{result.check_size[1]}: max |ORT - torch| down {result.max_diff_down:.2e}, "
          f"up {result.max_diff_up:.2e}; ONNX round trip max error {result.round_trip:.2e}")
    if max(result.max_diff_down, result.max_diff_up) > 1e-3:
        print("error: ONNX Runtime disagrees with PyTorch", file=sys.stderr)
        return 1
    if args.install:
        import shutil

        from invsr_desktop.engine.model_files import user_models_dir

        folder = user_models_dir()
        folder.mkdir(parents=True, exist_ok=True)
        for f in (result.down, result.up):
            shutil.copy2(f, folder / f.name)
        print(f"installed into {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
