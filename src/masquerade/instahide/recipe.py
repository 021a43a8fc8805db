"""The InstaHide Challenge's recipe as the attacker reads it: the slots the labels describe, the public part's
statistics, and challenges simulated on the attacker's own images."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from masquerade.errors import InputError
from masquerade.instahide.scheme import sample_coefficients

__all__ = ["Slots", "parse_slots", "public_statistics", "simulate_challenge"]


@dataclass(frozen=True)
class Slots:
    """Each encoding's two private slots: classes ``c`` (E×2), coefficients ``lam`` (E×2)."""

    c: np.ndarray
    lam: np.ndarray
    same: np.ndarray  # both slots in one class (the label shows only their sum)
    labelled: bool = True


def parse_slots(labels: np.ndarray | None, count: int, *, k: int = 6, upper: float = 0.65, dom: float = 0.3) -> Slots:
    """Slots from ``label.npy``; without labels every slot gets class 0 and the sampler's mean coefficient."""
    if labels is None:
        lam = sample_coefficients(100_000, k, upper=upper, dom=dom, private=2, rng=0)[:, :2].mean()
        return Slots(
            np.zeros((count, 2), np.int64), np.full((count, 2), lam, np.float32), np.zeros(count, bool), labelled=False
        )
    lab = np.asarray(labels, dtype=np.float64)
    if lab.ndim != 2 or len(lab) != count:
        raise InputError(f"label.npy has shape {lab.shape}; expected ({count}, classes)")
    if not np.isfinite(lab).all() or (lab < 0).any():
        raise InputError("label.npy: labels must be finite and non-negative")
    nonzero = (lab > 0).sum(1)
    if (nonzero == 0).any() or (nonzero > 2).any():
        bad = int(np.flatnonzero((nonzero == 0) | (nonzero > 2))[0])
        raise InputError(
            f"label.npy row {bad} has {nonzero[bad]} non-zero entries; the challenge labels mix "
            f"exactly two private images (one entry when both share a class)"
        )
    _check_label_mass(lab, k=k, upper=upper, dom=dom)
    if lab.shape[1] < 2:  # a one-class challenge: every row mixes two images of that class
        lab = np.pad(lab, ((0, 0), (0, 2 - lab.shape[1])))
    c = np.argsort(-lab, axis=1, kind="stable")[:, :2]
    same = nonzero == 1
    c[same, 1] = c[same, 0]
    lam = np.take_along_axis(lab, c, 1)
    lam[same] = lam[same, :1] / 2
    return Slots(c.astype(np.int64), lam.astype(np.float32), same)


def _check_label_mass(lab: np.ndarray, *, k: int, upper: float, dom: float, tol: float = 1e-4) -> None:
    """The recipe fixes what a label row can hold: the two private coefficients, each at most ``upper``, summing to
    at least ``dom`` and, with k > 2 public patches taking the rest, to less than 1. Rows outside that are not the
    recipe's labels (renormalised to 1, another recipe, damage) and would be read as wrong coefficients."""
    total = lab.sum(1)
    if k > 2 and len(lab) and (np.abs(total - 1) <= tol).all():
        raise InputError(
            "label.npy: every row sums to 1 (renormalised labels); the attack reads the private "
            "coefficients from the challenge's own labels, whose rows sum to less than 1"
        )
    cap = min(1.0, 2 * upper) if k > 2 else 1.0
    bad = (total < dom - tol) | (total > cap + tol) | ((lab > 0).sum(1) == 2) & (lab.max(1) > upper + tol)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"label.npy row {i} holds {total[i]:.4f} in all (largest {lab[i].max():.4f}); the recipe "
            f"(k={k}, upper={upper}, dom={dom}) puts between {dom} and {cap:g} there, at most {upper} "
            f"per image"
        )


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


def simulate_challenge(
    private: np.ndarray,
    labels: np.ndarray,
    public: np.ndarray,
    *,
    per_image: int,
    k: int = 6,
    upper: float = 0.65,
    dom: float = 0.3,
    num_classes: int = 10,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
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
