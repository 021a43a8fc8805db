"""ShuffleBits (Ni, Huttunen, Rahtu, 2021): encrypt float32 features by permuting the 32 bits of every number.

The cipher works on the uint32 view of the data and never on float values, so every bit pattern -- zeros, subnormals,
infinities, NaNs with their payloads -- goes through ``encode`` and ``decode`` bit for bit. Ciphertexts are handed
back with the float32 dtype of the input (the model's output type), but they are bit strings: only copies, never
arithmetic, may touch them (a float64 round trip, for one, quiets signalling NaNs).

Bit positions are numbered from the most significant, as in the published code: position 0 is the sign, 1-8 the
exponent, 9-31 the mantissa. A key row ``perm`` says that ciphertext position j carries plaintext position
``perm[j]``; ``np.random.default_rng(s).permutation(32)`` is the published ``get_index_array(s)``.

Key scopes: ``"fixed"`` -- one permutation for everything (the published code); ``"vector"`` -- a fresh permutation for
every feature vector, the one-time key the paper describes (the default); ``"element"`` -- one for every number.
Keys come from the operating system's CSPRNG unless a seed is given for a reproducible experiment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from masquerade.contracts import Configurable, refuse_base, refuse_pool
from masquerade.errors import InputError
from masquerade.keys import Key, check_key_array, check_key_field, is_count, just_drawn
from masquerade.rng import RngLike, as_generator

__all__ = [
    "ShuffleBits",
    "ShuffleBitsKey",
    "ShuffleBitsSettings",
    "ShuffleBitsLayer",
    "EncryptedFeatures",
    "shuffle_words",
    "perm_to_dest",
]

SCOPES = ("fixed", "vector", "element")


@dataclass(frozen=True)
class ShuffleBitsSettings:
    scope: str = "vector"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise InputError(f"shufflebits: scope must be one of {SCOPES}, got {self.scope!r}")


@dataclass(frozen=True, repr=False, eq=False)
class ShuffleBitsKey(Key):
    """Bit permutations: one row (fixed), one per vector, or one per number (vectors × features)."""

    scheme: ClassVar[str] = "shufflebits"
    public_fields: ClassVar[tuple[str, ...]] = ("settings", "n", "shape")
    settings: ShuffleBitsSettings
    n: int  # vectors the key is for (0: any number, fixed scope)
    shape: list[int]  # shape of one feature vector (element scope; [] otherwise)
    perm: np.ndarray = field(default_factory=lambda: np.zeros((0, 32), np.uint8))

    def validate(self) -> None:
        scope = getattr(self.settings, "scope", None)
        check_key_field(self, "settings", isinstance(self.settings, ShuffleBitsSettings), "ShuffleBits settings")
        check_key_field(
            self,
            "n",
            is_count(self.n, 0) and (self.n == 0) == (scope == "fixed"),
            "the number of vectors (0 exactly for a fixed key)",
        )
        check_key_field(
            self,
            "shape",
            isinstance(self.shape, list)
            and all(is_count(v, 1) for v in self.shape)
            and bool(self.shape) == (scope == "element")
            and int(np.prod(self.shape or [1])) <= 2**31,
            "the vector shape (element scope only)",
        )
        rows = 1 if scope == "fixed" else int(self.n) * (int(np.prod(self.shape)) if scope == "element" else 1)
        check_key_array(self, "perm", dtype=np.uint8, shape=(rows, 32), permutation_rows=True)


class EncryptedFeatures(NamedTuple):
    """What :class:`ShuffleBitsLayer` returns: the ciphertext (float32 bit patterns) and the key to decrypt it."""

    ciphertext: torch.Tensor
    key: ShuffleBitsKey


def perm_to_dest(perm: np.ndarray) -> np.ndarray:
    """(K, 32) MSB-first ``perm`` (ciphertext position j holds plaintext position perm[j]) -> (K, 32) uint8 ``dest``
    in LSB numbering (plaintext bit i moves to bit dest[i]), the form the pure-torch path takes."""
    perm = np.asarray(perm, dtype=np.int64).reshape(-1, 32)
    dest = np.empty(perm.shape, np.uint8)
    np.put_along_axis(dest, 31 - perm, (31 - np.arange(32, dtype=np.uint8))[None, :].repeat(len(perm), 0), axis=1)
    return dest


def inverse_perm(perm: np.ndarray) -> np.ndarray:
    return np.argsort(np.asarray(perm).reshape(-1, 32), axis=1).astype(np.uint8)


def shuffle_words(words: np.ndarray, perm: np.ndarray, scope: str, *, inverse: bool = False) -> np.ndarray:
    """Apply bit permutations (or, with ``inverse``, undo them) to uint32 ``words`` (N × D): ``perm`` is 1, N or
    N·D MSB-first rows for fixed / vector / element scope. Returns a new uint32 array."""
    from masquerade.shufflebits._kernel import shuffle_elements, shuffle_fixed, shuffle_rows

    w = np.ascontiguousarray(words, dtype=np.uint32)
    if w.ndim != 2:
        raise InputError(f"shuffle_words: expected N × D words, got shape {w.shape}")
    rows = {"fixed": 1, "vector": w.shape[0], "element": w.size}.get(scope)
    if rows is None:
        raise InputError(f"shuffle_words: scope must be one of {SCOPES}, got {scope!r}")
    p = np.ascontiguousarray(perm, dtype=np.uint8).reshape(-1, 32)
    if len(p) != rows:  # the kernels do not bounds-check: refuse here
        raise InputError(f"shuffle_words: {scope} scope needs {rows} permutations for {w.shape}, got {len(p)}")
    out = np.empty_like(w)
    if w.size == 0:
        return out
    if scope == "fixed":
        shuffle_fixed(w, p[0], inverse, out)
    elif scope == "vector":
        shuffle_rows(w, p, inverse, out)
    else:
        shuffle_elements(w.reshape(-1), p, inverse, out.reshape(-1))
    return out


def shuffle_words_torch(words: torch.Tensor, perm: np.ndarray, scope: str) -> torch.Tensor:
    """The same permutation in plain torch (any device): 32 masked shifts over int32 words, broadcast over keys."""
    w = words.reshape(words.shape[0], -1)
    dest = torch.from_numpy(perm_to_dest(perm).astype(np.int32)).to(w.device)
    if scope == "fixed":
        dest = dest[0][None, None, :]
    elif scope == "vector":
        dest = dest[:, None, :]
    else:
        dest = dest.reshape(w.shape[0], w.shape[1], 32)
    out = torch.zeros_like(w)
    one = torch.ones((), dtype=torch.int32, device=w.device)
    for i in range(32):  # a loop over bit positions, each step vectorised over all words
        out |= ((w >> i) & one) << dest[..., i]
    return out.reshape(words.shape)


class ShuffleBits(Configurable):
    """The ShuffleBits cipher; see the module docstring. ``create_scheme("shufflebits", scope="vector")``."""

    name = "shufflebits"
    invertible = True
    data_kind = "features"
    Settings = ShuffleBitsSettings

    def keygen(
        self,
        n: int = 0,
        *,
        rng: RngLike = None,
        shape: tuple[int, ...] | list[int] = (),
        pool_size: int = 0,
        base: Key | None = None,
    ) -> ShuffleBitsKey:
        """Draw permutations: one (fixed scope, any ``n``), one per vector (``n`` vectors), or one per number
        (``n`` vectors of ``shape``, the shape of one feature vector; other scopes ignore it)."""
        s = self.settings
        refuse_pool(self.name, pool_size)
        refuse_base(self.name, base)
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"shufflebits.keygen: n must be a non-negative int, got {n!r}")
        if s.scope != "fixed" and n == 0:
            raise InputError(f"shufflebits.keygen: {s.scope}-scope keys are drawn for a number of vectors (n >= 1)")
        shape = [int(v) for v in shape] if s.scope == "element" else []
        if s.scope == "element" and (not shape or min(shape) < 1):
            raise InputError("shufflebits.keygen: element-scope keys need the feature shape (shape=(D,))")
        rows = 1 if s.scope == "fixed" else int(n) * (int(np.prod(shape)) if s.scope == "element" else 1)
        from masquerade.shufflebits._kernel import fisher_yates

        gen = as_generator(rng)
        perm = np.empty((rows, 32), np.uint8)  # an independent uniform permutation per row
        fisher_yates(gen.integers(0, 2**32, size=(rows, 31), dtype=np.uint32), perm)
        with just_drawn():
            return ShuffleBitsKey(
                settings=s,
                n=0 if s.scope == "fixed" else int(n),
                shape=shape if s.scope == "element" else [],
                perm=perm,
            )

    @staticmethod
    def key_from_perm(perm: np.ndarray | list[int]) -> ShuffleBitsKey:
        """A fixed key from one permutation of 0..31 (e.g. the published ``get_index_array(seed)``)."""
        p = np.asarray(perm)
        if p.shape != (32,) or sorted(p.tolist()) != list(range(32)):
            raise InputError("shufflebits: a permutation is the 32 numbers 0..31, each once")
        return ShuffleBitsKey(settings=ShuffleBitsSettings("fixed"), n=0, shape=[], perm=p.astype(np.uint8)[None])

    # -- encode / decode --------------------------------------------------------------------------------------------
    def _check(self, x: Any, key: Key, where: str) -> ShuffleBitsKey:
        if not isinstance(key, ShuffleBitsKey):
            raise InputError(
                f"{where}: expected a 'shufflebits' key, got one for {getattr(key, 'scheme', type(key).__name__)!r}"
            )
        if key.settings.scope != self.settings.scope:
            raise InputError(f"{where}: the key has {key.settings.scope!r} scope, the scheme {self.settings.scope!r}")
        if not isinstance(x, (np.ndarray, torch.Tensor)):
            raise InputError(
                f"{where}: expected a numpy array or torch tensor of float32 features, got {type(x).__name__}"
            )
        if x.dtype not in (np.float32, torch.float32):
            raise InputError(
                f"{where}: features must be float32 (the cipher permutes the bits of 32-bit floats), "
                f"got {x.dtype}; convert them yourself if that is what you mean"
            )
        if x.ndim < 1:
            raise InputError(f"{where}: expected features as N × ..., got a scalar")
        n = x.shape[0]
        if key.n and n != key.n:
            raise InputError(f"{where}: the key was drawn for {key.n} vectors, got {n}")
        if key.settings.scope == "element" and list(x.shape[1:]) != list(key.shape):
            raise InputError(f"{where}: the key is for vectors of shape {tuple(key.shape)}, got {tuple(x.shape[1:])}")
        return key

    def _apply(self, x: Any, perm: np.ndarray, scope: str, inverse: bool) -> Any:
        if isinstance(x, torch.Tensor):
            if x.device.type != "cpu":
                p = inverse_perm(perm) if inverse else perm
                return shuffle_words_torch(x.detach().contiguous().view(torch.int32), p, scope).view(torch.float32)
            words = x.detach().contiguous().numpy().view(np.uint32)
            out = shuffle_words(words.reshape(len(words), -1), perm, scope, inverse=inverse)
            return torch.from_numpy(out.view(np.float32).reshape(tuple(x.shape)))
        words = np.ascontiguousarray(x).view(np.uint32)
        return (
            shuffle_words(words.reshape(len(words), -1), perm, scope, inverse=inverse).view(np.float32).reshape(x.shape)
        )

    def encode(self, x: Any, key: Key, *, public: torch.Tensor | None = None, rng: RngLike = None) -> Any:
        """Ciphertext of float32 features ``x`` (N × ..., numpy or torch): the same type, shape and dtype."""
        k = self._check(x, key, "shufflebits.encode")
        return self._apply(x, k.perm, k.settings.scope, inverse=False)

    def decode(self, z: Any, key: Key, *, public: torch.Tensor | None = None) -> Any:
        """Plaintext features from ciphertext ``z`` -- bit for bit."""
        k = self._check(z, key, "shufflebits.decode")
        return self._apply(z, k.perm, k.settings.scope, inverse=True)


class ShuffleBitsLayer(torch.nn.Module):
    """Append to a feature extractor: ``nn.Sequential(backbone, ShuffleBitsLayer())`` outputs
    :class:`EncryptedFeatures` -- the ciphertext and its key (a fresh one per call for vector and element scope,
    drawn from the OS CSPRNG unless ``rng`` seeds an experiment). The client decrypts with ``layer.decrypt``."""

    def __init__(self, scope: str = "vector", rng: RngLike = None) -> None:
        super().__init__()
        self.scheme = ShuffleBits(scope=scope)
        self._gen = as_generator(rng)
        self._fixed = self.scheme.keygen(0, rng=self._gen) if scope == "fixed" else None

    def forward(self, features: torch.Tensor) -> EncryptedFeatures:
        if not isinstance(features, torch.Tensor) or features.dtype != torch.float32:
            raise InputError("ShuffleBitsLayer: expects float32 feature tensors (N × ...)")
        key = (
            self._fixed
            if self._fixed is not None
            else self.scheme.keygen(features.shape[0], rng=self._gen, shape=tuple(features.shape[1:]))
        )
        # bit permutations have no gradient: the ciphertext leaves the graph
        return EncryptedFeatures(self.scheme.encode(features.detach(), key), key)

    def decrypt(self, encrypted: EncryptedFeatures) -> torch.Tensor:
        return self.scheme.decode(encrypted.ciphertext, encrypted.key)

    def extra_repr(self) -> str:
        return f"scope={self.scheme.settings.scope!r}"


def __getattr__(name: str) -> Any:
    # popcount moved to masquerade.attacks.feature_inversion (the adversary's popcount view); the old name works a
    # release
    if name == "popcount":
        from masquerade.attacks.feature_inversion import popcount

        return popcount
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
