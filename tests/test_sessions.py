"""The provider chain, with ONNX Runtime's provider list substituted, and real sessions on this CPU machine."""

from __future__ import annotations

import pytest

from invsr_desktop.engine.errors import ModelFileError
from invsr_desktop.engine.sessions import SessionPool, fallback_message, provider_chain
from plugins.bicubic import MODEL as BICUBIC

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
WITH_OPENVINO = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "OpenVINO", "CPUExecutionProvider"]


def names(chain):
    return [name for name, _ in chain]


def test_auto_prefers_tensorrt_then_cuda_then_cpu():
    assert names(provider_chain(ALL)) == ALL
    assert names(provider_chain(["CUDAExecutionProvider", "CPUExecutionProvider"])) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert names(provider_chain(["AzureExecutionProvider", "CPUExecutionProvider"])) == ["CPUExecutionProvider"]


def test_openvino_comes_after_the_gpus_and_is_never_asked_of_onnxruntime():
    assert names(provider_chain(WITH_OPENVINO)) == ALL  # a GPU first: OpenVINO is not in ORT's chain
    assert names(provider_chain(["OpenVINO", "CPUExecutionProvider"])) == ["OpenVINO", "CPUExecutionProvider"]
    assert names(provider_chain(WITH_OPENVINO, "openvino")) == ["OpenVINO", "CPUExecutionProvider"]
    assert names(provider_chain(WITH_OPENVINO, "cpu")) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="not available"):
        provider_chain(ALL, "openvino")


def test_tensorrt_asks_for_fp16_and_an_engine_cache():
    options = dict(provider_chain(ALL))["TensorrtExecutionProvider"]
    assert options["trt_fp16_enable"] is True
    assert options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"].endswith("tensorrt")


def test_override_puts_the_choice_first_and_keeps_cpu_as_last_resort():
    assert names(provider_chain(ALL, "cuda")) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert names(provider_chain(ALL, "cpu")) == ["CPUExecutionProvider"]
    assert names(provider_chain(ALL, "auto")) == ALL


def test_override_that_is_not_available_names_what_is():
    with pytest.raises(ValueError, match="not available.*CPUExecutionProvider"):
        provider_chain(["CPUExecutionProvider"], "tensorrt")
    with pytest.raises(ValueError, match="unknown provider"):
        provider_chain(ALL, "vulkan")


def test_fallback_message_only_when_the_first_choice_was_lost():
    assert fallback_message(["CPUExecutionProvider"], ["CPUExecutionProvider"]) is None
    message = fallback_message(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"])
    assert "CUDAExecutionProvider" in message and "running on CPUExecutionProvider" in message


def test_a_session_asked_for_cuda_on_a_cpu_build_reports_the_fallback():
    """This machine's onnxruntime has no CUDA: ORT silently gives CPU, and the pool must say so."""
    heard: list[str] = []
    pool = SessionPool(available=lambda: ALL[1:], on_message=heard.append)
    session = pool.session(BICUBIC)
    assert session.get_providers()[0] == "CPUExecutionProvider"
    assert pool.providers_in_use() == ["CPUExecutionProvider"]
    assert heard and "CUDAExecutionProvider was requested" in heard[0]


def test_sessions_are_cached_per_model_and_threads_are_set():
    pool = SessionPool(provider="cpu", threads=1)
    first = pool.session(BICUBIC)
    assert pool.session(BICUBIC) is first
    assert pool.session(BICUBIC.read_bytes()) is not first
    assert first.get_session_options().intra_op_num_threads == 1


def test_missing_and_corrupt_model_files_are_clear_errors(tmp_path):
    pool = SessionPool()
    with pytest.raises(ModelFileError, match="not found"):
        pool.session(tmp_path / "nope.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelFileError, match="cannot load model"):
        pool.session(corrupt)
