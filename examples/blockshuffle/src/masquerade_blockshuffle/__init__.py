"""A keyed block shuffle, written as a masquerade plugin: the scheme, its key, and an attack on it.

The scheme cuts each image into b×b blocks, moves every block to a secret position and turns it by a secret
multiple of 90 degrees. One key serves a whole data set (a model can still learn from the shuffled images), and
``decode`` undoes it exactly. The attack, ``blockshuffle-means``, is what an adversary holding other images of the
same distribution (level 2) does: the mean block at each released position, compared under the four turns with the
mean block at each position of its own images, names the source position and the turn.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from masquerade.contracts import (
    AttackResult,
    Configurable,
    Knowledge,
    ThreatModel,
    check_images,
    check_key,
    refuse_pool,
)
from masquerade.errors import InputError
from masquerade.keys import Key, check_key_array, check_key_field, is_count
from masquerade.rng import RngLike, as_generator, secure_rng

__all__ = ["BlockShuffle", "BlockShuffleKey", "BlockShuffleSettings", "MeanBlocks"]


def _blocks(x: torch.Tensor, b: int) -> torch.Tensor:
    """N×C×H×W -> N×M×C×b×b, blocks in row-major order."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // b, b, w // b, b).permute(0, 2, 4, 1, 3, 5).reshape(n, -1, c, b, b)


