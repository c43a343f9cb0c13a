"""Random HR patches with LR made on the fly, a sampler that resumes mid-run, and the validation pairs.

Reproducibility does not depend on worker processes, their number, or their scheduling: sample ``index`` is a
pure function of ``(seed, index)``. The image it is cut from is ``permutation_e[index % n]`` with a fresh
permutation of the ``n`` images per epoch ``e = index // n`` (every image once per epoch, as BasicSR does); the
crop position, the flip / 90-degree rotation and the degradation's randomness come from a generator seeded with
``(seed, index)``. The sampler hands out indices by training step: the sample ``j`` of the batch of step ``s`` is
``index = s * batch_size + j`` where ``batch_size`` is the global batch, split evenly across ranks under DDP. So
the sampler's position is the step, a resumed run draws exactly the samples the uninterrupted run would have,
and a 2-process DDP run sees the same samples as one process with the same global batch.
"""

from __future__ import annotations

import random
import signal
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from model_export.data.images import ImageStore
from model_export.degradations.matlab_resize import imresize

_SEED_PERM = 0
_SEED_SAMPLE = 1


def make_lr(hr: np.ndarray, scale: int, round_lr: bool = True) -> np.ndarray:
    """MATLAB bicubic downscale of a float HR image in [0, 1] (H, W, 3), H and W multiples of ``scale``.

    With ``round_lr`` the result is quantised to 8 bit (what a real LR image, and the evaluation protocol's LR,
    is); otherwise it is only clipped to [0, 1]. Returns float32.
    """
    if scale == 1:
        lr = np.asarray(hr, dtype=np.float64)
    else:
        lr = imresize(hr, 1.0 / scale)
    if round_lr:
        lr = np.round(lr * 255.0) / 255.0
    return np.clip(lr, 0.0, 1.0).astype(np.float32)


