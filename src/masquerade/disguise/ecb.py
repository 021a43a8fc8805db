"""AES in ECB mode under one dataset key (DisguisedNets' setting) encrypts equal 16-byte units to equal
ciphertexts, so the release shows which units repeat, how often and where. Two attacks read that leak:

- ``aes-ecb-codebook`` (level 3, known pairs): the ciphertext-unit -> plaintext-unit dictionary of the pairs, the
  block permutation it reveals, and every unit of unseen images that is in the dictionary.
- ``aes-ecb-frequency`` (level 2, auxiliary images of the distribution, no pairs): frequency analysis. A value that
  repeats in the release is matched to the plaintext value that repeats the same way in the auxiliary images (how
  often, at which block positions), and the block permutation to where the repeated values fall; the two are
  refined in turn.

Both decode what their dictionary holds and fill the rest the same way (:class:`_ECBDecoder`): a guess, the mean of
the auxiliary images that look alike through the dictionary, or a small network trained on what the dictionary
would show of the auxiliary images (``decoder_steps``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from masquerade.contracts import AttackResult, Configurable, Knowledge, ThreatModel
from masquerade.devices import resolve_device
from masquerade.disguise.distribution import match_positions
from masquerade.disguise.inputs import (
    auxiliary_array,
    check_block,
    dataset_disguise,
    images_array,
    known_pairs_arrays,
)
from masquerade.disguise.scheme import from_blocks, to_blocks
from masquerade.errors import InputError
from masquerade.rng import as_generator

__all__ = ["ECBCodebook", "ECBFrequency", "byte_units"]

_UNIT = 16  # AES's block: ECB maps each 16-byte unit on its own


def _void(a: np.ndarray) -> np.ndarray:
    """...×16 uint8 -> ... of 16-byte values that compare, sort and hash as units."""
    return np.ascontiguousarray(a).view(np.dtype((np.void, _UNIT)))[..., 0]


def byte_units(x: np.ndarray, b: int, where: str) -> np.ndarray:
    """N×C×H×W images in [0, 1] -> N×C×M×U array of the 16-byte units ECB encrypts (M block positions, U units a
    block)."""
    blocks = to_blocks(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), b)  # N×C×M×b²
    n, c, m, d = blocks.shape
    if d % _UNIT:
        raise InputError(f"{where}: AES blocks are 16 bytes; block {b} gives {d}")
    return _void(blocks.reshape(n, c, m, d // _UNIT, _UNIT))


def _check_fill(s: Any, where: str) -> None:
    if s.neighbours < 0:
        raise InputError(f"{where}: neighbours must be >= 0, got {s.neighbours}")
    if s.decoder_steps < 0 or s.decoder_width < 4:
        raise InputError(f"{where}: decoder_steps must be >= 0 and decoder_width >= 4")
    check_block(s.block, where)
    if not 0 <= s.fill <= 1:
        raise InputError(f"{where}: fill is a grey level in [0, 1], got {s.fill!r}")
    if s.unknown not in ("rare", "grey"):
        raise InputError(f"{where}: unknown is 'rare' or 'grey', got {s.unknown!r}")


def _auxiliary(auxiliary: Any, z: np.ndarray, where: str) -> np.ndarray:
    aux = auxiliary_array(auxiliary, z, where)
    if not len(aux):
        raise InputError(f"{where}: no auxiliary images (the set given is empty)")
    return aux


class _ECBDecoder(Configurable):
    """What both ECB attacks do once they hold a dictionary and the permutation: decode, then fill. Their
    Settings carry ``block``, ``unknown``, ``fill``, ``neighbours``, ``decoder_steps`` and ``decoder_width``. The
    fill network (``decoder_steps``) trains on ``run``'s ``device``; the rest is NumPy on the CPU."""

    uses_device = True

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """DisguisedNets with AES in ECB mode under one dataset key."""
        s = dataset_disguise(scheme)
        return None if s is None or s.transform != "aes" or s.aes_mode != "ecb" else {"block": s.block}

    def _decode(
        self,
        z: np.ndarray,
        perm: np.ndarray,
        keys: np.ndarray,
        vals: np.ndarray,
        guess: np.ndarray | None,
        aux: np.ndarray | None,
        rng: Any,
        progress: bool | None,
        device: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(images, hit): z's units put back in place (cipher position j holds plain position perm[j]), each one
        the dictionary holds (``keys`` -> ``vals``, 16-byte values) decoded, the rest ``guess`` (a 16-byte unit;
        None: the grey ``fill``) or filled from ``aux``. ``hit`` says, per unit, whether it was decoded."""
        b = self.settings.block
        zu = byte_units(z, b, self.name)
        n, c, m, units = zu.shape
        zu = zu[:, :, np.argsort(perm)].reshape(-1)
        order = np.argsort(keys)
        book, book_vals = keys[order], vals[order]
        pos = np.minimum(np.searchsorted(book, zu), max(len(book) - 1, 0))
        hit = book[pos] == zu if len(book) else np.zeros(len(zu), bool)
        if guess is None or self.settings.unknown == "grey":
            guess = np.full(_UNIT, int(round(self.settings.fill * 255)), np.uint8)
        out = np.broadcast_to(guess, (len(zu), _UNIT)).copy()
        out[hit] = book_vals[pos[hit]].view(np.uint8).reshape(-1, _UNIT)
        _, _, h, w = z.shape
        images = from_blocks(out.reshape(n, c, m, units * _UNIT), h, w, b).astype(np.float32) / 255.0
        if aux is not None:
            known = from_blocks(np.repeat(hit.reshape(n, c, m, units), _UNIT, axis=3), h, w, b).astype(bool)
            plain_book = np.unique(vals)
            if self.settings.decoder_steps:
                images = self._fill_by_network(
                    images,
                    known,
                    aux,
                    plain_book,
                    as_generator(0 if rng is None else rng),
                    progress,
                    resolve_device(device),
                )
            else:
                images = self._fill_from(images, known, aux, plain_book)
        return images, hit

    def _metrics(self, hit: np.ndarray, book_size: int, aux: np.ndarray | None) -> dict[str, Any]:
        return {
            "decoded_share": float(hit.mean()) if len(hit) else 0.0,
            "codebook_size": book_size,
            "filled_from_auxiliary": aux is not None,
            "filled_by": "network"
            if aux is not None and self.settings.decoder_steps
            else "neighbours"
            if aux is not None
            else "guess",
        }

    def _fill_from(self, images: np.ndarray, known: np.ndarray, aux: np.ndarray, plain_book: np.ndarray) -> np.ndarray:
        """Each image's unknown pixels from the mean of the auxiliary images nearest to it in view.

        An auxiliary image's view is what the dictionary would decode of it (its units whose plaintext the
        dictionary holds) and what it would leave unknown. The distance counts the pixels known in one view and
        unknown in the other, plus the squared differences where both are known; all images against all auxiliary
        ones in a few products. An image with nothing decoded gets the auxiliary images' mean."""
        a_known = self._known_through(aux, plain_book)
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
        fill = a[near].mean(1)
        # an image with nothing decoded looks like every auxiliary image alike: its best guess is the
        # distribution's mean, not the first few auxiliary images
        blind = mk.sum(1) == 0
        fill[blind] = a.mean(0)
        return np.where(known, images, fill.reshape(images.shape)).astype(np.float32)

    def _known_through(self, images: np.ndarray, plain_book: np.ndarray) -> np.ndarray:
        """Per pixel of N×C×H×W [0, 1] images: whether the dictionary (its sorted plaintext units) would decode it."""
        b = self.settings.block
        v = byte_units(images, b, self.name)
        n, c, m, units = v.shape
        v = v.reshape(-1)
        pos = np.minimum(np.searchsorted(plain_book, v), max(len(plain_book) - 1, 0))
        hit = (plain_book[pos] == v if len(plain_book) else np.zeros(len(v), bool)).reshape(n, c, m, units)
        return from_blocks(np.repeat(hit, _UNIT, axis=3), images.shape[2], images.shape[3], b).astype(bool)

    def _fill_by_network(
        self,
        images: np.ndarray,
        known: np.ndarray,
        aux: np.ndarray,
        plain_book: np.ndarray,
        gen: np.random.Generator,
        progress: bool | None,
        device: torch.device,
    ) -> np.ndarray:
        """Train :class:`_Inpainter` to complete auxiliary images from their views through the dictionary (each
        image under eight random cyclic shifts of up to three pixels, each shift applied to its images at once),
        then complete the targets; the network trains on ``device``."""
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
        pool = torch.round(pool * 255) / 255  # the bytes the owner encrypts
        km = torch.from_numpy(self._known_through(pool.numpy(), plain_book)).float()
        views, pool = torch.cat([pool * km, km], 1).to(device), pool.to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(gen.integers(0, 2**62)))
            net = _Inpainter(x.shape[1], s.decoder_width)
        net = net.to(device)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        # a linear warm-up, then cosine decay: without it Adam's first full-size steps at times push every unit of
        # the small net into ReLU's dead zone and it never learns (seen on MNIST: SSIM 0.24, below no fill at all)
        warm = max(1, s.decoder_steps // 10)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda i: (
                min(1.0, (i + 1) / warm)
                * 0.5
                * (1 + math.cos(math.pi * min(1.0, max(0, i + 1 - warm) / max(1, s.decoder_steps - warm))))
            ),
        )
        batch = min(64, len(pool))
        with bar(total=s.decoder_steps, desc="codebook decoder", unit="step", disable=progress is False or None) as pb:
            for _ in range(s.decoder_steps):
                idx = torch.from_numpy(gen.integers(0, len(pool), batch))
                pred = net(views[idx])
                loss = 0.5 * F.mse_loss(pred, pool[idx])
                if min(pred.shape[-2:]) >= 7:  # SSIM's 7×7 window fits
                    loss = loss + ssim_loss(pred, pool[idx], data_range=1.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                pb.update(1)
        kt = torch.from_numpy(known).float()
        target_views = torch.cat([torch.from_numpy(images) * kt, kt], 1)
        with torch.no_grad():
            out = torch.cat([net(target_views[i : i + 256].to(device)).cpu() for i in range(0, len(target_views), 256)])
        return out.numpy().astype(np.float32)


class ECBCodebook(_ECBDecoder):
    """Level 3 against AES-ECB: a codebook of ciphertext units from known pairs, and the permutation it reveals.

    Units the codebook lacks are filled with the pairs' mean rare unit, or, given auxiliary images of the same
    distribution (level 3 holds level 2's knowledge), with the mean of the ``neighbours`` auxiliary images whose
    own view through the codebook looks most alike: the same units known and unknown (the unknown ones are a
    silhouette of what is missing), and the known ones equal. With ``decoder_steps`` > 0 a small network fills them
    instead: trained for that many steps (1 - SSIM plus MSE) to complete the auxiliary images, shifted by up to three
    pixels, from their own views through the codebook."""

    @dataclass(frozen=True)
    class Settings:
        block: int = 4
        unknown: str = "rare"  # units the codebook lacks: "rare" (the mean rare unit of the pairs) or "grey"
        fill: float = 0.5  # grey level of unknown units ("grey"; "rare" when the pairs have no rare unit)
        neighbours: int = 3  # auxiliary images averaged to fill the unknown units (0: auxiliary images unused)
        decoder_steps: int = 0  # > 0: fill them with a network trained for this many steps on the auxiliary images
        decoder_width: int = 32

        def __post_init__(self) -> None:
            _check_fill(self, "aes-ecb-codebook")

    name = "aes-ecb-codebook"
    data_kind = "images"
    threat_model = ThreatModel(
        requires=frozenset({Knowledge.ENCODINGS, Knowledge.KNOWN_PAIRS}), optional=frozenset({Knowledge.AUXILIARY})
    )

    def run(
        self,
        *,
        encodings: Any,
        known_pairs: Any,
        auxiliary: Any = None,
        rng: Any = None,
        progress: bool | None = None,
        device: Any = None,
    ) -> AttackResult:
        t = time.perf_counter()
        plain, cipher = known_pairs_arrays(known_pairs, self.name)
        z = images_array(encodings, self.name)
        s = self.settings
        aux = (
            _auxiliary(auxiliary, z, self.name) if auxiliary is not None and (s.neighbours or s.decoder_steps) else None
        )
        p_units, c_units = byte_units(plain, s.block, self.name), byte_units(cipher, s.block, self.name)
        perm = self._recover_perm(p_units, c_units)
        keys = c_units[:, :, np.argsort(perm)].reshape(-1)
        vals = p_units.reshape(-1)
        book, first, counts = np.unique(keys, return_index=True, return_counts=True)
        rare = counts == 1
        guess = None
        if rare.any():
            # a unit the pairs never showed is most likely a rare one (detail, not background): the best guess
            # for it is the average of the units that occur once in the pairs
            guess = np.round(vals[first[rare]].view(np.uint8).reshape(-1, _UNIT).mean(0)).astype(np.uint8)
        images, hit = self._decode(z, perm, book, vals[first], guess, aux, rng, progress, device)
        return AttackResult(
            self.name,
            torch.from_numpy(images),
            recovered={"perm": perm},
            metrics=self._metrics(hit, len(book), aux),
            seconds=time.perf_counter() - t,
        )

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
        cost = (sc**2).sum(1)[:, None] + (sp**2).sum(1)[None, :] - 2 * sc @ sp.T
        rows, cols = linear_sum_assignment(cost)
        perm = np.empty(m, np.int64)
        perm[rows] = cols
        return perm


class ECBFrequency(_ECBDecoder):
    """Level 2 against AES-ECB: frequency analysis of the release against auxiliary images of its distribution.

    A value is a candidate when it occurs in at least ``min_count`` images (the ``vocabulary`` most frequent). Its
    profile is how often it occurs per image at each (channel, block position, unit). Rounds of:

    0. a first matching of the values on what the permutation leaves unchanged: each value's rates at the block
       positions, sorted;
    1. the permutation, by :func:`~masquerade.disguise.distribution.match_positions`: per position the share of
       its units that are candidates and the profile of every value matched so far (unary), and how the candidate
       shares of two positions co-vary over images (pairwise; it places neighbours);
    2. the values, on the chi-square distance of their profiles (the release's in plain position order): a pair
       is acceptable when the distance is within what sampling explains (its chi-square tail above ``alpha``); an
       assignment among acceptable pairs gives the tentative matches that step 1 uses next.

    The dictionary keeps the sure matches only, where each value is the other's only acceptable partner: a value
    the samples cannot tell from others stays unknown rather than decoded wrongly.

    Then every unit whose value was matched is decoded and the rest filled as the codebook attack fills them.
    What it reaches depends on what repeats: on digits the background and the flat strokes (a silhouette), on
    natural images little."""

    @dataclass(frozen=True)
    class Settings:
        block: int = 4
        min_count: int = 3  # a value must occur in this many images, of the release and of the auxiliary
        vocabulary: int = 1024  # at most this many of the most frequent values on each side
        rounds: int = 3  # permutation / value refinements
        alpha: float = 1e-3  # a match stands when its profiles differ by no more than chance at this level
        unknown: str = "rare"  # units left unknown: "rare" (the auxiliary images' mean undecoded unit) or "grey"
        fill: float = 0.5
        neighbours: int = 3
        decoder_steps: int = 0
        decoder_width: int = 32

        def __post_init__(self) -> None:
            _check_fill(self, "aes-ecb-frequency")
            for name in ("min_count", "vocabulary", "rounds"):
                v = getattr(self, name)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise InputError(f"aes-ecb-frequency: {name} must be a positive integer, got {v!r}")
            if not 0 < self.alpha < 1:
                raise InputError(f"aes-ecb-frequency: alpha is a probability in (0, 1), got {self.alpha!r}")

    name = "aes-ecb-frequency"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.AUXILIARY}))

    def fit(self, zu: np.ndarray, au: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(perm, keys, vals) from the release's units ``zu`` and the auxiliary images' ``au`` (N×C×M×U, 16-byte
        values): cipher position j holds plain position perm[j]; the release value keys[i] encrypts vals[i]."""
        s = self.settings
        n, c, m, u = zu.shape
        na = len(au)
        zc, zp, zf = _candidates(zu, s.min_count, s.vocabulary)
        ac, ap, af = _candidates(au, s.min_count, s.vocabulary)
        if not len(zc) or not len(ac):  # nothing repeats (CTR, or images without flat regions): no leak to read
            return np.arange(m), zc[:0], ac[:0]
        # candidate share per image and position (and its centred co-variation between positions)
        share_z, share_a = zf.mean((1, 3)), af.mean((1, 3))  # N×M, A×M
        pair_z = _centred_cov(share_z)
        pair_a = _centred_cov(share_a)
        base_z = zf.mean(0).transpose(1, 0, 2).reshape(m, -1)  # M×(C·U)
        base_a = af.mean(0).transpose(1, 0, 2).reshape(m, -1)

        def positions(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            unary_z = np.concatenate([base_z, zp[rows].transpose(2, 0, 1, 3).reshape(m, -1)], 1)
            unary_a = np.concatenate([base_a, ap[cols].transpose(2, 0, 1, 3).reshape(m, -1)], 1)
            return match_positions(unary_z, [pair_z], unary_a, [pair_a])

        # a first matching of the values by what the permutation leaves unchanged: each value's rates at its
        # positions, sorted. Positions follow every tentative match; the dictionary keeps the sure ones only.
        rows, cols, sure = _match_values(np.sort(zp.sum((1, 3)), 1), n, np.sort(ap.sum((1, 3)), 1), na, s.alpha)
        perm = positions(rows, cols)
        for _ in range(s.rounds):
            # profiles in plain position order: cipher position j is plain position perm[j]
            pz = np.empty_like(zp)
            pz[:, :, perm] = zp
            rows, cols, sure = _match_values(pz.reshape(len(zc), -1), n, ap.reshape(len(ac), -1), na, s.alpha)
            new = positions(rows, cols)
            if np.array_equal(new, perm):
                break
            perm = new
        keys, vals = zc[rows[sure]], ac[cols[sure]]
        return perm, keys, vals

    def run(
        self, *, encodings: Any, auxiliary: Any, rng: Any = None, progress: bool | None = None, device: Any = None
    ) -> AttackResult:
        t = time.perf_counter()
        z = images_array(encodings, self.name)
        aux = _auxiliary(auxiliary, z, self.name)
        s = self.settings
        zu, au = byte_units(z, s.block, self.name), byte_units(aux, s.block, self.name)
        perm, keys, vals = self.fit(zu, au)
        # what an undecoded unit looks like in the distribution: the auxiliary images' units the dictionary lacks
        plain_book = np.unique(vals)
        flat = au.reshape(-1)
        lacks = ~np.isin(flat, plain_book) if len(plain_book) else np.ones(len(flat), bool)
        guess = (
            np.round(flat[lacks].view(np.uint8).reshape(-1, _UNIT).mean(0)).astype(np.uint8) if lacks.any() else None
        )
        fill = aux if (s.neighbours or s.decoder_steps) else None
        images, hit = self._decode(z, perm, keys, vals, guess, fill, rng, progress, device)
        metrics = {**self._metrics(hit, len(keys), fill), "auxiliary_images": len(aux), "encodings_used": len(z)}
        return AttackResult(
            self.name,
            torch.from_numpy(images),
            recovered={"perm": perm},
            metrics=metrics,
            seconds=time.perf_counter() - t,
        )


def _candidates(units: np.ndarray, min_count: int, vocabulary: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, profiles, is_candidate) of N×C×M×U units: the values occurring in at least ``min_count`` images, at
    most ``vocabulary`` of the most frequent; each value's occurrences per image at every (channel, position, unit)
    (V×C×M×U); and which units hold a candidate (N×C×M×U, float)."""
    n = units.shape[0]
    vals, inv, counts = np.unique(units.reshape(-1), return_inverse=True, return_counts=True)
    # a value must repeat across images: the same unit in the channels of one grey image (or twice in one
    # image) says nothing about its plaintext, and matching such values decodes noise
    per_image = np.unique(inv.reshape(n, -1) + np.arange(n)[:, None] * len(vals))
    images = np.bincount(per_image % len(vals), minlength=len(vals))
    keep = np.nonzero(images >= min_count)[0]
    keep = keep[np.argsort(-counts[keep], kind="stable")[:vocabulary]]
    index = np.full(len(vals), -1, np.int64)
    index[keep] = np.arange(len(keep))
    which = index[inv.reshape(-1)]
    slots = int(np.prod(units.shape[1:]))
    slot = np.tile(np.arange(slots), n)
    on = which >= 0
    profiles = np.bincount(which[on] * slots + slot[on], minlength=len(keep) * slots).astype(np.float64) / max(n, 1)
    return vals[keep], profiles.reshape(len(keep), *units.shape[1:]), on.reshape(units.shape).astype(np.float64)


def _centred_cov(share: np.ndarray) -> np.ndarray:
    c = share - share.mean(0)
    return c.T @ c / max(len(share), 1)


def _match_values(
    pz: np.ndarray, n: int, pa: np.ndarray, na: int, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Release candidates matched to auxiliary ones by their per-image rates at every slot (V×S each, from n and
    na images): (rows, cols, sure). A pair is acceptable when the chi-square distance of the two samples' counts is
    within chance (tail probability above alpha); the tentative matches are an assignment among acceptable pairs;
    a match is sure when each side is the other's only acceptable partner."""
    from scipy.stats import chi2

    if not len(pz) or not len(pa):
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, bool)
    # per slot, counts x ~ Poisson(n·r) and y ~ Poisson(na·r) under one rate r: (x/n - y/na)² / ((x + y)/(n·na)) is
    # about chi-square with one degree of freedom; summed over the slots where either occurs. In row chunks of
    # about 2**22 numbers, so memory stays bounded at any vocabulary.
    stat = np.empty((len(pz), len(pa)))
    dof = np.empty((len(pz), len(pa)))
    step = max(1, (1 << 22) // max(pa.size, 1))
    y = pa * na
    for i in range(0, len(pz), step):
        a = pz[i : i + step, None]
        both = a * n + y[None]
        stat[i : i + step] = np.where(both > 0, (a - pa[None]) ** 2 * (n * na) / np.maximum(both, 1e-12), 0).sum(2)
        dof[i : i + step] = np.maximum((both > 0).sum(2), 1)
    ok = chi2.sf(stat, dof) > alpha
    cost = np.where(ok, stat / dof, np.inf)
    vz, va = cost.shape
    # the tentative matches: as many acceptable pairs as can be matched at once, then the closest (an assignment
    # where staying unmatched costs more than any acceptable match)
    worst = float(cost[ok].max()) + 1 if ok.any() else 1.0
    square = np.full((vz + va, va + vz), 1e9)
    square[:vz, :va] = np.where(ok, cost, 1e9)
    square[np.arange(vz), va + np.arange(vz)] = worst
    square[vz + np.arange(va), np.arange(va)] = worst
    square[vz:, va:] = 0
    rows, cols = linear_sum_assignment(square)
    real = (rows < vz) & (cols < va)
    rows, cols = rows[real], cols[real]
    keep = ok[rows, cols]
    rows, cols = rows[keep].astype(np.int64), cols[keep].astype(np.int64)
    # sure: each side has exactly one acceptable partner. Rare values (a faint pixel at a stroke's edge) have
    # profiles the samples cannot tell apart, and a choice among them decodes a wrong block as if it were known
    # (on MNIST 36 of 38 tentative matches were wrong that way)
    sure = (ok.sum(1)[rows] == 1) & (ok.sum(0)[cols] == 1)
    return rows, cols, sure


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
