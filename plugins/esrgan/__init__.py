"""ESRGAN-family GAN backends: one backend per ONNX model file whose metadata says ``invsr.backend = esrgan``.

Model files come from the bundled ``models/`` folder and the user model folder (see :mod:`invsr_desktop.engine.model_files`:
``$INVSR_MODELS_DIR``, else ``$XDG_DATA_HOME/invsr-desktop/models``, else ``~/.local/share/invsr-desktop/models``).
``invsr-export CHECKPOINT -o NAME.onnx --install`` puts a converted ESRGAN / Real-ESRGAN / own checkpoint there.

Each file ``<id>.onnx`` becomes backend ``<id>``: its display name is ``invsr.name``, its scale ``invsr.scale`` (never
guessed from the file name), the size its input sides must divide by ``invsr.input_multiple`` (2 for a Real-ESRGAN x2
model, which pixel-unshuffles its input; the engine pads), and its memory estimate ``invsr.bytes_per_pixel``.
Describing reads the metadata props only; the ONNX Runtime session is created when the backend is first used.

A file that is unreadable or has unusable metadata is skipped with a :class:`invsr_desktop.engine.model_files.ModelFolderWarning`
and listed by :func:`invsr_desktop.engine.model_files.problems`; the other models still load.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from invsr_desktop.engine import model_metadata as keys
from invsr_desktop.engine.backend import BackendSpec, BuildRequest, Param
from invsr_desktop.engine.errors import ModelFileError
from invsr_desktop.engine.hookspecs import hookimpl
from invsr_desktop.engine import model_files
from plugins.onnx_runner import OnnxRunner

BACKEND = "esrgan"
DEFAULT_BYTES_PER_PIXEL = 24576  # 64-feature RRDBNet x4 in float32, with ORT's overhead
TTA = Param(
    "tta", bool, False, label="TTA (8x slower)",
    help="Test-time augmentation: average the model's output over the 8 flips and quarter turns of the input. "
    "Eight times slower; a cleaner, slightly more faithful result.",
)
COLOUR_FIX = Param(
    "colour_fix", bool, False, label="Keep colours",
    help="Correct the output's slow colour drift back to the input's (as chaiNNer's Average Color Fix). On by "
    "default for models trained on noisy photos, which tend to darken shadows a little.",
)


def trained_on_noisy_photos(meta: dict[str, str]) -> bool:
    """Whether the model's training record (``invsr.training``, written by invsr-export) names the real-photo
    degradation."""
    try:
        record = json.loads(meta.get(keys.TRAINING, "{}"))
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.get("degradation") == "real_photo"


def _builder(path: Path, scale: int, multiple: int):
    def build(request: BuildRequest) -> OnnxRunner:
        session = request.sessions.session(path)
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if "lr" not in inputs or "sr" not in outputs:
            raise ModelFileError(
                f"{path} has inputs {inputs} and outputs {outputs}; an invsr model maps input 'lr' to output 'sr' "
                "(re-export it with invsr-export)"
            )
        p = request.params
        return OnnxRunner(session=session, scale=float(scale), multiple=multiple, tta=bool(p.get("tta", False)),
                          colour_fix=bool(p.get("colour_fix", False)), model_name=path.name)

    return build


def spec_for(model: model_files.ModelFile) -> BackendSpec:
    """The backend description of one model file (metadata only: no session, no weights read)."""
    meta, path = model.metadata, model.path
    scale = model_files.metadata_scale(meta, path)
    multiple = model_files.metadata_int(meta, keys.INPUT_MULTIPLE, 1, path)
    bytes_per_pixel = model_files.metadata_int(meta, keys.BYTES_PER_PIXEL, DEFAULT_BYTES_PER_PIXEL, path)
    arch = meta.get(keys.ARCH, "unknown architecture")
    precision = meta.get(keys.PRECISION, "fp32")
    trained_on = meta.get(keys.TRAINED_ON, "unknown data")
    description = f"{arch} x{scale} ({precision}), trained on {trained_on}. File: {path}"
    info = {"file": str(path), "origin": model.origin}
    info.update({k: v for k, v in meta.items() if k.startswith("invsr.")})
    return BackendSpec(
        id=model.id,
        name=meta.get(keys.NAME) or model.id,
        kind="gan",
        scales=(scale,),
        build=_builder(path, scale, multiple),
        params=(TTA, replace(COLOUR_FIX, default=trained_on_noisy_photos(meta))),
        description=description,
        bytes_per_pixel=bytes_per_pixel,
        info=info,
    )


@hookimpl
def invsr_backends() -> list[BackendSpec]:
    specs = []
    for model in model_files.scan(BACKEND):
        try:
            specs.append(spec_for(model))
        except ModelFileError as exc:
            model_files.report_problem(model.path, str(exc))
        except Exception as exc:  # noqa: BLE001 - one odd file's metadata never hides the other models
            model_files.report_problem(model.path, f"unreadable metadata ({type(exc).__name__}: {exc})")
    return specs
