"""``masquerade demo``: an offline tour on data our dependencies ship, ending in an HTML report.

It loads the bundled digits and photos, cuts a SIFT-filtered public patch pool from the photos, runs every
registered scheme's key/encode/decode round trip, measures how SSIM and PSNR fall as images are degraded by noise
and JPEG compression, then runs ``masquerade evaluate --quick`` with lighter training on the bundled digits
(identity, InstaHide inside and across datasets -- the latter broken by the challenge attack --, DisguisedNets RMT
and AES-ECB, at threat levels 1-3, with the utility of a model trained on each protected set; its own report in
``evaluate/``), encrypts a digits model's features with ShuffleBits and attacks them (key recovery from
ciphertexts, class inference, a decoder), camouflages photos against BRISQUE, and inverts a client's gradient with
and without an ATS transformation policy -- every number in the report is computed here, on real images.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from masquerade.data import ImageSet, extract_patches, load_images, load_photos, to_uint8
from masquerade.metrics import psnr, ssim
from masquerade.models import ResNet9
from masquerade.registry import ATTACKS, SCHEMES, run_attack
from masquerade.report import build_report
from masquerade.rng import as_generator
from masquerade.runs import Run, start_run
from masquerade.training import TrainSettings, train

__all__ = ["run_demo", "DemoScale", "FULL", "QUICK"]


@dataclass(frozen=True)
class DemoScale:
    """How much work each section of the tour does."""

    train: int = 1000  # the scorecard's utility: training images and epochs
    epochs: int = 6
    levels: tuple[int, ...] = (1, 2, 3)  # the scorecard's threat levels
    settings: tuple[str, ...] = ()  # the scorecard's settings, by label (none named: all of the quick plan's)
    extractor_epochs: int = 6  # ShuffleBits: the digits model behind the feature API, and the attacks' training
    attribute_epochs: int = 40
    inversion_epochs: int = 30
    ats_iterations: int = 150  # Inverting Gradients


FULL = DemoScale()
# ``demo --quick``: every section, the scorecard with two settings at level 1 (trained as fully as in the full tour,
# so that its utilities mean the same) and fewer training and inversion steps elsewhere: about 2.5 minutes
QUICK = DemoScale(
    levels=(1,),
    settings=("no protection", "inside k=4"),
    extractor_epochs=3,
    attribute_epochs=15,
    inversion_epochs=10,
    ats_iterations=50,
)


def _jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(images)
    for i, im in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(im[..., 0] if im.shape[2] == 1 else im).save(buf, format="JPEG", quality=quality)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = dec[..., None] if dec.ndim == 2 else dec
    return out


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


def run_demo(*, out: str | None = None, seed: int = 0, verbose: bool = True, scale: DemoScale = FULL) -> Path:
    """Run the demo and return the path of its HTML report; ``scale``: :data:`FULL`, or :data:`QUICK` for a
    shorter tour through the same sections."""
    t0 = time.perf_counter()
    gen = as_generator(seed)
    with start_run("demo", out=out) as run:
        config = {"seed": seed, "data": ["bundled:mnist", "bundled:photos"], "scale": asdict(scale)}
        run.write_config(config, seed=seed)
        say = print if verbose else (lambda *a, **k: None)

        # 1. data
        digits = load_images("bundled:mnist").subset(per_class=8, rng=gen)
        photos = load_images("bundled:photos", size=(96, 128))
        run.save_grid("data-mnist", digits.images, ncol=16, scale=2, caption="bundled:mnist, 8 digits per class")
        run.save_grid("data-photos", photos.images, ncol=4, caption="bundled:photos, resized to 128×96")
        run.add_metrics(data={"mnist_images": len(digits), "photos": len(photos)})
        say(f"data: {len(digits)} MNIST digits, {len(photos)} photos (bundled, offline)")

        # 2. public patch pool, as cross-dataset InstaHide uses
        raw, _ = load_photos("bundled:photos")
        patches = extract_patches("bundled:photos", 64, (64, 160), rng=seed, cache=False)
        run.save_grid(
            "patches",
            patches.images,
            ncol=16,
            scale=2,
            caption="64 public patches: random crops with more than 40 SIFT keypoints, resized to 32×32",
        )
        run.add_metrics(patch_pool={"patches": len(patches), "photos": len(raw), "min_keypoints": 40})
        say(f"patches: {len(patches)} SIFT-filtered 32×32 patches from {len(raw)} photos")

        # 3. schemes: key -> encode -> decode on real images
        x = digits.to_rgb().to_tensor()
        rows = []
        for name in SCHEMES.names():
            scheme = SCHEMES.create(name)
            key = scheme.keygen(len(x), rng=gen, shape=tuple(x.shape[1:]))
            z = scheme.encode(x, key)
            row: dict[str, Any] = {
                "scheme": name,
                "key fingerprint": key.fingerprint,
                "encoded shape": str(tuple(z.shape)),
            }
            if scheme.invertible:
                back = scheme.decode(z, key)
                row["round trip max error"] = float((back - x).abs().max())
            rows.append(row)
        run.add_metrics(schemes=rows)
        say(f"schemes: {', '.join(r['scheme'] for r in rows)} round-tripped on {len(x)} digits")

        # 4. what SSIM and PSNR say about degraded images
        sets = {"photos": photos.images, "mnist": digits.to_rgb().images}
        sigmas = [2, 5, 10, 20, 40, 80]
        qualities = [95, 75, 50, 25, 10, 5]
        noise_ssim: dict[str, list[float]] = {}
        noise_psnr: dict[str, list[float]] = {}
        jpeg_ssim: dict[str, list[float]] = {}
        for name, imgs in sets.items():
            ref = _nchw(imgs)
            noisy_examples = []
            for s in sigmas:
                noisy = np.clip(imgs + gen.normal(0, s, imgs.shape).round(), 0, 255).astype(np.uint8)
                noise_ssim.setdefault(name, []).append(float(ssim(ref, _nchw(noisy), data_range=255).mean()))
                noise_psnr.setdefault(name, []).append(float(psnr(ref, _nchw(noisy), data_range=255).mean()))
                noisy_examples.append(noisy[0])
            for q in qualities:
                comp = _jpeg(imgs, q)
                jpeg_ssim.setdefault(name, []).append(float(ssim(ref, _nchw(comp), data_range=255).mean()))
            if name == "photos":
                run.save_grid(
                    "noise-ladder",
                    np.stack([imgs[0]] + noisy_examples),
                    ncol=len(sigmas) + 1,
                    caption="original, then Gaussian noise σ = " + ", ".join(map(str, sigmas)),
                )
        run.add_metrics(
            ssim_vs_noise={"x": sigmas, "y": noise_ssim, "xlabel": "noise σ (of 255)", "ylabel": "mean SSIM"},
            psnr_vs_noise={"x": sigmas, "y": noise_psnr, "xlabel": "noise σ (of 255)", "ylabel": "mean PSNR (dB)"},
            ssim_vs_jpeg={"x": qualities, "y": jpeg_ssim, "xlabel": "JPEG quality", "ylabel": "mean SSIM"},
        )
        say(
            "metrics: SSIM at noise σ=20: " + ", ".join(f"{k} {v[sigmas.index(20)]:.3f}" for k, v in noise_ssim.items())
        )
        # 5. the scorecard: every scheme setting against every attack at threat levels 1-3, and its utility
        _scorecard_section(run, say, seed, scale)

        # 6. ShuffleBits: a digits model trained here as the feature extractor behind a black-box API
        tr, te = load_images("bundled:digits", size=16).to_rgb().split(0.8, rng=gen)
        settings = TrainSettings(model="fastresnet", epochs=scale.extractor_epochs, batch_size=64, lr=0.05)
        extractor = train(tr, te, scheme=SCHEMES.create("identity"), settings=settings, seed=seed, progress=False)[
            "model_state"
        ]
        _shufflebits_section(run, say, extractor, tr, te, seed, scale)
        # 7. quality camouflage: bundled photos against BRISQUE-torch, judged after a real JPEG-90 re-compression
        _camouflage_section(run, say, seed)

        # 8. ATS: gradient inversion of a client's update, without and with a transformation policy
        _ats_section(run, say, seed, scale)
        run.add_metrics(seconds=round(time.perf_counter() - t0, 2))
        run.log("demo finished")
    report = build_report([run.path], title="masquerade demo" + (" (--quick)" if scale == QUICK else ""))
    say(f"report: {report}")
    return report


def _scorecard_section(run: Run, say: Callable[..., Any], seed: int, scale: DemoScale) -> None:
    """``masquerade evaluate --quick --train 1000 --epochs 6`` (by default) into ``evaluate/`` (on every core: its
    thread count is part of its plan), and its summary as one table of this report."""
    import os

    from masquerade.workflows.evaluate import EvaluateSettings, evaluate

    t0 = time.perf_counter()
    # the quick plan with a lighter utility (1,000 training images, 6 epochs): the tour stays a few minutes long
    settings = EvaluateSettings.for_quick(
        seed=seed,
        threads=max(1, min(os.cpu_count() or 1, 4)),
        train=scale.train,
        epochs=scale.epochs,
        levels=scale.levels,
    )
    if scale.settings:
        chosen = tuple(st for st in settings.settings if st.label in scale.settings)
        missing = sorted(set(scale.settings) - {st.label for st in chosen})
        if missing:
            raise ValueError(f"demo: the quick plan has no setting {', '.join(missing)}")
        settings = dataclasses.replace(settings, settings=chosen)
    card = json.loads(evaluate(settings, run.path / "evaluate", verbose=False).read_text())
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in card["rows"]:
        row = best.setdefault(
            (r["scheme"], r["setting"]),
            {"scheme": r["scheme"], "setting": r["setting"], "utility (clean test accuracy)": r["utility"]},
        )
        col = f"level {r['level']}: best attack SSIM"
        if r["ssim"] >= row.get(col, -1.0):
            row[col] = r["ssim"]
            row[f"level {r['level']}: attack"] = f"{r['attack']} ({100 * r['success']:.0f} % found)"
    table = list(best.values())
    top = max(scale.levels)
    run.add_metrics(scorecard=table, scorecard_seconds=round(time.perf_counter() - t0, 1))
    say(
        f"scorecard ({time.perf_counter() - t0:.0f}s): "
        + "; ".join(
            f"{t['scheme']} {t['setting']}: utility {t['utility (clean test accuracy)']:.2f}, level {top} SSIM "
            f"{t.get(f'level {top}: best attack SSIM', float('nan')):.2f}"
            for t in table
        )
    )
    say(f"scorecard report: {run.path / 'evaluate' / 'report.html'}")


def _shufflebits_section(
    run: Run, say: Callable[..., Any], extractor: ResNet9, tr: ImageSet, te: ImageSet, seed: int, scale: DemoScale
) -> None:
    """Encrypt the features of test digits three ways, recover keys from ciphertexts alone, and run the attribute
    and pixel-decoder attacks on what an adversary gets in each case."""
    from masquerade.attacks.feature_inversion import FeatureAPI, cosine_distance
    from masquerade.training import TrainingView

    view = TrainingView(SCHEMES.create("identity"), tr.to_tensor())
    api = FeatureAPI(lambda x: extractor.net(view.clean(x)))
    xv, yv = te.to_tensor(), te.labels_tensor()
    fv = api.predict(xv).numpy()
    fixed, vec, el = (SCHEMES.create("shufflebits", scope=s) for s in ("fixed", "vector", "element"))
    z_fixed = fixed.encode(fv, fixed.keygen(0, rng=seed))
    z_vec = vec.encode(fv, vec.keygen(len(fv), rng=seed))
    z_el = el.encode(fv, el.keygen(len(fv), rng=seed, shape=fv.shape[1:]))
    rec_fixed = run_attack(ATTACKS.create("shufflebits-key-recovery"), encodings=z_fixed).reconstructions
    rec_vec = run_attack(ATTACKS.create("shufflebits-key-recovery", group="vector"), encodings=z_vec).reconstructions
    rows = {
        "plaintext features": fv,
        "fixed key, ciphertext as is": z_fixed,
        "fixed key, after key recovery": rec_fixed,
        "one-time key, ciphertext as is": z_vec,
        "one-time key, after per-vector key recovery": rec_vec,
    }
    stacked = np.concatenate(list(rows.values()))
    aux = (tr.to_tensor(), tr.labels_tensor())
    n = len(fv)
    pred = run_attack(
        ATTACKS.create("feature-attribute", epochs=scale.attribute_epochs),
        encodings=stacked,
        auxiliary=aux,
        api=api,
        rng=seed,
        progress=False,
    ).recovered["attributes"]
    pred_pc = run_attack(
        ATTACKS.create("feature-attribute", representation="popcount", epochs=scale.attribute_epochs),
        encodings=z_el,
        auxiliary=aux,
        api=api,
        rng=seed,
        progress=False,
    ).recovered["attributes"]
    rec = run_attack(
        ATTACKS.create("feature-inversion", epochs=scale.inversion_epochs, batch=64),
        encodings=stacked,
        auxiliary=aux,
        api=api,
        rng=seed,
        progress=False,
    ).reconstructions
    table: list[dict[str, Any]] = []
    fv_t = torch.from_numpy(fv)
    for i, name in enumerate(rows):
        r = rec[i * n : (i + 1) * n]
        table.append(
            {
                "features the adversary has": name,
                "class inference accuracy": round(float((pred[i * n : (i + 1) * n] == yv).float().mean()), 4),
                "decoder SSIM": round(float(ssim(to_uint8(r), to_uint8(xv), data_range=255).mean()), 3),
                "cos distance of API features": round(float(cosine_distance(api.predict(r), fv_t).mean()), 4),
            }
        )
    table.append(
        {
            "features the adversary has": "one-time per-number key: popcount only",
            "class inference accuracy": round(float((pred_pc == yv).float().mean()), 4),
            "decoder SSIM": "-",
            "cos distance of API features": "-",
        }
    )
    run.save_grid(
        "shufflebits",
        torch.cat([xv[:10]] + [rec[i * n : i * n + 10] for i in range(len(rows))]),
        ncol=10,
        scale=3,
        caption="rows: test digits; pixel-loss decoder on: plaintext features; fixed-key "
        "ciphertexts as is; after key recovery; one-time-key ciphertexts as is; after "
        "per-vector key recovery",
    )
    run.add_metrics(shufflebits_digits=table)
    say(
        "shufflebits (digits): class inference "
        + ", ".join(f"{r['features the adversary has']} {r['class inference accuracy']:.2f}" for r in table)
    )


def _camouflage_section(run: Run, say: Callable[..., Any], seed: int) -> None:
    """Camouflage two bundled photos (at 256×192) invisibly (PGD, 40 dB) and visibly (tone curves)."""
    from masquerade.quality.camouflage import CamouflageSettings, camouflage, evaluate_camouflage
    from masquerade.quality.models import BrisqueQuality

    model = BrisqueQuality()
    x = load_images("bundled:photos", size=(192, 256)).to_tensor()
    with torch.no_grad():
        good = (model.score(x) > model.threshold).nonzero().flatten()[:2]
    x = x[good]
    table: list[dict[str, Any]] = []
    grid: list[torch.Tensor] = []
    for label, settings in [
        ("invisible (PGD, L2 budget 40 dB, JPEG-aware)", CamouflageSettings(steps=30)),
        ("visible (tone curves, JPEG-aware)", CamouflageSettings(method="filter", filter_steps=40)),
    ]:
        y = camouflage(model, x, settings, rng=seed, progress=False)
        ev = evaluate_camouflage(model, x, y)
        for j in range(len(x)):
            table.append(
                {
                    "route": label,
                    "photo": int(good[j]),
                    "score after JPEG-90": round(float(ev["score_jpeg"][j]), 1),
                    "camouflaged, after JPEG-90": round(float(ev["camouflaged_score_jpeg"][j]), 1),
                    "success": bool(ev["success"][j]),
                    "PSNR": round(float(ev["psnr"][j]), 1),
                }
            )
            grid += [x[j], y[j], ((y[j] - x[j]) * 10 + 0.5).clamp(0, 1)]
    run.save_grid(
        "camouflage",
        torch.stack(grid),
        ncol=3,
        caption="original / camouflaged / difference ×10; "
        "rows: PGD (invisible) then tone curves (visible), two photos each",
    )
    run.add_metrics(camouflage_photos=table)
    say(
        "camouflage (BRISQUE-torch, after JPEG-90): "
        + "; ".join(
            f"{r['route'].split(' (')[0]} {r['score after JPEG-90']} -> {r['camouflaged, after JPEG-90']} "
            f"at {r['PSNR']} dB"
            for r in table
        )
    )


def _ats_section(run: Run, say: Callable[..., Any], seed: int, scale: DemoScale) -> None:
    """Inverting Gradients on three 32×32 photo crops through an untrained ConvNet: each crop is one client update
    (batch 1, label known), shared as is, then transformed by the ATS policy 3-1-7 (applied always, as published)."""
    import torch.nn.functional as F

    from masquerade.ats.privacy import attack_model, summary
    from masquerade.attacks.gradient_inversion import CIFAR10_MEAN, CIFAR10_STD
    from masquerade.models import Normalized, create_model

    photos = load_images("bundled:photos", size=(96, 96)).to_tensor()[[0, 1, 2]]
    x = F.interpolate(photos, size=(32, 32), mode="area").clamp(0, 1)
    y = torch.tensor([0, 1, 2])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Normalized(create_model("convnet16", num_classes=10), CIFAR10_MEAN, CIFAR10_STD).eval()
    table: list[dict[str, Any]] = []
    grid = [x]
    for policy in ("none", "3-1-7"):
        res = attack_model(
            model,
            x,
            y,
            policy=policy,
            always=True,
            attack_settings={"iterations": scale.ats_iterations},
            rng=seed,
            progress=False,
        )
        sm = summary(res)
        table.append(
            {
                "client policy": policy,
                "PSNR vs private image (dB)": round(sm["psnr"], 2),
                "SSIM": round(sm["ssim"], 3),
                "iterations": res["iterations"],
                "seconds": round(res["seconds"], 1),
            }
        )
        grid.append(res["reconstructions"])
    run.save_grid(
        "ats",
        torch.cat(grid),
        ncol=3,
        scale=3,
        caption="rows: private images; Inverting Gradients from the shared gradient without defence; "
        f"with the ATS policy 3-1-7 applied by the client (untrained ConvNet, {scale.ats_iterations} iterations)",
    )
    run.add_metrics(ats_gradient_inversion=table)
    say(
        "ats (gradient inversion, untrained ConvNet): PSNR "
        + ", ".join(f"{r['client policy']} {r['PSNR vs private image (dB)']} dB" for r in table)
    )
