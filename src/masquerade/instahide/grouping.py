"""Which private images each encoding mixes: spectral clustering of slots, the number of images from the recipe, and
refinement rounds of rescoring and balanced reassignment (stages 2 and 3 of :mod:`masquerade.instahide.attack`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from masquerade.errors import InputError
from masquerade.instahide.recipe import Slots
from masquerade.instahide.reconstruct import _whitened, _whitening, reconstruct_private

__all__ = ["Candidates", "PairScorer", "SPLITS", "balanced_pairs", "cluster_slots", "images_per_class", "refine_pairs"]


SPLITS = (0.5, 0.6, 0.7, 0.8, 0.9)  # shares of the larger image when both private images are of one class


def _eigengap(vals: np.ndarray, kmax: int) -> int:
    top = np.sort(vals)[::-1][: kmax + 1]
    top = np.maximum(top, 1e-12)
    ratios = top[:-1] / top[1:]
    return int(np.argmax(ratios[1:]) + 2) if len(ratios) > 1 else 1


def cluster_slots(
    enc: np.ndarray | torch.Tensor, slots: Slots, *, n_private: int | None = None, eps: float = 1e-3, seed: int = 0
) -> dict[str, Any]:
    """Group the slots into private images: per class, spectral clustering of coefficient-weighted whitened squared
    encodings, with the number of images per class from :func:`images_per_class`. Returns ``pairs`` (E×2 image
    ids), ``confidence`` (E×2), ``per_class`` (images per class), ``n_images`` and ``passes`` (the estimated
    number of encodings per image and slot, T)."""
    e = torch.as_tensor(np.asarray(enc, dtype=np.float32))
    e = e.reshape(len(e), -1)
    n_enc = len(e)
    feats = _whitened(e, eps)
    if not slots.labelled:
        return _cluster_unlabelled(feats, n_private, seed)
    cls = slots.c.reshape(-1)  # slot s = 2 j + t
    lam = slots.lam.reshape(-1)
    enc_of = np.repeat(np.arange(n_enc), 2)
    primary = np.ones(2 * n_enc, bool)
    primary[1::2][slots.same] = False  # a same-class encoding's second slot is placed after
    classes = [int(c) for c in np.unique(cls)]
    spectra = {c: _spectrum(feats[enc_of[(cls == c) & primary]] * lam[(cls == c) & primary, None]) for c in classes}
    counts = {c: int((cls == c).sum()) for c in classes}
    guesses = (
        None
        if n_private is not None
        else {c: _eigengap(v, min(len(v) - 1, max(2, len(v) // 20))) for c, (v, _) in spectra.items()}
    )
    per_class, passes = images_per_class(counts, n_enc, n_private=n_private, guesses=guesses)
    img = -np.ones(2 * n_enc, np.int64)
    conf = np.zeros(2 * n_enc, np.float32)
    next_id = 0
    for c in classes:
        sl = np.flatnonzero((cls == c) & primary)
        k = min(per_class[c], len(sl))
        labels, dist = _kmeans(spectra[c][1], k, seed)
        dist = np.sort(dist, axis=1)
        margin = dist[:, 1] - dist[:, 0] if k > 1 else np.ones(len(sl))
        img[sl] = labels + next_id
        conf[sl] = margin / max(float(np.median(margin)), 1e-12) * lam[sl]
        per_class[c] = k
        next_id += k
    # a same-class encoding's second slot is unknown: the pair (a, a) marks it, and reconstruction leaves it out
    img[1::2][slots.same] = img[0::2][slots.same]
    conf[1::2][slots.same] = 0.0
    return {
        "pairs": img.reshape(n_enc, 2),
        "confidence": conf.reshape(n_enc, 2),
        "per_class": per_class,
        "n_images": next_id,
        "passes": passes,
    }


def images_per_class(
    slot_counts: dict[int, int],
    n_encodings: int,
    *,
    n_private: int | None = None,
    guesses: dict[int, int] | None = None,
) -> tuple[dict[int, int], float]:
    """How many private images each class holds, and T, the number of encodings per image and slot.

    The recipe puts every private image in exactly 2T slots, so a class with s slots holds s / 2T images. Given
    ``n_private``, T = E / n and the n images are shared out by slot counts (largest remainders). Otherwise each
    class's spectral guess gives its own T, their median estimates the common T, and that estimate is snapped to
    the nearest divisor of the greatest common divisor of E and every class's s / 2 (what T must divide when the
    recipe holds) if one lies within a factor 1.5: noisy per-class guesses then still give exact counts."""
    classes = sorted(slot_counts)
    s = np.array([slot_counts[c] for c in classes], np.int64)
    if n_private is not None:
        quota = n_private * s / s.sum()
        n = np.floor(quota).astype(np.int64)
        n[np.argsort(-(quota - n), kind="stable")[: n_private - int(n.sum())]] += 1
        n = np.maximum(n, 1)
        return dict(zip(classes, n.tolist())), n_encodings / n_private
    if guesses is None:
        raise InputError("images_per_class: give n_private or per-class guesses")
    t_hat = float(np.median([slot_counts[c] / (2 * max(1, guesses[c])) for c in classes]))
    t = t_hat
    if (s % 2 == 0).all():
        g = int(np.gcd.reduce(np.append(s // 2, n_encodings)))
        div = np.array([d for d in range(1, int(np.sqrt(g)) + 1) if g % d == 0], np.int64)
        div = np.unique(np.concatenate([div, g // div]))
        near = div[np.argmin(np.abs(np.log(div / t_hat)))]
        if abs(np.log(near / t_hat)) <= np.log(1.5):
            t = float(near)
    n = np.maximum(1, np.round(s / (2 * t)).astype(np.int64))
    return dict(zip(classes, n.tolist())), t


def _spectrum(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of the similarity ``g gᵀ`` (zero diagonal), ascending."""
    sim = g @ g.T
    np.fill_diagonal(sim, 0)
    return np.linalg.eigh(sim)


