"""An attack on the InstaHide Challenge that runs on a CPU: recover the private images from the encodings alone.

The attacker reads ``encryption.npy`` (E×H×W×C, signs flipped) and, unless ``use_labels=False``, ``label.npy`` (the
coefficient-weighted one-hots of each encoding's two private images). It may use public data of its own: photos to
cut public patches from (for their pixel statistics) and labelled auxiliary images disjoint from the private set (to
learn the colour correction on a challenge it simulates itself). It never reads the truth folder.

Stages (each timed, each cached in the output folder so an interrupted attack resumes):

1. **slots** -- every encoding holds two private images; the labels name their classes and coefficients
   (two equal classes give one entry: the sum, split evenly here).
2. **clusters** -- the slots of each class are grouped into private images by spectral clustering of the whitened
   squared encodings weighted by the slot's coefficient. No network and no E² network calls: one SVD and one
   eigendecomposition per class. The number of images per class comes from ``n_private`` when given (shared out by
   slot counts) and otherwise from the largest relative eigengap past the first eigenvalue (which carries what all
   the class's images share), so the estimate assumes at least two images per class: give ``n_private`` otherwise.
3. **reconstruct** -- all private images at once. Per pixel, the encodings that mix images a and b measure
   ``|lam_a x_a + lam_b x_b + public|``; the squared encodings give a noisy rank-one matrix ``x x^T`` whose top
   eigenvector fixes every image's pixel up to one sign per pixel shared by all images. Those signs are chosen by
   propagating along a maximum spanning tree of neighbouring pixels (natural images are smooth), then the images are
   refined by expectation-maximisation of the folded-normal likelihood (the public part as Gaussian noise with the
   public pool's per-pixel mean and variance), with a smoothness prior solved in closed form in the eigenbases of the
   design and of the pixel-grid Laplacian; both global signs are tried and the likelier kept.
4. **colour** -- a per-pixel cubic map from recovered to true colours, fitted on a challenge the attacker simulates
   from its auxiliary images (with its own ground truth).
5. **output** -- one recovery per encoding (the image of its more confidently clustered slot) as ``decryption.npy``,
   the private images as ``private_images.npy`` and a grid.
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
           "cluster_slots", "public_statistics", "Slots", "ColourMap", "simulate_challenge"]


@dataclass(frozen=True)
class ChallengeAttackSettings:
    n_private: int | None = None      # None: estimate the number of private images per class (eigengap)
    use_labels: bool = True           # False: ignore label.npy (coefficients and classes unknown)
    beta: float = 0.3                 # smoothness prior between neighbouring pixels (and colour channels)
    whiten_eps: float = 1e-2          # spectral whitening of the squared encodings: s / sqrt(s^2 + eps s_0^2)
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
    order = np.argsort(-lab, axis=1, kind="stable")[:, :2]
    c = order.copy()
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
                        shape: tuple[int, int, int] = (32, 32, 3)) -> tuple[torch.Tensor, float]:
    """Private images (n_images × H·W·C on [-1, 1]) from encodings whose slots hold images ``pairs`` (E×2) with
    coefficients ``lam`` (E×2); returns them and the mean negative log-likelihood of the fit (lower is better)."""
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
    _, vecs = torch.linalg.eigh(m)
    x0 = vecs[:, :, -1].T.contiguous()
    x0 = x0 / x0.std(0, keepdim=True).clamp(min=1e-6) * 0.5
    edges = _grid_edges(*shape)
    x0 = x0 * sign_sync(x0, edges)[None]

    lap_vals, lap_vecs = _laplacian_eig(shape)
    n_vals, n_vecs = torch.linalg.eigh(normal)
    best: tuple[float, torch.Tensor] | None = None
    for glob in (1.0, -1.0):
        x = glob * x0
        for mult in anneal:
            for _ in range(em_steps):
                mu = design @ x + pm.mu0
                es = torch.tanh(pm.ae * mu / (pm.var * mult))
                rhs = w.T @ (es * pm.ae - pm.mu0)
                z = (n_vecs.T @ rhs @ lap_vecs) / (n_vals[:, None] + beta * lap_vals[None, :])
                x = (n_vecs @ z @ lap_vecs.T).clamp(-1, 1)
        nll = _nll(x, design, pm, wt)
        if best is None or nll < best[0]:
            best = (nll, x)
    assert best is not None
    return best[1], best[0]


def _nll(x: torch.Tensor, design: torch.Tensor, pm: _Pixels, wt: torch.Tensor) -> float:
    mu = design @ x + pm.mu0
    per = mu ** 2 / (2 * pm.var) - torch.log(torch.cosh((pm.ae * mu / pm.var).clamp(-60, 60)))
    return float((per.mean(1) * wt).sum() / wt.sum())


_LAP_CACHE: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def _laplacian_eig(shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    if shape not in _LAP_CACHE:
        d = int(np.prod(shape))
        e = torch.from_numpy(_grid_edges(*shape))
        lap = torch.zeros(d, d, dtype=torch.float64)
        one = torch.ones(len(e), dtype=torch.float64)
        lap.index_put_((e[:, 0], e[:, 1]), -one, accumulate=True)
        lap.index_put_((e[:, 1], e[:, 0]), -one, accumulate=True)
        lap.diagonal().sub_(lap.sum(1))
        vals, vecs = torch.linalg.eigh(lap)
        _LAP_CACHE[shape] = (vals.float(), vecs.float())
    return _LAP_CACHE[shape]


# --------------------------------------------------------------------------------------------------- clusters ---

def _whitened(enc: torch.Tensor, eps: float) -> np.ndarray:
    f = (enc.double() ** 2)
    f = f - f.mean(0)
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    wf = u * (s / torch.sqrt(s ** 2 + eps * s[0] ** 2))
    return (wf / wf.norm(dim=1, keepdim=True).clamp(min=1e-12)).float().numpy()


def _eigengap(vals: np.ndarray, kmax: int) -> int:
    top = np.sort(vals)[::-1][:kmax + 1]
    top = np.maximum(top, 1e-12)
    ratios = top[:-1] / top[1:]
    return int(np.argmax(ratios[1:]) + 2) if len(ratios) > 1 else 1


def cluster_slots(enc: np.ndarray | torch.Tensor, slots: Slots, *, n_private: int | None = None,
                  eps: float = 1e-2, seed: int = 0) -> dict[str, Any]:
    """Group the slots into private images: per class, spectral clustering of coefficient-weighted whitened squared
    encodings. Returns ``pairs`` (E×2 image ids), ``confidence`` (E×2), ``per_class`` (images per class) and
    ``n_images``."""
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
    total = int(primary.sum())
    img = -np.ones(2 * n_enc, np.int64)
    conf = np.zeros(2 * n_enc, np.float32)
    per_class: dict[int, int] = {}
    next_id = 0
    for c in np.unique(cls):
        sl = np.flatnonzero((cls == c) & primary)
        share = None if n_private is None else max(1, int(round(n_private * len(sl) / total)))
        k, labels, dist = _spectral_kmeans(
            feats[enc_of[sl]] * lam[sl, None],
            lambda vals, m=len(sl), share=share: min(
                share if share is not None else _eigengap(vals, min(m - 1, max(2, m // 20))), m), seed)
        dist = np.sort(dist, axis=1)
        margin = dist[:, 1] - dist[:, 0] if k > 1 else np.ones(len(sl))
        img[sl] = labels + next_id
        conf[sl] = margin / max(float(np.median(margin)), 1e-12) * lam[sl]
        per_class[int(c)] = k
        next_id += k
    # a same-class encoding's second slot is unknown: the pair (a, a) marks it, and reconstruction leaves it out
    img[1::2][slots.same] = img[0::2][slots.same]
    conf[1::2][slots.same] = 0.0
    return {"pairs": img.reshape(n_enc, 2), "confidence": conf.reshape(n_enc, 2), "per_class": per_class,
            "n_images": next_id}


def _spectral_kmeans(g: np.ndarray, choose_k: Callable[[np.ndarray], int], seed: int
                     ) -> tuple[int, np.ndarray, np.ndarray]:
    """k-means on the top eigenvectors of the similarity ``g gᵀ`` (zero diagonal); ``choose_k`` picks k from its
    eigenvalues. Returns k, each row's cluster and its distances to every centroid."""
    from sklearn.cluster import KMeans

    sim = g @ g.T
    np.fill_diagonal(sim, 0)
    vals, vecs = np.linalg.eigh(sim)
    k = choose_k(vals)
    emb = vecs[:, -k:]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    km = KMeans(k, n_init=10, random_state=seed).fit(emb)
    return k, km.labels_, km.transform(emb)


