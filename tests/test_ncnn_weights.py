"""ncnn model files (Upscayl's form) read back into an RRDBNet: pairs written by the real converter (pnnx), in
float16 and float32, against the network they came from; and the damaged or foreign pairs a user may hand in."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch

from model_export.archs import build_arch
from model_export.checkpoints import CheckpointError, load_checkpoint
from model_export.commands.bench_peers import ncnn_missing
from model_export.onnx_core import torch_to_onnx

TINY = dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=2, num_grow_ch=4)

pytestmark = pytest.mark.skipif(bool(ncnn_missing()), reason=f"pnnx writes the pairs: {ncnn_missing()}")


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(3)
    net = build_arch("rrdbnet", **TINY).eval()
    with torch.no_grad():  # weights of a trained net's spread, not init's: float16 rounding must show if mishandled
        for p in net.parameters():
            p.mul_(3.0)
    return net


@pytest.fixture(scope="module", params=[True, False], ids=["float16", "float32"])
def pair(request, tmp_path_factory):
    """(net, .param, .bin, float16?) converted by pnnx from the net's ONNX export."""
    from model_export.commands.bench_peers import to_ncnn

    folder = tmp_path_factory.mktemp("ncnn")
    net = tiny_net()
    onnx.save(torch_to_onnx(net, torch.rand(1, 3, 16, 16)), str(folder / "tiny.onnx"))
    param, weights = to_ncnn(folder / "tiny.onnx", folder / "pair", fp16=request.param)
    return net, param, weights, request.param


def copy_pair(param, weights, folder):
    folder.mkdir()
    return shutil.copy(param, folder / "m.param"), shutil.copy(weights, folder / "m.bin")


def test_a_converted_pair_reads_back_as_the_network_it_came_from(pair):
    net, param, weights, fp16 = pair
    ckpt = load_checkpoint(weights)  # the .bin names the pair as well as the .param
    assert ckpt.arch == "rrdbnet" and ckpt.options == TINY
    assert ckpt.source.endswith(f"(ncnn model, {'float16' if fp16 else 'float32'} weights)")
    own = net.state_dict()
    assert set(ckpt.state_dict) == set(own)
    for name, value in ckpt.state_dict.items():
        # float16: rounding, and pnnx writes values under float16's smallest normal (6.1e-5) as zero
        rtol, atol = (1e-3, 6.2e-5) if fp16 else (1e-7, 0.0)
        np.testing.assert_allclose(value.numpy(), own[name].numpy(), rtol=rtol, atol=atol, err_msg=name)
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        mse = torch.mean((ckpt.build()(x) - net(x)) ** 2).item()
    assert 10 * np.log10(1 / max(mse, 1e-20)) > (40 if fp16 else 120)  # float16: 49 dB on this tiny net


def test_invsr_export_takes_an_ncnn_pair_and_says_where_it_came_from(pair, tmp_path):
    from model_export.export import main

    _, param, _, _ = pair
    out = tmp_path / "upscayl.onnx"
    assert main([str(param), "-o", str(out), "--threads", "1"]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "ncnn model" in props["invsr.source"] and props["invsr.arch"] == "rrdbnet"


def test_a_truncated_or_padded_bin_is_refused(pair, tmp_path):
    _, param, weights, _ = pair
    p, b = copy_pair(param, weights, tmp_path / "short")
    b.write_bytes(b.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="ends early"):
        load_checkpoint(p)
    p, b = copy_pair(param, weights, tmp_path / "long")
    b.write_bytes(b.read_bytes() + bytes(8))
    with pytest.raises(CheckpointError, match="bytes are left after the last layer"):
        load_checkpoint(p)


def test_a_pair_missing_its_bin_is_named(pair, tmp_path):
    _, param, weights, _ = pair
    p, b = copy_pair(param, weights, tmp_path / "alone")
    b.unlink()
    with pytest.raises(CheckpointError, match="m.bin is missing"):
        load_checkpoint(p)


def _with_prelu(lines: list[str]) -> list[str]:
    return lines + ["PReLU                    prelu_0                  1 1 out0 out1 0=3"]


def _without_first_conv(lines: list[str]) -> list[str]:
    first = next(i for i, line in enumerate(lines) if line.startswith("Convolution"))
    return lines[:first] + lines[first + 1:]


@pytest.mark.parametrize("edit, why", [(_with_prelu, "layer prelu_0 is a PReLU"),
                                       (_without_first_conv, "not an ESRGAN / Real-ESRGAN RRDBNet")])
def test_another_architecture_is_refused_and_says_why(pair, tmp_path, edit, why):
    """A layer an RRDBNet does not have, or a convolution count that is not 6 + 15 x blocks."""
    _, param, weights, _ = pair
    p, _ = copy_pair(param, weights, tmp_path / "other")
    p.write_text("\n".join(edit(p.read_text().splitlines())) + "\n")
    with pytest.raises(CheckpointError, match=why):
        load_checkpoint(p)


def test_int8_weights_and_non_ncnn_text_are_refused(pair, tmp_path):
    _, param, weights, _ = pair
    p, b = copy_pair(param, weights, tmp_path / "int8")
    data = bytearray(b.read_bytes())
    data[:4] = (0x000D4B38).to_bytes(4, "little")
    b.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="int8"):
        load_checkpoint(p)
    p.write_text("not a param file\n")
    with pytest.raises(CheckpointError, match="not an ncnn .param"):
        load_checkpoint(p)
