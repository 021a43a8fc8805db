from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from masquerade.cli import main
from masquerade.data import ImageSet, extract_patches, load_images
from masquerade.errors import InputError
from masquerade.instahide.attack import ChallengeAttackSettings, ColourMap, attack_challenge
from masquerade.instahide.challenge import baseline_recovery, make_challenge, score_challenge
from masquerade.instahide.colour import _cubic
from masquerade.instahide.recipe import parse_slots, public_statistics, simulate_challenge
from masquerade.instahide.reconstruct import _grid_edges, reconstruct_private, sign_sync
from masquerade.metrics import ssim
from tests.conftest import shared


def test_parse_slots_reads_classes_and_coefficients() -> None:
    lab = np.zeros((3, 10), np.float32)
    lab[0, [2, 7]] = [0.1, 0.3]
    lab[1, 4] = 0.5  # both private images in class 4: the label shows the sum
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
    smooth = torch.nn.functional.avg_pool2d(torch.randn(40, 3, 40, 40, generator=g), 9, 1)  # smooth fields
    smooth = smooth + smooth.mean(1, keepdim=True)  # correlated colours
    x = smooth.permute(0, 2, 3, 1).reshape(40, -1)
    flips = torch.randint(0, 2, (x.shape[1],), generator=g).float() * 2 - 1
    s = sign_sync(x * flips, _grid_edges(32, 32, 3))
    agree = (s * flips > 0).float().mean().item()
    assert max(agree, 1 - agree) > 0.995  # right up to one global sign


def test_grid_basis_diagonalises_the_pixel_graph_laplacian() -> None:
    from masquerade.instahide.reconstruct import _grid_edges, _GridBasis

    for shape in [(4, 5, 3), (6, 3, 2), (8, 8, 1)]:
        d = int(np.prod(shape))
        e = _grid_edges(*shape)
        lap = np.zeros((d, d))
        np.add.at(lap, (e[:, 0], e[:, 1]), -1.0)
        np.add.at(lap, (e[:, 1], e[:, 0]), -1.0)
        lap[np.diag_indices(d)] -= lap.sum(1)
        basis = _GridBasis(shape)
        v = basis.forward(torch.eye(d)).double().numpy()
        assert np.allclose(v.T @ v, np.eye(d), atol=1e-5)
        assert np.allclose(v @ np.diag(basis.vals.double().numpy()) @ v.T, lap, atol=1e-5)
        x = torch.randn(3, d)
        assert torch.allclose(basis.inverse(basis.forward(x)), x, atol=1e-5)


def test_whitening_from_few_encodings_keeps_the_inner_products() -> None:
    from masquerade.instahide.reconstruct import _whitening

    gen = torch.Generator().manual_seed(0)
    few = (
        torch.randn(12, 40, generator=gen, dtype=torch.float64)
        @ torch.randn(40, 60, generator=gen, dtype=torch.float64)
        * 0.1
    )
    f, _, t = _whitening(few, 1e-3)  # E < D: from the E×E Gram
    many = torch.randn(70, 60, generator=gen, dtype=torch.float64)
    vals, vecs = np.linalg.eigh((f.T @ f).numpy())  # the D×D route on the same centred squares
    w = vecs / np.sqrt(np.maximum(vals, 0) + 1e-3 * vals.max())
    x = torch.randn(5, 60, generator=gen, dtype=torch.float64).numpy()
    assert np.allclose((x @ t.numpy()) @ (x @ t.numpy()).T, (x @ w) @ (x @ w).T, rtol=1e-6, atol=1e-9)
    assert _whitening(many, 1e-3)[2].shape == (60, 60)  # E >= D: the D×D route


def test_colour_map_fits_a_cubic() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5000, 3, generator=g) * 2 - 1
    coef = (torch.rand(20, 3, generator=g, dtype=torch.float64) * 2 - 1) * 0.05  # |y| <= 1: no clamping
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
    from masquerade.instahide.recipe import _public_energy

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


