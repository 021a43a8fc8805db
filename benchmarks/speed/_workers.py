"""One measurement of one side of one benchmark case, in this process (the suite starts a fresh one each time).

    python benchmarks/speed/_workers.py CASE SIDE --n N [--repeat R] [--iterations I] [--data DIR] --json OUT
    python benchmarks/speed/_workers.py CASE ours --curve 1000,5000,20000 --json OUT

Inputs are prepared first and not timed. Then the first call is timed (``cold_s``: what a fresh process, as every
CLI call is, pays on its first call: loading compiled kernels, first touch of fresh memory, caches) and the best of
``R`` further calls (``warm_s``, as ``timeit`` reports: on a shared machine the other calls measure the neighbours;
the median is kept as ``warm_median_s``). ``--curve`` times warm calls at several sizes instead (the cost curve),
each size after one untimed call. The JSON record also carries ``values`` where the case has per-item results to compare
(SSIM), and ``units`` (what one call processes: bytes, image-iterations, pairs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from _data import DataDir, data_dir  # noqa: E402

Prepared = tuple[Callable[[], Any], float]  # the timed call, and its units


# ---- data ------------------------------------------------------------------------------------------------------


def cifar_pairs(n: int, data: DataDir) -> tuple[np.ndarray, np.ndarray]:
    """n pairs of 32×32×3 uint8 images: CIFAR-10 test images against others where the data folder has them,
    else random images with noise (SSIM's cost does not depend on the content)."""
    if data.has("cifar10-test.npz"):
        with np.load(data / "cifar10-test.npz") as z:
            imgs = z["images"]
        if 2 * n <= len(imgs):
            return imgs[:n], imgs[-n:]
    g = np.random.default_rng(0)
    a = g.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return a, np.clip(a + g.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)


def photos(n: int, size: int = 256) -> np.ndarray:
    """n photos as n×size×size×3 uint8: crops of the photographs scikit-image ships (every user has them)."""
    from skimage import data as skd
    from skimage.transform import resize

    out = []
    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina"]
    srcs = [np.asarray(getattr(skd, nm)()) for nm in names]
    g = np.random.default_rng(0)
    while len(out) < n:
        im = srcs[len(out) % len(srcs)]
        h, w = im.shape[:2]
        s = int(min(h, w) * (0.6 + 0.4 * g.random()))
        y, x = int(g.integers(0, h - s + 1)), int(g.integers(0, w - s + 1))
        crop = resize(im[y : y + s, x : x + s], (size, size), anti_aliasing=True, preserve_range=True)
        out.append(np.clip(np.rint(crop), 0, 255).astype(np.uint8))
    return np.stack(out)


# ---- SSIM ------------------------------------------------------------------------------------------------------

SSIM_CASES = {  # case: (dtype, scikit-image keywords)
    "ssim-u8": ("u8", {}),
    "ssim-f32": ("f32", {}),
    "ssim-f64": ("f64", {}),
    "ssim-gauss-f32": ("f32", {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}),
}


def ssim_inputs(case: str, n: int, data: DataDir) -> tuple[np.ndarray, np.ndarray, float]:
    a, b = cifar_pairs(n, data)
    kind = SSIM_CASES[case][0]
    if kind == "u8":
        return a, b, 255.0
    dt = np.float32 if kind == "f32" else np.float64
    return (a / 255).astype(dt), (b / 255).astype(dt), 1.0


def ssim_side(case: str, side: str, n: int, data: DataDir) -> Prepared:
    import torch

    a, b, rng = ssim_inputs(case, n, data)
    kw = SSIM_CASES[case][1]
    if side == "skimage":
        from skimage.metrics import structural_similarity

        return (
            lambda: np.array([structural_similarity(x, y, channel_axis=-1, data_range=rng, **kw) for x, y in zip(a, b)])
        ), n
    ta = torch.from_numpy(a).permute(0, 3, 1, 2)  # the NHWC -> NCHW view a caller makes; converting is timed
    tb = torch.from_numpy(b).permute(0, 3, 1, 2)
    if side == "ours":
        from masquerade.metrics import ssim

        return (lambda: ssim(ta, tb, data_range=rng, **kw).numpy()), n
    ca, cb = ta.contiguous(), tb.contiguous()  # the library peers get contiguous NCHW float tensors
    if side == "pytorch-msssim":
        from pytorch_msssim import ssim as pm_ssim

        return (lambda: pm_ssim(ca, cb, data_range=rng, size_average=False).double().numpy()), n
    if side == "kornia":
        import kornia

        return (lambda: kornia.metrics.ssim(ca, cb, 11, max_val=rng).mean(dim=(1, 2, 3)).double().numpy()), n
    if side == "torchmetrics":
        from torchmetrics.functional import structural_similarity_index_measure as tm_ssim

        return (lambda: tm_ssim(ca, cb, data_range=rng, reduction="none").double().numpy()), n
    raise SystemExit(f"unknown side {side} for {case}")


def ssim_exact(case: str, n: int, data: DataDir) -> np.ndarray:
    """scikit-image on float64 copies of the same pixels: the exact values (untimed)."""
    from skimage.metrics import structural_similarity

    a, b, rng = ssim_inputs(case, n, data)
    kw = SSIM_CASES[case][1]
    return np.array(
        [
            structural_similarity(x.astype(np.float64), y.astype(np.float64), channel_axis=-1, data_range=rng, **kw)
            for x, y in zip(a, b)
        ]
    )


# ---- the schemes -----------------------------------------------------------------------------------------------


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 32, 32), dtype=np.float32)


