"""Quality camouflage (MediaEval 2020 Pixel Privacy): make a blind quality model call good photos bad after the
organisers re-compress them with JPEG at quality 90, invisibly -- or visibly but pleasantly.

Routes (``CamouflageSettings.method``):

- ``"pgd"`` -- projected gradient descent on the score under an L2 budget given as a PSNR (default 40 dB) or an L∞
  budget, then a shrink step: the perturbation is scaled down as far as the real-codec check still succeeds;
- ``"cw"`` -- Carlini-Wagner L2 as in the task participants' reference: tanh change of variables, Adam, a binary
  search over the constant c (defaults: 5 search steps, 1,000 iterations, lr 5e-3, initial c 1e-2), the score turned
  into two-class logits around the threshold (good - bad = score - threshold) and attacked toward "bad" with
  confidence ``kappa``; iterations stop early once the loss stalls;
- ``"filter"`` -- a global per-channel tone curve (monotone, piecewise linear, ``knots`` points) optimised against
  the model: the photo looks edited, not damaged.

With ``jpeg=True`` every gradient step goes through the differentiable JPEG approximation at a quality drawn from
``jpeg_range`` (expectation over transformation). Success is always judged with the real codec: the photo is
delivered as an 8-bit image and re-compressed by Pillow at ``quality``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from masquerade.devices import DeviceLike, model_device, require_float64, resolve_device
from masquerade.errors import InputError
from masquerade.progress import bar
from masquerade.quality.jpeg import jpeg_approx, jpeg_real
from masquerade.quality.models import BrisqueQuality, QualityModel
from masquerade.rng import RngLike, as_generator

__all__ = ["CamouflageSettings", "camouflage", "evaluate_camouflage", "deliver", "tone_curve"]

METHODS = ("pgd", "cw", "filter")


@dataclass(frozen=True)
class CamouflageSettings:
    method: str = "pgd"
    jpeg: bool = True  # expectation over the differentiable JPEG during optimisation
    jpeg_range: tuple[int, int] = (85, 95)  # qualities drawn for it
    quality: int = 90  # the organisers' re-compression (the real codec)
    margin: float = 5.0  # aim this far below the threshold while optimising
    # PGD
    norm: str = "l2"
    psnr: float = 40.0  # L2 budget as a PSNR (dB, pixels in [0, 1])
    linf: float = 2 / 255
    steps: int = 60
    check_every: int = 10  # real-codec check (per image early stop)
    shrink_steps: int = 6  # bisection on the perturbation's scale after success
    shrink_margin: float = 2.0  # ... keeping the real-codec score this far below the threshold
    # CW-L2 (the participants' reference defaults)
    search_steps: int = 5
    iterations: int = 1000
    lr: float = 5e-3
    initial_c: float = 1e-2
    kappa: float = 0.0
    # visible filter
    knots: int = 8
    filter_steps: int = 80
    filter_lr: float = 0.05
    smoothness: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"camouflage: method must be one of {METHODS}, got {self.method!r}")
        if self.norm not in ("l2", "linf"):
            raise InputError(f"camouflage: norm must be 'l2' or 'linf', got {self.norm!r}")
        lo, hi = self.jpeg_range
        if not 1 <= lo <= hi <= 100 or not 1 <= self.quality <= 100:
            raise InputError("camouflage: JPEG qualities lie in 1-100 (jpeg_range low <= high)")
        if self.steps < 1 or self.iterations < 1 or self.search_steps < 1 or self.filter_steps < 1:
            raise InputError("camouflage: steps, iterations, search_steps and filter_steps must be positive")
        if self.knots < 2 or self.psnr <= 0 or self.linf <= 0:
            raise InputError("camouflage: knots >= 2, psnr > 0 and linf > 0")


def deliver(images: torch.Tensor) -> torch.Tensor:
    """What a photo looks like once saved: clipped to [0, 1] and quantised to 8 bits."""
    return (images.detach().clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def _real_scores(model: QualityModel, images: torch.Tensor, quality: int) -> torch.Tensor:
    # the real codec (Pillow) runs on the CPU; the score where the model is
    return model.score(jpeg_real(deliver(images).cpu(), quality).to(images.device, images.dtype))


def _through_jpeg(x: torch.Tensor, s: CamouflageSettings, gen: np.random.Generator) -> torch.Tensor:
    if not s.jpeg:
        return x
    q = torch.from_numpy(gen.integers(s.jpeg_range[0], s.jpeg_range[1] + 1, size=len(x)).astype(np.float64))
    return jpeg_approx(x, q)


def _shrink(
    model: QualityModel, x: torch.Tensor, delta: torch.Tensor, ok: torch.Tensor, s: CamouflageSettings
) -> torch.Tensor:
    """Scale each successful perturbation down by bisection while the real-codec score stays ``shrink_margin``
    below the threshold (a margin for codecs that round a little differently)."""
    if not ok.any():
        return delta
    lo = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    hi = torch.ones(len(x), dtype=x.dtype, device=x.device)
    for _ in range(s.shrink_steps):
        mid = (lo + hi) / 2
        good = _real_scores(model, x + mid[:, None, None, None] * delta, s.quality) < model.threshold - s.shrink_margin
        hi = torch.where(good & ok, mid, hi)
        lo = torch.where(good & ok, lo, mid)
    scale = torch.where(ok, hi, torch.ones_like(hi))
    return delta * scale[:, None, None, None]


def _pgd(
    model: QualityModel, x: torch.Tensor, s: CamouflageSettings, gen: np.random.Generator, pb: Any
) -> torch.Tensor:
    dims = x[0].numel()
    eps = math.sqrt(dims * 10 ** (-s.psnr / 10)) if s.norm == "l2" else s.linf
    alpha = 2.5 * eps / s.steps
    target = model.threshold - s.margin
    delta = torch.zeros_like(x)
    active = _real_scores(model, x, s.quality) >= target  # photos the codec already makes bad are left alone
    for step in range(s.steps):
        idx = active.nonzero().flatten()
        if len(idx) == 0:
            break
        d = delta[idx].clone().requires_grad_(True)
        # push every image still active further down: the approximation's score can sit below the target while
        # the real codec's does not, so the loss has no floor; the real-codec check below decides when to stop
        model.score(_through_jpeg((x[idx] + d).clamp(0, 1), s, gen)).sum().backward()
        g = d.grad
        assert g is not None
        with torch.no_grad():
            if s.norm == "l2":
                g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
                d = d - alpha * g
                norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
                d = d * (eps / norm).clamp(max=1.0)[:, None, None, None]
            else:
                d = (d - alpha * g.sign()).clamp(-eps, eps)
            d = (x[idx] + d).clamp(0, 1) - x[idx]
            delta[idx] = d
        pb.update(len(idx))
        if (step + 1) % s.check_every == 0 or step == s.steps - 1:
            done = _real_scores(model, x[idx] + delta[idx], s.quality) < target
            active[idx[done]] = False
    ok = _real_scores(model, x + delta, s.quality) < model.threshold
    return x + _shrink(model, x, delta, ok, s)


def _cw(model: QualityModel, x: torch.Tensor, s: CamouflageSettings, gen: np.random.Generator, pb: Any) -> torch.Tensor:
    n = len(x)
    w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    c = torch.full((n,), s.initial_c, dtype=x.dtype, device=x.device)
    lower = torch.zeros(n, dtype=x.dtype, device=x.device)
    upper = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    best = x.clone()  # images with no success stay as they were
    best_l2 = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    target = model.threshold - s.margin
    for _ in range(s.search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=s.lr)
        prev = float("inf")
        for it in range(s.iterations):
            adv = (torch.tanh(w) + 1) / 2
            l2 = (adv - x).flatten(1).pow(2).sum(1)
            margin = model.score(_through_jpeg(adv, s, gen)) - target  # logit(good) - logit(bad)
            loss_each = l2 + c * torch.clamp(margin, min=-s.kappa)
            opt.zero_grad(set_to_none=True)
            loss_each.sum().backward()
            opt.step()
            pb.update(n)
            if it % max(1, s.iterations // 10) == 0:  # abort early when the loss stalls
                cur = float(loss_each.detach().sum())
                if cur > prev * 0.9999:
                    break
                prev = cur
        with torch.no_grad():
            adv = (torch.tanh(w) + 1) / 2
            ok = _real_scores(model, adv, s.quality) < model.threshold
            l2 = (deliver(adv) - x).flatten(1).pow(2).sum(1)
            better = ok & (l2 < best_l2)
            best[better] = adv[better]
            best_l2 = torch.where(better, l2, best_l2)
            upper = torch.where(ok, torch.minimum(upper, c), upper)
            lower = torch.where(ok, lower, torch.maximum(lower, c))
            c = torch.where(torch.isinf(upper), c * 10, (lower + upper) / 2)
    return best


def tone_curve(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Per-channel monotone piecewise-linear curves: params N×3×(K+1) (one offset and K increments, softplus'd and
    normalised so each curve runs from y0 to y0 + span within [0, 1])."""
    k = params.shape[-1] - 1
    inc = torch.nn.functional.softplus(params[..., 1:])
    start = torch.sigmoid(params[..., :1]) * 0.2  # black point in [0, 0.2]
    span = 1 - start
    knots_y = torch.cat([start, start + span * torch.cumsum(inc, -1) / inc.sum(-1, keepdim=True)], -1)  # N×3×(K+1)
    pos = (x.clamp(0, 1) * k).reshape(len(x), 3, -1)
    i = pos.floor().clamp(max=k - 1).long()
    t = pos - i
    y0 = torch.gather(knots_y, 2, i)
    y1 = torch.gather(knots_y, 2, i + 1)
    return (y0 + t * (y1 - y0)).reshape_as(x)


