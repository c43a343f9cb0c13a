"""The weights of an ncnn model (``.param`` + ``.bin``), the form Upscayl ships its models in, as a state dict.

Upscayl and realesrgan-ncnn-vulkan ship Real-ESRGAN as ncnn pairs (``realesrgan-x4plus.param`` / ``.bin``, weights
stored as float16), and that is the form many users hold their models in. ``invsr-export`` reads such a pair into
the same BasicSR-named state dict a ``.pth`` gives, so the app runs Upscayl's own model files through its engines.

Read by hand because no library reads ncnn weights back: ncnn's Python binding runs a model but exposes no layer's
blobs, and pnnx converts to ncnn, never from it. Both formats are ncnn's documented ones
(github.com/Tencent/ncnn/wiki/param-and-model-file-structure):

- the ``.param`` is text: the magic ``7767517``, ``layers blobs``, then one layer a line (``type name bottoms tops
  inputs... outputs... key=value...``; a key ``-233NN`` holds an array ``count,v1,v2...`` for key ``NN``);
- the ``.bin`` is each weighted layer's blobs in the ``.param``'s order. A Convolution holds its weight
  (``num_output x in x kh x kw``, PyTorch's order) behind a 4-byte tag (``0x01306B47`` float16, ``0`` float32; int8
  and quantisation tables are refused), padded to 4 bytes, then its bias as raw float32.

Only the layers of an ESRGAN / Real-ESRGAN RRDBNet are accepted (convolutions, and weightless splits, concats,
element-wise sums and resizes); anything else is refused by name, and the whole ``.bin`` must be read exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from invsr_desktop.engine.errors import InvsrError

MAGIC = "7767517"
FP16_TAG = 0x01306B47
FP32_TAG = 0
WEIGHTLESS = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "ReLU", "Clip", "Crop"})
RDB_CONVS = 15  # an RRDB: three dense blocks of five convolutions
OUTER_CONVS = 6  # conv_first, conv_body, conv_up1, conv_up2, conv_hr, conv_last


class NcnnModelError(InvsrError):
    """An ncnn pair that cannot be read as an RRDBNet; the message names the file and says why."""


@dataclass(frozen=True)
class NcnnConv:
    """One Convolution layer of a ``.param``: its name and the shapes of its weight and bias."""

    name: str
    out_channels: int
    kernel: tuple[int, int]
    weight_size: int
    bias: bool

    @property
    def in_channels(self) -> int:
        return self.weight_size // (self.out_channels * self.kernel[0] * self.kernel[1])


def pair_paths(path: Path) -> tuple[Path, Path]:
    """The ``.param`` and ``.bin`` of a pair from either file's path (they share the stem)."""
    param, weights = path.with_suffix(".param"), path.with_suffix(".bin")
    for file in (param, weights):
        if not file.is_file():
            raise NcnnModelError(f"{path}: an ncnn model is a .param and a .bin side by side; {file.name} is missing")
    return param, weights


def parse_params(text: str) -> dict[int, object]:
    """A layer line's ``key=value`` pairs: ints, floats, or for ``-233NN`` keys the array under key ``NN``."""
    params: dict[int, object] = {}
    for item in text.split():
        key, _, value = item.partition("=")
        number = int(key)
        if number <= -23300:
            count, *values = value.split(",")
            params[-number - 23300] = [float(v) for v in values[: int(count)]]
        else:
            params[number] = float(value) if any(c in value for c in ".eE") else int(value)
    return params


@dataclass(frozen=True)
class NcnnLayer:
    """One layer line of a ``.param``: its type, name, output blob names and ``key=value`` parameters."""

    kind: str
    name: str
    tops: tuple[str, ...]
    params: dict[int, object]


def read_layers(param: Path) -> list[NcnnLayer]:
    """The layers of a text ``.param``, in file order."""
    try:
        lines = param.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise NcnnModelError(f"{param}: not a text .param (a binary .param.bin is not read)") from None
    if not lines or lines[0].strip() != MAGIC:
        raise NcnnModelError(f"{param}: not an ncnn .param file (its first line is not {MAGIC})")
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        try:
            kind, name, bottoms, tops = fields[0], fields[1], int(fields[2]), int(fields[3])
            layers.append(NcnnLayer(kind, name, tuple(fields[4 + bottoms:4 + bottoms + tops]),
                                    parse_params(" ".join(fields[4 + bottoms + tops:]))))  # fmt: skip
        except (IndexError, ValueError):
            raise NcnnModelError(f"{param}: line {number} is not an ncnn layer: {line.strip()[:80]!r}") from None
    return layers


