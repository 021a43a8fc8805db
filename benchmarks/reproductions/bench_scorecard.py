"""The scorecard on CIFAR-10: ``masquerade evaluate`` over every scheme, as a user would run it, timed per setting.

It runs the command (a fresh process, as every CLI call is) on CIFAR-10 training images from the data folder, with
the InstaHide challenge setting's public patches cut from its ImageNet photos, then prints the summary as a Markdown
table (the strongest attack at each level, with SSIM, share found and MR) and each setting's wall time: its utility
cell's training plus its attack cells. ``--digits`` runs the same plan on the bundled digits, for the table beside it.

    python benchmarks/reproductions/bench_scorecard.py [--data DIR] [--out RUN] [--full] [--workers 2]
        [--schemes identity,instahide,disguise,ats,shufflebits] [--digits]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from _data import add_data_option, data_dir  # noqa: E402

ALL = "identity,instahide,disguise,ats,shufflebits"


def table(card: dict) -> list[str]:
    """The scorecard's summary: per setting, utility, then the strongest attack per level, and the wall time."""
    rows = card["rows"]
    levels = sorted({r["level"] for r in rows})
    settings: dict[str, dict] = {}
    for r in rows:
        s = settings.setdefault(
            r["setting"],
            {"scheme": r["scheme"], "utility": r["utility"], "best": {}, "cells": {}, "train_s": r["train_s"]},
        )
        s["cells"][r["cell"]] = r["cost_s"]
        b = s["best"].get(r["level"])
        if b is None or r["ssim"] > b["ssim"]:
            s["best"][r["level"]] = r
    head = ["scheme", "setting", "utility"] + [f"level {lv}: strongest attack" for lv in levels] + ["wall time"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in settings.items():
        cells = []
        for lv in levels:
            r = s["best"].get(lv)
            mr = f", MR {100 * r['mr']:.0f} %" if r is not None and isinstance(r.get("mr"), (int, float)) else ""
            cells.append(
                "—" if r is None else f"{r['attack']}: SSIM {r['ssim']:.2f}, {100 * r['success']:.0f} % found{mr}"
            )
        wall = s["train_s"] + sum(s["cells"].values())
        out.append(f"| {s['scheme']} | {name} | {s['utility']:.3f} | " + " | ".join(cells) + f" | {wall:.0f} s |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_option(ap, "cifar10-train-20k.npz and imagenet-sample/")
    ap.add_argument("--out", default=None, help="the evaluation folder (default: a new one under /tmp)")
    ap.add_argument("--full", action="store_true", help="the full plan, not --quick (hours)")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers (default 2: one per core here)")
    ap.add_argument("--schemes", default=ALL)
    ap.add_argument("--digits", action="store_true", help="the bundled digits instead of CIFAR-10")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "masquerade", "evaluate", "--schemes", args.schemes, "--seed", str(args.seed)]
    if not args.full:
        cmd.append("--quick")
    if args.workers > 1:
        cmd += ["--workers", str(args.workers)]
    if not args.digits:
        data = data_dir(args.data)
        data.require("cifar10-train-20k.npz", "imagenet-sample")
        cmd += ["--data", str(data / "cifar10-train-20k.npz"), "--public-photos", str(data / "imagenet-sample")]
    import tempfile

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="masquerade-scorecard-")) / "run"
    cmd += ["--out", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    card = json.loads((out / "scorecard.json").read_text())
    print(
        f"\n{'digits' if args.digits else 'CIFAR-10'} scorecard ({'full' if args.full else 'quick'} plan, seed "
        f"{args.seed}, {args.workers} worker(s)): {wall / 60:.1f} min in all (a cold process)\n"
    )
    print("\n".join(table(card)))
    for f in card.get("findings", []):
        print(f"\nfinding: {f['setting']}: {f['text']}")
    print(f"\nreport: {out / 'report.html'}")


if __name__ == "__main__":
    main()
