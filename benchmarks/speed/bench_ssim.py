"""SSIM speed: masquerade's batched SSIM against scikit-image called in a loop, in one run.

Pairs are 5,000 CIFAR-10 test images against 5,000 others (``cifar10-test.npz`` of the data folder: ``--data DIR``,
else ``$MASQUERADE_BENCH_DATA``, else ``<repo>/../shared/data``), or random uint8 images where the default folder
lacks that file. Prints the times, the ratio (goal: at least 30x for uint8 pairs with the default 7x7 window) and the
largest difference from scikit-image over all pairs.

    python benchmarks/speed/bench_ssim.py [--pairs 5000] [--repeat 5] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from masquerade.metrics import ssim

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/: the shared helpers
from _data import DataDir, add_data_option, data_dir  # noqa: E402
from _timing import median_time  # noqa: E402

CIFAR = "cifar10-test.npz"


def pairs(n: int, data: DataDir) -> tuple[np.ndarray, np.ndarray, str]:
    if data.explicit:
        data.require(CIFAR)         # a folder chosen on purpose must hold the file; the default may lack it
    if data.has(CIFAR):
        with np.load(data / CIFAR) as z:
            imgs = z["images"]
        return imgs[:n], imgs[-n:], f"CIFAR-10 test images ({data / CIFAR})"
    g = np.random.default_rng(0)
    a = g.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return a, np.clip(a + g.integers(-30, 31, a.shape), 0, 255).astype(np.uint8), "random uint8 images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=5)
    add_data_option(ap, CIFAR + " (optional: random images without it)")
    args = ap.parse_args()
    a, b, what = pairs(args.pairs, data_dir(args.data))
    print(f"{len(a)} pairs of {a.shape[1]}x{a.shape[2]}x{a.shape[3]} uint8: {what}; torch threads "
          f"{torch.get_num_threads()}")
    rows = []
    for label, kw in [("uniform 7x7 (default)", {}), ("gaussian sigma 1.5", {"gaussian_weights": True})]:
        def reference(kw: dict = kw) -> np.ndarray:
            return np.array([structural_similarity(x, y, channel_axis=-1, data_range=255, **kw) for x, y in zip(a, b)])

        def ours(kw: dict = kw) -> np.ndarray:  # includes the NHWC -> NCHW conversion a caller would do
            ta = torch.from_numpy(a).permute(0, 3, 1, 2)
            tb = torch.from_numpy(b).permute(0, 3, 1, 2)
            return ssim(ta, tb, data_range=255, **kw).numpy()

        ours()  # warm-up (compiles the kernel once per machine; numba caches it)
        t_ref, ref = median_time(reference, max(1, args.repeat // 2))
        t_ours, got = median_time(ours, args.repeat)
        diff = float(np.abs(np.asarray(ref) - np.asarray(got)).max())
        rows.append((label, t_ref, t_ours, t_ref / t_ours, diff))
    print(f"{'window':24s} {'skimage loop':>13s} {'masquerade':>11s} {'speed-up':>9s} {'max |diff|':>11s}")
    for label, t_ref, t_ours, ratio, diff in rows:
        print(f"{label:24s} {t_ref:12.3f}s {t_ours:10.4f}s {ratio:8.1f}x {diff:11.2e}")
    ratio = rows[0][3]
    print(f"goal: >= 30x for the default window -> {'met' if ratio >= 30 else 'NOT met'} ({ratio:.1f}x)")


if __name__ == "__main__":
    main()
