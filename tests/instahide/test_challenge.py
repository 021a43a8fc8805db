from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from masquerade.cli import main
from masquerade.data import ImageSet
from masquerade.errors import InputError
from masquerade.instahide.challenge import (
    baseline_recovery,
    load_recovered,
    make_challenge,
    read_truth,
    score_challenge,
)


def _sets(seed: int = 0) -> tuple[ImageSet, ImageSet]:
    g = np.random.default_rng(seed)
    private = ImageSet(
        g.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), np.arange(60) % 10, tuple(f"c{i}" for i in range(10))
    )
    public = ImageSet(g.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8))
    return private, public


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path, ImageSet]:
    private, public = _sets()
    make_challenge(private, public, tmp_path / "ch", tmp_path / "truth", n_private=20, per_image=6, rng=3)
    return tmp_path / "ch", tmp_path / "truth", private


def test_challenge_layout_and_structure(small) -> None:
    ch, truth, private = small
    assert sorted(p.name for p in ch.iterdir()) == ["encryption.npy", "label.npy"]  # nothing else leaks
    enc = np.load(ch / "encryption.npy")
    lab = np.load(ch / "label.npy")
    t = read_truth(truth)
    assert enc.shape == (120, 32, 32, 3) and enc.dtype == np.float32 and lab.shape == (120, 10)
    assert t.private_images.shape == (20, 32, 32, 3) and t.private_images.dtype == np.uint8
    assert np.bincount(t.private_labels, minlength=10).tolist() == [2] * 10  # balanced over classes
    # every private image is slot 0 exactly per_image times; slot 1 is never the same image
    assert np.bincount(t.pairs[:, 0], minlength=20).tolist() == [6] * 20
    assert np.bincount(t.pairs[:, 1], minlength=20).tolist() == [6] * 20
    assert (t.pairs[:, 0] != t.pairs[:, 1]).all()
    lam = t.coefficients
    assert np.allclose(lam.sum(1), 1, atol=1e-6) and lam.max() <= 0.65 + 1e-6
    assert (lam[:, :2].sum(1) >= 0.3 - 1e-6).all()
    # labels are the coefficient-weighted one-hots of the two private images
    expect = np.zeros_like(lab)
    rows = np.arange(len(lab))
    np.add.at(expect, (rows, t.private_labels[t.pairs[:, 0]]), lam[:, 0])
    np.add.at(expect, (rows, t.private_labels[t.pairs[:, 1]]), lam[:, 1])
    assert np.allclose(lab, expect, atol=1e-6)
    # no public patch repeats within a pass: 20 images x 4 slots = 80 distinct of the 200
    pub = np.load(truth / "public_indices.npy")
    assert pub.shape == (120, 4)
    # the encodings order is shuffled: position i says nothing about which image is slot 0
    assert not np.array_equal(t.pairs[:20, 0], np.arange(20))
    # |encoding| equals |mix| of the truth (signs are the only unknown)
    pubimgs = np.load(truth / "public_patches.npz")["images"].astype(np.float64) / 255 * 2 - 1
    priv = t.private_images.astype(np.float64) / 255 * 2 - 1
    mix = lam[:, 0, None, None, None] * priv[t.pairs[:, 0]] + lam[:, 1, None, None, None] * priv[t.pairs[:, 1]]
    for j in range(4):
        mix += lam[:, 2 + j, None, None, None] * pubimgs[pub[:, j]]
    assert np.allclose(np.abs(enc), np.abs(mix), atol=1e-5)


def test_score_matches_skimage_on_every_pair(small) -> None:
    ch, truth, _ = small
    t = read_truth(truth)
    rec = baseline_recovery(np.load(ch / "encryption.npy"))
    scores = score_challenge(truth, rec)
    ref_a = np.array(
        [
            structural_similarity(r, t.private_images[a], channel_axis=-1, data_range=255)
            for r, a in zip(rec, t.pairs[:, 0])
        ]
    )
    ref_b = np.array(
        [
            structural_similarity(r, t.private_images[b], channel_axis=-1, data_range=255)
            for r, b in zip(rec, t.pairs[:, 1])
        ]
    )
    np.testing.assert_allclose(scores["per_encoding_max_ssim"], np.maximum(ref_a, ref_b), atol=1e-6)
    assert scores["mean_mean_ssim"] == pytest.approx(((ref_a + ref_b) / 2).mean(), abs=1e-6)
    assert scores["success_rate"] == pytest.approx(float((np.maximum(ref_a, ref_b) > 0.8).mean()))


