"""Training data: image discovery, caching, corrupt / empty handling, patches, determinism, sampler, hold-out."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from model_export.data import (
    Degrader,
    ImageStore,
    ResumableSampler,
    SRPatchDataset,
    ValidationSet,
    build_train_loader,
    find_images,
    make_lr,
    split_holdout,
)
from model_export.degradations.matlab_resize import imresize


def _write(path, h, w, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    # smooth-ish content so the images are not pure noise
    base = rng.random((h // 4 + 2, w // 4 + 2, 3))
    img = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC))
    im = Image.fromarray(img)
    if mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for i in range(6):
        _write(root / f"a{i}.png", 40 + i, 48, i)
    _write(root / "sub" / "b.jpg", 44, 52, 10)
    _write(root / "sub" / "c.bmp", 50, 40, 11)
    _write(root / "grey.png", 40, 40, 12, mode="L")
    (root / "notes.txt").write_text("not an image")
    return root


def test_find_images_recursive_sorted(folder):
    files = find_images([folder])
    names = [f.relative_to(folder).as_posix() for f in files]
    assert names == sorted(names)
    assert "sub/b.jpg" in names and "sub/c.bmp" in names and "notes.txt" not in names
    assert len(files) == 9


def test_empty_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="empty"):
        find_images([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="missing"):
        find_images([tmp_path / "missing"])
    with pytest.raises(FileNotFoundError):
        find_images([])


def test_corrupt_image_skipped_with_warning(folder):
    bad = folder / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    files = find_images([folder])
    with pytest.warns(UserWarning, match="broken.png"):
        store = ImageStore(files)
    assert len(store) == len(files) - 1
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in store.images)  # grey -> RGB


def test_small_images_left_out(folder):
    files = find_images([folder])
    with pytest.warns(UserWarning, match="smaller than 45"):
        store = ImageStore(files, min_size=45)
    assert all(min(a.shape[:2]) >= 45 for a in store.images)


def test_holdout_split_deterministic(folder):
    files = find_images([folder])
    train, val = split_holdout(files, 3)
    assert len(val) == 3 and len(train) == len(files) - 3
    assert not set(train) & set(val)
    assert split_holdout(list(files), 3) == (train, val)
    assert split_holdout(files, 0) == (files, [])
    with pytest.raises(ValueError):
        split_holdout(files, len(files))


def _dataset(folder, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = ImageStore(find_images([folder]), min_size=32)
    opts = dict(patch_size=32, scale=4, seed=7)
    opts.update(kw)
    deg = Degrader("bicubic", opts["scale"], opts.pop("round_lr", True))
    return SRPatchDataset(store, degrader=deg, **opts)


def test_patch_shapes_and_lr(folder):
    ds = _dataset(folder)
    s = ds[5]
    assert s["hr"].shape == (3, 32, 32) and s["lr"].shape == (3, 8, 8)
    assert s["hr"].dtype == torch.float32 and 0 <= s["lr"].min() and s["lr"].max() <= 1
    # the LR is MATLAB imresize of the (augmented) HR patch, rounded to 8 bit
    hr = s["hr"].permute(1, 2, 0).double().numpy()
    ref = np.clip(np.round(imresize(hr, 0.25) * 255) / 255, 0, 1)
    assert np.allclose(s["lr"].permute(1, 2, 0).numpy(), ref, atol=1e-6)
    assert np.allclose(s["lr"].numpy() * 255, np.round(s["lr"].numpy() * 255), atol=1e-4)
    unrounded = _dataset(folder, round_lr=False)[5]["lr"].numpy() * 255
    assert not np.allclose(unrounded, np.round(unrounded), atol=1e-4)


def test_x2_patches(folder):
    s = _dataset(folder, scale=2)[0]
    assert s["hr"].shape == (3, 32, 32) and s["lr"].shape == (3, 16, 16)


def test_patch_determinism(folder):
    a, b = _dataset(folder), _dataset(folder)
    for i in (0, 3, 17, 40):
        assert torch.equal(a[i]["hr"], b[i]["hr"]) and torch.equal(a[i]["lr"], b[i]["lr"])
    assert not torch.equal(a[0]["hr"], a[1]["hr"])
    c = _dataset(folder, seed=8)
    assert not torch.equal(a[0]["hr"], c[0]["hr"])
    # out-of-order access gives the same sample (workers fetch in any order)
    x = a[40]["hr"]
    a[2]
    assert torch.equal(a[40]["hr"], x)


def test_grey_fraction(folder):
    plain, none, grey, half = (_dataset(folder), _dataset(folder, grey_fraction=0.0),
                               _dataset(folder, grey_fraction=1.0), _dataset(folder, grey_fraction=0.5))
    # off: the sample stream of a run without grey pairs is unchanged
    assert all(torch.equal(plain[i]["lr"], none[i]["lr"]) for i in range(5))
    for i in range(5):
        hr, lr = grey[i]["hr"], grey[i]["lr"]
        assert torch.allclose(hr[0], hr[1]) and torch.allclose(hr[1], hr[2])
        assert torch.equal(lr[0], lr[1]) and torch.equal(lr[1], lr[2])  # R = G = B survives the degradation
        colour = plain[i]["hr"].double()
        luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        assert torch.allclose(hr[0].double(), luma, atol=1e-6)  # the same patch, made grey
    n_grey = sum(bool(torch.equal(half[i]["hr"][0], half[i]["hr"][2])) for i in range(200))
    assert 70 < n_grey < 130
    with pytest.raises(ValueError, match="between 0 and 1"):
        _dataset(folder, grey_fraction=1.5)


def test_each_image_once_per_epoch(folder):
    ds = _dataset(folder)
    n = len(ds.store)
    assert sorted(ds.image_index(i) for i in range(n)) == list(range(n))
    assert sorted(ds.image_index(i) for i in range(n, 2 * n)) == list(range(n))


def test_sampler_positions():
    s = ResumableSampler(8, start_step=0)
    it = iter(s)
    first = [next(it) for _ in range(24)]
    assert first == list(range(24))
    it = iter(ResumableSampler(8, start_step=2))
    assert [next(it) for _ in range(8)] == list(range(16, 24))
    r0, r1 = iter(ResumableSampler(8, 1, rank=0, world=2)), iter(ResumableSampler(8, 1, rank=1, world=2))
    assert [next(r0) for _ in range(4)] == [8, 9, 10, 11]
    assert [next(r1) for _ in range(4)] == [12, 13, 14, 15]
    with pytest.raises(ValueError):
        ResumableSampler(7, world=2)


def test_loader_workers_and_resume_agree(folder):
    ds = _dataset(folder)
    plain = iter(build_train_loader(ds, 4, num_workers=0))
    batches = [next(plain) for _ in range(3)]
    workers = iter(build_train_loader(ds, 4, num_workers=2, seed=3))
    for b in batches:
        w = next(workers)
        assert torch.equal(w["hr"], b["hr"]) and torch.equal(w["lr"], b["lr"])
    del workers
    resumed = next(iter(build_train_loader(ds, 4, start_step=2, num_workers=0)))
    assert torch.equal(resumed["hr"], batches[2]["hr"])
    assert batches[0]["index"].tolist() == [0, 1, 2, 3]


def test_validation_set(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = ImageStore(find_images([folder]))
    val = ValidationSet(store, 4, Degrader("bicubic", 4))
    for hr, lr in zip(val.hr, val.lr):
        assert hr.shape[0] % 4 == 0 and hr.shape[1] % 4 == 0 and hr.dtype == np.uint8
        assert lr.shape == (1, 3, hr.shape[0] // 4, hr.shape[1] // 4)
        ref = make_lr(hr.astype(np.float64) / 255, 4)
        assert np.allclose(lr[0].permute(1, 2, 0).numpy(), ref)


def test_unknown_degradation():
    with pytest.raises(ValueError, match="unknown degradation"):
        Degrader("jpeg", 4)


def test_real_photo_degradation(folder):
    pytest.importorskip("model_export.degradations.real_photo")
    with pytest.raises(ValueError, match="data.real_photo.no_such_key"):
        Degrader("real_photo", 4, real_photo={"no_such_key": 1})
    ds = _dataset(folder)
    ds.degrader = Degrader("real_photo", 4, real_photo={"jpeg_range": [60, 90]})
    import pickle

    ds = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives
    s = ds[3]
    assert s["hr"].shape == (3, 32, 32) and s["lr"].shape == (3, 8, 8)
    assert torch.equal(s["lr"], ds[3]["lr"])  # same index, same degradation
