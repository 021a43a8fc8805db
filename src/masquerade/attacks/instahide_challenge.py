"""An attack on the InstaHide Challenge that runs on a CPU: recover the private images from the encodings alone.

The attacker reads ``encryption.npy`` (E×H×W×C, signs flipped) and, unless ``use_labels=False``, ``label.npy`` (the
coefficient-weighted one-hots of each encoding's two private images). It may use public data of its own: photos to
cut public patches from (for their pixel statistics) and labelled auxiliary images disjoint from the private set (to
learn the colour correction on a challenge it simulates itself). It never reads the truth folder.

Stages (each timed, each cached in the output folder under a hash of its inputs, so an interrupted attack resumes):

1. **slots** -- every encoding holds two private images; the labels name their classes and coefficients
   (two equal classes give one entry: the sum, split later).
2. **clusters** -- the slots of each class are grouped into private images by spectral clustering of the whitened
   squared encodings weighted by the slot's coefficient (one eigendecomposition of the D×D Gram matrix for the
   whitening, one of a slots×slots similarity per class). The number of images per class comes from ``n_private``
   when given; otherwise from the recipe: every image fills exactly 2T slots, so the per-class spectral guesses
   give T, snapped to a divisor of what T must divide, and each class's slot count divided by 2T.
3. **refine** -- rounds of reconstruct (stage 4) and reassign: every encoding's candidate pairs (an image of each
   slot's class) are scored by the cosine, in a deeper whitening, between its squared encoding and what the pair
   predicts with both images at their current estimates, so the partner explains its share and a wrong pairing
   cannot explain itself; then one balanced assignment for all encodings (Lagrangian prices per image, since every
   image fills the same number of slots). A same-class encoding tries several splits of its coefficient sum.
4. **reconstruct** -- all private images at once. Per pixel, the encodings that mix images a and b measure
   ``|lam_a x_a + lam_b x_b + public|``; the squared encodings give a noisy rank-one matrix ``x x^T`` whose top
   eigenvector fixes every image's pixel up to one sign per pixel shared by all images. Those signs are chosen by
   propagating along a maximum spanning tree of neighbouring pixels (natural images are smooth), then the images are
   refined by expectation-maximisation of the folded-normal likelihood (the public part as Gaussian noise with the
   public pool's per-pixel mean and variance), with a smoothness prior solved in closed form in the eigenbases of the
   design and of the pixel-grid Laplacian; the signs are synchronised once more on the refined images and EM rerun;
   both global signs are tried and the likelier kept.
5. **prior** -- a learned image prior (:mod:`masquerade.attacks.instahide_prior`, shipped with the package): a
   small denoiser trained offline on challenges simulated from labelled images that are not the private ones,
   mapping each reconstruction (and how much evidence it rests on) to a cleaner image; the refine stage also scores
   against its outputs. Without a prior, **colour**: a per-pixel cubic map from recovered to true colours, fitted
   on a challenge the attacker simulates from its auxiliary images (with its own ground truth).
6. **output** -- one recovery per encoding (the image of its larger-coefficient slot) as ``decryption.npy``,
   the private images as ``private_images.npy`` and a grid.

Without labels (``use_labels=False``) whole encodings are clustered, an encoding's two images are its two nearest
centroids, and the refine stage is skipped (its candidates come from the classes).
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import InputError
from ..schemes.instahide import sample_coefficients

__all__ = ["ChallengeAttackSettings", "attack_challenge", "parse_slots", "reconstruct_private", "sign_sync",
           "refine_pairs", "balanced_pairs", "PairScorer", "Candidates",
           "cluster_slots", "public_statistics", "Slots", "ColourMap", "simulate_challenge"]


SPLITS = (0.5, 0.6, 0.7, 0.8, 0.9)   # shares of the larger image when both private images are of one class


@dataclass(frozen=True)
class ChallengeAttackSettings:
    n_private: int | None = None      # None: estimate the number of private images per class (eigengap)
    use_labels: bool = True           # False: ignore label.npy (coefficients and classes unknown)
    beta: float = 0.3                 # smoothness prior between neighbouring pixels (and colour channels)
    whiten_eps: float = 1e-3          # clustering's whitening of the squared encodings: s / sqrt(s^2 + eps s_0^2)
    rounds: int = 8                   # reconstruct + balanced reassignment rounds after the clustering (0: none)
    score_eps: float = 1e-4           # the reassignment scores' whitening (deeper than the clustering's)
    temperature: float = 20.0         # scores (cosines) times this before prices are subtracted
    price_steps: int = 60             # Lagrangian price updates per assignment
    price_rate: float = 0.02
    splits: tuple[float, ...] = SPLITS  # tried shares of the larger image in a same-class encoding
    tol: float = 0.002                # stop refining when fewer than this share of slots move
    resync: int = 1                   # sign re-synchronisations on the refined images (then EM again)
    anneal: tuple[float, ...] = (4.0, 2.0, 1.5, 1.0, 1.0)   # EM noise-variance multipliers, one per round
    em_steps: int = 8                 # EM steps per round
    public_patches: int = 2000        # patches cut from the public photos for their pixel statistics
    k: int = 6                        # the challenge's recipe (for the public coefficients' energy)
    upper: float = 0.65
    dom: float = 0.3
    colour: bool = True               # learn a colour correction on a simulated challenge (needs auxiliary images)
    colour_images: int = 100
    colour_per_image: int = 20
    seed: int = 0                     # the attacker's own randomness (clustering, simulation)

    def __post_init__(self) -> None:
        if self.n_private is not None and self.n_private < 1:
            raise InputError(f"challenge attack: n_private must be positive, got {self.n_private}")
        if self.beta < 0 or self.whiten_eps <= 0 or self.em_steps < 1 or not self.anneal:
            raise InputError("challenge attack: beta >= 0, whiten_eps > 0, em_steps >= 1 and a non-empty anneal")
        if self.rounds < 0 or self.score_eps <= 0 or self.temperature <= 0 or self.price_steps < 1 \
                or self.price_rate < 0 or self.resync < 0 or not 0 <= self.tol < 1:
            raise InputError("challenge attack: rounds >= 0, score_eps > 0, temperature > 0, price_steps >= 1, "
                             "price_rate >= 0, resync >= 0 and 0 <= tol < 1")
        if not self.splits or not all(0.5 <= v < 1 for v in self.splits):
            raise InputError("challenge attack: splits are shares of the larger image, in [0.5, 1)")


@dataclass(frozen=True)
class Slots:
    """Each encoding's two private slots: classes ``c`` (E×2), coefficients ``lam`` (E×2)."""
    c: np.ndarray
    lam: np.ndarray
    same: np.ndarray   # both slots in one class (the label shows only their sum)
    labelled: bool = True


