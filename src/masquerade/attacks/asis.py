"""The first thing any adversary does: look at the protected images as images.

``as-is`` takes the encodings and shows them on the [0, 1] pixel scale, with no knowledge beyond the encodings.
Images already in [0, 1] (the identity, DisguisedNets) are shown unchanged; encodings on another scale (InstaHide's
sign-flipped mixtures) are shown as their magnitude, each image scaled by its own largest magnitude, which undoes
the sign mask (the trivial baseline of the InstaHide Challenge). Its reconstructions are scored by best match, since
an encoding need not belong to one private image. Every image scheme is exposed to it: it is level 1's floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from masquerade.contracts import AttackResult, Configurable, Knowledge, ThreatModel, check_images

__all__ = ["AsIs"]


class AsIs(Configurable):
    """The encodings viewed as images (magnitudes, per-image scaled, where they leave [0, 1])."""

    @dataclass(frozen=True)
    class Settings:
        pass

    name = "as-is"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS}))
    baseline = True  # it uses only the encodings, which every attack on a release holds: level 1's floor

    @classmethod
    def settings_against(cls, scheme: Any) -> dict[str, Any] | None:
        """Every image scheme: the encodings are what the adversary holds."""
        return {} if getattr(scheme, "data_kind", None) == "images" else None

    def run(self, *, encodings: Any, rng: Any = None, progress: bool | None = None) -> AttackResult:
        t = time.perf_counter()
        z = check_images(torch.as_tensor(encodings), where=self.name, range01=False)
        lo, hi = (float(v) for v in torch.aminmax(z)) if z.numel() else (0.0, 0.0)
        inside = lo >= 0 and hi <= 1
        if inside:
            images = z.clone()
        else:
            mag = z.abs()
            peak = mag.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
            images = mag / peak
        return AttackResult(
            self.name, images.float(), metrics={"rescaled": not inside}, seconds=time.perf_counter() - t, aligned=False
        )