class Degrader:
    """HR float patch -> LR float patch, chosen by name: ``bicubic``, ``real_photo`` or ``camera``.

    ``real_photo`` is :mod:`model_export.degradations.real_photo` (``RealPhotoDegradation(config).apply(hr, scale,
    rng)``), imported only when chosen, with ``config = RealPhotoConfig(**table)`` from the ``[data.real_photo]``
    table (lists become tuples; an unknown key is a ``ValueError`` naming ``data.real_photo.<key>``).
    ``camera`` is ``invsr-eval --degrade camera``'s fixed LR (:mod:`model_export.degradations.camera`), meant for
    ``data.val_degradation``: validation on the evaluation's camera-like protocol, training on ``real_photo``'s
    wide ranges. Picklable, so DataLoader workers get their own copy.
    """

    NAMES = ("bicubic", "real_photo", "camera")

    def __init__(self, name: str, scale: int, round_lr: bool = True, real_photo: dict | None = None):
        if name not in self.NAMES:
            raise ValueError(f"unknown degradation {name!r}; choose one of {', '.join(self.NAMES)}")
        self.name = name
        self.scale = int(scale)
        self.round_lr = bool(round_lr)
        self.real_photo_config = dict(real_photo or {})
        self._impl = None
        if name == "real_photo":
            self._impl = self._build_real_photo()

    def _build_real_photo(self):
        from model_export.degradations.real_photo import RealPhotoConfig, RealPhotoDegradation

        table = {k: tuple(v) if isinstance(v, list) else v for k, v in self.real_photo_config.items()}
        known = set(getattr(RealPhotoConfig, "__dataclass_fields__", {}))
        for k in table:
            if known and k not in known:
                raise ValueError(f"unknown config key 'data.real_photo.{k}'; known: {', '.join(sorted(known))}")
        return RealPhotoDegradation(RealPhotoConfig(**table))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_impl"] = None
        return state

    def __call__(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.name == "bicubic":
            return make_lr(hr, self.scale, self.round_lr)
        if self.name == "camera":  # 8-bit already (a JPEG)
            from model_export.degradations.camera import camera_lr

            return (camera_lr(np.asarray(hr, np.float64) * 255.0, self.scale, rng) / 255.0).astype(np.float32)
        if self._impl is None:
            self._impl = self._build_real_photo()
        lr = np.asarray(self._impl.apply(hr, self.scale, rng), dtype=np.float32)
        if self.round_lr:
            lr = np.round(lr * 255.0) / 255.0
        return np.clip(lr, 0.0, 1.0).astype(np.float32)


def augment(img: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 flips / 90-degree rotations (``code`` in 0..7: bit 0 h-flip, bit 1 v-flip, bit 2 transpose)."""
    if code & 1:
        img = img[:, ::-1]
    if code & 2:
        img = img[::-1, :]
    if code & 4:
        img = img.transpose(1, 0, 2)
    return np.ascontiguousarray(img)


def to_grey(img: np.ndarray) -> np.ndarray:
    """A float RGB image as grey (BT.601 luma, full range) in all three channels: a black-and-white photo."""
    luma = img @ np.array([0.299, 0.587, 0.114])
    return np.repeat(luma[..., None], 3, axis=2)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float -> (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1)))


class SRPatchDataset(Dataset):
    """Sample ``index`` -> ``{"lr": (3, p/s, p/s), "hr": (3, p, p)}`` float32 tensors in [0, 1] (see module doc).

    ``grey_fraction`` of the pairs are made grey (R = G = B) before the degradation. Why: a net trained on colour
    pairs alone has never seen R = G = B, and black-and-white photos (and the ``y`` evaluation protocol, which
    upscales the Y channel as a grey image) are that. Measured on ESRGAN (faithful) x4, Set5: 31.31 dB from grey
    input, 31.51 from colour input of the same luma; 5.5 k fine-tuning steps at 0.25 raised the grey figure by
    0.02 dB and left the colour one as it was: most of the gap is the colour a grey image does not carry.
    """

    def __init__(
        self,
        store: ImageStore,
        patch_size: int,
        scale: int,
        degrader: Degrader,
        seed: int = 0,
        augment: bool = True,
        grey_fraction: float = 0.0,
    ):
        if patch_size % scale:
            raise ValueError(f"HR patch size {patch_size} is not a multiple of the scale {scale}")
        self.store = store
        self.patch_size = int(patch_size)
        self.scale = int(scale)
        self.degrader = degrader
        self.seed = int(seed)
        self.augment = augment
        if not 0.0 <= grey_fraction <= 1.0:
            raise ValueError(f"grey fraction {grey_fraction} is not between 0 and 1")
        self.grey_fraction = float(grey_fraction)
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def __len__(self) -> int:  # one epoch; the sampler goes on past it
        return len(self.store)

    def image_index(self, index: int) -> int:
        n = len(self.store)
        epoch = index // n
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, _SEED_PERM, epoch]).permutation(n)
            self._perm_epoch = epoch
        return int(self._perm[index % n])

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        img = self.store[self.image_index(index)]
        rng = np.random.default_rng([self.seed, _SEED_SAMPLE, index])
        p = self.patch_size
        h, w = img.shape[:2]
        top = int(rng.integers(0, h - p + 1))
        left = int(rng.integers(0, w - p + 1))
        patch = img[top : top + p, left : left + p]
        if self.augment:
            patch = augment(patch, int(rng.integers(0, 8)))
        hr = patch.astype(np.float64) / 255.0
        # drawn only when asked for, so that runs without grey pairs keep their sample streams
        if self.grey_fraction and rng.random() < self.grey_fraction:
            hr = to_grey(hr)
        lr = self.degrader(hr, rng)
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "index": index}


class ResumableSampler(Sampler[int]):
    """Endless sample indices for one rank, starting at ``start_step``: step ``s`` of rank ``r`` gets indices
    ``s * B + r * b ... s * B + (r + 1) * b - 1`` with ``b = B / world`` (use it with ``batch_size=b``)."""

    def __init__(self, global_batch: int, start_step: int = 0, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ValueError(f"batch size {global_batch} does not split evenly across {world} processes")
        self.global_batch = global_batch
        self.per_rank = global_batch // world
        self.start_step = start_step
        self.rank = rank
        self.world = world

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            base = step * self.global_batch + self.rank * self.per_rank
            yield from range(base, base + self.per_rank)
            step += 1


def worker_init_fn(worker_id: int) -> None:
    """Seed numpy's and Python's global generators in each worker from torch's per-worker seed (the samples
    themselves do not use them; this keeps any library that does reproducible too), and leave SIGINT / SIGTERM
    to the main process: it finishes the step, saves and shuts the workers down (a worker exits by itself when
    the main process dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(
    dataset: SRPatchDataset,
    global_batch: int,
    start_step: int = 0,
    rank: int = 0,
    world: int = 1,
    num_workers: int = 0,
    seed: int = 0,
    prefetch_factor: int = 2,
) -> DataLoader:
    """An endless loader whose ``k``-th batch is the batch of step ``start_step + k`` for this rank."""
    sampler = ResumableSampler(global_batch, start_step, rank, world)
    gen = torch.Generator()  # worker seeds come from here, not from the global RNG the training uses
    gen.manual_seed(hash((seed, start_step, rank)) % 2**62)
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(prefetch_factor=prefetch_factor, persistent_workers=False, worker_init_fn=worker_init_fn)
    return DataLoader(
        dataset,
        batch_size=sampler.per_rank,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        generator=gen,
        pin_memory=False,
        **kwargs,
    )


class ValidationSet:
    """Held-out full images: HR mod-cropped to the scale (uint8) and its LR (float32 (1, 3, h, w) tensor).

    The LR comes from ``degrader`` with a generator seeded by the image's position, so it is the same in every
    run; with the default bicubic degrader it is the evaluation protocol's LR (MATLAB bicubic, rounded to 8 bit).
    """

    def __init__(self, store: ImageStore, scale: int, degrader: Degrader, seed: int = 0):
        self.names: list[str] = []
        self.hr: list[np.ndarray] = []
        self.lr: list[torch.Tensor] = []
        for i, (path, img) in enumerate(zip(store.paths, store.images)):
            h, w = (img.shape[0] // scale) * scale, (img.shape[1] // scale) * scale
            hr = img[:h, :w]
            lr = degrader(hr.astype(np.float64) / 255.0, np.random.default_rng([seed, 2, i]))
            self.names.append(path.name)
            self.hr.append(np.ascontiguousarray(hr))
            self.lr.append(to_tensor(lr).unsqueeze(0))

    def __len__(self) -> int:
        return len(self.hr)
