"""ShuffleBits: cipher speed, key recovery from ciphertexts alone, and model inversion through a black-box API.

Speed: float32 features encrypted with per-vector keys (GB/s; goal >= 1 GB/s) against one copy of the same array.
Key recovery: features of CIFAR-10 test images from a CNN trained here; the fixed key recovered from n ciphertext
vectors; one-time (per-vector) keys attacked pooled and vector by vector; per-element keys.
Model inversion (the paper's attacks, on CIFAR-10): attribute (class) inference, a decoder trained with a pixel
loss, and one trained with pixel + feature-reconstruction loss through a surrogate of the API -- on plaintext
features, on ciphertexts taken as they are (the paper's evaluation), on what key recovery makes of them, and on the
popcount that per-element keys leave.
CIFAR-10 comes from the data folder (``--data DIR``, else ``$MASQUERADE_BENCH_DATA``, else ``<repo>/../shared/data``).

    python benchmarks/reproductions/bench_shufflebits.py [--victims 1000] [--extractor-epochs 10] [--decoder-epochs 15]
        [--surrogate-epochs 8] [--skip-inversion] [--data DIR] [--json FILE] [--grid FILE]
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


def speed() -> None:
    import masquerade as mq
    from masquerade.shufflebits.scheme import shuffle_words_torch

    x = np.random.default_rng(0).standard_normal((131072, 512), dtype=np.float32)  # 256 MiB
    for _ in range(2):  # the first calls pay for page faults and the JIT, not for the cipher
        x.copy()
    t_copy, _ = median_time(lambda: x.copy())
    print(f"speed ({x.nbytes / 2**20:.0f} MiB of float32, {x.shape[0]} vectors × {x.shape[1]}):", flush=True)
    for scope in ("vector", "fixed", "element"):
        s = mq.create_scheme("shufflebits", scope=scope)
        data = x if scope != "element" else x[:8192]
        key = s.keygen(len(data), rng=0, shape=data.shape[1:])
        for _ in range(2):
            s.encode(data, key)
        t, _ = median_time(lambda s=s, data=data, key=key: s.encode(data, key))
        t_c, _ = median_time(lambda data=data: data.copy())
        t_key, _ = median_time(lambda s=s, data=data: s.keygen(len(data), rng=None, shape=data.shape[1:]), 3)
        goal = f" (goal >= 1 GB/s: {'met' if data.nbytes / t >= 1e9 else 'NOT met'})" if scope == "vector" else ""
        print(
            f"  {scope:8s} encrypt {data.nbytes / t / 1e9:6.2f} GB/s = {t / t_c:5.2f}x a copy{goal}; "
            f"keygen (OS randomness) {t_key:.3f}s",
            flush=True,
        )
    small = torch.from_numpy(x[:8192].copy()).view(torch.int32)
    key = mq.create_scheme("shufflebits").keygen(len(small), rng=0)
    t, _ = median_time(lambda: shuffle_words_torch(small, key.perm, "vector"), 3)
    print(f"  pure-torch path (for GPUs; here on CPU): {small.numel() * 4 / t / 1e9:.2f} GB/s", flush=True)


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        a, b = a.astype(np.float64), b.astype(np.float64)
        c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)


def key_recovery(feats: np.ndarray) -> list[dict]:
    import masquerade as mq
    from masquerade.registry import run_attack

    rows = []
    fixed = mq.create_scheme("shufflebits", scope="fixed")
    for n in [v for v in (1, 2, 5, 10, 50, 200) if v < len(feats)] + [len(feats)]:
        errs, coss, exact, secs = [], [], [], []
        for seed in range(3):
            key = fixed.keygen(0, rng=100 + seed)
            r = run_attack(mq.create_attack("shufflebits-key-recovery"), encodings=fixed.encode(feats[:n], key))
            dec = mq.create_scheme("shufflebits", scope="fixed").decode(
                fixed.encode(feats, key), fixed.key_from_perm(r.recovered["perm"][0])
            )  # decrypt everything
            nz = feats != 0
            errs.append(float(np.median(np.abs(dec - feats)[nz] / np.abs(feats[nz]))))
            coss.append(float(cos_rows(dec, feats).mean()))
            exact.append(float((dec.view(np.uint32) == feats.view(np.uint32)).mean()))
            secs.append(r.seconds)
        rows.append(
            {
                "key": "fixed",
                "attacked": f"{n} vectors pooled",
                "cos(decrypted, true)": round(np.mean(coss), 5),
                "median rel. error": f"{np.mean(errs):.1e}",
                "numbers exact": round(np.mean(exact), 3),
                "seconds": round(float(np.mean(secs)), 2),
            }
        )
    vec = mq.create_scheme("shufflebits", scope="vector")
    z = vec.encode(feats, vec.keygen(len(feats), rng=7))
    r = run_attack(mq.create_attack("shufflebits-key-recovery"), encodings=z)
    rows.append(
        {
            "key": "one-time per vector",
            "attacked": f"{len(feats)} vectors pooled",
            "cos(decrypted, true)": round(float(cos_rows(r.reconstructions, feats).mean()), 5),
        }
    )
    m = min(200, len(feats))
    r = run_attack(mq.create_attack("shufflebits-key-recovery", group="vector"), encodings=z[:m])
    nz = feats[:m] != 0
    rel = np.abs(r.reconstructions - feats[:m])[nz] / np.abs(feats[:m][nz])
    rows.append(
        {
            "key": "one-time per vector",
            "attacked": f"each of {m} vectors alone",
            "cos(decrypted, true)": round(float(cos_rows(r.reconstructions, feats[:m]).mean()), 5),
            "median rel. error": f"{np.median(rel):.1e}",
            "seconds": round(r.seconds / m, 3),
        }
    )
    el = mq.create_scheme("shufflebits", scope="element")
    ze = el.encode(feats[:m], el.keygen(m, rng=8, shape=feats.shape[1:]))
    r = run_attack(mq.create_attack("shufflebits-key-recovery", group="vector"), encodings=ze)
    rows.append(
        {
            "key": "one-time per number",
            "attacked": f"each of {m} vectors alone",
            "cos(decrypted, true)": round(float(cos_rows(r.reconstructions, feats[:m]).mean()), 5),
        }
    )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--victims", type=int, default=1000)
    ap.add_argument("--extractor-epochs", type=int, default=10)
    ap.add_argument("--decoder-epochs", type=int, default=15)
    ap.add_argument("--surrogate-epochs", type=int, default=8)
    ap.add_argument("--skip-inversion", action="store_true")
    ap.add_argument("--json", help="write the tables here")
    ap.add_argument("--grid", help="write originals and reconstructions (PNG) here")
    add_data_option(ap, "cifar10-train-20k.npz and cifar10-test.npz")
    args = ap.parse_args()
    data = data_dir(args.data)
    data.require("cifar10-train-20k.npz", "cifar10-test.npz")
    import masquerade as mq
    from masquerade.attacks.feature_inversion import FeatureAPI, cosine_distance
    from masquerade.data import load_images, to_uint8
    from masquerade.metrics import psnr, ssim
    from masquerade.registry import run_attack
    from masquerade.training import TrainSettings, _View, train

    speed()
    train_set = load_images(data / "cifar10-train-20k.npz")
    test_set = load_images(data / "cifar10-test.npz")
    # the files are sorted by class: split and draw at random. The service trains on one half, the adversary's
    # auxiliary images are the other half, the victims are test images.
    order = np.random.default_rng(0).permutation(len(train_set))
    service, aux = train_set.select(order[:10000]), train_set.select(order[10000:])
    victims_idx = np.random.default_rng(1).choice(len(test_set), args.victims, replace=False)
    victims = test_set.select(victims_idx)
    t = time.perf_counter()
    r = train(
        service,
        test_set,
        settings=TrainSettings(model="fastresnet", epochs=args.extractor_epochs),
        seed=0,
        progress=False,
    )
    model, view = r["model_state"], _View(mq.create_scheme("identity"), service.to_tensor())
    print(
        f"\nfeature extractor: fastresnet trained on 10,000 CIFAR-10 images for {args.extractor_epochs} epochs "
        f"({(time.perf_counter() - t) / 60:.1f} min), test accuracy {r['test_acc']:.4f}; features: the 256 "
        "pooled activations before the classifier",
        flush=True,
    )
    api = FeatureAPI(lambda x: model.net(view.clean(x)))
    xv, yv = victims.to_tensor(), victims.labels_tensor()
    fv = api.predict(xv).numpy()
    print(f"victims: {len(fv)} test images; {100 * (fv == 0).mean():.1f}% of feature values are exactly 0 (ReLU)")

    rows = key_recovery(fv)
    print("\nkey recovery from ciphertexts alone (features of CIFAR-10 test images)")
    for row in rows:
        print("  " + " | ".join(f"{k} {v}" for k, v in row.items()))
    out = {"key_recovery": rows}

    if not args.skip_inversion:
        fixed = mq.create_scheme("shufflebits", scope="fixed")
        vec = mq.create_scheme("shufflebits", scope="vector")
        el = mq.create_scheme("shufflebits", scope="element")
        z_fixed = fixed.encode(fv, fixed.keygen(0, rng=21))
        z_vec = vec.encode(fv, vec.keygen(len(fv), rng=22))
        z_el = el.encode(fv, el.keygen(len(fv), rng=23, shape=fv.shape[1:]))
        t = time.perf_counter()
        rec_fixed = run_attack(mq.create_attack("shufflebits-key-recovery"), encodings=z_fixed).reconstructions
        rec_vec = run_attack(
            mq.create_attack("shufflebits-key-recovery", group="vector"), encodings=z_vec
        ).reconstructions
        print(f"\nkey recovery for the inversion rows: {time.perf_counter() - t:.0f}s", flush=True)
        float_rows = {
            "plaintext features": fv,
            "fixed key, ciphertext as is": z_fixed,
            "fixed key, after key recovery": rec_fixed,
            "one-time key, ciphertext as is": z_vec,
            "one-time key, after per-vector key recovery": rec_vec,
        }
        stacked = np.concatenate(list(float_rows.values()))
        n = len(fv)
        aux_l = (aux.to_tensor(), aux.labels_tensor())
        timings = {}
        t = time.perf_counter()
        pred = run_attack(mq.create_attack("feature-attribute"), encodings=stacked, auxiliary=aux_l, api=api)
        pred_pc = run_attack(
            mq.create_attack("feature-attribute", representation="popcount"), encodings=z_el, auxiliary=aux_l, api=api
        )
        timings["attribute classifiers"] = time.perf_counter() - t
        recs = {}
        for loss in ("pixel", "feature"):
            t = time.perf_counter()
            kw = dict(loss=loss, epochs=args.decoder_epochs, surrogate_epochs=args.surrogate_epochs)
            recs[loss] = run_attack(
                mq.create_attack("feature-inversion", **kw), encodings=stacked, auxiliary=aux_l, api=api
            ).reconstructions
            if loss == "pixel":  # the popcount row gets the pixel-loss decoder only (time)
                recs[loss + " popcount"] = run_attack(
                    mq.create_attack("feature-inversion", representation="popcount", **kw),
                    encodings=z_el,
                    auxiliary=aux_l,
                    api=api,
                ).reconstructions
            timings[f"{loss}-loss decoders"] = time.perf_counter() - t
            print(f"  {loss}-loss decoders trained in {timings[f'{loss}-loss decoders'] / 60:.1f} min", flush=True)
        fv_t = torch.from_numpy(fv)
        chance = float(cosine_distance(fv_t, fv_t[torch.from_numpy(np.random.default_rng(2).permutation(n))]).mean())
        table = []
        names = list(float_rows) + ["one-time per-number key: popcount"]
        grid_rows = [xv[:8]]
        for i, name in enumerate(names):
            popc = i == len(float_rows)
            sl = slice(None) if popc else slice(i * n, (i + 1) * n)
            p = (pred_pc if popc else pred).recovered["attributes"][sl]
            row = {"features the adversary has": name, "class inference acc": round(float((p == yv).float().mean()), 4)}
            for loss in ("pixel", "feature"):
                if popc and loss == "feature":
                    row.update({"feature-loss SSIM": "-", "feature-loss PSNR": "-", "feature-loss cos dist": "-"})
                    continue
                rec = recs[loss + " popcount"] if popc else recs[loss][sl]
                row[f"{loss}-loss SSIM"] = round(float(ssim(to_uint8(rec), to_uint8(xv), data_range=255).mean()), 3)
                row[f"{loss}-loss PSNR"] = round(float(psnr(to_uint8(rec), to_uint8(xv), data_range=255).mean()), 2)
                row[f"{loss}-loss cos dist"] = round(float(cosine_distance(api.predict(rec), fv_t).mean()), 4)
                if loss == "feature" or (popc and loss == "pixel"):
                    grid_rows.append(rec[:8])
            table.append(row)
        print(
            f"\nmodel inversion on {n} CIFAR-10 test images (10,000 auxiliary images; chance: class accuracy 0.1, "
            f"cos dist between unrelated images {chance:.4f}); budgets: "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
        )
        for row in table:
            print("  " + " | ".join(f"{k} {v}" for k, v in row.items()))
        out.update(inversion=table, chance_cos_dist=chance, timings=timings)
        if args.grid:
            from masquerade.fileio import save_png
            from masquerade.runs import image_grid

            save_png(args.grid, image_grid(torch.cat(grid_rows), ncol=8, scale=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
