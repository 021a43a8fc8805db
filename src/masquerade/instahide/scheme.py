"""InstaHide (Huang, Song, Li, Arora, ICML 2020): k-way mixup of private (and public) images plus a one-time
pixel-wise sign-flipping mask.

Faithful to the official ``train_inside.py`` / ``train_cross.py``:

- coefficients: k draws of |N(0, 1)| divided by their sum, the whole row redrawn until every coefficient is at most
  ``upper`` and, in cross mode, the private coefficients sum to at least ``dom`` (the official sampler, not a
  Dirichlet; the official cross script checks only slots 0 and 1, which is the same thing with ``--pair``);
- partners: slot 0 is the image itself, every further private slot a fresh random permutation of the private set,
  public slots fresh permutations of the public pool;
- mask: an independent random sign per pixel and channel;
- labels: inside mode sum_i lam_i onehot(y_i) over all k slots; cross mode over the private slots only, not
  renormalised (``renormalize_labels=True`` renormalises).

What we add: ``distinct=True`` never mixes an image with itself (the official permutations can have fixed points;
``distinct=False`` reproduces that), public slots never repeat a patch within one key when the pool is large enough,
and ``decode``: with the key (and, in cross mode, the public pool) an encoding is a sparse linear system in the
private images, which we solve -- so the key really is the whole secret.

Every random choice is drawn by ``keygen`` (OS CSPRNG unless a seed is given): a fresh key per epoch is a one-time key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from masquerade.contracts import Configurable, check_images, check_key, refuse_base
from masquerade.errors import InputError
from masquerade.keys import Key, check_key_array, check_key_field, is_count
from masquerade.rng import RngLike, as_generator

__all__ = [
    "InstaHide",
    "InstaHideSettings",
    "InstaHideKey",
    "sample_coefficients",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # the official training code's normalisation
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXEL_SCALES = ("[-1,1]", "[0,1]", "normalize")


@dataclass(frozen=True)
class InstaHideSettings:
    k: int = 4
    mode: str = "inside"
    private_per_mix: int | None = None
    upper: float = 0.65
    dom: float = 0.3
    sign_flip: bool = True
    distinct: bool = True
    pixel_scale: str = "[-1,1]"
    mean: tuple[float, ...] = CIFAR_MEAN
    std: tuple[float, ...] = CIFAR_STD
    public_mean: tuple[float, ...] = IMAGENET_MEAN
    public_std: tuple[float, ...] = IMAGENET_STD
    renormalize_labels: bool = False
    group: int = 0  # 0: private partners from the whole set (the paper); g: from secret groups of about g images

    def __post_init__(self) -> None:
        for name in ("mean", "std", "public_mean", "public_std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise InputError(f"instahide: k must be a positive integer, got {self.k!r}")
        if self.mode not in ("inside", "cross"):
            raise InputError(f"instahide: mode must be 'inside' or 'cross', got {self.mode!r}")
        p = self.private_per_mix
        if p is None:
            p = self.k if self.mode == "inside" else (self.k + 1) // 2
        if self.mode == "inside" and p != self.k:
            raise InputError(
                f"instahide: inside mode mixes k={self.k} private images; private_per_mix={p} applies to cross mode"
            )
        if not 1 <= p <= self.k:
            raise InputError(f"instahide: private_per_mix must be in 1..k={self.k}, got {p}")
        object.__setattr__(self, "private_per_mix", int(p))
        if not 0 < self.upper <= 1:
            raise InputError(f"instahide: upper must be in (0, 1], got {self.upper}")
        if self.k > 1 and self.upper * self.k < 1:
            raise InputError(f"instahide: no k={self.k} coefficients summing to 1 can all be <= upper={self.upper}")
        if not 0 <= self.dom <= 1:
            raise InputError(f"instahide: dom must be in [0, 1], got {self.dom}")
        if self.mode == "cross" and self.dom > min(1.0, p * self.upper) and self.k > 1:
            raise InputError(f"instahide: dom={self.dom} cannot be reached by {p} coefficients <= {self.upper}")
        if self.pixel_scale not in PIXEL_SCALES:
            raise InputError(f"instahide: pixel_scale must be one of {PIXEL_SCALES}, got {self.pixel_scale!r}")
        for name in ("std", "public_std"):
            if any(v <= 0 for v in getattr(self, name)):
                raise InputError(f"instahide: {name} must be positive")
        if not isinstance(self.group, int) or isinstance(self.group, bool) or self.group < 0:
            raise InputError(f"instahide: group must be 0 (the whole set) or a group size, got {self.group!r}")
        need = max(2, 2 * p if self.distinct else 2)
        if self.group and self.group < need:
            # below 2p the distinct draw is nearly a Latin square: rejection would take very long
            raise InputError(
                f"instahide: group must be 0 (the whole set) or at least {need} images for {p} "
                f"{'distinct ' if self.distinct else ''}private images per encoding, got {self.group}"
            )

    @property
    def p(self) -> int:
        """Private slots per encoding."""
        assert self.private_per_mix is not None
        return self.private_per_mix

    def affine(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (scale, shift) mapping [0, 1] pixels to the mixing scale; row 0 private, row 1 public."""
        if self.pixel_scale == "[-1,1]":
            return np.full((2, channels), 2.0, np.float32), np.full((2, channels), -1.0, np.float32)
        if self.pixel_scale == "[0,1]":
            return np.ones((2, channels), np.float32), np.zeros((2, channels), np.float32)
        rows = []
        stats = [(self.mean, self.std, "mean/std"), (self.public_mean, self.public_std, "public_mean/public_std")]
        if self.mode == "inside":  # no public image is mixed in: the private statistics fill both rows
            stats[1] = stats[0]
        for mean, std, who in stats:
            if len(mean) != channels or len(std) != channels:
                raise InputError(f"instahide: {who} have {len(mean)} values for {channels}-channel images")
            rows.append((1.0 / np.asarray(std), -np.asarray(mean) / np.asarray(std)))
        scale = np.stack([r[0] for r in rows]).astype(np.float32)
        shift = np.stack([r[1] for r in rows]).astype(np.float32)
        return scale, shift


