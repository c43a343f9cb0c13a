"""invsr-export: checkpoints (ours, BasicSR and original ESRGAN namings, x4 and Real-ESRGAN x2) -> checked ONNX.

Every ONNX output here is compared with PyTorch on non-uniform (random) inputs of odd sizes: a uniform input cannot
reveal a channel-order mistake such as a pixel-unshuffle exported in ONNX's DCR order (see
``test_pixel_unshuffle_channel_order_mistake_is_caught``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from model_export import export, onnx_core
from model_export.archs import build_arch
from model_export.archs import rrdbnet as rrdbnet_module
from model_export.checkpoints import CheckpointError, load_checkpoint, load_untrusted
from invsr_desktop.engine.model_files import read_metadata

TINY = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}
STANDARD = {"num_feat": 64, "num_block": 23, "num_grow_ch": 32}
REQUIRED_PROPS = ("invsr.backend", "invsr.arch", "invsr.scale", "invsr.version", "invsr.trained_on",
                  "invsr.arch_options", "invsr.name")


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Two shared cores: PyTorch's and ORT's thread pools spin against each other and other jobs; one thread is
    10x faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(argv, capsys) -> tuple[int, str, str]:
    code = export.main([str(a) for a in argv] + ["--threads", "1"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def make_net(scale: int, seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_arch("rrdbnet", scale=scale, **(options or TINY)).eval()
    with torch.no_grad():  # non-zero biases everywhere, so no two weights are alike and nothing is a no-op
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.05, 0.05)
    return net


def save_ours(net: torch.nn.Module, path: Path, options: dict) -> Path:
    """Our model file (model_export.training.checkpoint's invsr-model/1), with the torch version object in its
    metadata as train.py writes it."""
    torch.save({
        "format": "invsr-model/1",
        "family": "esrgan",
        "arch": "rrdbnet",
        "arch_kwargs": dict(options),
        "scale": options["scale"],
        "params_ema": net.state_dict(),
        "config": {"name": "tiny_test"},
        "meta": {"step": 6, "wall_time_s": 2.5, "val_psnr": 20.0, "data": ["/somewhere/train"],
                 "degradation": "bicubic", "torch": torch.__version__, "parameters": 1},
    }, path)
    return path


def to_original_esrgan_naming(state: dict, num_block: int) -> dict:
    """BasicSR keys -> the original ESRGAN repository's sequential ``model.N`` keys."""
    top = {"conv_first.": "model.0.", "conv_up1.": "model.3.", "conv_up2.": "model.6.", "conv_hr.": "model.8.",
           "conv_last.": "model.10.", "conv_body.": f"model.1.sub.{num_block}."}
    out = {}
    for key, value in state.items():
        for new, old in top.items():
            if key.startswith(new):
                out[old + key[len(new):]] = value
                break
        else:
            m = re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)$", key)
            assert m, key
            out[f"model.1.sub.{m.group(1)}.RDB{m.group(2)}.conv{m.group(3)}.0.{m.group(4)}"] = value
    return out


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return session.run(["sr"], {"lr": x.astype(np.float32)})[0]


def props(path: Path) -> dict[str, str]:
    """The metadata props, read as the app reads them (the weights are skipped)."""
    return read_metadata(path)


