"""DisguisedNets: speed, utility, and attacks at every threat level, in one run.

Speed: AES disguising of 20,000 CIFAR images against encrypting the same number of bytes in one AES-CTR call of
``cryptography`` (goal: at most 3×); RMT disguising (a batched matmul) against one copy.
Utility: the same model and epoch budget as the InstaHide table (train and test disguised with one dataset key),
on CIFAR-10 and the bundled digits.
Attacks on CIFAR-10 test images: Level 3 (known pairs: RMT least squares vs the number of pairs, with and without
noise; ECB codebook and CTR), Level 2 (auxiliary clean images: moment matching, and the alignment attack that
recovers the permutation and every matrix), Level 1 (model-based recognition: the clean-trained model classifying
disguised images).
CIFAR-10 (and ``imagenet-sample/`` for the InstaHide cross row, skipped without it) come from the data folder
(``--data DIR``, else ``$MASQUERADE_BENCH_DATA``, else ``<repo>/../shared/data``).

    python benchmarks/reproductions/bench_disguise.py [--epochs 15] [--skip-utility] [--instahide-json FILE]
        [--data DIR] [--json FILE]
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
from _timing import median_time  # noqa: E402

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

    data = np.round(x.numpy() * 255).astype(np.uint8).tobytes()
    ctr = Cipher(algorithms.AES(bytes(16)), modes.CTR(bytes(16)))
    times = {}
    for mode in ("ecb", "ctr"):
        aes = mq.create_scheme("disguise", transform="aes", aes_mode=mode)
        key = aes.keygen(len(x) if mode == "ctr" else 0, rng=0)
        for _ in range(2):  # the first calls pay for the process growing its heap (page faults), not for the cipher
            aes.encode(x, key)
            ctr.encryptor().update(data)
        times[mode] = med(lambda aes=aes, key=key: aes.encode(x, key))
    t_ref = med(lambda: ctr.encryptor().update(data))
    rmt = mq.create_scheme("disguise")
    rk = rmt.keygen(0, rng=0)
    t_rmt = med(lambda: rmt.encode(x, rk))
    t_copy = med(lambda: x.clone())
    ratio = times["ecb"] / t_ref
    print(
        f"speed ({len(x)} images, {len(data) / 1e6:.0f} MB): AES-ECB disguise {times['ecb']:.3f}s vs one AES-CTR "
        f"call {t_ref:.3f}s -> {ratio:.2f}x (goal <= 3x: {'met' if ratio <= 3 else 'NOT met'}); AES-CTR disguise "
        f"{times['ctr']:.3f}s ({times['ctr'] / t_ref:.2f}x); RMT disguise {t_rmt:.3f}s "
        f"({t_rmt / t_copy:.1f}x a copy)",
        flush=True,
    )


def attacks(
    x_test: torch.Tensor, y_test: torch.Tensor, aux: torch.Tensor, classifier, view, public: torch.Tensor | None = None
) -> list[dict]:
    import masquerade as mq
    from masquerade.data import to_uint8
    from masquerade.disguise.scheme import to_blocks
    from masquerade.metrics import psnr, ssim
    from masquerade.registry import run_attack
    from masquerade.training import accuracy

    rows: list[dict] = []
    # the CIFAR files are sorted by class: draw pairs and victims at random (fixed seed), never by position
    order = np.random.default_rng(0).permutation(len(x_test))
    pairs_pool, victims, y_victims = x_test[order[:100]], x_test[order[100:1100]], y_test[order[100:1100]]

    def quality(rec: torch.Tensor) -> tuple[float, float]:
        q = to_uint8
        return float(psnr(q(rec), q(victims), data_range=255).mean()), float(
            ssim(q(rec), q(victims), data_range=255).mean()
        )

    for name, cfg in TRANSFORMS.items():
        if cfg is None:
            continue
        s = mq.create_scheme("disguise", **cfg)
        both = torch.cat([pairs_pool, victims])
        key = s.keygen(len(both) if cfg.get("aes_mode") == "ctr" else 0, rng=0)
        z = s.encode(both, key, rng=1)
        zp, zv = z[:100], z[100:]
        p0, s0 = quality(zv)
        rows.append(
            {
                "level": "1 (ciphertext only)",
                "transform": name,
                "attack": "none: disguised image as is",
                "PSNR": round(p0, 2),
                "SSIM": round(s0, 3),
            }
        )
        if classifier is not None:
            acc, _ = accuracy(classifier, view.clean(zv.clamp(0, 1)), y_victims, batch=500, bf16=False)
            rows[-1]["MR accuracy"] = round(acc, 4)
        if cfg["transform"] in ("rmt", "none"):
            attack = mq.create_attack("disguise-known-plaintext")
            for m in (1, 2, 4, 6, 10, 20):
                r = run_attack(attack, encodings=zv, known_pairs=(pairs_pool[:m], zp[:m]))
                p, q = quality(r.reconstructions)
                row = {
                    "level": "3 (known pairs)",
                    "transform": name,
                    "attack": f"least squares, {m} pairs",
                    "PSNR": round(p, 2),
                    "SSIM": round(q, 3),
                    "perm recovered": round(float((r.recovered["perm"] == key.perm).mean()), 3),
                }
                if classifier is not None:
                    row["MR accuracy"] = round(
                        accuracy(classifier, view.clean(r.reconstructions), y_victims, batch=500)[0], 4
                    )
                rows.append(row)
            if cfg["transform"] == "rmt":
                unperm = mq.create_scheme("disguise", **cfg, permute=False)
                uk = unperm.keygen(0, rng=0)
                r = run_attack(
                    mq.create_attack("disguise-moments"), encodings=unperm.encode(victims, uk, rng=2), auxiliary=aux
                )
                p, q = quality(r.reconstructions)
                rows.append(
                    {
                        "level": "2 (distribution)",
                        "transform": name + ", no permutation",
                        "attack": f"moment matching, {len(aux):,} aux images",
                        "PSNR": round(p, 2),
                        "SSIM": round(q, 3),
                    }
                )
                r = run_attack(mq.create_attack("disguise-moments"), encodings=zv, auxiliary=aux)
                p, q = quality(r.reconstructions)
                tb = to_blocks(victims.numpy(), 4)[:, :, key.perm]
                rb = to_blocks(r.reconstructions.numpy(), 4)
                block_psnr = float(10 * np.log10(1 / ((tb - rb) ** 2).mean()))
                rows.append(
                    {
                        "level": "2 (distribution)",
                        "transform": name,
                        "attack": f"moment matching (blocks left permuted; block-wise PSNR {block_psnr:.1f} dB)",
                        "PSNR": round(p, 2),
                        "SSIM": round(q, 3),
                    }
                )
            # the strongest level-2 attack: permutation and matrices aligned to the auxiliary images' whole
            # second-order structure, from the statistics of every disguised image the server holds
            t0 = time.perf_counter()
            r = run_attack(
                mq.create_attack("disguise-alignment", transform=cfg["transform"]), encodings=z, auxiliary=aux
            )
            seconds = time.perf_counter() - t0
            p, q = quality(r.reconstructions[100:])
            row = {
                "level": "2 (distribution)",
                "transform": name,
                "attack": f"alignment, {len(z):,} disguised + {len(aux):,} aux images ({seconds:.1f} s)",
                "PSNR": round(p, 2),
                "SSIM": round(q, 3),
                "perm recovered": round(float((r.recovered["perm"] == key.perm).mean()), 3),
            }
            if classifier is not None:
                row["MR accuracy"] = round(
                    accuracy(classifier, view.clean(r.reconstructions[100:]), y_victims, batch=500)[0], 4
                )
            rows.append(row)
        else:
            r = run_attack(mq.create_attack("aes-ecb-codebook"), encodings=zv, known_pairs=(pairs_pool, zp))
            p, q = quality(r.reconstructions)
            rows.append(
                {
                    "level": "3 (known pairs)",
                    "transform": name,
                    "attack": "ECB codebook, 100 pairs",
                    "PSNR": round(p, 2),
                    "SSIM": round(q, 3),
                    "blocks decoded": round(r.metrics["decoded_share"], 4),
                    "perm recovered": round(float((r.recovered["perm"] == key.perm).mean()), 3),
                }
            )
    rows += instahide_level1(victims, y_victims, public, classifier, view)
    return rows


INSTAHIDE = {
    "InstaHide inside4": {"k": 4, "mode": "inside"},
    "InstaHide cross6": {"k": 6, "mode": "cross", "private_per_mix": 2},
}


def instahide_level1(
    victims: torch.Tensor, y_victims: torch.Tensor, public: torch.Tensor | None, classifier, view
) -> list[dict]:
    """Level 1 against InstaHide: the encoding of each victim (it is column 0 of its own mix), seen as an image
    (|encoding| rescaled to [0, 1] per image), against the victim; MR = the clean model on that view."""
    import masquerade as mq
    from masquerade.data import to_uint8
    from masquerade.metrics import psnr, ssim
    from masquerade.training import accuracy

    rows = []
    for name, cfg in INSTAHIDE.items():
        if cfg["mode"] == "cross" and public is None:
            continue
        s = mq.create_scheme("instahide", **cfg)
        pool = public if cfg["mode"] == "cross" else None
        key = s.keygen(len(victims), rng=0, shape=tuple(victims.shape[1:]), pool_size=0 if pool is None else len(pool))
        z = s.encode(victims, key, public=pool).abs()
        lo, hi = z.amin(dim=(1, 2, 3), keepdim=True), z.amax(dim=(1, 2, 3), keepdim=True)
        seen = (z - lo) / (hi - lo).clamp_min(1e-8)
        q = to_uint8
        row = {
            "level": "1 (ciphertext only)",
            "transform": name,
            "attack": "none: |encoding| as an image",
            "PSNR": round(float(psnr(q(seen), q(victims), data_range=255).mean()), 2),
            "SSIM": round(float(ssim(q(seen), q(victims), data_range=255).mean()), 3),
        }
        if classifier is not None:
            row["MR accuracy"] = round(accuracy(classifier, view.clean(seen), y_victims, batch=500)[0], 4)
        rows.append(row)
    return rows


def _find(rows: list[dict], transform: str, level: str, attack: str = "") -> dict | None:
    return next(
        (
            r
            for r in rows
            if r["transform"] == transform and r["level"].startswith(level) and r["attack"].startswith(attack)
        ),
        None,
    )


def combined(utility: list[dict], rows: list[dict]) -> list[dict]:
    """One row per protection: utility beside the best attack we have at each threat level."""

    def fmt(r: dict | None, extra: str = "") -> str:
        if r is None:
            return "-"
        out = f"{r['SSIM']:.3f} / {r['PSNR']:.1f} dB"
        return out + (f" ({extra})" if extra else "")

    table = []
    acc = {u["training data"]: u for u in utility}
    for name in [n for n in TRANSFORMS if n != "clean"] + list(INSTAHIDE):
        l1 = _find(rows, name, "1")
        if l1 is None:
            continue
        u = acc.get(name, {})
        found = [r for r in rows if r["transform"] == name and r["level"].startswith("2")]
        l2 = max(found, key=lambda r: r["SSIM"]) if found else None  # the strongest level-2 attack
        l3a = _find(rows, name, "3", "least squares, 1 pairs") or _find(rows, name, "3", "ECB")
        l3b = _find(rows, name, "3", "least squares, 20 pairs")
        l3 = fmt(l3a, f"{l3a['blocks decoded']:.2%} blocks" if l3a and "blocks decoded" in l3a else "1 pair")
        if l3b is not None:
            l3 += "; " + fmt(l3b, "20 pairs")
        if name.startswith("InstaHide"):
            l2 = l3 = None
        table.append(
            {
                "protection": name,
                "CIFAR-10 acc": u.get("CIFAR-10 test acc", "-"),
                "digits acc": u.get("digits test acc", "-"),
                "L1 MR acc": l1.get("MR accuracy", "-"),
                "L1 SSIM / PSNR": fmt(l1),
                "L2 SSIM / PSNR": fmt(l2) if l2 else ("issue 4" if name.startswith("InstaHide") else "-"),
                "L3 SSIM / PSNR": (l3 or "issue 4") if name.startswith("InstaHide") or l3 else "-",
            }
        )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--model", default="fastresnet")
    ap.add_argument("--skip-utility", action="store_true", help="attacks and speed only (no CIFAR training)")
    ap.add_argument("--instahide-json", help="rows from bench_instahide_train.py --json, for one table")
    ap.add_argument("--json", help="write all tables here")
    ap.add_argument("--seed", type=int, default=0)
    add_data_option(ap, "cifar10-train-20k.npz, cifar10-test.npz (and imagenet-sample/, optional)")
    args = ap.parse_args()
    data = data_dir(args.data)
    data.require("cifar10-train-20k.npz", "cifar10-test.npz")
    import masquerade as mq
    from masquerade.data import load_images
    from masquerade.training import TrainSettings, _View, train

    train_set = load_images(data / "cifar10-train-20k.npz")
    test_set = load_images(data / "cifar10-test.npz")
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
            r = train(
                train_set,
                test_set,
                scheme=scheme,
                settings=TrainSettings(model=args.model, epochs=args.epochs),
                seed=args.seed,
                progress=False,
                on_epoch=lambda rec, name=name: print(
                    f"  {name} epoch {rec['epoch']}: {rec['test_acc']:.4f} ({rec['seconds']:.0f}s)", flush=True
                ),
            )
            minutes = (time.perf_counter() - t) / 60
            rd = train(
                d_train,
                d_test,
                scheme=scheme,
                seed=args.seed,
                progress=False,
                settings=TrainSettings(model=args.model, epochs=args.epochs, batch_size=64, lr=0.05),
            )
            utility.append(
                {
                    "training data": name,
                    "CIFAR-10 test acc": round(r["test_acc"], 4),
                    "digits test acc": round(rd["test_acc"], 4),
                    "CIFAR minutes": round(minutes, 1),
                }
            )
            if cfg is None:
                classifier = r["model_state"]
                view = _View(mq.create_scheme("identity"), train_set.to_tensor())
        if args.instahide_json and Path(args.instahide_json).is_file():
            for row in json.loads(Path(args.instahide_json).read_text()):
                if row["row"] != "vanilla":
                    utility.append(
                        {
                            "training data": f"InstaHide {row['row']}",
                            "CIFAR-10 test acc": round(row["clean_acc"], 4),
                            "digits test acc": "-",
                            "CIFAR minutes": round(row["minutes"], 1),
                        }
                    )
        print("\nutility (same model and epochs; disguised rows are trained and tested with one dataset key)")
        for u in utility:
            print("  " + " | ".join(f"{k} {v}" for k, v in u.items()))
    aux = train_set.to_tensor()[
        np.random.default_rng(1).choice(len(train_set), min(5000, len(train_set)), replace=False)
    ]
    from masquerade.data import extract_patches

    public = (
        extract_patches(data / "imagenet-sample", 10000, rng=args.seed).to_tensor()
        if data.has("imagenet-sample")
        else None
    )
    rows = attacks(x_test, test_set.labels_tensor(), aux, classifier, view, public)
    print(
        f"\nattacks on {min(1000, len(x_test) - 100):,} random CIFAR-10 test images (PSNR/SSIM of the recovery "
        "against the original)"
    )
    for r in rows:
        print("  " + " | ".join(f"{k} {v}" for k, v in r.items()))
    table = combined(utility, rows)
    print(
        "\nthreat level x protection (SSIM / PSNR of the best recovery we have; L1 = disguised data only, "
        "L2 = + clean images of the same kind, L3 = + known plaintext pairs; MR = clean model's accuracy)"
    )
    for r in table:
        print("  " + " | ".join(f"{k} {v}" for k, v in r.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"utility": utility, "attacks": rows, "table": table}, indent=2))


if __name__ == "__main__":
    main()
