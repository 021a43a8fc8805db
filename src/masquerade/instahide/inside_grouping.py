"""Stage 1 of the inside-dataset InstaHide attack (:mod:`masquerade.instahide.inside_attack`): the grouping.

From the released mixed labels, each class's coefficient mass per encoding; from it, the number of passes T to try
and the images per class; then, per class, the slots whose share is at least ``dominant`` grouped into that class's
images by a spectral embedding of their coefficient-weighted whitened squared encodings and a k-means held to equal
cluster sizes (every image fills the same number of slots).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from masquerade.errors import InputError


def _class_mass(labels: Any, e: int) -> np.ndarray:
    """E×C coefficient mass per class from the released mixed labels (rows of non-negative weights summing to 1)."""
    lab = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
    if lab.ndim != 2 or lab.shape[0] != e or lab.dtype.kind not in "fiu":
        raise InputError(f"instahide-inside: labels are E×classes mixed labels (E = {e}), got shape {lab.shape}")
    lab = lab.astype(np.float64)
    if not np.isfinite(lab).all() or lab.min() < -1e-6 or not np.allclose(lab.sum(1), 1.0, atol=1e-3):
        raise InputError(
            "instahide-inside: every label row must be non-negative weights summing to 1 (the coefficients of the mix)"
        )
    return np.where(lab > 1e-6, lab, 0.0)


def _counts(mass: np.ndarray, t: int) -> np.ndarray:
    """Images per class for T encodings per image: every image is mixed into k slots of each of T passes, so
    E = n·T and a class's coefficient mass is about T times its image count (largest remainders, summing to E / T)."""
    n = len(mass) // t
    per = mass.sum(0)
    raw = per / t
    count = np.floor(raw).astype(np.int64)
    count[np.argsort(count - raw)[: max(0, n - int(count.sum()))]] += 1
    while count.sum() > n:
        count[np.argmax(count)] -= 1
    return np.maximum(count, np.where(per > 0, 1, 0))


def _pass_counts(mass: np.ndarray, spectra: dict[int, Any], n_private: int | None, k: int) -> list[int]:
    """The values of T to try, best guess first. Given n, T = E / n. Otherwise each class's eigengap gives a guess
    and their median an estimate; the candidates are the divisors of E (E = n·T) within a factor 2.5 of it, nearest
    first (at most four). At k = 2 the labels count every class's slots exactly (a share of 1 is two slots), and a
    class with n_c images fills 2·n_c·T of them, so T also divides every class's count over 2."""
    e = len(mass)
    if n_private is not None:
        if e % n_private:
            raise InputError(
                f"instahide-inside: {e} encodings are not a whole number of passes over {n_private} images"
            )
        return [e // n_private]
    from masquerade.instahide.grouping import _eigengap

    per = mass.sum(0)
    guesses = {c: _eigengap(v, min(len(v) - 1, max(2, len(v) // 10))) for c, (_, v, _) in spectra.items()}
    est = max(float(np.median([per[c] / max(g, 1) for c, g in guesses.items()])), 1e-9)
    bound = e
    if k == 2 and mass.shape[1] > 1:
        slots = np.rint(((mass > 0) + (mass > 1 - 1e-6)).sum(0)).astype(np.int64)
        if (slots % 2 == 0).all():
            bound = int(np.gcd.reduce(np.concatenate([[e], slots[slots > 0] // 2])))
    divisors = np.array([d for d in range(1, e // 2 + 1) if e % d == 0 and bound % d == 0] or [1])
    gap = np.abs(np.log(divisors / est))
    near = divisors[np.argsort(gap, kind="stable")]
    return [int(d) for d in near[:4] if abs(np.log(d / est)) <= np.log(2.5)] or [int(near[0])]


def _balanced_kmeans(emb: np.ndarray, k: int, seed: int, *, rounds: int = 20, steps: int = 100) -> np.ndarray:
    """k-means on unit rows, then assignments under a price per cluster that holds every cluster near len / k
    members (every image fills the same number of slots): it undoes merged and split clusters."""
    from sklearn.cluster import KMeans

    labels = KMeans(k, n_init=10, random_state=seed).fit(emb).labels_
    target = len(emb) / k
    for _ in range(rounds):
        cent = np.stack([emb[labels == q].mean(0) if (labels == q).any() else emb[q % len(emb)] for q in range(k)])
        d2 = ((emb[:, None, :] - cent[None]) ** 2).sum(-1)
        price = np.zeros(k)
        best: tuple[float, np.ndarray] | None = None
        for _ in range(steps):
            pick = np.argmin(d2 + price, 1)
            count = np.bincount(pick, minlength=k)
            dev = float(np.abs(count - target).sum())
            if best is None or dev < best[0]:
                best = (dev, pick)
            price += 0.02 * (count - target) / target
        assert best is not None
        if (best[1] == labels).all():
            break
        labels = best[1]
    return labels


def _spectra(feats: np.ndarray, mass: np.ndarray, dominant: float) -> dict[int, Any]:
    """Per class: the rows whose share is at least ``dominant``, and the spectrum (values, vectors) of their
    coefficient-weighted whitened squared encodings' similarity."""
    spectra: dict[int, Any] = {}
    for c in np.flatnonzero(mass.sum(0) > 0):
        rows = np.flatnonzero(mass[:, c] >= min(dominant, float(mass[:, c].max())))
        g = feats[rows] * mass[rows, c, None]
        sim = g @ g.T
        np.fill_diagonal(sim, 0)
        vals, vecs = np.linalg.eigh(sim)
        spectra[int(c)] = (rows, vals, vecs)
    return spectra


def _cluster(spectra: dict[int, Any], mass: np.ndarray, count: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1: each class's dominant slots grouped into ``count[c]`` images (spectral embedding, balanced
    k-means). Returns the start design (E×n: each clustered slot's class share on its image) and every image's
    class."""
    n = int(count.sum())
    start = np.zeros((len(mass), n))
    img_class = np.repeat(np.arange(mass.shape[1]), count)
    first = np.concatenate([[0], np.cumsum(count)])
    for cls, (rows, _, vecs) in spectra.items():
        m = int(count[cls])
        if m == 0:
            continue
        if m == 1 or len(rows) <= m:
            pick = np.arange(len(rows)) % m
        else:
            emb = vecs[:, -m:]
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            pick = _balanced_kmeans(emb, m, seed)
        start[rows, first[cls] + pick] = mass[rows, cls]
    return start, img_class
