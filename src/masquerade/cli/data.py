"""The ``data`` group: ``info``, ``fetch`` (checksum verified) and ``patches`` (public patch pools)."""

from __future__ import annotations

import argparse
from typing import Any

from masquerade.cli.common import command_group, positive_int, seed

__all__ = ["register"]


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

    r = patches(
        args.photos,
        args.out,
        n=args.n,
        size=(args.size_min, args.size_max),
        out_size=args.out_size,
        min_keypoints=args.min_keypoints,
        seed=args.seed,
        cache=not args.no_cache,
        run_out=args.run_out,
    )
    print(f"wrote {r['patches']} patches to {r['out']} (run folder {r['run']})")
    return 0


def register(sub: Any) -> None:
    dsub = command_group(sub, "data", "inspect, download and prepare data")
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