def aes_side(side: str, n: int) -> Prepared:
    if side == "raw-aes":  # one AES-128-ECB pass over the same number of bytes, straight through `cryptography`
        data = np.random.default_rng(0).integers(0, 256, n * 3 * 32 * 32, dtype=np.uint8).tobytes()
        key = bytes(range(16))

        def raw() -> bytes:  # imports inside the call, as our encode does: both first calls pay for them
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            return Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(data)

        return raw, len(data)
    import torch

    from masquerade.registry import SCHEMES

    sch = SCHEMES.create("disguise", transform="aes")
    key = sch.keygen(n, rng=1, shape=(3, 32, 32))
    x = torch.from_numpy(images(n))
    return (lambda: sch.encode(x, key)), n * 3 * 32 * 32


def shufflebits_side(n: int, dim: int = 3072) -> Prepared:
    import torch

    from masquerade.registry import SCHEMES

    sch = SCHEMES.create("shufflebits", scope="fixed")
    key = sch.keygen(n, rng=1)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32))
    return (lambda: sch.encode(x, key)), n * dim * 4


def instahide_side(n: int) -> Prepared:
    """Key drawing and encoding together (the published code draws as it encodes): k = 6, cross mode, 2 private and
    4 public images per encoding, a public pool as large as the private set."""
    import torch

    from masquerade.registry import SCHEMES

    sch = SCHEMES.create("instahide", k=6, mode="cross", private_per_mix=2)
    x = torch.from_numpy(images(n))
    pub = torch.from_numpy(images(n, seed=1))
    rngs = iter(range(10**6))

    def call() -> Any:
        key = sch.keygen(n, rng=next(rngs), shape=(3, 32, 32), pool_size=n)
        return sch.encode(x, key, public=pub)

    return call, n


def instahide_decode_side(n: int, group: int = 0) -> Prepared:
    """Decoding with the key (``masquerade reveal``): k = 4 inside, partners from the whole set (the paper) or from
    secret groups of ``group`` images."""
    import torch

    from masquerade.registry import SCHEMES

    sch = SCHEMES.create("instahide", k=4, group=group)
    key = sch.keygen(n, rng=1, shape=(3, 32, 32))
    z = sch.encode(torch.from_numpy(images(n)), key)
    return (lambda: sch.decode(z, key)), n


# ---- gradient inversion ----------------------------------------------------------------------------------------


