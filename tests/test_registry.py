from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import masquerade
from masquerade.contracts import AttackResult, Configurable
from masquerade.errors import InputError
from masquerade.registry import ATTACKS, Knowledge, ThreatModel, run_attack


def test_identity_scheme_round_trip_and_checks() -> None:
    assert "identity" in masquerade.list_schemes()
    s = masquerade.create_scheme("identity")
    assert isinstance(s, masquerade.Scheme)
    x = torch.rand(4, 3, 8, 8)
    key = s.keygen(4, rng=0)
    z = s.encode(x, key)
    assert torch.equal(s.decode(z, key), x) and z is not x
    with pytest.raises(InputError, match="drawn for 4 images"):
        s.encode(torch.rand(5, 3, 8, 8), key)
    with pytest.raises(InputError, match="N×C×H×W"):
        s.encode(torch.rand(3, 8, 8), key)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        s.encode(x * 3, key)
    with pytest.raises(InputError, match="float32"):
        s.encode(x.double(), key)
    with pytest.raises(InputError, match="torch.Tensor"):
        s.encode(np.zeros((4, 3, 8, 8), np.float32), key)  # type: ignore[arg-type]


def test_unknown_names_and_settings() -> None:
    with pytest.raises(InputError, match="unknown scheme 'nope'; available: .*identity"):
        masquerade.create_scheme("nope")
    with pytest.raises(InputError, match="has no setting"):
        masquerade.create_scheme("identity", k=3)
    with pytest.raises(InputError, match="unknown attack"):
        masquerade.create_attack("nope")


def test_a_string_setting_with_a_comma_survives_the_command_lines_list_parsing() -> None:
    from masquerade.cli.common import parse_sets

    for text in ("[0,1]", "[-1,1]"):
        s = masquerade.create_scheme("instahide", **parse_sets([f"pixel_scale={text}"]))
        assert s.settings.pixel_scale == text
    with pytest.raises(InputError, match="pixel_scale must be one of"):
        masquerade.create_scheme("instahide", **parse_sets(["pixel_scale=[0,2]"]))


class _EchoAttack(Configurable):
    @dataclass(frozen=True)
    class Settings:
        pass

    name = "echo-test"
    data_kind = "images"
    threat_model = ThreatModel(requires=frozenset({Knowledge.ENCODINGS}), optional=frozenset({Knowledge.LABELS}))

    def run(self, *, rng=None, progress=None, **given) -> AttackResult:
        return AttackResult(self.name, metrics={"given": sorted(given)})


def test_threat_model_is_enforced() -> None:
    ATTACKS.register("echo-test")(_EchoAttack)
    try:
        attack = masquerade.create_attack("echo-test")
        assert isinstance(attack, masquerade.Attack)
        assert run_attack(attack, encodings=1).metrics["given"] == ["encodings"]
        assert run_attack(attack, encodings=1, labels=2).metrics["given"] == ["encodings", "labels"]
        with pytest.raises(InputError, match="does not give it \\['truth'\\]"):
            run_attack(attack, encodings=1, truth=3)
        with pytest.raises(InputError, match="needs \\['encodings'\\]"):
            run_attack(attack, labels=2)
        assert "echo-test" in masquerade.list_attacks()
        assert "encodings" in attack.threat_model.describe()
    finally:
        ATTACKS.unregister("echo-test")
    with pytest.raises(ValueError):
        ThreatModel(requires=frozenset({"labels"}), optional=frozenset({"labels"}))


def test_top_level_api() -> None:
    for name in (
        "create_scheme",
        "list_schemes",
        "create_attack",
        "list_attacks",
        "ImageSet",
        "load_images",
        "fetch_dataset",
        "extract_patches",
        "save_key",
        "load_key",
        "fingerprint",
        "secure_rng",
    ):
        assert hasattr(masquerade, name), name
    assert masquerade.__version__


def test_broken_entry_points_elsewhere_do_not_break_the_command_line(tmp_path) -> None:
    """A malformed entry point in any installed distribution is skipped with a warning; a plugin whose import
    raises is named in a one-line error when used, and everything else keeps working."""
    import os
    import subprocess
    import sys

    def dist(name: str, entry_points: str) -> None:
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(entry_points)

    dist("badnames", "[masquerade.schemes]\nBad Name = nocolon\nfine-looking = has spaces:in it\n")
    dist("garbage", "[masquerade.attacks\nthis is = not [ini\n\x00\n")
    dist("raiser", "[masquerade.schemes]\nraiser = raiser_mod:Scheme\n")
    (tmp_path / "raiser_mod.py").write_text("raise RuntimeError('boom at import')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "masquerade", *args], capture_output=True, text=True, env=env, timeout=120
        )

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert "instahide" in listed.stdout and "raiser" in listed.stdout and "Bad Name" not in listed.stdout
    assert "skipped" in listed.stderr and "Traceback" not in listed.stderr
    used = cli("key", "show", str(tmp_path / "none.safetensors"))  # an unrelated command still works
    assert used.returncode == 2 and "Traceback" not in used.stderr
    from masquerade.registry import Registry

    reg: Registry[object] = Registry("scheme", {"raiser": ("raiser_mod:Scheme", "")}, "none")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(InputError, match="RuntimeError: boom at import"):
            reg.get("raiser")
    finally:
        sys.path.remove(str(tmp_path))


def test_an_attack_plugin_that_does_not_import_is_left_out_of_an_evaluation(monkeypatch, caplog) -> None:
    from masquerade.registry import _Entry
    from masquerade.workflows.evaluate.plan import EvaluateSettings, plan_cells

    ATTACKS._read_entry_points()
    monkeypatch.setitem(ATTACKS._entries, "broken-plugin", _Entry("no_such_module_here:Attack", "(from elsewhere)"))
    cells = plan_cells(EvaluateSettings(quick=True, schemes=("identity",)))
    assert cells and all(c.attack != "broken-plugin" for c in cells)
    assert "broken-plugin" in caplog.text and "left out" in caplog.text


def test_a_shorthand_setting_picks_a_built_in_scheme_that_takes_it_never_a_plugin() -> None:
    from masquerade.registry import SCHEMES
    from masquerade.workflows.train import _with_policy

    class Policy(Configurable):
        @dataclass(frozen=True)
        class Settings:
            policy: str = ""
            always: bool = False

    SCHEMES.register("also-a-policy")(Policy)
    try:
        assert SCHEMES.builtin_with_setting("policy") == ["ats"]
        assert _with_policy(None, {}, "3-1-7", False) == ("ats", {"policy": "3-1-7", "always": False})
        assert _with_policy("also-a-policy", {}, "3", True) == ("also-a-policy", {"policy": "3", "always": True})
        assert _with_policy(None, {"x": 1}, None, False) == ("identity", {"x": 1})
        for scheme, policy, always, msg in (
            ("identity", "3", False, "identity does not take"),
            ("instahide", "3", False, "instahide does not take"),
            (None, None, True, "--always goes with --policy"),
        ):
            with pytest.raises(InputError, match=msg):
                _with_policy(scheme, {}, policy, always)
    finally:
        SCHEMES.unregister("also-a-policy")