def test_perfect_recovery_scores_one(small) -> None:
    ch, truth, _ = small
    t = read_truth(truth)
    perfect = t.private_images[t.pairs[:, 0]]
    s = score_challenge(truth, perfect)
    assert s["success_rate"] == 1.0 and s["mean_max_ssim"] == pytest.approx(1.0)
    assert s["private_recovered"] == 20 and s["mean_min_rmse"] == 0.0
    base = score_challenge(truth, baseline_recovery(np.load(ch / "encryption.npy")))
    assert base["success_rate"] < 0.05 and base["mean_max_ssim"] < 0.5


def test_recovery_folder_and_errors(small, tmp_path: Path) -> None:
    ch, truth, _ = small
    t = read_truth(truth)
    perfect = t.private_images[t.pairs[:, 0]]
    folder = tmp_path / "rec"
    folder.mkdir()
    for i, img in enumerate(perfect[:-2]):
        Image.fromarray(img).save(folder / f"{i}_recover.png")
    with pytest.raises(InputError, match="2 of 120 recoveries are missing .*118_recover.png"):
        score_challenge(truth, folder)
    Image.fromarray(perfect[-2]).save(folder / "118_recover.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "119_recover.png")
    with pytest.raises(InputError, match="119_recover.png is 16×16"):
        score_challenge(truth, folder)
    Image.fromarray(perfect[-1]).save(folder / "119_recover.png")
    assert score_challenge(truth, folder)["success_rate"] == 1.0
    np.save(tmp_path / "r.npy", perfect.astype(np.float32) / 255)
    assert score_challenge(truth, tmp_path / "r.npy")["success_rate"] == 1.0
    np.save(tmp_path / "bad.npy", perfect[:5])
    with pytest.raises(InputError, match="shape"):
        score_challenge(truth, tmp_path / "bad.npy")
    with pytest.raises(InputError, match="not a challenge truth folder"):
        score_challenge(ch, tmp_path / "r.npy")


def test_make_refuses_bad_layout(tmp_path: Path) -> None:
    private, public = _sets()
    with pytest.raises(InputError, match="outside the challenge folder"):
        make_challenge(private, public, tmp_path / "c", tmp_path / "c" / "truth", n_private=10, per_image=2, rng=0)
    with pytest.raises(InputError, match="only 60"):
        make_challenge(private, public, tmp_path / "c", tmp_path / "t", n_private=100, per_image=2, rng=0)


def test_cli_make_and_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = _sets(1)
    np.savez(tmp_path / "priv.npz", images=private.images, labels=private.labels)
    np.savez(tmp_path / "pub.npz", images=public.images)
    rc = main(
        [
            "--quiet",
            "challenge",
            "make",
            "--private",
            str(tmp_path / "priv.npz"),
            "--public",
            str(tmp_path / "pub.npz"),
            "--out",
            str(tmp_path / "ch"),
            "--truth",
            str(tmp_path / "tr"),
            "--n-private",
            "10",
            "--per-image",
            "5",
            "--seed",
            "4",
            "--run-out",
            str(tmp_path / "run1"),
        ]
    )
    assert rc == 0
    rec = baseline_recovery(np.load(tmp_path / "ch" / "encryption.npy"))
    np.save(tmp_path / "rec.npy", rec)
    capsys.readouterr()
    assert (
        main(
            [
                "challenge",
                "score",
                "--truth",
                str(tmp_path / "tr"),
                "--recovered",
                str(tmp_path / "rec.npy"),
                "--json",
                "--out",
                str(tmp_path / "run2"),
            ]
        )
        == 0
    )
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["encodings"] == 50 and 0 <= out["success_rate"] <= 1
    assert (tmp_path / "run2" / "metrics.json").is_file()


def test_load_recovered_grey(tmp_path: Path) -> None:
    arr = np.zeros((3, 8, 8), np.uint8)
    np.save(tmp_path / "g.npy", arr)
    assert load_recovered(tmp_path / "g.npy", 3, (8, 8, 1)).shape == (3, 8, 8, 1)
