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
