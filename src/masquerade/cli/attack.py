"""``masquerade attack NAME``: every registered attack, its options built from its threat model and Settings.

The top-level parser only names the attacks (from the catalogue, no import); ``attack NAME ...`` then builds the
attack's own parser: one option per kind of knowledge its threat model names (required where it requires it), one
per simple Settings field, and ``--truth`` to score the result against the originals afterwards.
"""

from __future__ import annotations

import argparse
from typing import Any

from masquerade.cli.common import (
    Parser,
    add_device_option,
    add_settings_options,
    positive_int,
    seed,
    settings_from_args,
)
from masquerade.errors import InputError

__all__ = ["register", "attack_parser"]


def attack_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``masquerade attack NAME`` (imports the attack's module)."""
    from masquerade.contracts import Knowledge, uses_device
    from masquerade.registry import ATTACKS
    from masquerade.workflows.attack import SOURCES

    cls: Any = ATTACKS.get(name)
    tm = cls.threat_model
    desc = ATTACKS.describe().get(name, "")
    p = Parser(prog=f"masquerade attack {name}", description=f"{desc}. Threat model: {tm.describe()}.")
    given = p.add_argument_group("what the adversary is given (its threat model)")
    if Knowledge.GRADIENTS in tm.requires:
        given.add_argument(
            "--model-file", required=True, help="the shared model (.safetensors from train, search or snapshots)"
        )
        given.add_argument(
            "--data",
            required=True,
            help="the clients' private images (labelled); each of --images drawn images is one client update (batch 1)",
        )
        given.add_argument("--images", type=positive_int, default=8, help="images attacked (8)")
        given.add_argument("--policy", help="the clients' ATS policy (default none)")
        given.add_argument("--always", action="store_true", help="apply every sub-policy always (the published code)")
        given.add_argument("--no-labels", action="store_true", help="labels unknown: read them off the gradient (iDLG)")
        score = p.add_argument_group("scoring (never given to the attack)")
        score.add_argument("--classifier", help="a clean model file for model-based recognition (MR)")
        score.add_argument("--rating-set", action="store_true", help="export a HitL rating set into the run folder")
    else:
        for know in sorted(tm.requires | tm.optional, key=lambda k: k.value):
            for key, opt, text in SOURCES.get(know, ()):
                need = know in tm.requires
                given.add_argument(opt, dest=key, required=need, help=text + ("" if need else " (optional)"))
        score = p.add_argument_group("scoring (read after the attack, never given to it)")
        score.add_argument(
            "--truth",
            help="the originals: images to score reconstructions against (SSIM, PSNR, "
            "success = SSIM > 0.8), features (.npy) or labels (.npy) for feature "
            "attacks",
        )
    add_settings_options(p, cls.Settings, skip=("seed", "prior") if name != "instahide-challenge" else ("seed",))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other setting of the attack")
    p.add_argument("--seed", type=seed, help="the attacker's own randomness (recorded in the run folder)")
    if uses_device(cls):
        add_device_option(p, "attack's models")
    p.add_argument("--out", help=f"run folder (default runs/attack-{name}/<timestamp>)")
    return p


def cmd_attack(args: argparse.Namespace) -> int:
    from masquerade.registry import ATTACKS
    from masquerade.workflows.attack import attack

    if not args.name:
        print("usage: masquerade attack NAME [options]   (masquerade attack NAME --help for its options)\nattacks:")
        for name, desc in ATTACKS.describe().items():
            print(f"  {name:26s} {desc}")
        return 2
    if args.name not in ATTACKS:
        raise InputError(f"unknown attack {args.name!r}; available: {', '.join(ATTACKS.names())}")
    p = attack_parser(args.name)
    try:
        a = p.parse_args(args.rest)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    settings = settings_from_args(a)
    quiet = bool(args.quiet)
    if hasattr(a, "model_file") and hasattr(a, "images"):
        clients = {
            "model_file": a.model_file,
            "data": a.data,
            "images": a.images,
            "policy": a.policy,
            "always": a.always,
            "known_labels": not a.no_labels,
            "classifier": a.classifier,
            "rating_set": a.rating_set,
        }
        r = attack(
            args.name,
            settings=settings,
            clients=clients,
            seed=a.seed,
            out=a.out,
            quiet=quiet,
            device=getattr(a, "device", None),
        )
        mr = f", MR {r['mr']:.3f}" if "mr" in r else ""
        print(
            f"{args.name} on {r['images']} images (policy {r['policy']}): PSNR {r['psnr']:.2f} dB, "
            f"SSIM {r['ssim']:.3f}{mr} ({r['seconds']:.0f}s); run folder {r['run']}"
        )
        return 0
    from masquerade.workflows.attack import SOURCES

    keys = [key for entries in SOURCES.values() for key, _, _ in entries]
    sources = {k: getattr(a, k) for k in keys if getattr(a, k, None) is not None}
    r = attack(
        args.name,
        settings=settings,
        sources=sources,
        truth=a.truth,
        seed=a.seed,
        out=a.out,
        quiet=quiet,
        device=getattr(a, "device", None),
    )
    shown = {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    print(
        f"{args.name}: "
        + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
        + f"; run folder {r['run']}"
    )
    return 0


def register(sub: Any) -> None:
    from masquerade.catalogue import BUILTIN_ATTACKS

    p = sub.add_parser(
        "attack",
        help="run any attack (masquerade list names them; attack NAME --help)",
        description="Run an attack on protected data. Each attack takes exactly what its threat "
        "model names; `masquerade attack NAME --help` lists its options. Built in: "
        + ", ".join(sorted(BUILTIN_ATTACKS))
        + ".",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="the attack (masquerade list)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the attack's options")
    p.set_defaults(func=cmd_attack)
