from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from masquerade.attacks.instahide_challenge import (ChallengeAttackSettings, ColourMap, _cubic, _grid_edges,
                                                    attack_challenge, parse_slots, public_statistics,
                                                    reconstruct_private, sign_sync, simulate_challenge)
from masquerade.challenge import baseline_recovery, make_challenge, score_challenge
from masquerade.cli import main
from masquerade.data import ImageSet, extract_patches, load_images
from masquerade.errors import InputError
from masquerade.metrics import ssim

from .conftest import shared


def test_parse_slots_reads_classes_and_coefficients() -> None:
    lab = np.zeros((3, 10), np.float32)
    lab[0, [2, 7]] = [0.1, 0.3]
    lab[1, 4] = 0.5            # both private images in class 4: the label shows the sum
    lab[2, [0, 9]] = [0.2, 0.2]
    s = parse_slots(lab, 3)
    assert s.c.tolist() == [[7, 2], [4, 4], [0, 9]]
    assert np.allclose(s.lam, [[0.3, 0.1], [0.25, 0.25], [0.2, 0.2]])
    assert s.same.tolist() == [False, True, False]
    bad = lab.copy()
    bad[0, 5] = 0.1
    with pytest.raises(InputError, match="row 0 has 3"):
        parse_slots(bad, 3)
    with pytest.raises(InputError, match="shape"):
        parse_slots(lab, 4)
    none = parse_slots(None, 5)
    assert none.c.shape == (5, 2) and (none.c == 0).all() and 0.1 < none.lam[0, 0] < 0.4


def test_sign_sync_undoes_random_pixel_signs() -> None:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(40, 3, 40, 40, generator=g), 9, 1)   # smooth fields
    smooth = smooth + smooth.mean(1, keepdim=True)                                            # correlated colours
    x = smooth.permute(0, 2, 3, 1).reshape(40, -1)
    flips = torch.randint(0, 2, (x.shape[1],), generator=g).float() * 2 - 1
    s = sign_sync(x * flips, _grid_edges(32, 32, 3))
    agree = (s * flips > 0).float().mean().item()
    assert max(agree, 1 - agree) > 0.995     # right up to one global sign


def test_colour_map_fits_a_cubic() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5000, 3, generator=g) * 2 - 1
    coef = (torch.rand(20, 3, generator=g, dtype=torch.float64) * 2 - 1) * 0.05   # |y| <= 1: no clamping
    y = (_cubic(x.double()) @ coef).float()
    m = ColourMap.fit(x, y, ridge=1e-9)
    assert torch.allclose(m(x), y, atol=1e-4)
    assert np.allclose(m.coef, coef.numpy(), atol=1e-3)


@pytest.fixture(scope="module")
def cifar_and_patches() -> tuple[ImageSet, np.ndarray]:
    imgs = load_images(shared("cifar10-train-20k.npz"))
    patches = extract_patches(shared("imagenet-sample"), 300, rng=7, progress=False).images
    return imgs, patches


def test_reconstruction_true_pairing_succeeds_random_fails(cifar_and_patches) -> None:
    imgs, patches = cifar_and_patches
    gen = np.random.default_rng(2)
    pick = gen.choice(len(imgs), 24, replace=False)
    sim = simulate_challenge(imgs.images[pick], imgs.labels[pick].astype(np.int64), patches, per_image=30, rng=gen)
    mean, var = public_statistics(patches)
    from masquerade.attacks.instahide_challenge import _public_energy

    lam = sim["lam"][:, :2]
    energy = _public_energy(1 - lam.sum(1), 6, 0.65, 0.3)
    truth = torch.from_numpy(imgs.images[pick]).permute(0, 3, 1, 2)

    def score(x: torch.Tensor) -> float:
        rec = ((x.clamp(-1, 1) + 1) * 127.5).round().reshape(-1, 32, 32, 3).permute(0, 3, 1, 2)
        return float(ssim(rec, truth, data_range=255).mean())

    x, nll = reconstruct_private(sim["encryption"], sim["pairs"], lam, 24, mean, var, energy)
    wrong = sim["pairs"].copy()
    wrong[:, 1] = gen.permutation(wrong[:, 1])
    wrong[:, 0] = gen.permutation(wrong[:, 0])
    xw, nll_w = reconstruct_private(sim["encryption"], wrong, lam, 24, mean, var, energy)
    good, bad = score(x), score(xw)
    assert good > 0.75, good
    assert bad < 0.3 and nll < nll_w, (bad, nll, nll_w)


