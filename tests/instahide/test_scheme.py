from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import masquerade as mq
from masquerade.errors import InputError
from masquerade.instahide.scheme import InstaHideKey, sample_coefficients
from masquerade.keys import load_key, save_key


def official_loop(n: int, k: int, upper: float, dom: float | None, rng: np.random.RandomState) -> np.ndarray:
    """The official per-row sampler of train_inside.py / train_cross.py, written as a slow loop."""
    lams = rng.normal(0, 1, size=(n, k))
    for i in range(n):
        lams[i] = np.abs(lams[i]) / np.sum(np.abs(lams[i]))
        if k > 1:
            while lams[i].max() > upper or (dom is not None and lams[i][0] + lams[i][1] < dom):
                lams[i] = rng.normal(0, 1, size=(1, k))
                lams[i] = np.abs(lams[i]) / np.sum(np.abs(lams[i]))
    return lams


@pytest.mark.parametrize("k, dom", [(4, None), (6, 0.3), (2, 0.3)])
def test_coefficient_sampler_matches_the_official_loop(k: int, dom: float | None) -> None:
    n = 6000
    ours = sample_coefficients(n, k, upper=0.65, dom=dom or 0.0, private=2 if dom else 0, rng=1)
    ref = official_loop(n, k, 0.65, dom, np.random.RandomState(2))
    assert np.allclose(ours.sum(1), 1) and ours.max() <= 0.65 + 1e-12 and ours.min() >= 0
    if dom:
        assert (ours[:, :2].sum(1) >= dom - 1e-12).all()
    for j in range(k):  # same marginal distribution for every slot (two-sample KS test)
        assert stats.ks_2samp(ours[:, j], ref[:, j]).pvalue > 1e-3, j
    assert stats.ks_2samp(ours.max(1), ref.max(1)).pvalue > 1e-3
    # and (for k > 2) it is not a bounded flat Dirichlet, which a careless port might use instead
    g = np.random.default_rng(3)
    d = g.dirichlet(np.ones(k), size=4 * n)
    ok = d.max(1) <= 0.65
    if dom:
        ok &= d[:, :2].sum(1) >= dom
    if k > 2:
        assert stats.ks_2samp(ours[:, 0], d[ok][:n, 0]).pvalue < 1e-3


def test_partner_structure_and_distinctness() -> None:
    s = mq.create_scheme("instahide", k=4)
    key = s.keygen(500, rng=3)
    p = key.partners
    assert np.array_equal(p[:, 0], np.arange(500))
    for j in range(1, 4):  # every slot is a permutation of the private set
        assert np.array_equal(np.sort(p[:, j]), np.arange(500))
    assert all(len(set(row)) == 4 for row in p.tolist())  # distinct: never mixed with itself
    loose = mq.create_scheme("instahide", k=4, distinct=False)
    fixed_points = sum(int((loose.keygen(500, rng=seed).partners[:, 1] == np.arange(500)).sum()) for seed in range(20))
    assert fixed_points > 0  # the official behaviour can mix an image with itself


@pytest.mark.parametrize("k,group,n", [(4, 16, 500), (6, 12, 203), (2, 7, 50)])
def test_grouped_partners_stay_in_secret_groups_and_decode_by_blocks(k: int, group: int, n: int) -> None:
    s = mq.create_scheme("instahide", k=k, group=group)
    key = s.keygen(n, rng=3, shape=(3, 4, 4))
    p = key.partners
    assert np.array_equal(p[:, 0], np.arange(n))
    for j in range(1, k):  # each slot is still a permutation of the private set...
        assert np.array_equal(np.sort(p[:, j]), np.arange(n))
    assert all(len(set(row)) == k for row in p.tolist())
    # ...but mixes only inside groups of group or group + 1 images, which are not the consecutive indices
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    graph = csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), p.ravel())), shape=(n, n))
    count, comp = connected_components(graph, directed=True, connection="weak")
    sizes = np.bincount(comp)
    assert count >= n // group and sizes.max() <= group + 1  # k = 2: a group can split into cycles
    if k >= 4:
        assert count == n // group and set(sizes) <= {group, group + 1}
    assert not all(np.ptp(np.nonzero(comp == c)[0]) == sizes[c] - 1 for c in range(count))  # secret, not blocks
    x = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    z = s.encode(x, key)
    back = s.decode(z, key)
    cond = np.linalg.cond(_mixing_matrix(key, k))
    assert torch.allclose(back, x, atol=1e-6 * cond + 1e-5)
    assert (s.decode(z, s.keygen(n, rng=4, shape=(3, 4, 4))) - x).abs().mean() > 0.1  # another key: noise
    with pytest.raises(InputError, match="group"):
        mq.create_scheme("instahide", k=4, group=7)  # below 2p: nearly a Latin square, refused
    with pytest.raises(InputError, match="group"):
        mq.create_scheme("instahide", k=2, group=1, distinct=False)
    with pytest.raises(InputError, match="group"):
        mq.create_scheme("instahide", k=4, group=-1)


