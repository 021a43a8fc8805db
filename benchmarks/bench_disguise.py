"""DisguisedNets: speed, utility, and attacks at every threat level, in one run.

Speed: AES disguising of 20,000 CIFAR images against encrypting the same number of bytes in one AES-CTR call of
``cryptography`` (goal: at most 3×); RMT disguising (a batched matmul) against one copy.
Utility: the same model and epoch budget as the InstaHide table (train and test disguised with one dataset key),
on CIFAR-10 (``../shared/data``) and the bundled digits.
Attacks on CIFAR-10 test images: Level 3 (known pairs: RMT least squares vs the number of pairs, with and without
noise; ECB codebook and CTR), Level 2 (auxiliary clean images: moment matching), Level 1 (model-based recognition:
the clean-trained model classifying disguised images).

    python benchmarks/bench_disguise.py [--epochs 15] [--skip-utility] [--instahide-json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _timing import median_time

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TRANSFORMS = {
    "clean": None,
    "perm only": {"transform": "none"},
    "RMT": {"transform": "rmt"},
    "RMT noise 0.05": {"transform": "rmt", "noise": 0.05},
    "AES-ECB": {"transform": "aes", "aes_mode": "ecb"},
    "AES-CTR": {"transform": "aes", "aes_mode": "ctr"},
}


def med(fn, repeat: int = 5) -> float:
    return median_time(fn, repeat)[0]


def speed(x: torch.Tensor) -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    import masquerade as mq

    aes = mq.create_scheme("disguise", transform="aes")
    key = aes.keygen(0, 0)
    aes.encode(x, key)
    t_aes = med(lambda: aes.encode(x, key))
    data = np.round(x.numpy() * 255).astype(np.uint8).tobytes()
    ctr = Cipher(algorithms.AES(bytes(16)), modes.CTR(bytes(16)))
    t_ref = med(lambda: ctr.encryptor().update(data))
    rmt = mq.create_scheme("disguise")
    rk = rmt.keygen(0, 0)
    t_rmt = med(lambda: rmt.encode(x, rk))
    t_copy = med(lambda: x.clone())
    print(f"speed ({len(x)} images, {len(data) / 1e6:.0f} MB): AES-ECB disguise {t_aes:.3f}s vs one AES-CTR call "
          f"{t_ref:.3f}s -> {t_aes / t_ref:.2f}x (goal <= 3x: {'met' if t_aes / t_ref <= 3 else 'NOT met'}); "
          f"RMT disguise {t_rmt:.3f}s ({t_rmt / t_copy:.1f}x a copy)", flush=True)


def attacks(x_test: torch.Tensor, y_test: torch.Tensor, aux: torch.Tensor, classifier, view) -> list[dict]:
    import masquerade as mq
    from masquerade.data import to_uint8
    from masquerade.metrics import psnr, ssim
    from masquerade.registry import run_attack
    from masquerade.schemes.disguise import to_blocks
    from masquerade.train import evaluate

    rows: list[dict] = []
    # the CIFAR files are sorted by class: draw pairs and victims at random (fixed seed), never by position
    order = np.random.default_rng(0).permutation(len(x_test))
    pairs_pool, victims, y_victims = x_test[order[:100]], x_test[order[100:1100]], y_test[order[100:1100]]

    def quality(rec: torch.Tensor) -> tuple[float, float]:
        q = to_uint8
        return float(psnr(q(rec), q(victims), data_range=255).mean()), float(ssim(q(rec), q(victims),
                                                                                   data_range=255).mean())

    for name, cfg in TRANSFORMS.items():
        if cfg is None:
            continue
        s = mq.create_scheme("disguise", **cfg)
        key = s.keygen(1100 if cfg.get("aes_mode") == "ctr" else 0, 0)
        both = torch.cat([pairs_pool, victims])
        z = s.encode(both, key, rng=1)
        zp, zv = z[:100], z[100:]
        p0, s0 = quality(zv)
        rows.append({"level": "1 (ciphertext only)", "transform": name, "attack": "none: disguised image as is",
                     "PSNR": round(p0, 2), "SSIM": round(s0, 3)})
        if classifier is not None:
            acc, _ = evaluate(classifier, view.clean(zv.clamp(0, 1)), y_victims, batch=500, bf16=False)
            rows[-1]["MR accuracy"] = round(acc, 4)
        if cfg["transform"] in ("rmt", "none"):
            attack = mq.create_attack("disguise-known-plaintext")
            for m in (1, 2, 4, 6, 10, 20):
                r = run_attack(attack, encodings=zv, known_pairs=(pairs_pool[:m], zp[:m]))
                p, q = quality(r["recovered"])
                row = {"level": "3 (known pairs)", "transform": name, "attack": f"least squares, {m} pairs",
                       "PSNR": round(p, 2), "SSIM": round(q, 3),
                       "perm recovered": round(float((r["perm"] == key.perm).mean()), 3)}
                if classifier is not None:
                    row["MR accuracy"] = round(evaluate(classifier, view.clean(r["recovered"]), y_victims,
                                                        batch=500)[0], 4)
                rows.append(row)
            if cfg["transform"] == "rmt":
                unperm = mq.create_scheme("disguise", **cfg, permute=False)
                uk = unperm.keygen(0, 0)
                r = run_attack(mq.create_attack("disguise-moments"), encodings=unperm.encode(victims, uk, rng=2),
                               auxiliary=aux)
                p, q = quality(r["recovered"])
                rows.append({"level": "2 (distribution)", "transform": name + ", no permutation",
                             "attack": "moment matching, 5,000 aux images", "PSNR": round(p, 2), "SSIM": round(q, 3)})
                r = run_attack(mq.create_attack("disguise-moments"), encodings=zv, auxiliary=aux)
                p, q = quality(r["recovered"])
                tb = to_blocks(victims.numpy(), 4)[:, :, key.perm]
                rb = to_blocks(r["recovered"].numpy(), 4)
                block_psnr = float(10 * np.log10(1 / ((tb - rb) ** 2).mean()))
                rows.append({"level": "2 (distribution)", "transform": name,
                             "attack": f"moment matching (blocks left permuted; block-wise PSNR {block_psnr:.1f} dB)",
                             "PSNR": round(p, 2), "SSIM": round(q, 3)})
        else:
            r = run_attack(mq.create_attack("aes-ecb-codebook"), encodings=zv, known_pairs=(pairs_pool, zp))
            p, q = quality(r["recovered"])
            rows.append({"level": "3 (known pairs)", "transform": name, "attack": "ECB codebook, 100 pairs",
                         "PSNR": round(p, 2), "SSIM": round(q, 3), "blocks decoded": round(r["decoded_share"], 4),
                         "perm recovered": round(float((r["perm"] == key.perm).mean()), 3)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--model", default="fastresnet")
    ap.add_argument("--skip-utility", action="store_true", help="attacks and speed only (no CIFAR training)")
    ap.add_argument("--instahide-json", help="rows from bench_instahide_train.py --json, for one table")
    ap.add_argument("--json", help="write all tables here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (SHARED / "cifar10-test.npz").is_file():
        sys.exit(f"needs {SHARED}/cifar10-test.npz and cifar10-train-20k.npz")
    import masquerade as mq
    from masquerade.data import load_images
    from masquerade.train import TrainSettings, _View, train

    train_set = load_images(SHARED / "cifar10-train-20k.npz")
    test_set = load_images(SHARED / "cifar10-test.npz")
    x_test = test_set.to_tensor()
    speed(train_set.to_tensor())

    utility: list[dict] = []
    classifier, view = None, None
    if not args.skip_utility:
        digits = load_images("bundled:digits", size=16).to_rgb()
        d_train, d_test = digits.split(0.8, rng=0)
        for name, cfg in TRANSFORMS.items():
            scheme = mq.create_scheme("identity") if cfg is None else mq.create_scheme("disguise", **cfg)
            t = time.perf_counter()
            r = train(train_set, test_set, scheme=scheme, settings=TrainSettings(model=args.model, epochs=args.epochs),
                      seed=args.seed, progress=False,
                      on_epoch=lambda rec, name=name: print(f"  {name} epoch {rec['epoch']}: {rec['test_acc']:.4f} "
                                                            f"({rec['seconds']:.0f}s)", flush=True))
            minutes = (time.perf_counter() - t) / 60
            rd = train(d_train, d_test, scheme=scheme, seed=args.seed, progress=False,
                       settings=TrainSettings(model=args.model, epochs=args.epochs, batch_size=64, lr=0.05))
            utility.append({"training data": name, "CIFAR-10 test acc": round(r["test_acc"], 4),
                            "digits test acc": round(rd["test_acc"], 4), "CIFAR minutes": round(minutes, 1)})
            if cfg is None:
                classifier = r["model_state"]
                view = _View(mq.create_scheme("identity"), train_set.to_tensor())
        if args.instahide_json and Path(args.instahide_json).is_file():
            for row in json.loads(Path(args.instahide_json).read_text()):
                if row["row"] != "vanilla":
                    utility.append({"training data": f"InstaHide {row['row']}",
                                    "CIFAR-10 test acc": round(row["clean_acc"], 4), "digits test acc": "-",
                                    "CIFAR minutes": round(row["minutes"], 1)})
        print("\nutility (same model and epochs; disguised rows are trained and tested with one dataset key)")
        for u in utility:
            print("  " + " | ".join(f"{k} {v}" for k, v in u.items()))
    aux = train_set.to_tensor()[np.random.default_rng(1).choice(len(train_set), 5000, replace=False)]
    rows = attacks(x_test, test_set.labels_tensor(), aux, classifier, view)
    print("\nattacks on 1,000 random CIFAR-10 test images (PSNR/SSIM of the recovery against the original)")
    for r in rows:
        print("  " + " | ".join(f"{k} {v}" for k, v in r.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"utility": utility, "attacks": rows}, indent=2))


if __name__ == "__main__":
    main()
