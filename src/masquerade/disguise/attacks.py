"""Attacks on DisguisedNets disguising, by adversary knowledge.

- Level 3, known plaintext pairs: ``disguise-known-plaintext`` recovers the block permutation (orthogonal maps
  keep block norms, so positions are matched by their norms over the pairs, then assigned optimally) and each block
  position's RMT matrix by least squares while the pairs underdetermine it, and by orthogonal Procrustes once they
  determine it (plain least squares then amplifies noise along the weak directions of natural-image blocks), then
  decodes everything else.
  ``aes-ecb-codebook`` builds the ciphertext-block -> plaintext-block dictionary that ECB leaks, recovers the
  permutation from it, and decodes every block of unseen images that is in the dictionary; with auxiliary images it
  fills the rest from the images that look alike through the codebook, or with a small network trained on what the
  codebook would show of them (``decoder_steps``).
- Level 2, the distribution is known (auxiliary clean images, no pairs): ``disguise-moments`` estimates every RMT
  matrix from second-order statistics -- the disguised blocks' covariance is R Σ Rᵀ -- matching eigenvectors of the
  disguised and auxiliary covariances, with the sign ambiguity resolved by the block means (pixels are positive, so
  R μ = μ'). The permutation is not recoverable from statistics that do not depend on position; blocks are decoded
  where they stand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from masquerade.contracts import AttackResult, Configurable, Knowledge, ThreatModel
from masquerade.disguise.scheme import from_blocks, to_blocks
from masquerade.errors import InputError
from masquerade.rng import as_generator

__all__ = ["KnownPlaintextRMT", "ECBCodebook", "MomentMatching", "DistributionAlignment", "match_positions",
           "recover_permutation_by_norms"]


def _arr(x: torch.Tensor | np.ndarray, where: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 4:
        raise InputError(f"{where}: expected N×C×H×W images, got shape {a.shape}")
    return a.astype(np.float64)


def _pairs(known_pairs: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        plain, cipher = known_pairs
    except (TypeError, ValueError):
        raise InputError(f"{where}: known_pairs is a (plain images, disguised images) tuple") from None
    p, c = _arr(plain, where), _arr(cipher, where)
    if p.shape != c.shape:
        raise InputError(f"{where}: plain and disguised pairs differ in shape: {p.shape} vs {c.shape}")
    return p, c


def recover_permutation_by_norms(plain_blocks: np.ndarray, cipher_blocks: np.ndarray) -> np.ndarray:
    """perm with cipher position j holding plain position perm[j], from N×C×M×d blocks of known pairs.

    An orthogonal map keeps each block's norm, so the norm profile of a plain position over all pairs and channels
    equals that of its cipher position; the squared differences are assigned optimally (Hungarian algorithm).
    """
    pn = np.linalg.norm(plain_blocks, axis=3).transpose(2, 0, 1).reshape(plain_blocks.shape[2], -1)   # M × (N·C)
    cn = np.linalg.norm(cipher_blocks, axis=3).transpose(2, 0, 1).reshape(cipher_blocks.shape[2], -1)
    cost = (cn ** 2).sum(1)[:, None] + (pn ** 2).sum(1)[None, :] - 2 * cn @ pn.T  # cost[j, i]
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), np.int64)
    perm[rows] = cols
    return perm


def _block_size(block: int, where: str) -> None:
    if not isinstance(block, int) or block < 1:
        raise InputError(f"{where}: block must be a positive integer, got {block!r}")


def _dataset_disguise(scheme: Any) -> Any:
    """The settings of a DisguisedNets scheme under one dataset key (what these attacks break), else None."""
    if getattr(scheme, "name", None) != "disguise" or scheme.settings.key_scope != "dataset":
        return None
    return scheme.settings


class KnownPlaintextRMT(Configurable):
    """Level 3: recover the permutation and every block's RMT matrix from known (plain, disguised) pairs."""

    @dataclass(frozen=True)
    class Settings:
        block: int = 4
        permuted: bool = True
        method: str = "auto"  # least squares while underdetermined, orthogonal Procrustes (robust to noise) after

        def __post_init__(self) -> None:
            _block_size(self.block, "disguise-known-plaintext")
            if self.method not in ("auto", "lstsq", "procrustes"):
                raise InputError(f"disguise-known-plaintext: method must be 'auto', 'lstsq' or 'procrustes', "
                                 f"got {self.method!r}")

    name = "disguise-known-plaintext"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.KNOWN_PAIRS}))

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """DisguisedNets with RMT (or permutation alone) under one dataset key."""
        s = _dataset_disguise(scheme)
        return None if s is None or s.transform not in ("rmt", "none") else {"block": s.block,
                                                                              "permuted": s.permute}

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
                rt, *_ = np.linalg.lstsq(p, q, rcond=None)       # q ≈ p Rᵀ
            else:
                u, _, vt = np.linalg.svd(p.T @ q)
                rt = u @ vt
            mats[pos] = rt.T
        return perm, mats

    def run(self, *, encodings: Any, known_pairs: Any, rng: Any = None, progress: bool | None = None
            ) -> AttackResult:
        t = time.perf_counter()
        plain, cipher = _pairs(known_pairs, self.name)
        z = _arr(encodings, self.name)
        n, c, h, w = z.shape
        b = self.settings.block
        if (h, w) != plain.shape[2:] or h % b or w % b:
            raise InputError(f"{self.name}: pairs and encodings must share an image size divisible by {b}")
        perm, mats = self.fit(plain, cipher)
        blocks = to_blocks(z, b)[:, :, np.argsort(perm)]
        solved = np.linalg.pinv(mats)  # the least-squares map need not be orthogonal when pairs are few
        rec = np.einsum("mij,ncmj->ncmi", solved, blocks)
        images = from_blocks(rec, h, w, b)
        return AttackResult(self.name, torch.from_numpy(np.clip(images, 0, 1).astype(np.float32)),
                            recovered={"perm": perm, "matrices": mats},
                            metrics={"known_pairs": len(plain)}, seconds=time.perf_counter() - t)


