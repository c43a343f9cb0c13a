"""Architectures: registry, RRDBNet shapes at each scale, BasicSR key names, loading the other ESRGAN namings."""

import re

import pytest
import torch
import torch.nn.functional as F

from model_export.archs import ARCHS, arch_parameters, build_arch, count_parameters, get_arch
from model_export.archs.rrdbnet import RRDBNet, convert_state_dict, infer_options, space_to_depth

SMALL = dict(num_feat=8, num_block=2, num_grow_ch=4)


def test_registry():
    assert get_arch("rrdbnet") is RRDBNet
    assert "rrdbnet" in ARCHS
    assert {"scale", "num_feat", "num_block", "num_grow_ch", "residual"} <= set(arch_parameters("rrdbnet"))
    with pytest.raises(KeyError, match="nope"):
        build_arch("nope")
    with pytest.raises(TypeError, match="num_feats"):
        build_arch("rrdbnet", num_feats=3)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_shapes(scale):
    net = build_arch("rrdbnet", scale=scale, **SMALL).eval()
    x = torch.rand(2, 3, 12, 16)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, 12 * scale, 16 * scale)
    assert net.scale == scale
    assert net.input_multiple == {4: 1, 2: 2, 1: 4}[scale]
    assert net.conv_first.in_channels == 3 * {4: 1, 2: 4, 1: 16}[scale]


def test_bad_scale():
    with pytest.raises(ValueError):
        RRDBNet(scale=3)


def test_basicsr_key_names():
    net = RRDBNet(**SMALL)
    keys = set(net.state_dict())
    for name in ["conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]:
        assert f"{name}.weight" in keys and f"{name}.bias" in keys
    for b in range(2):
        for r in (1, 2, 3):
            for c in range(1, 6):
                assert f"body.{b}.rdb{r}.conv{c}.weight" in keys
    allowed = re.compile(r"^(conv_(first|body|up1|up2|hr|last)|body\.\d+\.rdb[123]\.conv[1-5])\.(weight|bias)$")
    assert all(allowed.match(k) for k in keys), sorted(k for k in keys if not allowed.match(k))


def test_published_size():
    # ESRGAN / Real-ESRGAN RRDB_ESRGAN_x4: 64 features, 23 blocks, growth 32 -> 16,697,987 parameters
    assert count_parameters(RRDBNet()) == 16_697_987


def test_space_to_depth_matches_pixel_unshuffle():
    x = torch.rand(1, 3, 8, 12)
    for f in (2, 4):
        assert torch.equal(space_to_depth(x, f), F.pixel_unshuffle(x, f))


@pytest.mark.parametrize("scale", [2, 4])
def test_residual_nearest(scale):
    net = RRDBNet(scale=scale, residual="nearest", **SMALL).eval()
    torch.nn.init.zeros_(net.conv_last.weight)
    torch.nn.init.zeros_(net.conv_last.bias)
    x = torch.rand(1, 3, 6, 8)
    with torch.no_grad():
        assert torch.allclose(net(x), F.interpolate(x, scale_factor=scale, mode="nearest"))
    assert set(net.state_dict()) == set(RRDBNet(scale=scale, **SMALL).state_dict())  # no extra parameters
    with pytest.raises(ValueError):
        RRDBNet(residual="bicubic")


def _to_old_arch_naming(sd):
    out = {}
    for k, v in sd.items():
        k = k.replace("conv_body.", "trunk_conv.").replace("conv_up1.", "upconv1.").replace("conv_up2.", "upconv2.")
        k = k.replace("conv_hr.", "HRconv.")
        k = re.sub(r"^body\.(\d+)\.rdb(\d)\.", r"RRDB_trunk.\1.RDB\2.", k)
        out[k] = v
    return out


def _to_old_seq_naming(sd, num_block):
    table = {"conv_first.": "model.0.", "conv_body.": f"model.1.sub.{num_block}.", "conv_up1.": "model.3.",
             "conv_up2.": "model.6.", "conv_hr.": "model.8.", "conv_last.": "model.10."}
    out = {}
    for k, v in sd.items():
        m = re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", k)
        if m:
            out[f"model.1.sub.{m.group(1)}.RDB{m.group(2)}.conv{m.group(3)}.0.{m.group(4)}"] = v
            continue
        for new, old in table.items():
            if k.startswith(new):
                out[old + k[len(new):]] = v
    return out


@pytest.mark.parametrize("naming", ["basicsr", "params_ema", "old_arch", "old_seq"])
def test_convert_state_dict(naming):
    src = RRDBNet(**SMALL)
    sd = src.state_dict()
    given = {
        "basicsr": sd,
        "params_ema": {"params": {}, "params_ema": sd},
        "old_arch": _to_old_arch_naming(sd),
        "old_seq": _to_old_seq_naming(sd, SMALL["num_block"]),
    }[naming]
    converted = convert_state_dict(given)
    opts = infer_options(converted)
    assert opts == dict(num_in_ch=3, num_out_ch=3, scale=4, **SMALL)
    dst = RRDBNet(**opts)
    dst.load_state_dict(converted)  # strict
    assert all(torch.equal(dst.state_dict()[k], sd[k]) for k in sd)


def test_infer_scale_from_unshuffle():
    for scale in (1, 2):
        sd = RRDBNet(scale=scale, **SMALL).state_dict()
        assert infer_options(sd)["scale"] == scale


@pytest.mark.parametrize("scale", [2, 4])
def test_pixelshuffle_upsampler_shapes_and_inference(scale):
    """The sub-pixel upsampler has no high-resolution convolutions, and its options are read back from the weights."""
    net = build_arch("rrdbnet", scale=scale, num_feat=8, num_block=1, num_grow_ch=4, upsampler="pixelshuffle")
    assert not any(name.startswith(("conv_up1", "conv_hr")) for name in net.state_dict())
    assert net(torch.rand(1, 3, 6, 10)).shape == (1, 3, 6 * scale, 10 * scale)
    assert infer_options(net.state_dict())["upsampler"] == "pixelshuffle"
    assert infer_options(net.state_dict())["scale"] == scale
    assert "upsampler" not in infer_options(build_arch("rrdbnet", num_feat=8, num_block=1, num_grow_ch=4).state_dict())


@pytest.mark.parametrize("upsampler", ["nearest_conv", "pixelshuffle"])
def test_grow_from_adds_blocks_that_keep_the_function(upsampler):
    """A deeper RRDBNet grown from a trained shallower one computes the same output at step 0, and its new blocks
    learn (their zeroed last convolutions get a gradient); a net that does not fit inside is refused."""
    torch.manual_seed(0)
    opts = dict(num_feat=8, num_grow_ch=4, residual="nearest", upsampler=upsampler)
    small = RRDBNet(num_block=2, **opts)
    for p in small.parameters():  # trained-looking weights, not the init's near-zero branches
        p.data.add_(0.05 * torch.randn_like(p))
    big = RRDBNet(num_block=5, **opts)
    assert big.grow_from(small.state_dict()) == 3
    x = torch.rand(1, 3, 12, 10)
    torch.testing.assert_close(big(x), small(x), rtol=1e-5, atol=1e-5)
    big(x).square().mean().backward()
    assert big.body[4].rdb3.conv5.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="more than"):
        small.grow_from(big.state_dict())
    with pytest.raises(ValueError, match="does not fit"):
        RRDBNet(num_block=5, **{**opts, "num_feat": 16}).grow_from(small.state_dict())
