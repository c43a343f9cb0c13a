"""The differentiable JPEG the INN trains through: the codec's tables, agreement with Pillow's real JPEG, and
gradients that reach the image."""

import numpy as np
import pytest
import torch

from model_export.degradations.diff_jpeg import LUMA_TABLE, jpeg_simulate, pillow_jpeg, quant_table


def _photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients, a few hard edges and mild texture: the content JPEG is built for."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.4 * np.sin(6 * xx + 1), 0.5 + 0.4 * np.cos(5 * yy), 0.3 + 0.5 * xx * yy], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 2] = [0.9, 0.2, 0.1]
    img += rng.normal(0, 0.03, img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_quant_tables_follow_libjpeg_scaling():
    assert quant_table(50).flatten().tolist() == list(LUMA_TABLE)  # quality 50 is Annex K itself
    assert quant_table(100).max() == 1 and quant_table(1).min() == 255  # clamped to 1..255
    assert quant_table(75)[0, 0] == 8 and quant_table(75, chroma=True)[0, 0] == 9  # floor((16*50+50)/100)
    with pytest.raises(ValueError, match="between 1 and 100"):
        quant_table(0)


@pytest.mark.parametrize("quality", [50, 75, 90, 95])
@pytest.mark.parametrize("size", [(48, 64), (37, 45)])  # a multiple of 16, and one the encoder pads
def test_simulation_agrees_with_pillow(quality, size):
    img = _photo_like(*size)
    real = pillow_jpeg(img, quality)
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    sim = jpeg_simulate(x, quality, quality < 90)[0].permute(1, 2, 0).numpy() * 255.0
    assert sim.shape == img.shape and np.array_equal(sim, np.round(sim))  # an 8-bit decode
    loss_real, loss_sim = _psnr(real, img), _psnr(sim, img)
    assert _psnr(sim, real) > 40.0  # float DCT against libjpeg's integer one: a few coefficients round apart
    assert abs(loss_real - loss_sim) < 0.5  # and it loses what the real codec loses
    assert loss_sim < 60.0  # it does compress


def test_per_sample_quality_and_gradients():
    img = torch.from_numpy(np.stack([_photo_like(32, 32, s) for s in range(2)])).permute(0, 3, 1, 2) / 255.0
    x = img.float().clone().requires_grad_(True)
    out = jpeg_simulate(x, torch.tensor([30, 95]), torch.tensor([True, False]))
    low, high = (_psnr(out[i].detach().numpy() * 255, img[i].numpy() * 255) for i in range(2))
    assert low + 5 < high  # each sample at its own quality
    ((out - img) ** 2).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0  # straight-through: the encoder's input learns
