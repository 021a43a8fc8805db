"""Quality camouflage against BRISQUE-torch on ImageNet photos (about 500×375, near the task's 512×384).

The task's protocol on good-quality photos (BRISQUE-torch score > 50): success = score < 50 after the real JPEG-90
re-compression (Pillow), mean score drop, PSNR/SSIM as the appeal proxy, and photos per minute on this machine.
Rows: PGD with the differentiable JPEG (the main route; goal: >= 95 % success at mean PSNR >= 40 dB, 100 photos in
<= 15 min), PGD without JPEG awareness, CW-L2 (binary search over c) without and with it, the visible tone-curve
filter, and the speed of one step against a randomly initialised KonCept512. The photos are ``imagenet-sample/`` of
the data folder (``--data DIR``, else ``$MASQUERADE_BENCH_DATA``, else ``<repo>/../shared/data``).

    python benchmarks/reproductions/bench_camouflage.py [--photos 100] [--others 12] [--seed 0] [--data DIR]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from _data import add_data_option, data_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=100, help="good-quality photos for the main route")
    ap.add_argument("--others", type=int, default=12, help="photos for the other rows (they are slower or visible)")
    ap.add_argument("--seed", type=int, default=0)
    add_data_option(ap, "imagenet-sample/")
    ap.add_argument("--json")
    args = ap.parse_args()
    data = data_dir(args.data)
    data.require("imagenet-sample")
    folder = data / "imagenet-sample"
    from masquerade.data import load_photos
    from masquerade.quality.camouflage import CamouflageSettings, camouflage_photos
    from masquerade.quality.models import BrisqueQuality

    photos, names = load_photos(folder, channels=3)
    order = np.random.default_rng(args.seed).permutation(len(photos))
    model = BrisqueQuality()
    good: list[int] = []
    t = time.perf_counter()
    with torch.no_grad():
        for i in order:  # draw photos at random until enough are good
            x = torch.from_numpy(np.array(photos[i])).permute(2, 0, 1)[None].float() / 255
            if float(model.score(x)) > model.threshold:
                good.append(int(i))
            if len(good) >= args.photos:
                break
    print(
        f"{len(good)} good-quality photos (BRISQUE-torch score > 50) drawn from {folder} in "
        f"{time.perf_counter() - t:.0f}s; sizes: "
        + ", ".join(
            f"{w}×{h}: {n}"
            for (h, w), n in sorted(
                {
                    p.shape[:2]: sum(1 for j in good if photos[j].shape[:2] == p.shape[:2])
                    for p in (photos[j] for j in good)
                }.items(),
                key=lambda kv: -kv[1],
            )[:4]
        ),
        flush=True,
    )
    rows_cfg = [
        ("PGD L2 40 dB + differentiable JPEG", CamouflageSettings(method="pgd"), args.photos),
        ("PGD L2 40 dB, no JPEG awareness", CamouflageSettings(method="pgd", jpeg=False), args.others),
        (
            "CW-L2 (5 × 1,000, lr 5e-3, c0 1e-2), no JPEG awareness",
            CamouflageSettings(method="cw", jpeg=False),
            min(args.others, 4),
        ),
        ("CW-L2 (5 × 1,000, lr 5e-3, c0 1e-2) + JPEG", CamouflageSettings(method="cw"), min(args.others, 4)),
        ("visible tone curves + JPEG", CamouflageSettings(method="filter"), args.others),
    ]
    table = []
    import tempfile

    for label, settings, n in rows_cfg:
        idx = good[:n]
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            rows, _ = camouflage_photos(
                model, [photos[i] for i in idx], [names[i] for i in idx], out, settings, rng=args.seed, progress=False
            )
        minutes = (time.perf_counter() - t) / 60
        row = {
            "method": label,
            "photos": len(rows),
            "success after JPEG-90": round(float(np.mean([r["success"] for r in rows])), 4),
            "mean score drop": round(
                float(np.mean([r["score after JPEG"] - r["camouflaged score after JPEG"] for r in rows])), 2
            ),
            "mean PSNR": round(float(np.mean([r["PSNR"] for r in rows])), 2),
            "min PSNR": round(float(np.min([r["PSNR"] for r in rows])), 2),
            "mean SSIM": round(float(np.mean([r["SSIM"] for r in rows])), 4),
            "photos per minute": round(len(rows) / minutes, 2),
            "minutes": round(minutes, 1),
        }
        if n == args.photos and settings.method == "pgd" and settings.jpeg:
            met = (
                row["success after JPEG-90"] >= 0.95
                and row["mean PSNR"] >= 40
                and minutes * 100 / max(1, len(rows)) <= 15
            )
            row["goal (>= 95 %, >= 40 dB, 100 photos <= 15 min)"] = "met" if met else "NOT met"
        table.append(row)
        print("  " + " | ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    # KonCept512 (the task's model), randomly initialised: architecture and speed only
    from masquerade.quality.koncept import KonCept512Quality

    kq = KonCept512Quality()
    x = torch.from_numpy(np.stack([photos[i] for i in good[:2] if photos[i].shape == photos[good[0]].shape]))
    x = x.permute(0, 3, 1, 2).float() / 255
    x.requires_grad_(True)
    kq.score(x).sum().backward()
    t = time.perf_counter()
    kq.score(x).sum().backward()
    step = (time.perf_counter() - t) / len(x)
    row = {
        "method": "KonCept512 (random weights): one forward+backward",
        "photos": len(x),
        "seconds per photo-step": round(step, 2),
        "PGD 60 steps, photos per minute": round(60 / (60 * step), 2),
    }  # 60 s over 60 steps of `step` s
    table.append(row)
    print("  " + " | ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
