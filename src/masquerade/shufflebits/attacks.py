"""Attacks on ShuffleBits.

``shufflebits-key-recovery`` -- ciphertext only. A bit permutation hides which bit is which, but not the statistics
of each ciphertext bit column: its variance and how it co-varies with the others. For features from a smooth
distribution the integer view of a positive float32 is, up to scale, its logarithm, so the right bit order is the one
that makes the decoded integer code vary least: every wrong order moves a varying bit to a heavier position or breaks
the carries between exponent bits that move together (0111 1111 -> 1000 0000 around 1.0). Finding the order that
minimises Var(Σ_j 2^(31-j) · bit_j) is a quadratic assignment problem on the 32 × 32 covariance of the bit columns;
we solve it by steepest-descent swaps from several starts. Constant columns are interchangeable for the variance and
are placed so the exponents sit nearest 1.0 (the plausible scale of features) with the sign 0. Signed data show up
as an implausible unsigned decoding (the varying sign sinks and every other bit moves up one place); then the sign is
the column whose frequency differs most between feature dimensions across vectors, and the other 31 columns get
the magnitude order of least variance.

Bits that are uniform and independent of everything (the low mantissa bits) cannot be ordered from ciphertexts; they
only move a value by less than its top bits' resolution, which is why decryption is close even when the key is not
exactly right. ``group="all"`` assumes one key for everything (the published deployment); ``group="vector"`` attacks
each vector on its own, which is what a per-vector key leaves an adversary.

``shufflebits-popcount`` -- what no bit permutation can hide: the number of set bits of every number (0 for an exact
zero, so a ReLU feature's sparsity pattern shows through even per-element keys). It returns the popcount features an
attribute classifier can be trained on.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from masquerade.attacks.feature_inversion import popcount
from masquerade.contracts import AttackResult, Configurable, Knowledge, ThreatModel
from masquerade.errors import InputError
from masquerade.rng import RngLike, as_generator
from masquerade.shufflebits.scheme import shuffle_words

__all__ = ["ShuffleBitsKeyRecovery", "ShuffleBitsPopcount", "recover_bit_order", "as_words"]

_WEIGHTS = 2.0 ** (31 - np.arange(32))  # MSB-first slot weights


def _bit_columns(words: np.ndarray) -> np.ndarray:
    """S × 32 bit matrix, column j = MSB-first bit j of each uint32."""
    return np.unpackbits(words.astype(">u4").view(np.uint8).reshape(-1, 4), axis=1)


def _qap(
    cov: np.ndarray, cols: np.ndarray, slots: np.ndarray, restarts: int, gen: np.random.Generator
) -> tuple[float, np.ndarray]:
    """Assign ``slots`` to ``cols`` minimising w^T C w (steepest-descent swaps, several starts).
    Returns (value, slot of each col)."""
    c = cov[np.ix_(cols, cols)] / cov.diagonal().max(initial=1e-30)
    w = _WEIGHTS[slots] / _WEIGHTS[slots].max()
    var = c.diagonal()
    diag = var[:, None] + var[None, :] - 2 * c
    best_f, best = np.inf, None
    for r in range(restarts):
        # start: least varying columns on the heaviest slots (then perturbed)
        key = var + (0.0 if r == 0 else gen.random(len(var)) * (var.max() + 1e-12))
        v = np.empty(len(cols))
        v[np.argsort(key, kind="stable")] = np.sort(w)[::-1]
        for _ in range(10 * len(cols) ** 2):
            g = c @ v
            d = v[None, :] - v[:, None]  # d[a, b] = v_b - v_a
            delta = 2 * d * (g[:, None] - g[None, :]) + d * d * diag
            a, b = np.unravel_index(np.argmin(delta), delta.shape)
            if delta[a, b] >= -1e-13:
                break
            v[a], v[b] = v[b], v[a]
        f = float(v @ c @ v)
        if f < best_f - 1e-12:
            best_f, best = f, v.copy()
    assert best is not None
    order = np.argsort(-best, kind="stable")  # columns from heaviest to lightest slot
    slot_of = np.empty(len(cols), np.int64)
    slot_of[order] = np.sort(slots)
    return best_f, slot_of


def _exponent_offset(bits: np.ndarray, assign: np.ndarray) -> float:
    """|median exponent - 127| of the decoding that puts column assign[j] at slot j (0 for values near 1.0)."""
    e = bits[:, assign[1:9]].astype(np.int64) @ (1 << np.arange(7, -1, -1))
    return float(abs(np.median(e) - 127))


def recover_bit_order(
    words: np.ndarray,
    *,
    restarts: int = 4,
    rng: RngLike = 0,
    max_words: int = 200_000,
    max_offset: float = 24.0,
    within: bool = True,
) -> np.ndarray:
    """The key row (``perm``: ciphertext position j holds plaintext position perm[j]) recovered from uint32
    ciphertext ``words`` (N × D: N vectors of D numbers) that share one bit permutation.

    First as unsigned data: the order of least variance over all 32 slots (constant columns rise to the top, the
    sign among them). When that decoding is implausible (exponents more than ``max_offset`` binades from 1.0 -- what
    happens when a varying sign bit sinks and every other bit moves up one place), the data are signed: the sign is
    the varying column whose frequency differs most between feature dimensions across vectors (a real sign has a
    per-dimension tendency, a low mantissa bit none; one vector cannot show it), and the other 31 columns get the
    magnitude order of least variance.
    """
    gen = as_generator(rng)
    w2 = np.asarray(words, dtype=np.uint32)
    w2 = w2.reshape(len(w2), -1) if w2.ndim > 1 else w2[None]
    dim = np.broadcast_to(np.arange(w2.shape[1]), w2.shape).ravel()
    w = w2.ravel()
    keep = popcount(w) > 1  # ±0 and single-bit words carry no order
    w, dim = w[keep], dim[keep]
    if len(w) > max_words:
        pick = gen.choice(len(w), max_words, replace=False)
        w, dim = w[pick], dim[pick]
    if len(w) < 2:
        return np.arange(32, dtype=np.uint8)  # nothing to learn from
    bits = _bit_columns(w)
    b64 = bits.astype(np.float64)
    cov = np.cov(b64, rowvar=False)
    if within and w2.shape[0] > 1:
        # variance within each feature dimension: a dimension's values are spread less than all values together,
        # so the order of the mantissa bits shows more clearly (the exponent bits stay on top either way)
        counts_d = np.bincount(dim, minlength=w2.shape[1]).astype(np.float64)
        means = np.zeros((w2.shape[1], 32))
        np.add.at(means, dim, b64)
        means /= np.maximum(counts_d, 1)[:, None]
        cen = b64 - means[dim]
        cov = cen.T @ cen / len(cen)
    allc = np.arange(32)
    assign = np.empty(32, np.int64)  # assign[slot] = column
    _, slot_of = _qap(cov, allc, allc, restarts, gen)
    assign[slot_of] = allc
    assign = _resolve_constants(bits, assign)
    if _exponent_offset(bits, assign) > max_offset:
        counts = np.bincount(dim, minlength=w2.shape[1]).astype(np.float64)
        seen = counts > 0
        mean = bits.mean(0)
        p_dim = np.stack(
            [np.bincount(dim, weights=bits[:, c], minlength=len(counts))[seen] / counts[seen] for c in allc]
        )
        spread = np.where((mean > 0.02) & (mean < 0.98), p_dim.var(axis=1), -1.0)
        sign_col = int(np.argmax(spread))
        rest = allc[allc != sign_col]
        _, slot_of = _qap(cov, rest, np.arange(1, 32), restarts, gen)
        assign[0] = sign_col
        assign[slot_of] = rest
        assign = _resolve_constants(bits, assign, first=1)
    perm = np.empty(32, np.uint8)
    perm[assign] = np.arange(32, dtype=np.uint8)
    return perm


def _resolve_constants(bits: np.ndarray, assign: np.ndarray, first: int = 0) -> np.ndarray:
    """Constant columns are interchangeable for the variance; place them so the exponents sit nearest 1.0 and
    the values are not all negative."""
    const = [j for j in range(first, 32) if bits[:, assign[j]].min() == bits[:, assign[j]].max()]
    if len(const) < 2:
        return assign
    cols = [assign[j] for j in const]
    ones = [c for c in cols if bits[0, c] == 1]
    zeros = [c for c in cols if bits[0, c] == 0]
    best, best_score = assign, None
    for which in itertools.combinations(const, len(ones)):
        trial = assign.copy()
        rest_slots = [j for j in const if j not in which]
        trial[list(which)] = ones
        trial[rest_slots] = zeros
        score = (float(bits[:, trial[0]].mean()), _exponent_offset(bits, trial))  # positive, then nearest 1.0
        if best_score is None or score < best_score:
            best, best_score = trial, score
    return best


def as_words(x: Any, where: str) -> np.ndarray:
    """Float32 ciphertexts (N × ..., numpy or torch) as their 32-bit words, N × D uint32 (a view, no copy)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().contiguous().numpy()
    a = np.ascontiguousarray(x)
    if a.dtype not in (np.float32, np.uint32, np.int32) or a.ndim < 1:
        raise InputError(f"{where}: expected float32 ciphertexts (N × ...), got {a.dtype} {a.shape}")
    return a.view(np.uint32).reshape(len(a), -1)


