"""Data workflows: compare two image sets (SSIM / PSNR / RMSE), cut a public patch pool from photos."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from masquerade.errors import InputError

__all__ = ["compare", "patches"]

PathLike = str | os.PathLike[str]


def compare(a: PathLike, b: PathLike, *, gaussian: bool = False, out: PathLike | None = None) -> dict[str, Any]:
    """SSIM, PSNR and RMSE between two image sets of equal shape (pair by pair); writes a run folder."""
    import torch

    from masquerade.data import load_images
    from masquerade.metrics import psnr, rmse, ssim
    from masquerade.runs import start_run

    x, y = load_images(a), load_images(b)
    if x.images.shape != y.images.shape:
        raise InputError(f"{a} holds {x.images.shape} and {b} holds {y.images.shape}; they must match")
    ta = torch.from_numpy(x.images).permute(0, 3, 1, 2)
    tb = torch.from_numpy(y.images).permute(0, 3, 1, 2)
    s = ssim(ta, tb, data_range=255, gaussian_weights=gaussian)
    p = psnr(ta, tb, data_range=255)
    r = rmse(ta, tb, data_range=255)
    finite = p[torch.isfinite(p)]
    result = {
        "pairs": len(x),
        "ssim_mean": float(s.mean()),
        "ssim_min": float(s.min()),
        "psnr_mean_db": float(finite.mean()) if len(finite) else float("inf"),
        "identical_pairs": int((~torch.isfinite(p)).sum()),
        "rmse_mean": float(r.mean()),
    }
    with start_run("metrics", out=out) as run:
        run.write_config({"a": str(a), "b": str(b), "gaussian": gaussian})
        run.add_metrics(**result)
    return result


def patches(
    photos: PathLike,
    out: PathLike,
    *,
    n: int,
    size: tuple[int, int] = (64, 160),
    out_size: int = 32,
    min_keypoints: int = 40,
    seed: int | None = None,
    cache: bool = True,
    run_out: PathLike | None = None,
) -> dict[str, Any]:
    """Cut ``n`` SIFT-filtered patches (crop sides in ``size``, resized to ``out_size``) from ``photos`` into an
    ``.npz`` (images, names); writes a run folder with a grid."""
    import numpy as np

    from masquerade.data import extract_patches
    from masquerade.fileio import save_npz
    from masquerade.runs import start_run

    if size[0] > size[1]:
        raise InputError(f"--size-min {size[0]} is larger than --size-max {size[1]}")
    out = Path(out)
    if out.suffix != ".npz":
        raise InputError(f"{out}: patches are written as .npz")
    with start_run("data-patches", out=run_out) as run:
        run.write_config(
            {
                "photos": str(photos),
                "out": str(out),
                "n": n,
                "size": list(size),
                "out_size": out_size,
                "min_keypoints": min_keypoints,
            },
            seed=seed,
        )
        pool = extract_patches(photos, n, size, out_size=out_size, min_keypoints=min_keypoints, rng=seed, cache=cache)
        save_npz(out, images=pool.images, names=np.array(pool.names))
        run.add_metrics(patches=len(pool), out=str(out))
        run.save_grid("patches", pool.images[:64], ncol=16, scale=2, caption="first 64 SIFT-filtered patches")
        run.log(f"wrote {len(pool)} patches to {out}")
    return {"patches": len(pool), "out": out, "run": run.path}
