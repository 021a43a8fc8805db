"""Attacks on DisguisedNets disguising that know the data distribution (level 2: auxiliary clean images, no pairs).

- ``disguise-alignment`` (the strongest): the block permutation from statistics the block transforms leave
  unchanged, then every RMT matrix by aligning the disguised set's cross second moments to the auxiliary images'
  (see :class:`DistributionAlignment`).
- ``disguise-moments`` (a baseline): every RMT matrix from second-order statistics pooled over positions -- the
  disguised blocks' covariance is R Σ Rᵀ -- matching eigenvectors of the disguised and auxiliary covariances, with
  the sign ambiguity resolved by the block means (pixels are positive, so R μ = μ'). It does not look for the
  permutation: blocks are decoded where they stand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from masquerade.contracts import AttackResult, Configurable, Knowledge, ThreatModel
from masquerade.disguise.inputs import auxiliary_array, check_block, dataset_disguise, images_array
from masquerade.disguise.scheme import from_blocks, to_blocks
from masquerade.errors import InputError

__all__ = ["MomentMatching", "DistributionAlignment", "match_positions"]


class MomentMatching(Configurable):
    """Level 2: estimate each RMT matrix from the covariance and mean of disguised vs auxiliary clean blocks."""

    @dataclass(frozen=True)
    class Settings:
        block: int = 4

        def __post_init__(self) -> None:
            check_block(self.block, "disguise-moments")

    name = "disguise-moments"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.AUXILIARY}))

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """DisguisedNets with RMT under one dataset key."""
        s = dataset_disguise(scheme)
        return None if s is None or s.transform != "rmt" else {"block": s.block}

    def run(self, *, encodings: Any, auxiliary: Any, rng: Any = None, progress: bool | None = None) -> AttackResult:
        t = time.perf_counter()
        z = images_array(encodings, self.name)
        aux = images_array(auxiliary.to_tensor() if hasattr(auxiliary, "to_tensor") else auxiliary, self.name)
        b = self.settings.block
        zb, ab = to_blocks(z, b), to_blocks(aux, b)
        n, c, m, d = zb.shape
        # the auxiliary statistics, pooled over positions and channels (natural images are nearly stationary)
        a = ab.reshape(-1, d)
        mu_a = a.mean(0)
        cov_a = np.cov(a, rowvar=False)
        ea, ua = np.linalg.eigh(cov_a)
        mats = np.empty((m, d, d))
        for pos in range(m):
            q = zb[:, :, pos].reshape(-1, d)
            mu_q = q.mean(0)
            eq, uq = np.linalg.eigh(np.cov(q, rowvar=False))
            # eigenvectors match in eigenvalue order; each pair's sign from the means: R ua_i = ±uq_i
            s = np.sign((uq.T @ mu_q) * (ua.T @ mu_a))
            s[s == 0] = 1
            mats[pos] = (uq * s) @ ua.T
        rec = np.einsum("mji,ncmj->ncmi", mats, zb)
        h, w = z.shape[2:]
        return AttackResult(
            self.name,
            torch.from_numpy(np.clip(from_blocks(rec, h, w, b), 0, 1).astype(np.float32)),
            recovered={"matrices": mats},
            metrics={"auxiliary_images": len(aux)},
            seconds=time.perf_counter() - t,
        )


# -- level 2: align the whole second-order structure -------------------------------------------------------------

_ALIGN_MAX_DIM = 8192  # (blocks × block pixels) of one image: the cross-moment matrix is this squared, in float64


def _position_samples(x: np.ndarray, b: int) -> np.ndarray:
    """N×C×H×W -> (N·C)×M×b²: every channel of every image is one sample of each block position (the RMT matrix of
    a position is shared by its channels)."""
    blocks = to_blocks(x, b)
    return blocks.reshape(-1, blocks.shape[2], blocks.shape[3])


def _second_moments(s: np.ndarray) -> np.ndarray:
    """M×M×d×d uncentred cross second moments E[s_j s_kᵀ] of samples (K×M×d), one product over the flat images."""
    k, m, d = s.shape
    flat = s.reshape(k, m * d)
    return (flat.T @ flat / max(k, 1)).reshape(m, d, m, d).transpose(0, 2, 1, 3)


def _invariants(s: np.ndarray, moments: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Statistics that an orthogonal map of each block leaves unchanged: per position, the singular values of its
    second moment and the mean and spread of its block norms (unary, M×F); between positions, the covariance of
    block norms and the Frobenius norm of the cross covariance (pairwise, M×M each). The pairwise ones are centred:
    uncentred, the mean blocks' product dominates them and hides which positions were neighbours (on CIFAR-10 the
    permutation came out 50 % right uncentred, 100 % centred)."""
    m = s.shape[1]
    norms = np.linalg.norm(s, axis=2)
    diag = moments[np.arange(m), np.arange(m)]
    spectrum = np.sqrt(np.maximum(np.linalg.eigvalsh(diag)[:, ::-1], 0))
    unary = np.concatenate([spectrum, norms.mean(0)[:, None], norms.std(0)[:, None]], 1)
    mean = s.mean(0)
    cov = moments - np.einsum("ja,kb->jkab", mean, mean)
    centred = norms - norms.mean(0)
    pairwise = [centred.T @ centred / max(len(norms), 1), np.sqrt((cov**2).sum((2, 3)))]
    return unary, pairwise


