"""Bundled data files (models, samples, icons, launcher), installed as ``invsr_desktop.resources``."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
SAMPLES = ROOT / "samples"
ICONS = ROOT / "icons"
