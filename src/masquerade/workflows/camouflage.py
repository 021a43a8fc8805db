"""Quality camouflage of photos against a blind image-quality model, judged through JPEG re-compression."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from masquerade.errors import InputError

__all__ = ["camouflage", "quality_model"]

PathLike = str | os.PathLike[str]


def quality_model(
    model: str = "brisque",
    *,
    threshold: float = 50.0,
    input_range: tuple[float, float] = (0.0, 1.0),
    output_range: tuple[float, float] = (0.0, 100.0),
) -> Any:
    """``brisque``, ``koncept512:WEIGHTS.pth`` or a TorchScript / torch.export file of a user's own model."""
    from masquerade.quality.models import BrisqueQuality, TorchScriptQuality

    if model == "brisque":
        return BrisqueQuality(threshold=threshold)
    if model.startswith("koncept512:"):
        from masquerade.quality.koncept import KonCept512Quality

        return KonCept512Quality(model.split(":", 1)[1], threshold=threshold)
    return TorchScriptQuality(model, input_range=input_range, output_range=output_range, threshold=threshold)


def camouflage(
    photos: PathLike,
    out: PathLike,
    *,
    model: Any = None,
    settings: dict[str, Any] | None = None,
    seed: int | None = None,
    batch: int = 4,
    max_pixels: int = 4096 * 4096,
    run_out: PathLike | None = None,
    config: dict[str, Any] | None = None,
    rating_set: PathLike | None = None,
    run_code: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Camouflage every photo of ``photos`` into JPEG files in ``out``; a run folder holds the per-photo table and
    thumbnails. Returns the summary.

    ``rating_set``: also export originals and camouflaged photos (as delivered: the JPEG files) as an appeal rating
    set, conditions ``original`` / ``camouflaged`` (``masquerade hitl serve`` shows it to raters).
    ``run_code``: the MediaEval Pixel Privacy submission layout: files named ``CODE_<original name>.jpg`` and all of
    them zipped as ``CODE.zip`` in ``out`` (written to a temporary file, then renamed).
    ``device``: where the quality model and the optimisation run (default the CPU)."""
    import torch

    from masquerade.data import load_photos
    from masquerade.devices import resolve_device
    from masquerade.quality.camouflage import CamouflageSettings, camouflage_photos
    from masquerade.runs import output_dir, start_run

    dev = resolve_device(device)  # a missing GPU is an error before any photo is read
    qm = model if model is not None and not isinstance(model, str) else quality_model(model or "brisque")
    fields = dict(settings or {})
    known = {f.name for f in dataclasses.fields(CamouflageSettings)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(f"camouflage: unknown setting(s) {unknown}; known: {', '.join(sorted(known))}")
    s = CamouflageSettings(**fields)
    if run_code is not None and not _RUN_CODE.match(run_code):
        raise InputError(
            f"--run-code {run_code[:80]!r}: 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )
    if (
        rating_set is not None
        and Path(rating_set).exists()
        and (not Path(rating_set).is_dir() or any(Path(rating_set).iterdir()))
    ):
        raise InputError(
            f"{rating_set}: already exists and is not an empty folder; give a new folder for the rating set"
        )
    images, names = load_photos(photos, channels=3)  # grey photos become RGB
    model_file = str(model).split(":", 1)[-1] if isinstance(model, str) and model != "brisque" else None
    # JPEGs land in out under the photos' names: never where the photos are, never over another command's files
    with output_dir(out, "camouflage", inputs=(photos, model_file)) as out, start_run("camouflage", out=run_out) as run:
        run.write_config(
            {**(config or {}), "input": str(photos), "out": str(out), "threshold": qm.threshold, "settings": str(s)},
            seed=seed,
        )
        rows, pairs = camouflage_photos(
            qm,
            images,
            names,
            out,
            s,
            rng=seed,
            batch=batch,
            max_pixels=max_pixels,
            prefix=f"{run_code}_" if run_code else "",
            device=dev,
        )
        good = [r for r in rows if r["score"] > qm.threshold]
        summary = {
            "photos": len(rows),
            "good quality": len(good),
            "success rate (good photos, after JPEG)": round(sum(r["success"] for r in good) / len(good), 4)
            if good
            else None,
            "mean PSNR": round(sum(r["PSNR"] for r in rows) / len(rows), 2),
            "mean seconds per photo": round(sum(r["seconds"] for r in rows) / len(rows), 1),
        }
        run.add_metrics(camouflage=rows, summary=summary)
        thumbs = []
        for x, y in pairs[:6]:
            small = [torch.nn.functional.interpolate(t[None], size=(96, 128), mode="area")[0] for t in (x, y)]
            thumbs += [small[0], small[1], ((small[1] - small[0]) * 10 + 0.5).clamp(0, 1)]
        run.save_grid(
            "camouflage",
            torch.stack(thumbs),
            ncol=3,
            scale=2,
            caption="original / camouflaged / difference ×10 (thumbnails)",
        )
    extra: dict[str, Any] = {}
    if run_code:
        extra["submission"] = str(_zip_submission(out / f"{run_code}.zip", [Path(r["file"]) for r in rows]))
    if rating_set is not None:
        extra["rating set"] = str(_appeal_set(Path(rating_set), images, names, [Path(r["file"]) for r in rows]))
    return {**summary, **extra, "run": run.path}


_RUN_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _zip_submission(path: Path, files: list[Path]) -> Path:
    """The task's submission: the JPEG files at the top of one zip, written atomically."""
    import zipfile

    from masquerade.fileio import atomic_path

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # JPEG does not compress further
            for f in files:
                z.write(f, arcname=f.name)
    return path


def _appeal_set(folder: Path, images: list[Any], names: list[str], files: list[Path]) -> Path:
    """Originals and camouflaged photos (as their JPEG files decode) as one appeal rating set, made in a temporary
    folder and renamed into place."""
    import numpy as np
    from PIL import Image

    from masquerade.fileio import atomic_dir
    from masquerade.hitl.ratingset import write_rating_set

    items: list[tuple[str, Any, dict[str, Any]]] = []
    for img, name, f in zip(images, names, files):
        with Image.open(f) as im:
            shown = np.asarray(im.convert("RGB"))
        items += [
            ("original", np.asarray(img), {"source": name}),
            ("camouflaged", shown, {"source": name, "file": f.name}),
        ]
    if folder.is_dir():
        folder.rmdir()  # empty (checked before the work): replaced by the new one
    with atomic_dir(folder) as tmp:
        write_rating_set(
            tmp,
            items,
            question_type="appeal",
            question="How appealing is this photo? 1: not at all, 5: very appealing.",
        )
    return folder
