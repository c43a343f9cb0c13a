"""Fault suite, the reader: mutated image files of every type the app reads. Whatever the bytes, ``load_image``
returns an image or raises the project's ``ImageReadError``; nothing else escapes and nothing hangs.

Each case mutates one valid file (bit flips, a truncation, a zeroed run, bytes set to 0xff) drawn by hypothesis;
the counts of cases and of outcomes are printed (``-s``) so a run says what it tried.
"""

from __future__ import annotations

import io
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from invsr_desktop.engine.errors import ImageReadError
from invsr_desktop.engine.imageio import load_image

FORMATS = ("PNG", "PNG16", "JPEG", "TIFF", "WEBP", "GIF", "BMP")
OUTCOMES: Counter[str] = Counter()


def _valid(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    buf = io.BytesIO()
    if fmt == "PNG16":
        PILImage.fromarray(rng.integers(0, 65536, (24, 20)).astype(np.uint16)).save(buf, "PNG")
    elif fmt == "GIF":
        frames = [PILImage.fromarray(rgb), PILImage.fromarray(rgb[::-1].copy())]
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    else:
        exif = PILImage.Exif()
        exif[0x010F] = "Camera"
        PILImage.fromarray(rgb).save(buf, fmt, **({"exif": exif} if fmt in ("JPEG", "PNG", "WEBP", "TIFF") else {}))
    return buf.getvalue()


VALID = {fmt: _valid(fmt) for fmt in FORMATS}


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(FORMATS))
    data = bytearray(VALID[fmt])
    kind = draw(st.sampled_from(("flip", "truncate", "zero", "ff")))
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "flip":  # a few single-bit errors anywhere
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    else:  # a run of bytes zeroed or set to 0xff (a dropped sector, a bad header)
        start = draw(st.integers(0, len(data) - 1))
        end = min(len(data), start + draw(st.integers(1, 64)))
        data[start:end] = bytes([0 if kind == "zero" else 0xFF]) * (end - start)
    return f"{fmt}/{kind}", bytes(data)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_images_give_an_image_or_the_projects_error(case, tmp_path):
    label, data = case
    path = tmp_path / "case.img"
    path.write_bytes(data)
    start = time.monotonic()
    try:
        image = load_image(path, max_pixels=10_000_000)
        assert np.isfinite(image.pixels).all()
        OUTCOMES[f"{label.split('/')[0]}: read"] += 1
    except ImageReadError:
        OUTCOMES[f"{label.split('/')[0]}: ImageReadError"] += 1
    assert time.monotonic() - start < 10, f"{label} took too long"


def test_the_reader_fault_suite_says_what_it_tried():
    """Runs after the property test in file order: prints the counts (pytest -s shows them)."""
    if not OUTCOMES:
        pytest.skip("the property test did not run (deselected)")
    total = sum(OUTCOMES.values())
    print(f"\nreader fault suite: {total} mutated files: " + ", ".join(f"{k} {v}" for k, v in sorted(OUTCOMES.items())))
    assert total >= 300
