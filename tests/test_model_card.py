"""The model-card command's notes: text, or a file's text; a file's path given as the text is refused."""

from __future__ import annotations

import pytest

from model_export.commands.model_card import main


def test_a_path_given_as_the_notes_text_is_refused(tmp_path, capsys):
    notes = tmp_path / "notes.md"
    notes.write_text("What changed.\n")
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "m.pt"), str(tmp_path / "m.onnx"), "--command", "invsr-train ...", "--notes", str(notes),
              "-o", str(tmp_path / "card.md")])  # fmt: skip
    assert exit_.value.code == 2
    assert "use --notes-file" in capsys.readouterr().err
    assert not (tmp_path / "card.md").exists()


def test_the_perception_table_comes_from_the_reports_that_scored_it():
    """ST-LPIPS / NIQE beside bicubic's from the same run, per set; a report without them adds no table."""
    from model_export.commands.model_card import perception_section

    mean = {"psnr": 30.5, "ssim": 0.863, "bicubic_psnr": 28.43, "bicubic_ssim": 0.8113}
    scored = {"scale": 4, "protocol": "rgb", "sets": [
        {"name": "Set5", "mean": {**mean, "stlpips": 0.0634, "bicubic_stlpips": 0.3274}},
        {"name": "Set14", "mean": {**mean, "niqe": 6.5, "bicubic_niqe": 12.01}},
    ]}  # fmt: skip
    plain = {"scale": 4, "protocol": "y", "sets": [{"name": "Set5", "mean": mean}]}
    meta = {"invsr.quality": '{"protocol": "rgb", "scale": 4, "sets": {}, "seconds_per_mp": 2.3}'}
    lines = perception_section([plain, scored], meta)
    rows = [line for line in lines if line.startswith("| Set")]
    assert rows == [
        "| Set5 x4 | rgb | 30.50 / 0.8630 | 0.063 | - | 2.3 | 28.43 / 0.8113, 0.327, - |",
        "| Set14 x4 | rgb | 30.50 / 0.8630 | - | 6.50 | 2.3 | 28.43 / 0.8113, -, 12.01 |",
    ]
    assert perception_section([plain], {}) == []


def test_a_report_run_without_lpips_does_not_hide_another_reports_statement():
    from model_export.commands.model_card import metric_notes

    y = {"lpips": "not requested", "stlpips": "not requested"}
    rgb = {"lpips": "LPIPS unavailable: no weights", "stlpips": "ST-LPIPS (alex, vST0.0) on RGB"}
    assert metric_notes([y, rgb]) == ["", "LPIPS unavailable: no weights", "", "ST-LPIPS (alex, vST0.0) on RGB"]
    assert metric_notes([y]) == ["", "LPIPS: not computed", "", "ST-LPIPS: not computed"]
    assert metric_notes([rgb, rgb]) == metric_notes([rgb]) and metric_notes([]) == []