def _cluster_unlabelled(feats: np.ndarray, n_private: int | None, seed: int) -> dict[str, Any]:
    """Without labels: cluster whole encodings; an encoding's two images are its nearest two centroids."""
    m = len(feats)
    k, _, dist = _spectral_kmeans(
        feats, lambda vals: max(2, min(n_private if n_private is not None else _eigengap(vals, max(2, m // 20)), m)),
        seed)
    order = np.argsort(dist, axis=1)[:, :3]
    d = np.take_along_axis(dist, order, 1)
    conf = np.stack([d[:, 2] - d[:, 0], d[:, 2] - d[:, 1]], 1).astype(np.float32)
    return {"pairs": order[:, :2].astype(np.int64), "confidence": conf, "per_class": {0: k}, "n_images": k}


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
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the attack on ``challenge/encryption.npy`` (+ ``label.npy``); write ``decryption.npy`` (uint8 E×H×W×C,
    one recovery per encoding), ``private_images.npy``, ``attack.json`` (settings, stage times) to ``out``.

    ``public``: photos (folder, ``bundled:photos``) or a patch array/``.npz`` for the public pixel statistics;
    ``aux``: labelled images (``.npz``) disjoint from the private set, for the colour correction. Stages already in
    ``out/stages`` are reused, so an interrupted attack resumes where it stopped."""
    from ..challenge import public_pool
    from ..fileio import save_npy, write_json

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
        labels = np.load(cdir / "label.npy", allow_pickle=False)
    stages = out / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    state_path = out / "attack.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if state.get("settings") not in (None, _settings_doc(s)) or state.get("encodings") not in (None, n_enc):
        raise InputError(f"{out}: holds an attack run with other settings or another challenge; use a new --out")
    state.update({"settings": _settings_doc(s), "encodings": n_enc, "shape": list(shape)})
    times: dict[str, float] = state.setdefault("seconds", {})

    def stage(name: str) -> Path:
        return stages / f"{name}.npz"

    def done(name: str, t0: float) -> None:
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 2)
        write_json(state_path, state)
        log(f"challenge attack: {name} done in {times[name]:.1f}s")

    enc_t = torch.from_numpy(np.ascontiguousarray(enc, dtype=np.float32)).reshape(n_enc, -1)
    slots = parse_slots(labels, n_enc, k=s.k, upper=s.upper, dom=s.dom)

    # public statistics (cheap; recomputed on resume unless cached)
    if stage("public").is_file():
        with np.load(stage("public")) as z:
            mean, var = torch.from_numpy(z["mean"]), torch.from_numpy(z["var"])
    else:
        t0 = time.perf_counter()
        if isinstance(public, np.ndarray):
            patches = public
        else:
            src = public if public is not None else "bundled:photos"
            patches = public_pool(src, s.public_patches, size=shape[0], rng=s.seed).images
        mean, var = public_statistics(patches)
        np.savez(stage("public"), mean=mean.numpy(), var=var.numpy())
        done("public", t0)
    energy = _public_energy(1 - slots.lam.sum(1), s.k, s.upper, s.dom)

    if stage("clusters").is_file():
        with np.load(stage("clusters")) as z:
            pairs, conf, n_images = z["pairs"], z["confidence"], int(z["n_images"])
            per_class = json.loads(str(z["per_class"]))
    else:
        t0 = time.perf_counter()
        cl = cluster_slots(enc_t, slots, n_private=s.n_private, eps=s.whiten_eps, seed=s.seed)
        pairs, conf, n_images, per_class = cl["pairs"], cl["confidence"], cl["n_images"], cl["per_class"]
        np.savez(stage("clusters"), pairs=pairs, confidence=conf, n_images=n_images,
                 per_class=json.dumps({str(k): v for k, v in per_class.items()}))
        state["images_found"] = n_images
        state["images_per_class"] = {str(k): v for k, v in per_class.items()}
        state["n_private_given"] = s.n_private is not None
        done("clusters", t0)

    if stage("reconstruct").is_file():
        with np.load(stage("reconstruct")) as z:
            x = torch.from_numpy(z["x"])
    else:
        t0 = time.perf_counter()
        weights = (pairs[:, 0] != pairs[:, 1]).astype(np.float32)
        x, nll = reconstruct_private(enc_t, pairs, slots.lam, n_images, mean, var, energy, beta=s.beta,
                                     anneal=s.anneal, em_steps=s.em_steps, weights=weights, shape=shape)
        np.savez(stage("reconstruct"), x=x.numpy())
        state["nll"] = nll
        done("reconstruct", t0)

    if s.colour and aux is not None:
        if stage("colour").is_file():
            with np.load(stage("colour")) as z:
                cmap = ColourMap(z["coef"])
        else:
            t0 = time.perf_counter()
            cmap = _learn_colour(aux, mean, var, s, shape, patches_src=public)
            np.savez(stage("colour"), coef=cmap.coef)
            done("colour", t0)
        x_out = cmap(x.reshape(-1, *shape)).reshape(len(x), -1)
    else:
        if s.colour:
            log("challenge attack: no auxiliary images (--aux); colour correction skipped")
        x_out = x

    t0 = time.perf_counter()
    private = _to_uint8(x_out, shape)
    pick = np.where(conf[:, 0] >= conf[:, 1], pairs[:, 0], pairs[:, 1])
    save_npy(out / "decryption.npy", private[pick])
    save_npy(out / "private_images.npy", private)
    done("output", t0)
    state["seconds_total"] = round(sum(times.values()), 2)
    write_json(state_path, state)
    return {**state, "decryption": str(out / "decryption.npy"), "private_images": private}


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

