"""The one home of privacy scoring: the success threshold and best-match scoring agree for every caller."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masquerade.errors import InputError
from masquerade.metrics.privacy import SUCCESS_SSIM, best_match, privacy_scores


def test_scores_agree_for_uint8_and_unit_float_images_and_search_unaligned_ones() -> None:
    g = np.random.default_rng(0)
    orig = g.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    noise = g.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    recon = np.concatenate([orig[::-1][:3], noise[:3]])  # three found, in another order; three garbage
    as_float = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    a = privacy_scores(recon, orig, aligned=False)
    b = privacy_scores(as_float(recon), as_float(orig), aligned=False)
    assert a["ssim"] == pytest.approx(b["ssim"], abs=1e-9) and a["success"] == b["success"] == 0.5
    assert a["matching"] == "best match" and list(a["match"][3:]) == [2, 1, 0]
    paired = privacy_scores(recon, orig, aligned=True)  # aligned: each against its own, nothing searched
    assert paired["matching"] == "paired" and paired["success"] == 0.0
    best, psnr, idx = best_match(orig, orig, aligned=True)
    assert (best > 0.999).all() and (psnr == 100.0).all() and list(idx) == list(range(6))
    assert SUCCESS_SSIM == 0.8
    with pytest.raises(InputError):
        best_match(orig, recon[:, :8], aligned=False)
    with pytest.raises(InputError):
        best_match(orig, recon[:0], aligned=False)
