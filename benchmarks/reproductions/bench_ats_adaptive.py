"""ats-adaptive against the policy-blind inversion, on a model trained a few epochs with the clients' policy.

For each policy and each set of CIFAR-10 test images: train a ConvNet16 on CIFAR-10 training images with the policy
as augmentation (always, as the published code applies it), then invert each image's client update (batch 1, labels
known) with Inverting Gradients and with ``ats-adaptive`` from the same client updates (the same policy draws);
print PSNR against the private images, on all pixels and on the pixels the draws keep. CIFAR-10 comes from the data
folder (``--data DIR``, else ``$MASQUERADE_BENCH_DATA``, else ``<repo>/../shared/data``). About 3 minutes per
(policy, set) on 2 cores with the defaults.

    python benchmarks/reproductions/bench_ats_adaptive.py [--epochs 2] [--iterations 300] [--train 5000]
        [--sets 1000,2000,3000,4000:7 5000,6000,7000,8000:11] [--policies 3-1-7 3-1-7+43-18-18] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the shared helpers
from _data import add_data_option, data_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_option(ap, "cifar10-train-20k.npz and cifar10-test.npz")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--train", type=int, default=5000, help="training images (a random subset)")
    ap.add_argument(
        "--sets",
        nargs="+",
        default=["1000,2000,3000,4000:7", "5000,6000,7000,8000:11"],
        help="test image indices and the attack's seed, as I,J,K:SEED",
    )
    ap.add_argument("--policies", nargs="+", default=["3-1-7", "3-1-7+43-18-18"])
    args = ap.parse_args()
    data = data_dir(args.data)
    data.require("cifar10-train-20k.npz", "cifar10-test.npz")
    from masquerade.ats.policies import ATSPolicy
    from masquerade.ats.privacy import attack_model
    from masquerade.data import load_images
    from masquerade.training import TrainSettings, train

    tr = load_images(data / "cifar10-train-20k.npz")
    te = load_images(data / "cifar10-test.npz")
    tr = tr.select(np.random.default_rng(0).permutation(len(tr))[: args.train])
    held = te.select(np.arange(1000))
    print("| policy | images | test acc | blind (kept) | adaptive (kept) | gain | seconds |")
    print("|---|---|---|---|---|---|---|")
    for policy in args.policies:
        settings = TrainSettings(model="convnet16", epochs=args.epochs, batch_size=128, lr=0.05, precision="fp32")
        t0 = time.perf_counter()
        r = train(tr, held, scheme=ATSPolicy(policy=policy, always=True), settings=settings, seed=1, progress=False)
        trained_s = time.perf_counter() - t0
        for spec in args.sets:
            idx_text, seed = spec.split(":")
            idx = [int(v) for v in idx_text.split(",")]
            x = te.select(np.array(idx)).to_tensor()
            y = torch.from_numpy(te.labels[idx].astype(np.int64))
            t1 = time.perf_counter()
            out = {}
            for atk in ("inverting_gradients", "ats-adaptive"):
                res = attack_model(
                    r["classifier"],
                    x,
                    y,
                    policy=policy,
                    always=True,
                    attack=atk,
                    attack_settings={"iterations": args.iterations},
                    rng=int(seed),
                    progress=False,
                )
                out[atk] = (float(res["psnr"].mean()), float(np.nanmean(res["psnr_kept"].numpy())))
            b, a = out["inverting_gradients"], out["ats-adaptive"]
            print(
                f"| {policy} | {idx_text} (seed {seed}) | {r['test_acc']:.3f} | {b[0]:.2f} dB ({b[1]:.2f}) | "
                f"{a[0]:.2f} dB ({a[1]:.2f}) | {a[0] - b[0]:+.2f} dB | {time.perf_counter() - t1 + trained_s:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
