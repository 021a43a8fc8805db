"""The identity scheme: no protection. The baseline row of every privacy/utility table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from masquerade.contracts import Configurable, check_images, check_key, refuse_base, refuse_pool
from masquerade.errors import InputError
from masquerade.keys import Key, check_key_field, is_count
from masquerade.rng import RngLike


@dataclass(frozen=True, repr=False, eq=False)
class IdentityKey(Key):
    """Holds no secret, only the batch size it was drawn for."""

    scheme: ClassVar[str] = "identity"
    public_fields: ClassVar[tuple[str, ...]] = ("n",)
    n: int

    def validate(self) -> None:
        check_key_field(self, "n", is_count(self.n, 0), "a count")


class Identity(Configurable):
    """No protection: ``encode`` returns a copy of its input."""

    name = "identity"
    invertible = True
    data_kind = "images"

    @dataclass(frozen=True)
    class Settings:
        pass

    def keygen(
        self,
        n: int,
        *,
        rng: RngLike = None,
        shape: tuple[int, ...] = (3, 32, 32),
        pool_size: int = 0,
        base: Key | None = None,
    ) -> IdentityKey:
        if not isinstance(n, int) or n < 0:
            raise InputError(f"identity.keygen: n must be a non-negative int, got {n!r}")
        refuse_pool(self.name, pool_size)
        refuse_base(self.name, base)
        return IdentityKey(n=n)

    def encode(
        self, x: torch.Tensor, key: Key, *, public: torch.Tensor | None = None, rng: RngLike = None
    ) -> torch.Tensor:
        x = check_images(x, where="identity.encode")
        check_key(key, IdentityKey, where="identity.encode", n=x.shape[0])
        return x.clone()

    def decode(self, z: torch.Tensor, key: Key, *, public: torch.Tensor | None = None) -> torch.Tensor:
        z = check_images(z, where="identity.decode")
        check_key(key, IdentityKey, where="identity.decode", n=z.shape[0])
        return z.clone()