class ECBCodebook(Configurable):
    """Level 3 against AES-ECB: a codebook of ciphertext blocks from known pairs, and the permutation it reveals.

    Units the codebook lacks are filled with the pairs' mean rare unit, or, given auxiliary images of the same
    distribution (level 3 holds level 2's knowledge), with the mean of the ``neighbours`` auxiliary images whose
    own view through the codebook looks most alike: the same units known and unknown (the unknown ones are a
    silhouette of what is missing), and the known ones equal. With ``decoder_steps`` > 0 a small network fills them
    instead: trained for that many steps (1 - SSIM plus MSE) to complete the auxiliary images, shifted by up to three
    pixels, from their own views through the codebook."""

    @dataclass(frozen=True)
    class Settings:
        block: int = 4
        unknown: str = "rare"   # units the codebook lacks: "rare" (the mean rare unit of the pairs) or "grey"
        fill: float = 0.5       # grey level of unknown units ("grey"; "rare" when the pairs have no rare unit)
        neighbours: int = 3     # auxiliary images averaged to fill the unknown units (0: auxiliary images unused)
        decoder_steps: int = 0  # > 0: fill them with a network trained for this many steps on the auxiliary images
        decoder_width: int = 32

        def __post_init__(self) -> None:
            if self.neighbours < 0:
                raise InputError(f"aes-ecb-codebook: neighbours must be >= 0, got {self.neighbours}")
            if self.decoder_steps < 0 or self.decoder_width < 4:
                raise InputError("aes-ecb-codebook: decoder_steps must be >= 0 and decoder_width >= 4")
            _block_size(self.block, "aes-ecb-codebook")
            if not 0 <= self.fill <= 1:
                raise InputError(f"aes-ecb-codebook: fill is a grey level in [0, 1], got {self.fill!r}")
            if self.unknown not in ("rare", "grey"):
                raise InputError(f"aes-ecb-codebook: unknown is 'rare' or 'grey', got {self.unknown!r}")

    name = "aes-ecb-codebook"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.KNOWN_PAIRS}),
                               optional=frozenset({Knowledge.AUXILIARY}))

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """DisguisedNets with AES in ECB mode under one dataset key."""
        s = _dataset_disguise(scheme)
        return None if s is None or s.transform != "aes" or s.aes_mode != "ecb" else {"block": s.block}

    @staticmethod
    def _bytes_blocks(x: np.ndarray, b: int) -> np.ndarray:
        return to_blocks(np.round(x * 255).astype(np.uint8), b)  # N×C×M×b²

    def run(self, *, encodings: Any, known_pairs: Any, auxiliary: Any = None, rng: Any = None,
            progress: bool | None = None) -> AttackResult:
        t = time.perf_counter()
        plain, cipher = _pairs(known_pairs, self.name)
        z = _arr(encodings, self.name)
        aux = None
        if auxiliary is not None and (self.settings.neighbours or self.settings.decoder_steps):
            aux = _arr(auxiliary.to_tensor() if hasattr(auxiliary, "to_tensor") else auxiliary, self.name)
            if aux.shape[1:] != z.shape[1:] or not len(aux):
                raise InputError(f"{self.name}: auxiliary images are {aux.shape[1:]}, the encodings {z.shape[1:]}")
        b = self.settings.block
        pb, cb, zb = self._bytes_blocks(plain, b), self._bytes_blocks(cipher, b), self._bytes_blocks(z, b)
        d = pb.shape[3]
        if d % 16:
            raise InputError(f"{self.name}: AES blocks are 16 bytes; block {b} gives {d}")
        n_pairs, c, m, _ = pb.shape
        # ECB works on 16-byte units; a disguise block may hold several, each a codebook entry of its own
        units = d // 16
        to_void = lambda a: np.ascontiguousarray(a).view(np.dtype((np.void, 16)))[..., 0]  # noqa: E731
        p_units = to_void(pb.reshape(n_pairs, c, m, units, 16))
        c_units = to_void(cb.reshape(n_pairs, c, m, units, 16))
        perm = self._recover_perm(p_units, c_units)
        aligned_c = c_units[:, :, np.argsort(perm)]
        keys = aligned_c.reshape(-1)
        vals = p_units.reshape(-1)
        # the codebook, sorted by ciphertext unit: every unit of the encodings is looked up at once
        book, first, counts = np.unique(keys, return_index=True, return_counts=True)
        zu = to_void(zb.reshape(zb.shape[0], c, m, units, 16))[:, :, np.argsort(perm)].reshape(-1)
        pos = np.minimum(np.searchsorted(book, zu), max(len(book) - 1, 0))
        hit = book[pos] == zu if len(book) else np.zeros(len(zu), bool)
        plain_units = vals.view(np.uint8).reshape(-1, 16)
        guess = np.full(16, int(round(self.settings.fill * 255)), np.uint8)
        rare = counts == 1
        if self.settings.unknown == "rare" and rare.any():
            # a unit the pairs never showed is most likely a rare one (detail, not background): the best guess
            # for it is the average of the units that occur once in the pairs
            guess = np.round(plain_units[first[rare]].mean(0)).astype(np.uint8)
        out = np.broadcast_to(guess, (len(zu), 16)).copy()
        out[hit] = plain_units[first[pos[hit]]]
        rec_blocks = out.reshape(zb.shape[0], c, m, d)
        n, _, h, w = z.shape
        images = from_blocks(rec_blocks, h, w, b).astype(np.float32) / 255.0
        if aux is not None:
            known = from_blocks(np.repeat(hit.reshape(n, c, m, units), 16, axis=3), h, w, b).astype(bool)
            if self.settings.decoder_steps:
                images = self._fill_by_network(images, known, aux, np.unique(vals), to_void,
                                               as_generator(0 if rng is None else rng), progress)
            else:
                images = self._fill_from(images, known, aux, np.unique(vals), to_void)
        return AttackResult(self.name, torch.from_numpy(images), recovered={"perm": perm},
                            metrics={"decoded_share": float(hit.mean()) if len(hit) else 0.0,
                                     "codebook_size": len(book), "filled_from_auxiliary": aux is not None,
                                     "filled_by": "network" if aux is not None and self.settings.decoder_steps
                                     else "neighbours" if aux is not None else "guess"},
                            seconds=time.perf_counter() - t)

    def _fill_from(self, images: np.ndarray, known: np.ndarray, aux: np.ndarray, plain_book: np.ndarray,
                   to_void: Any) -> np.ndarray:
        """Each image's unknown pixels from the mean of the auxiliary images nearest to it in view.

        An auxiliary image's view is what the codebook would decode of it (its units whose plaintext the pairs
        hold) and what it would leave unknown. The distance counts the pixels known in one view and unknown in the
        other, plus the squared differences where both are known; all images against all auxiliary ones in a few
        products."""
        a_known = self._known_through(aux, plain_book, to_void)
        na = len(aux)
        x = images.reshape(len(images), -1).astype(np.float64)
        mk = known.reshape(len(images), -1).astype(np.float64)
        a = aux.reshape(na, -1)
        ka = a_known.reshape(na, -1).astype(np.float64)
        mismatch = mk @ (1 - ka).T + (1 - mk) @ ka.T
        both = (mk * x * x) @ ka.T - 2 * (mk * x) @ (ka * a).T + mk @ (ka * a * a).T
        dist = mismatch + both
        k = min(self.settings.neighbours, na)
        near = np.argpartition(dist, k - 1, axis=1)[:, :k]
        fill = a[near].mean(1).reshape(images.shape)
        return np.where(known, images, fill).astype(np.float32)

    def _known_through(self, images: np.ndarray, plain_book: np.ndarray, to_void: Any) -> np.ndarray:
        """Per pixel of N×C×H×W [0, 1] images: whether the codebook (its sorted plaintext units) would decode it."""
        b = self.settings.block
        blocks = self._bytes_blocks(images, b)
        n, c, m, d = blocks.shape
        units = d // 16
        v = to_void(blocks.reshape(n, c, m, units, 16)).reshape(-1)
        pos = np.minimum(np.searchsorted(plain_book, v), max(len(plain_book) - 1, 0))
        hit = (plain_book[pos] == v if len(plain_book) else np.zeros(len(v), bool)).reshape(n, c, m, units)
        return from_blocks(np.repeat(hit, 16, axis=3), images.shape[2], images.shape[3], b).astype(bool)

    def _fill_by_network(self, images: np.ndarray, known: np.ndarray, aux: np.ndarray, plain_book: np.ndarray,
                         to_void: Any, gen: np.random.Generator, progress: bool | None) -> np.ndarray:
        """Train :class:`_Inpainter` to complete auxiliary images from their views through the codebook (each
        image under eight random cyclic shifts of up to three pixels, each shift applied to its images at once),
        then complete the targets."""
        import torch.nn.functional as F

        from masquerade.metrics.ssim import ssim_loss
        from masquerade.progress import bar

        s = self.settings
        x = torch.from_numpy(aux.astype(np.float32))
        copies = 8
        src = np.tile(np.arange(len(x)), copies)
        shifts = gen.integers(-3, 4, size=(len(src), 2))
        pool = torch.empty((len(src), *x.shape[1:]))
        for dy, dx in np.unique(shifts, axis=0):
            rows = np.nonzero((shifts == (dy, dx)).all(1))[0]
            pool[rows] = torch.roll(x[src[rows]], (int(dy), int(dx)), (2, 3))
        pool = torch.round(pool * 255) / 255          # the bytes the owner encrypts
        km = torch.from_numpy(self._known_through(pool.numpy(), plain_book, to_void)).float()
        views = torch.cat([pool * km, km], 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(gen.integers(0, 2**62)))
            net = _Inpainter(x.shape[1], s.decoder_width)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, s.decoder_steps)
        batch = min(64, len(pool))
        with bar(total=s.decoder_steps, desc="codebook decoder", unit="step", disable=progress is False or None) \
                as pb:
            for _ in range(s.decoder_steps):
                idx = torch.from_numpy(gen.integers(0, len(pool), batch))
                pred = net(views[idx])
                loss = 0.5 * F.mse_loss(pred, pool[idx])
                if min(pred.shape[-2:]) >= 7:          # SSIM's 7×7 window fits
                    loss = loss + ssim_loss(pred, pool[idx], data_range=1.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                pb.update(1)
        kt = torch.from_numpy(known).float()
        target_views = torch.cat([torch.from_numpy(images) * kt, kt], 1)
        with torch.no_grad():
            out = torch.cat([net(target_views[i:i + 256]) for i in range(0, len(target_views), 256)])
        return out.numpy().astype(np.float32)

    @staticmethod
    def _recover_perm(p_units: np.ndarray, c_units: np.ndarray) -> np.ndarray:
        n_pairs, c, m, units = p_units.shape
        # ECB is a bijection on 16-byte values, so a plaintext value occurs exactly as often as its ciphertext.
        # A position's signature is, for every (pair, channel, unit), how often its value occurs in all pairs;
        # the true positions have equal signatures. Positions whose values are all unique (no repeated blocks)
        # cannot be told apart this way: ECB leaks positions only through repeated blocks.
        _, p_ids = np.unique(p_units.reshape(-1), return_inverse=True)
        _, c_ids = np.unique(c_units.reshape(-1), return_inverse=True)
        p_ids = p_ids.reshape(n_pairs, c, m, units)
        c_ids = c_ids.reshape(n_pairs, c, m, units)

        def signature(ids: np.ndarray) -> np.ndarray:
            counts = np.bincount(ids.ravel())
            return counts[ids].transpose(2, 0, 1, 3).reshape(m, -1).astype(np.float64)

        sp, sc = signature(p_ids), signature(c_ids)
        cost = (sc ** 2).sum(1)[:, None] + (sp ** 2).sum(1)[None, :] - 2 * sc @ sp.T
        rows, cols = linear_sum_assignment(cost)
        perm = np.empty(m, np.int64)
        perm[rows] = cols
        return perm


class _Inpainter(torch.nn.Module):
    """A small U-Net (two scales down, skips) from a view (known pixels, zeros elsewhere; the known mask) to the
    image: known pixels pass through, the others are predicted."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        nn = torch.nn
        w = width

        def conv(i: int, o: int, stride: int = 1) -> Any:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.ReLU())

        self.e1 = nn.Sequential(conv(2 * channels, w), conv(w, w))
        self.e2 = nn.Sequential(conv(w, 2 * w, 2), conv(2 * w, 2 * w))
        self.e3 = nn.Sequential(conv(2 * w, 2 * w, 2), conv(2 * w, 2 * w))
        self.d2 = conv(4 * w, 2 * w)
        self.d1 = nn.Sequential(conv(3 * w, w), nn.Conv2d(w, channels, 3, 1, 1))

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        h1 = self.e1(view)
        h2 = self.e2(h1)
        h3 = self.e3(h2)
        h = self.d2(torch.cat([F.interpolate(h3, size=h2.shape[-2:]), h2], 1))
        out = self.d1(torch.cat([F.interpolate(h, size=h1.shape[-2:]), h1], 1))
        c = view.shape[1] // 2
        return torch.where(view[:, c:] > 0.5, view[:, :c], torch.sigmoid(out))


class MomentMatching(Configurable):
    """Level 2: estimate each RMT matrix from the covariance and mean of disguised vs auxiliary clean blocks."""

    @dataclass(frozen=True)
    class Settings:
        block: int = 4

        def __post_init__(self) -> None:
            _block_size(self.block, "disguise-moments")

    name = "disguise-moments"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.AUXILIARY}))

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """DisguisedNets with RMT under one dataset key."""
        s = _dataset_disguise(scheme)
        return None if s is None or s.transform != "rmt" else {"block": s.block}

    def run(self, *, encodings: Any, auxiliary: Any, rng: Any = None, progress: bool | None = None
            ) -> AttackResult:
        t = time.perf_counter()
        z = _arr(encodings, self.name)
        aux = _arr(auxiliary.to_tensor() if hasattr(auxiliary, "to_tensor") else auxiliary, self.name)
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
        return AttackResult(self.name, torch.from_numpy(np.clip(from_blocks(rec, h, w, b), 0, 1).astype(np.float32)),
                            recovered={"matrices": mats}, metrics={"auxiliary_images": len(aux)},
                            seconds=time.perf_counter() - t)


# -- level 2: align the whole second-order structure -------------------------------------------------------------

_ALIGN_MAX_DIM = 8192     # (blocks × block pixels) of one image: the cross-moment matrix is this squared, in float64


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
    pairwise = [centred.T @ centred / max(len(norms), 1), np.sqrt((cov ** 2).sum((2, 3)))]
    return unary, pairwise


def match_positions(unary_z: np.ndarray, pairwise_z: list[np.ndarray], unary_a: np.ndarray,
                    pairwise_a: list[np.ndarray], *, max_swaps: int | None = None) -> np.ndarray:
    """perm with disguised position j holding plain position perm[j], from position statistics that the block
    transforms leave unchanged: a linear assignment on the unary statistics, then a quadratic assignment by
    best-improvement swaps of two positions.

    It minimises Σ_j ‖u_j − u'_perm[j]‖² + Σ_pairwise Σ_jk (A_jk − B_perm[j]perm[k])². Up to constants the pairwise
    part is −2 tr(A P B Pᵀ), so the gain of every swap comes from one M×M product per step."""
    m = len(unary_z)
    unary = ((unary_z[:, None] - unary_a[None]) ** 2).sum(2)       # unary[j, i]: cost of j holding plain i
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
        gain = (u_now[a_idx] + u_now[b_idx] - unary[a_idx, perm[b_idx]] - unary[b_idx, perm[a_idx]])
        for az, ba in zip(pairwise_z, pairwise_a):
            bp = ba[np.ix_(perm, perm)]
            prod = az @ bp
            dg = np.diagonal(prod)
            # Σ_k (A_ak − A_bk)(Bp_bk − Bp_ak) over all k, less its k = a and k = b terms, and the diagonal pair
            cross = prod[a_idx, b_idx] + prod[b_idx, a_idx] - dg[a_idx] - dg[b_idx]
            ends = (az[a_idx, a_idx] - az[b_idx, a_idx]) * (bp[b_idx, a_idx] - bp[a_idx, a_idx]) + \
                (az[a_idx, b_idx] - az[b_idx, b_idx]) * (bp[b_idx, b_idx] - bp[a_idx, b_idx])
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
        sweeps: int = 50          # block-coordinate sweeps over all positions (step 3)

        def __post_init__(self) -> None:
            _block_size(self.block, "disguise-alignment")
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
        s = _dataset_disguise(scheme)
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
            raise InputError(f"{self.name}: {m} blocks of {d} pixels is too large an image for the cross-moment "
                             f"matrix (at most {_ALIGN_MAX_DIM} pixels per channel); use smaller images")
        mz, mx = _second_moments(zs), _second_moments(xs)
        if s.permuted:
            uz, pz = _invariants(zs, mz)
            ux, px = _invariants(xs, mx)
            if s.transform == "none":   # no block transform: the mean blocks themselves identify positions
                uz = np.concatenate([uz, zs.mean(0)], 1)
                ux = np.concatenate([ux, xs.mean(0)], 1)
            perm = match_positions(uz, pz, ux, px)
        else:
            perm = np.arange(m)
        if s.transform == "none":
            return perm, np.broadcast_to(np.eye(d), (m, d, d)).copy()
        mu_z, mu_x = zs.mean(0), xs.mean(0)[perm]
        mp = mx[np.ix_(perm, perm)]                 # plain moments in disguised order
        diag = np.arange(m)
        _, uz_ = np.linalg.eigh(mz[diag, diag])
        _, ux_ = np.linalg.eigh(mp[diag, diag])
        sign = np.sign(np.einsum("mdi,md->mi", uz_, mu_z) * np.einsum("mdi,md->mi", ux_, mu_x))
        sign[sign == 0] = 1
        mats = np.einsum("mai,mi,mbi->mab", uz_, sign, ux_)
        for _ in range(s.sweeps):
            before = mats.copy()
            for j in range(m):      # Gauss-Seidel: each position sees its neighbours' newest matrices
                g = ((mz[j] @ mats) @ mp[j].transpose(0, 2, 1)).sum(0) + np.outer(mu_z[j], mu_x[j])
                u, _, vt = np.linalg.svd(g)
                mats[j] = u @ vt
            if np.abs(mats - before).max() < 1e-7:      # a fixed point: further sweeps change nothing
                break
        return perm, mats

    def run(self, *, encodings: Any, auxiliary: Any, rng: Any = None, progress: bool | None = None
            ) -> AttackResult:
        t = time.perf_counter()
        z = _arr(encodings, self.name)
        aux = _arr(auxiliary.to_tensor() if hasattr(auxiliary, "to_tensor") else auxiliary, self.name)
        b = self.settings.block
        n, c, h, w = z.shape
        if aux.shape[1:] != z.shape[1:]:
            raise InputError(f"{self.name}: auxiliary images are {aux.shape[1:]}, the encodings {z.shape[1:]}")
        if h % b or w % b:
            raise InputError(f"{self.name}: block size {b} must divide the image size {h}×{w}")
        if len(aux) < 2 or n < 2:
            raise InputError(f"{self.name}: needs at least 2 encodings and 2 auxiliary images, got {n} and "
                             f"{len(aux)}")
        if not (np.isfinite(z).all() and np.isfinite(aux).all()):
            raise InputError(f"{self.name}: encodings and auxiliary images must be finite")
        perm, mats = self.fit(z, aux)
        blocks = np.einsum("mji,ncmj->ncmi", mats, to_blocks(z, b))
        out = np.empty_like(blocks)
        out[:, :, perm] = blocks
        images = np.clip(from_blocks(out, h, w, b), 0, 1).astype(np.float32)
        return AttackResult(self.name, torch.from_numpy(images), recovered={"perm": perm, "matrices": mats},
                            metrics={"auxiliary_images": len(aux), "encodings_used": n},
                            seconds=time.perf_counter() - t)
