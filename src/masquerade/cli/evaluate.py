"""``evaluate``: the privacy-utility-cost scorecard of every scheme across threat levels."""

from __future__ import annotations

import argparse
from typing import Any

from masquerade.cli.common import add_device_option, nonnegative_int, positive_int, seed

__all__ = ["register"]


def _levels(text: str) -> tuple[int, ...]:
    try:
        out = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        out = ()
    if not out or any(v not in (1, 2, 3) for v in out):
        raise argparse.ArgumentTypeError(f"expected levels among 1,2,3 (comma-separated), got {text!r}")
    return out


def _names(text: str) -> tuple[str, ...]:
    out = tuple(v.strip() for v in text.split(",") if v.strip())
    if not out:
        raise argparse.ArgumentTypeError("expected comma-separated scheme names")
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from masquerade.workflows.evaluate import EvaluateSettings, evaluate

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "data": args.data,
            "size": args.size,
            "schemes": args.schemes,
            "levels": args.levels,
            "seed": args.seed,
            "targets": args.targets,
            "pairs": args.pairs,
            "auxiliary": args.auxiliary,
            "test": args.test,
            "train": args.train,
            "epochs": args.epochs,
            "model": args.model,
            "threads": args.threads,
            "inversion_iterations": args.inversion_iterations,
            "inversion_images": args.inversion_images,
            "codebook_decoder_steps": args.codebook_decoder_steps,
            "inversion_model": args.inversion_model,
            "augment": True if args.augment else None,
            "public_photos": args.public_photos,
            "device": args.device,
        }.items()
        if v is not None
    }
    s = EvaluateSettings.for_quick(**overrides) if args.quick else EvaluateSettings(**overrides)
    evaluate(s, args.out, workers=args.workers, ray_address=args.ray, verbose=not args.quiet)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="privacy, utility and cost of every scheme across threat levels (scorecard + report)",
        description="Protect the data with every scheme setting, run every attack that applies at each threat "
        "level (1: protected data only; 2: + the data distribution; 3: + known pairs), train a model on "
        "each protected training set, and write RUN/scorecard.json and RUN/report.html. Rerunning "
        "with the same --out resumes an interrupted evaluation.",
    )
    p.add_argument(
        "--data",
        default=None,
        help="labelled images: a folder of class sub-folders, an .npz (images, labels), the CIFAR-10 "
        "archive, or bundled:NAME (default bundled:mnist)",
    )
    p.add_argument(
        "--public-photos",
        default=None,
        metavar="PATH",
        help="photos the InstaHide challenge setting cuts its public patches from: a folder, or an .npz "
        "of ready patches (default bundled:photos; the challenge used ImageNet)",
    )
    p.add_argument("--out", required=True, help="the evaluation folder (created; an unfinished one resumes)")
    p.add_argument(
        "--schemes",
        type=_names,
        default=None,
        help="comma-separated: identity,instahide,disguise,ats,shufflebits, or a scheme another "
        "package registers (`masquerade list`; scored at its defaults) (default all; --quick: the "
        "first three)",
    )
    p.add_argument("--levels", type=_levels, default=None, help="threat levels, e.g. 1,2,3 (default all)")
    p.add_argument("--quick", action="store_true", help="a few minutes on 2 cores: fewer images and epochs")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--workers", type=positive_int, default=1, help="run cells as tasks on local Ray workers")
    group.add_argument("--ray", default=None, metavar="ADDRESS", help="run cells on the Ray cluster at ADDRESS")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads per cell (default 1; part of the plan: the numbers depend on it)",
    )
    p.add_argument("--seed", type=seed, default=None, help="seed of the split, keys and attacks (default 0)")
    add_device_option(p, "trainings and model-based attacks")
    p.add_argument("--size", type=positive_int, default=None, help="resize images to N×N pixels (default: as loaded)")
    p.add_argument("--targets", type=positive_int, default=None, help="private images scored")
    p.add_argument("--pairs", type=nonnegative_int, default=None, help="known pairs at level 3")
    p.add_argument("--auxiliary", type=positive_int, default=None, help="auxiliary images at level 2")
    p.add_argument("--train", type=positive_int, default=None, help="training images for utility")
    p.add_argument("--test", type=positive_int, default=None, help="clean test images for utility")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs for utility")
    p.add_argument("--model", default=None, help="classifier for utility (default fastresnet)")
    p.add_argument("--augment", action="store_true", help="random crops and flips in training (not for digits)")
    p.add_argument(
        "--inversion-iterations",
        type=positive_int,
        default=None,
        help="gradient inversion iterations against ATS (default 4800, ATS's configuration)",
    )
    p.add_argument(
        "--inversion-images",
        type=positive_int,
        default=None,
        help="targets attacked by gradient inversion, one client update each (default 8)",
    )
    p.add_argument(
        "--inversion-model",
        default=None,
        help="the federated model the server inverts gradients of, at initialisation (default convnet16)",
    )
    p.add_argument(
        "--codebook-decoder-steps",
        type=nonnegative_int,
        default=None,
        help="training steps of the network that fills what the AES-ECB codebook lacks (default 300; "
        "--quick and 0: the nearest auxiliary images instead)",
    )
    p.set_defaults(func=cmd_evaluate)
