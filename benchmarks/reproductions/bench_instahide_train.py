"""Utility of InstaHide: train the same model for the same epochs on CIFAR-10 (the 20,000 training images of
``cifar10-train-20k.npz``) clean and protected, and test on the 10,000 clean test images (``cifar10-test.npz``).

Rows: vanilla / inside k=4 / cross k=4 / cross k=6 (2 private + 4 public, as the challenge), public patches cut from
``imagenet-sample/`` (SIFT-filtered). Pixels are normalised with the official code's mean/std before mixing.
Reported: clean test accuracy (as the official code evaluates), the paper's inference mode (softmax averaged over
T=10 encodings of each test image), time, and the accuracy ratio against vanilla measured in the same run. The files
come from the data folder (``--data DIR``, else ``$MASQUERADE_BENCH_DATA``, else ``<repo>/../shared/data``).

    python benchmarks/reproductions/bench_instahide_train.py [--epochs 15] [--rows vanilla,inside4,cross4,cross6]
        [--model fastresnet] [--patches 10000] [--data DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from _data import add_data_option, data_dir  # noqa: E402

ROWS = {
    "vanilla": ("identity", {}),
    "inside4": ("instahide", {"k": 4, "mode": "inside", "pixel_scale": "normalize"}),
    "cross4": ("instahide", {"k": 4, "mode": "cross", "private_per_mix": 2, "pixel_scale": "normalize"}),
    "cross6": ("instahide", {"k": 6, "mode": "cross", "private_per_mix": 2, "pixel_scale": "normalize"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--model", default="fastresnet")
    ap.add_argument("--patches", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    add_data_option(ap, "cifar10-train-20k.npz, cifar10-test.npz and (for the cross rows) imagenet-sample/")
    ap.add_argument("--json", help="also write the table as JSON here")
    args = ap.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := [r for r in rows if r not in ROWS]:
        ap.error(f"--rows: unknown {unknown}; choose from {list(ROWS)}")
    data = data_dir(args.data)
    data.require(
        "cifar10-train-20k.npz",
        "cifar10-test.npz",
        *(["imagenet-sample"] if any(r.startswith("cross") for r in rows) else []),
    )
    from masquerade import create_scheme
    from masquerade.data import extract_patches, load_images
    from masquerade.training import TrainSettings, bf16_supported, train

    train_set = load_images(data / "cifar10-train-20k.npz")
    test_set = load_images(data / "cifar10-test.npz")
    public = None
    if any(r.startswith("cross") for r in rows):
        t = time.perf_counter()
        public = extract_patches(data / "imagenet-sample", args.patches, rng=args.seed)
        print(f"public pool: {len(public)} SIFT-filtered patches in {time.perf_counter() - t:.0f}s", flush=True)
    settings = TrainSettings(model=args.model, epochs=args.epochs, infer_encodings=10)
    print(
        f"model {args.model}, {args.epochs} epochs, batch {settings.batch_size}, lr {settings.lr} (one-cycle), "
        f"bf16 {bf16_supported()}, {len(train_set)} train / {len(test_set)} test images",
        flush=True,
    )
    results = []
    for row in rows:
        name, kw = ROWS[row]
        scheme = create_scheme(name, **kw)
        t = time.perf_counter()
        r = train(
            train_set,
            test_set,
            scheme=scheme,
            public=public if "cross" in row else None,
            settings=settings if name != "identity" else TrainSettings(model=args.model, epochs=args.epochs),
            seed=args.seed,
            progress=False,
            on_epoch=lambda rec, row=row: print(
                f"  {row} epoch {rec['epoch']}: test acc {rec['test_acc']:.4f} ({rec['seconds']:.0f}s)", flush=True
            ),
        )
        results.append(
            {
                "row": row,
                "clean_acc": r["test_acc"],
                "encoded_acc": r.get("test_acc_encoded"),
                "minutes": (time.perf_counter() - t) / 60,
            }
        )
    base = next((x["clean_acc"] for x in results if x["row"] == "vanilla"), None)
    print()
    print(f"{'setting':10s} {'clean test acc':>15s} {'T=10 encoded':>13s} {'vs vanilla':>11s} {'minutes':>8s}")
    for x in results:
        enc = "-" if x["encoded_acc"] is None else f"{x['encoded_acc']:.4f}"
        ratio = "-" if base is None else f"{x['clean_acc'] / base:.3f}"
        print(f"{x['row']:10s} {x['clean_acc']:15.4f} {enc:>13s} {ratio:>11s} {x['minutes']:8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
