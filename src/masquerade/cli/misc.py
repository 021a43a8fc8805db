"""``demo``, ``report``, ``list``, ``metrics``, ``key show`` and the ``data`` group."""

from __future__ import annotations

import argparse
from typing import Any

from masquerade.cli.common import missing_action, positive_int, seed

__all__ = ["register"]


def cmd_demo(args: argparse.Namespace) -> int:
    from masquerade.workflows.demo import run_demo

    run_demo(out=args.out, seed=args.seed)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from masquerade.report import build_report
    from masquerade.report.scorecard import build_scorecard_report

    if len(args.runs) == 1 and (Path(args.runs[0]) / "scorecard.json").is_file():
        path = build_scorecard_report(args.runs[0], args.out)     # an evaluation folder: its scorecard's report
    else:
        path = build_report(args.runs, args.out)
    print(f"report written to {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from masquerade.data.bundled import list_bundled
    from masquerade.registry import ATTACKS, SCHEMES

    print("schemes:")
    for name, desc in SCHEMES.describe().items():
        print(f"  {name:26s} {desc}")
    print("attacks (masquerade attack NAME --help):")
    for name, desc in ATTACKS.describe().items():
        print(f"  {name:26s} {desc}")
    print("bundled data (load with bundled:NAME):")
    for name, src in list_bundled().items():
        print(f"  {name:26s} {src.holds}")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    import numpy as np

    from masquerade.data import load_images

    ds = load_images(args.source, split=args.split)
    print(repr(ds))
    if ds.labels is not None:
        counts = np.bincount(ds.labels, minlength=ds.num_classes)
        names = ds.classes or tuple(str(i) for i in range(ds.num_classes))
        print("per class: " + ", ".join(f"{n}={c}" for n, c in zip(names, counts)))
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from masquerade.data import fetch_dataset

    folder = fetch_dataset(args.name, args.root, url=args.url, md5=args.md5)
    print(f"{args.name} is ready in {folder}")
    return 0


def cmd_data_patches(args: argparse.Namespace) -> int:
    from masquerade.workflows.data import patches

    r = patches(args.photos, args.out, n=args.n, size=(args.size_min, args.size_max), out_size=args.out_size,
                min_keypoints=args.min_keypoints, seed=args.seed, cache=not args.no_cache, run_out=args.run_out)
    print(f"wrote {r['patches']} patches to {r['out']} (run folder {r['run']})")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from masquerade.workflows.data import compare

    result: dict[str, Any] = compare(args.a, args.b, gaussian=args.gaussian, out=args.out)
    for k, v in result.items():
        print(f"{k:16s} {v:.6g}" if isinstance(v, float) else f"{k:16s} {v}")
    return 0


def cmd_key_show(args: argparse.Namespace) -> int:
    from masquerade.keys import load_key

    key = load_key(args.keyfile)
    print(f"scheme      {key.scheme}")
    print(f"fingerprint {key.fingerprint}")
    print(f"key         {key!r}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="offline tour on bundled data; writes an HTML report")
    p.add_argument("--out", help="run folder (default runs/demo/<timestamp>)")
    p.add_argument("--seed", type=seed, default=0, help="seed for a reproducible demo (default 0)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="build an HTML report from run folders")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", help="HTML file (default: report.html in the run folder)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("list", help="list schemes, attacks and bundled data")
    p.set_defaults(func=cmd_list)

    data = sub.add_parser("data", help="inspect, download and prepare data")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda a: missing_action(data))
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
    p.add_argument("--n", type=positive_int, required=True, help="number of patches")
    p.add_argument("--size-min", type=positive_int, default=64, help="smallest crop side in pixels (64)")
    p.add_argument("--size-max", type=positive_int, default=160, help="largest crop side in pixels (160)")
    p.add_argument("--out-size", type=positive_int, default=32, help="patch side after resizing (32)")
    p.add_argument("--min-keypoints", type=int, default=40, help="keep crops with more SIFT keypoints than this")
    p.add_argument("--seed", type=seed, help="seed (reproducible and cached); default: OS randomness")
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
    key.set_defaults(func=lambda a: missing_action(key))
    p = ksub.add_parser("show", help="scheme and fingerprint of a key file")
    p.add_argument("keyfile")
    p.set_defaults(func=cmd_key_show)
