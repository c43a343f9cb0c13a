"""The INN shrink of a noisy photo: ``model_export.commands.inn_noise`` end to end through the app's engine, and the
bundled x4 shrinks keeping a noisy photo's colour (irn_x4_v3 turned sigma-4 noise into a magenta cast)."""

import numpy as np
import pytest
from PIL import Image

from invsr_desktop.engine.pipeline import Engine, EngineOptions
from model_export.commands import inn_noise


def _gradient(size: int = 96) -> np.ndarray:
    """A smooth colour image in [0, 1]: what a sky or a wall is, where the cast showed most."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.stack([0.3 + 0.5 * xx, 0.4 + 0.3 * yy, 0.6 - 0.3 * xx * yy], axis=-1)


def test_noise_is_seeded_and_8_bit():
    hr = _gradient() * 255.0
    a, b = inn_noise._noisy(hr, 4.0, seed=3), inn_noise._noisy(hr, 4.0, seed=3)
    assert np.array_equal(a, b) and np.array_equal(a, np.round(a)) and 0 <= a.min() and a.max() <= 255
    assert float((a - hr).std()) == pytest.approx(4.0, rel=0.1)
    assert inn_noise._noisy(hr, 0.0, seed=3) is hr


def test_the_command_scores_shift_and_round_trip(models_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("invsr_desktop.engine.registry._default", None)  # the tiny models' registry, this test only
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(np.round(_gradient() * 255).astype(np.uint8)).save(folder / "gradient.png")
    Image.fromarray(np.round(_gradient()[..., 1] * 255).astype(np.uint8)).save(folder / "grey.png")
    out = tmp_path / "report.json"
    assert inn_noise.main(["--scale", "2", "--model", "tiny_x2", str(folder), "--sigma", "0", "4",
                           "--json", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "| set | 0.0 |" in text and "| set | 4.0 |" in text
    import json

    report = json.loads(out.read_text())
    rows = {r["image"]: r for r in report["sets"][0]["images"]}
    assert rows["grey.png"]["4.0"]["shift"] is None  # a grey image has no colour to shift
    assert 0 <= rows["gradient.png"]["4.0"]["shift"] < 60
    mean = report["sets"][0]["mean"]["4.0"]
    assert 10 < mean["inn"] < 99 and 10 < mean["bicubic"] < 99



@pytest.mark.parametrize("model", ["auto", "irn_x4_jpeg"])
def test_the_bundled_x4_shrinks_keep_a_noisy_photos_colour(model, tmp_path):
    """Phone-photo noise (sigma 4 levels) must not tint the small image: v3 shifted green by 15 levels here. Both
    bundled x4 shrinks: the PNG one (``auto``) and the one a shrink to JPEG picks."""
    from invsr_desktop.engine.registry import default_registry

    engine = Engine(default_registry(reload=True), EngineOptions(threads=1))
    scores = inn_noise.score_image(engine, _gradient(128) * 255.0, 4, model, 4.0, 0, tmp_path)
    assert scores["shift"] < 2.0