def parse_slots(labels: np.ndarray | None, count: int, *, k: int = 6, upper: float = 0.65, dom: float = 0.3
                ) -> Slots:
    """Slots from ``label.npy``; without labels every slot gets class 0 and the sampler's mean coefficient."""
    if labels is None:
        lam = sample_coefficients(100_000, k, upper=upper, dom=dom, private=2, rng=0)[:, :2].mean()
        return Slots(np.zeros((count, 2), np.int64), np.full((count, 2), lam, np.float32), np.zeros(count, bool),
                     labelled=False)
    lab = np.asarray(labels, dtype=np.float64)
    if lab.ndim != 2 or len(lab) != count:
        raise InputError(f"label.npy has shape {lab.shape}; expected ({count}, classes)")
    if not np.isfinite(lab).all() or (lab < 0).any():
        raise InputError("label.npy: labels must be finite and non-negative")
    nonzero = (lab > 0).sum(1)
    if (nonzero == 0).any() or (nonzero > 2).any():
        bad = int(np.flatnonzero((nonzero == 0) | (nonzero > 2))[0])
        raise InputError(f"label.npy row {bad} has {nonzero[bad]} non-zero entries; the challenge labels mix "
                         f"exactly two private images (one entry when both share a class)")
    if lab.shape[1] < 2:               # a one-class challenge: every row mixes two images of that class
        lab = np.pad(lab, ((0, 0), (0, 2 - lab.shape[1])))
    c = np.argsort(-lab, axis=1, kind="stable")[:, :2]
    same = nonzero == 1
    c[same, 1] = c[same, 0]
    lam = np.take_along_axis(lab, c, 1)
    lam[same] = lam[same, :1] / 2
    return Slots(c.astype(np.int64), lam.astype(np.float32), same)


def public_statistics(pool: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and variance (flattened H·W·C) of public patches (uint8 N×H×W×C) on the [-1, 1] scale."""
    p = torch.from_numpy(np.asarray(pool, dtype=np.float32) / 127.5 - 1).reshape(len(pool), -1)
    return p.mean(0), p.var(0)


_ENERGY_BINS = np.linspace(0, 1, 41)


@functools.lru_cache(maxsize=8)
def _energy_table(k: int, upper: float, dom: float) -> np.ndarray:
    sim = sample_coefficients(200_000, k, upper=upper, dom=dom, private=2, rng=0)
    rs, qs = 1 - sim[:, :2].sum(1), (sim[:, 2:] ** 2).sum(1)
    b = np.digitize(rs, _ENERGY_BINS)
    n = len(_ENERGY_BINS) + 1
    sums, counts = np.bincount(b, qs, n), np.bincount(b, minlength=n)
    return np.where(counts > 0, sums / np.maximum(counts, 1), qs.mean())


def _public_energy(r: np.ndarray, k: int, upper: float, dom: float) -> np.ndarray:
    """E[sum of the squared public coefficients | their sum r], from the challenge's coefficient sampler (its table
    is drawn once per recipe)."""
    return _energy_table(k, float(upper), float(dom))[np.digitize(r, _ENERGY_BINS)].astype(np.float32)


# ----------------------------------------------------------------------------------------------------- pixels ---

def _grid_edges(h: int, w: int, c: int) -> np.ndarray:
    """Neighbour pairs over flattened H·W·C pixels: vertical, horizontal, and between colour channels."""
    idx = np.arange(h * w * c).reshape(h, w, c)
    e = [np.stack([idx[:-1].ravel(), idx[1:].ravel()], 1), np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1)]
    for a in range(c):
        for b in range(a + 1, c):
            e.append(np.stack([idx[..., a].ravel(), idx[..., b].ravel()], 1))
    return np.concatenate(e)


def sign_sync(x: torch.Tensor, edges: np.ndarray) -> torch.Tensor:
    """One sign per pixel making neighbouring pixels agree across images: propagate the sign of the correlation
    along a maximum spanning tree of |correlation| (robust where a spectral relaxation flips whole regions)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

    d = x.shape[1]
    xc = x / x.norm(dim=0, keepdim=True).clamp(min=1e-6)
    corr = (xc[:, edges[:, 0]] * xc[:, edges[:, 1]]).sum(0).numpy().astype(np.float64)
    g = sp.coo_matrix((-(np.abs(corr) + 1e-9), (edges[:, 0], edges[:, 1])), shape=(d, d)).tocsr()
    tree = minimum_spanning_tree(g)
    tree = (tree + tree.T).tocsr()
    sign_of = sp.coo_matrix((np.where(corr >= 0, 1.0, -1.0), (edges[:, 0], edges[:, 1])), shape=(d, d)).tocsr()
    sign_of = (sign_of + sign_of.T).tocsr()
    # the sign of a pixel is the product of the edge signs on its path to the root: pointer jumping over the
    # spanning forest's parent links (roots point to themselves with sign +1)
    parent = np.arange(d)
    seen = np.zeros(d, bool)
    for root in range(d):   # one tree per connected component (a pixel grid has one)
        if seen[root]:
            continue
        order, pred = breadth_first_order(tree, root, directed=False)
        seen[order] = True
        parent[order[1:]] = pred[order[1:]]
    child = np.flatnonzero(parent != np.arange(d))
    sgn = np.ones(d)
    sgn[child] = np.asarray(sign_of[child, parent[child]]).ravel()
    while (parent != parent[parent]).any():   # invariant: sign(p) = sgn[p] * sign(parent[p])
        sgn = sgn * sgn[parent]
        parent = parent[parent]
    return torch.from_numpy(sgn).float()