def _image(blocks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    n, m, c, b, _ = blocks.shape
    return blocks.reshape(n, h // b, w // b, c, b, b).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def _turn(blocks: torch.Tensor, quarter_turns: np.ndarray) -> torch.Tensor:
    """Turn block position j of every image by quarter_turns[j] × 90 degrees (one call per distinct turn)."""
    out = blocks.clone()
    for q in range(1, 4):
        where = torch.from_numpy(np.nonzero(quarter_turns % 4 == q)[0])
        if len(where):
            out[:, where] = torch.rot90(blocks[:, where], q, dims=(3, 4))
    return out


def _check_block(block: Any, where: str) -> None:
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise InputError(f"{where}: block must be a positive integer, got {block!r}")


@dataclass(frozen=True)
class BlockShuffleSettings:
    """The scheme's settings, frozen and validated; the key carries them, so a key file alone rebuilds the scheme."""

    block: int = 4

    def __post_init__(self) -> None:
        _check_block(self.block, "blockshuffle")


@dataclass(frozen=True, repr=False, eq=False)
class BlockShuffleKey(Key):
    """Where each block goes and how far it turns. ``repr`` shows the settings and shape, never the secret."""

    scheme: ClassVar[str] = "blockshuffle"
    public_fields: ClassVar[tuple[str, ...]] = ("settings", "shape")
    settings: BlockShuffleSettings
    shape: list[int]
    perm: np.ndarray  # (M,) int64: released position j holds source position perm[j]
    turns: np.ndarray  # (M,) int64 in 0..3: quarter turns applied to the block at released position j

    def validate(self) -> None:
        check_key_field(self, "settings", isinstance(self.settings, BlockShuffleSettings), "block shuffle settings")
        b = self.settings.block
        check_key_field(
            self,
            "shape",
            isinstance(self.shape, list)
            and len(self.shape) == 3
            and all(is_count(v, 1) for v in self.shape)
            and self.shape[1] % b == 0
            and self.shape[2] % b == 0,
            f"[C, H, W] with H and W divisible by the block size {b}",
        )
        m = (self.shape[1] // b) * (self.shape[2] // b)
        check_key_array(self, "perm", dtype=np.int64, shape=(m,), permutation_rows=True)
        check_key_array(self, "turns", dtype=np.int64, shape=(m,), low=0, high=4)


class BlockShuffle(Configurable):
    """Keyed block shuffle: b×b blocks permuted and turned by quarter turns, one key for a data set."""

    name = "blockshuffle"
    invertible = True
    data_kind = "images"
    one_time_keys = False  # one key for the data set: training, and the attacks, see it as DisguisedNets'

    Settings = BlockShuffleSettings

    def keygen(
        self,
        n: int,
        *,
        rng: RngLike = None,
        shape: tuple[int, ...] = (3, 32, 32),
        pool_size: int = 0,
        base: Key | None = None,
    ) -> BlockShuffleKey:
        refuse_pool(self.name, pool_size)
        if base is not None:  # a test set under the training set's key
            check_key(base, BlockShuffleKey, where="blockshuffle.keygen")
            return base  # type: ignore[return-value]
        b = self.settings.block
        if len(shape) != 3 or shape[1] % b or shape[2] % b:
            raise InputError(f"blockshuffle: block {b} must divide the image size, got shape {tuple(shape)}")
        m = (shape[1] // b) * (shape[2] // b)
        gen = secure_rng() if rng is None else as_generator(rng)  # keys come from the OS unless seeded
        return BlockShuffleKey(
            settings=self.settings,
            shape=list(shape),
            perm=gen.permutation(m).astype(np.int64),
            turns=gen.integers(0, 4, m).astype(np.int64),
        )

    def encode(
        self, x: torch.Tensor, key: Key, *, public: torch.Tensor | None = None, rng: RngLike = None
    ) -> torch.Tensor:
        x = check_images(x, where="blockshuffle.encode")
        key = self._key(x, key, "blockshuffle.encode")
        blocks = _blocks(x, key.settings.block)[:, torch.from_numpy(key.perm)]
        return _image(_turn(blocks, key.turns), x.shape[2], x.shape[3])

    def decode(self, z: torch.Tensor, key: Key, *, public: torch.Tensor | None = None) -> torch.Tensor:
        z = check_images(z, where="blockshuffle.decode")
        key = self._key(z, key, "blockshuffle.decode")
        blocks = _turn(_blocks(z, key.settings.block), -key.turns)
        out = torch.empty_like(blocks)
        out[:, torch.from_numpy(key.perm)] = blocks
        return _image(out, z.shape[2], z.shape[3])

    def _key(self, x: torch.Tensor, key: Key, where: str) -> BlockShuffleKey:
        check_key(key, BlockShuffleKey, where=where)
        assert isinstance(key, BlockShuffleKey)
        if list(x.shape[1:]) != key.shape:
            raise InputError(
                f"{where}: the key is for {key.shape[0]}×{key.shape[1]}×{key.shape[2]} images, got "
                f"{'×'.join(map(str, x.shape[1:]))}"
            )
        return key


class MeanBlocks(Configurable):
    """Level 2 against the block shuffle: per released position the mean block over the release, against the mean
    block of every position of auxiliary images under each quarter turn; an optimal assignment names the source
    position and turn of every released position, and the release is put back."""

    name = "blockshuffle-means"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS, Knowledge.AUXILIARY}))

    @dataclass(frozen=True)
    class Settings:
        block: int = 4

        def __post_init__(self) -> None:
            _check_block(self.block, "blockshuffle-means")

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """The block shuffle, at its block size (what the scorecard uses to plan this attack)."""
        return {"block": scheme.settings.block} if getattr(scheme, "name", None) == "blockshuffle" else None

    def run(self, *, encodings: Any, auxiliary: Any, rng: Any = None, progress: bool | None = None) -> AttackResult:
        t = time.perf_counter()
        z = check_images(torch.as_tensor(encodings), where=self.name)
        aux = auxiliary.to_tensor() if hasattr(auxiliary, "to_tensor") else torch.as_tensor(auxiliary)
        aux = check_images(aux, where=self.name)
        b = self.settings.block
        n, c, h, w = z.shape
        if aux.shape[1:] != z.shape[1:]:
            raise InputError(
                f"{self.name}: auxiliary images are {tuple(aux.shape[1:])}, the encodings {tuple(z.shape[1:])}"
            )
        if h % b or w % b:
            raise InputError(f"{self.name}: block {b} must divide the image size {h}×{w}")
        zb, ab = _blocks(z, b), _blocks(aux, b)
        # first and second moments of each position's block, flattened: released M×F under each turn, plain M×F
        stats = lambda blk: torch.cat([blk.mean(0), (blk**2).mean(0)], 1).flatten(1).double()  # noqa: E731
        plain = stats(ab)
        turned = torch.stack([stats(torch.rot90(zb, -q, dims=(3, 4))) for q in range(4)])  # 4×M×F
        cost = torch.cdist(turned, plain.expand(4, *plain.shape)) ** 2  # 4×M×M
        best, turns = cost.min(0)
        rows, cols = linear_sum_assignment(best.numpy())
        perm = np.empty(len(rows), np.int64)
        perm[rows] = cols
        q = turns.numpy()[rows, cols].astype(np.int64)
        turn_of = np.empty(len(rows), np.int64)
        turn_of[rows] = q
        key = BlockShuffleKey(settings=BlockShuffleSettings(block=b), shape=[c, h, w], perm=perm, turns=turn_of)
        images = BlockShuffle(block=b).decode(z, key)
        return AttackResult(
            self.name,
            images,
            recovered={"perm": perm, "turns": turn_of},
            metrics={"auxiliary_images": len(aux)},
            seconds=time.perf_counter() - t,
        )