def test_grouped_partner_draws_are_uniform_inside_the_group() -> None:
    s = mq.create_scheme("instahide", k=2, group=8)
    meets = np.zeros((16, 16))
    for seed in range(400):
        p = s.keygen(16, rng=seed, shape=(1, 2, 2)).partners
        meets[np.arange(16), p[:, 1]] += 1
    # an image never meets itself, and meets each other image of the set about equally often over random groupings
    assert np.all(np.diag(meets) == 0)
    off = meets[~np.eye(16, dtype=bool)]
    assert off.min() > 0 and off.max() / off.mean() < 2.0


def test_cross_mode_public_slots_do_not_repeat_within_a_key() -> None:
    s = mq.create_scheme("instahide", k=6, mode="cross", private_per_mix=2)
    key = s.keygen(100, rng=0, pool_size=1000)
    pub = key.partners[:, 2:]
    assert pub.shape == (100, 4) and len(np.unique(pub)) == 400 and pub.max() < 1000
    small = s.keygen(100, rng=0, pool_size=50).partners[:, 2:]  # pool too small: each slot still uses every patch
    assert all(len(np.unique(small[:, j])) == 50 for j in range(4))


def test_mask_statistics_and_regeneration(tmp_path) -> None:
    s = mq.create_scheme("instahide", k=4)
    key = s.keygen(300, rng=9)
    signs = key.signs()
    assert set(np.unique(signs)) == {-1.0, 1.0}
    frac = (signs < 0).mean()
    assert abs(frac - 0.5) < 0.005
    # independent across pixels: neighbouring pixels agree half of the time
    agree = (signs[..., 1:] == signs[..., :-1]).mean()
    assert abs(agree - 0.5) < 0.005
    again = s.keygen(300, rng=9)
    assert again == key and again.fingerprint == key.fingerprint
    assert s.keygen(300, rng=10) != key
    x = torch.rand(300, 3, 32, 32)
    path = save_key(tmp_path / "k.safetensors", key)
    back = load_key(path, expect="instahide")
    assert isinstance(back, InstaHideKey) and back == key
    assert torch.equal(s.encode(x, back), s.encode(x, key))  # bit for bit


def slow_encode(x: torch.Tensor, key: InstaHideKey, public: torch.Tensor | None, scale, shift, p: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    signs = torch.from_numpy(key.signs())
    for i in range(key.n):
        acc = torch.zeros_like(x[0])
        for j in range(key.lam.shape[1]):
            t = int(j >= p)
            src = (public if t else x)[key.partners[i, j]]
            acc += float(key.lam[i, j]) * (
                src * torch.from_numpy(scale[t])[:, None, None] + torch.from_numpy(shift[t])[:, None, None]
            )
        out[i] = acc * signs[i]
    return out


@pytest.mark.parametrize(
    "settings",
    [
        dict(k=4),
        dict(k=6, mode="cross", private_per_mix=2),
        dict(k=4, mode="cross", pixel_scale="normalize"),
        dict(k=3, sign_flip=False, pixel_scale="[0,1]"),
    ],
)
def test_encode_equals_slow_reference_and_decodes(settings: dict) -> None:
    s = mq.create_scheme("instahide", **settings)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 3, 8, 8, generator=g)
    pub = torch.rand(300, 3, 8, 8, generator=g)
    cross = settings.get("mode") == "cross"
    key = s.keygen(40, rng=5, shape=(3, 8, 8), pool_size=300 if cross else 0)
    z = s.encode(x, key, public=pub if cross else None)
    scale, shift = s.settings.affine(3)
    ref = slow_encode(x, key, pub, scale, shift, s.settings.p)
    assert torch.allclose(z, ref, atol=2e-6)
    back = s.decode(z, key, public=pub if cross else None)
    cond = np.linalg.cond(_mixing_matrix(key, s.settings.p))
    assert torch.allclose(back, x, atol=1e-6 * cond + 1e-5)


def _mixing_matrix(key: InstaHideKey, p: int) -> np.ndarray:
    m = np.zeros((key.n, key.n))
    for j in range(p):
        np.add.at(m, (np.arange(key.n), key.partners[:, j]), key.lam[:, j].astype(np.float64))
    return m


