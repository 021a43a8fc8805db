"""ATS: the transformation library and policies, checked against PIL (the library the ATS code runs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance, ImageOps

from masquerade.ats.policies import (
    MAGNITUDES,
    OPERATIONS,
    SUB_POLICIES,
    apply_operation,
    format_policy,
    parse_policy,
)
from masquerade.errors import InputError, NotInvertibleError
from masquerade.registry import create_scheme


def _images(n: int = 6, seed: int = 0, size: int = 32) -> torch.Tensor:
    g = np.random.default_rng(seed)
    # smooth-ish colour images with full-range extremes, so every operation has something to do
    base = g.random((n, 3, size // 4, size // 4))
    x = torch.nn.functional.interpolate(torch.from_numpy(base).float(), size=(size, size), mode="bilinear")
    x = x + torch.from_numpy(g.random((n, 3, size, size))).float() * 0.2
    x = (x - x.amin()) / (x.amax() - x.amin())
    return torch.round(x * 255) / 255


def _pil(op: str, img: Image.Image, m: float, s: int) -> Image.Image:
    """The ATS code's definitions, on PIL images (the reference)."""
    if op == "shearX":
        return img.transform(img.size, Image.AFFINE, (1, m * s, 0, 0, 1, 0), Image.BICUBIC, fillcolor=(0, 0, 0))
    if op == "shearY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, m * s, 1, 0), Image.BICUBIC, fillcolor=(0, 0, 0))
    if op == "translateX":
        return img.transform(img.size, Image.AFFINE, (1, 0, m * img.size[0] * s, 0, 1, 0), fillcolor=(0, 0, 0))
    if op == "translateY":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, m * img.size[1] * s), fillcolor=(0, 0, 0))
    if op == "rotate":
        rot = img.convert("RGBA").rotate(m)
        return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)
    enhance = {
        "color": ImageEnhance.Color,
        "contrast": ImageEnhance.Contrast,
        "sharpness": ImageEnhance.Sharpness,
        "brightness": ImageEnhance.Brightness,
    }
    if op in enhance:
        return enhance[op](img).enhance(1 + m * s)
    if op == "posterize":
        return ImageOps.posterize(img, int(m))
    if op == "solarize":
        return ImageOps.solarize(img, m)
    return {"autocontrast": ImageOps.autocontrast, "equalize": ImageOps.equalize, "invert": ImageOps.invert}[op](img)


def test_library_matches_the_ats_code() -> None:
    assert len(OPERATIONS) == 16
    assert all(len(MAGNITUDES[op]) == 10 for op in OPERATIONS)
    assert len(SUB_POLICIES) == 50  # the ATS policy.py list (batch_generate.py draws 0-50: off by one)
    assert SUB_POLICIES[3] == (0.3, "translateX", 9) and SUB_POLICIES[43] == (0.7, "translateY", 3)
    assert list(MAGNITUDES["posterize"]) == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
    assert MAGNITUDES["translateX"][-1] == pytest.approx(150 / 331)


@pytest.mark.parametrize("op", OPERATIONS[:14])
def test_operations_match_pil(op: str) -> None:
    x = _images(6)
    u8 = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for level in (1, 5, 9):
        m = float(MAGNITUDES[op][level])
        for s in (1, -1):
            ref = np.stack([np.asarray(_pil(op, Image.fromarray(im), m, s)) for im in u8]).astype(int)
            out = apply_operation(x, op, m, sign=torch.full((6,), s))
            got = (out.permute(0, 2, 3, 1).numpy() * 255).round().astype(int)
            diff = np.abs(got - ref)
            if op in ("shearX", "shearY"):
                # PIL's own bicubic (a = -1, clamped taps, truncation), reproduced: every pixel equal
                assert diff.max() == 0, (op, level, s, diff.max())
            else:
                # PIL rounds its blends through float32; we may differ by one level on a few pixels
                assert diff.max() <= 1 and (diff == 0).mean() > 0.98, (op, level, s, diff.max())


def test_parse_policy() -> None:
    assert parse_policy("3-1-7") == ((3, 1, 7),)
    assert parse_policy("3-1-7+43-18-18") == ((3, 1, 7), (43, 18, 18))
    assert parse_policy("") == () == parse_policy("none")
    assert format_policy(parse_policy(" 3-1-7 + 43-18-18 ")) == "3-1-7+43-18-18"
    for bad in ("3--1", "3-1-", "a-b", "50", "3-1-7+", "-1"):
        with pytest.raises(InputError):
            parse_policy(bad)