def match_positions(
    unary_z: np.ndarray,
    pairwise_z: list[np.ndarray],
    unary_a: np.ndarray,
    pairwise_a: list[np.ndarray],
    *,
    max_swaps: int | None = None,
) -> np.ndarray:
    """perm with disguised position j holding plain position perm[j], from position statistics that the block
    transforms leave unchanged: a linear assignment on the unary statistics, then a quadratic assignment by
    best-improvement swaps of two positions.

    It minimises Σ_j ‖u_j − u'_perm[j]‖² + Σ_pairwise Σ_jk (A_jk − B_perm[j]perm[k])². Up to constants the pairwise
    part is −2 tr(A P B Pᵀ), so the gain of every swap comes from one M×M product per step."""
    m = len(unary_z)
    unary = ((unary_z[:, None] - unary_a[None]) ** 2).sum(2)  # unary[j, i]: cost of j holding plain i
    rows, cols = linear_sum_assignment(unary)
    perm = np.empty(m, np.int64)
    perm[rows] = cols
    if m < 2:
        return perm
    a_idx, b_idx = np.triu_indices(m, 1)
    limit = max_swaps if max_swaps is not None else 50 * m
    for _ in range(limit):
        # gain (decrease of the objective) of swapping positions a and b, for every pair at once
        u_now = unary[np.arange(m), perm]
        gain = u_now[a_idx] + u_now[b_idx] - unary[a_idx, perm[b_idx]] - unary[b_idx, perm[a_idx]]
        for az, ba in zip(pairwise_z, pairwise_a):
            bp = ba[np.ix_(perm, perm)]
            prod = az @ bp
            dg = np.diagonal(prod)
            # Σ_k (A_ak − A_bk)(Bp_bk − Bp_ak) over all k, less its k = a and k = b terms, and the diagonal pair
            cross = prod[a_idx, b_idx] + prod[b_idx, a_idx] - dg[a_idx] - dg[b_idx]
            ends = (az[a_idx, a_idx] - az[b_idx, a_idx]) * (bp[b_idx, a_idx] - bp[a_idx, a_idx]) + (
                az[a_idx, b_idx] - az[b_idx, b_idx]
            ) * (bp[b_idx, b_idx] - bp[a_idx, b_idx])
            diag = (az[a_idx, a_idx] - az[b_idx, b_idx]) * (bp[b_idx, b_idx] - bp[a_idx, a_idx])
            gain += 2 * (2 * (cross - ends) + diag)
        best = int(np.argmax(gain))
        if gain[best] <= 1e-12 * max(1.0, float(np.abs(gain).max())):
            break
        i, j = a_idx[best], b_idx[best]
        perm[i], perm[j] = perm[j], perm[i]
    return perm


