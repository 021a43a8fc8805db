from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import masquerade as mq
from masquerade.disguise.scheme import DisguiseKey, from_blocks, to_blocks
from masquerade.errors import InputError
from masquerade.keys import load_key, save_key
from masquerade.metrics import ssim
from masquerade.registry import run_attack


def images(n: int, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, c, h, w), generator=g) / 255.0).float()


CONFIGS = [
    dict(),
    dict(permute=False),
    dict(transform="none"),
    dict(transform="aes"),
    dict(transform="aes", aes_mode="ctr"),
    dict(key_scope="image"),
    dict(key_scope="image", transform="aes"),
    dict(key_scope="image", transform="aes", aes_mode="ctr"),
    dict(block=8, transform="aes"),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_round_trip_and_key_reuse(cfg: dict, tmp_path) -> None:
    s = mq.create_scheme("disguise", **cfg)
    x = images(6)
    key = s.keygen(6, rng=3, shape=(3, 16, 16))
    z = s.encode(x, key)
    assert z.shape == x.shape and z.dtype == torch.float32
    back = s.decode(z, key)
    if cfg.get("transform") in ("aes", "none"):
        assert torch.equal(back, x)  # exact
    else:
        assert (back - x).abs().max() <= 1e-5
    assert torch.equal(s.encode(x, key), z)  # the same key gives the same bytes
    loaded = load_key(save_key(tmp_path / "k.safetensors", key), expect="disguise")
    assert isinstance(loaded, DisguiseKey) and loaded == key and torch.equal(s.encode(x, loaded), z)
    if cfg.get("transform") != "none" or cfg.get("permute", True):
        assert not torch.equal(z, x)


@settings(max_examples=20, deadline=None)
@given(
    b=st.sampled_from([1, 2, 4, 8]),
    gh=st.integers(1, 4),
    gw=st.integers(1, 4),
    c=st.sampled_from([1, 3]),
    seed=st.integers(0, 1000),
    aes=st.booleans(),
)
def test_round_trip_over_shapes(b: int, gh: int, gw: int, c: int, seed: int, aes: bool) -> None:
    if aes and b not in (4, 8):
        return
    s = mq.create_scheme("disguise", block=b, transform="aes" if aes else "rmt")
    x = images(3, c, gh * b, gw * b, seed)
    key = s.keygen(3, rng=seed, shape=(c, gh * b, gw * b))
    back = s.decode(s.encode(x, key), key)
    assert (back - x).abs().max() <= (0 if aes else 1e-5)
    blocks = to_blocks(x.numpy(), b)
    assert np.array_equal(from_blocks(blocks, gh * b, gw * b, b), x.numpy())


def test_rmt_matrices_are_orthogonal_and_keys_deterministic() -> None:
    s = mq.create_scheme("disguise")
    key = s.keygen(0, rng=5)
    eye = np.eye(16)
    assert np.allclose(np.einsum("mij,mkj->mik", key.rmt, key.rmt), eye, atol=1e-12)
    assert key.rmt.shape == (64, 16, 16) and sorted(key.perm.tolist()) == list(range(64))
    assert s.keygen(0, rng=5) == key and s.keygen(0, rng=6) != key
    # Haar: the first entry of Q is symmetric around 0 (no sign bias from the QR convention)
    big = s.keygen(0, rng=7, shape=(1, 256, 256)).rmt
    assert abs(np.mean(big[:, 0, 0] > 0) - 0.5) < 0.1


def test_wrong_key_does_not_decode() -> None:
    for cfg in (dict(), dict(transform="aes")):
        s = mq.create_scheme("disguise", **cfg)
        x = images(4)
        z = s.encode(x, s.keygen(0, rng=1, shape=(3, 16, 16)))
        wrong = s.decode(z, s.keygen(0, rng=2, shape=(3, 16, 16)))
        assert (wrong - x).abs().mean() > 0.1


def test_aes_keys_never_come_from_a_seed_unless_asked() -> None:
    s = mq.create_scheme("disguise", transform="aes")
    assert s.keygen(0, rng=1).aes_key != s.keygen(0, rng=1).aes_key
    r = mq.create_scheme("disguise", transform="aes", seeded_aes_key=True)
    assert r.keygen(0, rng=1).aes_key == r.keygen(0, rng=1).aes_key


def test_ctr_keys_extend_to_new_images() -> None:
    s = mq.create_scheme("disguise", transform="aes", aes_mode="ctr")
    key = s.keygen(4, rng=0, shape=(3, 16, 16))
    with pytest.raises(InputError, match="drawn for 4 images"):
        s.encode(images(5), key)
    test_key = s.keygen(5, rng=1, shape=(3, 16, 16), base=key)
    assert test_key.aes_key == key.aes_key and not np.array_equal(test_key.nonces[:4], key.nonces)
    x = images(5)
    assert torch.equal(s.decode(s.encode(x, test_key), test_key), x)


def test_bad_settings() -> None:
    with pytest.raises(InputError, match="refuse"):
        mq.create_scheme("disguise", block=3, transform="aes")
    with pytest.raises(InputError, match="noise"):
        mq.create_scheme("disguise", transform="aes", noise=0.1)
    with pytest.raises(InputError, match="divide"):
        mq.create_scheme("disguise", block=5).keygen(0, rng=0, shape=(3, 32, 32))
    s = mq.create_scheme("disguise")
    with pytest.raises(InputError, match="other settings"):
        mq.create_scheme("disguise", permute=False).encode(images(2), s.keygen(0, rng=0, shape=(3, 16, 16)))


def test_least_squares_attack_needs_enough_pairs() -> None:
    s = mq.create_scheme("disguise")
    x = images(60, seed=1)
    key = s.keygen(0, rng=2, shape=(3, 16, 16))
    z = s.encode(x, key)
    attack = mq.create_attack("disguise-known-plaintext")
    good = run_attack(attack, encodings=z[20:], known_pairs=(x[:6], z[:6]))  # 6 pairs × 3 channels ≥ 16 unknowns
    assert np.array_equal(good.recovered["perm"], key.perm)
    assert np.allclose(good.recovered["matrices"], key.rmt, atol=1e-6)
    assert (good.reconstructions - x[20:]).abs().max() < 1e-4
    few = run_attack(attack, encodings=z[20:], known_pairs=(x[:2], z[:2]))
    assert (few.reconstructions - x[20:]).abs().mean() > 0.05
    with pytest.raises(InputError, match="threat model does not give it"):
        run_attack(attack, encodings=z, known_pairs=(x, z), key=key)


def test_least_squares_attack_with_noise_degrades_gracefully() -> None:
    s = mq.create_scheme("disguise", noise=0.05)
    x = images(80, seed=2)
    key = s.keygen(0, rng=2, shape=(3, 16, 16))
    z = s.encode(x, key, rng=0)
    r = run_attack(mq.create_attack("disguise-known-plaintext"), encodings=z[40:], known_pairs=(x[:40], z[:40]))
    err = (r.reconstructions - x[40:]).abs().mean()
    assert 0.005 < err < 0.1


def _palette_images(n: int, seed: int) -> torch.Tensor:
    """Images tiled from a small palette of 4×4 blocks, so ECB ciphertexts repeat as they do on flat regions."""
    g = np.random.default_rng(seed)
    palette = g.integers(0, 256, (12, 3, 4, 4), dtype=np.uint8)
    pick = g.integers(0, 12, (n, 4, 4))
    tiles = palette[pick]  # n×4×4×3×4×4
    imgs = tiles.transpose(0, 3, 1, 4, 2, 5).reshape(n, 3, 16, 16)
    return torch.from_numpy(imgs).float() / 255.0


def test_ecb_codebook_succeeds_and_ctr_defeats_it() -> None:
    x = _palette_images(40, 0)
    ecb = mq.create_scheme("disguise", transform="aes")
    key = ecb.keygen(0, rng=0, shape=(3, 16, 16))
    z = ecb.encode(x, key)
    attack = mq.create_attack("aes-ecb-codebook")
    r = run_attack(attack, encodings=z[20:], known_pairs=(x[:20], z[:20]))
    assert r.metrics["decoded_share"] > 0.95
    assert (r.reconstructions - x[20:]).abs().max() < 1e-6 or (r.reconstructions - x[20:]).abs().mean() < 0.02
    ctr = mq.create_scheme("disguise", transform="aes", aes_mode="ctr")
    ck = ctr.keygen(40, rng=0, shape=(3, 16, 16))
    zc = ctr.encode(x, ck)
    rc = run_attack(attack, encodings=zc[20:], known_pairs=(x[:20], zc[:20]))
    assert rc.metrics["decoded_share"] < 0.01


def _ecb_digits(n_aux: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """60 digits under one AES-ECB key (the first 20 the known pairs), ``n_aux`` auxiliary digits, and what level 3
    gives the attack. Digits: their backgrounds repeat (the codebook decodes them), their strokes do not."""
    digits = mq.load_images("bundled:digits", size=16).to_rgb().to_tensor()
    x, aux = digits[:60], digits[60 : 60 + n_aux]
    ecb = mq.create_scheme("disguise", transform="aes", seeded_aes_key=True)
    z = ecb.encode(x, ecb.keygen(0, rng=0, shape=(3, 16, 16)))
    return x, aux, {"encodings": z[20:], "known_pairs": (x[:20], z[:20])}


def test_ecb_codebook_fills_what_it_lacks_from_the_nearest_auxiliary_images() -> None:
    x, aux, given = _ecb_digits(600)
    attack = mq.create_attack("aes-ecb-codebook")
    alone = run_attack(attack, **given)
    helped = run_attack(attack, auxiliary=aux, **given)
    noise = run_attack(attack, auxiliary=torch.rand_like(aux), **given)
    from masquerade.metrics import ssim

    s = {
        k: float(ssim(r.reconstructions, x[20:], data_range=1.0).mean())
        for k, r in (("alone", alone), ("helped", helped), ("noise", noise))
    }
    assert s["helped"] > s["alone"] + 0.05 and s["helped"] > s["noise"] + 0.05, s
    # the decoded units are kept as decoded: only the unknown ones change
    same = alone.reconstructions == helped.reconstructions
    assert same.float().mean() >= helped.metrics["decoded_share"] - 1e-6
    assert helped.metrics["filled_from_auxiliary"] and not alone.metrics["filled_from_auxiliary"]
    with pytest.raises(InputError, match="auxiliary images are"):
        run_attack(attack, auxiliary=aux[:, :, :8], **given)


def test_ecb_codebook_network_fill_keeps_decoded_units_and_learns_what_the_auxiliary_images_show() -> None:
    x, aux, given = _ecb_digits(300)
    from masquerade.metrics import ssim

    def score(r: Any) -> float:
        return float(ssim(r.reconstructions, x[20:], data_range=1.0).mean())

    guess = run_attack(mq.create_attack("aes-ecb-codebook"), **given)
    net = mq.create_attack("aes-ecb-codebook", decoder_steps=60, decoder_width=8)
    helped = run_attack(net, auxiliary=aux, rng=0, **given)
    noise = run_attack(net, auxiliary=torch.rand_like(aux), rng=0, **given)
    assert helped.metrics["filled_by"] == "network" and guess.metrics["filled_by"] == "guess"
    assert score(helped) > score(guess) + 0.05 and score(helped) > score(noise) + 0.05, (score(helped), score(guess))
    same = guess.reconstructions == helped.reconstructions
    assert same.float().mean() >= helped.metrics["decoded_share"] - 1e-6  # decoded units pass through
    again = run_attack(net, auxiliary=aux, rng=0, **given)
    assert torch.equal(again.reconstructions, helped.reconstructions)  # seeded: the same bits
    with pytest.raises(InputError, match="decoder_steps"):
        mq.create_attack("aes-ecb-codebook", decoder_steps=-1)


def test_ecb_codebook_picks_auxiliary_images_whose_unknown_units_fall_where_the_targets_do() -> None:
    # blank auxiliary images agree with every target on its decoded (blank) pixels; only those with a mark where the
    # target's units are unknown look alike through the codebook, and they are the ones to fill from
    g = torch.Generator().manual_seed(0)

    def marked(n: int) -> torch.Tensor:
        x = torch.zeros(n, 3, 16, 16)
        x[:, :, :4, :4] = (0.6 + 0.4 * torch.rand(n, 1, 4, 4, generator=g)).expand(n, 3, 4, 4)
        return x

    pairs = torch.zeros(6, 3, 16, 16)  # blank pairs: the codebook knows the blank unit only
    targets = marked(4)
    aux = torch.cat([torch.zeros(30, 3, 16, 16), marked(10)])
    ecb = mq.create_scheme("disguise", transform="aes", seeded_aes_key=True, permute=False)
    z = ecb.encode(torch.cat([pairs, targets]), ecb.keygen(0, rng=0, shape=(3, 16, 16)))
    r = run_attack(mq.create_attack("aes-ecb-codebook"), encodings=z[6:], known_pairs=(pairs, z[:6]), auxiliary=aux)
    corner = r.reconstructions[:, :, :4, :4]
    assert float(corner.min()) >= 0.6 and float(r.reconstructions[:, :, 4:, 4:].abs().max()) == 0


def test_moment_matching_estimates_rmt_without_pairs() -> None:
    s = mq.create_scheme("disguise", permute=False)
    g = np.random.default_rng(0)
    # smooth images: strongly correlated pixels, like natural blocks
    base = torch.from_numpy(g.random((400, 3, 4, 4))).float()
    x = torch.nn.functional.interpolate(base, size=(16, 16), mode="bilinear", align_corners=False)
    key = s.keygen(0, rng=1, shape=(3, 16, 16))
    z = s.encode(x[:200], key)
    r = run_attack(mq.create_attack("disguise-moments"), encodings=z, auxiliary=x[200:])
    err = (r.reconstructions - x[:200]).abs().mean()
    baseline = (z.clamp(0, 1) - x[:200]).abs().mean()
    assert err < 0.5 * baseline


@pytest.mark.parametrize("mode", ["ecb", "ctr"])
@pytest.mark.parametrize("permute", [True, False])
def test_fused_aes_path_equals_the_block_by_block_reference(mode: str, permute: bool) -> None:
    s = mq.create_scheme("disguise", transform="aes", aes_mode=mode, permute=permute)
    x = images(7)
    key = s.keygen(7, rng=0, shape=(3, 16, 16))
    z = s.encode(x, key)
    # reference: quantise, encrypt each position's blocks in place, then permute the positions
    blocks = s._aes_apply(to_blocks(np.round(x.numpy() * 255).astype(np.uint8), 4), key, decrypt=False)
    if permute:
        blocks = blocks[:, :, key.perm]
    ref = from_blocks(np.ascontiguousarray(blocks), 16, 16, 4).astype(np.float32) / 255.0
    assert np.array_equal(ref, z.numpy())


# -- level 2: the alignment attack --------------------------------------------------------------------------------


def _digits(n: int) -> torch.Tensor:
    """``n`` of the digits our dependencies ship, all classes mixed (the set is sorted by class)."""
    from masquerade.data import load_images

    ds = load_images("bundled:mnist")
    return ds.select(np.random.default_rng(0).permutation(len(ds))[:n]).to_tensor()


def test_match_positions_finds_a_planted_permutation_and_is_a_swap_local_optimum() -> None:
    from masquerade.disguise.distribution import match_positions

    g = np.random.default_rng(0)
    m = 12
    unary = g.random((m, 4))
    pair = [(lambda a: a + a.T)(g.random((m, m))) for _ in range(2)]
    perm = g.permutation(m)
    # the disguised side: position j shows plain position perm[j]
    found = match_positions(unary[perm], [p[np.ix_(perm, perm)] for p in pair], unary, pair)
    assert np.array_equal(found, perm)
    # noisy statistics: whatever it returns, no swap of two positions lowers the objective (slow reference)
    noisy = [p[np.ix_(perm, perm)] + 0.3 * (lambda a: a + a.T)(g.random((m, m))) for p in pair]
    uz = unary[perm] + 0.3 * g.random((m, 4))
    found = match_positions(uz, noisy, unary, pair)

    def objective(q: np.ndarray) -> float:
        return float(
            ((uz - unary[q]) ** 2).sum() + sum(((a - b[np.ix_(q, q)]) ** 2).sum() for a, b in zip(noisy, pair))
        )

    best = objective(found)
    for i in range(m):
        for j in range(i + 1, m):
            q = found.copy()
            q[i], q[j] = q[j], q[i]
            assert objective(q) >= best - 1e-9


def test_alignment_recovers_permutation_and_matrices_from_the_distribution() -> None:
    x = _digits(1300)
    s = mq.create_scheme("disguise")
    key = s.keygen(0, rng=3, shape=tuple(x.shape[1:]))
    z = s.encode(x[:1000], key)
    r = run_attack(mq.create_attack("disguise-alignment"), encodings=z, auxiliary=x[1000:])
    q = ssim(x[:1000], r.reconstructions, data_range=1.0)
    assert float(q.mean()) > 0.85
    # the positions that carry the digits come back where they were; near-blank ones are interchangeable
    energy = (to_blocks(x[:1000].numpy(), 4) ** 2).sum((0, 1, 3))[key.perm]  # per disguised position
    wrong = r.recovered["perm"] != key.perm
    assert energy[wrong].sum() < 0.05 * energy.sum() and wrong.mean() < 0.3
    # the recovered key is what decodes: a random key's matrices and order decode to noise
    other = s.keygen(0, rng=4, shape=tuple(x.shape[1:]))
    assert float(ssim(x[:1000], s.decode(z, other).clamp(0, 1), data_range=1.0).mean()) < 0.3
    # the old baseline (moments pooled over positions, blocks left in place) does not get there
    base = run_attack(mq.create_attack("disguise-moments"), encodings=z, auxiliary=x[1000:])
    assert float(ssim(x[:1000], base.reconstructions, data_range=1.0).mean()) < 0.3


def test_alignment_fails_against_the_wrong_distribution_and_refuses_bad_input() -> None:
    x = _digits(1000)
    s = mq.create_scheme("disguise")
    z = s.encode(x[:700], s.keygen(0, rng=3, shape=tuple(x.shape[1:])))
    noise = torch.rand(300, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    r = run_attack(mq.create_attack("disguise-alignment"), encodings=z, auxiliary=noise)
    assert float(ssim(x[:700], r.reconstructions, data_range=1.0).mean()) < 0.5
    attack = mq.create_attack("disguise-alignment")
    with pytest.raises(InputError, match="auxiliary images are"):
        run_attack(attack, encodings=z, auxiliary=x[700:, :, :24, :24])
    with pytest.raises(InputError, match="at least 2"):
        run_attack(attack, encodings=z[:1], auxiliary=x[700:])
    with pytest.raises(InputError, match="finite"):
        run_attack(attack, encodings=z * float("nan"), auxiliary=x[700:])
    with pytest.raises(InputError, match="too large"):
        run_attack(
            mq.create_attack("disguise-alignment", block=2),
            encodings=torch.zeros(2, 1, 192, 192),
            auxiliary=torch.zeros(2, 1, 192, 192),
        )
    with pytest.raises(InputError, match="transform"):
        mq.create_attack("disguise-alignment", transform="aes")


def test_alignment_recovers_a_permutation_alone() -> None:
    x = _digits(1300)
    s = mq.create_scheme("disguise", transform="none")
    key = s.keygen(0, rng=5, shape=tuple(x.shape[1:]))
    z = s.encode(x[:1000], key)
    attack = mq.create_attack("disguise-alignment", **type(mq.create_attack("disguise-alignment")).settings_against(s))
    r = run_attack(attack, encodings=z, auxiliary=x[1000:])
    assert float(ssim(x[:1000], r.reconstructions, data_range=1.0).mean()) > 0.9


def _positional_palette(n: int, seed: int, palette_seed: int = 0) -> torch.Tensor:
    """16×16 images of 4×4 blocks drawn from a palette of 12, each block position with its own odds (a Dirichlet
    draw fixed by ``palette_seed``): like natural data, where what repeats, and where, depends on the position."""
    pg = np.random.default_rng(palette_seed)
    palette = pg.integers(0, 256, (12, 3, 4, 4), dtype=np.uint8)
    odds = pg.dirichlet(np.full(12, 0.4), size=16)  # position -> palette odds
    g = np.random.default_rng(seed)
    u = g.random((n, 16, 1))
    pick = (u > np.cumsum(odds, 1)[None]).sum(2).clip(0, 11).reshape(n, 4, 4)
    tiles = palette[pick]
    return torch.from_numpy(tiles.transpose(0, 3, 1, 4, 2, 5).reshape(n, 3, 16, 16)).float() / 255.0


def test_ecb_frequency_reads_the_key_from_the_release_and_the_distribution_alone() -> None:
    x = _positional_palette(600, 1)
    aux = _positional_palette(300, 2)  # other images of the same distribution: no pairs
    ecb = mq.create_scheme("disguise", transform="aes", seeded_aes_key=True)
    key = ecb.keygen(0, rng=3, shape=(3, 16, 16))
    z = ecb.encode(x, key)
    attack = mq.create_attack("aes-ecb-frequency")
    r = run_attack(attack, encodings=z, auxiliary=aux)
    assert np.array_equal(r.recovered["perm"], key.perm)
    assert r.metrics["decoded_share"] > 0.99 and r.metrics["codebook_size"] == 36  # 12 tiles × 3 channels
    assert float((r.reconstructions - x).abs().max()) < 1e-6  # every unit decoded exactly
    # CTR never repeats a keystream: nothing repeats, nothing is decoded
    ctr = mq.create_scheme("disguise", transform="aes", aes_mode="ctr")
    zc = ctr.encode(x, ctr.keygen(len(x), rng=3, shape=(3, 16, 16)))
    assert run_attack(attack, encodings=zc, auxiliary=aux).metrics["decoded_share"] == 0
    # auxiliary images of another distribution match nothing: what is decoded is not the targets
    other = run_attack(attack, encodings=z, auxiliary=_positional_palette(300, 2, palette_seed=1))
    assert float((other.reconstructions - x).abs().mean()) > 0.1


def test_ecb_frequency_on_digits_decodes_the_background_and_fills_the_strokes_from_auxiliary_images() -> None:
    digits = mq.load_images("bundled:mnist").to_tensor()
    pick = np.random.default_rng(0).permutation(len(digits))  # the bundled digits are sorted by class
    x, aux = digits[pick[:600]], digits[pick[600:900]]
    ecb = mq.create_scheme("disguise", transform="aes", seeded_aes_key=True)
    z = ecb.encode(x, ecb.keygen(0, rng=0, shape=(1, 28, 28)))
    blind = run_attack(mq.create_attack("as-is"), encodings=z[:40])
    alone = run_attack(mq.create_attack("aes-ecb-frequency", neighbours=0), encodings=z, auxiliary=aux)
    filled = run_attack(mq.create_attack("aes-ecb-frequency"), encodings=z, auxiliary=aux)
    assert alone.metrics["decoded_share"] > 0.5 and alone.metrics["filled_by"] == "guess"
    # what it decodes is right: at least the decoded share of the pixels equal the private image's exactly
    assert float((alone.reconstructions == x).float().mean()) >= alone.metrics["decoded_share"] - 1e-6

    def score(r: Any) -> float:
        return float(ssim(r.reconstructions[:40], x[:40], data_range=1.0).mean())

    assert score(filled) > score(alone) + 0.1 > score(blind) + 0.2, (score(filled), score(alone), score(blind))
    same = alone.reconstructions == filled.reconstructions  # decoded units are kept; only the others change
    assert same.float().mean() >= filled.metrics["decoded_share"] - 1e-6


@pytest.mark.parametrize(
    "bad",
    [
        dict(alpha=0),
        dict(alpha=1.5),
        dict(min_count=0),
        dict(vocabulary=True),
        dict(rounds=-1),
        dict(block=0),
        dict(unknown="mean"),
    ],
)
def test_ecb_frequency_refuses_bad_settings(bad: dict) -> None:
    with pytest.raises(InputError, match="aes-ecb-frequency"):
        mq.create_attack("aes-ecb-frequency", **bad)


def test_ecb_frequency_refuses_auxiliary_images_of_another_shape() -> None:
    z = torch.rand(10, 3, 16, 16)
    with pytest.raises(InputError, match="auxiliary images are"):
        run_attack(mq.create_attack("aes-ecb-frequency"), encodings=z, auxiliary=torch.rand(5, 3, 8, 8))
    with pytest.raises(InputError, match="no auxiliary images"):
        run_attack(mq.create_attack("aes-ecb-frequency"), encodings=z, auxiliary=torch.rand(0, 3, 16, 16))
    with pytest.raises(InputError, match="16 bytes"):
        run_attack(mq.create_attack("aes-ecb-frequency", block=2), encodings=z, auxiliary=torch.rand(5, 3, 16, 16))