def test_wrong_key_does_not_decode() -> None:
    s = mq.create_scheme("instahide", k=4)
    x = torch.rand(60, 3, 8, 8)
    key = s.keygen(60, rng=1, shape=(3, 8, 8))
    z = s.encode(x, key)
    assert torch.allclose(s.decode(z, key), x, atol=1e-3)
    wrong = s.decode(z, s.keygen(60, rng=2, shape=(3, 8, 8)))
    assert (wrong - x).abs().mean() > 0.2


def test_label_mixing() -> None:
    s = mq.create_scheme("instahide", k=6, mode="cross", private_per_mix=2)
    key = s.keygen(50, rng=0, pool_size=500)
    y = np.arange(50) % 10
    soft = s.mix_labels(y, key, 10).numpy()
    expect = np.zeros((50, 10))
    for i in range(50):
        expect[i, y[key.partners[i, 0]]] += key.lam[i, 0]
        expect[i, y[key.partners[i, 1]]] += key.lam[i, 1]
    np.testing.assert_allclose(soft, expect, atol=1e-6)
    assert np.allclose(soft.sum(1), key.lam[:, :2].sum(1))  # not renormalised, as the official code
    renorm = mq.create_scheme("instahide", k=6, mode="cross", private_per_mix=2, renormalize_labels=True)
    assert np.allclose(renorm.mix_labels(y, renorm.keygen(50, rng=0, pool_size=500), 10).numpy().sum(1), 1)
    inside = mq.create_scheme("instahide", k=4)
    assert np.allclose(inside.mix_labels(y, inside.keygen(50, rng=0), 10).numpy().sum(1), 1)


def test_bad_settings_and_inputs() -> None:
    for bad in [
        dict(k=0),
        dict(mode="both"),
        dict(k=4, upper=0.2),
        dict(pixel_scale="[0,255]"),
        dict(k=4, private_per_mix=2),
        dict(k=4, mode="cross", private_per_mix=5),
    ]:
        with pytest.raises(InputError):
            mq.create_scheme("instahide", **bad)
    s = mq.create_scheme("instahide", k=4, mode="cross", private_per_mix=2)
    with pytest.raises(InputError, match="pool_size"):
        s.keygen(10, rng=0)
    key = s.keygen(10, rng=0, shape=(3, 8, 8), pool_size=20)
    with pytest.raises(InputError, match="public pool"):
        s.encode(torch.rand(10, 3, 8, 8), key)
    with pytest.raises(InputError, match="20 images"):
        s.encode(torch.rand(10, 3, 8, 8), key, public=torch.rand(19, 3, 8, 8))
    with pytest.raises(InputError, match="drawn for 10"):
        s.encode(torch.rand(11, 3, 8, 8), key, public=torch.rand(20, 3, 8, 8))
    with pytest.raises(InputError, match="other settings"):
        mq.create_scheme("instahide", k=4, mode="cross", private_per_mix=2, upper=0.6).encode(
            torch.rand(10, 3, 8, 8), key, public=torch.rand(20, 3, 8, 8)
        )
    with pytest.raises(InputError, match="'instahide' key"):
        s.encode(torch.rand(10, 3, 8, 8), mq.create_scheme("identity").keygen(10))


@pytest.mark.parametrize("settings", [dict(k=4), dict(k=4, mode="cross")])
def test_reveal_checks_every_grey_level_by_encoding_again(settings: dict) -> None:
    """The revealed grey levels re-encode to the encodings exactly when they are the images; one grey level off in
    one pixel of one image moves each of the p encodings it is mixed into past float32 rounding, and the check
    counts them."""
    from masquerade.workflows.protect import _pinned

    s = mq.create_scheme("instahide", **settings)
    g = np.random.default_rng(0)
    grey = torch.from_numpy(g.integers(0, 256, (50, 3, 8, 8), dtype=np.uint8))
    cross = settings.get("mode") == "cross"
    pub = torch.rand(80, 3, 8, 8, generator=torch.Generator().manual_seed(1)) if cross else None
    key = s.keygen(50, rng=4, shape=(3, 8, 8), pool_size=80 if cross else 0)
    z = s.encode(grey.float() / 255, key, public=pub)
    assert _pinned(s, key, z, grey, pub) == 1.0
    off = grey.clone()
    off[7, 1, 2, 3] += 1 if off[7, 1, 2, 3] < 255 else -1
    assert _pinned(s, key, z, off, pub) == pytest.approx(1 - s.settings.p / 50)
