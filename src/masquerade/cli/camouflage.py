"""``camouflage``."""

from __future__ import annotations

import argparse
from typing import Any

from masquerade.cli.common import add_device_option, finite_float, int_at_least, parse_sets, positive_int, seed

__all__ = ["register"]


def cmd_camouflage(args: argparse.Namespace) -> int:
    from masquerade.workflows.camouflage import camouflage, quality_model

    model = quality_model(
        args.model, threshold=args.threshold, input_range=tuple(args.input_range), output_range=tuple(args.output_range)
    )
    fields = {
        "method": args.method,
        "jpeg": not args.no_jpeg,
        "quality": args.quality,
        "psnr": args.psnr,
        "steps": args.steps,
        **parse_sets(args.set),
    }
    summary = camouflage(
        args.input,
        args.out,
        model=model,
        settings=fields,
        seed=args.seed,
        batch=args.batch,
        max_pixels=args.max_pixels,
        run_out=args.run_out,
        config={"model": args.model},
        rating_set=args.rating_set,
        run_code=args.run_code,
        device=args.device,
    )
    run = summary.pop("run")
    print(
        f"camouflaged {summary['photos']} photos into {args.out}; "
        + ", ".join(f"{k} {v}" for k, v in summary.items())
        + f" (run folder {run})"
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("camouflage", help="make a quality model call good photos bad, through JPEG re-compression")
    p.add_argument("--in", dest="input", required=True, help="photos: a folder, one file, or bundled:photos")
    p.add_argument("--out", required=True, help="folder for the camouflaged JPEG files")
    p.add_argument(
        "--method",
        choices=["pgd", "cw", "filter"],
        default="pgd",
        help="pgd (L2 budget), cw (Carlini-Wagner L2) or filter (visible tone curves); default pgd",
    )
    p.add_argument(
        "--model",
        default="brisque",
        help="brisque (default), koncept512:WEIGHTS.pth (the task's model, koniq-PyTorch port), or a "
        "TorchScript .pt / torch.export .pt2 file",
    )
    p.add_argument(
        "--input-range",
        type=finite_float,
        nargs=2,
        default=(0.0, 1.0),
        metavar=("LO", "HI"),
        help="pixel range a user model expects (KonCept512: -1 1)",
    )
    p.add_argument(
        "--output-range",
        type=finite_float,
        nargs=2,
        default=(0.0, 100.0),
        metavar=("LO", "HI"),
        help="score range of a user model, mapped onto 0-100",
    )
    p.add_argument("--threshold", type=finite_float, default=50.0, help="good quality above this score (default 50)")
    p.add_argument(
        "--quality",
        type=int_at_least(1, "a JPEG quality"),
        default=90,
        help="JPEG quality of the re-compression and of the output files (default 90)",
    )
    p.add_argument("--psnr", type=finite_float, default=40.0, help="pgd: L2 budget as a PSNR in dB (default 40)")
    p.add_argument("--steps", type=positive_int, default=60, help="pgd: gradient steps (default 60)")
    p.add_argument("--no-jpeg", action="store_true", help="optimise without the differentiable JPEG")
    p.add_argument("--batch", type=positive_int, default=4, help="photos of one size optimised together")
    p.add_argument("--max-pixels", type=positive_int, default=4096 * 4096, help="refuse larger photos")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any CamouflageSettings field")
    p.add_argument("--seed", type=seed, help="seed for the JPEG qualities drawn while optimising")
    add_device_option(p, "quality model and the optimisation")
    p.add_argument("--run-out", help="run folder")
    p.add_argument(
        "--rating-set",
        metavar="DIR",
        help="also export originals and outputs as an appeal rating set (1-5) for masquerade hitl serve",
    )
    p.add_argument(
        "--run-code",
        metavar="CODE",
        help="MediaEval Pixel Privacy submission: name files CODE_<original name>.jpg, zip them as CODE.zip in --out",
    )
    p.set_defaults(func=cmd_camouflage)