class DistributionAlignment(Configurable):
    """Level 2, the distribution is known: recover the block permutation and every RMT matrix from statistics of
    the disguised set and of auxiliary clean images, no pairs.

    1. The permutation, from what the orthogonal maps leave unchanged (:func:`match_positions`): each position's
       spectrum and block norms, and how strongly each pair of positions co-varies.
    2. Each matrix's start: the eigenvectors of the position's disguised second moment matched to the plain
       position's, in eigenvalue order, signs from the means (``disguise-moments``, position by position).
    3. The matrices jointly: every pair of positions must satisfy E[z_j z_kᵀ] = R_j E[x_i x_lᵀ] R_kᵀ. Block-
       coordinate ascent on Σ_jk ⟨E[z_j z_kᵀ], R_j E[x x_ᵀ] R_kᵀ⟩ + mean terms: each R_j is the orthogonal polar
       factor of its linearised gradient (a minorise-maximise step: the objective is convex in each R_j), so it never
       decreases. The cross-position terms settle what one position's statistics cannot: the signs and the
       rotations within near-equal eigenvalues.

    The adversary is the server that trains on the disguised set: every disguised image it holds adds to the
    statistics. ``transform="none"`` (permutation only) skips steps 2-3."""

    @dataclass(frozen=True)
    class Settings:
        block: int = 4
        permuted: bool = True
        transform: str = "rmt"
        sweeps: int = 50  # block-coordinate sweeps over all positions (step 3)

        def __post_init__(self) -> None:
            check_block(self.block, "disguise-alignment")
            if self.transform not in ("rmt", "none"):
                raise InputError(f"disguise-alignment: transform is 'rmt' or 'none', got {self.transform!r}")
            if not isinstance(self.sweeps, int) or self.sweeps < 0:
                raise InputError(f"disguise-alignment: sweeps must be a non-negative integer, got {self.sweeps!r}")

    name = "disguise-alignment"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.AUXILIARY}))

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """DisguisedNets with RMT (noise or not) or permutation alone under one dataset key."""
        s = dataset_disguise(scheme)
        if s is None or s.transform not in ("rmt", "none"):
            return None
        return {"block": s.block, "permuted": s.permute, "transform": s.transform}

    def fit(self, encodings: np.ndarray, auxiliary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(perm, matrices): disguised position j holds plain position perm[j] under matrix matrices[j]."""
        s = self.settings
        b = s.block
        zs, xs = _position_samples(encodings, b), _position_samples(auxiliary, b)
        m, d = zs.shape[1:]
        if m * d > _ALIGN_MAX_DIM:
            raise InputError(
                f"{self.name}: {m} blocks of {d} pixels is too large an image for the cross-moment "
                f"matrix (at most {_ALIGN_MAX_DIM} pixels per channel); use smaller images"
            )
        mz, mx = _second_moments(zs), _second_moments(xs)
        if s.permuted:
            uz, pz = _invariants(zs, mz)
            ux, px = _invariants(xs, mx)
            if s.transform == "none":  # no block transform: the mean blocks themselves identify positions
                uz = np.concatenate([uz, zs.mean(0)], 1)
                ux = np.concatenate([ux, xs.mean(0)], 1)
            perm = match_positions(uz, pz, ux, px)
        else:
            perm = np.arange(m)
        if s.transform == "none":
            return perm, np.broadcast_to(np.eye(d), (m, d, d)).copy()
        mu_z, mu_x = zs.mean(0), xs.mean(0)[perm]
        mp = mx[np.ix_(perm, perm)]  # plain moments in disguised order
        diag = np.arange(m)
        _, uz_ = np.linalg.eigh(mz[diag, diag])
        _, ux_ = np.linalg.eigh(mp[diag, diag])
        sign = np.sign(np.einsum("mdi,md->mi", uz_, mu_z) * np.einsum("mdi,md->mi", ux_, mu_x))
        sign[sign == 0] = 1
        mats = np.einsum("mai,mi,mbi->mab", uz_, sign, ux_)
        for _ in range(s.sweeps):
            before = mats.copy()
            for j in range(m):  # Gauss-Seidel: each position sees its neighbours' newest matrices
                g = ((mz[j] @ mats) @ mp[j].transpose(0, 2, 1)).sum(0) + np.outer(mu_z[j], mu_x[j])
                u, _, vt = np.linalg.svd(g)
                mats[j] = u @ vt
            if np.abs(mats - before).max() < 1e-7:  # a fixed point: further sweeps change nothing
                break
        return perm, mats

    def run(self, *, encodings: Any, auxiliary: Any, rng: Any = None, progress: bool | None = None) -> AttackResult:
        t = time.perf_counter()
        z = images_array(encodings, self.name)
        aux = auxiliary_array(auxiliary, z, self.name)
        b = self.settings.block
        n, c, h, w = z.shape
        if h % b or w % b:
            raise InputError(f"{self.name}: block size {b} must divide the image size {h}×{w}")
        if len(aux) < 2 or n < 2:
            raise InputError(f"{self.name}: needs at least 2 encodings and 2 auxiliary images, got {n} and {len(aux)}")
        if not (np.isfinite(z).all() and np.isfinite(aux).all()):
            raise InputError(f"{self.name}: encodings and auxiliary images must be finite")
        perm, mats = self.fit(z, aux)
        blocks = np.einsum("mji,ncmj->ncmi", mats, to_blocks(z, b))
        out = np.empty_like(blocks)
        out[:, :, perm] = blocks
        images = np.clip(from_blocks(out, h, w, b), 0, 1).astype(np.float32)
        return AttackResult(
            self.name,
            torch.from_numpy(images),
            recovered={"perm": perm, "matrices": mats},
            metrics={"auxiliary_images": len(aux), "encodings_used": n},
            seconds=time.perf_counter() - t,
        )
