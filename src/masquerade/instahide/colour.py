"""The challenge attack's colour correction when it has no learned prior (stage 5 of
:mod:`masquerade.instahide.attack`): a per-pixel cubic map from recovered to true colours, fitted by least squares on
a small challenge the attacker simulates from its own labelled auxiliary images, where it knows the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from masquerade.errors import InputError
from masquerade.instahide.recipe import _public_energy, parse_slots, simulate_challenge
from masquerade.instahide.reconstruct import reconstruct_private

__all__ = ["ColourMap", "learn_colour"]


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Cubic monomials of each pixel's colour (N×3 -> N×20)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    one = torch.ones_like(r)
    cols = [
        one,
        r,
        g,
        b,
        r * r,
        g * g,
        b * b,
        r * g,
        r * b,
        g * b,
        r**3,
        g**3,
        b**3,
        r * r * g,
        r * r * b,
        g * g * r,
        g * g * b,
        b * b * r,
        b * b * g,
        r * g * b,
    ]
    return torch.stack(cols, 1)


@dataclass(frozen=True)
class ColourMap:
    """A per-pixel cubic map from recovered colours to true colours ([-1, 1] scale), fitted by least squares."""

    coef: np.ndarray  # 20×3

    @classmethod
    def fit(cls, recovered: torch.Tensor, truth: torch.Tensor, ridge: float = 1e-3) -> "ColourMap":
        f = _cubic(recovered.reshape(-1, 3).double())
        t = truth.reshape(-1, 3).double()
        coef = torch.linalg.solve(f.T @ f + ridge * torch.eye(f.shape[1], dtype=f.dtype), f.T @ t)
        return cls(coef.numpy())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = _cubic(x.reshape(-1, 3).double()) @ torch.from_numpy(self.coef)
        return out.float().clamp(-1, 1).reshape(shape)


def learn_colour(
    aux: Any,
    mean: torch.Tensor,
    var: torch.Tensor,
    s: Any,
    shape: tuple[int, int, int],
    patches_src: Any,
) -> ColourMap:
    """Simulate a small challenge from the auxiliary images (the attacker's own truth), reconstruct it with the true
    pairing, and fit the colour map from what reconstruction gives to what the images were. ``s``: the attack's
    :class:`~masquerade.instahide.attack.ChallengeAttackSettings` (not imported here: that module imports this one)."""
    from masquerade.data import ImageSet, load_images, public_pool

    imgs = (aux if isinstance(aux, ImageSet) else load_images(aux)).to_rgb()
    if imgs.labels is None:
        raise InputError(f"{aux}: the auxiliary images need labels (the simulated challenge releases them mixed)")
    if imgs.image_shape != shape:
        raise InputError(f"{aux}: auxiliary images are {imgs.image_shape}, the challenge's {shape}")
    gen = np.random.default_rng(s.seed + 1)
    pick = gen.choice(len(imgs), min(s.colour_images, len(imgs)), replace=False)
    src = patches_src if patches_src is not None and not isinstance(patches_src, np.ndarray) else "bundled:photos"
    pub = (
        patches_src
        if isinstance(patches_src, np.ndarray)
        else public_pool(src, s.public_patches, size=shape[0], rng=s.seed).images
    )
    sim = simulate_challenge(
        imgs.images[pick],
        imgs.labels[pick].astype(np.int64),
        pub,
        per_image=s.colour_per_image,
        k=s.k,
        upper=s.upper,
        dom=s.dom,
        num_classes=max(10, int(imgs.labels.max()) + 1),
        rng=gen,
    )
    sl = parse_slots(sim["label"], len(sim["label"]), k=s.k, upper=s.upper, dom=s.dom)
    lam = np.where(sl.same[:, None], sl.lam, sim["lam"][:, :2])  # what the labels say, slot by slot
    energy = _public_energy(1 - lam.sum(1), s.k, s.upper, s.dom)
    x, _ = reconstruct_private(
        sim["encryption"],
        sim["pairs"],
        lam,
        len(pick),
        mean,
        var,
        energy,
        beta=s.beta,
        anneal=s.anneal,
        em_steps=s.em_steps,
        shape=shape,
    )
    truth = torch.from_numpy(imgs.images[pick].astype(np.float32) / 127.5 - 1)
    return ColourMap.fit(x.reshape(-1, *shape), truth)