def test_cli_attack_beats_baseline_without_the_truth(
    cifar_and_patches, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs, patches = cifar_and_patches
    test = load_images(shared("cifar10-test.npz"))
    make_challenge(test, ImageSet(patches), tmp_path / "ch", tmp_path / "truth", n_private=10, per_image=50, rng=5)
    hidden = tmp_path.parent / f"{tmp_path.name}-truth-away"
    shutil.move(str(tmp_path / "truth"), hidden)  # the attack runs with the truth folder absent
    try:
        np.savez(tmp_path / "pub.npz", images=patches)
        aux = tmp_path / "aux.npz"
        few = np.concatenate([np.flatnonzero(imgs.labels == c)[:200] for c in range(10)])
        np.savez(aux, images=imgs.images[few], labels=imgs.labels[few])
        argv = [
            "--quiet",
            "challenge",
            "attack",
            str(tmp_path / "ch"),
            "--out",
            str(tmp_path / "att"),
            "--public",
            str(tmp_path / "pub.npz"),
            "--aux",
            str(aux),
            "--n-private",
            "10",
        ]
        assert main(argv) == 0
        capsys.readouterr()
        state = json.loads((tmp_path / "att" / "attack.json").read_text())
        assert set(state["seconds"]) >= {"public", "clusters", "refine", "reconstruct", "prior", "output"}
        assert state["images_found"] == 10 and state["n_private_given"] and state["prior"]["sha256"]
        assert (tmp_path / "att" / "private_images.png").is_file()
        assert state["seconds"]["refine"] > 0
        # resumable: a second run reuses every stage
        assert main(argv) == 0
        again = json.loads((tmp_path / "att" / "attack.json").read_text())
        assert again["seconds"]["reconstruct"] == state["seconds"]["reconstruct"]
        assert again["seconds"]["refine"] == state["seconds"]["refine"]
        # without the prior, the colour map learned on the auxiliary images takes its place
        assert main(argv[:5] + [str(tmp_path / "att-np")] + argv[6:] + ["--prior", "none"]) == 0
        plain = json.loads((tmp_path / "att-np" / "attack.json").read_text())
        assert "colour" in plain["seconds"] and "prior" not in plain["seconds"] and plain["prior"] is None
    finally:
        shutil.move(str(hidden), tmp_path / "truth")
    assert score_challenge(tmp_path / "truth", tmp_path / "att-np")["mean_max_ssim"] > 0.7
    s = score_challenge(tmp_path / "truth", tmp_path / "att")  # the attack's folder is read as its decryption.npy
    from_npy = score_challenge(tmp_path / "truth", tmp_path / "att" / "decryption.npy")
    assert s["mean_max_ssim"] == from_npy["mean_max_ssim"]
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
    # label rows the recipe cannot have: renormalised to 1, more than 1 in all, one image above `upper`, too little
    lab = np.zeros((4, 10), np.float32)
    lab[:, 0], lab[:, 1] = 0.4, 0.2
    for bad, needle in (
        (lab / lab.sum(1, keepdims=True), "renormalised"),
        (lab * 2, "row 0 holds 1.2"),
        (np.where(lab == 0.4, 0.7, lab), "at most 0.65"),
        (lab * 0.3, "row 0 holds 0.18"),
    ):
        np.save(tmp_path / "c" / "label.npy", bad.astype(np.float32))
        with pytest.raises(InputError, match=needle):
            attack_challenge(tmp_path / "c", tmp_path / "o")
    with pytest.raises(InputError, match="n_private"):
        ChallengeAttackSettings(n_private=0)


def test_unlabelled_clustering_names_two_distinct_images(cifar_and_patches) -> None:
    from masquerade.instahide.grouping import cluster_slots

    imgs, patches = cifar_and_patches
    gen = np.random.default_rng(4)
    pick = gen.choice(len(imgs), 6, replace=False)
    sim = simulate_challenge(imgs.images[pick], imgs.labels[pick].astype(np.int64), patches, per_image=20, rng=gen)
    slots = parse_slots(None, len(sim["encryption"]))
    assert not slots.labelled and not slots.same.any()
    cl = cluster_slots(sim["encryption"], slots, n_private=6)
    assert cl["n_images"] == 6 and (cl["pairs"][:, 0] != cl["pairs"][:, 1]).all()
    assert (cl["confidence"] >= 0).all()


# -- grouping: counts, scores, balanced assignment, refinement ------------------------------------------------------


def test_images_per_class_recovers_exact_counts_from_rough_guesses() -> None:
    from masquerade.instahide.grouping import images_per_class

    rng = np.random.default_rng(0)
    for t in (10, 20, 50):
        n_c = {c: int(v) for c, v in enumerate(rng.integers(3, 15, 10))}
        counts = {c: 2 * t * n for c, n in n_c.items()}
        e = sum(n_c.values()) * t
        guesses = {c: max(1, int(round(n * rng.uniform(0.7, 1.3)))) for c, n in n_c.items()}
        got, passes = images_per_class(counts, e, guesses=guesses)
        assert got == n_c and passes == t
    # given n, the images are shared out by slot counts and sum to n
    got, passes = images_per_class({0: 300, 1: 200, 2: 100}, 300, n_private=7)
    assert sum(got.values()) == 7 and got[0] >= got[1] >= got[2] >= 1 and passes == 300 / 7
    with pytest.raises(InputError):
        images_per_class({0: 10}, 5)


def test_balanced_pairs_respects_capacities() -> None:
    import itertools

    from masquerade.instahide.grouping import Candidates, balanced_pairs

    # 8 encodings choose one of 4 pairs over 4 images; image 0 scores best almost everywhere, but each image has
    # room for 4 slots. Brute force over all 4^8 choices gives the best balanced total.
    gen = np.random.default_rng(5)
    a = np.tile([0, 1, 2, 3], (8, 1))
    b = np.tile([1, 2, 3, 0], (8, 1))
    score = (gen.random((8, 4)) * 0.2 + np.array([1.0, 0.6, 0.5, 0.4])).astype(np.float32)
    cand = Candidates(a, b, np.full(a.shape, -1), score)
    greedy, _, dev = balanced_pairs(cand, 4, steps=1)
    assert (greedy[:, 0] == 0).all() and dev > 0  # no prices yet: everyone takes image 0
    best_total = max(
        score[np.arange(8), list(ch)].sum()
        for ch in itertools.product(range(4), repeat=8)
        if np.bincount(np.concatenate([a[0, list(ch)], b[0, list(ch)]]), minlength=4).tolist() == [4, 4, 4, 4]
    )
    pairs, k, imbalance = balanced_pairs(cand, 4, temperature=10.0, steps=300, rate=0.05)
    assert imbalance == 0 and np.bincount(pairs.ravel(), minlength=4).tolist() == [4, 4, 4, 4]
    assert score[np.arange(8), k].sum() >= best_total - 0.05
    cand.score[2] = -np.inf  # an encoding without candidates is reported as such
    pairs, k, _ = balanced_pairs(cand, 4)
    assert k[2] == -1 and (pairs[2] == -1).all() and (k[[0, 1, 3]] >= 0).all()


@pytest.fixture(scope="module")
def small_challenge(cifar_and_patches):
    """30 private CIFAR-10 training images (3 per class) x 30 passes, with the truth ordered like the label's
    slots (larger coefficient first)."""
    imgs, patches = cifar_and_patches
    gen = np.random.default_rng(11)
    pick = np.concatenate([gen.choice(np.flatnonzero(imgs.labels == c), 3, replace=False) for c in range(10)])
    sim = simulate_challenge(imgs.images[pick], imgs.labels[pick].astype(np.int64), patches, per_image=30, rng=gen)
    slots = parse_slots(sim["label"], len(sim["label"]))
    swap = sim["lam"][:, 1] > sim["lam"][:, 0]
    truth = np.where(swap[:, None], sim["pairs"][:, ::-1], sim["pairs"])
    mean, var = public_statistics(patches)
    from masquerade.instahide.recipe import _public_energy

    energy = _public_energy(1 - slots.lam.sum(1), 6, 0.65, 0.3)
    x = torch.from_numpy(imgs.images[pick].astype(np.float32) / 127.5 - 1).reshape(30, -1)
    enc = torch.from_numpy(sim["encryption"]).reshape(len(truth), -1)
    return {
        "enc": enc,
        "slots": slots,
        "truth": truth,
        "x": x,
        "mean": mean,
        "var": var,
        "energy": energy,
        "classes": imgs.labels[pick].astype(np.int64),
        "pick": pick,
        "imgs": imgs,
    }


def test_pair_scorer_finds_the_true_pair_with_true_images_not_with_wrong_ones(small_challenge) -> None:
    from masquerade.instahide.grouping import PairScorer, balanced_pairs

    c = small_challenge
    scorer = PairScorer(c["enc"], c["slots"], c["mean"], c["var"], c["energy"])
    distinct = ~c["slots"].same
    cand = scorer.score(c["x"], c["classes"])
    assert np.isfinite(cand.score).any(1).all()
    best = np.argmax(cand.score, 1)
    rows = np.arange(len(best))
    hit0 = (cand.a[rows, best] == c["truth"][:, 0])[distinct].mean()
    assert hit0 > 0.95, hit0  # the larger slot's image, among its class's 3
    # wrong images (each replaced by another image of its class): the scores no longer point at the truth
    perm = np.arange(30).reshape(10, 3)[:, [1, 2, 0]].ravel()
    wrong = scorer.score(c["x"][perm], c["classes"])
    best_w = np.argmax(wrong.score, 1)
    hit_w = (wrong.a[rows, best_w] == c["truth"][:, 0])[distinct].mean()
    assert hit_w < 0.2, hit_w
    pairs, _, imbalance = balanced_pairs(cand, 30)
    assert (pairs[distinct, 0] == c["truth"][distinct, 0]).mean() > 0.95 and imbalance < 0.05 * 2 * len(pairs)


def test_refinement_repairs_a_corrupted_grouping(small_challenge) -> None:
    from masquerade.instahide.grouping import refine_pairs

    c = small_challenge
    gen = np.random.default_rng(3)
    start = c["truth"].copy()
    bad = gen.random(start.shape) < 0.15  # a share of the slots moved to another image of the class
    shifted = (start // 3) * 3 + (start % 3 + gen.integers(1, 3, start.shape)) % 3
    start[bad] = shifted[bad]
    start[c["slots"].same, 1] = start[c["slots"].same, 0]  # same-class second slots unknown, as clustering leaves them
    acc = lambda p: (p == c["truth"]).mean(0)  # noqa: E731
    before = acc(start)
    res = refine_pairs(c["enc"], c["slots"], start, 30, c["mean"], c["var"], c["energy"], rounds=2)
    after = acc(res["pairs"])
    # measured: (0.840, 0.787) -> (0.907, 0.808)
    assert after[0] > before[0] + 0.04 and after[1] > before[1], (before, after)


def test_stages_are_keyed_by_their_inputs_and_damage_is_recomputed(cifar_and_patches, tmp_path: Path) -> None:
    imgs, patches = cifar_and_patches
    test = load_images(shared("cifar10-test.npz"))
    for seed, name in ((1, "a"), (2, "b")):
        make_challenge(
            test, ImageSet(patches), tmp_path / name, tmp_path / f"{name}-truth", n_private=10, per_image=8, rng=seed
        )
    s = ChallengeAttackSettings(n_private=10, rounds=1, colour=False)
    out = tmp_path / "att"
    attack_challenge(tmp_path / "a", out, public=patches, settings=s, log=lambda m: None)
    first = np.load(out / "decryption.npy")
    assert score_challenge(tmp_path / "a-truth", out)["mean_max_ssim"] > 0.2
    # another challenge into the same folder: nothing of the first is reused
    attack_challenge(tmp_path / "b", out, public=patches, settings=s, log=lambda m: None)
    fresh = tmp_path / "att-fresh"
    attack_challenge(tmp_path / "b", fresh, public=patches, settings=s, log=lambda m: None)
    assert np.array_equal(np.load(out / "decryption.npy"), np.load(fresh / "decryption.npy"))
    assert not np.array_equal(np.load(out / "decryption.npy"), first)
    # a stage file cut short (a kill mid-copy) or emptied is recomputed, not an EOFError
    (out / "stages" / "reconstruct.npz").write_bytes(b"")
    (out / "stages" / "clusters.npz").write_bytes((fresh / "stages" / "clusters.npz").read_bytes()[:100])
    attack_challenge(tmp_path / "b", out, public=patches, settings=s, log=lambda m: None)
    assert np.array_equal(np.load(out / "decryption.npy"), np.load(fresh / "decryption.npy"))
    assert not list((out / "stages").glob("*.part"))


# -- the learned prior ------------------------------------------------------------------------------------------------


def test_prepare_prior_trains_resumes_and_loads(cifar_and_patches, tmp_path: Path) -> None:
    from masquerade.instahide.prior import PriorSettings, evidence, load_prior, prepare_prior

    imgs, patches = cifar_and_patches
    aux = tmp_path / "aux.npz"
    few = np.concatenate([np.flatnonzero(imgs.labels == c)[:40] for c in range(10)])
    np.savez(aux, images=imgs.images[few], labels=imgs.labels[few])
    np.savez(tmp_path / "pub.npz", images=patches)
    s = PriorSettings(passes=(4,), challenges=2, images=20, steps=30, batch=8, width=8, public_patches=100)
    out = tmp_path / "prior.safetensors"

    class Stop(Exception):
        pass

    def stop_after_simulating(msg: str) -> None:
        if "training pairs" in msg:
            raise Stop

    with pytest.raises(Stop):  # killed after the simulations: they are kept and reused
        prepare_prior(aux, out, public=tmp_path / "pub.npz", settings=s, log=stop_after_simulating)
    assert not out.exists() and len(list((tmp_path / "prior.safetensors.work").glob("sim-*.npz"))) == 2
    rng_state = torch.random.get_rng_state()
    rec = prepare_prior(aux, out, public=tmp_path / "pub.npz", settings=s, log=lambda m: None)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the global torch RNG is not used
    assert rec["pairs"] == 40 and rec["simulation_seconds"] < 1.0 and len(rec["sha256"]) == 64
    assert not (tmp_path / "prior.safetensors.work").exists()
    prior = load_prior(out, sha256=rec["sha256"])
    x = torch.rand(5, 32 * 32 * 3) * 2 - 1
    pairs = np.array([[0, 1], [1, 2], [3, 4]])
    y = prior(x, pairs, np.full((3, 2), 0.2), None)
    assert y.shape == x.shape and y.abs().max() <= 1
    expected = np.log([0.04, 0.08, 0.04, 0.04, 0.04]).tolist()
    assert evidence(pairs, np.full((3, 2), 0.2), None, 5).tolist() == pytest.approx(expected)
    # a file changed after its record is refused, and so is a file that is not a prior
    with pytest.raises(InputError, match="SHA-256"):
        load_prior(out, sha256="0" * 64)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="not a challenge prior"):
        load_prior(bad)
    with pytest.raises(InputError):
        PriorSettings(corrupt=(0.2, 1.5))


def test_shipped_prior_matches_its_record_and_cleans_unseen_reconstructions(cifar_and_patches) -> None:
    """The weights shipped in the package: their digest is the record's, and on images they were not trained on
    (CIFAR-10 test images; training used the training images) they raise the reconstructions' SSIM, well beyond
    what the same network with fresh random weights does."""
    from masquerade.instahide.prior import SHIPPED_PRIOR, ChallengePrior, default_prior
    from masquerade.instahide.recipe import _public_energy
    from masquerade.models.denoiser import ReconstructionDenoiser

    prior = default_prior()
    assert prior is not None, "no prior shipped: run `make weights`"
    record = json.loads(SHIPPED_PRIOR.with_suffix(".json").read_text())
    assert prior.meta["sha256"] == record["sha256"] and json.loads(prior.meta["settings"]) == record["settings"]
    _, patches = cifar_and_patches
    test = load_images(shared("cifar10-test.npz"))
    gen = np.random.default_rng(5)
    pick = np.concatenate([gen.choice(np.flatnonzero(test.labels == c), 3, replace=False) for c in range(10)])
    sim = simulate_challenge(test.images[pick], test.labels[pick].astype(np.int64), patches, per_image=20, rng=gen)
    lam = sim["lam"][:, :2]
    energy = _public_energy(1 - lam.sum(1), 6, 0.65, 0.3)
    mean, var = public_statistics(patches)
    x, _ = reconstruct_private(sim["encryption"], sim["pairs"], lam, 30, mean, var, energy)
    truth = torch.from_numpy(test.images[pick]).permute(0, 3, 1, 2)

    def score(v: torch.Tensor) -> float:
        rec = ((v.clamp(-1, 1) + 1) * 127.5).round().reshape(-1, 32, 32, 3).permute(0, 3, 1, 2)
        return float(ssim(rec, truth, data_range=255).mean())

    torch.manual_seed(0)
    untrained = ChallengePrior(ReconstructionDenoiser(int(record["settings"]["width"])), {}, "random")
    before = score(x)
    after = score(prior(x, sim["pairs"], lam, None))
    random_after = score(untrained(x, sim["pairs"], lam, None))
    assert after > before + 0.05 and after > random_after + 0.05, (before, after, random_after)


def test_a_damaged_prior_record_or_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import masquerade.instahide.prior as ip

    weights = tmp_path / "prior.safetensors"
    shutil.copy(ip.SHIPPED_PRIOR, weights)
    monkeypatch.setattr(ip, "SHIPPED_PRIOR", weights)
    weights.with_suffix(".json").write_text("{not json")
    with pytest.raises(InputError, match="prior record"):
        ip.default_prior()
    weights.with_suffix(".json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(InputError, match="SHA-256"):
        ip.default_prior()


def test_the_challenge_attack_runs_unlabelled_against_renormalised_labels() -> None:
    from masquerade.instahide.attack import ChallengeAttack
    from masquerade.registry import create_scheme

    kw = dict(k=6, mode="cross", private_per_mix=2, pixel_scale="[-1,1]")
    assert "use_labels" not in ChallengeAttack.settings_against(create_scheme("instahide", **kw))
    got = ChallengeAttack.settings_against(create_scheme("instahide", renormalize_labels=True, **kw))
    assert got is not None and got["use_labels"] is False