def ig_side(side: str, problems: int, iterations: int) -> Prepared:
    import torch
    import torch.nn.functional as F

    from masquerade.attacks.gradient_inversion import (
        CIFAR10_MEAN,
        CIFAR10_STD,
        InvertingGradients,
        client_gradient,
        total_variation,
    )
    from masquerade.models import Normalized, create_model

    torch.manual_seed(0)
    model = Normalized(create_model("resnet20"), CIFAR10_MEAN, CIFAR10_STD).eval()
    x = torch.rand(problems, 3, 32, 32)
    y = torch.randint(0, 10, (problems,))
    per = [client_gradient(model, x[i : i + 1], y[i : i + 1]) for i in range(problems)]
    units = problems * iterations
    if side == "ours":
        stacked = [torch.stack(t) for t in zip(*per)]
        atk = InvertingGradients(iterations=iterations, chunk=problems)
        return (lambda: atk.run_many(model=model, gradients=stacked, labels=y[:, None], rng=0, progress=False)), units
    if side == "loop":  # the textbook loop: one image at a time, autograd.grad(create_graph=True)
        mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
        params = list(model.parameters())

        def loop() -> None:
            for i, target in enumerate(per):
                z = torch.randn(1, 3, 32, 32, requires_grad=True)
                opt = torch.optim.Adam([z], lr=0.1)
                for _ in range(iterations):
                    trial = torch.autograd.grad(
                        F.cross_entropy(model(z * std + mean), y[i : i + 1]), params, create_graph=True
                    )
                    dot = sum((a * b).sum() for a, b in zip(trial, target))
                    na = sum(a.pow(2).sum() for a in trial)
                    nb = sum(b.pow(2).sum() for b in target)
                    loss = 1 - dot / (na.sqrt() * nb.sqrt()) + 1e-4 * total_variation(z)
                    (g,) = torch.autograd.grad(loss, z)
                    z.grad = g.sign()
                    opt.step()

        return loop, units
    raise SystemExit(f"unknown side {side}")


# ---- BRISQUE ---------------------------------------------------------------------------------------------------


def brisque_side(side: str, n: int) -> Prepared:
    ims = photos(n)
    if side == "brisque":
        # the package's score as the tests compute it (its own score() breaks under NumPy 2); the model loads on
        # the first call, as the package's first call does
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from tests.quality.test_quality import _reference_score

        return (lambda: np.array([_reference_score(im) for im in ims])), n
    import torch

    from masquerade.quality.brisque import brisque_score

    x = torch.from_numpy(ims).permute(0, 3, 1, 2).float() / 255
    return (lambda: brisque_score(x).double().numpy().reshape(-1)), n


# ---- driver ----------------------------------------------------------------------------------------------------


def prepare(case: str, side: str, n: int, iterations: int, data: DataDir) -> Prepared:
    if case in SSIM_CASES:
        return ssim_side(case, side, n, data)
    if case == "aes-disguise":
        return aes_side(side, n)
    if case == "shufflebits":
        return shufflebits_side(n)
    if case == "instahide-encode":
        return instahide_side(n)
    if case == "instahide-decode":
        return instahide_decode_side(n)
    if case == "instahide-decode-grouped":
        return instahide_decode_side(n, group=128)
    if case == "inverting-gradients":
        return ig_side(side, n, iterations)
    if case == "brisque":
        return brisque_side(side, n)
    raise SystemExit(f"unknown case {case}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case")
    ap.add_argument("side")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--curve", default="", help="comma-separated sizes: warm times at each")
    ap.add_argument("--exact", action="store_true", help="SSIM cases: also the exact values (untimed)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--json", required=True)
    a = ap.parse_args()
    data = data_dir(a.data)
    rec: dict[str, Any] = {"case": a.case, "side": a.side, "n": a.n}
    if a.curve:
        points = []
        for size in (int(v) for v in a.curve.split(",")):
            fn, units = prepare(a.case, a.side, size, a.iterations, data)
            fn()
            ts = []
            for _ in range(max(1, a.repeat)):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            points.append({"n": size, "s": min(ts), "units": units})
        rec["curve"] = points
    else:
        fn, units = prepare(a.case, a.side, a.n, a.iterations, data)
        t = time.perf_counter()
        out = fn()
        rec["cold_s"] = time.perf_counter() - t
        ts = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t)
        rec["warm_s"] = min(ts) if ts else rec["cold_s"]  # best of R, as timeit reports
        rec["warm_median_s"] = statistics.median(ts) if ts else rec["cold_s"]
        rec["units"] = units
        if isinstance(out, np.ndarray) and out.ndim == 1 and a.case in SSIM_CASES | {"brisque": None}:
            rec["values"] = [float(v) for v in out]
        if a.exact and a.case in SSIM_CASES:
            rec["exact"] = [float(v) for v in ssim_exact(a.case, a.n, data)]
    Path(a.json).write_text(json.dumps(rec))


if __name__ == "__main__":
    main()
