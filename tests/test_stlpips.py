"""ST-LPIPS, rebuilt from the stlpips-pytorch wheel's weights: the same metric as the package's own class."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

pytest.importorskip("stlpips_pytorch", reason="the [train] extra's stlpips-pytorch wheel is not installed")

from model_export import stlpips  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "samples" / "astronaut.png"

# Recorded once from the package's own class, stlpips_pytorch.stlpips.LPIPS(net=trunk, variant="shift_tolerant")
# (its torchvision / torchsummary / IPython imports stubbed), on the crop and blur of _pair().
REFERENCE = {"alex": 0.16515347361564636, "vgg": 0.22767013311386108}


def _pair() -> tuple[np.ndarray, np.ndarray]:
    crop = Image.open(SAMPLE).convert("RGB").crop((100, 40, 196, 120))
    return np.asarray(crop), np.asarray(crop.filter(ImageFilter.GaussianBlur(1.0)))


@pytest.fixture(scope="module", params=stlpips.TRUNKS)
def model(request):
    return stlpips.STLPIPS(request.param)


def test_values_match_the_recorded_reference(model):
    a, b = _pair()
    with torch.no_grad():
        d = model(stlpips.image_tensor(a), stlpips.image_tensor(b)).item()
    assert d == pytest.approx(REFERENCE[model.trunk], abs=1e-5)


def test_identical_is_zero_and_blur_is_worse_than_rounding_noise(model):
    a, b = _pair()
    rng = np.random.default_rng(0)
    jitter = np.clip(a.astype(int) + rng.integers(-1, 2, a.shape), 0, 255).astype(np.uint8)
    t = stlpips.image_tensor
    with torch.no_grad():
        same, noise, blur = (model(t(a), t(x)).item() for x in (a, jitter, b))
    assert same == 0.0
    assert 0.0 < noise < blur / 50


def test_frozen_and_stays_in_eval_mode(model):
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    a, b = (torch.rand(1, 3, 40, 40) for _ in range(2))
    a.requires_grad_(True)
    model(a, b).sum().backward()  # a loss: the gradient reaches the image, not the metric
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_layer_weights_scale_the_taps():
    a, b = (torch.rand(1, 3, 48, 48) for _ in range(2))
    base = stlpips.STLPIPS("alex")
    only_last = stlpips.STLPIPS("alex", layer_weights=[0, 0, 0, 0, 2])
    with torch.no_grad():
        assert only_last(a, b).item() == pytest.approx(2 * base.layers(a, b)[4].item(), rel=1e-6)
    with pytest.raises(ValueError, match="5 values"):
        stlpips.STLPIPS("alex", layer_weights=[1, 1])


def test_grey_images_are_replicated():
    a, b = _pair()
    score = stlpips.ImageScorer("alex")
    grey_a, grey_b = a[..., 1], b[..., 1]
    assert score(grey_a, grey_b) == pytest.approx(score(np.dstack([grey_a] * 3), np.dstack([grey_b] * 3)))
    assert score.label == "ST-LPIPS (alex, vST0.0)"


def test_missing_package_is_a_clear_error(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(stlpips.resources, "files", missing)
    with pytest.raises(stlpips.STLPIPSUnavailable, match="stlpips-pytorch"):
        stlpips.STLPIPS("alex")


@pytest.fixture
def package_lpips(monkeypatch):
    """The package's own LPIPS class, importable once its three unneeded imports are stubbed."""
    for name in ("torchvision", "torchvision.models", "torchsummary", "IPython"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["torchvision"].models = sys.modules["torchvision.models"]
    sys.modules["torchsummary"].summary = lambda *a, **k: None
    sys.modules["IPython"].embed = lambda *a, **k: None
    for name in [m for m in sys.modules if m.startswith("stlpips_pytorch.")]:
        monkeypatch.delitem(sys.modules, name)
    from stlpips_pytorch import stlpips as package

    return package.LPIPS


@pytest.mark.parametrize("trunk", stlpips.TRUNKS)
def test_same_as_the_packages_own_class(package_lpips, trunk):
    ref = package_lpips(net=trunk, variant="shift_tolerant", verbose=False)
    ours = stlpips.STLPIPS(trunk)
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 53, 61, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    with torch.no_grad():
        expected = ref(a, b, normalize=True).flatten()
        assert torch.allclose(ours(a, b), expected, atol=1e-6, rtol=1e-5)
