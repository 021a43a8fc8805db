from __future__ import annotations

import dataclasses
import os
import pickle
from typing import ClassVar

import numpy as np
import pytest

from masquerade.errors import InputError, IntegrityError
from masquerade.keys import Key, fingerprint, load_key, save_key
from masquerade.rng import as_generator, describe_rng, secure_bytes, secure_rng, torch_generator


@dataclasses.dataclass(frozen=True)
class ToySettings:
    k: int = 4
    mode: str = "inside"


@dataclasses.dataclass(frozen=True, repr=False, eq=False)
class ToyKey(Key):
    scheme: ClassVar[str] = "toy"
    public_fields: ClassVar[tuple[str, ...]] = ("settings",)
    settings: ToySettings
    perm: np.ndarray
    mask: np.ndarray
    secret: bytes
    note: str = "x"


def make_key(seed: int = 0) -> ToyKey:
    g = np.random.default_rng(seed)
    return ToyKey(
        ToySettings(k=6),
        g.permutation(50),
        g.random((3, 4)).astype(np.float32) > 0.5,
        bytes(g.integers(0, 256, 16, dtype=np.uint8)),
    )


def test_round_trip(tmp_path) -> None:
    key = make_key()
    path = save_key(tmp_path / "k.safetensors", key)
    back = load_key(path)
    assert isinstance(back, ToyKey)
    assert back == key and back.fingerprint == key.fingerprint
    assert back.settings == ToySettings(k=6)
    np.testing.assert_array_equal(back.perm, key.perm)
    assert back.mask.dtype == np.bool_ and back.secret == key.secret
    assert (os.stat(path).st_mode & 0o777) == 0o600
    assert load_key(path, expect="toy") == key
    assert load_key(path, expect=ToyKey) == key


def test_fingerprint_changes_with_any_bit() -> None:
    a, b = make_key(0), make_key(1)
    assert a.fingerprint != b.fingerprint
    flipped = dataclasses.replace(a, perm=a.perm.copy())
    flipped.perm[[0, 1]] = flipped.perm[[1, 0]]
    assert flipped.fingerprint != a.fingerprint
    assert dataclasses.replace(a, note="y").fingerprint != a.fingerprint
    assert len(fingerprint(a)) == 16 and all(c in "0123456789abcdef" for c in fingerprint(a))


def test_repr_redacts_material() -> None:
    key = make_key()
    text = repr(key) + str(key)
    assert key.fingerprint in text and "ToySettings" in text
    assert str(key.perm[:5].tolist())[1:-1] not in text
    assert key.secret.hex() not in text and repr(key.secret) not in text
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(key)


def test_refuses_other_formats_and_schemes(tmp_path) -> None:
    p = tmp_path / "k.pkl"
    p.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputError, match="pickles are never loaded"):
        load_key(p)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputError, match="not a masquerade key file|not a readable key"):
        load_key(fake)
    path = save_key(tmp_path / "k.safetensors", make_key())
    with pytest.raises(InputError, match="for scheme 'toy', not 'instahide'"):
        load_key(path, expect="instahide")
    with pytest.raises(InputError, match="suffix"):
        save_key(tmp_path / "k.json", make_key())
    with pytest.raises(InputError, match="no such key file"):
        load_key(tmp_path / "missing.safetensors")
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(3)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(InputError, match="not a masquerade key"):
        load_key(tmp_path / "plain.safetensors")


def test_newer_format_refused(tmp_path) -> None:
    import json

    from safetensors.numpy import save_file

    arrays, doc = make_key().to_parts()
    doc["format_version"] = 99
    save_file(arrays, str(tmp_path / "new.safetensors"), metadata={"masquerade": json.dumps(doc)})
    with pytest.raises(IntegrityError, match="newer"):
        load_key(tmp_path / "new.safetensors")


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch) -> None:
    import safetensors.numpy as stn

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(stn, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_key(tmp_path / "k.safetensors", make_key())
    assert list(tmp_path.iterdir()) == []


def test_rng_sources() -> None:
    import torch

    a, b = secure_rng(), secure_rng()
    assert not np.array_equal(a.integers(0, 2**62, 8), b.integers(0, 2**62, 8))
    assert np.array_equal(as_generator(7).integers(0, 1000, 10), as_generator(7).integers(0, 1000, 10))
    g = np.random.default_rng(1)
    assert as_generator(g) is g
    tg = torch.Generator().manual_seed(3)
    assert np.array_equal(as_generator(tg).random(3), as_generator(torch.Generator().manual_seed(3)).random(3))
    assert torch.equal(torch.rand(3, generator=torch_generator(5)), torch.rand(3, generator=torch_generator(5)))
    assert len(secure_bytes(16)) == 16 and secure_bytes(16) != secure_bytes(16)
    assert describe_rng(5) == {"source": "seed", "seed": 5}
    assert describe_rng(None)["seed"] is None
    for bad in (-1, "3", 1.5, True, np.random.RandomState(0)):
        with pytest.raises(InputError):
            as_generator(bad)  # type: ignore[arg-type]


def test_no_global_rng_use() -> None:
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    secure_rng().random(5)
    as_generator(3).random(5)
    assert np.array_equal(np.random.get_state()[1], state)
