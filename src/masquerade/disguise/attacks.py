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
- Level 2, the distribution is known: :mod:`masquerade.disguise.distribution` (``disguise-alignment``, and the
  ``disguise-moments`` baseline).
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

__all__ = ["KnownPlaintextRMT", "ECBCodebook", "recover_permutation_by_norms", "images_array", "check_block",
           "dataset_disguise"]


def images_array(x: torch.Tensor | np.ndarray, where: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 4:
        raise InputError(f"{where}: expected N×C×H×W images, got shape {a.shape}")
    return a.astype(np.float64)


def _pairs(known_pairs: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        plain, cipher = known_pairs
    except (TypeError, ValueError):
        raise InputError(f"{where}: known_pairs is a (plain images, disguised images) tuple") from None
    p, c = images_array(plain, where), images_array(cipher, where)
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


def check_block(block: int, where: str) -> None:
    if not isinstance(block, int) or block < 1:
        raise InputError(f"{where}: block must be a positive integer, got {block!r}")


def dataset_disguise(scheme: Any) -> Any:
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
            check_block(self.block, "disguise-known-plaintext")
            if self.method not in ("auto", "lstsq", "procrustes"):
                raise InputError(f"disguise-known-plaintext: method must be 'auto', 'lstsq' or 'procrustes', "
                                 f"got {self.method!r}")

    name = "disguise-known-plaintext"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.KNOWN_PAIRS}))

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """DisguisedNets with RMT (or permutation alone) under one dataset key."""
        s = dataset_disguise(scheme)
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
            check_block(self.block, "aes-ecb-codebook")
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
        s = dataset_disguise(scheme)
        return None if s is None or s.transform != "aes" or s.aes_mode != "ecb" else {"block": s.block}

    @staticmethod
    def _bytes_blocks(x: np.ndarray, b: int) -> np.ndarray:
        return to_blocks(np.round(x * 255).astype(np.uint8), b)  # N×C×M×b²

    def run(self, *, encodings: Any, known_pairs: Any, auxiliary: Any = None, rng: Any = None,
            progress: bool | None = None) -> AttackResult:
        t = time.perf_counter()
        plain, cipher = _pairs(known_pairs, self.name)
        z = images_array(encodings, self.name)
        aux = None
        if auxiliary is not None and (self.settings.neighbours or self.settings.decoder_steps):
            aux = images_array(auxiliary.to_tensor() if hasattr(auxiliary, "to_tensor") else auxiliary, self.name)
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
