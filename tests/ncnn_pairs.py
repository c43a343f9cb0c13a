"""Upscayl's form of a model for tests: a tiny RRDBNet written as an ncnn pair by the real converter (pnnx)."""

from __future__ import annotations

from pathlib import Path

import pytest


def upscayl_pair(folder: Path, stem: str, blobs: tuple[str, str] = ("in0", "out0"), fp16: bool = True) -> Path:
    """``folder/stem.param`` and ``.bin`` of a seeded x4 RRDBNet (8 features, one block), float16 weights as
    Upscayl ships them; ``blobs`` renames pnnx's input / output (realesrgan-ncnn-vulkan's are ``data`` /
    ``output``). Skips the test where pnnx or ncnn is not installed. Returns the ``.param``."""
    from model_export.commands.bench_peers import ncnn_missing, to_ncnn

    if ncnn_missing():
        pytest.skip(f"pnnx writes the pair: {ncnn_missing()}")
    import onnx
    import torch

    from model_export.archs import build_arch
    from model_export.onnx_core import torch_to_onnx

    torch.manual_seed(0)
    net = build_arch("rrdbnet", scale=4, num_feat=8, num_block=1, num_grow_ch=4).eval()
    work = folder / f".{stem}-pnnx"
    work.mkdir(parents=True)
    onnx.save(torch_to_onnx(net, torch.rand(1, 3, 16, 16)), str(work / "tiny.onnx"))
    param, weights = to_ncnn(work / "tiny.onnx", work, fp16=fp16)
    text = param.read_text().replace(" in0", f" {blobs[0]}").replace(" out0", f" {blobs[1]}")
    (folder / f"{stem}.param").write_text(text)
    (folder / f"{stem}.bin").write_bytes(weights.read_bytes())
    return folder / f"{stem}.param"
