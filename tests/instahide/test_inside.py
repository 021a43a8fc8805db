"""Inside-dataset InstaHide given its grouping: exact recovery with the true grouping, and a residual that tells a
wrong grouping apart (the verifier a grouping search needs)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import masquerade as mq
from masquerade.errors import InputError
from masquerade.instahide.inside import lifted_pairs, reconstruct_given_grouping
from masquerade.metrics import ssim


def _faces(n: int) -> torch.Tensor:
    """Photos our dependencies ship (scikit-image's face crops), colour made from three different ones."""
    from masquerade.data import load_images

    x = load_images("bundled:faces").to_tensor()[: 3 * n]
    return torch.cat([x[:n], x[n : 2 * n], x[2 * n :]], 1)[:, :, :24, :24].contiguous()


def _release(x: torch.Tensor, k: int, passes: int, seed: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray, Any]:
    mean = tuple(float(v) for v in x.mean((0, 2, 3)))
    std = tuple(float(v) for v in x.std((0, 2, 3)))
    s = mq.create_scheme("instahide", k=k, mode="inside", pixel_scale="normalize", mean=mean, std=std)
    g = np.random.default_rng(seed)
    encs, parts, lams = [], [], []
    for _ in range(passes):
        key = s.keygen(len(x), rng=g, shape=tuple(x.shape[1:]))
        encs.append(s.encode(x, key))
        parts.append(key.partners)
        lams.append(key.lam)
    return torch.cat(encs), np.concatenate(parts), np.concatenate(lams), s


@pytest.mark.parametrize("k", [2, 4])
def test_the_true_grouping_gives_every_image_exactly(k: int) -> None:
    x = _faces(24)
    z, part, lam, s = _release(x, k, passes=20, seed=k)
    r = reconstruct_given_grouping(z, part, lam)
    assert r.images.shape == x.shape and float(r.residual.max()) < 1e-5
    # up to one global sign, on the encodings' scale: back through the scheme's standardisation
    scale, shift = (torch.tensor(v)[None, :, None, None] for v in (s.settings.std, s.settings.mean))
    best = max(float(ssim(x, (sign * r.images * scale + shift).clamp(0, 1), data_range=1.0).min()) for sign in (1, -1))
    assert best > 0.999


def test_a_wrong_grouping_leaves_a_residual_where_it_is_wrong() -> None:
    x = _faces(24)
    z, part, lam, _ = _release(x, 4, passes=20, seed=0)
    wrong = part.copy()
    rows = np.random.default_rng(1).choice(len(part), len(part) // 10, replace=False)
    wrong[rows, 1] = (wrong[rows, 1] + 1 + np.random.default_rng(2).integers(0, 23, len(rows))) % 24
    changed = wrong[rows, 1] != part[rows, 1]
    r = reconstruct_given_grouping(z, wrong, lam)
    bad = np.zeros(len(part), bool)
    bad[rows[changed]] = True
    res = r.residual.numpy()
    # the true grouping fits to rounding; a wrong one does not, and most of the misfit sits on the changed rows
    assert res.max() > 1e-2
    assert np.median(res[bad]) > 3 * np.median(res[~bad])


def test_the_lifted_design_counts_each_pair_once_and_refuses_bad_input() -> None:
    part = np.array([[0, 1], [1, 0], [2, 2]])
    lam = np.array([[0.6, 0.4], [0.5, 0.5], [0.7, 0.3]])
    rows, cols, pairs, w = lifted_pairs(part, lam, 3)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 0), (0, 1), (1, 1), (2, 2)]
    # an image twice in one encoding: its coefficients add, (0.7 + 0.3)² on X[2, 2]
    assert np.isclose(sum(w[(rows == 2)]), 1.0)
    z = torch.zeros(3, 1, 4, 4)
    with pytest.raises(InputError, match="E×k"):
        reconstruct_given_grouping(z, part[:2], lam[:2])
    with pytest.raises(InputError, match="partner ids"):
        reconstruct_given_grouping(z, part, lam, n_images=2)
    with pytest.raises(InputError, match="finite"):
        reconstruct_given_grouping(z * float("nan"), part, lam)
    with pytest.raises(InputError, match="E×C×H×W"):
        reconstruct_given_grouping(z[0], part, lam)