class ShuffleBitsKeyRecovery(Configurable):
    """Recover the bit permutation from ciphertexts only, then decrypt; see the module docstring.

    ``group="all"``: one key for everything (fixed-key deployment); ``"vector"``: every vector on its own.
    ``rng`` (of ``run``) draws the restarts' starting orders; 0 when not given, so that a result repeats."""

    @dataclass(frozen=True)
    class Settings:
        group: str = "all"
        restarts: int = 4
        max_words: int = 200_000

        def __post_init__(self) -> None:
            if self.group not in ("all", "vector"):
                raise InputError(f"shufflebits-key-recovery: group must be 'all' or 'vector', got {self.group!r}")
            if self.restarts < 1 or self.max_words < 1:
                raise InputError("shufflebits-key-recovery: restarts and max_words must be positive")

    name = "shufflebits-key-recovery"
    data_kind = "features"  # its encodings are feature vectors
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS}))

    def run(self, *, encodings: Any, rng: RngLike = None, progress: bool | None = None) -> AttackResult:
        t = time.perf_counter()
        s = self.settings
        words = as_words(encodings, self.name)
        gen = as_generator(0 if rng is None else rng)
        if s.group == "all":
            perms = recover_bit_order(words, restarts=s.restarts, rng=gen, max_words=s.max_words)[None]
            plain = shuffle_words(words, perms, "fixed", inverse=True)
        else:
            perms = np.stack(
                [recover_bit_order(row[None], restarts=s.restarts, rng=gen, max_words=s.max_words) for row in words]
            )
            plain = shuffle_words(words, perms, "vector", inverse=True)
        shape = tuple(encodings.shape)
        out = plain.view(np.float32).reshape(shape)
        return AttackResult(
            self.name,
            torch.from_numpy(out) if isinstance(encodings, torch.Tensor) else out,
            recovered={"perm": perms},
            metrics={"vectors": len(words), "keys": len(perms)},
            seconds=time.perf_counter() - t,
        )


class ShuffleBitsPopcount(Configurable):
    """The per-number popcount (N × D, float32 in 0..32): a feature any key scope leaks."""

    @dataclass(frozen=True)
    class Settings:
        pass

    name = "shufflebits-popcount"
    data_kind = "features"  # its encodings are feature vectors
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS}))

    def run(self, *, encodings: Any, rng: RngLike = None, progress: bool | None = None) -> AttackResult:
        t = time.perf_counter()
        words = as_words(encodings, self.name)
        return AttackResult(
            self.name,
            recovered={"popcount": popcount(words).astype(np.float32)},
            metrics={"vectors": len(words)},
            seconds=time.perf_counter() - t,
        )


def key_matches(recovered: np.ndarray, true: np.ndarray) -> float:
    """Share of ciphertext positions whose plaintext position was recovered."""
    return float((np.asarray(recovered) == np.asarray(true)).mean())