def convolutions(param: Path) -> list[NcnnConv]:
    """The Convolution layers in file order; any other weighted (or unknown) layer is refused by name."""
    convs = []
    for layer in read_layers(param):
        kind, name, p = layer.kind, layer.name, layer.params
        if kind in WEIGHTLESS:
            continue
        if kind != "Convolution":
            raise NcnnModelError(f"{param}: layer {name} is a {kind}, which an ESRGAN / Real-ESRGAN RRDBNet does not "
                                 "have; only that architecture is read from ncnn files")
        if p.get(8, 0) or p.get(7, 1) != 1:
            raise NcnnModelError(f"{param}: layer {name} is int8-quantised or grouped, which is not read")
        kw = int(p.get(1, 0))
        convs.append(NcnnConv(name, int(p.get(0, 0)), (int(p.get(11, kw)), kw), int(p.get(6, 0)), bool(p.get(5, 0))))
    return convs


class _Blobs:
    """Sequential reads of a ``.bin``'s blobs (ncnn's ModelBinFromDataReader, for the two float storages)."""

    def __init__(self, path: Path) -> None:
        self.path, self.data, self.offset = path, path.read_bytes(), 0

    def _take(self, nbytes: int) -> bytes:
        if self.offset + nbytes > len(self.data):
            raise NcnnModelError(f"{self.path}: the file ends early ({len(self.data)} bytes); it does not match "
                                 "its .param (truncated, or the .bin of another model)")
        chunk = self.data[self.offset:self.offset + nbytes]
        self.offset += nbytes
        return chunk

    def tagged(self, count: int, layer: str) -> np.ndarray:
        tag = int.from_bytes(self._take(4), "little")
        if tag == FP16_TAG:
            values = np.frombuffer(self._take(count * 2), dtype="<f2")
            self._take((-count * 2) % 4)  # padded to 4 bytes
            return values.astype(np.float32)
        if tag == FP32_TAG:
            return np.frombuffer(self._take(count * 4), dtype="<f4").copy()
        raise NcnnModelError(f"{self.path}: layer {layer}'s weights are stored as {tag:#010x} (int8 or a "
                             "quantisation table), not float16 / float32")

    def raw(self, count: int) -> np.ndarray:
        return np.frombuffer(self._take(count * 4), dtype="<f4").copy()

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise NcnnModelError(f"{self.path}: {len(self.data) - self.offset} bytes are left after the last layer; "
                                 "the .bin does not match its .param")


def rrdbnet_names(count: int) -> list[str]:
    """BasicSR's RRDBNet parameter prefixes in forward order, for ``count`` convolutions."""
    blocks, rest = divmod(count - OUTER_CONVS, RDB_CONVS)
    if count < OUTER_CONVS + RDB_CONVS or rest:
        raise ValueError(f"{count} convolutions is not 6 + 15 x blocks")
    body = [f"body.{b}.rdb{r}.conv{c}" for b in range(blocks) for r in (1, 2, 3) for c in range(1, 6)]
    return ["conv_first", *body, "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]


def read_rrdbnet(path: Path) -> dict[str, np.ndarray]:
    """The BasicSR-named float32 state dict of the ncnn pair at ``path`` (its ``.param`` or ``.bin``)."""
    param, weights = pair_paths(path)
    convs = convolutions(param)
    try:
        names = rrdbnet_names(len(convs))
    except ValueError as exc:
        raise NcnnModelError(f"{param}: not an ESRGAN / Real-ESRGAN RRDBNet ({exc})") from None
    blobs, state = _Blobs(weights), {}
    for name, conv in zip(names, convs):
        if conv.in_channels * conv.out_channels * conv.kernel[0] * conv.kernel[1] != conv.weight_size:
            raise NcnnModelError(f"{param}: layer {conv.name}'s weight size {conv.weight_size} does not divide")
        shape = (conv.out_channels, conv.in_channels, *conv.kernel)
        state[f"{name}.weight"] = blobs.tagged(conv.weight_size, conv.name).reshape(shape)
        if conv.bias:
            state[f"{name}.bias"] = blobs.raw(conv.out_channels)
    blobs.finish()
    return state


def weight_storage(path: Path) -> str:
    """``float16`` or ``float32``: how the pair's first weight is stored (for the model's provenance)."""
    _, weights = pair_paths(path)
    with weights.open("rb") as file:
        return "float16" if int.from_bytes(file.read(4), "little") == FP16_TAG else "float32"
