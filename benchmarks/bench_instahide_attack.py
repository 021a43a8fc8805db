"""Break InstaHide Challenges on this CPU and score the recoveries.

For each T (encodings per private image per slot: the challenge's ``per_image``) a fresh challenge is made with the
official recipe (100 private CIFAR-10 test images, k = 6, public patches from the ImageNet sample) under a seed, the
attack runs on the challenge folder alone (public statistics from its own patches, colour learned on CIFAR-10
*training* images), and ``score`` grades it. Two more rows per T separate the stages:

- ``n given``: the attack told the number of private images (instead of estimating it per class);
- ``true pairing``: reconstruction from the true assignment of slots to images (read from the truth folder, so an
  analysis row, not an attack) -- the ceiling the clustering stage leaves.

    python benchmarks/bench_instahide_attack.py [--T 10,20,50] [--seed 2026] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from masquerade.attacks.instahide_challenge import (ChallengeAttackSettings, ColourMap, _public_energy,
                                                    attack_challenge, parse_slots, reconstruct_private)
from masquerade.challenge import baseline_recovery, make_challenge, public_pool, score_challenge
from masquerade.data import load_images

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PUBLISHED = [("Carlini et al. ver.1 (leaderboard)", "50", "0.90", "-", "2 GPU h + 2 CPU h, +10 GPU h training"),
             ("Carlini et al. ver.2 (leaderboard)", "50", "0.79", "-", "same")]


def true_pairing_row(ch: Path, truth: Path, att: Path, s: ChallengeAttackSettings) -> dict[str, float]:
    enc = np.load(ch / "encryption.npy")
    lab = np.load(ch / "label.npy")
    pairs = np.load(truth / "private_pairs.npy")
    plabels = np.load(truth / "private_labels.npy")
    slots = parse_slots(lab, len(enc))
    # order each encoding's true pair as the label's slots (slot 0 = larger coefficient)
    first_is_0 = plabels[pairs[:, 0]] == slots.c[:, 0]
    tie = slots.same | (plabels[pairs[:, 0]] == plabels[pairs[:, 1]])
    ordered = np.where(first_is_0[:, None] | tie[:, None], pairs, pairs[:, ::-1])
    with np.load(att / "stages" / "public.npz") as z:
        mean, var = torch.from_numpy(z["mean"]), torch.from_numpy(z["var"])
    energy = _public_energy(1 - slots.lam.sum(1), s.k, s.upper, s.dom)
    x, _ = reconstruct_private(enc, ordered, slots.lam, int(pairs.max()) + 1, mean, var, energy,
                               weights=(~slots.same).astype(np.float32))
    if (att / "stages" / "colour.npz").is_file():
        with np.load(att / "stages" / "colour.npz") as z:
            x = ColourMap(z["coef"])(x.reshape(-1, 32, 32, 3)).reshape(len(x), -1)
    imgs = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).reshape(-1, 32, 32, 3).numpy()
    return score_challenge(truth, imgs[pairs[:, 0]])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", default="10,20,50")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--n-private", type=int, default=100)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    private = load_images(DATA / "cifar10-test.npz")
    public = public_pool(DATA / "imagenet-sample", args.n_private * 4, size=32, rng=args.seed)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-ih-attack-"))
    try:
        for t in [int(v) for v in args.T.split(",")]:
            ch, truth = work / f"ch{t}", work / f"truth{t}"
            make_challenge(private, public, ch, truth, n_private=args.n_private, per_image=t, rng=args.seed + t)
            base = score_challenge(truth, baseline_recovery(np.load(ch / "encryption.npy")))
            rows.append({"T": t, "row": "|encoding| baseline", **_keep(base), "seconds": 0.0})
            for label, n in (("attack (n estimated)", None), ("attack (n given)", args.n_private)):
                att = work / f"att{t}-{'n' if n else 'est'}"
                s = ChallengeAttackSettings(n_private=n)
                hidden = truth.rename(work / f"hidden{t}")          # the attack runs with the truth folder absent
                t0 = time.perf_counter()
                res = attack_challenge(ch, att, public=DATA / "imagenet-sample",
                                       aux=DATA / "cifar10-train-20k.npz", settings=s, log=lambda m: None)
                wall = time.perf_counter() - t0
                hidden.rename(truth)
                sc = score_challenge(truth, att / "decryption.npy")
                rows.append({"T": t, "row": label, **_keep(sc), "seconds": round(wall, 1),
                             "images_found": res["images_found"], "stage_seconds": res["seconds"]})
                print(json.dumps(rows[-1]), flush=True)
            tp = true_pairing_row(ch, truth, att, s)
            rows.append({"T": t, "row": "true pairing (analysis)", **_keep(tp), "seconds": 0.0})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nInstaHide Challenge attack, {args.n_private} private CIFAR-10 test images, k = 6, seed {args.seed}, "
          f"2 CPU cores (success = Max_SSIM > 0.8)")
    print(f"{'row':36s} {'T':>3s} {'success':>8s} {'mean Max_SSIM':>14s} {'images':>7s} {'minutes':>8s}")
    for r in rows:
        print(f"{r['row']:36s} {r['T']:3d} {r['success_rate']:8.3f} {r['mean_max_ssim']:14.3f} "
              f"{r.get('images_found', '-')!s:>7s} {r['seconds'] / 60:8.2f}")
    print("published (the real challenge; GPU):")
    for name, t, ms, succ, cost in PUBLISHED:
        print(f"{name:36s} {t:>3s} {succ:>8s} {ms:>14s}   {cost}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _keep(sc: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in sc.items() if not hasattr(v, "shape")}


if __name__ == "__main__":
    sys.exit(main())
