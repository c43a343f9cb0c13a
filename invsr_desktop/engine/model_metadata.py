"""The model-metadata schema: every ``invsr.*`` key an ONNX model of this app carries and what it holds.

The exporters (``model_export``) write these keys and the plugins and the app read them; both spell them from here,
so a key is renamed or added in one place. Values are strings (ONNX metadata props are); the comment says how each
one is read. Readers that check a value and say what is wrong with the file are in
:mod:`invsr_desktop.engine.model_files` (``metadata_scale``, ``metadata_int``) and
:mod:`invsr_desktop.engine.quality` (``invsr.quality``).
"""

from __future__ import annotations

# -- every model --------------------------------------------------------------------------------------------------
BACKEND = "invsr.backend"  # the plugin that serves the file: esrgan, inn, diffusion (a third party's own name)
NAME = "invsr.name"  # the display name in the app
SCALE = "invsr.scale"  # int: the native scale (an INN's shrink factor too)
ARCH = "invsr.arch"  # the architecture's registry name: rrdbnet, irn, resshift_unet
ARCH_OPTIONS = "invsr.arch_options"  # JSON: the architecture's constructor arguments
INPUT_MULTIPLE = "invsr.input_multiple"  # int: tile sides must be a multiple of it (the engine pads)
BYTES_PER_PIXEL = "invsr.bytes_per_pixel"  # int: memory one input pixel costs in a run (tile sizing)
TRAINED_ON = "invsr.trained_on"  # what it was trained on, in words
TRAINING = "invsr.training"  # JSON: steps, wall time, config name (what the model card quotes)
VERSION = "invsr.version"  # the app version that exported it
PRECISION = "invsr.precision"  # fp32, fp16 or int8: the weights' type in the file
PARAMETERS = "invsr.parameters"  # int: parameter count
SOURCE = "invsr.source"  # the checkpoint it was exported from (file name and sha256)
SOURCE_SHA256 = "invsr.source_sha256"  # that checkpoint file's sha256
EXPORTER = "invsr.exporter"  # the exporter, torch version and opset
CHECK = "invsr.check"  # JSON: the export checks (ONNX Runtime against PyTorch, max |diff|, PSNR)
INPUTS = "invsr.inputs"  # what each graph input means (models with more than ``lr``)
SUMMARY = "invsr.summary"  # one sentence: what the model is for (the backend picker shows it)
QUALITY = "invsr.quality"  # JSON: benchmark figures against bicubic and speed (see engine.quality)

# -- an int8 copy (``<id>.int8.onnx``, invsr-quantize): its model's keys, and ----------------------------------------
INT8_OF = "invsr.int8_of"  # the fp32 file's sha256: the copy stands in for that file only
INT8_CHECK = "invsr.int8_check"  # JSON: mean_psnr / worst_psnr against fp32 on held-out patches, what stayed float

# -- invertible networks (plugins.inn) ----------------------------------------------------------------------------
DIRECTION = "invsr.direction"  # up (restore / upscale) or down (shrink): the two files of one model
Z_CHANNELS = "invsr.z_channels"  # int: channels of the latent z
NOISE_MAX = "invsr.noise_max"  # float: the largest z scale training saw (temperatures above it leave training)
STORED_AS = "invsr.stored_as"  # one of STORED_AS_VALUES
STORED_AS_VALUES = ("png", "jpeg")  # the small-image format a shrink was trained for (jpeg: through a JPEG simulation)
JPEG_QUALITIES = "invsr.jpeg_qualities"  # "LO-HI": the JPEG qualities a jpeg shrink is for (auto picks by the user's)
SUPERSEDES = "invsr.supersedes"  # INN: the model this one replaces for "auto" (kept so its shrunk files restore)

# -- diffusion (plugins.diffusion) --------------------------------------------------------------------------------
DIFFUSION_PREFIX = "invsr.diffusion."  # + kappa, eta_min, eta_max, power, sigma_data (floats): the schedule
DIFFUSION_DEFAULT_STEPS = "invsr.diffusion.default_steps"  # int: the sampler steps the app offers first
DIFFUSION_PRIOR = "invsr.diffusion.prior"  # file name of the lr -> sr prior beside the model
DIFFUSION_PRIOR_SHA256 = "invsr.diffusion.prior_sha256"  # the prior file's sha256


def schedule_key(name: str) -> str:
    """``invsr.diffusion.<name>`` for a schedule field (kappa, eta_min, eta_max, power, sigma_data)."""
    return DIFFUSION_PREFIX + name
