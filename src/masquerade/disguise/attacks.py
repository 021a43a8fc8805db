"""Attacks on DisguisedNets disguising, by adversary knowledge.

- Level 3, known plaintext pairs: ``disguise-known-plaintext`` recovers the block permutation (orthogonal maps
  keep block norms, so positions are matched by their norms over the pairs, then assigned optimally) and each block
  position's RMT matrix by least squares while the pairs underdetermine it, and by orthogonal Procrustes once they
  determine it (plain least squares then amplifies noise along the weak directions of natural-image blocks), then
  decodes everything else.
- Level 2, the distribution is known: :mod:`masquerade.disguise.distribution` (``disguise-alignment``, and the
  ``disguise-moments`` baseline).
- AES in ECB mode, levels 2 and 3: :mod:`masquerade.disguise.ecb` (``aes-ecb-frequency``, ``aes-ecb-codebook``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from masquerade.contracts import AttackResult, Configurable, Knowledge, ThreatModel
from masquerade.disguise.inputs import check_block, dataset_disguise, images_array, known_pairs_arrays
from masquerade.disguise.scheme import from_blocks, to_blocks
from masquerade.errors import InputError

__all__ = ["KnownPlaintextRMT", "recover_permutation_by_norms", "images_array", "check_block", "dataset_disguise"]


def recover_permutation_by_norms(plain_blocks: np.ndarray, cipher_blocks: np.ndarray) -> np.ndarray:
    """perm with cipher position j holding plain position perm[j], from N×C×M×d blocks of known pairs.

    An orthogonal map keeps each block's norm, so the norm profile of a plain position over all pairs and channels
    equals that of its cipher position; the squared differences are assigned optimally (Hungarian algorithm).
    """
    pn = np.linalg.norm(plain_blocks, axis=3).transpose(2, 0, 1).reshape(plain_blocks.shape[2], -1)  # M × (N·C)
    cn = np.linalg.norm(cipher_blocks, axis=3).transpose(2, 0, 1).reshape(cipher_blocks.shape[2], -1)
    cost = (cn**2).sum(1)[:, None] + (pn**2).sum(1)[None, :] - 2 * cn @ pn.T  # cost[j, i]
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), np.int64)
    perm[rows] = cols
    return perm


class KnownPlaintextRMT(Configurable):
    """Level 3: recover the permutation and every block's RMT matrix from known (plain, disguised) pairs."""

    @dataclass(frozen=True)
    class Settings:
        block: int = 4
        permuted: bool = True
        method: str = "auto"  # least squares while underdetermined, orthogonal Procrustes (robust to noise) after

        def __post_init__(self) -> None:
            check_block(self.block, "disguise-known-plaintext")
            if self.method not in ("auto", "lstsq", "procrustes"):
                raise InputError(
                    f"disguise-known-plaintext: method must be 'auto', 'lstsq' or 'procrustes', got {self.method!r}"
                )

    name = "disguise-known-plaintext"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.KNOWN_PAIRS}))

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """DisguisedNets with RMT (or permutation alone) under one dataset key."""
        s = dataset_disguise(scheme)
        return None if s is None or s.transform not in ("rmt", "none") else {"block": s.block, "permuted": s.permute}

    def fit(self, plain: np.ndarray, cipher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.settings
        b = s.block
        pb, cb = to_blocks(plain, b), to_blocks(cipher, b)
        m, d = pb.shape[2], pb.shape[3]
        perm = recover_permutation_by_norms(pb, cb) if s.permuted else np.arange(m)
        cb = cb[:, :, np.argsort(perm)]  # cipher blocks back at their plain positions
        mats = np.empty((m, d, d))
        method = s.method
        if method == "auto":
            method = "lstsq" if pb.shape[0] * pb.shape[1] < d else "procrustes"
        for pos in range(m):  # one small d×d fit per block position
            p = pb[:, :, pos].reshape(-1, d)
            q = cb[:, :, pos].reshape(-1, d)
            if method == "lstsq":
                rt, *_ = np.linalg.lstsq(p, q, rcond=None)  # q ≈ p Rᵀ
            else:
                u, _, vt = np.linalg.svd(p.T @ q)
                rt = u @ vt
            mats[pos] = rt.T
        return perm, mats

    def run(self, *, encodings: Any, known_pairs: Any, rng: Any = None, progress: bool | None = None) -> AttackResult:
        t = time.perf_counter()
        plain, cipher = known_pairs_arrays(known_pairs, self.name)
        z = images_array(encodings, self.name)
        n, c, h, w = z.shape
        b = self.settings.block
        if (h, w) != plain.shape[2:] or h % b or w % b:
            raise InputError(f"{self.name}: pairs and encodings must share an image size divisible by {b}")
        perm, mats = self.fit(plain, cipher)
        blocks = to_blocks(z, b)[:, :, np.argsort(perm)]
        solved = np.linalg.pinv(mats)  # the least-squares map need not be orthogonal when pairs are few
        rec = np.einsum("mij,ncmj->ncmi", solved, blocks)
        images = from_blocks(rec, h, w, b)
        return AttackResult(
            self.name,
            torch.from_numpy(np.clip(images, 0, 1).astype(np.float32)),
            recovered={"perm": perm, "matrices": mats},
            metrics={"known_pairs": len(plain)},
            seconds=time.perf_counter() - t,
        )


def __getattr__(name: str) -> Any:
    # ECBCodebook lived here until the ECB attacks got their own module; the old import keeps working one release
    if name == "ECBCodebook":
        from masquerade.disguise.ecb import ECBCodebook

        return ECBCodebook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