class _Pixels:
    """The per-pixel measurement model shared by reconstruction and scoring."""

    def __init__(self, enc: torch.Tensor, lam: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                 energy: torch.Tensor) -> None:
        self.ae = enc.abs()
        self.sq = enc * enc
        self.lam = lam
        r = 1 - lam.sum(1)
        self.mu0 = r[:, None] * mean[None]
        self.var = energy[:, None] * var[None] + 1e-4
        self.energy = energy
        self.pub_var = var


def reconstruct_private(enc: np.ndarray | torch.Tensor, pairs: np.ndarray, lam: np.ndarray, n_images: int,
                        mean: torch.Tensor, var: torch.Tensor, energy: np.ndarray | torch.Tensor, *,
                        beta: float = 0.3, anneal: tuple[float, ...] = (4.0, 2.0, 1.5, 1.0, 1.0),
                        em_steps: int = 8, weights: np.ndarray | None = None,
                        shape: tuple[int, int, int] = (32, 32, 3), resync: int = 1) -> tuple[torch.Tensor, float]:
    """Private images (n_images × H·W·C on [-1, 1]) from encodings whose slots hold images ``pairs`` (E×2) with
    coefficients ``lam`` (E×2); returns them and the mean negative log-likelihood of the fit (lower is better).

    ``resync``: after EM, synchronise the per-pixel signs again on the refined images and rerun EM, this many times.
    The spectral start is noisy where few images are far from grey, and a wrong sign there flips a whole region
    of every image; on the refined images the same spanning tree rarely errs (measured: the share of pixels with
    the right sign went from 0.905 to 0.998 on a challenge whose first sync had flipped a region)."""
    e = torch.as_tensor(np.asarray(enc, dtype=np.float32)).reshape(len(pairs), -1)
    n_enc, d = e.shape
    lam_t = torch.as_tensor(np.asarray(lam, dtype=np.float32))
    pm = _Pixels(e, lam_t, mean, var, torch.as_tensor(np.asarray(energy, dtype=np.float32)))
    a = torch.as_tensor(np.asarray(pairs[:, 0], dtype=np.int64))
    b = torch.as_tensor(np.asarray(pairs[:, 1], dtype=np.int64))
    wt = torch.ones(n_enc) if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32))
    rows = torch.arange(n_enc)
    design = torch.zeros(n_enc, n_images)
    design.index_put_((rows, a), lam_t[:, 0], accumulate=True)
    design.index_put_((rows, b), lam_t[:, 1], accumulate=True)
    w = design * (wt / pm.energy)[:, None]
    normal = w.T @ design + 1e-3 * torch.eye(n_images)

    # spectral start: each encoding's squared value, less what the squares alone explain, estimates x_a x_b
    la, lb = lam_t[:, 0], lam_t[:, 1]
    base = (la ** 2 + lb ** 2)[:, None] * 0.3 + pm.mu0 ** 2 + pm.energy[:, None] * pm.pub_var[None]
    est = (pm.sq - base) / (2 * la * lb).clamp(min=1e-4)[:, None]
    ww = ((la * lb) ** 2 * wt)[:, None]
    m = torch.zeros(d, n_images * n_images)
    contrib = (est * ww).T.contiguous()
    m.index_add_(1, a * n_images + b, contrib)
    m.index_add_(1, b * n_images + a, contrib)
    deg = torch.zeros(n_images).index_add_(0, a, ww[:, 0]).index_add_(0, b, ww[:, 0]).clamp(min=1e-8)
    m = m.view(d, n_images, n_images) / deg.sqrt()[None, :, None] / deg.sqrt()[None, None, :]
    # numpy's batched eigh: torch's splits the batch over OpenMP threads, which stall when another process holds
    # the cores (measured 30 s instead of 0.3 s for 3072 matrices of 30×30 beside one busy process)
    _, vecs = np.linalg.eigh(m.numpy().astype(np.float64))
    x0 = torch.from_numpy(vecs[:, :, -1].T.astype(np.float32)).contiguous()
    x0 = x0 / x0.std(0, keepdim=True).clamp(min=1e-6) * 0.5
    edges = _grid_edges(*shape)
    x0 = x0 * sign_sync(x0, edges)[None]

    basis = _grid_basis(shape)
    n_vals, n_vecs = (torch.from_numpy(v).float() for v in np.linalg.eigh(normal.double().numpy()))
    denom = n_vals[:, None] + beta * basis.vals[None, :]

    def em(x: torch.Tensor) -> torch.Tensor:
        for mult in anneal:
            for _ in range(em_steps):
                mu = design @ x + pm.mu0
                es = torch.tanh(pm.ae * mu / (pm.var * mult))
                rhs = w.T @ (es * pm.ae - pm.mu0)
                z = basis.forward(n_vecs.T @ rhs) / denom
                x = basis.inverse(n_vecs @ z).clamp(-1, 1)
        return x

    best: tuple[float, torch.Tensor] | None = None
    for glob in (1.0, -1.0):
        x = em(glob * x0)
        for _ in range(resync):
            x = em(x * sign_sync(x, edges)[None])
        nll = _nll(x, design, pm, wt)
        if best is None or nll < best[0]:
            best = (nll, x)
    assert best is not None
    return best[1], best[0]


