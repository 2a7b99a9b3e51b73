"""MSE, PSNR and SSIM per frame against hand computations, a slow plain-numpy SSIM reference, the
former float64 11x11-convolution SSIM and (when installed) scikit-image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidlat.errors import DataError
from vidlat.pipeline import metrics
from vidlat.pipeline.metrics import mse, per_step_metrics, psnr, ssim

C1, C2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2  # K1, K2 at data_range 1


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 on one (H, W, C) frame: explicit 11x11 window, a loop over valid windows."""
    r = np.arange(-5, 6)
    g = np.exp(-(r**2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    h, w, c = x.shape
    channel_means = []
    for ch in range(c):
        values = []
        for i in range(h - 10):
            for j in range(w - 10):
                px, py = x[i : i + 11, j : j + 11, ch], y[i : i + 11, j : j + 11, ch]
                mx, my = (win * px).sum(), (win * py).sum()
                vx, vy = (win * (px - mx) ** 2).sum(), (win * (py - my) ** 2).sum()
                cxy = (win * (px - mx) * (py - my)).sum()
                values.append(
                    (2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2))
                )
        channel_means.append(np.mean(values))
    return float(np.mean(channel_means))


def conv64_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The implementation before the separable one: float64 grouped 11x11 conv, (..., H, W, C)."""
    *lead, h, w, c = x.shape
    x = x.double().reshape(-1, h, w, c).permute(0, 3, 1, 2)
    y = y.double().reshape(-1, h, w, c).permute(0, 3, 1, 2)
    r = torch.arange(-5, 6, dtype=torch.float64)
    g = torch.exp(-0.5 * (r / 1.5) ** 2)
    g = g / g.sum()
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    filtered = F.conv2d(moments, torch.outer(g, g).repeat(5 * c, 1, 1, 1), groups=5 * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.split(c, dim=1)
    num = (2 * mu_x * mu_y + C1) * (2 * (e_xy - mu_x * mu_y) + C2)
    den = (mu_x**2 + mu_y**2 + C1) * (e_xx - mu_x**2 + e_yy - mu_y**2 + C2)
    return (num / den).mean(dim=(1, 2, 3)).reshape(lead)


def pair(shape, seed=0, noise=0.2):
    """A random frame batch and a noisy copy, float64 in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    y = np.clip(x + noise * rng.standard_normal(shape), 0, 1)
    return torch.from_numpy(x), torch.from_numpy(y)


def test_identical_frames():
    x, _ = pair((2, 3, 12, 14, 3))
    assert torch.equal(mse(x, x), torch.zeros(2, 3, dtype=torch.float64))
    assert torch.allclose(psnr(x, x), torch.full((2, 3), 100.0, dtype=torch.float64))
    assert torch.allclose(ssim(x, x), torch.ones(2, 3, dtype=torch.float64), atol=1e-6)


def test_mse_of_constant_offset_and_psnr_of_known_mse():
    x = torch.full((4, 12, 12, 3), 0.3)
    assert torch.allclose(mse(x + 0.1, x), torch.full((4,), 0.01), atol=1e-7)
    assert torch.allclose(psnr(x + 0.1, x), torch.full((4,), 20.0), atol=1e-4)  # 10 log10(1/0.01)
    a, b = pair((3, 12, 13, 2), seed=1)
    expected = ((a.numpy() - b.numpy()) ** 2).mean(axis=(1, 2, 3))
    assert np.allclose(mse(a, b).numpy(), expected, rtol=1e-12)
    assert np.allclose(psnr(a, b).numpy(), 10 * np.log10(1 / expected), rtol=1e-12)
    scaled = psnr(a * 255, b * 255, data_range=255.0).numpy()
    assert np.allclose(scaled, 10 * np.log10(1 / expected))


def test_ssim_of_constant_frames_is_the_luminance_term():
    # Variances and covariance are 0, so the contrast-structure factor is C2 / C2 = 1.
    mu_x, mu_y = 0.2, 0.7
    x, y = torch.full((1, 13, 12, 3), mu_x), torch.full((1, 13, 12, 3), mu_y)
    by_hand = (2 * mu_x * mu_y + C1) / (mu_x**2 + mu_y**2 + C1)
    assert ssim(x, y).item() == pytest.approx(by_hand, abs=1e-6)
    x64, y64 = x.double().fill_(mu_x), y.double().fill_(mu_y)  # exact 0.2, not float32's
    assert ssim(x64, y64).item() == pytest.approx(by_hand, abs=1e-7)


def test_ssim_matches_slow_reference_per_frame():
    x, y = pair((2, 2, 16, 19, 3), seed=2)
    got = ssim(x, y)
    assert got.shape == (2, 2)
    for i in range(2):
        for j in range(2):
            ref = reference_ssim(x[i, j].numpy(), y[i, j].numpy())
            assert got[i, j].item() == pytest.approx(ref, abs=1e-5)
    # float32 inputs give the same numbers (filtering runs in float32 either way).
    assert torch.allclose(ssim(x.float(), y.float()).double(), got, atol=1e-6)


@pytest.mark.parametrize("size", [(11, 11), (32, 32), (24, 45), (64, 64)])
def test_separable_float32_ssim_within_1e6_of_the_float64_convolution(size):
    x, y = pair((3, 4, *size, 3), seed=sum(size), noise=0.2)
    got = ssim(x.float(), y.float())
    assert got.dtype == torch.float32
    assert (got.double() - conv64_ssim(x, y)).abs().max() < 1e-6
    # Bright, nearly flat frames: the case where uncentred float32 moments cancel (~1e-5 off).
    rng = np.random.default_rng(7)
    base = 0.95 + 0.002 * rng.standard_normal((8, *size, 3))
    a = torch.from_numpy(np.clip(base, 0, 1)).float()
    b = torch.from_numpy(np.clip(base + 0.002 * rng.standard_normal(base.shape), 0, 1)).float()
    assert (ssim(a, b).double() - conv64_ssim(a, b)).abs().max() < 1e-6


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip(
        "skimage.metrics", reason="scikit-image (in the dev extra) gives the parity reference"
    )
    x, y = pair((4, 40, 33, 3), seed=8, noise=0.15)
    got = ssim(x.float(), y.float())
    for i in range(4):
        ref = skm.structural_similarity(
            x[i].numpy(),
            y[i].numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        assert got[i].item() == pytest.approx(ref, abs=1e-6)


def test_ssim_batching_does_not_mix_frames(monkeypatch):
    x, y = pair((5, 13, 15, 2), seed=3, noise=0.3)
    one_by_one = torch.stack([ssim(x[i], y[i]) for i in range(5)])
    monkeypatch.setattr(metrics, "SSIM_CHUNK_ELEMENTS", 2 * 5 * 2 * 13 * 15)  # 2 frames per call
    assert torch.allclose(ssim(x, y), one_by_one, atol=1e-7)


def test_ssim_symmetric_and_at_most_one():
    x, y = pair((6, 12, 12, 3), seed=4, noise=0.5)
    assert torch.allclose(ssim(x, y), ssim(y, x), atol=1e-7)
    assert (ssim(x, y) <= 1).all() and (ssim(x, y) < 0.9).all()
    assert (ssim(x, 1 - x) < ssim(x, y)).all()  # an inverted frame is further than a noisy one


def test_too_small_or_mismatched_frames_raise():
    small = torch.rand(2, 10, 12, 3)
    with pytest.raises(DataError, match="10x12"):
        ssim(small, small)
    with pytest.raises(DataError, match="differs"):
        mse(torch.rand(2, 12, 12, 3), torch.rand(2, 12, 12, 1))
    with pytest.raises(DataError, match="float"):
        psnr(torch.zeros(2, 12, 12, 3, dtype=torch.uint8), torch.rand(2, 12, 12, 3))


def test_per_step_metrics_shapes_and_uint8_float_agree():
    rng = np.random.default_rng(5)
    pred = rng.integers(0, 256, (3, 4, 12, 13, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (3, 4, 12, 13, 3), dtype=np.uint8)
    out = per_step_metrics(pred, target)
    assert set(out) == {"mse", "psnr", "ssim", "mean"}
    for key in ("mse", "psnr", "ssim"):
        assert len(out[key]) == 4 and all(type(v) is float for v in out[key])
        assert out["mean"][key] == pytest.approx(np.mean(out[key]), rel=1e-12)
    json.dumps(out)
    # Averaged over the batch, per step.
    x, y = torch.from_numpy(pred / 255.0), torch.from_numpy(target / 255.0)
    assert np.allclose(out["psnr"], psnr(x, y).mean(dim=0).numpy(), rtol=1e-12)
    # Float inputs (numpy float32, torch float64) give the same numbers as uint8.
    as_float32 = per_step_metrics(pred / np.float32(255), target / np.float32(255))
    for alt in (as_float32, per_step_metrics(x, target)):
        for key in ("mse", "psnr", "ssim"):
            assert np.allclose(alt[key], out[key], rtol=1e-5, atol=1e-6)


def test_per_step_metrics_rejects_bad_input():
    with pytest.raises(DataError, match=r"\(B, F, H, W, C\)"):
        per_step_metrics(np.zeros((4, 12, 12, 3), np.uint8), np.zeros((4, 12, 12, 3), np.uint8))
    with pytest.raises(DataError, match="int64"):
        per_step_metrics(np.zeros((1, 2, 12, 12, 3), np.int64), np.zeros((1, 2, 12, 12, 3)))
