"""``metrics``: SSIM / PSNR / RMSE between two image sets."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def cmd_metrics(args: argparse.Namespace) -> int:
    from masquerade.workflows.data import compare

    result: dict[str, Any] = compare(args.a, args.b, gaussian=args.gaussian, out=args.out)
    for k, v in result.items():
        print(f"{k:16s} {v:.6g}" if isinstance(v, float) else f"{k:16s} {v}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("metrics", help="SSIM / PSNR / RMSE between two image sets of equal shape")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--gaussian", action="store_true", help="Gaussian-weighted SSIM window")
    p.add_argument("--out", help="run folder")
    p.set_defaults(func=cmd_metrics)
