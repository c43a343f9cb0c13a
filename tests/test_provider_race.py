"""``auto`` on a CPU: OpenVINO against ONNX Runtime on a model's first call, the faster kept and remembered.

The race's logic runs on fake sessions with a fake clock (which engine is faster is the test's choice, not the
machine's); the pool's part runs on the real runtimes with the bundled bicubic model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from invsr_desktop.engine import openvino_sessions, provider_race
from invsr_desktop.engine.provider_race import OPENVINO, ONNXRUNTIME, ChoiceStore, RacingSession, faster
from invsr_desktop.engine.sessions import SessionPool, cache_dir
from plugins.bicubic import MODEL as BICUBIC

ON_CPU = [OPENVINO, ONNXRUNTIME]
needs_openvino = pytest.mark.skipif(openvino_sessions.openvino_core() is None, reason="OpenVINO not installed")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeSession:
    """Takes ``seconds`` of the fake clock per call and answers with its own name."""

    def __init__(self, name: str, seconds: float, clock: Clock, fails: bool = False) -> None:
        self.name, self.seconds, self.clock, self.fails, self.calls = name, seconds, clock, fails, 0

    def run(self, output_names, feeds):
        self.calls += 1
        if self.fails:
            raise RuntimeError(f"{self.name} cannot run this")
        self.clock.now += self.seconds
        return [self.name]

    def get_providers(self):
        return [self.name]


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(provider_race.time, "perf_counter", clock)
    return clock


def race(openvino: FakeSession, onnxruntime: FakeSession | Exception):
    heard = []

    def make():
        if isinstance(onnxruntime, Exception):
            raise onnxruntime
        return onnxruntime

    session = RacingSession(openvino, make, lambda winner, s, seconds: heard.append((winner, s, seconds)))
    return session, heard


def test_the_faster_engine_serves_the_first_call_and_every_later_one(clock):
    openvino, onnxruntime = FakeSession(OPENVINO, 0.5, clock), FakeSession(ONNXRUNTIME, 0.25, clock)
    session, heard = race(openvino, onnxruntime)
    assert session.get_providers() == [OPENVINO]  # before the race: what was compiled first
    assert session.run(None, {}) == [ONNXRUNTIME]
    assert heard == [(ONNXRUNTIME, onnxruntime, {OPENVINO: 0.5, ONNXRUNTIME: 0.25})]
    assert session.run(None, {}) == [ONNXRUNTIME]
    assert (openvino.calls, onnxruntime.calls) == (2, 3)  # warm-up and timed run each, then the winner only
    assert session.get_providers() == [ONNXRUNTIME]
    assert len(heard) == 1


def test_onnxruntime_must_win_by_the_margin_to_displace_openvino(clock):
    session, heard = race(FakeSession(OPENVINO, 1.0, clock), FakeSession(ONNXRUNTIME, 0.97, clock))
    assert session.run(None, {}) == [OPENVINO]
    assert heard[0][0] == OPENVINO
    assert faster({OPENVINO: 1.0, ONNXRUNTIME: 0.9}) == ONNXRUNTIME
    assert faster({ONNXRUNTIME: 2.0}) == ONNXRUNTIME  # OpenVINO failed
    assert faster({OPENVINO: 2.0}) == OPENVINO


def test_an_engine_that_fails_loses_and_the_choice_is_not_worth_remembering(clock):
    session, heard = race(FakeSession(OPENVINO, 0.1, clock, fails=True), FakeSession(ONNXRUNTIME, 0.3, clock))
    assert session.run(None, {}) == [ONNXRUNTIME]
    assert not provider_race.worth_remembering(heard[0][2])


def test_when_both_fail_the_error_reaches_the_caller_and_the_next_call_races_again(clock):
    openvino = FakeSession(OPENVINO, 0.1, clock, fails=True)
    onnxruntime = FakeSession(ONNXRUNTIME, 0.1, clock, fails=True)
    session, heard = race(openvino, onnxruntime)
    with pytest.raises(RuntimeError, match="OpenVINO cannot run this"):
        session.run(None, {})
    assert heard == []
    openvino.fails = False  # e.g. a smaller tile after an out-of-memory error
    assert session.run(None, {}) == [OPENVINO]


def test_onnxruntime_unable_to_load_the_model_leaves_openvino_unmeasured(clock):
    session, heard = race(FakeSession(OPENVINO, 0.1, clock), RuntimeError("no kernel"))
    assert session.run(None, {}) == [OPENVINO]
    assert heard[0][0] == OPENVINO and heard[0][2] == {}


def test_runs_too_short_to_time_keep_openvino_and_are_not_remembered(clock):
    """Two pools racing a tiny input must not pick different engines (their outputs differ in the last bits)."""
    assert provider_race.worth_remembering({OPENVINO: 0.5, ONNXRUNTIME: 0.4})
    assert not provider_race.worth_remembering({OPENVINO: 0.001, ONNXRUNTIME: 0.5})
    session, heard = race(FakeSession(OPENVINO, 0.004, clock), FakeSession(ONNXRUNTIME, 0.001, clock))
    assert session.run(None, {}) == [OPENVINO]
    assert not provider_race.worth_remembering(heard[0][2])


@pytest.mark.parametrize("known", [OPENVINO, ONNXRUNTIME])
def test_a_choice_remembered_meanwhile_is_taken_without_a_race(clock, known):
    openvino, onnxruntime = FakeSession(OPENVINO, 0.5, clock), FakeSession(ONNXRUNTIME, 0.25, clock)
    heard = []
    session = RacingSession(openvino, lambda: onnxruntime, lambda *args: heard.append(args), lambda: known)
    assert session.run(None, {}) == [known]
    assert openvino.calls + onnxruntime.calls == 1 and heard[0][0] == known and heard[0][2] == {}


def test_the_store_survives_a_corrupt_file_and_an_unwritable_folder(tmp_path):
    store = ChoiceStore(tmp_path / "choice.json")
    assert store.get("k") is None
    store.put("k", ONNXRUNTIME, {ONNXRUNTIME: 0.1, OPENVINO: 0.2})
    assert ChoiceStore(tmp_path / "choice.json").get("k") == ONNXRUNTIME
    (tmp_path / "choice.json").write_text("{not json")
    assert store.get("k") is None
    (tmp_path / "choice.json").write_text(json.dumps({"k": {"provider": "Vulkan"}}))
    assert store.get("k") is None  # an unknown engine is no choice
    blocker = tmp_path / "file"
    blocker.write_text("")
    ChoiceStore(blocker / "choice.json").put("k", OPENVINO, {})  # its folder cannot exist: silently not kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["choice.json", "file"]  # no temporary file left


def test_the_key_names_the_model_the_threads_and_the_precision():
    a = provider_race.choice_key("m.onnx:1:2", 1, "f32")
    assert a != provider_race.choice_key("m.onnx:1:3", 1, "f32")
    assert a != provider_race.choice_key("m.onnx:1:2", 2, "f32")
    assert a != provider_race.choice_key("m.onnx:1:2", 1, "bf16")
    assert provider_race.cpu_name() in a


def bicubic_feeds() -> dict[str, np.ndarray]:
    return {"lr": np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32),
            "scale": np.array([2.0], np.float64)}  # fmt: skip


@needs_openvino
def test_auto_races_on_the_first_call_and_a_new_pool_opens_only_the_remembered_winner(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(provider_race, "MIN_SECONDS", 0.0)  # the bicubic model is too quick to time otherwise
    pool = SessionPool(threads=1, available=lambda: ON_CPU)
    session = pool.session(BICUBIC)
    assert isinstance(session, RacingSession)
    out = session.run(["sr"], bicubic_feeds())[0]
    assert out.shape == (1, 3, 128, 128)
    winner = session.get_providers()[0]
    assert pool.paths_in_use() == [{OPENVINO: "OpenVINO f32", ONNXRUNTIME: "ONNX Runtime CPU"}[winner]]
    store = ChoiceStore(cache_dir() / provider_race.STORE_NAME)
    key = next(k for k in json.loads(store.path.read_text()) if str(BICUBIC.resolve()) in k)
    assert store.get(key) == winner

    store.put(key, ONNXRUNTIME, {})  # as if ONNX Runtime had won here
    heard: list[str] = []
    again = SessionPool(threads=1, available=lambda: ON_CPU, on_message=heard.append)
    session = again.session(BICUBIC)
    assert session.get_providers() == [ONNXRUNTIME] and not isinstance(session, RacingSession)
    assert again.paths_in_use() == ["ONNX Runtime CPU"] and heard == []  # a measured choice is not a fallback
    np.testing.assert_allclose(session.run(["sr"], bicubic_feeds())[0], out, atol=1e-5)


@needs_openvino
def test_a_named_provider_or_measure_off_is_never_raced():
    assert not isinstance(SessionPool("openvino", threads=1).session(BICUBIC), RacingSession)
    assert not isinstance(SessionPool(threads=1, available=lambda: ON_CPU, measure=False).session(BICUBIC),
                          RacingSession)  # fmt: skip
    assert SessionPool("cpu", threads=1).session(BICUBIC).get_providers() == [ONNXRUNTIME]


def test_the_race_runs_on_a_crop_and_the_winner_then_serves_the_whole_input(clock):
    seen = []

    class Recording(FakeSession):
        def run(self, output_names, feeds):
            seen.append((self.name, feeds["lr"].shape))
            return super().run(output_names, feeds)

    session, _ = race(Recording(OPENVINO, 0.5, clock), Recording(ONNXRUNTIME, 0.25, clock))
    lr = np.zeros((1, 3, 300, 200), np.float32)
    assert session.run(None, {"lr": lr, "t": np.zeros(1)}) == [ONNXRUNTIME]
    crop = (1, 3, 128, 128)
    assert seen == [(OPENVINO, crop), (OPENVINO, crop), (ONNXRUNTIME, crop), (ONNXRUNTIME, crop),
                    (ONNXRUNTIME, lr.shape)]  # fmt: skip


def test_only_image_inputs_of_one_size_are_cropped():
    lr, z, t = np.zeros((1, 3, 300, 200)), np.zeros((1, 45, 300, 200)), np.zeros(1)
    probe = provider_race.probe_feeds({"lr": lr, "z": z, "t": t})
    assert probe["lr"].shape == (1, 3, 128, 128) and probe["z"].shape == (1, 45, 128, 128) and probe["t"] is t
    mixed = {"lr": lr, "noise": np.zeros((1, 3, 1200, 800))}
    assert provider_race.probe_feeds(mixed) is mixed
    small = {"lr": np.zeros((1, 3, 64, 128))}
    assert provider_race.probe_feeds(small) is small


@needs_openvino
def test_list_backends_says_auto_measures_and_a_named_provider_does_not():
    from invsr_desktop.cli import runs_on_line

    assert "keeps the faster" in runs_on_line("auto", "fast")
    assert "keeps the faster" not in runs_on_line("cpu", "fast")
    assert "keeps the faster" not in runs_on_line("openvino", "fast")
