"""``masquerade demo``: an offline tour on data our dependencies ship, ending in an HTML report.

It loads the bundled digits and photos, cuts a SIFT-filtered public patch pool from the photos, runs every
registered scheme's key/encode/decode round trip, and measures how SSIM and PSNR fall as images are degraded by
noise and JPEG compression -- every number in the report is computed here, on real images.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from .data import ImageSet, extract_patches, load_images, load_photos
from .metrics import psnr, ssim
from .registry import SCHEMES
from .report import build_report
from .rng import as_generator
from .runs import start_run

__all__ = ["run_demo"]


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


def run_demo(*, out: str | None = None, seed: int = 0, verbose: bool = True) -> Path:
    """Run the demo and return the path of its HTML report."""
    t0 = time.perf_counter()
    gen = as_generator(seed)
    with start_run("demo", out=out) as run:
        run.write_config({"seed": seed, "data": ["bundled:mnist", "bundled:photos"]}, seed=seed)
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
        run.save_grid("patches", patches.images, ncol=16, scale=2,
                      caption="64 public patches: random crops with more than 40 SIFT keypoints, resized to 32×32")
        run.add_metrics(patch_pool={"patches": len(patches), "photos": len(raw), "min_keypoints": 40})
        say(f"patches: {len(patches)} SIFT-filtered 32×32 patches from {len(raw)} photos")

        # 3. schemes: key -> encode -> decode on real images
        x = digits.to_rgb().to_tensor()
        rows = []
        for name in SCHEMES.names():
            scheme = SCHEMES.create(name)
            key = scheme.keygen(len(x), gen)
            z = scheme.encode(x, key)
            row = {"scheme": name, "key fingerprint": key.fingerprint, "encoded shape": str(tuple(z.shape))}
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
                run.save_grid("noise-ladder", np.stack([imgs[0]] + noisy_examples), ncol=len(sigmas) + 1,
                              caption="original, then Gaussian noise σ = " + ", ".join(map(str, sigmas)))
        run.add_metrics(
            ssim_vs_noise={"x": sigmas, "y": noise_ssim, "xlabel": "noise σ (of 255)", "ylabel": "mean SSIM"},
            psnr_vs_noise={"x": sigmas, "y": noise_psnr, "xlabel": "noise σ (of 255)", "ylabel": "mean PSNR (dB)"},
            ssim_vs_jpeg={"x": qualities, "y": jpeg_ssim, "xlabel": "JPEG quality", "ylabel": "mean SSIM"},
        )
        say("metrics: SSIM at noise σ=20: " + ", ".join(f"{k} {v[sigmas.index(20)]:.3f}" for k, v in noise_ssim.items()))
        run.add_metrics(seconds=round(time.perf_counter() - t0, 2))
        run.log("demo finished")
    report = build_report([run.path], title="masquerade demo")
    say(f"report: {report}")
    return report
