"""InstaHide encoding speed: encoding 20,000 32×32×3 images with k = 6 (cross mode, 2 private + 4 public) against
copying the output array once, measured side by side in one run. Goal: at most 10× the copy.

    python benchmarks/speed/bench_instahide_encode.py [--n 20000] [--pool 10000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import masquerade as mq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # benchmarks/: the shared helpers
from _timing import median_time  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--pool", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 3, 32, 32, generator=g)
    public = torch.rand(args.pool, 3, 32, 32, generator=g)
    scheme = mq.create_scheme("instahide", k=6, mode="cross", private_per_mix=2)
    t = time.perf_counter()
    key = scheme.keygen(args.n, rng=0, pool_size=args.pool)
    t_key = time.perf_counter() - t
    z = scheme.encode(x, key, public=public)  # warm-up (compiles the kernel once; numba caches it)
    t_enc, _ = median_time(lambda: scheme.encode(x, key, public=public), args.repeat)
    t_copy, _ = median_time(lambda: z.clone(), args.repeat)
    mb = z.numel() * 4 / 1e6
    print(f"{args.n} images 32x32x3, k=6 cross (2 private + 4 public from {args.pool}), torch threads "
          f"{torch.get_num_threads()}")
    print(f"keygen (coefficients, partners, {key.mask.nbytes / 1e6:.1f} MB of mask bits): {t_key:.3f}s")
    print(f"encode: {t_enc:.4f}s   copy of the {mb:.0f} MB output: {t_copy:.4f}s   ratio {t_enc / t_copy:.2f}x "
          f"(goal <= 10x: {'met' if t_enc / t_copy <= 10 else 'NOT met'})")


if __name__ == "__main__":
    main()