def noise(h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand((1, 3, h, w), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [4, 2])
def test_tiny_export_matches_torch_on_odd_sizes(tmp_path, capsys, scale):
    options = {**TINY, "scale": scale, "residual": "nearest"}
    net = make_net(**options)
    ckpt = save_ours(net, tmp_path / f"model_rrdbnet_x{scale}.pt", options)
    out = tmp_path / f"esrgan-tiny-x{scale}.onnx"

    code, stdout, stderr = run([ckpt, "-o", out], capsys)

    assert code == 0, stderr
    m = re.search(r"check fp32 .*input 1x3x(\d+)x(\d+), max \|diff\| = ([0-9.e+-]+)", stdout)
    assert m, stdout
    h, w = int(m.group(1)), int(m.group(2))
    assert (h // net.input_multiple) % 2 == 1 and (w // net.input_multiple) % 2 == 1  # odd (feature) size
    assert float(m.group(3)) <= 1e-4

    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["lr"] and [o.name for o in model.graph.output] == ["sr"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    out_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch", 3, "out_height", "out_width"]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(os.listdir(tmp_path)) == sorted([ckpt.name, out.name])  # one self-contained file, no leftovers

    meta = props(out)
    assert all(k in meta for k in REQUIRED_PROPS)
    assert meta["invsr.backend"] == "esrgan" and meta["invsr.arch"] == "rrdbnet"
    assert meta["invsr.scale"] == str(scale)
    assert json.loads(meta["invsr.arch_options"]) == options
    assert meta["invsr.input_multiple"] == str(net.input_multiple)
    assert meta["invsr.precision"] == "fp32"
    assert meta["invsr.name"] == f"tiny_test (RRDBNet x{scale})"
    assert "train" in meta["invsr.trained_on"] and "/somewhere" not in meta["invsr.trained_on"]
    assert json.loads(meta["invsr.training"])["step"] == 6

    # another odd size than the exporter's own check: height and width are really dynamic
    x = noise(net.input_multiple * 7, net.input_multiple * 5)
    with torch.no_grad():
        expected = net(x).numpy()
    got = ort_run(out, x.numpy())
    assert got.shape == (1, 3, x.shape[2] * scale, x.shape[3] * scale)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.fixture(scope="module")
def standard_nets():
    """The published 64/23/32 RRDBNet at x4 and Real-ESRGAN x2 (random weights), built once."""
    torch.set_num_threads(1)
    return {scale: make_net(scale, seed=scale, **STANDARD) for scale in (4, 2)}


@pytest.mark.slow
@pytest.mark.parametrize("naming", ["basicsr", "esrgan"])
@pytest.mark.parametrize("scale", [4, 2])
def test_standard_checkpoint_in_each_naming(tmp_path, capsys, standard_nets, scale, naming):
    net = standard_nets[scale]
    if naming == "basicsr":  # Real-ESRGAN's release files: {"params_ema": state}
        path = tmp_path / f"RealESRGAN_x{scale}plus.pth"
        torch.save({"params_ema": net.state_dict(), "params": {k: v * 0 for k, v in net.state_dict().items()}}, path)
    else:
        path = tmp_path / f"RRDB_ESRGAN_x{scale}.pth"
        torch.save(to_original_esrgan_naming(net.state_dict(), STANDARD["num_block"]), path)
    out = tmp_path / f"esrgan-standard-x{scale}.onnx"

    try:
        code, stdout, stderr = run([path, "-o", out, "--arch", "rrdbnet", "--check-size", "13x11"], capsys)
        assert code == 0, stderr
        check_standard_export(out, stdout, net, scale)
    finally:  # 2 x 67 MB: pytest keeps the last runs' temporary folders
        path.unlink(missing_ok=True)
        out.unlink(missing_ok=True)


def check_standard_export(out: Path, stdout: str, net: torch.nn.Module, scale: int) -> None:
    meta = props(out)
    assert json.loads(meta["invsr.arch_options"]) == {**STANDARD, "scale": scale, "num_in_ch": 3, "num_out_ch": 3}
    assert meta["invsr.input_multiple"] == ("1" if scale == 4 else "2")
    assert meta["invsr.scale"] == str(scale)
    assert "16.70 M parameters" in stdout
    # compare with the original net (not the exporter's reloaded copy): proves the key conversion, the EMA choice
    # (params are zeros) and the pixel-unshuffle channel order, on a non-uniform input
    x = noise(13, 11) if scale == 4 else noise(14, 10)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(ort_run(out, x.numpy()), expected, atol=2e-5)


def test_pixel_unshuffle_channel_order_mistake_is_caught(tmp_path, capsys, monkeypatch):
    """An exporter that writes pixel-unshuffle in ONNX's SpaceToDepth (DCR) channel order instead of PyTorch's
    must fail the check: simulated by tracing a DCR-order space_to_depth while PyTorch's reference keeps the
    right one."""
    options = {**TINY, "scale": 2}
    ckpt = save_ours(make_net(**options), tmp_path / "model_rrdbnet_x2.pt", options)
    right = rrdbnet_module.space_to_depth

    def dcr_space_to_depth(x, factor):
        b, c, h, w = x.shape
        x = x.view(b, c, h // factor, factor, w // factor, factor)
        return x.permute(0, 3, 5, 1, 2, 4).reshape(b, c * factor * factor, h // factor, w // factor)

    real_export = export.torch_to_onnx

    def mistaken_export(net, example, **kwargs):
        monkeypatch.setattr(rrdbnet_module, "space_to_depth", dcr_space_to_depth)
        try:
            return real_export(net, example, **kwargs)
        finally:
            monkeypatch.setattr(rrdbnet_module, "space_to_depth", right)

    monkeypatch.setattr(export, "torch_to_onnx", mistaken_export)
    out = tmp_path / "wrong.onnx"
    code, stdout, stderr = run([ckpt, "-o", out], capsys)

    assert code == 1
    assert "FAILED" in stdout and "nothing written" in stderr
    assert not out.exists()
    # why the check input must not be uniform: on a flat grey image the two orders agree exactly
    flat = torch.full((1, 3, 6, 4), 0.4)
    assert torch.equal(right(flat, 2), dcr_space_to_depth(flat, 2))
    assert not torch.equal(right(noise(6, 4), 2), dcr_space_to_depth(noise(6, 4), 2))


def test_perturbed_export_exits_non_zero(tmp_path, capsys, monkeypatch):
    options = {**TINY, "scale": 4}
    ckpt = save_ours(make_net(**options), tmp_path / "model_rrdbnet_x4.pt", options)
    real_export = export.torch_to_onnx

    def perturbed(net, example, **kwargs):
        model = real_export(net, example, **kwargs)
        weight = next(t for t in model.graph.initializer if t.name == "conv_last.bias")
        values = onnx.numpy_helper.to_array(weight) + np.float32(1e-3)
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        return model

    monkeypatch.setattr(export, "torch_to_onnx", perturbed)
    out = tmp_path / "perturbed.onnx"
    code, stdout, stderr = run([ckpt, "-o", out], capsys)
    assert code == 1
    m = re.search(r"max \|diff\| = ([0-9.e+-]+)", stdout)
    assert m and float(m.group(1)) > 1e-4
    assert "FAILED" in stdout and not out.exists()


def test_pickle_with_python_objects_is_refused(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}, "payload": _Payload(str(marker))}, path)

    with pytest.raises(CheckpointError, match="checkpoint contains Python objects; refusing to unpickle untrusted"):
        load_untrusted(path)
    code, _, stderr = run([path, "-o", tmp_path / "evil.onnx"], capsys)
    assert code == 2
    assert "checkpoint contains Python objects; refusing to unpickle untrusted code" in stderr
    assert "evil.pth" in stderr
    assert not marker.exists()


class _Payload:
    """Unpickling this would run code (creating a marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_garbage_and_truncated_files_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    for seed in range(200):  # random bytes end the unpickler in many ways (one CI run: IndexError from its stack)
        garbage.write_bytes(np.random.default_rng(seed).bytes(2000))
        with pytest.raises(CheckpointError, match="garbage.pth"):
            load_untrusted(garbage)
    good = tmp_path / "good.pth"
    torch.save({"params_ema": make_net(4).state_dict()}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_untrusted(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_untrusted(tmp_path / "missing.pth")


@pytest.mark.parametrize(
    "state, found",
    [
        ({"body.0.weight": torch.zeros(64, 3, 3, 3), "body.1.weight": torch.zeros(64),
          "body.2.weight": torch.zeros(64, 64, 3, 3)}, "SRVGGNetCompact"),
        ({"conv_first.weight": torch.zeros(1), "layers.0.residual_group.blocks.0.attn.qkv.weight": torch.zeros(1)},
         "SwinIR"),
    ],
)
def test_checkpoint_of_another_architecture_names_both(tmp_path, capsys, state, found):
    path = tmp_path / "other.pth"
    torch.save({"params": state}, path)
    code, _, stderr = run([path, "-o", tmp_path / "x.onnx", "--arch", "rrdbnet"], capsys)
    assert code == 2
    assert found in stderr and "rrdbnet" in stderr


def test_own_model_file_of_another_arch_names_both(tmp_path, capsys):
    path = tmp_path / "model_edsr_x4.pt"
    torch.save({"format": "invsr-model/1", "arch": "edsr", "arch_kwargs": {"scale": 4}, "scale": 4,
                "params_ema": {"head.0.weight": torch.zeros(1)}}, path)
    code, _, stderr = run([path, "-o", tmp_path / "x.onnx", "--arch", "rrdbnet"], capsys)
    assert code == 2
    assert "edsr" in stderr and "rrdbnet" in stderr


def test_scale_mismatch_and_training_state_are_errors(tmp_path):
    options = {**TINY, "scale": 2}
    ckpt = save_ours(make_net(**options), tmp_path / "model_rrdbnet_x2.pt", options)
    with pytest.raises(CheckpointError, match=r"x2 model .* --scale 4"):
        load_checkpoint(ckpt, scale=4)
    bare = tmp_path / "bare.pth"
    torch.save(make_net(**options).state_dict(), bare)
    with pytest.raises(CheckpointError, match=r"x2 model \(read from its tensor shapes\)"):
        load_checkpoint(bare, scale=4)
    latest = tmp_path / "latest.pt"
    torch.save({"format": "invsr-train/1", "model": {"net_g": {}}, "step": 3}, latest)
    with pytest.raises(CheckpointError, match="model_<arch>_x<scale>.pt"):
        load_checkpoint(latest)


def test_fp16_model_runs_and_reports_its_difference(tmp_path, capsys):
    options = {**TINY, "scale": 4, "residual": "nearest"}
    net = make_net(**options)
    ckpt = save_ours(net, tmp_path / "model_rrdbnet_x4.pt", options)
    out = tmp_path / "esrgan-tiny-x4-fp16.onnx"

    code, stdout, stderr = run([ckpt, "-o", out, "--fp16"], capsys)

    assert code == 0, stderr
    lines = [line for line in stdout.splitlines() if line.startswith("check fp16")]
    assert len(lines) == 2 and all("max |diff|" in line and "PSNR" in line and "OK" in line for line in lines)
    model = onnx.load(str(out))
    assert {t.data_type for t in model.graph.initializer if t.dims} >= {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert props(out)["invsr.precision"] == "fp16"
    assert len(json.loads(props(out)["invsr.check"])) == 3
    x = noise(9, 7)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(ort_run(out, x.numpy()), expected, atol=2e-2)


def write_photos(folder: Path, count: int = 3) -> Path:
    """Small synthetic photos: smooth gradients, a few shapes, a little noise."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = 96 + 8 * i, 80
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin((xx + yy) / (6 + i))], axis=2)
        img[20:50, 15:45] = rng.uniform(0, 1, 3)
        img += rng.normal(0, 0.02, img.shape)
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(folder / f"photo{i}.png")
    return folder


def test_int8_model_runs_and_reports_its_difference(tmp_path, capsys):
    options = {**TINY, "scale": 2, "residual": "nearest"}
    net = make_net(**options)
    ckpt = save_ours(net, tmp_path / "model_rrdbnet_x2.pt", options)
    calib = write_photos(tmp_path / "calib")
    out = tmp_path / "esrgan-tiny-x2-int8.onnx"

    code, stdout, stderr = run([ckpt, "-o", out, "--int8", "--calibration", calib, "--calibration-count", "6",
                                "--calibration-patch", "24"], capsys)

    assert code == 0, stderr
    assert "calibrating on 6 LR patches of 24x24" in stdout
    lines = [line for line in stdout.splitlines() if line.startswith("check int8")]
    assert len(lines) == 2 and all("max |diff|" in line and "PSNR" in line for line in lines)
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert props(out)["invsr.precision"] == "int8" and props(out)["invsr.scale"] == "2"
    x = noise(14, 10)
    with torch.no_grad():
        expected = net(x).numpy()
    got = ort_run(out, x.numpy())
    assert got.shape == expected.shape and np.isfinite(got).all()
    assert onnx_core.psnr(got, expected) > 25


def test_int8_needs_calibration_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        export.main([str(tmp_path / "x.pt"), "-o", str(tmp_path / "x.onnx"), "--int8"])
    assert exc.value.code == 2
    assert "--calibration" in capsys.readouterr().err


def test_install_copies_into_user_model_folder(tmp_path, capsys, monkeypatch):
    models = tmp_path / "user-models"
    monkeypatch.setenv("INVSR_MODELS_DIR", str(models))
    options = {**TINY, "scale": 4}
    ckpt = save_ours(make_net(**options), tmp_path / "model_rrdbnet_x4.pt", options)
    out = tmp_path / "out" / "esrgan-mine-x4.onnx"
    code, stdout, stderr = run([ckpt, "-o", out, "--install", "--name", "Mine", "--trained-on", "my photos"], capsys)
    assert code == 0, stderr
    installed = models / "esrgan-mine-x4.onnx"
    assert installed.read_bytes() == out.read_bytes()
    assert props(installed)["invsr.name"] == "Mine" and props(installed)["invsr.trained_on"] == "my photos"
    assert f"installed {installed}" in stdout


def test_an_existing_model_is_never_replaced_without_force(tmp_path, capsys, monkeypatch):
    models = tmp_path / "user-models"
    monkeypatch.setenv("INVSR_MODELS_DIR", str(models))
    options = {**TINY, "scale": 4}
    ckpt = save_ours(make_net(**options), tmp_path / "model_rrdbnet_x4.pt", options)
    out = tmp_path / "esrgan-mine-x4.onnx"
    out.write_bytes(b"the user's own model")
    with pytest.raises(SystemExit) as exc:
        export.main([str(ckpt), "-o", str(out)])
    assert exc.value.code == 2 and "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's own model"
    models.mkdir()
    (models / "esrgan-other-x4.onnx").write_bytes(b"installed earlier")
    with pytest.raises(SystemExit):
        export.main([str(ckpt), "-o", str(tmp_path / "esrgan-other-x4.onnx"), "--install"])
    assert "already installed" in capsys.readouterr().err
    assert (models / "esrgan-other-x4.onnx").read_bytes() == b"installed earlier"
    code, _, stderr = run([ckpt, "-o", out, "--force"], capsys)
    assert code == 0, stderr and out.read_bytes() != b"the user's own model"


def test_a_torchscript_file_is_named_and_never_run(tmp_path, capsys):
    scripted = torch.jit.trace(make_net(scale=2, **TINY), torch.rand(1, 3, 8, 8))
    path = tmp_path / "model.pt"
    torch.jit.save(scripted, str(path))
    code, _, stderr = run([path, "-o", tmp_path / "x.onnx"], capsys)
    assert code == 2 and "TorchScript model" in stderr and "state_dict" in stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("INVSR_TEST_DYNAMO") != "1",
                    reason="the dynamo exporter (not the default) takes 10-20 s here; INVSR_TEST_DYNAMO=1 runs it")
def test_dynamo_exporter(tmp_path, capsys):
    options = {**TINY, "scale": 2}
    net = make_net(**options)
    ckpt = save_ours(net, tmp_path / "model_rrdbnet_x2.pt", options)
    out = tmp_path / "dynamo.onnx"
    code, stdout, stderr = run([ckpt, "-o", out, "--exporter", "dynamo", "--check-size", "13x11"], capsys)
    assert code == 0, stderr
    model = onnx.load(str(out))
    assert not any(n.metadata_props or n.doc_string for n in model.graph.node)  # no stack traces / local paths
    x = noise(10, 6)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(ort_run(out, x.numpy()), expected, atol=1e-5)


def test_written_files_get_normal_permissions(tmp_path):
    """A model installed for the app must be readable like any file the user writes (not mkstemp's 0600)."""
    import os

    from model_export.export import atomic_write

    target = tmp_path / "model.onnx"
    atomic_write(b"bytes", target)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert target.read_bytes() == b"bytes"
