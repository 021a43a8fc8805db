"""The compiled kernels (masquerade._native): each against an independent numpy / torch / scikit-image reference,
their own bounds checks, the same result on one thread or several, and no run-time compiler on the user's path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from masquerade import _native
from masquerade.disguise._kernel import gather_u8, plane_offsets, scatter_f32
from masquerade.instahide._kernel import mix_encode
from masquerade.metrics import ssim
from masquerade.shufflebits.scheme import shuffle_words, shuffle_words_torch


@pytest.fixture(params=["1", "2"], ids=["1-thread", "2-threads"])
def threads(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MASQUERADE_THREADS", request.param)
    return str(request.param)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"win_size": 3},
        {"win_size": 11},
        {"gaussian_weights": True},
        {"gaussian_weights": True, "use_sample_covariance": False, "sigma": 1.0},
    ],
)
def test_float_ssim_is_the_float64_ssim_of_those_pixels(dtype: type, kw: dict, threads: str) -> None:
    g = np.random.default_rng(3)
    a = g.random((150, 20, 24, 3)).astype(dtype)
    b = np.clip(a + g.normal(0, 0.1, a.shape), 0, 1).astype(dtype)
    ours = ssim(
        torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2), data_range=1, **kw
    ).numpy()
    exact = np.array(
        [
            structural_similarity(x.astype(np.float64), y.astype(np.float64), channel_axis=-1, data_range=1, **kw)
            for x, y in zip(a, b)
        ]
    )
    np.testing.assert_allclose(ours, exact, atol=1e-10, rtol=0)
    if dtype == np.float32:  # scikit-image computes float32 input in float32: close, not equal
        own = np.array([structural_similarity(x, y, channel_axis=-1, data_range=1, **kw) for x, y in zip(a, b)])
        np.testing.assert_allclose(ours, own, atol=2e-5, rtol=0)


def test_aes_block_moves_match_numpy(threads: str) -> None:
    g = np.random.default_rng(0)
    n, c, h, w, b = 700, 3, 16, 24, 4
    x = g.random((n, c, h * w), dtype=np.float32)
    # exact ties (round half to even), the ends, and values outside [0, 1] (saturated); NaN reads as 0
    x[0, 0, :8] = np.array([0.5, 1.5, 2.5, 253.5, 0, 255, -3, 300], np.float32) / np.float32(255)
    x[0, 1, 0] = np.nan
    src = g.permutation((h // b) * (w // b))
    off = plane_offsets(h, w, b, src)
    buf = np.empty(x.shape, np.uint8)
    gather_u8(x, off, buf)
    q = np.nan_to_num(np.clip(np.rint(x * np.float32(255)), 0, 255)).astype(np.uint8)
    ref = np.empty_like(q)
    ref[:, :, off] = q
    assert np.array_equal(buf, ref)
    assert list(buf[0, 0, off[:8]]) == [0, 2, 2, 254, 0, 255, 0, 255] and buf[0, 1, off[0]] == 0
    out = np.empty(x.shape, np.float32)
    scatter_f32(buf, off, out)
    assert np.array_equal(out, buf[:, :, off].astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("scope", ["fixed", "vector", "element"])
def test_bit_shuffles_match_the_torch_path_and_invert(scope: str, threads: str) -> None:
    g = np.random.default_rng(1)
    words = g.integers(0, 2**32, size=(300, 130), dtype=np.uint32)
    rows = {"fixed": 1, "vector": 300, "element": words.size}[scope]
    perm = np.stack([g.permutation(32) for _ in range(rows)]).astype(np.uint8)
    ours = shuffle_words(words, perm, scope)
    ref = shuffle_words_torch(torch.from_numpy(words.view(np.int32)), perm, scope).numpy().view(np.uint32)
    assert np.array_equal(ours, ref)
    assert np.array_equal(shuffle_words(ours, perm, scope, inverse=True), words)


def test_fisher_yates_draws_permutations(threads: str) -> None:
    from masquerade.shufflebits._kernel import fisher_yates

    rand = np.random.default_rng(2).integers(0, 2**32, size=(5000, 31), dtype=np.uint32)
    out = np.empty((5000, 32), np.uint8)
    fisher_yates(rand, out)
    assert (np.sort(out, axis=1) == np.arange(32)).all()
    # every value lands in every position: close to uniform (5000 / 32 = 156 per cell)
    counts = np.stack([(out == v).sum(0) for v in range(32)])
    assert counts.min() > 90 and counts.max() < 230


def test_mix_encode_matches_numpy(threads: str) -> None:
    g = np.random.default_rng(4)
    n, c, px, k, p = 300, 3, 40, 6, 2
    priv = g.random((n, c, px), dtype=np.float32)
    pub = g.random((50, c, px), dtype=np.float32)
    partners = np.concatenate([g.integers(0, n, (n, p)), g.integers(0, 50, (n, k - p))], 1).astype(np.int64)
    slot_public = np.arange(k) >= p
    lam = g.dirichlet(np.ones(k), n).astype(np.float32)
    scale = (g.random((2, c)) + 1).astype(np.float32)
    shift = (g.random((2, c)) - 0.5).astype(np.float32)
    bits = g.integers(0, 2, (n, c * px)).astype(np.uint8)
    mask = np.packbits(bits, axis=1)
    out = np.empty((n, c, px), np.float32)
    mix_encode(priv, pub, partners, slot_public, lam, scale, shift, mask, True, out)
    ref = np.zeros((n, c, px))
    for j in range(k):
        src = pub if slot_public[j] else priv
        t = int(slot_public[j])
        ref += lam[:, j, None, None] * (scale[t][None, :, None] * src[partners[:, j]] + shift[t][None, :, None])
    ref *= 1 - 2 * bits.reshape(n, c, px).astype(np.float64)
    np.testing.assert_allclose(out, ref, atol=2e-6, rtol=0)


def test_the_kernels_refuse_what_would_read_or_write_outside_their_buffers() -> None:
    x = np.zeros((4, 16), np.float32)
    runs = np.array([0, 4, 8, 12], np.int64)
    out = np.zeros((4, 16), np.uint8)
    _native.gather_u8(x, runs, out, 4, 16, 4, 0, 4)
    bad = [
        lambda: _native.gather_u8(x, runs, out, 5, 16, 4, 0, 5),  # more planes than the buffers
        lambda: _native.gather_u8(x, np.array([0, 4, 8, 13], np.int64), out, 4, 16, 4, 0, 4),  # run past the end
        lambda: _native.gather_u8(x, runs, out, 4, 16, 4, 2, 5),  # range past the items
        lambda: _native.gather_u8(x, runs, out, 4, 16, 3, 0, 4),  # run length not dividing
        lambda: _native.scatter_f32(out, runs[:2], x, 4, 16, 4, 0, 4),  # run table too short
        lambda: _native.shuffle_rows(
            np.zeros(8, np.uint32), np.arange(32, dtype=np.uint8), np.zeros(4, np.uint32), 2, 4, 1, False, 0, 2
        ),  # output too small
        lambda: _native.shuffle_rows(
            np.zeros(8, np.uint32), np.zeros(32, np.uint8), np.zeros(8, np.uint32), 2, 4, 1, False, 0, 2
        ),  # not a permutation
        lambda: _native.shuffle_elements(
            np.zeros(2, np.uint32), np.full(64, 40, np.uint8), np.zeros(2, np.uint32), 2, False, 0, 2
        ),
        lambda: _native.fisher_yates(np.zeros(31, np.uint32), np.zeros(64, np.uint8), 2, 0, 2),
        # x too short (10 < 16)
        lambda: _native.ssim_sep(
            np.zeros(10, np.float32),
            np.zeros(16, np.float32),
            False,
            np.ones(3) / 3,
            np.zeros(1),
            np.zeros(3),
            1,
            1,
            4,
            4,
            16,
            16,
            4,
            1,
            16,
            16,
            4,
            1,
            0.1,
            0.1,
            1.0,
            0,
            1,
        ),
        # a stride that does not fit
        lambda: _native.ssim_sep(
            np.zeros(16, np.float32),
            np.zeros(16, np.float32),
            False,
            np.ones(3) / 3,
            np.zeros(1),
            np.zeros(3),
            1,
            1,
            4,
            4,
            16,
            16,
            4,
            2,
            16,
            16,
            4,
            1,
            0.1,
            0.1,
            1.0,
            0,
            1,
        ),
        lambda: _native.ssim_sep(
            np.zeros(16, np.float32),
            np.zeros(16, np.float32),
            False,
            np.ones(3) / 3,
            np.zeros(1),
            np.zeros(3),
            1,
            1,
            4,
            4,
            16,
            16,
            -4,
            1,
            16,
            16,
            4,
            1,
            0.1,
            0.1,
            1.0,
            0,
            1,
        ),
        lambda: _native.ssim_box_u8(
            np.zeros(16, np.uint8),
            np.zeros(16, np.uint8),
            np.zeros(1),
            np.zeros(3),
            1,
            1,
            4,
            4,
            16,
            16,
            4,
            1,
            16,
            16,
            4,
            1,
            5,
            0.1,
            0.1,
            1.0,
            0,
            1,
        ),  # window > image
        lambda: _native.ssim_box_u8(
            np.zeros(16, np.uint8),
            np.zeros(15, np.uint8),
            np.zeros(1),
            np.zeros(3),
            1,
            1,
            4,
            4,
            16,
            16,
            4,
            1,
            16,
            16,
            4,
            1,
            3,
            0.1,
            0.1,
            1.0,
            0,
            1,
        ),  # y too short
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError, match="partner"):
        mix_encode(
            np.zeros((2, 1, 4), np.float32),
            np.zeros((1, 1, 4), np.float32),
            np.array([[0, 1]], np.int64),
            np.array([False, True]),
            np.full((1, 2), 0.5, np.float32),
            np.ones((2, 1), np.float32),
            np.zeros((2, 1), np.float32),
            np.zeros((1, 1), np.uint8),
            False,
            np.zeros((1, 1, 4), np.float32),
        )


def test_no_run_time_compiler_on_the_users_path() -> None:
    """Every CLI call is a fresh process: the kernels are compiled ahead of time, and nothing loads numba."""
    code = (
        "import sys, numpy as np, torch\n"
        "from masquerade.registry import SCHEMES\n"
        "from masquerade.metrics import ssim\n"
        "x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))\n"
        "for name, kw in [('disguise', {'transform': 'aes'}), ('instahide', {}), ('shufflebits', {})]:\n"
        "    s = SCHEMES.create(name, **kw)\n"
        "    shape = (3, 32, 32) if name != 'shufflebits' else (3072,)\n"
        "    data = x if name != 'shufflebits' else x.reshape(8, -1)\n"
        "    s.encode(data, s.keygen(8, rng=0, shape=shape))\n"
        "ssim(x, x, data_range=1)\n"
        "print('numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sizes_that_overflow_are_refused_not_trusted() -> None:
    """Products of sizes are checked before they are compared with buffer lengths (a wrapped product would pass)."""
    big = 2**32
    with pytest.raises(ValueError):
        _native.gather_u8(np.zeros(4, np.float32), np.zeros(1, np.int64), np.zeros(4, np.uint8), big, big, big, 0, 1)
    with pytest.raises(ValueError):  # 2·H·W wraps to 0 in the scratch size; all-zero strides reach nothing
        _native.ssim_sep(
            np.zeros(1),
            np.zeros(1),
            True,
            np.ones(1),
            np.zeros(1),
            np.zeros(3),
            1,
            1,
            2**62,
            2,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0.1,
            0.1,
            1.0,
            0,
            1,
        )
    with pytest.raises(ValueError):  # (n - 1) · stride wraps
        _native.ssim_sep(
            np.zeros(16),
            np.zeros(16),
            True,
            np.ones(1),
            np.zeros(5),
            np.zeros(15),
            5,
            1,
            4,
            4,
            2**62,
            16,
            4,
            1,
            16,
            16,
            4,
            1,
            0.1,
            0.1,
            1.0,
            0,
            5,
        )
    with pytest.raises(ValueError):
        _native.mix_encode(
            *[np.zeros(8, np.float32)] * 2,
            np.zeros(1, np.int64),
            np.zeros(1, np.uint8),
            np.zeros(1, np.float32),
            np.zeros(2, np.float32),
            np.zeros(2, np.float32),
            np.zeros(1, np.uint8),
            True,
            np.zeros(8, np.float32),
            big,
            big,
            big,
            1,
            1,
            big,
            1,
            0,
            1,
        )


def test_a_failing_range_waits_for_the_others_and_a_forked_child_can_still_run_kernels() -> None:
    import multiprocessing
    import threading
    import time as _time

    from masquerade._threads import parallel

    finished = []

    def work(start: int, stop: int) -> None:
        if start == 0:
            raise RuntimeError("first range fails")
        _time.sleep(0.2)
        finished.append((start, stop))
        assert threading.current_thread().name.startswith("masquerade")

    import os

    os.environ["MASQUERADE_THREADS"] = "2"
    try:
        with pytest.raises(RuntimeError, match="first range"):
            parallel(work, 10)
        assert finished == [(5, 10)]  # the other range was done before the error came back
        ctx = multiprocessing.get_context("fork")
        g = torch.Generator().manual_seed(1)
        child = ctx.Process(
            target=ssim,
            args=(torch.rand(200, 3, 16, 16, generator=g), torch.rand(200, 3, 16, 16, generator=g)),
            kwargs={"data_range": 1},
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0  # the parent's pool threads do not exist in the child: a new pool
    finally:
        del os.environ["MASQUERADE_THREADS"]


def test_ssim_edge_shapes() -> None:
    from masquerade.errors import InputError

    with pytest.raises(InputError, match="channels"):
        ssim(torch.zeros(2, 0, 8, 8), torch.zeros(2, 0, 8, 8), data_range=1)
    # uint8 with a window beyond 255 takes the float path (exact integer sums would pass 2^53)
    g = np.random.default_rng(0)
    a = g.integers(0, 256, (1, 1, 260, 262), dtype=np.uint8)
    b = np.clip(a + g.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    ours = float(ssim(torch.from_numpy(a), torch.from_numpy(b), data_range=255, win_size=257))
    ref = structural_similarity(a[0, 0], b[0, 0], data_range=255, win_size=257)
    assert abs(ours - ref) < 1e-8


def test_single_image_inversion_tolerates_a_parameter_the_loss_does_not_use() -> None:
    from masquerade.attacks.gradient_inversion import InvertingGradients, client_gradient

    class WithUnusedHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
            self.aux = torch.nn.Linear(4, 4)  # trained elsewhere, not used by forward

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    with torch.random.fork_rng(devices=[]):  # the layers' initialisation draws from torch's global generator
        torch.manual_seed(0)
        model = WithUnusedHead().eval()
    x, y = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([3])
    used = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), used, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, used)]
    assert len(grads) == len(client_gradient(model.body, x, y)) + 2
    res = InvertingGradients(iterations=3, image_shape=(3, 8, 8)).run(
        model=model, gradients=grads, labels=y, rng=0, progress=False
    )
    assert res.reconstructions.shape[-3:] == (3, 8, 8)
