"""RRDBNet, the generator of ESRGAN (Wang et al., ECCV 2018 workshops) and Real-ESRGAN.

Structure: ``conv_first`` -> ``num_block`` residual-in-residual dense blocks (``body``) -> ``conv_body`` plus a
long skip from ``conv_first`` -> per x2 stage a nearest-neighbour upsample and a 3x3 conv (``conv_up1``,
``conv_up2``, LeakyReLU 0.2) -> ``conv_hr`` -> ``conv_last``. A dense block has five 3x3 convs, each fed the
concatenation of the block input and every earlier output, and its output is scaled by 0.2 and added to its input;
an RRDB chains three dense blocks and again scales by 0.2 before adding its input.

The body always works at x4. Scale 2 and 1 follow Real-ESRGAN: the input is first pixel-unshuffled by 2 (or 4),
so ``conv_first`` takes 12 (or 48) channels. The parameter names are BasicSR's (``conv_first``,
``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``), so BasicSR / Real-ESRGAN
checkpoints load with ``load_state_dict``; :func:`convert_state_dict` maps the two older ESRGAN namings onto them
and :func:`infer_options` reads the constructor arguments back from a state dict.

Option ``residual="nearest"`` (default ``None``, our addition, no parameters): the output is the network's output
plus the nearest-neighbour upsampled input, so the network only learns the detail that nearest upsampling misses.
A small model trained from scratch converges faster with it. It changes what the weights mean, so a standard
checkpoint must be loaded with the default ``residual=None``; the option is saved in our checkpoints' config.
Nearest (not bicubic) keeps the ONNX export to plain ``Resize`` nodes that every runtime executes identically.

Option ``upsampler="pixelshuffle"`` (default ``"nearest_conv"``, our addition): ``conv_last`` maps the body's
features straight to ``3 * 16`` channels that a pixel shuffle turns into the x4 output, instead of two
nearest-upsample convolutions and ``conv_hr`` at high resolution (ESPCN's sub-pixel layer). Those three
full-resolution convolutions cost more than the whole body of a small model on a CPU (measured: 4.4 against 2.4
training iterations per second for 32 features / 3 blocks); standard checkpoints use the default.

Input and output: NCHW float32 RGB in [0, 1] (the output is not clamped).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from model_export.archs import register_arch


def _init_scaled_kaiming(modules, scale: float = 0.1) -> None:
    """Kaiming-normal weights scaled down (0.1 in the dense blocks, as ESRGAN does), zero biases."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data.mul_(scale)
                if m.bias is not None:
                    m.bias.data.zero_()


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel unshuffle with the channel order of ``torch.nn.functional.pixel_unshuffle`` and BasicSR
    (channel ``c * f * f + i * f + j`` holds pixel ``(i, j)`` of each f x f cell), written as view/permute so
    the ONNX export is the same on every opset."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // factor, factor, w // factor, factor)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, c * factor * factor, h // factor, w // factor)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; output = conv5(...) * 0.2 + input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        _init_scaled_kaiming([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, output * 0.2 + input."""

    def __init__(self, num_feat: int, num_grow_ch: int = 32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


@register_arch("rrdbnet")
class RRDBNet(nn.Module):
    """ESRGAN's generator for scale 4, 2 (pixel-unshuffle 2 first) or 1 (pixel-unshuffle 4 first).

    Defaults are the published ESRGAN / Real-ESRGAN size (64 features, 23 blocks, growth 32: 16.7 M parameters).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        residual: str | None = None,
        upsampler: str = "nearest_conv",
    ):
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, not {scale}")
        if residual not in (None, "none", "nearest"):
            raise ValueError(f"residual must be None or 'nearest', not {residual!r}")
        if residual == "nearest" and num_in_ch != num_out_ch:
            raise ValueError("residual='nearest' needs num_in_ch == num_out_ch")
        if upsampler not in ("nearest_conv", "pixelshuffle"):
            raise ValueError(f"upsampler must be 'nearest_conv' or 'pixelshuffle', not {upsampler!r}")
        self.scale = scale
        self.upsampler = upsampler
        self.residual = None if residual == "none" else residual
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.input_multiple = self.unshuffle
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        if upsampler == "pixelshuffle":
            self.conv_last = nn.Conv2d(num_feat, num_out_ch * 16, 3, 1, 1)
        else:
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = space_to_depth(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        if self.upsampler == "pixelshuffle":
            out = F.pixel_shuffle(self.conv_last(feat), 4)
        else:
            feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
            feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
            out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        if self.residual == "nearest":
            out = out + (F.interpolate(x, scale_factor=float(self.scale), mode="nearest") if self.scale > 1 else x)
        return out

    def grow_from(self, small: dict[str, torch.Tensor]) -> int:
        """Load a trained RRDBNet of the same width and fewer blocks so that this deeper one computes the same
        function; returns the number of blocks added.

        Why: on two CPU cores a deeper generator trained from scratch would spend days getting back to where the
        trained one is; grown, it starts there and its extra blocks only have to learn what the small one could not.
        The small net's blocks come first. Each added RRDB has the last convolution of its three dense blocks
        zeroed, so each dense block is the identity and the RRDB multiplies its input by 1.2 (0.2 x the identity
        chain plus the skip); ``conv_body``, being linear, undoes that exactly with its weight divided by
        ``1.2 ** added``. The zeroed convolutions still get gradients (their inputs are not zero), so the new blocks
        learn from the first step, as a residual branch whose last layer starts at zero does (Fixup).
        Raises ``ValueError`` where the small net is not a shallower one of this shape."""
        ours = self.state_dict()
        small_blocks = 1 + max((int(m.group(1)) for k in small if (m := re.match(r"body\.(\d+)\.", k))), default=-1)
        added = len(self.body) - small_blocks
        if added < 0:
            raise ValueError(f"the small net has {small_blocks} blocks, more than this one's {len(self.body)}")
        for name, theirs in small.items():
            if name not in ours or ours[name].shape != theirs.shape:
                shape = tuple(ours[name].shape) if name in ours else "absent"
                raise ValueError(f"{name}: {tuple(theirs.shape)} does not fit ({shape} here)")
            ours[name] = theirs.to(ours[name].dtype).clone()
        for block in range(small_blocks, len(self.body)):
            for rdb in ("rdb1", "rdb2", "rdb3"):
                ours[f"body.{block}.{rdb}.conv5.weight"].zero_()
                ours[f"body.{block}.{rdb}.conv5.bias"].zero_()
        ours["conv_body.weight"] = ours["conv_body.weight"] / 1.2**added
        self.load_state_dict(ours)
        return added


# ---------------------------------------------------------------------------------------------------------------
# Loading standard checkpoints

_OLD_SEQ = {  # xinntao/ESRGAN before 2019 ("model.N" sequential naming), scale 4 only
    "model.0.": "conv_first.",
    "model.3.": "conv_up1.",
    "model.6.": "conv_up2.",
    "model.8.": "conv_hr.",
    "model.10.": "conv_last.",
}
_OLD_ARCH = {  # xinntao/ESRGAN RRDB_net after 2019
    "RRDB_trunk.": "body.",
    "trunk_conv.": "conv_body.",
    "upconv1.": "conv_up1.",
    "upconv2.": "conv_up2.",
    "HRconv.": "conv_hr.",
}


def convert_state_dict(state: dict) -> dict[str, torch.Tensor]:
    """A state dict in BasicSR naming from any common RRDBNet checkpoint.

    Accepts BasicSR / Real-ESRGAN files (``{"params_ema": ...}`` or ``{"params": ...}``, preferring the EMA), our
    training checkpoints (same keys), a bare BasicSR state dict, and the two namings of the original ESRGAN
    repository (``model.0`` / ``model.1.sub.N.RDB1.conv1.0`` and ``RRDB_trunk.N.RDB1.conv1`` / ``trunk_conv`` /
    ``upconv1`` / ``HRconv``).
    """
    for key in ("params_ema", "params", "state_dict"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    if any(k.startswith("model.1.sub.") for k in state):
        n_sub = max(int(m.group(1)) for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.", k)))
        for k, v in state.items():
            m = re.match(r"model\.1\.sub\.(\d+)\.(.*)", k)
            if m and int(m.group(1)) == n_sub:  # the last entry of the trunk is the trunk conv
                out["conv_body." + m.group(2)] = v
            elif m:
                rest = re.sub(r"RDB(\d)\.conv(\d)\.0\.", r"rdb\1.conv\2.", m.group(2))
                out[f"body.{m.group(1)}.{rest}"] = v
            else:
                for old, new in _OLD_SEQ.items():
                    if k.startswith(old):
                        out[new + k[len(old):]] = v
                        break
                else:
                    raise KeyError(f"unexpected key {k!r} in an old-style ESRGAN checkpoint")
        return out
    for k, v in state.items():
        for old, new in _OLD_ARCH.items():
            if k.startswith(old):
                k = new + k[len(old):]
                break
        k = re.sub(r"\.RDB(\d)\.", r".rdb\1.", k)
        out[k] = v
    return out


def infer_options(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """``num_in_ch``, ``num_out_ch``, ``scale``, ``num_feat``, ``num_block``, ``num_grow_ch`` of a BasicSR-named
    state dict (the output of :func:`convert_state_dict`). ``residual`` cannot be read from weights."""
    w_first = state["conv_first.weight"]
    num_feat, in_ch = int(w_first.shape[0]), int(w_first.shape[1])
    pixelshuffle = "conv_up1.weight" not in state
    num_out = int(state["conv_last.weight"].shape[0]) // (16 if pixelshuffle else 1)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    grow = int(state["body.0.rdb1.conv1.weight"].shape[0]) if blocks else 32
    for unshuffle, scale in ((1, 4), (2, 2), (4, 1)):
        if in_ch % (unshuffle * unshuffle) == 0 and in_ch // (unshuffle * unshuffle) == num_out:
            break
    else:
        raise ValueError(f"cannot tell the scale from conv_first with {in_ch} input channels")
    return {
        "num_in_ch": in_ch // (unshuffle * unshuffle),
        "num_out_ch": num_out,
        "scale": scale,
        "num_feat": num_feat,
        "num_block": len(blocks),
        "num_grow_ch": grow,
        **({"upsampler": "pixelshuffle"} if pixelshuffle else {}),
    }
