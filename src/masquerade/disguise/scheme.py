"""DisguisedNets image disguising (Sharma & Chen; Chen, Gu & Sharma): blocks, block permutation, and a per-block
transform -- a random orthogonal projection (RMT), AES, or none.

An image is cut into b×b blocks (b must divide the height and width). Each block, flattened per channel, is
transformed by the key of its block position: RMT multiplies it by a Haar-random orthogonal b²×b² matrix (the same
for every channel; optional additive Gaussian noise), AES encrypts its b² pixel bytes with AES-128 (the
``cryptography`` package, AES-NI). The blocks are then permuted (one permutation for all channels). The disguised
image keeps its size; RMT output is float32, AES output is bytes shown as pixels in [0, 1].

AES blocks must hold a multiple of 16 bytes (b² per channel block: b = 4, 8, 12, ...); other block sizes are
refused with a clear message rather than padded. ECB (as in the paper) encrypts equal blocks to equal ciphertexts;
CTR, the safe choice, draws a 64-bit nonce per image (kept in the key) and counts blocks within the image, so no
keystream is ever reused.

``key_scope="dataset"`` (the paper's setting, so a model can learn) shares permutation, matrices and AES key across
all images; ``key_scope="image"`` draws them per image. Keys for n images are extended to new images (a test set)
with ``keygen(n, rng=rng, base=key)``, which keeps the dataset secrets and draws only the per-image parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from masquerade.contracts import Configurable, check_images, check_key, refuse_pool
from masquerade.errors import InputError
from masquerade.keys import Key, check_key_array, check_key_field, is_count
from masquerade.rng import RngLike, as_generator, secure_bytes

__all__ = ["Disguise", "DisguiseSettings", "DisguiseKey", "haar_orthogonal", "to_blocks", "from_blocks"]


@dataclass(frozen=True)
class DisguiseSettings:
    block: int = 4
    permute: bool = True
    transform: str = "rmt"
    noise: float = 0.0
    key_scope: str = "dataset"
    aes_mode: str = "ecb"
    seeded_aes_key: bool = False  # derive the AES key from the seed: reproducible experiments only, by name

    def __post_init__(self) -> None:
        if not isinstance(self.block, int) or isinstance(self.block, bool) or self.block < 1:
            raise InputError(f"disguise: block must be a positive integer, got {self.block!r}")
        if self.transform not in ("rmt", "aes", "none"):
            raise InputError(f"disguise: transform must be 'rmt', 'aes' or 'none', got {self.transform!r}")
        if self.noise < 0 or (self.noise > 0 and self.transform != "rmt"):
            raise InputError("disguise: noise is a non-negative level and applies to the RMT transform only")
        if self.key_scope not in ("dataset", "image"):
            raise InputError(f"disguise: key_scope must be 'dataset' or 'image', got {self.key_scope!r}")
        if self.aes_mode not in ("ecb", "ctr"):
            raise InputError(f"disguise: aes_mode must be 'ecb' or 'ctr', got {self.aes_mode!r}")
        if self.transform == "aes" and (self.block * self.block) % 16:
            raise InputError(
                f"disguise: AES encrypts 16-byte blocks; a {self.block}×{self.block} block holds "
                f"{self.block**2} bytes per channel. Use a block size whose square is a multiple of 16 "
                "(4, 8, 12, ...); we refuse rather than pad or duplicate pixels"
            )


@dataclass(frozen=True, repr=False, eq=False)
class DisguiseKey(Key):
    """Dataset secrets (permutation, RMT matrices, AES key) and per-image parts (image-scope seeds, CTR nonces)."""

    scheme: ClassVar[str] = "disguise"
    public_fields: ClassVar[tuple[str, ...]] = ("n", "shape", "settings")
    settings: DisguiseSettings
    shape: list[int]
    n: int = 0  # images the per-image parts were drawn for (0: none needed, any batch size)
    perm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,) dataset scope
    rmt: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float64))  # (M, b², b²) dataset scope
    aes_key: bytes = b""  # 16 bytes (dataset scope) or 16·n (image scope)
    image_seeds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.uint64))  # image scope
    nonces: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # CTR, one per image

    def validate(self) -> None:
        s = self.settings
        check_key_field(self, "settings", isinstance(s, DisguiseSettings), "DisguisedNets settings")
        b = s.block
        check_key_field(
            self,
            "shape",
            isinstance(self.shape, list)
            and len(self.shape) == 3
            and all(is_count(v, 1) for v in self.shape)
            and self.shape[1] % b == 0
            and self.shape[2] % b == 0
            and self.shape[0] * self.shape[1] * self.shape[2] <= 2**31,
            f"[C, H, W] with H and W divisible by the block size {b}",
        )
        m = (self.shape[1] // b) * (self.shape[2] // b)
        dataset = s.key_scope == "dataset"
        per_image = s.key_scope == "image" or (s.transform == "aes" and s.aes_mode == "ctr")
        check_key_field(
            self,
            "n",
            is_count(self.n, 0) and (per_image or self.n == 0),
            "the number of images (0 unless the key has per-image parts)",
        )
        n = int(self.n)
        check_key_array(
            self,
            "perm",
            dtype=np.int64,
            shape=(m if s.permute and dataset else 0,),
            permutation_rows=s.permute and dataset,
        )
        rmt = check_key_array(
            self,
            "rmt",
            dtype=np.float64,
            finite=True,
            shape=(m, b * b, b * b) if s.transform == "rmt" and dataset else (0, 0, 0),
        )
        if rmt.size and np.abs(rmt @ rmt.transpose(0, 2, 1) - np.eye(b * b)).max() > 1e-6:
            raise InputError("disguise key: every RMT matrix must be orthogonal")
        want = 16 if s.transform == "aes" and dataset else 16 * n if s.transform == "aes" else 0
        check_key_field(self, "aes_key", isinstance(self.aes_key, bytes) and len(self.aes_key) == want, f"{want} bytes")
        check_key_array(self, "image_seeds", dtype=np.uint64, shape=(n if not dataset else 0, 2))
        check_key_array(
            self, "nonces", dtype=np.uint64, shape=(n if s.transform == "aes" and s.aes_mode == "ctr" else 0,)
        )


def haar_orthogonal(count: int, dim: int, gen: np.random.Generator) -> np.ndarray:
    """``count`` Haar-random orthogonal dim×dim matrices (QR of a Gaussian with the signs of R's diagonal fixed)."""
    a = gen.standard_normal((count, dim, dim))
    q, r = np.linalg.qr(a)
    d = np.sign(np.diagonal(r, axis1=1, axis2=2))
    d[d == 0] = 1
    return q * d[:, None, :]


def to_blocks(x: np.ndarray, b: int) -> np.ndarray:
    """N×C×H×W -> N×C×M×b² (M = (H/b)·(W/b) blocks in row-major order, each flattened row-major)."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // b, b, w // b, b).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, (h // b) * (w // b), b * b)


def from_blocks(blocks: np.ndarray, h: int, w: int, b: int) -> np.ndarray:
    n, c = blocks.shape[:2]
    return blocks.reshape(n, c, h // b, w // b, b, b).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def _aes(key: bytes, data: np.ndarray | bytes, decrypt: bool = False, *, out: np.ndarray | None = None) -> np.ndarray:
    """AES-128-ECB over ``data`` (a multiple of 16 bytes) as a flat uint8 array.

    Writes through ``update_into`` into ``out`` (flat uint8 with at least 15 spare bytes past the data; it may be the
    buffer ``data`` views, to encrypt in place), so no Python bytes object of the data's size is built: on this
    machine that allocation, not the cipher, was most of the time.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    src = (
        np.frombuffer(data, np.uint8)
        if isinstance(data, (bytes, bytearray, memoryview))
        else np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    )
    if out is None:
        out = np.empty(src.size + 16, np.uint8)
    if out.ndim != 1 or out.dtype != np.uint8 or out.size < src.size + 15:
        raise ValueError("_aes: out must be flat uint8 with 15 spare bytes")
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    written = op.update_into(src.data, out.data)
    op.finalize()
    return out[:written]


def _ctr_keystream(key: bytes, nonces: np.ndarray, blocks_per_image: int | np.ndarray) -> np.ndarray:
    """AES-CTR keystream for every image at once: counter block = nonce (8 bytes) ‖ block index (8 bytes).

    ``blocks_per_image`` is a count (indices 0..count-1) or the array of block indices, in the order wanted.
    """
    n = len(nonces)
    index = (
        np.arange(blocks_per_image) if isinstance(blocks_per_image, (int, np.integer)) else np.asarray(blocks_per_image)
    )
    counters = np.empty((n, len(index), 2), dtype=">u8")
    counters[:, :, 0] = nonces[:, None]
    counters[:, :, 1] = index.astype(np.uint64)[None, :]
    return _aes(key, counters.view(np.uint8)).reshape(n, len(index) * 16)


class Disguise(Configurable):
    """DisguisedNets disguising; see the module docstring. ``create_scheme("disguise", transform="aes")``."""

    name = "disguise"
    invertible = True
    data_kind = "images"
    one_time_keys = False  # the paper's models learn from data disguised with one dataset key
    Settings = DisguiseSettings

    # -- keys ----------------------------------------------------------------------------------------------------
    def keygen(
        self,
        n: int,
        *,
        rng: RngLike = None,
        shape: tuple[int, ...] = (3, 32, 32),
        pool_size: int = 0,
        base: Key | None = None,
    ) -> DisguiseKey:
        """A key for ``n`` images of ``shape``; with ``base``, its dataset secrets and fresh per-image parts."""
        s = self.settings
        refuse_pool(self.name, pool_size)
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"disguise.keygen: n must be a non-negative int, got {n!r}")
        c, h, w = (int(v) for v in shape)
        b = s.block
        if h % b or w % b:
            raise InputError(f"disguise: block size {b} must divide the image size {h}×{w}")
        m = (h // b) * (w // b)
        gen = as_generator(rng)
        if base is not None:
            check_key(base, DisguiseKey, where="disguise.keygen base")
            assert isinstance(base, DisguiseKey)
            if base.settings != s or list(base.shape) != [c, h, w]:
                raise InputError("disguise.keygen: the base key has other settings or image shape")
            perm, rmt, aes_key = base.perm, base.rmt, base.aes_key
        else:
            perm = (
                gen.permutation(m).astype(np.int64) if s.permute and s.key_scope == "dataset" else np.zeros(0, np.int64)
            )
            rmt = (
                haar_orthogonal(m, b * b, gen)
                if s.transform == "rmt" and s.key_scope == "dataset"
                else np.zeros((0, 0, 0), np.float64)
            )
            aes_key = b""
            if s.transform == "aes" and s.key_scope == "dataset":
                aes_key = self._aes_key_material(16, gen)
        per_image = s.key_scope == "image" or (s.transform == "aes" and s.aes_mode == "ctr")
        count = int(n) if per_image else 0
        seeds = (
            gen.integers(0, 2**63, size=(count, 2), dtype=np.uint64)
            if s.key_scope == "image"
            else np.zeros((0, 2), np.uint64)
        )
        if s.transform == "aes" and s.key_scope == "image":
            aes_key = self._aes_key_material(16 * count, gen)
        nonces = (
            gen.integers(0, 2**63, size=count, dtype=np.uint64)
            if s.transform == "aes" and s.aes_mode == "ctr"
            else np.zeros(0, np.uint64)
        )
        return DisguiseKey(
            settings=s, shape=[c, h, w], n=count, perm=perm, rmt=rmt, aes_key=aes_key, image_seeds=seeds, nonces=nonces
        )

    def _aes_key_material(self, nbytes: int, gen: np.random.Generator) -> bytes:
        if self.settings.seeded_aes_key:
            return gen.bytes(nbytes)
        return secure_bytes(nbytes)

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _per_image(self, key: DisguiseKey, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Permutations (n, M) and RMT matrices (n, M, b², b²) regenerated from the image seeds."""
        s = self.settings
        c, h, w = key.shape
        m = (h // s.block) * (w // s.block)
        perms = np.empty((n, m), np.int64)
        mats = np.empty((n, m, s.block**2, s.block**2)) if s.transform == "rmt" else np.zeros((n, 0, 0, 0))
        for i in range(n):  # one small generator per image: its key is the image's seed
            g = np.random.Generator(np.random.Philox(key=key.image_seeds[i]))
            perms[i] = g.permutation(m) if s.permute else np.arange(m)
            if s.transform == "rmt":
                mats[i] = haar_orthogonal(m, s.block**2, g)
        return perms, mats

    def _check(self, x: torch.Tensor, key: Key, where: str) -> DisguiseKey:
        check_key(key, DisguiseKey, where=where)
        assert isinstance(key, DisguiseKey)
        if key.settings != self.settings:
            raise InputError(f"{where}: the key was drawn with other settings ({key.settings})")
        c, h, w = key.shape
        if tuple(x.shape[1:]) != (c, h, w):
            raise InputError(f"{where}: the key is for {c}×{h}×{w} images, got {tuple(x.shape[1:])}")
        if key.n and x.shape[0] != key.n:
            raise InputError(
                f"{where}: the key was drawn for {key.n} images, the batch has {x.shape[0]}; "
                "draw one for this batch with keygen(n, rng=rng, base=key)"
            )
        return key

    def _aes_apply(self, blocks_u8: np.ndarray, key: DisguiseKey, decrypt: bool) -> np.ndarray:
        s = self.settings
        n = blocks_u8.shape[0]
        flat = np.ascontiguousarray(blocks_u8).reshape(n, -1)
        if s.aes_mode == "ctr":
            if s.key_scope == "image":
                stream = np.concatenate(
                    [
                        _ctr_keystream(key.aes_key[16 * i : 16 * i + 16], key.nonces[i : i + 1], flat.shape[1] // 16)
                        for i in range(n)
                    ]
                )
            else:
                stream = _ctr_keystream(key.aes_key, key.nonces, flat.shape[1] // 16)
            return (flat ^ stream).reshape(blocks_u8.shape)
        if s.key_scope == "image":
            out = np.stack([_aes(key.aes_key[16 * i : 16 * i + 16], flat[i], decrypt) for i in range(n)]) if n else flat
        else:
            out = _aes(key.aes_key, flat, decrypt).reshape(flat.shape)
        return out.reshape(blocks_u8.shape)

    def _aes_dataset(self, arr: np.ndarray, k: DisguiseKey, decrypt: bool) -> np.ndarray:
        """AES disguising with a dataset key in three passes: gather (quantise and permute) blocks into one byte
        buffer, one AES call over it, scatter back as float pixels. ECB encrypts every 16 bytes independently, so
        permuting before encrypting gives the same bytes as encrypting first; CTR keeps each block's counter at the
        block's original position."""
        from masquerade.disguise._kernel import gather_u8, plane_offsets, scatter_f32

        s = self.settings
        n, c, h, w = arr.shape
        b = s.block
        m = (h // b) * (w // b)
        src = k.perm if s.permute else np.arange(m, dtype=np.int64)
        plain = plane_offsets(h, w, b, np.arange(m))  # the plane's own block order
        moved = plane_offsets(h, w, b, src)  # buffer block j holds plane block src[j]
        flat_in = np.ascontiguousarray(arr, dtype=np.float32).reshape(n, c, h * w)
        storage = np.empty(n * c * h * w + 16, np.uint8)  # 16 spare bytes: AES writes in place through update_into
        buf = storage[:-16].reshape(n, c, h * w)
        gather_u8(flat_in, plain if decrypt else moved, buf)
        if s.aes_mode == "ecb":
            _aes(k.aes_key, buf, decrypt, out=storage)
        else:
            units = b * b // 16
            index = ((np.arange(c)[:, None] * m + src[None, :])[:, :, None] * units + np.arange(units)).ravel()
            flat = buf.reshape(n, -1)
            np.bitwise_xor(flat, _ctr_keystream(k.aes_key, k.nonces, index), out=flat)
        out = np.empty((n, c, h * w), np.float32)
        scatter_f32(buf, moved if decrypt else plain, out)
        return out.reshape(n, c, h, w)

    # -- encode / decode --------------------------------------------------------------------------------------------
    def encode(
        self, x: torch.Tensor, key: Key, *, public: torch.Tensor | None = None, rng: RngLike = None
    ) -> torch.Tensor:
        """Disguise images (float32 N×C×H×W in [0, 1]); ``rng`` draws the RMT noise when ``noise > 0``."""
        x = check_images(x, where="disguise.encode")
        k = self._check(x, key, "disguise.encode")
        s = self.settings
        n, c, h, w = x.shape
        arr = x.detach().cpu().numpy()
        if s.transform == "aes" and s.key_scope == "dataset":
            return torch.from_numpy(self._aes_dataset(arr, k, decrypt=False))
        if s.transform == "aes":
            blocks = to_blocks(np.round(arr * 255).astype(np.uint8), s.block)
            blocks = self._aes_apply(blocks, k, decrypt=False)
        else:
            blocks = to_blocks(arr, s.block)
        if s.key_scope == "image":
            perms, mats = self._per_image(k, n)
            if s.transform == "rmt":
                blocks = np.einsum("nmij,ncmj->ncmi", mats.astype(np.float32), blocks, optimize=True)
            if s.permute:
                blocks = np.take_along_axis(blocks, perms[:, None, :, None], axis=2)
        else:
            if s.transform == "rmt":
                blocks = np.einsum("mij,ncmj->ncmi", k.rmt.astype(np.float32), blocks, optimize=True)
            if s.permute:
                blocks = blocks[:, :, k.perm]
        if s.transform == "rmt" and s.noise > 0:
            blocks = blocks + as_generator(rng).normal(0.0, s.noise, blocks.shape).astype(np.float32)
        out = from_blocks(np.ascontiguousarray(blocks), h, w, s.block)
        if s.transform == "aes":
            return torch.from_numpy(out.astype(np.float32) / 255.0)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def decode(self, z: torch.Tensor, key: Key, *, public: torch.Tensor | None = None) -> torch.Tensor:
        """Undo the disguise: exact for AES and permutation, to float precision for RMT without noise."""
        z = check_images(z, where="disguise.decode", range01=self.settings.transform == "aes")
        k = self._check(z, key, "disguise.decode")
        s = self.settings
        n, c, h, w = z.shape
        arr = z.detach().cpu().numpy()
        if s.transform == "aes" and s.key_scope == "dataset":
            return torch.from_numpy(self._aes_dataset(arr, k, decrypt=True))
        blocks = to_blocks(np.round(arr * 255).astype(np.uint8) if s.transform == "aes" else arr, s.block)
        if s.key_scope == "image":
            perms, mats = self._per_image(k, n)
            if s.permute:
                inv = np.argsort(perms, axis=1)
                blocks = np.take_along_axis(blocks, inv[:, None, :, None], axis=2)
            if s.transform == "rmt":
                blocks = np.einsum("nmji,ncmj->ncmi", mats.astype(np.float32), blocks, optimize=True)
        else:
            if s.permute:
                blocks = blocks[:, :, np.argsort(k.perm)]
            if s.transform == "rmt":
                blocks = np.einsum("mji,ncmj->ncmi", k.rmt.astype(np.float32), blocks, optimize=True)
        if s.transform == "aes":
            blocks = self._aes_apply(np.ascontiguousarray(blocks), k, decrypt=True)
            return torch.from_numpy(from_blocks(blocks, h, w, s.block).astype(np.float32) / 255.0)
        return torch.from_numpy(
            np.ascontiguousarray(from_blocks(np.ascontiguousarray(blocks), h, w, s.block), dtype=np.float32)
        )
