from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import masquerade as mq
from masquerade.attacks.feature_inversion import popcount
from masquerade.errors import InputError
from masquerade.keys import load_key, save_key
from masquerade.registry import run_attack
from masquerade.shufflebits.scheme import ShuffleBitsLayer, shuffle_words_torch

SCOPES = ("fixed", "vector", "element")

# float32 classes: ±0, smallest/largest subnormal, 1.0, max finite, ±inf, quiet NaN with payload, signalling NaNs
SPECIAL = np.array(
    [
        0x00000000,
        0x80000000,
        0x00000001,
        0x007FFFFF,
        0x3F800000,
        0x7F7FFFFF,
        0x7F800000,
        0xFF800000,
        0x7FC12345,
        0x7F800001,
        0xFFBFFFFF,
        0xFFFFFFFF,
    ],
    dtype=np.uint32,
)


def slow_shuffle(words: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Independent reference: one number at a time through a 32-character binary string (MSB first), as the
    published code does."""
    out = []
    for w in np.asarray(words, dtype=np.uint32).ravel():
        s = format(int(w), "032b")
        out.append(int("".join(s[p] for p in perm), 2))
    return np.array(out, dtype=np.uint32).reshape(np.shape(words))


def _words(n: int, d: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    w = g.integers(0, 2**32, (n, d), dtype=np.uint64).astype(np.uint32)
    w.ravel()[: min(w.size, len(SPECIAL))] = SPECIAL[: min(w.size, len(SPECIAL))]
    return w


@pytest.mark.parametrize("scope", SCOPES)
def test_matches_the_slow_reference_and_round_trips_bit_for_bit(scope: str) -> None:
    w = _words(5, 7, 1)
    x = w.view(np.float32)
    s = mq.create_scheme("shufflebits", scope=scope)
    key = s.keygen(5, rng=2, shape=(7,))
    z = s.encode(x, key)
    assert z.dtype == np.float32 and z.shape == x.shape
    zw = z.view(np.uint32)
    if scope == "fixed":
        ref = slow_shuffle(w, key.perm[0])
    elif scope == "vector":
        ref = np.stack([slow_shuffle(w[i], key.perm[i]) for i in range(5)])
    else:
        ref = np.array([slow_shuffle(v, p) for v, p in zip(w.ravel(), key.perm)]).reshape(w.shape)
    np.testing.assert_array_equal(zw, ref)
    np.testing.assert_array_equal(s.decode(z, key).view(np.uint32), w)
    # torch on CPU (through numpy) and the pure-torch path (used on other devices) give the same bits
    zt = s.encode(torch.from_numpy(x.copy()), key)
    np.testing.assert_array_equal(zt.numpy().view(np.uint32), zw)
    pure = shuffle_words_torch(torch.from_numpy(w.view(np.int32).copy()), key.perm, scope)
    np.testing.assert_array_equal(pure.numpy().view(np.uint32), zw)
    np.testing.assert_array_equal(s.decode(zt, key).numpy().view(np.uint32), w)


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.integers(0, 2**32 - 1) | st.sampled_from(SPECIAL.tolist()), min_size=1, max_size=40),
    scope=st.sampled_from(SCOPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_any_bit_pattern(words: list[int], scope: str, seed: int) -> None:
    w = np.array(words, dtype=np.uint32)[None]
    s = mq.create_scheme("shufflebits", scope=scope)
    key = s.keygen(1, rng=seed, shape=(w.shape[1],))
    z = s.encode(w.view(np.float32), key)
    np.testing.assert_array_equal(popcount(z), popcount(w))  # a bit permutation keeps the set bits
    np.testing.assert_array_equal(s.decode(z, key).view(np.uint32), w)


def test_published_index_array_reproduces() -> None:
    """The published get_index_array(seed) is default_rng(seed).shuffle(arange(32))."""
    idx = np.arange(32)
    np.random.default_rng(0).shuffle(idx)
    key = mq.create_scheme("shufflebits", scope="fixed").key_from_perm(idx)
    x = np.random.default_rng(3).uniform(-1, 1, (10, 10)).astype(np.float32)
    z = mq.create_scheme("shufflebits", scope="fixed").encode(x, key)
    np.testing.assert_array_equal(z.view(np.uint32), slow_shuffle(x.view(np.uint32), idx))


def test_keys_fresh_per_vector_from_os_randomness_and_files(tmp_path) -> None:
    s = mq.create_scheme("shufflebits")
    k1, k2 = s.keygen(50), s.keygen(50)
    assert not np.array_equal(k1.perm, k2.perm)  # OS randomness: never the same twice
    assert len({bytes(r) for r in k1.perm}) > 45  # a fresh permutation per vector
    assert all(sorted(r.tolist()) == list(range(32)) for r in k1.perm)
    np.testing.assert_array_equal(s.keygen(50, rng=7).perm, s.keygen(50, rng=7).perm)  # seeds reproduce
    save_key(tmp_path / "k.safetensors", k1)
    k3 = load_key(tmp_path / "k.safetensors", expect="shufflebits")
    np.testing.assert_array_equal(k3.perm, k1.perm)
    assert "perm" not in repr(k1).split("arrays=")[0] and str(k1.perm[0][0]) not in repr(k1).split("(")[0]


def test_wrong_key_does_not_decode() -> None:
    s = mq.create_scheme("shufflebits")
    x = np.random.default_rng(0).standard_normal((20, 64)).astype(np.float32)
    z = s.encode(x, s.keygen(20, rng=1))
    wrong = s.decode(z, s.keygen(20, rng=2))
    assert (wrong.view(np.uint32) == x.view(np.uint32)).mean() < 0.05


def test_bad_input() -> None:
    s = mq.create_scheme("shufflebits")
    key = s.keygen(3, rng=0)
    with pytest.raises(InputError, match="float32"):
        s.encode(np.zeros((3, 4)), key)
    with pytest.raises(InputError, match="3 vectors"):
        s.encode(np.zeros((4, 4), np.float32), key)
    with pytest.raises(InputError, match="scope"):
        mq.create_scheme("shufflebits", scope="fixed").encode(np.zeros((3, 4), np.float32), key)
    with pytest.raises(InputError, match="scope must be"):
        mq.create_scheme("shufflebits", scope="row")
    with pytest.raises(InputError, match="shape"):
        mq.create_scheme("shufflebits", scope="element").keygen(3, rng=0)
    with pytest.raises(InputError, match="0..31"):
        s.key_from_perm(list(range(31)) + [0])


def test_layer_outputs_ciphertext_and_key_and_bits_survive_the_pipeline(tmp_path) -> None:
    """Ciphertexts are bit strings in float32 clothing: every step of ours only copies them."""
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU())
    layer = ShuffleBitsLayer(rng=0)
    model = torch.nn.Sequential(backbone, layer)
    x = torch.rand(8, 3, 2, 2)
    enc = model(x)
    assert enc.ciphertext.dtype == torch.float32 and enc.key.n == 8
    assert not enc.ciphertext.requires_grad
    plain = backbone(x).detach()
    assert torch.equal(layer.decrypt(enc).view(torch.int32), plain.view(torch.int32))
    assert not np.array_equal(model(x).key.perm, enc.key.perm)  # one-time keys: fresh every call
    fixed = ShuffleBitsLayer("fixed", rng=0)
    assert np.array_equal(fixed(plain).key.perm, fixed(plain).key.perm)

    # signalling NaNs and other odd patterns as *ciphertexts*: through torch, files and back, bit for bit
    s = mq.create_scheme("shufflebits", scope="fixed")
    key = s.keygen(0, rng=5)
    w = _words(4, 12, 9)
    z = s.decode(w.view(np.float32), key)  # plaintext whose ciphertext is exactly w (sNaNs included)
    c = s.encode(torch.from_numpy(z), key)
    assert np.array_equal(c.numpy().view(np.uint32), w)
    c2 = torch.cat([c[:2], c[2:]]).clone()
    np.save(tmp_path / "c.npy", c2.numpy())
    back = torch.from_numpy(np.load(tmp_path / "c.npy"))
    assert np.array_equal(back.numpy().view(np.uint32), w)
    assert np.array_equal(s.decode(back, key).numpy().view(np.uint32), z.view(np.uint32))


def test_cli_protect_reveal_features(tmp_path, cli) -> None:
    x = np.random.default_rng(0).standard_normal((6, 10)).astype(np.float32)
    x.view(np.uint32)[0, : len(SPECIAL)] = SPECIAL[:10]
    np.savez(tmp_path / "f.npz", features=x, labels=np.arange(6))
    r = cli(
        "protect",
        "shufflebits",
        "--in",
        str(tmp_path / "f.npz"),
        "--out",
        str(tmp_path / "refused"),
        "--key",
        str(tmp_path / "refused.safetensors"),
    )
    assert r.returncode == 2 and "--allow-nonfinite" in r.stderr  # special values only when asked for
    for scope in SCOPES:
        out, key = tmp_path / f"enc-{scope}", tmp_path / f"{scope}.safetensors"
        r = cli(
            "protect",
            "shufflebits",
            "--scope",
            scope,
            "--in",
            str(tmp_path / "f.npz"),
            "--out",
            str(out),
            "--key",
            str(key),
            "--run-out",
            str(tmp_path / f"run-{scope}"),
            "--allow-nonfinite",
        )
        assert r.returncode == 0, r.stderr
        r = cli(
            "reveal",
            "shufflebits",
            "--in",
            str(out / "features.npy"),
            "--key",
            str(key),
            "--out",
            str(tmp_path / f"dec-{scope}.npy"),
        )
        assert r.returncode == 0, r.stderr
        np.testing.assert_array_equal(np.load(tmp_path / f"dec-{scope}.npy").view(np.uint32), x.view(np.uint32))
        assert np.array_equal(np.load(out / "extra.npz")["labels"], np.arange(6))
    np.save(tmp_path / "f64.npy", np.ones((6, 10)))
    r = cli(
        "protect",
        "shufflebits",
        "--in",
        str(tmp_path / "f64.npy"),
        "--out",
        str(tmp_path / "e"),
        "--key",
        str(tmp_path / "k.safetensors"),
    )
    assert r.returncode == 2 and "float32" in r.stderr


def _relu_features(n: int, d: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    scale = g.gamma(2.0, 0.5, d).astype(np.float32)
    return np.maximum(g.standard_normal((n, d)).astype(np.float32) * scale, 0)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(all="ignore"):  # decrypted garbage holds signalling NaNs
        a, b = a.astype(np.float64), b.astype(np.float64)
        c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.nan_to_num(c, nan=0.0).mean())


def test_fixed_key_recovery_from_ciphertexts_alone() -> None:
    feats = _relu_features(64, 256, 0)
    s = mq.create_scheme("shufflebits", scope="fixed")
    key = s.keygen(0, rng=11)
    z = s.encode(feats, key)
    r = run_attack(mq.create_attack("shufflebits-key-recovery"), encodings=z)
    assert _cos(r.reconstructions, feats) > 0.999
    # the sign, the exponent and the top mantissa bits are found (up to columns that are identical); the low
    # mantissa bits are nearly uniform and their order stays unknown, which costs about 1 % of each value
    dec, nz = r.reconstructions, feats > 0
    assert np.median(np.abs(dec - feats)[nz] / feats[nz]) < 0.03
    # signed features need several vectors to tell the sign from a low mantissa bit
    g = np.random.default_rng(1)
    signed = (g.standard_normal((64, 256)) * g.gamma(2, 0.5, 256) + g.normal(0, 1, 256)).astype(np.float32)
    r = run_attack(mq.create_attack("shufflebits-key-recovery"), encodings=s.encode(signed, key))
    assert _cos(r.reconstructions, signed) > 0.99
    # with a random key instead of the recovered one the decryption is useless
    assert _cos(s.decode(z, s.keygen(0, rng=12)), feats) < 0.5


def test_one_time_keys_defeat_pooled_recovery_and_element_keys_defeat_per_vector_recovery() -> None:
    feats = _relu_features(64, 256, 2)
    vec = mq.create_scheme("shufflebits", scope="vector")
    z = vec.encode(feats, vec.keygen(64, rng=3))
    pooled = run_attack(mq.create_attack("shufflebits-key-recovery"), encodings=z)
    assert abs(_cos(pooled.reconstructions, feats)) < 0.3
    # but one vector of 256 ReLU features on its own still gives its key away (a finding, not the paper's claim)
    single = run_attack(mq.create_attack("shufflebits-key-recovery", group="vector"), encodings=z[:8])
    assert _cos(single.reconstructions, feats[:8]) > 0.95
    el = mq.create_scheme("shufflebits", scope="element")
    ze = el.encode(feats[:8], el.keygen(8, rng=4, shape=(256,)))
    per = run_attack(mq.create_attack("shufflebits-key-recovery", group="vector"), encodings=ze)
    assert abs(_cos(per.reconstructions, feats[:8])) < 0.3
    # the popcount leaks through every scope: exact zeros stay exact zeros
    pc = run_attack(mq.create_attack("shufflebits-popcount"), encodings=ze).recovered["popcount"]
    np.testing.assert_array_equal(pc == 0, feats[:8] == 0)


@pytest.fixture(scope="module")
def digits_api():
    """Bundled digits behind a black-box API: a fixed random projection + softplus (no exact zeros, so only the
    cipher stands between the adversary and the features)."""
    from masquerade.attacks.feature_inversion import FeatureAPI
    from masquerade.data import load_images

    data = load_images("bundled:digits", size=8)
    x, y = data.to_tensor(), data.labels_tensor()
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(x)))
    x, y = x[order], y[order]
    proj = torch.from_numpy(np.random.default_rng(1).standard_normal((64, 128)).astype(np.float32))
    api = FeatureAPI(lambda im: torch.nn.functional.softplus(im.reshape(len(im), -1) @ proj - 2.0))
    return api, (x[:1200], y[:1200]), (x[1200:1500], y[1200:1500])


def test_attribute_attack_plaintext_vs_one_time_ciphertexts(digits_api) -> None:
    api, aux, (xv, yv) = digits_api
    fv = api.predict(xv).numpy()
    vec = mq.create_scheme("shufflebits")
    z = vec.encode(fv, vec.keygen(len(fv), rng=3))
    both = np.concatenate([fv, z])
    pred = run_attack(
        mq.create_attack("feature-attribute", epochs=30), encodings=both, auxiliary=aux, api=api
    ).recovered["attributes"]
    acc_plain = float((pred[:300] == yv).float().mean())
    acc_cipher = float((pred[300:] == yv).float().mean())
    assert acc_plain > 0.8  # far above chance (0.1) on plaintext features
    assert acc_cipher < 0.2  # at chance on one-time ciphertexts taken as they are
    # ... unless the adversary first recovers each vector's key from the ciphertext alone
    rec = run_attack(mq.create_attack("shufflebits-key-recovery", group="vector"), encodings=z[:100]).reconstructions
    pred = run_attack(
        mq.create_attack("feature-attribute", epochs=30), encodings=rec, auxiliary=aux, api=api
    ).recovered["attributes"]
    assert float((pred == yv[:100]).float().mean()) > 0.5
    with pytest.raises(InputError, match="threat model"):
        run_attack(mq.create_attack("feature-attribute"), encodings=fv, auxiliary=aux, api=api, truth=xv)


def test_decoder_reconstructs_from_plaintext_not_from_ciphertexts(digits_api) -> None:
    from masquerade.attacks.feature_inversion import cosine_distance
    from masquerade.metrics import ssim

    api, aux, (xv, _) = digits_api
    fv = api.predict(xv[:100]).numpy()
    vec = mq.create_scheme("shufflebits")
    z = vec.encode(fv, vec.keygen(100, rng=4))
    r = run_attack(
        mq.create_attack("feature-inversion", epochs=15, batch=64),
        encodings=np.concatenate([fv, z]),
        auxiliary=aux[0],
        api=api,
    ).reconstructions
    s_plain = float(ssim(r[:100], xv[:100], data_range=1.0).mean())
    s_cipher = float(ssim(r[100:], xv[:100], data_range=1.0).mean())
    assert s_plain > s_cipher + 0.2
    dist = cosine_distance(api.predict(r[:100]), torch.from_numpy(fv))
    assert float(dist.mean()) < float(cosine_distance(api.predict(r[100:]), torch.from_numpy(fv)).mean())


def test_kernels_refuse_a_key_of_the_wrong_size() -> None:
    from masquerade.shufflebits.scheme import shuffle_words

    w = _words(4, 6, 0)
    perm = np.tile(np.arange(32, dtype=np.uint8), (3, 1))
    for scope in ("vector", "element"):
        with pytest.raises(InputError, match="permutations"):
            shuffle_words(w, perm, scope)
    with pytest.raises(InputError, match="scope"):
        shuffle_words(w, perm[:1], "row")
    np.testing.assert_array_equal(shuffle_words(w, perm[:1], "fixed"), w)  # the identity permutation


def test_key_permutations_are_uniform() -> None:
    perm = mq.create_scheme("shufflebits").keygen(64000, rng=5).perm
    assert (np.sort(perm, axis=1) == np.arange(32)).all()
    counts = np.stack([np.bincount(perm[:, j], minlength=32) for j in range(32)])  # value v at position j
    expected = 64000 / 32
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 31 * 31 + 6 * np.sqrt(2 * 31 * 31)  # 961 degrees of freedom, six sigma
