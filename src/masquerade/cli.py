"""The ``masquerade`` command line.

Errors are one line on stderr naming what is wrong and where: exit code 2 for bad usage or input, 1 for other
failures, 130 when interrupted. ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from ._version import __version__
from .errors import InputError, MasqueradeError

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"a seed is a non-negative integer, got {v}")
    return v


# -- commands ------------------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, seed=args.seed)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    path = build_report(args.runs, args.out)
    print(f"report written to {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .data import list_bundled
    from .registry import ATTACKS, SCHEMES

    print("schemes:")
    for name, desc in SCHEMES.describe().items():
        print(f"  {name:20s} {desc}")
    print("attacks:")
    attacks = ATTACKS.describe()
    for name, desc in attacks.items():
        print(f"  {name:20s} {desc}")
    if not attacks:
        print("  (none yet)")
    print("bundled data (load with bundled:NAME):")
    for name, src in list_bundled().items():
        print(f"  {name:20s} {src.holds}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from .data import load_images

    ds = load_images(args.source, split=args.split)
    print(repr(ds))
    if ds.labels is not None:
        import numpy as np

        counts = np.bincount(ds.labels, minlength=ds.num_classes)
        names = ds.classes or tuple(str(i) for i in range(ds.num_classes))
        print("per class: " + ", ".join(f"{n}={c}" for n, c in zip(names, counts)))
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from .data import fetch_dataset

    folder = fetch_dataset(args.name, args.root, url=args.url, md5=args.md5)
    print(f"{args.name} is ready in {folder}")
    return 0


def cmd_data_patches(args: argparse.Namespace) -> int:
    from .data import extract_patches
    from .fileio import save_npz
    from .runs import start_run

    if args.size_min > args.size_max:
        raise InputError(f"--size-min {args.size_min} is larger than --size-max {args.size_max}")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise InputError(f"{out}: patches are written as .npz")
    with start_run("data-patches", out=args.run_out) as run:
        run.write_config(vars(args) | {"func": None}, seed=args.seed)
        patches = extract_patches(args.photos, args.n, (args.size_min, args.size_max), out_size=args.out_size,
                                  min_keypoints=args.min_keypoints, rng=args.seed, cache=not args.no_cache)
        import numpy as np

        save_npz(out, images=patches.images, names=np.array(patches.names))
        run.add_metrics(patches=len(patches), out=str(out))
        run.save_grid("patches", patches.images[:64], ncol=16, scale=2, caption="first 64 SIFT-filtered patches")
        run.log(f"wrote {len(patches)} patches to {out}")
    print(f"wrote {len(patches)} patches to {out} (run folder {run.path})")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from .data import load_images
    from .metrics import psnr, rmse, ssim
    from .runs import start_run

    a = load_images(args.a)
    b = load_images(args.b)
    if a.images.shape != b.images.shape:
        raise InputError(f"{args.a} holds {a.images.shape} and {args.b} holds {b.images.shape}; they must match")
    import torch

    ta = torch.from_numpy(a.images).permute(0, 3, 1, 2)
    tb = torch.from_numpy(b.images).permute(0, 3, 1, 2)
    s = ssim(ta, tb, data_range=255, gaussian_weights=args.gaussian)
    p = psnr(ta, tb, data_range=255)
    r = rmse(ta, tb, data_range=255)
    finite = p[torch.isfinite(p)]
    result = {"pairs": len(a), "ssim_mean": float(s.mean()), "ssim_min": float(s.min()),
              "psnr_mean_db": float(finite.mean()) if len(finite) else float("inf"),
              "identical_pairs": int((~torch.isfinite(p)).sum()), "rmse_mean": float(r.mean())}
    with start_run("metrics", out=args.out) as run:
        run.write_config({"a": args.a, "b": args.b, "gaussian": args.gaussian})
        run.add_metrics(**result)
    for k, v in result.items():
        print(f"{k:16s} {v:.6g}" if isinstance(v, float) else f"{k:16s} {v}")
    return 0


def cmd_key_show(args: argparse.Namespace) -> int:
    from .keys import load_key

    key = load_key(args.keyfile)
    print(f"scheme      {key.scheme}")
    print(f"fingerprint {key.fingerprint}")
    print(f"key         {key!r}")
    return 0


# -- parser --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="masquerade",
        description="Protect images and features, attack the protections, score privacy and utility.")
    parser.add_argument("--version", action="version", version=f"masquerade {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="offline tour on bundled data; writes an HTML report")
    p.add_argument("--out", help="run folder (default runs/demo/<timestamp>)")
    p.add_argument("--seed", type=_seed, default=0, help="seed for a reproducible demo (default 0)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="build an HTML report from run folders")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", help="HTML file (default: report.html in the run folder)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("list", help="list schemes, attacks and bundled data")
    p.set_defaults(func=cmd_list)

    data = sub.add_parser("data", help="inspect, download and prepare data")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda a: _missing_action(data))
    p = dsub.add_parser("info", help="load a data source and summarise it")
    p.add_argument("source", help="folder, image, .npz, CIFAR archive or bundled:NAME")
    p.add_argument("--split", default="train", choices=["train", "test"], help="CIFAR split")
    p.set_defaults(func=cmd_data_info)
    p = dsub.add_parser("fetch", help="download a data set (checksum verified)")
    p.add_argument("name", choices=["cifar10", "cifar100"])
    p.add_argument("--root", help="folder to keep it in (default ~/.cache/masquerade/datasets)")
    p.add_argument("--url", help="a mirror of the official archive")
    p.add_argument("--md5", help="expected MD5 (defaults to the published one)")
    p.set_defaults(func=cmd_data_fetch)
    p = dsub.add_parser("patches", help="cut a SIFT-filtered public patch pool from photos")
    p.add_argument("--from", dest="photos", required=True, help="folder of photos or bundled:photos")
    p.add_argument("--out", required=True, help="output .npz (images, names)")
    p.add_argument("--n", type=_positive_int, required=True, help="number of patches")
    p.add_argument("--size-min", type=_positive_int, default=64, help="smallest crop side in pixels (64)")
    p.add_argument("--size-max", type=_positive_int, default=160, help="largest crop side in pixels (160)")
    p.add_argument("--out-size", type=_positive_int, default=32, help="patch side after resizing (32)")
    p.add_argument("--min-keypoints", type=int, default=40, help="keep crops with more SIFT keypoints than this")
    p.add_argument("--seed", type=_seed, help="seed (reproducible and cached); default: OS randomness")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the patch cache")
    p.add_argument("--run-out", help="run folder (default runs/data-patches/<timestamp>)")
    p.set_defaults(func=cmd_data_patches)

    p = sub.add_parser("metrics", help="SSIM / PSNR / RMSE between two image sets of equal shape")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--gaussian", action="store_true", help="Gaussian-weighted SSIM window")
    p.add_argument("--out", help="run folder")
    p.set_defaults(func=cmd_metrics)

    key = sub.add_parser("key", help="inspect key files (never prints key material)")
    ksub = key.add_subparsers(dest="key_command", metavar="ACTION")
    key.set_defaults(func=lambda a: _missing_action(key))
    p = ksub.add_parser("show", help="scheme and fingerprint of a key file")
    p.add_argument("keyfile")
    p.set_defaults(func=cmd_key_show)
    return parser


def _missing_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from .progress import set_quiet

    set_quiet(args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("masquerade: interrupted", file=sys.stderr)
        return 130
    except MasqueradeError as exc:
        if args.debug:
            raise
        print(f"masquerade: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a clean message
        if args.debug:
            raise
        print(f"masquerade: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
