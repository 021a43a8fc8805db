"""The ``challenge`` group: make, attack, prepare and score an InstaHide Challenge."""

from __future__ import annotations

import argparse
from typing import Any

from masquerade.cli.common import add_device_option, command_group, nonnegative_int, positive_int, seed
from masquerade.errors import InputError

__all__ = ["register"]


def cmd_make(args: argparse.Namespace) -> int:
    from masquerade.workflows.challenge import make

    s = make(
        args.private,
        args.public,
        out=args.out,
        truth=args.truth,
        split=args.split,
        n_private=args.n_private,
        per_image=args.per_image,
        k=args.k,
        seed=args.seed,
        run_out=args.run_out,
    )
    print(f"challenge: {s['encodings']} encodings in {args.out} (encryption.npy, label.npy); truth in {args.truth}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from masquerade.instahide.attack import ChallengeAttackSettings
    from masquerade.workflows.challenge import attack

    settings = ChallengeAttackSettings(
        n_private=args.n_private,
        use_labels=not args.no_labels,
        colour=not args.no_colour,
        seed=args.seed,
        rounds=args.rounds,
        prior=args.prior,
    )
    res = attack(args.dir, args.out, settings=settings, public=args.public, aux=args.aux, device=args.device)
    times = ", ".join(f"{k} {v:.1f}s" for k, v in res["seconds"].items())
    print(
        f"challenge attack: {res['encodings']} recoveries in {res['decryption']}; "
        f"{res.get('images_found', '?')} private images in {args.out}/private_images.png; {times}"
    )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from masquerade.instahide.prior import PriorSettings
    from masquerade.workflows.challenge import prepare

    try:
        passes = tuple(positive_int(v.strip()) for v in args.passes.split(","))
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"--passes: {exc} (a comma-separated list of T, e.g. 10,20,50)") from None
    settings = PriorSettings(passes=passes, challenges=args.challenges, steps=args.steps, seed=args.seed)
    rec = prepare(args.aux, args.out, public=args.public, settings=settings, log=print, device=args.device)
    print(
        f"challenge prior: {args.out} (sha256 {rec['sha256'][:16]}…; {rec['pairs']} training pairs, "
        f"{rec['simulation_seconds'] / 60:.0f} min simulating, {rec['training_seconds'] / 60:.0f} min training); "
        f"record in {rec['record']}"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from masquerade.workflows.challenge import score

    scores = score(args.truth, args.recovered, out=args.out)
    if args.json:
        print(scores["summary_json"])
    else:
        print(f"success rate (Max_SSIM > 0.8)  {scores['success_rate']:.4f}")
        print(f"mean Max_SSIM                  {scores['mean_max_ssim']:.4f}")
        print(f"mean Mean_SSIM                 {scores['mean_mean_ssim']:.4f}")
        print(f"mean Min_RMSE                  {scores['mean_min_rmse']:.4f}")
        print(f"mean Mean_RMSE                 {scores['mean_mean_rmse']:.4f}")
        print(f"private images recovered       {scores['private_recovered']} of {scores['private_images']}")
    return 0


def register(sub: Any) -> None:
    csub = command_group(sub, "challenge", "make, attack or score an InstaHide Challenge")
    p = csub.add_parser("make", help="make a challenge (official recipe)")
    p.add_argument("--private", required=True, help="labelled private images (e.g. a CIFAR-10 .npz)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="CIFAR archive split (test)")
    p.add_argument("--public", required=True, help="photos folder (patches are cut) or a ready patch .npz")
    p.add_argument("--out", required=True, help="challenge folder: encryption.npy, label.npy")
    p.add_argument("--truth", required=True, help="ground-truth folder (kept apart)")
    p.add_argument("--n-private", type=positive_int, default=100)
    p.add_argument("--per-image", type=positive_int, default=50)
    p.add_argument("--k", type=positive_int, default=6)
    p.add_argument("--seed", type=seed, help="seed (reproducible); default: OS randomness")
    p.add_argument("--run-out", help="run folder")
    p.set_defaults(func=cmd_make)
    p = csub.add_parser(
        "attack",
        help="recover the private images from a challenge's encodings alone "
        "(resumable; `masquerade attack instahide-challenge` runs it on arrays)",
    )
    p.add_argument("dir", help="challenge folder (encryption.npy, label.npy); the truth folder is never read")
    p.add_argument("--out", required=True, help="attack folder: decryption.npy, private_images.*, stages/ (resumes)")
    p.add_argument(
        "--public",
        help="public photos (folder) or patch .npz for the public pixel statistics (default: bundled:photos)",
    )
    p.add_argument(
        "--aux",
        help="labelled images disjoint from the private ones (.npz) to learn the colour "
        "correction on a simulated challenge",
    )
    p.add_argument(
        "--n-private",
        type=positive_int,
        help="number of private images if known (default: estimated per class from the spectrum)",
    )
    p.add_argument("--no-labels", action="store_true", help="ignore label.npy (coefficients and classes unknown)")
    p.add_argument("--no-colour", action="store_true", help="skip the learned colour correction")
    p.add_argument("--seed", type=seed, default=0, help="the attacker's own seed (clustering, simulation)")
    p.add_argument(
        "--rounds",
        type=nonnegative_int,
        default=8,
        help="reconstruct + reassign rounds after the clustering (default 8; 0 = clustering only)",
    )
    p.add_argument(
        "--prior",
        default="default",
        help="learned image prior: a .safetensors from `challenge prepare`, 'none', or 'default' (the "
        "weights shipped with the package)",
    )
    add_device_option(p, "learned prior")
    p.set_defaults(func=cmd_attack)
    p = csub.add_parser(
        "prepare",
        help="train the attack's image prior on challenges simulated from your own labelled images (offline, once)",
    )
    p.add_argument(
        "--aux", required=True, help="labelled images disjoint from any private set (e.g. CIFAR-10 training images)"
    )
    p.add_argument("--public", help="photos to cut public patches from (default: bundled:photos)")
    p.add_argument("--out", required=True, help="the prior's .safetensors (a .json record is written beside it)")
    p.add_argument("--passes", default="10,20,50", help="T of the simulated challenges (default 10,20,50)")
    p.add_argument("--challenges", type=positive_int, default=20, help="simulated challenges per T (default 20)")
    p.add_argument("--steps", type=positive_int, default=8000, help="training steps (default 8000)")
    p.add_argument("--seed", type=seed, default=0)
    add_device_option(p, "prior's training")
    p.set_defaults(func=cmd_prepare)
    p = csub.add_parser("score", help="score recoveries against the truth")
    p.add_argument("--truth", required=True)
    p.add_argument(
        "--recovered",
        required=True,
        help="an attack's output folder (its decryption.npy), a folder of i_recover.png, or an .npy E×H×W×C",
    )
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--out", help="run folder")
    p.set_defaults(func=cmd_score)