def test_cli_attack_beats_baseline_without_the_truth(cifar_and_patches, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    imgs, patches = cifar_and_patches
    test = load_images(shared("cifar10-test.npz"))
    make_challenge(test, ImageSet(patches), tmp_path / "ch", tmp_path / "truth", n_private=10, per_image=50, rng=5)
    hidden = tmp_path.parent / f"{tmp_path.name}-truth-away"
    shutil.move(str(tmp_path / "truth"), hidden)       # the attack runs with the truth folder absent
    try:
        np.savez(tmp_path / "pub.npz", images=patches)
        aux = tmp_path / "aux.npz"
        np.savez(aux, images=imgs.images[:2000], labels=imgs.labels[:2000])
        argv = ["--quiet", "challenge", "attack", str(tmp_path / "ch"), "--out", str(tmp_path / "att"),
                "--public", str(tmp_path / "pub.npz"), "--aux", str(aux), "--n-private", "10"]
        assert main(argv) == 0
        capsys.readouterr()
        state = json.loads((tmp_path / "att" / "attack.json").read_text())
        assert set(state["seconds"]) >= {"public", "clusters", "reconstruct", "colour", "output"}
        assert state["images_found"] == 10 and state["n_private_given"]
        assert (tmp_path / "att" / "private_images.png").is_file()
        # resumable: a second run reuses every stage
        assert main(argv) == 0
        again = json.loads((tmp_path / "att" / "attack.json").read_text())
        assert again["seconds"]["reconstruct"] == state["seconds"]["reconstruct"]
    finally:
        shutil.move(str(hidden), tmp_path / "truth")
    s = score_challenge(tmp_path / "truth", tmp_path / "att" / "decryption.npy")
    base = score_challenge(tmp_path / "truth", baseline_recovery(np.load(tmp_path / "ch" / "encryption.npy")))
    assert s["mean_max_ssim"] > 0.7 and s["success_rate"] > 0.5, s
    assert base["mean_max_ssim"] < 0.1 and base["success_rate"] == 0.0


def test_attack_refuses_bad_input(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    with pytest.raises(InputError, match="no encryption.npy"):
        attack_challenge(tmp_path / "c", tmp_path / "o")
    np.save(tmp_path / "c" / "encryption.npy", np.zeros((4, 32, 32, 1), np.float32))
    with pytest.raises(InputError, match="colour"):
        attack_challenge(tmp_path / "c", tmp_path / "o")
    np.save(tmp_path / "c" / "encryption.npy", np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(InputError, match="no label.npy"):
        attack_challenge(tmp_path / "c", tmp_path / "o")
    with pytest.raises(InputError, match="n_private"):
        ChallengeAttackSettings(n_private=0)


def test_unlabelled_clustering_names_two_distinct_images(cifar_and_patches) -> None:
    from masquerade.attacks.instahide_challenge import cluster_slots

    imgs, patches = cifar_and_patches
    gen = np.random.default_rng(4)
    pick = gen.choice(len(imgs), 6, replace=False)
    sim = simulate_challenge(imgs.images[pick], imgs.labels[pick].astype(np.int64), patches, per_image=20, rng=gen)
    slots = parse_slots(None, len(sim["encryption"]))
    assert not slots.labelled and not slots.same.any()
    cl = cluster_slots(sim["encryption"], slots, n_private=6)
    assert cl["n_images"] == 6 and (cl["pairs"][:, 0] != cl["pairs"][:, 1]).all()
    assert (cl["confidence"] >= 0).all()
