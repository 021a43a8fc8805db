"""The plugin contract, checked on every registered scheme and attack (a new plugin is covered the day it is
registered: an attack without a case below fails ``test_every_attack_has_a_case``)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import numpy as np
import pytest
import torch

from masquerade.contracts import Attack, AttackResult, Knowledge, Scheme, ThreatModel, is_baseline
from masquerade.errors import InputError, NotInvertibleError
from masquerade.keys import load_key, save_key
from masquerade.registry import ATTACKS, SCHEMES, create_attack, create_scheme, list_attacks, list_schemes, run_attack


def _frozen_dataclass(cls: type) -> bool:
    return dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def _keyword_only(fn: Callable[..., Any], names: tuple[str, ...]) -> None:
    params = inspect.signature(fn).parameters
    for n in names:
        assert n in params and params[n].kind is inspect.Parameter.KEYWORD_ONLY, (fn, n)


@pytest.mark.parametrize("name", list_schemes())
def test_scheme_contract(name: str, tmp_path: Any) -> None:
    cls = SCHEMES.get(name)
    assert cls.name == name and _frozen_dataclass(cls.Settings)
    assert isinstance(cls.invertible, bool) and cls.data_kind in ("images", "features")
    s = create_scheme(name)
    assert isinstance(s, Scheme) and isinstance(s.settings, cls.Settings)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.settings.__setattr__("x", 1)
    with pytest.raises(InputError, match="has no setting"):
        create_scheme(name, no_such_setting=1)
    _keyword_only(s.keygen, ("rng", "shape", "pool_size", "base"))
    _keyword_only(s.encode, ("public", "rng"))
    _keyword_only(s.decode, ("public",))
    # draw, then apply: the same seed gives the same key and the same bytes
    if cls.data_kind == "images":
        x, shape = torch.rand(8, 3, 8, 8), (3, 8, 8)
    else:
        x, shape = torch.randn(8, 16), (16,)
    k1, k2 = s.keygen(8, rng=3, shape=shape), s.keygen(8, rng=3, shape=shape)
    secret = name != "identity"  # the baseline holds no secret: its keys are all alike, its output the input
    assert k1 == k2 and k1.fingerprint == k2.fingerprint and (k1 != s.keygen(8, rng=4, shape=shape)) == secret
    z = s.encode(x, k1)

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:  # bit for bit (ciphertexts may hold NaN patterns)
        return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))

    assert same(z, s.encode(x, k2)) and same(z, x) != secret
    if s.invertible:
        torch.testing.assert_close(s.decode(z, k1), x, atol=1e-5, rtol=0)
    else:
        with pytest.raises(NotInvertibleError):
            s.decode(z, k1)
    save_key(tmp_path / "k.safetensors", k1)
    assert load_key(tmp_path / "k.safetensors", expect=name) == k1


# one small case per attack: a factory of what its threat model gives it, and a check on the result
def _disguise(transform: str, n: int = 40, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    s = create_scheme("disguise", transform=transform, **kw)
    x = torch.from_numpy(np.random.default_rng(0).random((n, 3, 8, 8)).astype(np.float32))
    return x, s.encode(x, s.keygen(n, rng=1, shape=(3, 8, 8)))


def _features(n: int = 30) -> np.ndarray:
    return np.abs(np.random.default_rng(0).normal(size=(n, 16))).astype(np.float32)


def _aux_images(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 3


def _api() -> Any:
    from masquerade.attacks.feature_inversion import FeatureAPI

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    return FeatureAPI.from_model(net)


def _gradients() -> dict[str, Any]:
    from masquerade.attacks.gradient_inversion import client_gradient

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    x, y = torch.rand(1, 3, 8, 8), torch.tensor([1])
    return {"model": model, "gradients": client_gradient(model, x, y), "labels": y}


def _challenge() -> dict[str, Any]:
    from masquerade.instahide.recipe import simulate_challenge

    g = np.random.default_rng(0)
    private = (g.random((12, 8, 8, 3)) * 255).astype(np.uint8)
    sim = simulate_challenge(
        private, np.arange(12) % 3, (g.random((40, 8, 8, 3)) * 255).astype(np.uint8), per_image=6, num_classes=3, rng=g
    )
    return {
        "encodings": torch.from_numpy(sim["encryption"]).permute(0, 3, 1, 2),
        "labels": sim["label"],
        "public_pool": (g.random((200, 8, 8, 3)) * 255).astype(np.uint8),
    }


def _inside() -> dict[str, Any]:
    s = create_scheme("instahide", k=2, mode="inside", pixel_scale="normalize")
    x = torch.from_numpy(np.random.default_rng(0).random((12, 3, 8, 8)).astype(np.float32))
    keys = [s.keygen(12, rng=p, shape=(3, 8, 8)) for p in range(6)]
    return {
        "encodings": torch.cat([s.encode(x, k) for k in keys]),
        "labels": torch.cat([s.mix_labels(np.arange(12) % 3, k, 3) for k in keys]).numpy(),
        "auxiliary": torch.rand(8, 3, 8, 8),
    }


CASES: dict[str, tuple[dict[str, Any], Callable[[], dict[str, Any]]]] = {
    "as-is": ({}, lambda: {"encodings": _disguise("rmt")[1]}),
    "disguise-known-plaintext": (
        {},
        lambda: (lambda x, z: {"encodings": z[20:], "known_pairs": (x[:20], z[:20])})(*_disguise("rmt")),
    ),
    "aes-ecb-codebook": (
        {},
        lambda: (lambda x, z: {"encodings": z[20:], "known_pairs": (x[:20], z[:20])})(
            *_disguise("aes", seeded_aes_key=True)
        ),
    ),
    "aes-ecb-frequency": (
        {},
        lambda: (lambda x, z: {"encodings": z, "auxiliary": x})(*_disguise("aes", seeded_aes_key=True)),
    ),
    "disguise-moments": ({}, lambda: (lambda x, z: {"encodings": z, "auxiliary": x})(*_disguise("rmt"))),
    "disguise-alignment": ({}, lambda: (lambda x, z: {"encodings": z, "auxiliary": x})(*_disguise("rmt"))),
    "shufflebits-key-recovery": ({"restarts": 1}, lambda: {"encodings": _features()}),
    "shufflebits-popcount": ({}, lambda: {"encodings": _features()}),
    "feature-attribute": (
        {"epochs": 1},
        lambda: {"encodings": _api().predict(_aux_images()[0][:8]), "auxiliary": _aux_images(), "api": _api()},
    ),
    "feature-inversion": (
        {"epochs": 1, "batch": 16},
        lambda: {"encodings": _api().predict(_aux_images()[0][:8]), "auxiliary": _aux_images()[0], "api": _api()},
    ),
    "inverting_gradients": (
        {"iterations": 2, "image_shape": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.25,) * 3},
        _gradients,
    ),
    "dlg": ({"iterations": 2, "image_shape": (3, 8, 8), "mean": (0.5,) * 3, "std": (0.25,) * 3}, _gradients),
    "ats-adaptive": (
        {
            "policy": "3-1-7",
            "always": True,
            "iterations": 2,
            "image_shape": (3, 8, 8),
            "mean": (0.5,) * 3,
            "std": (0.25,) * 3,
        },
        _gradients,
    ),
    "instahide-challenge": ({"prior": "none", "colour": False, "rounds": 1, "n_private": 12}, _challenge),
    "instahide-inside": ({"k": 2, "rounds": 1, "n_private": 12}, _inside),
}


def test_every_attack_has_a_case() -> None:
    assert sorted(CASES) == list_attacks()


@pytest.mark.parametrize("name", list_attacks())
def test_attack_contract(name: str) -> None:
    from masquerade.cli.attack import attack_parser

    cls = ATTACKS.get(name)
    assert cls.name == name and _frozen_dataclass(cls.Settings) and cls.data_kind in ("images", "features")
    assert isinstance(cls.threat_model, ThreatModel) and cls.threat_model.requires
    assert ATTACKS.describe()[name]
    atk = create_attack(name)
    assert isinstance(atk, Attack) and isinstance(atk.settings, cls.Settings)
    with pytest.raises(InputError, match="has no setting"):
        create_attack(name, no_such_setting=1)
    params = inspect.signature(atk.run).parameters
    _keyword_only(atk.run, ("rng", "progress"))
    for know in cls.threat_model.requires | cls.threat_model.optional:
        assert know.value in params, (name, know)
    # the command line offers what the threat model names (gradients: through the clients' images)
    options = {o for a in attack_parser(name)._actions for o in a.option_strings}
    wanted = (
        {"--model-file", "--data"}
        if Knowledge.GRADIENTS in cls.threat_model.requires
        else {"--encodings"}
        if Knowledge.ENCODINGS in cls.threat_model.requires
        else set()
    )
    assert wanted <= options
    # an attack that names its targets (the scorecard's plan) names settings it accepts, or None
    against = getattr(cls, "settings_against", None)
    if against is not None:
        for scheme in list_schemes():
            chosen = against(create_scheme(scheme))
            assert chosen is None or isinstance(create_attack(name, **chosen), cls), (name, scheme, chosen)
    # a floor uses nothing beyond the release itself, so every attack at its level holds what it holds
    if is_baseline(cls):
        assert cls.threat_model.requires == {Knowledge.ENCODINGS} and not cls.threat_model.optional, name
    settings, given = CASES[name]
    res = run_attack(create_attack(name, **settings), rng=0, progress=False, **given())
    assert isinstance(res, AttackResult) and res.attack == name and res.seconds >= 0
    assert res.reconstructions is not None or res.recovered
    with pytest.raises(InputError, match="does not give it"):
        run_attack(atk, truth=1, **given())
