"""``masquerade evaluate``: the plan (which attack runs at which level), the scorecard's numbers on a tiny evaluation,
resuming after a crash, Ray workers giving the serial scorecard, the report in a real browser, and bad input."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from masquerade.attacks.asis import AsIs
from masquerade.errors import InputError
from masquerade.registry import create_scheme
from masquerade.workflows.evaluate import (
    EvaluateSettings,
    SchemeSetting,
    best_match,
    comparable,
    evaluate,
    findings,
    plan_cells,
)


def _tiny(**overrides: Any) -> EvaluateSettings:
    base: dict[str, Any] = dict(
        data="bundled:mnist",
        size=None,
        targets=6,
        pairs=30,
        auxiliary=60,
        test=100,
        train=200,
        epochs=1,
        public=40,
        codebook_decoder_steps=5,  # the network fill runs (and must give the same bits on Ray), briefly
        settings=(
            SchemeSetting("identity", "no protection"),
            SchemeSetting(
                "instahide",
                "cross k=6",
                (("k", 6), ("mode", "cross"), ("private_per_mix", 2)),
                per_image=3,
                public=True,
            ),
            SchemeSetting("disguise", "RMT b=4", (("transform", "rmt"), ("block", 4))),
            SchemeSetting("disguise", "AES-ECB b=4", (("transform", "aes"), ("block", 4), ("aes_mode", "ecb"))),
        ),
    )
    base.update(overrides)
    return EvaluateSettings(**base)


def _by(rows: list[dict[str, Any]], setting: str, level: int, attack: str) -> dict[str, Any]:
    found = [r for r in rows if r["setting"] == setting and r["level"] == level and r["attack"] == attack]
    assert len(found) == 1, (setting, level, attack, [(r["setting"], r["level"], r["attack"]) for r in rows])
    return found[0]


# -- the plan ----------------------------------------------------------------------------------------------------


def test_the_plan_gives_each_level_exactly_the_attacks_its_knowledge_allows() -> None:
    cells = plan_cells(EvaluateSettings.for_quick())
    attacks = {(c.setting.label, c.attack): (c.levels, c.uses) for c in cells if c.kind == "attack"}
    assert attacks[("no protection", "as-is")] == ((1, 2, 3), ("encodings",))
    assert attacks[("RMT b=4", "disguise-moments")][0] == (2, 3)
    assert attacks[("RMT b=4", "disguise-alignment")] == ((2, 3), ("auxiliary", "encodings"))
    assert attacks[("RMT b=4", "disguise-known-plaintext")] == ((3,), ("encodings", "known_pairs"))
    assert attacks[("AES-ECB b=4", "aes-ecb-codebook")][0] == (3,)
    assert attacks[("AES-ECB b=4", "aes-ecb-frequency")] == ((2, 3), ("auxiliary", "encodings"))
    assert ("AES-ECB b=4", "disguise-moments") not in attacks  # RMT's attacks do not apply to AES
    assert ("RMT b=4", "aes-ecb-codebook") not in attacks
    assert ("inside k=4", "instahide-challenge") not in attacks  # the challenge attack needs the recipe
    # the challenge attack uses the auxiliary images from level 2 on: two computations, not three
    challenge = sorted((c.levels, c.uses) for c in cells if c.attack == "instahide-challenge")
    assert challenge == [
        ((1,), ("encodings", "labels", "public_pool")),
        ((2, 3), ("auxiliary", "encodings", "labels", "public_pool")),
    ]
    # every setting has one utility cell; identity is always planned (every cost's reference)
    only = plan_cells(EvaluateSettings.for_quick(schemes=("disguise",), levels=(1,)))
    assert {c.setting.scheme for c in only} == {"identity", "disguise"}
    assert all(c.levels == (1,) for c in only if c.kind == "attack")
    assert sum(c.kind == "utility" for c in only) == 3


def test_gradient_sharing_settings_face_the_server_at_every_level_and_quick_leaves_them_out() -> None:
    cells = plan_cells(EvaluateSettings(targets=4, pairs=2))
    ats = {
        (c.setting.label, c.attack): (c.levels, c.uses, dict(c.attack_settings))
        for c in cells
        if c.setting.scheme == "ats" and c.kind == "attack"
    }
    # no data leave the client, so no attack on images applies; the server inverts gradients with the model
    # the policy-blind inversion on every setting, and the one that knows the policy where there is one
    policies = ("3-1-7", "3-1-7+43-18-18")
    assert set(ats) == {(f"ATS {p}", "inverting_gradients") for p in ("none", *policies)} | {
        (f"ATS {p}", "ats-adaptive") for p in policies
    }
    assert all(v[:2] == ((1, 2, 3), ("gradients", "labels", "model")) for v in ats.values())
    assert all(v[2] == {"iterations": 4800} for (_, a), v in ats.items() if a == "inverting_gradients")  # ATS's
    assert all(
        ats[(f"ATS {p}", "ats-adaptive")][2] == {"iterations": 4800, "policy": p, "always": True} for p in policies
    )
    # a full run fills what the AES-ECB codebook lacks with a trained network; --quick with the nearest images
    full = {c.setting.label: dict(c.attack_settings) for c in cells if c.attack == "aes-ecb-codebook"}
    assert full["AES-ECB b=4"] == {"block": 4, "decoder_steps": 300}
    assert [
        dict(c.attack_settings) for c in plan_cells(EvaluateSettings.for_quick()) if c.attack == "aes-ecb-codebook"
    ] == [{"block": 4}]
    assert not [c for c in plan_cells(EvaluateSettings.for_quick()) if c.setting.scheme == "ats"]
    quick_ats = plan_cells(EvaluateSettings.for_quick(schemes=("ats",)))
    assert {c.setting.label for c in quick_ats if c.setting.scheme == "ats"} == {"ATS none", "ATS 3-1-7+43-18-18"}


def test_feature_settings_face_feature_inversion_from_level_2_with_what_each_key_scope_leaves() -> None:
    cells = plan_cells(EvaluateSettings(targets=4, pairs=2, schemes=("shufflebits",)))
    feats = {
        c.setting.label: (c.attack, c.levels, c.uses, dict(c.attack_settings))
        for c in cells
        if c.setting.shares == "features" and c.kind == "attack"
    }
    uses = ("api", "auxiliary", "encodings")
    assert feats == {
        "features in the clear": ("feature-inversion", (2, 3), uses, {"representation": "float"}),
        "ShuffleBits fixed": ("feature-inversion", (2, 3), uses, {"representation": "float", "recover_key": True}),
        "ShuffleBits vector": ("feature-inversion", (2, 3), uses, {"representation": "popcount"}),
        "ShuffleBits element": ("feature-inversion", (2, 3), uses, {"representation": "popcount"}),
    }
    # the images' attacks never see features, and the features' baseline comes only with feature protection
    assert not [c for c in cells if c.setting.shares == "features" and c.attack == "as-is"]
    assert not [
        c
        for c in plan_cells(EvaluateSettings(targets=4, pairs=2, schemes=("disguise",)))
        if c.setting.shares == "features"
    ]


def test_the_default_plan_fits_the_bundled_digits() -> None:
    # a newcomer's first `masquerade evaluate --out RUN` must not ask for more images than the default data hold
    from masquerade.data import load_images

    s = EvaluateSettings()
    assert s.train + s.test + s.auxiliary <= len(load_images(s.data))


def test_settings_are_checked() -> None:
    with pytest.raises(InputError, match="unknown schemes"):
        EvaluateSettings(schemes=("rot13",))
    with pytest.raises(InputError, match="levels"):
        EvaluateSettings(levels=(4,))
    with pytest.raises(InputError, match="exceed"):
        EvaluateSettings(targets=30, pairs=20, train=40)
    with pytest.raises(InputError, match="unknown model"):
        EvaluateSettings(model="resnet1000")
    with pytest.raises(InputError, match="unknown inversion model"):
        EvaluateSettings(inversion_model="resnet1000")
    with pytest.raises(InputError, match="inversion_iterations must be positive"):
        EvaluateSettings(inversion_iterations=0)
    with pytest.raises(InputError, match="shares one of"):
        SchemeSetting("ats", "x", shares="weights")


def test_the_public_patches_come_from_the_photos_the_user_names(tmp_path: Path) -> None:
    from masquerade.workflows.evaluate.cells import data_for

    g = np.random.default_rng(0)
    patches = (g.random((50, 28, 28, 3)) * 255).astype(np.uint8)
    np.savez(tmp_path / "patches.npz", images=patches)
    d = data_for(EvaluateSettings.for_quick(public_photos=str(tmp_path / "patches.npz"), public=50))
    assert np.array_equal(d.public.images, patches)
    with pytest.raises(InputError, match="public_photos"):
        EvaluateSettings.for_quick(public_photos="")


# -- the scores --------------------------------------------------------------------------------------------------


def test_findings_flag_utility_at_chance_and_attacks_below_the_as_is_floor(tmp_path: Path) -> None:
    from masquerade.report.scorecard import build_scorecard_report

    def row(setting: str, level: int, attack: str, ssim: float, utility: float) -> dict[str, Any]:
        return {
            "scheme": "x",
            "setting": setting,
            "level": level,
            "attack": attack,
            "ssim": ssim,
            "psnr": 10.0,
            "success": 0.0,
            "mr": None,
            "utility": utility,
            "tested_on": "clean images",
            "cost_s": 0.0,
            "train_vs_plain": 1.0,
            "encode_images_per_s": 1.0,
            "uses": ["encodings"],
        }

    rows = [
        row("good", 1, "as-is", 0.2, 0.9),
        row("good", 2, "as-is", 0.2, 0.9),
        row("good", 2, "strong", 0.9, 0.9),
        row("weak", 1, "as-is", 0.3, 0.1),
        row("weak", 2, "as-is", 0.3, 0.1),
        row("weak", 2, "failed", 0.1, 0.1),
        row("weak", 2, "level", 0.295, 0.1),
    ]  # within 0.01 of the floor: not a finding
    found = findings(rows, 10)
    assert [(f["kind"], f["setting"], f.get("attack")) for f in found] == [
        ("utility at or below chance", "weak", None),
        ("attack below the as-is floor", "weak", "failed"),
    ]
    assert "0.100 is at or below chance (0.10 for 10 classes)" in found[0]["text"]
    assert findings([row("good", 1, "as-is", 0.2, 0.11)], 10) == []  # above chance: nothing to explain
    # the floor is whatever attack declares itself one, not a name: without as-is's flag, no floor and no finding
    from masquerade.attacks.asis import AsIs
    from masquerade.contracts import is_baseline

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AsIs, "baseline", False)
        assert [f["kind"] for f in findings(rows, 10)] == ["utility at or below chance"]
        mp.setattr(AsIs, "baseline", "yes")  # a malformed flag makes no floor (the contract test says why)
        assert len(findings(rows, 10)) == 1
        with pytest.raises(InputError, match="baseline must be true or false"):
            is_baseline(AsIs)
    # a one-time-key setting also tested on fresh encodings of each test image: the finding says what that gave
    learned = dict(row("mixes", 1, "as-is", 0.2, 0.02), utility_encoded=0.67)
    assert "reaches 0.670: it learned the encodings" in findings([learned], 10)[0]["text"]
    # the report shows them, and a scorecard whose findings are malformed still renders
    (tmp_path / "scorecard.json").write_text(json.dumps({"rows": rows, "findings": found, "seed": 0}))
    page = build_scorecard_report(tmp_path).read_text()
    assert "Findings to explain" in page and page.count("class='finding'") == 2
    (tmp_path / "scorecard.json").write_text(json.dumps({"rows": rows, "findings": 7, "seed": 0}))
    assert "Findings to explain" not in build_scorecard_report(tmp_path).read_text()
    # `masquerade report` on an evaluation folder builds the scorecard's report, not an empty run report
    from masquerade.cli import main

    (tmp_path / "scorecard.json").write_text(json.dumps({"rows": rows, "findings": found, "seed": 0}))
    assert main(["--quiet", "report", str(tmp_path), "--out", str(tmp_path / "again.html")]) == 0
    assert "Findings to explain" in (tmp_path / "again.html").read_text()


def test_best_match_searches_unaligned_reconstructions_and_keeps_aligned_ones_in_place() -> None:
    g = np.random.default_rng(0)
    a = g.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    noise = g.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    recon = np.concatenate([noise[:2], a[::-1], noise[2:]])  # the targets, reversed, among noise
    best, p, idx = best_match(a, recon, aligned=False)
    assert np.allclose(best, 1.0) and (idx == np.array([5, 4, 3, 2])).all() and (p == 100).all()
    best, _, idx = best_match(a, np.concatenate([a[:2], noise[:2]]), aligned=True)
    assert best[:2] == pytest.approx([1, 1]) and (best[2:] < 0.5).all() and (idx == np.arange(4)).all()


def test_the_as_is_attack_shows_images_unchanged_and_signed_mixes_as_magnitudes() -> None:
    x = torch.rand(3, 3, 8, 8)
    r = AsIs().run(encodings=x)
    assert torch.equal(r.reconstructions, x) and not r.aligned
    z = torch.randn(2, 3, 8, 8)
    r = AsIs().run(encodings=z)
    want = z.abs() / z.abs().flatten(1).amax(1)[:, None, None, None]
    torch.testing.assert_close(r.reconstructions, want)
    assert AsIs.settings_against(create_scheme("disguise")) == {}
    assert AsIs.settings_against(create_scheme("shufflebits")) is None  # features are not images


# -- a whole (tiny) evaluation: serial, resumed, on Ray --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("evaluate") / "run"
    path = evaluate(_tiny(), out, verbose=False)
    return out, json.loads(path.read_text())


@pytest.fixture(scope="module")
def other_releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EvaluateSettings, list[dict[str, Any]]]:
    """One tiny evaluation of the settings that release something else than images: gradients and features."""
    settings = (
        SchemeSetting("identity", "no protection"),
        SchemeSetting("identity", "features in the clear", shares="features"),
        SchemeSetting("shufflebits", "ShuffleBits fixed", (("scope", "fixed"),), shares="features"),
        SchemeSetting("shufflebits", "ShuffleBits vector", (("scope", "vector"),), shares="features"),
        *(
            SchemeSetting("ats", f"ATS {p}", (("policy", p), ("always", True)), shares="gradients")
            for p in ("none", "3-1-7")
        ),
    )
    s = _tiny(
        settings=settings,
        schemes=("ats", "shufflebits"),
        levels=(1, 2),
        targets=8,
        pairs=2,
        train=100,
        test=50,
        auxiliary=100,
        inversion_iterations=20,
        inversion_images=3,
    )
    out = tmp_path_factory.mktemp("evaluate-other") / "run"
    return out, s, json.loads(evaluate(s, out, verbose=False).read_text())["rows"]


@pytest.mark.slow
def test_ats_rows_invert_the_gradient_of_the_transformed_image_and_score_against_the_private_one(
    other_releases: tuple[Path, EvaluateSettings, list[dict[str, Any]]],
) -> None:
    out, s, rows = other_releases
    assert {(r["setting"], r["level"], r["attack"]) for r in rows if r["scheme"] == "ats"} == {
        (f"ATS {p}", lv, "inverting_gradients") for p in ("none", "3-1-7") for lv in (1, 2)
    } | {("ATS 3-1-7", lv, "ats-adaptive") for lv in (1, 2)}
    train = _data_of(s)
    for policy in ("none", "3-1-7"):
        row = _by(rows, f"ATS {policy}", 1, "inverting_gradients")
        assert row["attack_metrics"]["targets"] == 3 and row["attack_metrics"]["iterations"] == 20
        with np.load(out / "cells" / f"{row['cell']}.npz") as z:
            targets, given, matched = z["targets"], z["encodings"], z["matched"]
        assert np.array_equal(targets, train[:3])
        # the gradient came from the image itself without a policy, from a transformed one with it
        assert np.array_equal(given, targets) == (policy == "none")
        # the row's SSIM is that of the aligned reconstructions against the private (untransformed) images
        assert row["ssim"] == pytest.approx(float(best_match(targets, matched, aligned=True)[0].mean()), abs=1e-4)
        assert row["mr"] is not None and 0 <= row["utility"] <= 1


@pytest.mark.slow
def test_feature_rows_decrypt_losslessly_and_a_fixed_key_falls_to_key_recovery(
    other_releases: tuple[Path, EvaluateSettings, list[dict[str, Any]]],
) -> None:
    out, _, rows = other_releases
    assert {(r["setting"], r["level"]) for r in rows if r["attack"] == "feature-inversion"} == {
        ("features in the clear", 2),
        ("ShuffleBits fixed", 2),
        ("ShuffleBits vector", 2),
    }
    plain = _by(rows, "no protection", 1, "as-is")["utility"]
    # the key holder decrypts bit for bit (the cell checks it) and classifies as the clean model does
    for setting in ("features in the clear", "ShuffleBits fixed", "ShuffleBits vector"):
        assert _by(rows, setting, 2, "feature-inversion")["utility"] == plain
    # the published fixed key: its bit order comes back from the ciphertexts, close enough to decrypt the features
    assert _by(rows, "ShuffleBits fixed", 2, "feature-inversion")["attack_metrics"]["decrypted_cosine"] > 0.99
    assert "decrypted_cosine" not in _by(rows, "ShuffleBits vector", 2, "feature-inversion")["attack_metrics"]
    assert (out / "report.html").is_file()


def _data_of(s: EvaluateSettings) -> np.ndarray:
    from masquerade.workflows.evaluate.cells import data_for

    return data_for(s).train.images


@pytest.mark.slow
def test_a_tiny_evaluation_scores_what_each_level_breaks(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, card = tiny_run
    rows = card["rows"]
    need = {"scheme", "setting", "level", "attack", "ssim", "psnr", "success", "mr", "utility", "cost_s", "seed"}
    assert all(need <= set(r) for r in rows)
    assert {r["level"] for r in rows} == {1, 2, 3}
    for lv in (1, 2, 3):  # no protection: every level recovers every image
        ident = _by(rows, "no protection", lv, "as-is")
        assert ident["ssim"] == pytest.approx(1.0) and ident["success"] == 1.0
    # RMT: the disguised images themselves show little; thirty known pairs give the key away
    assert _by(rows, "RMT b=4", 1, "as-is")["ssim"] < 0.5
    kp = _by(rows, "RMT b=4", 3, "disguise-known-plaintext")
    assert kp["ssim"] > 0.9 and kp["success"] == 1.0
    # from level 2 the disguised training set's statistics give the key away too (a few hundred images here)
    aligned, moments = _by(rows, "RMT b=4", 2, "disguise-alignment"), _by(rows, "RMT b=4", 2, "disguise-moments")
    assert aligned["ssim"] > 0.5 and aligned["ssim"] > moments["ssim"] + 0.3, (aligned["ssim"], moments["ssim"])
    assert _by(rows, "AES-ECB b=4", 3, "aes-ecb-codebook")["attack_metrics"]["decoded_share"] > 0.3
    assert all(0 <= r["utility"] <= 1 and r["cost_s"] >= 0 for r in rows)
    # one-time keys (InstaHide) are also tested on fresh encodings of the test images; dataset keys are not
    assert 0 <= _by(rows, "cross k=6", 1, "as-is")["utility_encoded"] <= 1
    assert _by(rows, "RMT b=4", 1, "as-is")["utility_encoded"] is None
    # MR: the clean model recognises the identity row's "reconstructions" (the images) as well as it does
    assert _by(rows, "no protection", 1, "as-is")["mr"] is not None
    assert (out / "report.html").is_file() and (out / "scorecard.json").is_file()


@pytest.mark.slow
def test_an_interrupted_evaluation_resumes_with_the_cells_it_lacks(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    out, card = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "scorecard.json").unlink()
    victims = sorted((copy / "cells").glob("attack-disguise-rmt*known-pairs.json"))
    assert victims
    victims[0].unlink()  # as if the run was killed before this cell ended
    (copy / "cells" / "junk.json.tmp").write_text("{")  # a half-written temporary file is ignored
    # a cell's arrays truncated, another's replaced by a third cell's: both cells run again, nothing else
    npz = sorted(p for p in (copy / "cells").glob("attack-*.npz") if "known-pairs" not in p.name)
    assert len(npz) >= 3
    npz[0].write_bytes(npz[0].read_bytes()[:100])
    shutil.copyfile(npz[2], npz[1])
    from masquerade.fileio import exclusive_lock

    with exclusive_lock(copy), pytest.raises(InputError, match="another masquerade process"):
        evaluate(_tiny(), copy, verbose=False)  # a second evaluation into a folder in use stops at once
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        evaluate(_tiny(), copy)
    lines = buf.getvalue().splitlines()
    assert any("resuming:" in ln for ln in lines)
    ran = sorted(ln for ln in lines if ln.startswith("["))
    assert len(ran) == 3 and sum("disguise-known-plaintext" in ln for ln in ran) >= 1, ran
    again = json.loads((copy / "scorecard.json").read_text())
    assert comparable(again) == comparable(card)
    # another plan in the same folder is refused, not mixed in
    with pytest.raises(InputError, match="other settings"):
        evaluate(_tiny(seed=1), copy, verbose=False)


@pytest.mark.slow
def test_two_ray_workers_give_the_serial_scorecard(tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    _, card = tiny_run
    # the plan's settings less the challenge (its two attack cells are most of the serial run's time): a cell's
    # bits do not depend on the plan around it, so Ray's rows are the serial run's rows of these settings
    keep = [st for st in _tiny().settings if st.scheme != "instahide"]
    path = evaluate(_tiny(settings=tuple(keep)), tmp_path / "ray", workers=2, verbose=False)
    labels = {st.label for st in keep}
    serial = [r for r in comparable(card) if r["setting"] in labels]
    assert comparable(json.loads(path.read_text())) == serial and {r["setting"] for r in serial} == labels
    assert any(r["attack"] == "aes-ecb-codebook" for r in serial)  # its network fill ran on a Ray worker too


@pytest.mark.slow
def test_settings_the_images_do_not_fit_are_skipped_with_the_reason(tmp_path: Path) -> None:
    # 28×28 digits: block 8 does not divide them; the evaluation says so up front instead of failing mid-way
    s = _tiny(
        settings=(
            SchemeSetting("identity", "no protection"),
            SchemeSetting("disguise", "RMT b=8", (("transform", "rmt"), ("block", 8))),
            SchemeSetting("disguise", "RMT b=4", (("transform", "rmt"), ("block", 4))),
        ),
        levels=(1,),
    )
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        card = json.loads(evaluate(s, tmp_path / "run").read_text())
    assert "skipping RMT b=8: disguise: block size 8 must divide the image size 28×28" in buf.getvalue()
    assert {r["setting"] for r in card["rows"]} == {"no protection", "RMT b=4"}
    assert "block size 8" in card["settings"]["RMT b=8"]["skipped"]
    assert "Not evaluated" in (tmp_path / "run" / "report.html").read_text()
    # the quick plan's settings all fit the bundled digits (the probe uses the private set, as the release does)
    from masquerade.workflows.evaluate.cells import data_for, unfit

    quick = EvaluateSettings.for_quick()
    assert unfit(quick, data_for(quick)) == {}


# -- the report, as a reader sees it ------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_report_renders_with_every_image_and_the_plot(tiny_run: tuple[Path, dict[str, Any]], browser: Any) -> None:
    out, card = tiny_run
    page = browser.new_page()
    page.goto((out / "report.html").resolve().as_uri())
    page.wait_for_load_state("load")
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth > 0])")
    assert images and all(ok for _, ok in images), [alt for alt, ok in images if not ok]
    assert any(alt == "privacy-utility plot" for alt, _ in images)
    text = page.inner_text("body")
    for heading in ("What the adversary holds", "Summary", "identity", "instahide", "disguise"):
        assert heading in text
    page.close()


# -- the command line ---------------------------------------------------------------------------------------------


def test_evaluate_refuses_bad_input_in_one_line(tmp_path: Path, cli: Any) -> None:
    r = cli("evaluate", "--out", str(tmp_path / "a"), "--levels", "0,5")
    assert r.returncode == 2 and "levels" in r.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("do not overwrite")
    r = cli("evaluate", "--out", str(busy), "--quick")
    assert r.returncode == 2 and "not an evaluation" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("evaluate", "--out", str(tmp_path / "b"), "--schemes", "rot13")
    assert r.returncode == 2 and "unknown schemes" in r.stderr
    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(flat / f"{i}.png")
    r = cli("evaluate", "--out", str(tmp_path / "c"), "--data", str(flat), "--quick")
    assert r.returncode == 2 and "labelled" in r.stderr