def _nll(x: torch.Tensor, design: torch.Tensor, pm: _Pixels, wt: torch.Tensor) -> float:
    mu = design @ x + pm.mu0
    per = mu ** 2 / (2 * pm.var) - torch.log(torch.cosh((pm.ae * mu / pm.var).clamp(-60, 60)))
    return float((per.mean(1) * wt).sum() / wt.sum())


class _GridBasis:
    """The eigenbasis of the Laplacian of :func:`_grid_edges`' graph, applied without forming it.

    That graph is the Cartesian product of a path over rows, a path over columns and a complete graph over
    channels, so its Laplacian is L_H ⊗ I ⊗ I + I ⊗ L_W ⊗ I + I ⊗ I ⊗ L_C: the eigenvectors are Kronecker products
    of the three factors' (a DCT-II basis for each path) and the eigenvalues their sums. Applying it is three small
    matrix products per image, O(d·(H + W + C)), where the dense d×d basis cost O(d²) per image and a d×d
    eigendecomposition to build (55 s for 32×32×3)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape
        factors = []
        for n, complete in ((shape[0], False), (shape[1], False), (shape[2], True)):
            if complete:
                lap = n * np.eye(n) - np.ones((n, n))
            else:
                lap = np.diag(np.r_[1.0, np.full(max(n - 2, 0), 2.0), 1.0][:n]) if n > 1 else np.zeros((1, 1))
                if n > 1:
                    lap -= np.eye(n, k=1) + np.eye(n, k=-1)
            factors.append(np.linalg.eigh(lap))
        (vh, self.uh), (vw, self.uw), (vc, self.uc) = [(torch.from_numpy(v), torch.from_numpy(u).float())
                                                        for v, u in factors]
        self.vals = (vh[:, None, None] + vw[None, :, None] + vc[None, None, :]).reshape(-1).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficients (n×d) of pixel vectors x (n×d) in the basis: x @ V."""
        return self._apply(x, self.uh.T, self.uw.T, self.uc)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel vectors from coefficients: z @ V.T."""
        return self._apply(z, self.uh, self.uw, self.uc.T)

    def _apply(self, x: torch.Tensor, left_h: torch.Tensor, left_w: torch.Tensor, right_c: torch.Tensor
               ) -> torch.Tensor:
        h, w, c = self.shape
        n = len(x)
        t = x.reshape(n * h * w, c) @ right_c                          # channels
        t = torch.matmul(left_w, t.reshape(n * h, w, c))               # columns
        t = torch.matmul(left_h, t.reshape(n, h, w * c))               # rows
        return t.reshape(n, -1)


_BASIS_CACHE: dict[tuple[int, int, int], _GridBasis] = {}


def _grid_basis(shape: tuple[int, int, int]) -> _GridBasis:
    if shape not in _BASIS_CACHE:
        _BASIS_CACHE[shape] = _GridBasis(tuple(shape))  # type: ignore[arg-type]
    return _BASIS_CACHE[shape]


# --------------------------------------------------------------------------------------------------- clusters ---

def _whitening(enc: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The squared encodings centred (E×D, float64), their mean (D) and a whitening map ``T`` (D×D): ``f @ T``
    scales the principal direction with singular value s by 1 / sqrt(s² + eps s_max²), so that directions
    carrying what all encodings share (the mean image's structure, the public pool's) stop dominating a
    correlation. Only inner products of mapped vectors are used, so T is any map with ``T Tᵀ = V diag(1 / (s² +
    eps s_max²)) Vᵀ``: with at least D encodings, the eigenvectors of the D×D Gram matrix scaled (one
    eigendecomposition; an SVD of the E×D matrix costs ~10× more); with fewer, the symmetric square root built from
    the E×E Gram matrix (directions outside the encodings' span get the weight of s = 0)."""
    f = enc.double() ** 2
    mean = f.mean(0)
    f = f - mean
    n, d = f.shape
    # numpy's eigh throughout: torch's took ~6x longer on rank-deficient matrices (52 s vs 7.9 s, D = 3072)
    if n >= d:
        vals_np, vecs_np = np.linalg.eigh((f.T @ f).numpy())
        vals = np.maximum(vals_np, 0)
        top = max(float(vals.max()), 1e-300)
        return f, mean, torch.from_numpy(vecs_np / np.sqrt(vals + eps * top))
    fn = f.numpy()
    vals_np, u = np.linalg.eigh(fn @ fn.T)
    vals = np.maximum(vals_np, 0)
    top = max(float(vals.max()), 1e-300)
    keep = vals > top * 1e-12
    v = (fn.T @ u[:, keep]) / np.sqrt(vals[keep])                       # D×r, orthonormal columns
    c0 = 1 / np.sqrt(eps * top)
    scale = 1 / np.sqrt(vals[keep] + eps * top) - c0
    t = (v * scale) @ v.T
    t[np.diag_indices(d)] += c0
    return f, mean, torch.from_numpy(t)


def _whitened(enc: torch.Tensor, eps: float) -> np.ndarray:
    """Unit-norm whitened squared encodings (E×D), the features the spectral clustering compares."""
    f, _, t = _whitening(enc, eps)
    wf = f @ t
    return (wf / wf.norm(dim=1, keepdim=True).clamp(min=1e-12)).float().numpy()


def _eigengap(vals: np.ndarray, kmax: int) -> int:
    top = np.sort(vals)[::-1][:kmax + 1]
    top = np.maximum(top, 1e-12)
    ratios = top[:-1] / top[1:]
    return int(np.argmax(ratios[1:]) + 2) if len(ratios) > 1 else 1