def _kmeans(vecs: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means on the top k eigenvectors (rows normalised); each row's cluster and distances to every centroid."""
    from sklearn.cluster import KMeans

    emb = vecs[:, -k:]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    km = KMeans(k, n_init=10, random_state=seed).fit(emb)
    return km.labels_, km.transform(emb)


def _cluster_unlabelled(feats: np.ndarray, n_private: int | None, seed: int) -> dict[str, Any]:
    """Without labels: cluster whole encodings; an encoding's two images are its nearest two centroids."""
    m = len(feats)
    vals, vecs = _spectrum(feats)
    guess = None if n_private is not None else {0: _eigengap(vals, max(2, m // 20))}
    per_class, passes = images_per_class({0: 2 * m}, m, n_private=n_private, guesses=guess)
    k = max(2, min(per_class[0], m))
    _, dist = _kmeans(vecs, k, seed)
    order = np.argsort(dist, axis=1)[:, :3]
    d = np.take_along_axis(dist, order, 1)
    conf = np.stack([d[:, 2] - d[:, 0], d[:, 2] - d[:, 1]], 1).astype(np.float32)
    return {
        "pairs": order[:, :2].astype(np.int64),
        "confidence": conf,
        "per_class": {0: k},
        "n_images": k,
        "passes": passes,
    }


@dataclass(frozen=True)
class Candidates:
    """Every encoding's candidate pairs, padded to one width: image ids ``a``, ``b`` (E×M), the split used for a
    same-class encoding (E×M index into the splits, -1 elsewhere) and the score (E×M, -inf for padding)."""

    a: np.ndarray
    b: np.ndarray
    split: np.ndarray
    score: np.ndarray


class PairScorer:
    """Scores "encoding j holds images a and b" for every candidate pair, given image estimates.

    Each hypothesis predicts the encoding's expected square, ``E[e² | x_a, x_b] = u² + 2 u m + E[P²]`` with
    ``u = lam_a x_a + lam_b x_b`` and the public part P of mean m (both from the public pool's statistics); the
    score is the cosine between prediction and observation after both are centred and whitened like the
    clustering's features (``eps`` 1e-4: the noise the public patches add is spread over all directions, so
    whitening deeper than the clustering's pays). With the true images, the larger slot's image wins among the
    class's candidates for 99 % of encodings and the smaller slot's for 79 % (eps 1e-2 gave 97 % / 71 %).
    Candidates are the images of the slot's class (from the labels); for a same-class encoding, whose label gives
    only the sum of the two coefficients, every split in ``splits`` is tried and the best kept."""

    def __init__(
        self,
        enc: torch.Tensor,
        slots: Slots,
        mean: torch.Tensor,
        var: torch.Tensor,
        energy: np.ndarray,
        *,
        eps: float = 1e-4,
        splits: tuple[float, ...] = SPLITS,
        chunk: int = 2_000_000,
    ) -> None:
        f, ym, t = _whitening(enc, eps)
        self.t = t.float()
        yt = (f @ t).float()
        self.yt = yt / yt.norm(dim=1, keepdim=True).clamp(min=1e-12)
        self.ym = ym.float()
        self.slots = slots
        self.lam = torch.as_tensor(slots.lam, dtype=torch.float32)
        self.r = 1 - self.lam.sum(1)
        self.energy = torch.as_tensor(np.asarray(energy, dtype=np.float32))
        self.mean, self.var = mean.float(), var.float()
        self.splits = tuple(float(v) for v in splits)
        self.chunk = chunk
        key = slots.c[:, 0] * (int(slots.c.max()) + 1) + slots.c[:, 1]
        self.groups = [np.flatnonzero(key == k) for k in np.unique(key)]

    def score(self, x: torch.Tensor, img_class: np.ndarray) -> Candidates:
        """Scores of every candidate pair for image estimates ``x`` (n×D on [-1, 1]) whose classes are
        ``img_class`` (n)."""
        x = x.float()
        t = self.t
        tx2, txm = (x * x) @ t, (x * self.mean) @ t
        const = (self.mean * self.mean) @ t, self.var @ t, self.ym @ t
        members = {int(c): np.flatnonzero(img_class == c) for c in np.unique(img_class)}
        width = max(len(v) for v in members.values()) ** 2
        n_enc = len(self.lam)
        out = Candidates(
            np.zeros((n_enc, width), np.int64),
            np.zeros((n_enc, width), np.int64),
            np.full((n_enc, width), -1, np.int64),
            np.full((n_enc, width), -np.inf, np.float32),
        )
        for js in self.groups:
            c0, c1 = (int(v) for v in self.slots.c[js[0]])
            ia, ib = members.get(c0, np.zeros(0, np.int64)), members.get(c1, np.zeros(0, np.int64))
            if len(ia) == 0 or len(ib) == 0 or (c0 == c1 and len(ia) < 2):
                continue
            xa, xb = x[torch.from_numpy(ia)], x[torch.from_numpy(ib)]
            tab = ((xa[:, None] * xb[None]).reshape(-1, x.shape[1]) @ t).reshape(len(ia), len(ib), -1)
            per = max(1, self.chunk // max(1, tab.numel()))
            for lo in range(0, len(js), per):
                j = torch.from_numpy(js[lo : lo + per])
                best, arg = self._score_group(j, c0 == c1, tx2[ia], tx2[ib], txm[ia], txm[ib], tab, const)
                m = len(ia) * len(ib)
                jj = js[lo : lo + per]
                out.a[jj, :m] = np.repeat(ia, len(ib))[None]
                out.b[jj, :m] = np.tile(ib, len(ia))[None]
                out.score[jj, :m] = best.reshape(len(jj), -1).numpy()
                if c0 == c1:
                    out.split[jj, :m] = arg.reshape(len(jj), -1).numpy()
        return out

    def _score_group(
        self,
        j: torch.Tensor,
        same: bool,
        ta2: torch.Tensor,
        tb2: torch.Tensor,
        tam: torch.Tensor,
        tbm: torch.Tensor,
        tab: torch.Tensor,
        const: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tm2, tv, tym = const
        r = self.r[j][:, None, None, None]
        base = r * r * tm2 + self.energy[j][:, None, None, None] * tv - tym
        y = self.yt[j]
        lams = (
            [self.lam[j]]
            if not same
            else [torch.stack([self.lam[j].sum(1) * v, self.lam[j].sum(1) * (1 - v)], 1) for v in self.splits]
        )
        best = arg = None
        for si, lm in enumerate(lams):
            la, lb = lm[:, 0, None, None, None], lm[:, 1, None, None, None]
            pt = (
                la * la * ta2[None, :, None]
                + lb * lb * tb2[None, None]
                + 2 * la * lb * tab[None]
                + 2 * r * (la * tam[None, :, None] + lb * tbm[None, None])
                + base
            )
            cos = torch.einsum("jabk,jk->jab", pt, y) / pt.norm(dim=-1).clamp(min=1e-12)
            if same:  # an image is never mixed with itself
                cos.diagonal(dim1=1, dim2=2).fill_(-torch.inf)
            if best is None:
                best, arg = cos, torch.zeros(cos.shape, dtype=torch.int64)
            else:
                assert arg is not None
                better = cos > best
                best = torch.where(better, cos, best)
                arg = torch.where(better, torch.full_like(arg, si), arg)
        assert best is not None and arg is not None
        return best, arg


def balanced_pairs(
    cand: Candidates,
    n_images: int,
    *,
    capacity: np.ndarray | float | None = None,
    temperature: float = 20.0,
    steps: int = 60,
    rate: float = 0.02,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Each encoding's pair, so that every image fills about its number of slots (the challenge's recipe puts
    every private image in the same number of encodings): maximise the total score under the capacities by
    Lagrangian relaxation, a price per image raised while it holds too many slots and lowered while it holds too
    few. Returns the pairs (E×2), the chosen candidate's column (E; -1 and the pair (-1, -1) for an encoding
    without a finite candidate) and the remaining imbalance (slots placed beyond or short of capacity, summed over
    images) of the most balanced step."""
    n_enc = len(cand.score)
    valid = np.isfinite(cand.score).any(1)
    cap = (
        np.full(n_images, 2 * n_enc / n_images)
        if capacity is None
        else np.broadcast_to(np.asarray(capacity, np.float64), (n_images,))
    )
    base = cand.score.astype(np.float64) * temperature
    price = np.zeros(n_images)
    rows = np.arange(n_enc)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(max(1, steps)):
        k = np.argmax(base - price[cand.a] - price[cand.b], axis=1)
        count = np.bincount(cand.a[rows, k][valid], minlength=n_images) + np.bincount(
            cand.b[rows, k][valid], minlength=n_images
        )
        dev = float(np.abs(count - cap).sum())
        if best is None or dev < best[0]:
            best = (dev, k)
        price += rate * (count - cap) / max(float(cap.mean()), 1e-9)
    assert best is not None
    k = np.where(valid, best[1], -1)
    pairs = np.where(valid[:, None], np.stack([cand.a[rows, k], cand.b[rows, k]], 1), -1)
    return pairs, k, best[0]


def refine_pairs(
    enc: torch.Tensor,
    slots: Slots,
    pairs: np.ndarray,
    n_images: int,
    mean: torch.Tensor,
    var: torch.Tensor,
    energy: np.ndarray,
    *,
    rounds: int = 8,
    eps: float = 1e-4,
    splits: tuple[float, ...] = SPLITS,
    temperature: float = 20.0,
    steps: int = 60,
    rate: float = 0.02,
    tol: float = 0.002,
    recon: dict[str, Any] | None = None,
    start: dict[str, np.ndarray] | None = None,
    prior: Callable[[torch.Tensor, np.ndarray, np.ndarray, np.ndarray], torch.Tensor] | None = None,
    checkpoint: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, np.ndarray]:
    """Alternate reconstruction and a balanced reassignment of slots to images, scored against the current
    image estimates with each slot's partner held at its own estimate (so a wrong pairing cannot explain itself).

    ``pairs`` (E×2) is the starting grouping; the image classes come from it. Same-class encodings start with
    their second slot unknown (the pair (a, a)) and left out; once assigned, they enter with the split of their
    coefficient that scored best. Stops after ``rounds`` or when fewer than ``tol`` of the slots move.
    ``start``/``checkpoint`` resume and record rounds (``{"round", "pairs", "lam", "weights"}``); ``prior(x, pairs,
    lam, weights)`` maps each round's reconstruction to the estimates the scores compare against (a denoiser)."""
    recon = dict(recon or {})
    img_class = np.zeros(n_images, np.int64)
    img_class[pairs[:, 0]] = slots.c[:, 0]
    img_class[pairs[:, 1]] = slots.c[:, 1]
    scorer = PairScorer(enc, slots, mean, var, energy, eps=eps, splits=splits)
    lam = np.asarray(slots.lam, np.float32)
    weights = (pairs[:, 0] != pairs[:, 1]).astype(np.float32)
    first = 0
    if start is not None:
        pairs, lam, weights, first = start["pairs"], start["lam"], start["weights"], int(start["round"]) + 1
    for rnd in range(first, rounds):
        x, nll = reconstruct_private(enc, pairs, lam, n_images, mean, var, energy, weights=weights, **recon)
        if prior is not None:  # score against the prior's cleaner estimates
            x = prior(x, pairs, lam, weights)
        cand = scorer.score(x, img_class)
        new, k, imbalance = balanced_pairs(cand, n_images, temperature=temperature, steps=steps, rate=rate)
        kept = k < 0  # no candidate (a class with one image): keep what the encoding had
        new[kept] = pairs[kept]
        split = np.where(kept, -1, cand.split[np.arange(len(k)), np.maximum(k, 0)])
        new_lam = np.asarray(slots.lam, np.float32).copy()
        new_lam[kept] = lam[kept]
        same = split >= 0
        total = new_lam[same].sum(1)
        share = np.asarray(splits, np.float32)[split[same]]
        new_lam[same, 0], new_lam[same, 1] = total * share, total * (1 - share)
        moved = float((new != pairs).mean())
        weights = np.where(kept, weights, 1.0).astype(np.float32)
        pairs, lam = new, new_lam
        log(
            f"challenge attack: round {rnd + 1}/{rounds}: fit NLL {nll:.4f}, {moved:.1%} of slots moved, "
            f"imbalance {imbalance:.0f} slots"
        )
        state = {"round": np.asarray(rnd, np.int64), "pairs": pairs, "lam": lam, "weights": weights}
        if checkpoint is not None:
            checkpoint(rnd, state)
        if moved < tol:
            break
    return {"pairs": pairs, "lam": lam, "weights": weights}
