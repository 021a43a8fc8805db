"""``protect`` and ``reveal``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from masquerade.cli.common import parse_sets, positive_int, seed

__all__ = ["register", "add_scheme_options", "scheme_settings"]


def add_scheme_options(p: argparse.ArgumentParser) -> None:
    """Scheme settings shared by protect and train (read back by :func:`scheme_settings`)."""
    p.add_argument("--public", help="public photos folder or patch .npz (cross-dataset InstaHide)")
    p.add_argument(
        "--public-patches",
        type=positive_int,
        default=10000,
        help="at most this many patches to cut from photos (default 10000)",
    )
    p.add_argument("--k", type=positive_int, help="InstaHide: images per mix")
    p.add_argument("--mode", choices=["inside", "cross"], help="InstaHide: inside or cross dataset")
    p.add_argument("--private-per-mix", type=positive_int, help="InstaHide cross mode: private images per mix")
    p.add_argument("--pixel-scale", choices=["[-1,1]", "[0,1]", "normalize"], help="InstaHide pixel scale")
    p.add_argument(
        "--scope",
        choices=["fixed", "vector", "element"],
        help="ShuffleBits: one key for everything, per vector (default) or per number",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any scheme setting")


def scheme_settings(args: argparse.Namespace) -> dict[str, object]:
    settings = parse_sets(getattr(args, "set", None))
    for name in ("k", "mode", "private_per_mix", "pixel_scale", "scope"):
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    return settings


def cmd_protect(args: argparse.Namespace) -> int:
    from masquerade.workflows.protect import protect

    r = protect(
        args.input,
        args.scheme,
        out=args.out,
        key=args.key,
        settings=scheme_settings(args),
        public=args.public,
        public_patches=args.public_patches,
        seed=args.seed,
        force=args.force,
        run_out=args.run_out,
        allow_nonfinite=args.allow_nonfinite,
    )
    what = "encrypted feature vectors" if r["kind"] == "features" else "encodings"
    print(f"wrote {r['count']} {what} to {r['out']}; key {r['key']} (fingerprint {r['fingerprint']})")
    return 0


def cmd_reveal(args: argparse.Namespace) -> int:
    from masquerade.workflows.protect import reveal

    r = reveal(args.input, args.scheme, key=args.key, out=args.out, public=args.public, force=args.force)
    what = "decrypted {n} feature vectors" if r["kind"] == "features" else "revealed {n} images"
    print(f"{what.format(n=r['count'])} to {r['out']} (key fingerprint {r['fingerprint']})")
    if r.get("pinned", 1.0) < 1.0:
        print(
            f"masquerade: warning: {1 - r['pinned']:.1%} of the encodings are not what the revealed images "
            "encode to: the mixing is too ill-conditioned to pin every pixel to its grey level (some are a level "
            "or two off)",
            file=sys.stderr,
        )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("protect", help="protect a data set with a scheme; writes encodings and a key file")
    p.add_argument("scheme", help="scheme name (masquerade list)")
    p.add_argument(
        "--in",
        dest="input",
        required=True,
        help="images: folder, .npz, CIFAR archive or bundled:NAME; features (shufflebits): .npy/.npz",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output folder for encodings.npy (and labels.npy), or features.npy for feature schemes",
    )
    p.add_argument("--key", required=True, help="key file to write (.safetensors), kept apart from --out")
    add_scheme_options(p)
    p.add_argument("--seed", type=seed, help="seed for a reproducible experiment (default: OS randomness)")
    p.add_argument("--force", action="store_true", help="replace an existing key file and output folder")
    p.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="features: encrypt NaN and infinite values as the bit patterns they are (refused otherwise)",
    )
    p.add_argument("--run-out", help="run folder")
    p.set_defaults(func=cmd_protect)

    p = sub.add_parser("reveal", help="decode encodings with their key (invertible schemes)")
    p.add_argument("scheme")
    p.add_argument("--in", dest="input", required=True, help="encodings.npy (features.npy) written by protect")
    p.add_argument("--key", required=True, help="the key file protect wrote")
    p.add_argument("--public", help="the public patch .npz (cross-mode InstaHide; default: beside the key)")
    p.add_argument("--out", required=True, help="output .npz of uint8 images (.npy of features)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out; decode even with a key other than the one the encodings' manifest names",
    )
    p.set_defaults(func=cmd_reveal)
