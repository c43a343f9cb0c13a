"""Training data (BasicSR's ``data``): HR image folders -> cached uint8 arrays -> random patches whose LR inputs
are made on the fly by a degradation.

- :mod:`model_export.data.images`: find, load (once, cached), and split images into training / validation.
- :mod:`model_export.data.dataset`: the patch dataset, the resumable sampler and the validation pairs.
"""

from model_export.data.dataset import (
    Degrader,
    ResumableSampler,
    SRPatchDataset,
    ValidationSet,
    build_train_loader,
    make_lr,
    worker_init_fn,
)
from model_export.data.images import IMAGE_EXTENSIONS, ImageStore, find_images, load_image, split_holdout

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageStore",
    "find_images",
    "load_image",
    "split_holdout",
    "Degrader",
    "SRPatchDataset",
    "ResumableSampler",
    "ValidationSet",
    "build_train_loader",
    "make_lr",
    "worker_init_fn",
]