def test_every_sub_policy_keeps_shape_range_and_is_deterministic() -> None:
    x = _images(5, seed=1)
    everything = "-".join(str(i) for i in range(len(SUB_POLICIES)))
    sch = create_scheme("ats", policy=everything, always=True)
    z1 = sch.encode(x, sch.keygen(5, rng=7))
    z2 = sch.encode(x, sch.keygen(5, rng=7))
    z3 = sch.encode(x, sch.keygen(5, rng=8))
    assert z1.shape == x.shape and z1.dtype == torch.float32
    assert float(z1.min()) >= 0 and float(z1.max()) <= 1
    assert torch.equal(z1, z2) and not torch.equal(z1, z3)
    assert torch.equal(z1, torch.round(z1 * 255) / 255)  # on the 8-bit grid, as PIL images are


@pytest.mark.parametrize("op", ["zoom", "warp"])
def test_zoom_and_warp(op: str) -> None:
    from masquerade.ats.policies import _draw_extra

    x = _images(4, seed=2)
    g = np.random.default_rng(0)
    extra, seeds = _draw_extra(op, g, 4, 32, 32)
    a = apply_operation(x, op, 0.0, extra=torch.from_numpy(extra), seeds=torch.from_numpy(seeds))
    b = apply_operation(x, op, 0.0, extra=torch.from_numpy(extra), seeds=torch.from_numpy(seeds))
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert (a - x).abs().mean() > 0.02  # it does transform
    if op == "warp":  # identity corners give back the image (up to the 8-bit grid)
        ident = torch.tensor([[0, 0, 31, 0, 31, 31, 0, 31]], dtype=torch.float64).repeat(4, 1)
        assert (apply_operation(x, op, 0.0, extra=ident) - x).abs().max() < 1e-5


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), policy=st.lists(st.integers(-1, 49), min_size=1, max_size=3), always=st.booleans())
def test_random_policies_deterministic_and_in_range(seed: int, policy: list[int], always: bool) -> None:
    text = "-".join(str(p) for p in policy if p >= 0) or "none"
    sch = create_scheme("ats", policy=text, always=always)
    x = _images(3, seed=seed % 100)
    key = sch.keygen(3, rng=seed)
    z = sch.encode(x, key)
    assert z.shape == x.shape and float(z.min()) >= 0 and float(z.max()) <= 1
    assert torch.equal(z, sch.encode(x, sch.keygen(3, rng=seed)))


def test_probabilities_and_hybrids() -> None:
    n = 4000
    # sub-policy 3 fires with probability 0.3; 29 never (probability 0.0)
    key = create_scheme("ats", policy="3-29").keygen(n, rng=0)
    assert abs((key.steps[:, 0] == 3).mean() - 0.3) < 0.03
    assert (key.steps[:, 1] == -1).all()
    key = create_scheme("ats", policy="3-29", always=True).keygen(n, rng=0)
    assert (key.steps[:, 0] == 3).all() and (key.steps[:, 1] == 29).all()
    # a hybrid: each image takes one of the lists, about evenly
    key = create_scheme("ats", policy="3-1-7+43-18-18", always=True).keygen(n, rng=1)
    first = (key.steps == [3, 1, 7]).all(1)
    second = (key.steps == [43, 18, 18]).all(1)
    assert (first ^ second).all() and abs(first.mean() - 0.5) < 0.03


def test_scheme_contract() -> None:
    sch = create_scheme("ats", policy="3-1-7")
    x = _images(2)
    key = sch.keygen(2, rng=0)
    with pytest.raises(NotInvertibleError):
        sch.decode(sch.encode(x, key), key)
    with pytest.raises(InputError):
        sch.encode(_images(3), key)  # key drawn for 2 images
    with pytest.raises(InputError):
        sch.encode(x, create_scheme("identity").keygen(2))
    with pytest.raises(InputError):
        create_scheme("ats", policy="99")
    assert torch.equal(
        create_scheme("ats", policy="none").encode(x, create_scheme("ats", policy="none").keygen(2, rng=0)), x
    )


def test_key_files_round_trip(tmp_path) -> None:
    from masquerade.keys import load_key, save_key

    sch = create_scheme("ats", policy="3-1-7+43-18-18")
    x = _images(4)
    key = sch.keygen(4, rng=3)
    save_key(tmp_path / "k.safetensors", key)
    back = load_key(tmp_path / "k.safetensors")
    assert torch.equal(sch.encode(x, back), sch.encode(x, key))
