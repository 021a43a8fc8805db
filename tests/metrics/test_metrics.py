from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from masquerade.errors import InputError
from masquerade.metrics import mse, psnr, rmse, ssim


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def sk_ssim(a: np.ndarray, b: np.ndarray, **kw: object) -> np.ndarray:
    return np.array([structural_similarity(x, y, channel_axis=-1, **kw) for x, y in zip(a, b)])


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"gaussian_weights": True},
        {"gaussian_weights": True, "use_sample_covariance": False},
        {"win_size": 3},
        {"win_size": 11},
        {"K1": 0.02, "K2": 0.05},
    ],
)
def test_ssim_equals_skimage_uint8(rng: np.random.Generator, kw: dict) -> None:
    a = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-50, 50, a.shape), 0, 255).astype(np.uint8)
    ref = sk_ssim(a, b, data_range=255, **kw)
    ours = ssim(nchw(a), nchw(b), data_range=255, **kw).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
    # the float path gives the same numbers
    ours_f = ssim(nchw(a).double(), nchw(b).double(), data_range=255, **kw).numpy()
    np.testing.assert_allclose(ours_f, ref, atol=1e-6, rtol=0)


def test_ssim_equals_skimage_real_images(cifar_test: tuple[np.ndarray, np.ndarray]) -> None:
    imgs = cifar_test[0]
    a, b = imgs[:300], imgs[300:600]
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-4, 5, a.shape), 0, 255).astype(np.uint8)
    for other in (b, noisy, a):
        for kw in ({}, {"gaussian_weights": True}):
            ref = sk_ssim(a, other, data_range=255, **kw)
            np.testing.assert_allclose(ssim(nchw(a), nchw(other), data_range=255, **kw).numpy(), ref, atol=1e-6)
    assert np.allclose(ssim(nchw(a), nchw(a), data_range=255).numpy(), 1.0)


def test_ssim_float_images_and_data_range(rng: np.random.Generator) -> None:
    a = rng.random((10, 40, 36, 3))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ref = sk_ssim(a, b, data_range=1.0)
    np.testing.assert_allclose(ssim(nchw(a), nchw(b), data_range=1.0).numpy(), ref, atol=1e-6)
    # data_range changes the answer (it is not guessed from the dtype)
    assert not np.allclose(ssim(nchw(a), nchw(b), data_range=2.0).numpy(), ref, atol=1e-4)


def test_ssim_grey_and_large_photo(rng: np.random.Generator) -> None:
    from skimage.data import camera

    img = camera()[None, :, :, None]
    noisy = np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(img[0, :, :, 0], noisy[0, :, :, 0], data_range=255)
    assert abs(float(ssim(nchw(img), nchw(noisy), data_range=255)[0]) - ref) < 1e-6


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.sampled_from([1, 3]),
    h=st.integers(7, 20),
    w=st.integers(7, 20),
    seed=st.integers(0, 2**16),
)
def test_ssim_hypothesis_shapes(n: int, c: int, h: int, w: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    a = r.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    b = r.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    ref = sk_ssim(a, b, data_range=255)
    np.testing.assert_allclose(ssim(nchw(a), nchw(b), data_range=255).numpy(), ref, atol=1e-6)


def test_ssim_errors() -> None:
    a = torch.zeros(2, 3, 32, 32)
    with pytest.raises(InputError, match="shape"):
        ssim(a, torch.zeros(2, 3, 32, 31), data_range=1)
    with pytest.raises(InputError, match="data_range"):
        ssim(a, a, data_range=0)
    with pytest.raises(InputError, match="win_size"):
        ssim(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5), data_range=1)
    with pytest.raises(InputError, match="odd"):
        ssim(a, a, data_range=1, win_size=4)
    with pytest.raises(InputError, match="N×C×H×W"):
        ssim(torch.zeros(32, 32), torch.zeros(32, 32), data_range=1)
    with pytest.raises(TypeError):
        ssim(a, a, 1.0)  # type: ignore[misc]  # data_range is keyword-only


def test_psnr_rmse_match_references(rng: np.random.Generator) -> None:
    a = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    ref = np.array([peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b)])
    np.testing.assert_allclose(psnr(nchw(a), nchw(b), data_range=255).numpy(), ref, rtol=1e-10)
    diff = (a.astype(float) - b.astype(float)) / 255
    np.testing.assert_allclose(
        rmse(nchw(a), nchw(b), data_range=255).numpy(), np.sqrt((diff**2).mean(axis=(1, 2, 3))), rtol=1e-12
    )
    np.testing.assert_allclose(mse(nchw(a), nchw(b), data_range=255).numpy(), (diff**2).mean(axis=(1, 2, 3)))
    assert torch.isinf(psnr(nchw(a), nchw(a), data_range=255)).all()
    with pytest.raises(InputError):
        psnr(nchw(a), nchw(b), data_range=-1)


def test_metrics_refuse_a_data_range_that_contradicts_the_pixels(rng: np.random.Generator) -> None:
    from masquerade.errors import InputError
    from masquerade.metrics import psnr

    f = torch.from_numpy(rng.random((2, 3, 16, 16)).astype(np.float32))
    u = (f * 255).round().to(torch.uint8)
    with pytest.raises(InputError, match="data_range=1"):
        ssim(f, f.flip(0), data_range=255)  # [0, 1] floats scored as 0..255: SSIM near 1 whatever they are
    with pytest.raises(InputError, match="wider than data_range"):
        psnr(u, u.flip(0), data_range=1.0)  # uint8 scored as [0, 1]: negative PSNR
    with pytest.raises(InputError, match="wider than data_range"):
        ssim(u, u.flip(0), data_range=1.0)
    with pytest.raises(InputError, match="NaN"):
        psnr(f * float("nan"), f, data_range=1.0)
    assert torch.isfinite(psnr(u, u.flip(0), data_range=255)).all()
    assert float(ssim(f * 2 - 1, f.flip(0) * 2 - 1, data_range=2.0).min()) > -1  # [-1, 1] images: range 2


def test_ssim_loss_is_one_minus_the_scored_ssim_and_has_gradients() -> None:
    from masquerade.metrics.ssim import ssim_loss

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 20, 20, generator=g, dtype=torch.float64)
    b = (a + 0.2 * torch.rand(3, 3, 20, 20, generator=g, dtype=torch.float64)).clamp(0, 1)
    # one mean over every window of the batch; the images are the same size, so it is the mean of the per-image SSIMs
    want = 1 - float(ssim(a, b, data_range=1.0).mean())
    assert float(ssim_loss(a, b, data_range=1.0)) == pytest.approx(want, abs=1e-12)
    # on another scale it is SSIM on that scale (not the same number: the luminance term is not shift-invariant)
    on_pm1 = 1 - float(ssim(2 * a - 1, 2 * b - 1, data_range=2.0).mean())
    assert float(ssim_loss(2 * a - 1, 2 * b - 1, data_range=2.0)) == pytest.approx(on_pm1, abs=1e-12)
    x = a.clone().requires_grad_(True)
    ssim_loss(x, b, data_range=1.0).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(InputError, match="data_range"):
        ssim_loss(a, b, data_range=0)
