"""The OpenVINO path: which precision it asks for, real sessions that agree with ONNX Runtime, and the fallback.

OpenVINO is part of the ``[cpu]`` extra, so CI runs these; a machine without it skips the real-session tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from invsr_desktop.engine import openvino_sessions
from invsr_desktop.engine.openvino_sessions import failure_reason, inference_precision
from invsr_desktop.engine.pipeline import Engine, EngineOptions
from invsr_desktop.engine.sessions import SessionPool, planned_path
from invsr_desktop.resources import MODELS
from plugins.bicubic import MODEL as BICUBIC

ON_CPU = ["OpenVINO", "CPUExecutionProvider"]
needs_openvino = pytest.mark.skipif(openvino_sessions.openvino_core() is None, reason="OpenVINO not installed")


class FakeCore:
    """Only the capability list: what decides bf16 (the real CPU here has none, so this is how 'yes' is tested)."""

    def __init__(self, capabilities: list[str]) -> None:
        self.capabilities = capabilities

    def get_property(self, device: str, name: str) -> list[str]:
        assert (device, name) == ("CPU", "OPTIMIZATION_CAPABILITIES")
        return self.capabilities


def test_fast_is_bf16_only_where_the_cpu_runs_it_natively():
    amx = FakeCore(["FP32", "BF16", "INT8"])
    avx2 = FakeCore(["FP32", "INT8"])
    assert inference_precision(amx, "fast") == "bf16"
    assert inference_precision(amx, "fp32") == "f32"  # set explicitly: OpenVINO's own default on AMX is bf16
    assert inference_precision(avx2, "fast") == "f32"
    assert inference_precision(avx2, "fp32") == "f32"


def unsupported_model() -> bytes:
    """A graph ONNX Runtime runs and OpenVINO has no conversion for (an ``ai.onnx.ml`` operator)."""
    node = helper.make_node("Scaler", ["lr"], ["sr"], domain="ai.onnx.ml", scale=[2.0], offset=[0.0])
    graph = helper.make_graph(
        [node], "scaler",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 3, 4, 4])],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    return model.SerializeToString()


@needs_openvino
def test_auto_on_a_cpu_machine_runs_openvino_and_says_so():
    pool = SessionPool(threads=1, available=lambda: ON_CPU, measure=False)  # unmeasured: see test_provider_race
    session = pool.session(BICUBIC)
    assert session.get_providers() == ["OpenVINO"]
    assert [p.name for p in session.get_inputs()] == ["lr", "scale"]
    assert [p.name for p in session.get_outputs()] == ["sr"]
    assert pool.paths_in_use() == [planned_path("auto", "fast", ON_CPU)]
    assert planned_path("cpu", "fast", ON_CPU) == "ONNX Runtime CPU"


@needs_openvino
def test_a_model_openvino_cannot_compile_falls_back_to_onnxruntime_and_says_why():
    heard: list[str] = []
    pool = SessionPool(threads=1, available=lambda: ON_CPU, on_message=heard.append)
    session = pool.session(unsupported_model())
    assert session.get_providers()[0] == "CPUExecutionProvider"
    x = np.ones((1, 3, 4, 4), np.float32)
    np.testing.assert_allclose(session.run(["sr"], {"lr": x})[0], 2 * x)
    assert heard and "OpenVINO could not compile" in heard[0] and "ai.onnx.ml.Scaler" in heard[0]
    assert pool.paths_in_use() == ["ONNX Runtime CPU"]


def test_failure_reason_keeps_the_line_that_names_the_problem():
    text = ("Exception from src/inference/src/cpp/core.cpp:105:\nCheck 'false' failed at x.cpp:151:\n"
            "FrontEnd API failed with OpConversionFailure:\nModel wasn't fully converted.\nSummary:\n"
            "-- No conversion rule found for operations: ai.onnx.ml.Scaler\nTo facilitate the conversion ...\n")
    assert failure_reason(RuntimeError(text)) == "No conversion rule found for operations: ai.onnx.ml.Scaler"


@needs_openvino
@pytest.mark.parametrize("backend", ["bicubic", "esrgan-faithful-x4"])
def test_openvino_output_agrees_with_onnxruntime(backend):
    """The same ONNX file on both runtimes, tiling included: fp32 agreement far above what a user could see."""
    pixels = np.random.default_rng(1).random((40, 52, 3), dtype=np.float32)
    exact = Engine(options=EngineOptions(provider="cpu", threads=1, precision="fp32"))
    reference = exact.upscale_array(pixels, backend, 4)
    engine = Engine(options=EngineOptions(provider="openvino", threads=1, precision="fp32"))
    got = engine.upscale_array(pixels, backend, 4)
    assert engine.sessions.paths_in_use() == ["OpenVINO f32"]
    psnr = 10 * np.log10(1.0 / max(float(np.mean((got - reference) ** 2)), 1e-20))
    assert psnr > 90, psnr


@needs_openvino
def test_the_inn_round_trip_stays_fp32_when_the_cpu_could_run_bf16(monkeypatch, models_dir):
    """Shrink and restore ask for fp32 per model; a generative backend in the same pool gets the fast precision."""
    monkeypatch.setattr(openvino_sessions, "bf16_supported", lambda core: True)
    engine = Engine(options=EngineOptions(provider="openvino", threads=1, precision="fast"))
    engine.runner("inn-shrink", 2)
    engine.runner("inn", 2)
    assert {info.precision for info in engine.sessions.infos.values()} == {"f32"}
    assert len(engine.sessions.infos) == 2
    session = engine.sessions.session(BICUBIC)
    assert session.precision == "bf16"  # what OpenVINO was asked for; this CPU may run it as f32


def test_bundled_models_are_all_compiled_by_openvino_without_fallback():
    if openvino_sessions.openvino_core() is None:
        pytest.skip("OpenVINO not installed")
    heard: list[str] = []
    pool = SessionPool(provider="openvino", threads=1, on_message=heard.append)
    for path in sorted(MODELS.glob("*.onnx")):
        assert pool.session(path).get_providers() == ["OpenVINO"], path
    assert heard == []
