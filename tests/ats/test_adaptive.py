"""ats-adaptive: gradient inversion through the clients' public ATS policy, and the kept-pixel scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from masquerade.ats.adaptive import ATSAdaptive, candidates, describe_candidate, invert, soft_transform
from masquerade.ats.policies import ATSPolicy
from masquerade.ats.privacy import attack_model, kept_pixels, kept_scores, summary
from masquerade.attacks.gradient_inversion import client_gradient
from masquerade.errors import InputError
from masquerade.metrics import psnr, ssim
from masquerade.registry import create_attack, create_scheme, run_attack

SMALL = {"image_shape": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.25,) * 3}


def _photos(n: int, size: int = 16) -> torch.Tensor:
    """Natural images shipped with scikit-image, cut and shrunk (no data set needed)."""
    from skimage import data as skd

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket")[:n]:
        img = torch.from_numpy(getattr(skd, name)()).permute(2, 0, 1).float()[None] / 255
        side = min(img.shape[-2:])
        out.append(F.interpolate(img[..., :side, :side], size=(size, size), mode="area"))
    return torch.cat(out).clamp(0, 1)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16 * 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.sigmoid(self.conv(x)).flatten(1))


def test_candidates_cover_every_draw_of_the_policy() -> None:
    steps, sign = candidates("3-1-7", always=True)
    assert steps.shape == (8, 3) and len({describe_candidate(s, g) for s, g in zip(steps, sign)}) == 8
    assert len(candidates("3-1-7+43-18-18", always=True)[0]) == 16
    # probabilities honoured: each sub-policy fires (either sign) or not; the all-off draw appears once
    assert len(candidates("3-1-7", always=False)[0]) == 27
    assert len(candidates("3-1-7+43-18-18", always=False)[0]) == 53
    assert candidates("none", always=True)[0].shape == (1, 0)
    key = ATSPolicy(policy="3-1-7+43-18-18", always=True).keygen(64, rng=3)
    drawn = {describe_candidate(s, g) for s, g in zip(key.steps, key.sign)}
    assert drawn <= {describe_candidate(s, g) for s, g in zip(*candidates("3-1-7+43-18-18", always=True))}


def test_pulled_back_images_are_the_private_pixels_that_survive() -> None:
    x = _photos(4)
    sch = ATSPolicy(policy="3-7", always=True)  # translations only: kept pixels come back exactly
    key = sch.keygen(4, rng=1, shape=(3, 16, 16))
    z = sch.encode(x, key)
    back, known = invert(z, key.steps, key.sign)
    kept = kept_pixels(key)
    assert torch.equal(known, kept) and 0.3 < float(kept.mean()) < 0.8
    q = torch.round(x * 255) / 255
    assert torch.equal(back * kept, q * kept)
    # the differentiable copy of the policy gives the policy's images (up to its 8-bit rounding)
    torch.testing.assert_close(soft_transform(q, key.steps, key.sign), z, atol=1e-6, rtol=0)
    # a contrast blend is pulled back too, and gradients flow through the copy
    sch = ATSPolicy(policy="3-1", always=True)
    key = sch.keygen(4, rng=2, shape=(3, 16, 16))
    back, known = invert(sch.encode(x, key), key.steps, key.sign)
    assert float(kept_scores(back, x, known)[0].mean()) > 25
    leaf = x.clone().requires_grad_(True)
    soft_transform(leaf, key.steps, key.sign).sum().backward()
    assert leaf.grad is not None and bool((leaf.grad.abs().sum(1) > 0).float().mean() > 0.3)


def test_kept_scores_equal_psnr_and_ssim_when_everything_is_kept() -> None:
    x, r = _photos(4), _photos(4).flip(0)
    p, s = kept_scores(r, x, torch.ones(4, 1, 16, 16))
    torch.testing.assert_close(p, psnr(r, x, data_range=1.0).to(p.dtype), atol=1e-4, rtol=0)
    torch.testing.assert_close(s, ssim(r, x, data_range=1.0).to(s.dtype), atol=1e-6, rtol=0)
    # destroyed pixels do not count: errors there change nothing
    kept = torch.ones(4, 1, 16, 16)
    kept[..., :, 8:] = 0
    worse = r.clone()
    worse[..., :, 8:] = 1 - worse[..., :, 8:]
    torch.testing.assert_close(torch.stack(kept_scores(worse, x, kept)), torch.stack(kept_scores(r, x, kept)))
    assert torch.isnan(kept_scores(r, x, torch.zeros(4, 1, 16, 16))[1]).all()
    with pytest.raises(InputError, match="do not fit"):
        kept_scores(r, x, torch.ones(4, 1, 8, 8))


def test_settings_against_and_bad_input() -> None:
    assert ATSAdaptive.settings_against(create_scheme("ats", policy="3-1-7", always=True)) == {
        "policy": "3-1-7",
        "always": True,
    }
    assert ATSAdaptive.settings_against(create_scheme("ats", policy="none")) is None
    assert ATSAdaptive.settings_against(create_scheme("disguise")) is None
    assert create_attack("ats-adaptive", policy=" 3-1 ").settings.policy == "3-1"
    for bad in (
        {"policy": "3-99"},
        {"policy": "x"},
        {"keep": 0},
        {"refine_iterations": -1},
        {"always": "yes"},
        {"refine_lr": 0.0},
        {"screen_iterations": -1},
    ):
        with pytest.raises(InputError):
            create_attack("ats-adaptive", **bad)
    torch.manual_seed(0)
    model = Small()
    x, y = _photos(2), torch.tensor([0, 1])
    g = client_gradient(model, x[:1], y[:1])
    with pytest.raises(InputError, match="no policy"):
        run_attack(create_attack("ats-adaptive", iterations=2, **SMALL), model=model, gradients=g, labels=y[:1])
    with pytest.raises(InputError, match="batch 1"):
        run_attack(
            create_attack("ats-adaptive", policy="3", iterations=2, **SMALL),
            model=model,
            gradients=client_gradient(model, x, y),
            labels=y,
        )
    with pytest.raises(InputError, match="cost"):
        run_attack(
            create_attack("ats-adaptive", policy="3", iterations=2, cost="l2", **SMALL),
            model=model,
            gradients=g,
            labels=y[:1],
        )


def test_smoke_run_through_the_registry() -> None:
    torch.manual_seed(0)
    model = Small()
    x, y = _photos(1), torch.tensor([2])
    res = run_attack(
        create_attack("ats-adaptive", policy="3-1-7", always=True, iterations=3, keep=3, **SMALL),
        model=model,
        gradients=client_gradient(model, x, y),
        labels=y,
        rng=0,
        progress=False,
    )
    assert res.attack == "ats-adaptive" and res.reconstructions.shape == (1, 3, 16, 16)
    assert 0 <= float(res.reconstructions.min()) and float(res.reconstructions.max()) <= 1
    assert res.metrics["iterations"] == 6 and len(res.metrics["restart_losses"]) == 3
    # successive halving: every candidate screened for 2 of the 3 refinement steps, the best 2 to the end
    res = run_attack(
        create_attack("ats-adaptive", policy="3-1-7", always=True, iterations=3, keep=2, screen_iterations=2, **SMALL),
        model=model,
        gradients=client_gradient(model, x, y),
        labels=y,
        rng=0,
        progress=False,
    )
    assert res.metrics["iterations"] == 6 and len(res.metrics["restart_losses"]) == 2
    assert 0 <= float(res.reconstructions.min()) and float(res.reconstructions.max()) <= 1


def test_knowing_the_policy_beats_the_blind_attack_and_a_wrong_policy_does_not() -> None:
    torch.manual_seed(0)
    model = Small()
    x, y = _photos(4), torch.tensor([0, 1, 2, 3])
    common = dict(policy="3-1", always=True, rng=4, progress=False)
    st = {"iterations": 100, **SMALL}
    blind = attack_model(model, x, y, attack="inverting_gradients", attack_settings=st, **common)
    told = attack_model(model, x, y, attack="ats-adaptive", attack_settings=st, **common)  # the clients' policy
    wrong = attack_model(
        model, x, y, attack="ats-adaptive", attack_settings={**st, "policy": "7-1", "always": True}, **common
    )
    b, t, w = summary(blind), summary(told), summary(wrong)
    assert told["candidates"][0].startswith("3:translateX") and wrong["candidates"][0].startswith("7:translateY")
    assert t["psnr"] > b["psnr"] + 3 and t["psnr"] > w["psnr"] + 2, (b, t, w)
    assert t["psnr_kept"] > b["psnr_kept"] + 3 and t["ssim_kept"] > b["ssim_kept"]
    assert 0.3 < t["kept"] < 0.8 and told["kept"].shape == (4, 1, 16, 16)
