"""Inside-dataset InstaHide against ``instahide-inside``: the issue's setting, beside the true-grouping ceiling.

100 private CIFAR-10 *test* images (10 a class, drawn with ``--seed``), standardised with their own mean and
deviation (the training code's inside setting), ``--passes`` one-time keys (T encodings per image), the encodings
shuffled, their mixed labels released. Each attack row is the command a user runs, in a fresh process (cold):

    masquerade attack instahide-inside --encodings E.npy [--labels L.npy] [--aux AUX.npz] --truth T.npz --out RUN

with 2,000 CIFAR-10 *training* images as the auxiliary set where a row uses them, and n estimated unless a row says
"n told". The ceiling is :func:`reconstruct_given_grouping` with the key's own grouping, scored the same way
(best match, success = SSIM > 0.8).

    python benchmarks/reproductions/bench_inside.py [--data DIR] [--seed 2026] [--passes 50] [--ks 2,4]
        [--unlabelled]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from _data import add_data_option, data_dir  # noqa: E402


def release(images: np.ndarray, labels: np.ndarray, k: int, passes: int, seed: int) -> dict:
    import torch

    import masquerade as mq

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean = tuple(float(v) for v in x.mean((0, 2, 3)))
    std = tuple(float(v) for v in x.std((0, 2, 3)))
    s = mq.create_scheme("instahide", k=k, mode="inside", pixel_scale="normalize", mean=mean, std=std)
    g = np.random.default_rng(seed)
    encs, labs, parts, lams = [], [], [], []
    for _ in range(passes):
        key = s.keygen(len(x), rng=g, shape=tuple(x.shape[1:]))
        encs.append(s.encode(x, key))
        labs.append(s.mix_labels(labels, key, 10).numpy())
        parts.append(key.partners)
        lams.append(key.lam)
    order = g.permutation(len(x) * passes)
    return {
        "x": x,
        "mean": mean,
        "std": std,
        "enc": torch.cat(encs)[order],
        "labels": np.concatenate(labs)[order],
        "partners": np.concatenate(parts)[order],
        "lam": np.concatenate(lams)[order],
    }


def ceiling(rel: dict) -> tuple[dict, float]:
    import torch

    from masquerade.instahide.inside import reconstruct_given_grouping
    from masquerade.workflows.attack import score_reconstructions

    t = time.perf_counter()
    r = reconstruct_given_grouping(rel["enc"], rel["partners"], rel["lam"], n_images=len(rel["x"]))
    scale = torch.tensor(rel["std"])[None, :, None, None]
    shift = torch.tensor(rel["mean"])[None, :, None, None]
    best = max(
        (
            score_reconstructions((sign * r.images * scale + shift).clamp(0, 1), rel["x"], aligned=False)
            for sign in (1, -1)
        ),
        key=lambda m: m["ssim"],
    )
    return best, time.perf_counter() - t


def attack(folder: Path, rel: dict, k: int, *, labels: bool, aux: Path | None, n_told: bool) -> dict:
    enc = folder / "encodings.npy"
    np.save(enc, rel["enc"].permute(0, 2, 3, 1).numpy())
    np.save(folder / "labels.npy", rel["labels"])
    truth = folder / "truth.npz"
    np.savez(truth, images=(rel["x"].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    out = folder / f"run-{k}-{labels}-{aux is not None}-{n_told}"
    cmd = [
        sys.executable,
        "-m",
        "masquerade",
        "--quiet",
        "attack",
        "instahide-inside",
        "--encodings",
        str(enc),
        "--k",
        str(k),
        "--mean",
        ",".join(f"{v:.6f}" for v in rel["mean"]),
        "--std",
        ",".join(f"{v:.6f}" for v in rel["std"]),
        "--truth",
        str(truth),
        "--out",
        str(out),
    ]
    if labels:
        cmd += ["--labels", str(folder / "labels.npy")]
    if aux is not None:
        cmd += ["--aux", str(aux)]
    if n_told:
        cmd += ["--n-private", str(len(rel["x"]))]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    m = json.loads((out / "metrics.json").read_text())
    m["wall"] = time.perf_counter() - t
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_option(ap, "cifar10-test.npz and cifar10-train-20k.npz")
    ap.add_argument("--seed", type=int, default=2026, help="draws the private images and the keys")
    ap.add_argument("--passes", type=int, default=50, help="encodings per image (T)")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--ks", default="2,4")
    ap.add_argument("--unlabelled", action="store_true", help="add the rows without labels (n told; slow)")
    args = ap.parse_args()
    data = data_dir(args.data)
    data.require("cifar10-test.npz", "cifar10-train-20k.npz")
    test = np.load(data.path / "cifar10-test.npz")
    g = np.random.default_rng(args.seed)
    pick = np.concatenate(
        [g.choice(np.flatnonzero(test["labels"] == c), args.per_class, replace=False) for c in range(10)]
    )
    images, labels = test["images"][pick], test["labels"][pick].astype(np.int64)
    train = np.load(data.path / "cifar10-train-20k.npz")
    aux_pick = g.choice(len(train["images"]), 2000, replace=False)
    rows = ["| k | T | given | found | mean SSIM | seconds (cold, CLI) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="bench-inside-") as tmp:
        folder = Path(tmp)
        aux = folder / "aux.npz"
        np.savez(aux, images=train["images"][aux_pick], labels=train["labels"][aux_pick])
        for k in (int(v) for v in args.ks.split(",")):
            rel = release(images, labels, k, args.passes, args.seed + k)
            plans = [("encodings + labels", True, None, False), ("encodings + labels + 2,000 aux", True, aux, False)]
            if args.unlabelled:
                plans.append(("encodings only (n told)", False, None, True))
            for name, lab, ax, told in plans:
                m = attack(folder, rel, k, labels=lab, aux=ax, n_told=told)
                rows.append(
                    f"| {k} | {args.passes} | {name} | {100 * m['success']:.0f} % | {m['ssim']:.3f} | {m['wall']:.0f} |"
                )
                print(rows[-1], flush=True)
            best, sec = ceiling(rel)
            rows.append(
                f"| {k} | {args.passes} | true grouping (ceiling) | {100 * best['success']:.0f} % | "
                f"{best['ssim']:.3f} | {sec:.0f} (warm) |"
            )
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
