"""A model's measured quality and speed, as its ONNX metadata carries them, and the one line a user reads.

``invsr.quality`` holds JSON written by ``python -m model_export.commands.quality_metadata`` from an ``invsr-eval`` report
(and a speed figure): what the model scored on the benchmarks against bicubic in the same run, e.g.::

    {"protocol": "rgb", "scale": 4, "sets": {"Set5": {"psnr": 31.61, "stlpips": 0.133,
     "bicubic_psnr": 28.43, "bicubic_stlpips": 0.327}, ...}, "seconds_per_mp": 0.61}

``invsr.summary`` is one sentence saying what the model is for ("Faithful: no invented detail"). The app shows both
in the backend picker so a user can choose "faithful" or "detailed" knowingly; nothing here is guessed from a name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from invsr_desktop.engine import model_metadata as keys

QUALITY_KEY = keys.QUALITY
SUMMARY_KEY = keys.SUMMARY
#: The set whose figures the one-line summary quotes (the smallest standard benchmark, five photos).
HEADLINE_SET = "Set5"


@dataclass(frozen=True)
class Quality:
    protocol: str
    scale: int
    sets: dict[str, dict[str, float]]
    seconds_per_mp: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> Quality | None:
        """The record in ``text`` (None when absent or unreadable: a model without figures is still usable)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            sets = {str(k): {str(m): float(v) for m, v in d.items()} for k, d in data["sets"].items()}
            speed = data.get("seconds_per_mp")
            return cls(str(data["protocol"]), int(data["scale"]), sets, None if speed is None else float(speed))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def to_json(self) -> str:
        out: dict[str, Any] = {"protocol": self.protocol, "scale": self.scale, "sets": self.sets}
        if self.seconds_per_mp is not None:
            out["seconds_per_mp"] = self.seconds_per_mp
        return json.dumps(out, sort_keys=True)

    def line(self) -> str:
        """``Set5 x4: PSNR 31.61 dB, ST-LPIPS 0.133 (bicubic 28.43 dB, 0.327; lower is closer); 0.6 s per MP``."""
        name = HEADLINE_SET if HEADLINE_SET in self.sets else next(iter(self.sets), "")
        figures = self.sets.get(name, {})
        parts = []
        if "psnr" in figures:
            parts.append(f"PSNR {figures['psnr']:.2f} dB")
        if "stlpips" in figures:
            parts.append(f"ST-LPIPS {figures['stlpips']:.3f}")
        base = []
        if "bicubic_psnr" in figures:
            base.append(f"{figures['bicubic_psnr']:.2f} dB")
        if "bicubic_stlpips" in figures:
            base.append(f"{figures['bicubic_stlpips']:.3f}")
        text = f"{name} x{self.scale}: " + ", ".join(parts) if parts else ""
        if text and base:
            text += f" (bicubic {', '.join(base)}; ST-LPIPS: lower is closer)"
        if self.seconds_per_mp is not None:
            text += ("; " if text else "") + f"{self.seconds_per_mp:.2g} s per output megapixel"
        return text


def quality_info(meta: Mapping[str, str]) -> dict[str, str]:
    """The quality keys of a model's metadata, for a backend's ``info`` (so the picker can show them)."""
    return {k: meta[k] for k in (QUALITY_KEY, SUMMARY_KEY) if k in meta}


def user_line(meta: Mapping[str, str]) -> str:
    """What the backend picker shows for a model: its summary and its measured figures (either may be absent)."""
    quality = Quality.parse(meta.get(QUALITY_KEY))
    lines = [meta.get(SUMMARY_KEY, "").strip(), quality.line() if quality else ""]
    return "\n".join(line for line in lines if line)