@dataclass(frozen=True, repr=False, eq=False)
class InstaHideKey(Key):
    """One-time key for n encodings: coefficients, partners, packed sign mask."""

    scheme: ClassVar[str] = "instahide"
    public_fields: ClassVar[tuple[str, ...]] = ("n", "shape", "pool_size", "settings")
    settings: InstaHideSettings
    n: int
    shape: list[int]
    pool_size: int
    lam: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    partners: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint8))

    def validate(self) -> None:
        s = self.settings
        check_key_field(self, "settings", isinstance(s, InstaHideSettings), "InstaHide settings")
        check_key_field(self, "n", is_count(self.n, 1), "a positive count")
        check_key_field(
            self,
            "shape",
            isinstance(self.shape, list)
            and len(self.shape) == 3
            and all(is_count(v, 1) for v in self.shape)
            and math.prod(self.shape) <= 2**31,
            "[C, H, W] of positive sizes",
        )
        check_key_field(
            self,
            "pool_size",
            is_count(self.pool_size, 0) and (self.pool_size > 0) == (s.p < s.k),
            "the public pool size (positive exactly when the settings mix in public images)",
        )
        n, c, h, w = int(self.n), *self.shape
        lam = check_key_array(self, "lam", dtype=np.float32, shape=(n, s.k), low=0.0, high=1.0 + 1e-6, finite=True)
        if not np.allclose(lam.sum(1), 1.0, atol=1e-4):
            raise InputError("instahide key: every row of lam (the mixing coefficients) must sum to 1")
        check_key_array(self, "partners", dtype=np.int64, shape=(n, s.k), low=0)
        if (self.partners[:, : s.p] >= n).any() or (s.p < s.k and (self.partners[:, s.p :] >= self.pool_size).any()):
            raise InputError("instahide key: partners name images outside the private set or the public pool")
        check_key_array(self, "mask", dtype=np.uint8, shape=(n, -(-(c * h * w) // 8) if s.sign_flip else 0))

    def signs(self) -> np.ndarray:
        """The ±1 mask as float32 n×C×H×W (all ones without sign flipping)."""
        c, h, w = self.shape
        if not self.settings.sign_flip:
            return np.ones((self.n, c, h, w), np.float32)
        bits = np.unpackbits(self.mask, axis=1, count=c * h * w)
        return (1.0 - 2.0 * bits.astype(np.float32)).reshape(self.n, c, h, w)

    def private_partners(self) -> np.ndarray:
        """Indices of the private images mixed into each encoding (n × private_per_mix; column 0 = itself)."""
        return self.partners[:, : self.settings.p]


def sample_coefficients(
    n: int, k: int, *, upper: float, dom: float = 0.0, private: int = 0, rng: RngLike = None, max_rounds: int = 100_000
) -> np.ndarray:
    """The official coefficient sampler, vectorised over rows: |N(0,1)| normalised, rows redrawn until valid.

    A row is valid when every coefficient is <= ``upper`` and the first ``private`` coefficients sum to >= ``dom``
    (``dom`` is ignored when ``private`` is 0). With ``k == 1`` the single coefficient is 1.
    """
    gen = as_generator(rng)

    def draw(m: int) -> np.ndarray:
        a = np.abs(gen.normal(0.0, 1.0, size=(m, k)))
        return a / a.sum(axis=1, keepdims=True)

    lam = draw(n)
    if k == 1:
        return lam

    def invalid(rows: np.ndarray) -> np.ndarray:
        bad = rows.max(axis=1) > upper
        if private and dom > 0:
            bad |= rows[:, :private].sum(axis=1) < dom
        return bad

    todo = np.flatnonzero(invalid(lam))
    rounds = 0
    while todo.size:
        rounds += 1
        if rounds > max_rounds:
            raise InputError(
                f"instahide: the coefficient sampler found no valid row in {max_rounds} rounds "
                f"(k={k}, upper={upper}, dom={dom}); relax the bounds"
            )
        fresh = draw(todo.size)
        lam[todo] = fresh
        todo = todo[invalid(fresh)]
    return lam


def _grouped_partners(n: int, p: int, group: int, gen: np.random.Generator, distinct: bool) -> np.ndarray:
    """Private partners drawn inside secret groups: the images are shuffled and cut into n // group groups of about
    ``group`` (sizes differ by at most one); each slot is an independent uniform permutation inside every group
    (with ``distinct``, groups whose draw repeats an image in an encoding are drawn again, all at once). The mixing
    matrix is then block-diagonal after a permutation: decoding costs O(n · group²), linear in n."""
    m = max(1, n // group)
    sizes = np.full(m, n // m)
    sizes[: n % m] += 1
    gid = np.repeat(np.arange(m), sizes)  # group of each position
    order = gen.permutation(n).astype(np.int64)  # position t holds image order[t]
    cols = [np.arange(n, dtype=np.int64)]  # slots in position space; slot 0 is the image itself
    limit = 100 + int(200 * math.exp(p))
    for _ in range(1, p):
        perm = np.empty(n, np.int64)
        todo = np.arange(m)
        for _round in range(limit):
            at = np.nonzero(np.isin(gid, todo))[0] if todo.size < m else np.arange(n)
            perm[at] = at[np.lexsort((gen.random(at.size), gid[at]))]  # a uniform permutation inside each group
            if not distinct:
                break
            clash = np.zeros(at.size, bool)
            for col in cols:
                clash |= col[at] == perm[at]
            todo = np.unique(gid[at[clash]])
            if not todo.size:
                break
        else:
            raise InputError(
                f"instahide: could not draw {p} distinct private images per encoding inside groups of "
                f"{group}; use larger groups or distinct=False"
            )
        cols.append(perm)
    out = np.empty((n, p), np.int64)
    out[order] = np.stack([order[c] for c in cols], axis=1)  # image order[t] mixes images order[cols[s][t]]
    return out


def _private_partners(n: int, p: int, gen: np.random.Generator, distinct: bool, group: int = 0) -> np.ndarray:
    if group and group < n:
        return _grouped_partners(n, p, group, gen, distinct)
    cols = [np.arange(n, dtype=np.int64)]
    for s in range(1, p):
        tries = int(20 * math.exp(s)) + 100
        for _ in range(tries):
            perm = gen.permutation(n).astype(np.int64)
            if not distinct or not np.any(np.stack(cols) == perm):
                break
        else:
            raise InputError(
                f"instahide: could not draw {p} distinct private images per encoding from {n} images; "
                "use more images or distinct=False"
            )
        cols.append(perm)
    return np.stack(cols, axis=1)


def _public_partners(n: int, slots: int, pool: int, gen: np.random.Generator) -> np.ndarray:
    if slots == 0:
        return np.zeros((n, 0), np.int64)
    if pool <= 0:
        raise InputError("instahide: cross mode needs a public pool (pool_size > 0)")
    if pool >= n * slots:  # one permutation: no public image repeats within this key
        return gen.permutation(pool)[: n * slots].reshape(slots, n).T.astype(np.int64)
    reps = -(-n // pool)
    cols = [np.concatenate([gen.permutation(pool) for _ in range(reps)])[:n] for _ in range(slots)]
    return np.stack(cols, axis=1).astype(np.int64)


def _as_float_images(x: torch.Tensor, where: str) -> np.ndarray:
    x = check_images(x, where=where)
    return np.ascontiguousarray(x.detach().cpu().numpy()).reshape(x.shape[0], x.shape[1], -1)


# components up to this size are solved densely (LAPACK, every core), in batches of equal size; 16,384 images take
# 2 GiB as float64. Larger ones fall back to sparse LU.
DENSE_LIMIT = 16384


def _solve_by_components(m: Any, rhs: np.ndarray) -> np.ndarray:
    """Solve m x = rhs (every column of rhs at once), one connected component of m's graph at a time: components of
    equal size up to DENSE_LIMIT as one batch of dense systems, larger ones by sparse LU.

    With ``group`` every component is a group and the cost is linear in n. With the paper's whole-set partners the
    graph is one random expander, and no method we know is linear: (1) its separators are a fixed share of n, so a
    sparse LU fills in to about n² entries (4,000 images took 15 s and 8,000 took 67 s that way, where one dense LU
    takes 2 s and 13 s); (2) the smallest singular value of m falls about as 1/n (measured at n = 200 to 3,200:
    1e-3 to 1e-4, from 3 keys each), so Krylov iterations grow with n too (plain GMRES did not converge in 10,000
    iterations at n = 2,000), each linear. (2) also bounds what any solver can recover: float32 encodings carry a
    relative error of 6e-8, amplified by the condition number (about 1e4 at n = 8,000, where the worst pixel is off
    by 1e-3, a quarter of a grey level), so that beyond a few tens of thousands of images the encodings no longer
    pin every pixel to its grey level. ``reveal`` says so when that happens (its re-encoding check)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import splu

    n = m.shape[0]
    count, comp = connected_components(m, directed=True, connection="weak")
    x = np.empty_like(rhs)
    members = np.argsort(comp, kind="stable")
    sizes = np.bincount(comp, minlength=count)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    local = np.empty(n, np.int64)
    local[members] = np.arange(n) - np.repeat(starts[:-1], sizes)
    coo = m.tocoo()
    for size in np.unique(sizes):
        every = np.nonzero(sizes == size)[0]
        if size <= DENSE_LIMIT:
            # batches of components whose blocks and right-hand sides take at most about 256 MB
            per = max(1, (256 << 20) // (8 * int(size) * (int(size) + rhs.shape[1])))
            for cut in range(0, len(every), per):
                _solve_dense(every[cut : cut + per], int(size), members, starts, comp, local, coo, rhs, x)
            continue
        for g in every:
            part = members[starts[g] : starts[g + 1]]
            try:
                lu = splu(sp.csc_matrix(m[part][:, part]))
            except RuntimeError as exc:
                raise InputError(f"instahide.decode: the key's mixing matrix is singular ({exc})") from None
            x[part] = lu.solve(rhs[part])
    return x


def _solve_dense(
    which: np.ndarray,
    size: int,
    members: np.ndarray,
    starts: np.ndarray,
    comp: np.ndarray,
    local: np.ndarray,
    coo: Any,
    rhs: np.ndarray,
    x: np.ndarray,
) -> None:
    """Solve the components ``which`` (all of ``size`` images) as one batch of dense systems."""
    idx = members[(starts[which][:, None] + np.arange(size)).ravel()]
    slot = np.full(len(starts) - 1, -1, np.int64)
    slot[which] = np.arange(len(which))
    keep = slot[comp[coo.row]] >= 0
    blocks = np.zeros((len(which), size, size))
    blocks[slot[comp[coo.row[keep]]], local[coo.row[keep]], local[coo.col[keep]]] = coo.data[keep]
    # torch's batched LU solve: several times faster here than numpy's for many right-hand sides
    sol, info = torch.linalg.solve_ex(
        torch.from_numpy(blocks), torch.from_numpy(rhs[idx]).reshape(len(which), size, -1)
    )
    if bool((info != 0).any()) or not bool(torch.isfinite(sol).all()):
        raise InputError("instahide.decode: the key's mixing matrix is singular")
    x[idx] = sol.reshape(len(which) * size, -1).numpy()


class InstaHide(Configurable):
    """InstaHide encoding; see the module docstring. ``create_scheme("instahide", k=6, mode="cross")``."""

    name = "instahide"
    invertible = True
    data_kind = "images"
    Settings = InstaHideSettings

    # -- keys ----------------------------------------------------------------------------------------------------
    def keygen(
        self,
        n: int,
        *,
        rng: RngLike = None,
        shape: tuple[int, ...] = (3, 32, 32),
        pool_size: int = 0,
        base: Key | None = None,
    ) -> InstaHideKey:
        """Draw a one-time key for ``n`` private images of ``shape`` (C, H, W) and a public pool of ``pool_size``."""
        s = self.settings
        refuse_base(self.name, base)  # every encoding has its own one-time key: nothing to extend
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"instahide.keygen: n must be a positive int, got {n!r}")
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"instahide.keygen: shape is (C, H, W), got {shape!r}")
        if s.mode == "cross" and s.p < s.k and pool_size < 1:
            raise InputError("instahide.keygen: cross mode needs pool_size (the number of public images)")
        if s.distinct and n < s.p:
            raise InputError(f"instahide.keygen: {s.p} distinct private images per encoding need n >= {s.p}, got {n}")
        gen = as_generator(rng)
        n = int(n)
        lam = sample_coefficients(
            n,
            s.k,
            upper=s.upper,
            dom=s.dom if s.mode == "cross" else 0.0,
            private=s.p if s.mode == "cross" else 0,
            rng=gen,
        ).astype(np.float32)
        partners = np.concatenate(
            [_private_partners(n, s.p, gen, s.distinct, s.group), _public_partners(n, s.k - s.p, int(pool_size), gen)],
            axis=1,
        )
        c, h, w = (int(v) for v in shape)
        if s.sign_flip:
            nbytes = -(-(c * h * w) // 8)
            mask = np.frombuffer(gen.bytes(n * nbytes), dtype=np.uint8).reshape(n, nbytes).copy()
            tail = (c * h * w) % 8
            if tail:
                mask[:, -1] &= np.uint8((0xFF << (8 - tail)) & 0xFF)
        else:
            mask = np.zeros((n, 0), np.uint8)
        return InstaHideKey(
            settings=s,
            n=n,
            shape=[c, h, w],
            pool_size=int(pool_size) if s.p < s.k else 0,
            lam=lam,
            partners=partners,
            mask=mask,
        )

    # -- encode / decode --------------------------------------------------------------------------------------------
    def _check(
        self, x: torch.Tensor, key: Key, public: torch.Tensor | None, where: str
    ) -> tuple[np.ndarray, np.ndarray, InstaHideKey]:
        check_key(key, InstaHideKey, where=where)
        assert isinstance(key, InstaHideKey)
        if key.settings != self.settings:
            raise InputError(f"{where}: the key was drawn with other settings ({key.settings}) than this scheme's")
        priv = _as_float_images(x, where) if where.endswith("encode") else None
        c, h, w = key.shape
        if priv is not None:
            if x.shape[0] != key.n:
                raise InputError(f"{where}: the key was drawn for {key.n} images, the batch has {x.shape[0]}")
            if tuple(x.shape[1:]) != (c, h, w):
                raise InputError(f"{where}: the key was drawn for {c}×{h}×{w} images, got {tuple(x.shape[1:])}")
        if key.pool_size:
            if public is None:
                raise InputError(f"{where}: cross-mode InstaHide needs the public pool (public=...)")
            pub = _as_float_images(public, f"{where} public")
            if public.shape[0] != key.pool_size or tuple(public.shape[1:]) != (c, h, w):
                raise InputError(
                    f"{where}: the key expects a public pool of {key.pool_size} images {c}×{h}×{w}, "
                    f"got {tuple(public.shape)}"
                )
        else:
            pub = np.zeros((1, c, h * w), np.float32)
        return (priv if priv is not None else np.zeros((0, c, h * w), np.float32)), pub, key

    def encode(
        self, x: torch.Tensor, key: Key, *, public: torch.Tensor | None = None, rng: RngLike = None
    ) -> torch.Tensor:
        """Encodings (float32 n×C×H×W, signs kept) of the private batch ``x`` under ``key``."""
        from masquerade.instahide._kernel import mix_encode

        priv, pub, k = self._check(x, key, public, "instahide.encode")
        c, h, w = k.shape
        scale, shift = self.settings.affine(c)
        slot_public = np.arange(self.settings.k) >= self.settings.p
        out = np.empty((k.n, c, h * w), np.float32)
        mask = k.mask if self.settings.sign_flip else np.zeros((k.n, 1), np.uint8)
        mix_encode(priv, pub, k.partners, slot_public, k.lam, scale, shift, mask, self.settings.sign_flip, out)
        return torch.from_numpy(out.reshape(k.n, c, h, w))

    def decode(self, z: torch.Tensor, key: Key, *, public: torch.Tensor | None = None) -> torch.Tensor:
        """Recover the private images from their encodings with the key (and the public pool in cross mode).

        Removing the signs and the public part leaves ``M x = r`` with M the sparse n×n matrix of private
        coefficients; it is solved for every pixel at once, one connected component of M at a time (dense for
        groups, sparse LU for the paper's whole-set partners; see ``_solve_by_components``).
        """
        import scipy.sparse as sp

        if not isinstance(z, torch.Tensor) or z.ndim != 4 or not torch.isfinite(z).all():
            raise InputError("instahide.decode: expected finite encodings as an n×C×H×W tensor")
        _, pub, k = self._check(z, key, public, "instahide.decode")
        c, h, w = k.shape
        if tuple(z.shape) != (k.n, c, h, w):
            raise InputError(f"instahide.decode: the key is for {k.n} encodings of {c}×{h}×{w}, got {tuple(z.shape)}")
        s = self.settings
        scale, shift = s.affine(c)
        y = (z.detach().cpu().double().numpy() * k.signs()).reshape(k.n, c, h * w)
        lam = k.lam.astype(np.float64)
        # subtract the shifts of every slot and the public images' contribution
        slot_type = (np.arange(s.k) >= s.p).astype(int)
        y -= np.einsum("nj,jc->nc", lam, shift[slot_type].astype(np.float64))[:, :, None]
        for j in range(s.p, s.k):
            y -= (lam[:, j, None, None] * scale[1].astype(np.float64)[None, :, None]) * pub[k.partners[:, j]].astype(
                np.float64
            )
        y /= scale[0].astype(np.float64)[None, :, None]
        rows = np.repeat(np.arange(k.n), s.p)
        m = sp.csr_matrix((lam[:, : s.p].ravel(), (rows, k.partners[:, : s.p].ravel())), shape=(k.n, k.n))
        x = _solve_by_components(m, y.reshape(k.n, -1))
        return torch.from_numpy(x.reshape(k.n, c, h, w).astype(np.float32))

    @property
    def public_slots(self) -> int:
        """Slots of each mix a public pool fills: k - p in cross mode, none inside (the contract's hook)."""
        s = self.settings
        return s.k - s.p if s.mode == "cross" else 0

    def clean_view(self, x: torch.Tensor) -> torch.Tensor:
        """Clean images on the scale the encodings use (no mixing, no signs): what a model sees at test time."""
        scale, shift = self.settings.affine(x.shape[1])
        return x * torch.from_numpy(scale[0])[None, :, None, None] + torch.from_numpy(shift[0])[None, :, None, None]

    # -- labels ------------------------------------------------------------------------------------------------------
    def mix_labels(self, labels: np.ndarray | torch.Tensor, key: Key, num_classes: int) -> torch.Tensor:
        """Soft labels (n × num_classes, float32): the coefficient-weighted one-hots of the private slots."""
        check_key(key, InstaHideKey, where="instahide.mix_labels")
        assert isinstance(key, InstaHideKey)
        y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if y.shape != (key.n,):
            raise InputError(f"instahide.mix_labels: {key.n} labels expected, got shape {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise InputError(f"instahide.mix_labels: labels must be in 0..{num_classes - 1}")
        p = self.settings.p
        soft = np.zeros((key.n, num_classes), np.float32)
        rows = np.arange(key.n)
        for j in range(p):
            np.add.at(soft, (rows, y[key.partners[:, j]]), key.lam[:, j])
        if self.settings.renormalize_labels:
            soft /= soft.sum(axis=1, keepdims=True)
        return torch.from_numpy(soft)
