"""The identity scheme: no protection. The baseline row of every privacy/utility table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import InputError
from ..keys import Key
from ..registry import SCHEMES
from ..rng import RngLike
from .base import check_images, check_key


@dataclass(frozen=True, repr=False, eq=False)
class IdentityKey(Key):
    """Holds no secret, only the batch size it was drawn for."""

    scheme: ClassVar[str] = "identity"
    public_fields: ClassVar[tuple[str, ...]] = ("n",)
    n: int


@SCHEMES.register("identity", description="no protection: the baseline every scheme is compared against")
class Identity:
    """No protection: ``encode`` returns a copy of its input."""

    name = "identity"
    invertible = True

    @dataclass(frozen=True)
    class Settings:
        pass

    def __init__(self) -> None:
        self.settings = self.Settings()

    def keygen(self, n: int, rng: RngLike = None) -> IdentityKey:
        if not isinstance(n, int) or n < 0:
            raise InputError(f"identity.keygen: n must be a non-negative int, got {n!r}")
        return IdentityKey(n=n)

    def encode(self, x: torch.Tensor, key: Key) -> torch.Tensor:
        x = check_images(x, where="identity.encode")
        check_key(key, IdentityKey, where="identity.encode", n=x.shape[0])
        return x.clone()

    def decode(self, z: torch.Tensor, key: Key) -> torch.Tensor:
        z = check_images(z, where="identity.decode")
        check_key(key, IdentityKey, where="identity.decode", n=z.shape[0])
        return z.clone()
