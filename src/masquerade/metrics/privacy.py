"""Privacy scores of reconstructions against the private originals: the one home of the success threshold and of
best-match scoring, used by ``attack``, ``evaluate``, the challenge's scorer, ATS's evaluation and the report.

- ``SUCCESS_SSIM``: an original counts as found when its best reconstruction's SSIM exceeds 0.8 (the InstaHide
  Challenge's criterion, Carlini et al. 2021);
- :func:`best_match`: per original, the SSIM and PSNR of its best-matching reconstruction (Max_SSIM, as the
  challenge scores an unordered set), or of its own one where reconstructions are aligned with the originals;
- :func:`privacy_scores`: their means and the share found, from uint8 images or [0, 1] tensors alike (both are
  scored as the uint8 images they are, so every caller's numbers agree).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from masquerade.errors import InputError

__all__ = ["SUCCESS_SSIM", "best_match", "privacy_scores"]

SUCCESS_SSIM = 0.8
PSNR_CAP = 100.0  # dB: identical images would be infinite; a mean over targets stays finite


def _uint8_nhwc(images: Any, what: str) -> np.ndarray:
    """uint8 N×H×W×C as is; a float N×C×H×W tensor or array in [0, 1] through the project's one quantiser."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        if images.ndim != 4:
            raise InputError(f"{what}: expected N×H×W×C images, got shape {images.shape}")
        return images
    import torch

    from masquerade.data.imageset import to_uint8

    t = torch.as_tensor(images)
    if t.ndim != 4:
        raise InputError(f"{what}: expected N×C×H×W images, got shape {tuple(t.shape)}")
    return to_uint8(t.float().clamp(0, 1)).permute(0, 2, 3, 1).contiguous().numpy()


def best_match(
    originals: np.ndarray, recon: np.ndarray, *, aligned: bool, chunk: int = 20000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per original (uint8 N×H×W×C), the SSIM of its best-matching reconstruction (uint8 M×H×W×C), that match's
    PSNR (capped at 100 dB) and its index. ``aligned``: reconstruction i belongs to original i, nothing is searched.
    All N×M pairs are scored in chunks of ``chunk`` pairs."""
    import torch

    from masquerade.metrics import psnr, ssim

    if originals.shape[1:] != recon.shape[1:]:
        raise InputError(f"the originals are {originals.shape[1:]}, the reconstructions {recon.shape[1:]}")
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)  # noqa: E731
    n, m = len(originals), len(recon)
    if m == 0:
        raise InputError("no reconstructions to score")
    if aligned:
        if m < n:
            raise InputError(f"an aligned attack returned {m} reconstructions for {n} targets")
        idx = np.arange(n)
        best = ssim(to(originals), to(recon[:n]), data_range=255).numpy().astype(np.float64)
    else:
        scores = np.empty((n, m))
        flat = n * m
        for lo in range(0, flat, chunk):
            ij = np.arange(lo, min(flat, lo + chunk))
            scores.reshape(-1)[ij] = ssim(to(originals[ij // m]), to(recon[ij % m]), data_range=255).numpy()
        idx = scores.argmax(1)
        best = scores[np.arange(n), idx]
    p = psnr(to(originals), to(recon[idx]), data_range=255).numpy().astype(np.float64)
    return best, np.minimum(p, PSNR_CAP), idx


def privacy_scores(recon: Any, originals: Any, *, aligned: bool) -> dict[str, Any]:
    """Mean SSIM and PSNR of each original's (best-matching) reconstruction, the share found (SSIM >
    ``SUCCESS_SSIM``) and the per-original SSIM. Either argument: uint8 N×H×W×C, or [0, 1] N×C×H×W."""
    rec = _uint8_nhwc(recon, "reconstructions")
    orig = _uint8_nhwc(originals, "originals")
    paired = aligned and len(rec) == len(orig)
    best, p, idx = best_match(orig, rec, aligned=paired)
    return {
        "ssim": float(best.mean()),
        "psnr": float(p.mean()),
        "success": float((best > SUCCESS_SSIM).mean()),
        "per_target_ssim": best,
        "per_target_psnr": p,
        "match": idx,
        "matching": "paired" if paired else "best match",
    }
