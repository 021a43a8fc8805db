"""Quality camouflage of photos against a blind image-quality model, judged through JPEG re-compression."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from masquerade.errors import InputError

__all__ = ["camouflage", "quality_model"]

PathLike = str | os.PathLike[str]


def quality_model(model: str = "brisque", *, threshold: float = 50.0, input_range: tuple[float, float] = (0.0, 1.0),
                  output_range: tuple[float, float] = (0.0, 100.0)) -> Any:
    """``brisque``, ``koncept512:WEIGHTS.pth`` or a TorchScript / torch.export file of a user's own model."""
    from masquerade.quality.models import BrisqueQuality, TorchScriptQuality

    if model == "brisque":
        return BrisqueQuality(threshold=threshold)
    if model.startswith("koncept512:"):
        from masquerade.quality.koncept import KonCept512Quality

        return KonCept512Quality(model.split(":", 1)[1], threshold=threshold)
    return TorchScriptQuality(model, input_range=input_range, output_range=output_range, threshold=threshold)


def camouflage(photos: PathLike, out: PathLike, *, model: Any = None, settings: dict[str, Any] | None = None,
               seed: int | None = None, batch: int = 4, max_pixels: int = 4096 * 4096,
               run_out: PathLike | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Camouflage every photo of ``photos`` into JPEG files in ``out``; a run folder holds the per-photo table and
    thumbnails. Returns the summary."""
    import torch

    from masquerade.data import load_photos
    from masquerade.quality.camouflage import CamouflageSettings, camouflage_photos
    from masquerade.runs import start_run

    qm = model if model is not None and not isinstance(model, str) else quality_model(model or "brisque")
    fields = dict(settings or {})
    known = {f.name for f in dataclasses.fields(CamouflageSettings)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(f"camouflage: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
    s = CamouflageSettings(**fields)
    images, names = load_photos(photos, channels=3)   # grey photos become RGB
    out = Path(out)
    with start_run("camouflage", out=run_out) as run:
        run.write_config({**(config or {}), "input": str(photos), "out": str(out), "threshold": qm.threshold,
                          "settings": str(s)}, seed=seed)
        rows, pairs = camouflage_photos(qm, images, names, out, s, rng=seed, batch=batch, max_pixels=max_pixels)
        good = [r for r in rows if r["score"] > qm.threshold]
        summary = {"photos": len(rows), "good quality": len(good),
                   "success rate (good photos, after JPEG)": round(sum(r["success"] for r in good) / len(good), 4)
                   if good else None,
                   "mean PSNR": round(sum(r["PSNR"] for r in rows) / len(rows), 2),
                   "mean seconds per photo": round(sum(r["seconds"] for r in rows) / len(rows), 1)}
        run.add_metrics(camouflage=rows, summary=summary)
        thumbs = []
        for x, y in pairs[:6]:
            small = [torch.nn.functional.interpolate(t[None], size=(96, 128), mode="area")[0] for t in (x, y)]
            thumbs += [small[0], small[1], ((small[1] - small[0]) * 10 + 0.5).clamp(0, 1)]
        run.save_grid("camouflage", torch.stack(thumbs), ncol=3, scale=2,
                      caption="original / camouflaged / difference ×10 (thumbnails)")
    return {**summary, "run": run.path}