def _filter(
    model: QualityModel, x: torch.Tensor, s: CamouflageSettings, gen: np.random.Generator, pb: Any
) -> torch.Tensor:
    n = len(x)
    params = torch.zeros(n, 3, s.knots + 1, dtype=x.dtype, device=x.device)
    params[..., 0] = -10.0  # identity: black point 0, even steps
    params.requires_grad_(True)
    opt = torch.optim.Adam([params], lr=s.filter_lr)
    target = model.threshold - s.margin
    for _ in range(s.filter_steps):
        y = tone_curve(x, params)
        inc = torch.nn.functional.softplus(params[..., 1:])
        rough = (inc / inc.mean(-1, keepdim=True)).diff(dim=-1).pow(2).mean((1, 2))  # curves stay smooth
        loss = torch.relu(model.score(_through_jpeg(y, s, gen)) - target) + s.smoothness * rough
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        pb.update(n)
    with torch.no_grad():
        return tone_curve(x, params)


def camouflage(
    model: QualityModel,
    images: torch.Tensor,
    settings: CamouflageSettings | None = None,
    *,
    rng: RngLike = 0,
    batch: int = 4,
    progress: bool | None = None,
    device: DeviceLike = None,
) -> torch.Tensor:
    """Camouflaged versions of float N×3×H×W images in [0, 1] (all one size; see :func:`camouflage_photos` for
    photos of mixed sizes). ``device``: where the model and the optimisation run (the real JPEG codec stays on the
    CPU); the model is back where it was, and the images on the CPU, when it returns."""
    s = settings or CamouflageSettings()
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise InputError("camouflage: expected colour images as an N×3×H×W float tensor in [0, 1]")
    if not images.is_floating_point() or float(images.min()) < 0 or float(images.max()) > 1:
        raise InputError("camouflage: pixels must be floats in [0, 1]")
    gen = as_generator(rng)
    run: Callable[..., torch.Tensor] = {"pgd": _pgd, "cw": _cw, "filter": _filter}[s.method]
    per_image = {"pgd": s.steps, "cw": s.search_steps * s.iterations, "filter": s.filter_steps}[s.method]
    out = []
    dev = resolve_device(device)
    if isinstance(model, BrisqueQuality):
        require_float64(dev, "camouflage against BRISQUE")  # its AGGD fits run in float64
    home = model_device(model)
    was_training = model.training
    model.eval()
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # gradients w.r.t. the image only; restored below
        p.requires_grad_(False)
    try:
        with bar(
            total=len(images) * per_image,
            desc=f"camouflage ({s.method})",
            unit="img-step",
            disable=None if progress is None else not progress,
        ) as pb:
            for i in range(0, len(images), batch):
                out.append(run(model, images[i : i + batch].to(dev), s, gen, pb).detach().cpu())
    finally:
        for p in params:
            p.requires_grad_(True)
        model.train(was_training)
        model.to(home)
    return torch.cat(out) if out else images[:0].clone()


