"""Break InstaHide Challenges on this CPU and score the recoveries: the curve over T, one table.

For each T (the challenge's ``per_image``) a fresh challenge is made with the official recipe (100 private
CIFAR-10 *test* images, k = 6, public patches from the ImageNet sample) under ``seed + T``, and the attack runs as a
user runs it: ``masquerade challenge attack`` in a fresh process (cold: imports, weights and all), on the challenge
folder alone -- the truth folder is moved away while it runs. Its wall time and peak memory (the child's maximum
resident set) are measured from outside. Rows per T:

- ``attack (n given)``: told the number of private images, as the real challenge publishes it;
- ``attack (n estimated)``: n estimated per class from the recipe and the spectrum;
- ``attack --no-labels``: label.npy withheld (classes and coefficients unknown), n given;
- ``attack, no prior``: without the learned image prior shipped in the package (colour correction learned on
  CIFAR-10 *training* images instead), n given -- what the prior adds;
- ``true pairing (analysis)``: the reconstruction (and prior) from the true assignment of slots to images, read
  from the truth folder -- not an attack, the ceiling that the grouping stage leaves.

The data folder (``--data DIR``, else ``$MASQUERADE_BENCH_DATA``, else ``<repo>/../shared/data``) holds
``cifar10-test.npz`` (the private images), ``cifar10-train-20k.npz`` (the attacker's auxiliary images) and
``imagenet-sample/`` (the public photos).

    python benchmarks/reproductions/bench_instahide_attack.py [--T 10,20,50] [--seed 2026] [--n-private 100]
        [--rows given,estimated,nolabels,noprior] [--data DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from masquerade.data import load_images, public_pool
from masquerade.instahide.attack import ChallengeAttackSettings, ColourMap
from masquerade.instahide.challenge import baseline_recovery, make_challenge, score_challenge
from masquerade.instahide.prior import ChallengePrior, default_prior
from masquerade.instahide.recipe import _public_energy, parse_slots
from masquerade.instahide.reconstruct import reconstruct_private

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from _data import DataDir, add_data_option, data_dir  # noqa: E402

NEEDS = ("cifar10-test.npz", "cifar10-train-20k.npz", "imagenet-sample")
PUBLISHED = [
    ("Carlini et al. v1 (real challenge)", "50", "-", "0.90", "GPU: ~12 h in all, incl. training"),
    ("Carlini et al. v2 (stronger challenge)", "50", "-", "0.79", "GPU"),
]
ROWS = {
    "given": ("attack (n given)", ["--n-private", "{n}"]),
    "estimated": ("attack (n estimated)", []),
    "nolabels": ("attack --no-labels (n given)", ["--n-private", "{n}", "--no-labels"]),
    "noprior": ("attack, no prior (n given)", ["--n-private", "{n}", "--prior", "none"]),
}


def run_attack(ch: Path, out: Path, data: DataDir, extra: list[str]) -> dict[str, float]:
    """The CLI in a fresh process; wall seconds and peak resident memory (GiB) of that process."""
    cmd = [
        sys.executable,
        "-m",
        "masquerade",
        "challenge",
        "attack",
        str(ch),
        "--out",
        str(out),
        "--public",
        str(data / "imagenet-sample"),
        "--aux",
        str(data / "cifar10-train-20k.npz"),
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output[-3000:]}")
    return {"seconds": round(wall, 1), "peak_gib": round(usage.ru_maxrss / 2**20, 2)}


def true_pairing_row(
    ch: Path, truth: Path, att: Path, s: ChallengeAttackSettings, prior: ChallengePrior | None
) -> dict[str, float]:
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
    weights = (~slots.same).astype(np.float32)
    n = int(pairs.max()) + 1
    x, _ = reconstruct_private(enc, ordered, slots.lam, n, mean, var, energy, weights=weights)
    if prior is not None:
        x = prior(x, ordered, slots.lam, weights)
    elif (att / "stages" / "colour.npz").is_file():
        with np.load(att / "stages" / "colour.npz") as z:
            x = ColourMap(z["coef"])(x.reshape(-1, 32, 32, 3)).reshape(len(x), -1)
    imgs = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).reshape(-1, 32, 32, 3).numpy()
    return score_challenge(truth, imgs[pairs[:, 0]])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", default="10,20,50")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--n-private", type=int, default=100)
    ap.add_argument(
        "--rows", default="given,estimated,nolabels,noprior", help=f"attack rows per T, from {','.join(ROWS)}"
    )
    add_data_option(ap, "cifar10-test.npz, cifar10-train-20k.npz and imagenet-sample/")
    ap.add_argument("--json")
    args = ap.parse_args()
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := [r for r in wanted if r not in ROWS]:
        ap.error(f"--rows: unknown {unknown}; choose from {list(ROWS)}")
    data = data_dir(args.data)
    data.require(*NEEDS)
    private = load_images(data / "cifar10-test.npz")
    public = public_pool(data / "imagenet-sample", args.n_private * 4, size=32, rng=args.seed)
    prior = default_prior()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-ih-attack-"))
    try:
        for t in [int(v) for v in args.T.split(",")]:
            ch, truth = work / f"ch{t}", work / f"truth{t}"
            make_challenge(private, public, ch, truth, n_private=args.n_private, per_image=t, rng=args.seed + t)
            base = score_challenge(truth, baseline_recovery(np.load(ch / "encryption.npy")))
            rows.append({"T": t, "row": "|encoding| baseline", **_keep(base), "seconds": 0.0})
            att = None
            for name in wanted:
                label, extra = ROWS[name]
                att = work / f"att{t}-{name}"
                hidden = truth.rename(work / f"hidden{t}")  # the attack runs with the truth folder absent
                try:
                    cost = run_attack(ch, att, data, [a.format(n=args.n_private) for a in extra])
                finally:
                    hidden.rename(truth)
                sc = score_challenge(truth, att)
                info = json.loads((att / "attack.json").read_text())
                rows.append(
                    {
                        "T": t,
                        "row": label,
                        **_keep(sc),
                        **cost,
                        "images_found": info.get("images_found"),
                        "stage_seconds": info.get("seconds"),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
            if att is not None:
                tp = true_pairing_row(ch, truth, att, ChallengeAttackSettings(), prior)
                rows.append({"T": t, "row": "true pairing (analysis)", **_keep(tp), "seconds": 0.0})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pr = f"prior {prior.fingerprint}" if prior is not None else "no prior shipped"
    print(
        f"\nInstaHide Challenge attack, {args.n_private} private CIFAR-10 test images, k = 6, seed {args.seed}+T, "
        f"2 CPU cores, {pr}; success = share of images with Max_SSIM > 0.8; time and memory of the cold CLI call"
    )
    print(
        f"{'row':40s} {'T':>3s} {'success':>8s} {'mean Max_SSIM':>14s} {'images':>7s} {'minutes':>8s} {'peak GiB':>9s}"
    )
    for r in rows:
        print(
            f"{r['row']:40s} {r['T']:3d} {r['success_rate']:8.3f} {r['mean_max_ssim']:14.3f} "
            f"{r.get('images_found') or '-'!s:>7s} {r['seconds'] / 60:8.2f} {r.get('peak_gib', '-')!s:>9s}"
        )
    print("published:")
    for name, t, succ, ms, cost in PUBLISHED:
        print(f"{name:40s} {t:>3s} {succ:>8s} {ms:>14s}   {cost}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _keep(sc: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in sc.items() if not hasattr(v, "shape")}


if __name__ == "__main__":
    sys.exit(main())