def cluster_slots(enc: np.ndarray | torch.Tensor, slots: Slots, *, n_private: int | None = None,
                  eps: float = 1e-3, seed: int = 0) -> dict[str, Any]:
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
    cls = slots.c.reshape(-1)                     # slot s = 2 j + t
    lam = slots.lam.reshape(-1)
    enc_of = np.repeat(np.arange(n_enc), 2)
    primary = np.ones(2 * n_enc, bool)
    primary[1::2][slots.same] = False            # a same-class encoding's second slot is placed after
    classes = [int(c) for c in np.unique(cls)]
    spectra = {c: _spectrum(feats[enc_of[(cls == c) & primary]] * lam[(cls == c) & primary, None])
               for c in classes}
    counts = {c: int((cls == c).sum()) for c in classes}
    guesses = None if n_private is not None else \
        {c: _eigengap(v, min(len(v) - 1, max(2, len(v) // 20))) for c, (v, _) in spectra.items()}
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
    return {"pairs": img.reshape(n_enc, 2), "confidence": conf.reshape(n_enc, 2), "per_class": per_class,
            "n_images": next_id, "passes": passes}


def images_per_class(slot_counts: dict[int, int], n_encodings: int, *, n_private: int | None = None,
                     guesses: dict[int, int] | None = None) -> tuple[dict[int, int], float]:
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
        n[np.argsort(-(quota - n), kind="stable")[:n_private - int(n.sum())]] += 1
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
    return {"pairs": order[:, :2].astype(np.int64), "confidence": conf, "per_class": {0: k}, "n_images": k,
            "passes": passes}


# ----------------------------------------------------------------------------------------------------- refine ---

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

    def __init__(self, enc: torch.Tensor, slots: Slots, mean: torch.Tensor, var: torch.Tensor,
                 energy: np.ndarray, *, eps: float = 1e-4, splits: tuple[float, ...] = SPLITS,
                 chunk: int = 2_000_000) -> None:
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
        out = Candidates(np.zeros((n_enc, width), np.int64), np.zeros((n_enc, width), np.int64),
                         np.full((n_enc, width), -1, np.int64), np.full((n_enc, width), -np.inf, np.float32))
        for js in self.groups:
            c0, c1 = (int(v) for v in self.slots.c[js[0]])
            ia, ib = members.get(c0, np.zeros(0, np.int64)), members.get(c1, np.zeros(0, np.int64))
            if len(ia) == 0 or len(ib) == 0 or (c0 == c1 and len(ia) < 2):
                continue
            xa, xb = x[torch.from_numpy(ia)], x[torch.from_numpy(ib)]
            tab = ((xa[:, None] * xb[None]).reshape(-1, x.shape[1]) @ t).reshape(len(ia), len(ib), -1)
            per = max(1, self.chunk // max(1, tab.numel()))
            for lo in range(0, len(js), per):
                j = torch.from_numpy(js[lo:lo + per])
                best, arg = self._score_group(j, c0 == c1, tx2[ia], tx2[ib], txm[ia], txm[ib], tab, const)
                m = len(ia) * len(ib)
                jj = js[lo:lo + per]
                out.a[jj, :m] = np.repeat(ia, len(ib))[None]
                out.b[jj, :m] = np.tile(ib, len(ia))[None]
                out.score[jj, :m] = best.reshape(len(jj), -1).numpy()
                if c0 == c1:
                    out.split[jj, :m] = arg.reshape(len(jj), -1).numpy()
        return out

    def _score_group(self, j: torch.Tensor, same: bool, ta2: torch.Tensor, tb2: torch.Tensor, tam: torch.Tensor,
                     tbm: torch.Tensor, tab: torch.Tensor, const: tuple[torch.Tensor, ...]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        tm2, tv, tym = const
        r = self.r[j][:, None, None, None]
        base = r * r * tm2 + self.energy[j][:, None, None, None] * tv - tym
        y = self.yt[j]
        lams = [self.lam[j]] if not same else \
            [torch.stack([self.lam[j].sum(1) * v, self.lam[j].sum(1) * (1 - v)], 1) for v in self.splits]
        best = arg = None
        for si, lm in enumerate(lams):
            la, lb = lm[:, 0, None, None, None], lm[:, 1, None, None, None]
            pt = (la * la * ta2[None, :, None] + lb * lb * tb2[None, None] + 2 * la * lb * tab[None]
                  + 2 * r * (la * tam[None, :, None] + lb * tbm[None, None]) + base)
            cos = torch.einsum("jabk,jk->jab", pt, y) / pt.norm(dim=-1).clamp(min=1e-12)
            if same:   # an image is never mixed with itself
                cos.diagonal(dim1=1, dim2=2).fill_(-torch.inf)
            if best is None:
                best, arg = cos, torch.zeros(cos.shape, dtype=torch.int64)
            else:
                better = cos > best
                best = torch.where(better, cos, best)
                arg = torch.where(better, torch.full_like(arg, si), arg)
        assert best is not None and arg is not None
        return best, arg


def balanced_pairs(cand: Candidates, n_images: int, *, capacity: np.ndarray | float | None = None,
                   temperature: float = 20.0, steps: int = 60, rate: float = 0.02
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Each encoding's pair, so that every image fills about its number of slots (the challenge's recipe puts
    every private image in the same number of encodings): maximise the total score under the capacities by
    Lagrangian relaxation, a price per image raised while it holds too many slots and lowered while it holds too
    few. Returns the pairs (E×2), the chosen candidate's column (E; -1 and the pair (-1, -1) for an encoding
    without a finite candidate) and the remaining imbalance (slots placed beyond or short of capacity, summed over
    images) of the most balanced step."""
    n_enc = len(cand.score)
    valid = np.isfinite(cand.score).any(1)
    cap = np.full(n_images, 2 * n_enc / n_images) if capacity is None else \
        np.broadcast_to(np.asarray(capacity, np.float64), (n_images,))
    base = cand.score.astype(np.float64) * temperature
    price = np.zeros(n_images)
    rows = np.arange(n_enc)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(max(1, steps)):
        k = np.argmax(base - price[cand.a] - price[cand.b], axis=1)
        count = np.bincount(cand.a[rows, k][valid], minlength=n_images) + \
            np.bincount(cand.b[rows, k][valid], minlength=n_images)
        dev = float(np.abs(count - cap).sum())
        if best is None or dev < best[0]:
            best = (dev, k)
        price += rate * (count - cap) / max(float(cap.mean()), 1e-9)
    assert best is not None
    k = np.where(valid, best[1], -1)
    pairs = np.where(valid[:, None], np.stack([cand.a[rows, k], cand.b[rows, k]], 1), -1)
    return pairs, k, best[0]


def refine_pairs(enc: torch.Tensor, slots: Slots, pairs: np.ndarray, n_images: int, mean: torch.Tensor,
                 var: torch.Tensor, energy: np.ndarray, *, rounds: int = 8, eps: float = 1e-4,
                 splits: tuple[float, ...] = SPLITS, temperature: float = 20.0, steps: int = 60, rate: float = 0.02,
                 tol: float = 0.002, recon: dict[str, Any] | None = None,
                 start: dict[str, np.ndarray] | None = None,
                 prior: Callable[[torch.Tensor, np.ndarray, np.ndarray, np.ndarray], torch.Tensor] | None = None,
                 checkpoint: Callable[[int, dict[str, np.ndarray]], None] | None = None,
                 log: Callable[[str], None] = lambda m: None) -> dict[str, np.ndarray]:
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
        if prior is not None:       # score against the prior's cleaner estimates
            x = prior(x, pairs, lam, weights)
        cand = scorer.score(x, img_class)
        new, k, imbalance = balanced_pairs(cand, n_images, temperature=temperature, steps=steps, rate=rate)
        kept = k < 0                      # no candidate (a class with one image): keep what the encoding had
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
        log(f"challenge attack: round {rnd + 1}/{rounds}: fit NLL {nll:.4f}, {moved:.1%} of slots moved, "
            f"imbalance {imbalance:.0f} slots")
        state = {"round": np.int64(rnd), "pairs": pairs, "lam": lam, "weights": weights}
        if checkpoint is not None:
            checkpoint(rnd, state)
        if moved < tol:
            break
    return {"pairs": pairs, "lam": lam, "weights": weights}


# ----------------------------------------------------------------------------------------------------- colour ---

def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Cubic monomials of each pixel's colour (N×3 -> N×20)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    one = torch.ones_like(r)
    cols = [one, r, g, b, r * r, g * g, b * b, r * g, r * b, g * b,
            r ** 3, g ** 3, b ** 3, r * r * g, r * r * b, g * g * r, g * g * b, b * b * r, b * b * g, r * g * b]
    return torch.stack(cols, 1)


@dataclass(frozen=True)
class ColourMap:
    """A per-pixel cubic map from recovered colours to true colours ([-1, 1] scale), fitted by least squares."""
    coef: np.ndarray   # 20×3

    @classmethod
    def fit(cls, recovered: torch.Tensor, truth: torch.Tensor, ridge: float = 1e-3) -> "ColourMap":
        f = _cubic(recovered.reshape(-1, 3).double())
        t = truth.reshape(-1, 3).double()
        coef = torch.linalg.solve(f.T @ f + ridge * torch.eye(f.shape[1], dtype=f.dtype), f.T @ t)
        return cls(coef.numpy())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = _cubic(x.reshape(-1, 3).double()) @ torch.from_numpy(self.coef)
        return out.float().clamp(-1, 1).reshape(shape)


def simulate_challenge(private: np.ndarray, labels: np.ndarray, public: np.ndarray, *, per_image: int,
                       k: int = 6, upper: float = 0.65, dom: float = 0.3, num_classes: int = 10,
                       rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The challenge's recipe on the attacker's own images (uint8 N×H×W×C private, P×H×W×C public): per pass every
    image is slot 0 once, slot 1 comes from a permutation without fixed points, k-2 public patches at random."""
    n = len(private)
    x = private.astype(np.float32) / 127.5 - 1
    p = public.astype(np.float32) / 127.5 - 1
    s0 = np.tile(np.arange(n), per_image)
    s1 = np.concatenate([_derangement(n, rng) for _ in range(per_image)])
    lam = sample_coefficients(len(s0), k, upper=upper, dom=dom, private=2, rng=rng).astype(np.float32)
    pub = rng.integers(0, len(p), (len(s0), k - 2))
    mix = lam[:, 0, None, None, None] * x[s0] + lam[:, 1, None, None, None] * x[s1]
    mix += np.einsum("ej,ejhwc->ehwc", lam[:, 2:], p[pub])
    mix *= rng.integers(0, 2, mix.shape).astype(np.float32) * 2 - 1
    lab = np.zeros((len(s0), num_classes), np.float32)
    np.add.at(lab, (np.arange(len(s0)), labels[s0]), lam[:, 0])
    np.add.at(lab, (np.arange(len(s0)), labels[s1]), lam[:, 1])
    return {"encryption": mix.astype(np.float32), "label": lab, "pairs": np.stack([s0, s1], 1), "lam": lam}


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    if n < 2:
        raise InputError("a challenge needs at least 2 private images")
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


# --------------------------------------------------------------------------------------------------- pipeline ---

def _to_uint8(x: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).reshape(-1, *shape).numpy()


def attack_challenge(challenge: str | os.PathLike[str], out: str | os.PathLike[str], *,
                     public: str | os.PathLike[str] | np.ndarray | None = None,
                     aux: str | os.PathLike[str] | None = None,
                     settings: ChallengeAttackSettings | None = None,
                     prior: Any = "default",
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the attack on ``challenge/encryption.npy`` (+ ``label.npy``); write ``decryption.npy`` (uint8 E×H×W×C,
    one recovery per encoding), ``private_images.npy``, ``attack.json`` (settings, stage times) to ``out``.

    ``public``: photos (folder, ``bundled:photos``) or a patch array/``.npz`` for the public pixel statistics;
    ``aux``: labelled images (``.npz``) disjoint from the private set, for the colour correction (used only when no
    prior is). ``prior``: a learned image prior (:mod:`masquerade.attacks.instahide_prior`): ``"default"`` for the
    weights shipped with the package, a path to a prepared ``.safetensors``, a loaded prior, or None for none; the
    refine stage scores against its outputs and the final images are its outputs. Stages already in
    ``out/stages`` are reused when they were computed from the same inputs (each stage file records a hash of the
    challenge's files, the settings and the public and auxiliary sources); a stale or damaged stage file is
    recomputed, so an interrupted attack resumes where it stopped and a reused folder never mixes challenges."""
    from ..challenge import public_pool
    from ..fileio import save_npy, save_npz, write_json

    s = settings or ChallengeAttackSettings()
    cdir, out = Path(challenge), Path(out)
    enc_path = cdir / "encryption.npy"
    if not enc_path.is_file():
        raise InputError(f"{cdir}: no encryption.npy (is this a challenge folder?)")
    try:
        enc = np.load(enc_path, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{enc_path}: not a numeric .npy array ({exc})") from None
    if enc.ndim != 4 or enc.dtype.kind != "f" or not np.isfinite(enc).all():
        raise InputError(f"{enc_path}: expected finite floats E×H×W×C, got {enc.dtype} {enc.shape}")
    n_enc, shape = len(enc), tuple(int(v) for v in enc.shape[1:])
    if shape[2] != 3:
        raise InputError(f"{enc_path}: the challenge mixes colour images (C = 3), got C = {shape[2]}")
    labels = None
    if s.use_labels:
        if not (cdir / "label.npy").is_file():
            raise InputError(f"{cdir}: no label.npy; run with use_labels=False (--no-labels) to attack without")
        try:
            labels = np.load(cdir / "label.npy", allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{cdir / 'label.npy'}: not a numeric .npy array ({exc})") from None
    slots = parse_slots(labels, n_enc, k=s.k, upper=s.upper, dom=s.dom)
    learned = _resolve_prior(prior, shape, log)
    run_key = _run_key(enc, labels, s, public, aux, learned.meta["sha256"] if learned is not None else None)
    stages = out / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    state_path = out / "attack.json"
    state: dict[str, Any] = {}
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = {}
        if not isinstance(state, dict) or state.get("key") != run_key:
            state = {}          # another challenge, other settings or other sources: start afresh
    state.update({"key": run_key, "settings": _settings_doc(s), "encodings": n_enc, "shape": list(shape),
                  "prior": None if learned is None else {"source": learned.source, "sha256": learned.meta["sha256"]}})
    times: dict[str, float] = state.setdefault("seconds", {})

    def load(name: str) -> dict[str, np.ndarray] | None:
        path = stages / f"{name}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                got = {k: z[k] for k in z.files}
        except Exception:   # a damaged stage file (a kill mid-write on another system, a truncated copy)
            return None
        if str(got.pop("key", "")) != run_key:
            return None
        return got

    def save(name: str, **arrays: Any) -> None:
        save_npz(stages / f"{name}.npz", key=np.array(run_key), **arrays)

    def done(name: str, t0: float) -> None:
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 2)
        write_json(state_path, state)
        log(f"challenge attack: {name} done in {times[name]:.1f}s")

    enc_t = torch.from_numpy(np.ascontiguousarray(enc, dtype=np.float32)).reshape(n_enc, -1)

    got = load("public")
    if got is not None:
        mean, var = torch.from_numpy(got["mean"]), torch.from_numpy(got["var"])
    else:
        t0 = time.perf_counter()
        if isinstance(public, np.ndarray):
            patches = public
        else:
            src = public if public is not None else "bundled:photos"
            patches = public_pool(src, s.public_patches, size=shape[0], rng=s.seed).images
        mean, var = public_statistics(patches)
        save("public", mean=mean.numpy(), var=var.numpy())
        done("public", t0)
    energy = _public_energy(1 - slots.lam.sum(1), s.k, s.upper, s.dom)

    got = load("clusters")
    if got is not None:
        pairs, conf, n_images = got["pairs"], got["confidence"], int(got["n_images"])
    else:
        t0 = time.perf_counter()
        cl = cluster_slots(enc_t, slots, n_private=s.n_private, eps=s.whiten_eps, seed=s.seed)
        pairs, conf, n_images, per_class = cl["pairs"], cl["confidence"], cl["n_images"], cl["per_class"]
        save("clusters", pairs=pairs, confidence=conf, n_images=n_images)
        state["images_found"] = n_images
        state["images_per_class"] = {str(k): v for k, v in per_class.items()}
        state["n_private_given"] = s.n_private is not None
        done("clusters", t0)

    recon = {"beta": s.beta, "anneal": s.anneal, "em_steps": s.em_steps, "shape": shape, "resync": s.resync}
    lam = slots.lam
    weights = (pairs[:, 0] != pairs[:, 1]).astype(np.float32)
    refined = s.rounds > 0 and slots.labelled
    if refined:
        got = load("refine")
        if got is not None and int(got["round"]) >= 0 and bool(got["finished"]):
            pairs, lam, weights = got["pairs"], got["lam"], got["weights"]
        else:
            t0 = time.perf_counter()

            def checkpoint(rnd: int, st: dict[str, np.ndarray]) -> None:
                save("refine", finished=np.bool_(False), **st)
                times["refine"] = round(times.get("refine", 0.0) + time.perf_counter() - t_mark[0], 2)
                t_mark[0] = time.perf_counter()
                write_json(state_path, state)

            t_mark = [t0]
            res = refine_pairs(enc_t, slots, pairs, n_images, mean, var, energy, rounds=s.rounds, eps=s.score_eps,
                               splits=s.splits, temperature=s.temperature, steps=s.price_steps, rate=s.price_rate,
                               tol=s.tol, recon=recon, start=got, checkpoint=checkpoint, log=log,
                               prior=None if learned is None else
                               (lambda xx, pp, ll, ww: learned(xx, pp, ll, ww, shape)))
            pairs, lam, weights = res["pairs"], res["lam"], res["weights"]
            save("refine", finished=np.bool_(True), round=np.int64(s.rounds), pairs=pairs, lam=lam, weights=weights)
            done("refine", t_mark[0])

    got = load("reconstruct")
    if got is not None:
        x = torch.from_numpy(got["x"])
    else:
        t0 = time.perf_counter()
        x, nll = reconstruct_private(enc_t, pairs, lam, n_images, mean, var, energy, weights=weights, **recon)
        save("reconstruct", x=x.numpy())
        state["nll"] = nll
        done("reconstruct", t0)

    if learned is not None:
        got = load("prior")
        if got is not None:
            x_out = torch.from_numpy(got["x"])
        else:
            t0 = time.perf_counter()
            x_out = learned(x, pairs, lam, weights, shape)
            save("prior", x=x_out.numpy())
            done("prior", t0)
    elif s.colour and aux is not None:
        got = load("colour")
        if got is not None:
            cmap = ColourMap(got["coef"])
        else:
            t0 = time.perf_counter()
            cmap = _learn_colour(aux, mean, var, s, shape, patches_src=public)
            save("colour", coef=cmap.coef)
            done("colour", t0)
        x_out = cmap(x.reshape(-1, *shape)).reshape(len(x), -1)
    else:
        if s.colour:
            log("challenge attack: no auxiliary images (--aux); colour correction skipped")
        x_out = x

    t0 = time.perf_counter()
    private = _to_uint8(x_out, shape)
    if refined:   # slot 0 holds the larger coefficient (a same-class encoding's split puts the larger share first)
        pick = pairs[:, 0]
    else:
        pick = np.where(conf[:, 0] >= conf[:, 1], pairs[:, 0], pairs[:, 1])
    save_npy(out / "decryption.npy", private[pick])
    save_npy(out / "private_images.npy", private)
    done("output", t0)
    state["seconds_total"] = round(sum(times.values()), 2)
    write_json(state_path, state)
    return {**state, "decryption": str(out / "decryption.npy"), "private_images": private}


def _resolve_prior(prior: Any, shape: tuple[int, int, int], log: Callable[[str], None]) -> Any:
    from .instahide_prior import ChallengePrior, default_prior, load_prior

    if prior is None or (isinstance(prior, str) and prior.lower() == "none"):
        return None
    if isinstance(prior, str) and prior == "default":
        found = default_prior()
        if found is None:
            log("challenge attack: no prior shipped with this installation (run `make weights`); none used")
            return None
    elif isinstance(prior, ChallengePrior):
        found = prior
    else:
        found = load_prior(prior)
    if not found.fits(shape):
        log(f"challenge attack: the prior takes colour images with sides divisible by 4, not {shape}; none used")
        return None
    return found


def _run_key(enc: np.ndarray, labels: np.ndarray | None, s: ChallengeAttackSettings, public: Any, aux: Any,
             prior: str | None = None) -> str:
    """A hash of everything the stages depend on: the challenge's arrays, the settings, the sources named."""
    import hashlib

    h = hashlib.sha256()
    h.update(f"prior={prior}".encode())
    for arr in (enc, labels):
        if arr is not None:
            h.update(str((arr.dtype.str, arr.shape)).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    h.update(json.dumps(_settings_doc(s), sort_keys=True).encode())
    if isinstance(public, np.ndarray):
        h.update(b"public-array")
        h.update(np.ascontiguousarray(public).tobytes())
    else:
        h.update(f"public={public!s}".encode())
    h.update(f"aux={aux!s}".encode())
    return h.hexdigest()[:32]


def _settings_doc(s: ChallengeAttackSettings) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(s)))


def _learn_colour(aux: str | os.PathLike[str], mean: torch.Tensor, var: torch.Tensor, s: ChallengeAttackSettings,
                  shape: tuple[int, int, int], patches_src: Any) -> ColourMap:
    """Simulate a small challenge from the auxiliary images (the attacker's own truth), reconstruct it with the true
    pairing, and fit the colour map from what reconstruction gives to what the images were."""
    from ..challenge import public_pool
    from ..data import load_images

    imgs = load_images(aux).to_rgb()
    if imgs.labels is None:
        raise InputError(f"{aux}: the auxiliary images need labels (the simulated challenge releases them mixed)")
    if imgs.image_shape != shape:
        raise InputError(f"{aux}: auxiliary images are {imgs.image_shape}, the challenge's {shape}")
    gen = np.random.default_rng(s.seed + 1)
    pick = gen.choice(len(imgs), min(s.colour_images, len(imgs)), replace=False)
    src = patches_src if patches_src is not None and not isinstance(patches_src, np.ndarray) else "bundled:photos"
    pub = patches_src if isinstance(patches_src, np.ndarray) else \
        public_pool(src, s.public_patches, size=shape[0], rng=s.seed).images
    sim = simulate_challenge(imgs.images[pick], imgs.labels[pick].astype(np.int64), pub,
                             per_image=s.colour_per_image, k=s.k, upper=s.upper, dom=s.dom,
                             num_classes=max(10, int(imgs.labels.max()) + 1), rng=gen)
    sl = parse_slots(sim["label"], len(sim["label"]), k=s.k, upper=s.upper, dom=s.dom)
    lam = np.where(sl.same[:, None], sl.lam, sim["lam"][:, :2])   # what the labels say, slot by slot
    energy = _public_energy(1 - lam.sum(1), s.k, s.upper, s.dom)
    x, _ = reconstruct_private(sim["encryption"], sim["pairs"], lam, len(pick), mean, var, energy, beta=s.beta,
                               anneal=s.anneal, em_steps=s.em_steps, shape=shape)
    truth = torch.from_numpy(imgs.images[pick].astype(np.float32) / 127.5 - 1)
    return ColourMap.fit(x.reshape(-1, *shape), truth)