# -- the attack --------------------------------------------------------------------------------------------------


def _digits_release(
    n: int = 40, k: int = 4, passes: int = 20
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """An inside-dataset release of digits our dependencies ship: the encodings in a shuffled order (the attack
    must not read the passes from the order) with their mixed labels."""
    from masquerade.data import load_images

    d = load_images("bundled:mnist")
    pick = np.random.default_rng(1).permutation(len(d))[:n]
    x, y = d.to_tensor()[pick], d.labels[pick].astype(np.int64)
    mean = tuple(float(v) for v in x.mean((0, 2, 3)))
    std = tuple(float(v) for v in x.std((0, 2, 3)))
    s = mq.create_scheme("instahide", k=k, mode="inside", pixel_scale="normalize", mean=mean, std=std)
    g = np.random.default_rng(0)
    encs, labs = [], []
    for _ in range(passes):
        key = s.keygen(n, rng=g, shape=tuple(x.shape[1:]))
        encs.append(s.encode(x, key))
        labs.append(s.mix_labels(y, key, 10))
    order = g.permutation(n * passes)
    return x, torch.cat(encs)[order], torch.cat(labs).numpy()[order], mean, std


def test_the_attack_finds_the_grouping_and_the_images_from_encodings_and_labels() -> None:
    from masquerade.workflows.attack import score_reconstructions

    x, z, lab, mean, std = _digits_release()
    # the standardisation's mean and deviation are the owner's data's: unknown here, fitted to the images' range
    atk = mq.create_attack("instahide-inside", k=4)
    res = mq.run_attack(atk, encodings=z, labels=lab, rng=0)
    # n and T come from the release itself (n not told): 40 images, 20 encodings each
    assert res.metrics["n_images"] == 40 and res.metrics["passes"] == 20 and not res.aligned
    found = score_reconstructions(res.reconstructions, x, aligned=False)
    assert found["success"] >= 0.7, found
    # the labels name each mix's classes and shares; moved to other encodings they mislead it, and nothing verifies
    misled = mq.create_attack("instahide-inside", k=4, mean=mean, std=std, rounds=2, n_private=40)
    wrong = mq.run_attack(misled, encodings=z, labels=np.roll(lab, 1, axis=0), rng=0)
    assert score_reconstructions(wrong.reconstructions, x, aligned=False)["success"] <= 0.1
    assert wrong.metrics["median_misfit"] > 2 * res.metrics["median_misfit"]


def test_the_attack_refuses_what_is_not_an_inside_release() -> None:
    atk = mq.create_attack("instahide-inside")
    z = torch.randn(20, 3, 8, 8)
    lab = np.full((20, 10), 0.1)
    with pytest.raises(InputError, match="summing to 1"):
        atk.run(encodings=z, labels=lab * 2)
    with pytest.raises(InputError, match="E×classes"):
        atk.run(encodings=z, labels=lab[:5])
    with pytest.raises(InputError, match="NaN"):
        atk.run(encodings=z * float("nan"), labels=lab)
    with pytest.raises(InputError, match="E×C×H×W"):
        atk.run(encodings=z[0], labels=lab)
    with pytest.raises(InputError, match="auxiliary images are"):
        atk.run(encodings=z, labels=lab, auxiliary=torch.rand(4, 3, 16, 16))
    with pytest.raises(InputError, match="passes"):
        mq.create_attack("instahide-inside", n_private=7).run(encodings=z, labels=lab)
    for bad in ({"k": 0}, {"dominant": 1.5}, {"pixel_scale": "[0,2]"}, {"std": (0.0, 1.0, 1.0)}, {"mean": (0.5,)}):
        with pytest.raises(InputError):
            mq.create_attack("instahide-inside", **bad)


def test_the_scorecard_puts_inside_releases_against_it() -> None:
    from masquerade.registry import ATTACKS

    cls = ATTACKS.get("instahide-inside")
    inside = mq.create_scheme("instahide", k=2, mode="inside", pixel_scale="normalize")
    assert cls.settings_against(inside) == {"k": 2, "pixel_scale": "normalize"}
    assert cls.settings_against(mq.create_scheme("instahide", k=6, mode="cross", private_per_mix=2)) is None
    assert cls.settings_against(mq.create_scheme("disguise")) is None