@torch.no_grad()
def evaluate_camouflage(
    model: QualityModel, original: torch.Tensor, camouflaged: torch.Tensor, quality: int = 90
) -> dict[str, np.ndarray]:
    """The task's protocol per image: scores of the original and the camouflaged photo, each as delivered and after
    the real JPEG re-compression at ``quality``; success (camouflaged + JPEG below the threshold); PSNR and SSIM of
    the delivered camouflaged photo against the original."""
    from masquerade.metrics import psnr, ssim

    d_orig, d_cam = deliver(original), deliver(camouflaged)
    out = {
        "score": model.score(d_orig).numpy(),
        "score_jpeg": _real_scores(model, original, quality).numpy(),
        "camouflaged_score": model.score(d_cam).numpy(),
        "camouflaged_score_jpeg": _real_scores(model, camouflaged, quality).numpy(),
        "psnr": psnr(d_cam, d_orig, data_range=1.0).numpy(),
        "ssim": ssim((d_cam * 255).round().byte(), (d_orig * 255).round().byte(), data_range=255).numpy(),
    }
    out["success"] = out["camouflaged_score_jpeg"] < model.threshold
    return out


MAX_PIXELS = 4096 * 4096


def camouflage_photos(
    model: QualityModel,
    photos: list[np.ndarray],
    names: list[str],
    out_dir: Any,
    settings: CamouflageSettings | None = None,
    *,
    rng: RngLike = None,
    batch: int = 4,
    max_pixels: int = MAX_PIXELS,
    progress: bool | None = None,
    prefix: str = "",
    device: DeviceLike = None,
) -> tuple[list[dict], list[Any]]:
    """Camouflage photos of any sizes at their own resolution (photos of one size share batches), write each as
    JPEG at ``settings.quality`` under ``out_dir`` (named ``<prefix><original stem>.jpg``); return one row per photo
    (the task's protocol) and (original, camouflaged) tensors for grids."""
    from pathlib import Path

    from PIL import Image

    from masquerade.fileio import atomic_open

    s = settings or CamouflageSettings()
    out = Path(out_dir)
    for im, name in zip(photos, names):
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise InputError(f"{name}: expected an 8-bit colour photo")
        if im.shape[0] * im.shape[1] > max_pixels:
            raise InputError(
                f"{name}: {im.shape[1]}×{im.shape[0]} is larger than the limit of {max_pixels} pixels; "
                "resize it first (or raise --max-pixels)"
            )
        if min(im.shape[:2]) < 32:
            raise InputError(f"{name}: {im.shape[1]}×{im.shape[0]} is too small for a quality model (32 px min)")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(photos):
        groups.setdefault(im.shape[:2], []).append(i)
    gen = as_generator(rng)
    rows: list[dict] = [{} for _ in photos]
    pairs: list[Any] = [None] * len(photos)
    for idx in groups.values():
        x = torch.from_numpy(np.stack([photos[i] for i in idx])).permute(0, 3, 1, 2).float() / 255
        t = time.perf_counter()
        y = camouflage(model, x, s, rng=gen, batch=batch, progress=progress, device=device)
        seconds = (time.perf_counter() - t) / len(idx)
        ev = evaluate_camouflage(model, x, y, s.quality)
        for j, i in enumerate(idx):
            stem = Path(names[i]).with_suffix("").as_posix().replace("/", "__")
            path = out / f"{prefix}{stem}.jpg"
            with atomic_open(path, "wb") as fh:
                Image.fromarray((deliver(y[j]) * 255).round().byte().permute(1, 2, 0).numpy()).save(
                    fh, "JPEG", quality=s.quality
                )
            rows[i] = {
                "photo": names[i],
                "score": round(float(ev["score"][j]), 2),
                "score after JPEG": round(float(ev["score_jpeg"][j]), 2),
                "camouflaged score after JPEG": round(float(ev["camouflaged_score_jpeg"][j]), 2),
                "success": bool(ev["success"][j]),
                "PSNR": round(float(ev["psnr"][j]), 2),
                "SSIM": round(float(ev["ssim"][j]), 4),
                "seconds": round(seconds, 1),
                "file": str(path),
            }
            pairs[i] = (x[j], y[j])
    return rows, pairs
