"""Every registered attack runs from ``masquerade attack NAME``, on files the other commands write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from masquerade.cli import main
from masquerade.registry import list_attacks


def _images(path: Path, n: int = 60, size: int = 16, seed: int = 0, palette: bool = False) -> np.ndarray:
    g = np.random.default_rng(seed)
    if palette:  # tiled from a few 4×4 blocks, so AES-ECB ciphertext blocks repeat as on flat regions
        tiles = g.integers(0, 256, (12, 4, 4, 3), dtype=np.uint8)[g.integers(0, 12, (n, size // 4, size // 4))]
        imgs = tiles.transpose(0, 1, 3, 2, 4, 5).reshape(n, size, size, 3)
    else:  # smooth images (block statistics like natural ones)
        import torch

        base = torch.from_numpy(g.random((n, 3, 4, 4))).float()
        up = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
        imgs = (up.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    np.savez(path, images=imgs, labels=np.arange(n) % 3)
    return imgs


def _digits(path: Path, rows: np.ndarray) -> np.ndarray:
    """The digits our dependencies ship (``rows`` of them, as uint8 N×28×28×1) written as an ``.npz``."""
    from masquerade.data import load_images

    ds = load_images("bundled:mnist").select(rows)
    np.savez(path, images=ds.images, labels=ds.labels)
    return ds.images


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_attack_help_lists_every_attack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack"]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in list_attacks())
    for name in list_attacks():
        assert main(["attack", name, "--help"]) == 0
        assert "Threat model" in " ".join(capsys.readouterr().out.split())
    assert main(["attack", "nope"]) == 2
    assert "unknown attack 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "scheme_args,attack,extra,check",
    [
        (["--set", "transform=rmt"], "disguise-known-plaintext", "pairs", lambda m: m["ssim"] > 0.99),
        (
            ["--set", "transform=aes", "--set", "seeded_aes_key=true"],
            "aes-ecb-codebook",
            "pairs",
            lambda m: m["decoded_share"] > 0.9 and m["ssim"] > 0.9,
        ),
        (["--set", "transform=rmt", "--set", "permute=false"], "disguise-moments", "aux", lambda m: m["ssim"] > 0.3),
        # the whole disguised set's statistics, with its permutation: a server holds hundreds of disguised images
        (["--set", "transform=rmt"], "disguise-alignment", "aux", lambda m: m["ssim"] > 0.6),
    ],
)
def test_disguise_attacks_from_the_command_line(
    tmp_path: Path, scheme_args: list[str], attack: str, extra: str, check, capsys: pytest.CaptureFixture[str]
) -> None:
    # the alignment attack reads the statistics of the whole disguised set: digits, hundreds of them (random smooth
    # images are as likely mirrored as not, so no attack can tell a block from its mirror image on them)
    n = 520 if attack == "disguise-alignment" else 60
    order = np.random.default_rng(0).permutation(5000)
    imgs = (
        _digits(tmp_path / "data.npz", order[:n])
        if attack == "disguise-alignment"
        else _images(tmp_path / "data.npz", n=n, palette=attack == "aes-ecb-codebook")
    )
    assert (
        main(
            [
                "--quiet",
                "protect",
                "disguise",
                "--in",
                str(tmp_path / "data.npz"),
                "--out",
                str(tmp_path / "enc"),
                "--key",
                str(tmp_path / "k.safetensors"),
                "--seed",
                "1",
                *scheme_args,
            ]
        )
        == 0
    )
    enc = np.load(tmp_path / "enc" / "encodings.npy")
    np.save(tmp_path / "victims.npy", enc[20:])
    np.savez(tmp_path / "truth.npz", images=imgs[20:])
    args = [
        "--quiet",
        "attack",
        attack,
        "--encodings",
        str(tmp_path / "victims.npy"),
        "--truth",
        str(tmp_path / "truth.npz"),
        "--out",
        str(tmp_path / "run"),
    ]
    if extra == "pairs":
        np.savez(tmp_path / "plain.npz", images=imgs[:20])
        np.save(tmp_path / "cipher.npy", enc[:20])
        args += ["--known-plain", str(tmp_path / "plain.npz"), "--known-cipher", str(tmp_path / "cipher.npy")]
    else:
        if attack == "disguise-alignment":
            _digits(tmp_path / "aux.npz", order[n : n + 300])
        else:
            _images(tmp_path / "aux.npz", n=200, seed=5)
        args += ["--aux", str(tmp_path / "aux.npz")]
    assert main(args) == 0, capsys.readouterr().err
    m = _metrics(tmp_path / "run")
    assert m["attack"] == attack and m["scored"] == n - 20 and check(m), m
    assert (tmp_path / "run" / "reconstructions.npz").is_file() and (tmp_path / "run" / "reconstructions.png").is_file()
    # its threat model gives it nothing else: a known-pair attack refuses auxiliary data, and the reverse
    other = ["--aux", str(tmp_path / "data.npz")] if extra == "pairs" else ["--known-plain", str(tmp_path / "data.npz")]
    assert main(args[:-2] + other) == 2


def test_shufflebits_attacks_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = np.random.default_rng(0)
    feats = np.maximum(g.normal(size=(64, 128)) * g.gamma(2, 0.5, 128), 0).astype(np.float32)
    np.save(tmp_path / "f.npy", feats)
    assert (
        main(
            [
                "--quiet",
                "protect",
                "shufflebits",
                "--scope",
                "fixed",
                "--in",
                str(tmp_path / "f.npy"),
                "--out",
                str(tmp_path / "enc"),
                "--key",
                str(tmp_path / "k.safetensors"),
                "--seed",
                "2",
            ]
        )
        == 0
    )
    z = str(tmp_path / "enc" / "features.npy")
    assert (
        main(
            [
                "--quiet",
                "attack",
                "shufflebits-key-recovery",
                "--encodings",
                z,
                "--truth",
                str(tmp_path / "f.npy"),
                "--restarts",
                "2",
                "--out",
                str(tmp_path / "kr"),
            ]
        )
        == 0
    )
    m = _metrics(tmp_path / "kr")
    assert m["cosine"] > 0.99 and m["recovered"] == ["perm"]
    assert np.load(tmp_path / "kr" / "reconstructions.npy").shape == feats.shape
    assert main(["--quiet", "attack", "shufflebits-popcount", "--encodings", z, "--out", str(tmp_path / "pc")]) == 0
    with np.load(tmp_path / "pc" / "recovered.npz") as r:
        np.testing.assert_array_equal(r["popcount"] == 0, feats == 0)
    assert main(["--quiet", "attack", "shufflebits-popcount", "--encodings", z, "--restarts", "2"]) == 2


def test_feature_attacks_through_a_model_file_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from masquerade.attacks.feature_inversion import FeatureAPI
    from masquerade.models import create_model, load_model, save_model

    torch.manual_seed(0)
    save_model(
        tmp_path / "api.safetensors",
        create_model("fastresnet", num_classes=3),
        arch="fastresnet",
        num_classes=3,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )
    _images(tmp_path / "aux.npz", n=96, seed=1)  # the --aux file
    victims = _images(tmp_path / "victims.npz", n=16, seed=2)
    api = FeatureAPI.from_model(load_model(tmp_path / "api.safetensors"))
    feats = api.predict(torch.from_numpy(victims).permute(0, 3, 1, 2).float() / 255).numpy()
    assert feats.shape == (16, 256)
    np.save(tmp_path / "feats.npy", feats)
    np.save(tmp_path / "labels.npy", np.arange(16) % 3)
    common = [
        "--encodings",
        str(tmp_path / "feats.npy"),
        "--aux",
        str(tmp_path / "aux.npz"),
        "--api-model",
        str(tmp_path / "api.safetensors"),
        "--epochs",
        "2",
        "--seed",
        "0",
    ]
    assert (
        main(
            [
                "--quiet",
                "attack",
                "feature-attribute",
                *common,
                "--truth",
                str(tmp_path / "labels.npy"),
                "--out",
                str(tmp_path / "fa"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    m = _metrics(tmp_path / "fa")
    assert 0 <= m["attribute_accuracy"] <= 1 and m["api_queries"] == 96
    assert (
        main(
            [
                "--quiet",
                "attack",
                "feature-inversion",
                *common,
                "--batch",
                "32",
                "--truth",
                str(tmp_path / "victims.npz"),
                "--out",
                str(tmp_path / "fi"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    m = _metrics(tmp_path / "fi")
    assert m["scored"] == 16 and m["matching"] == "paired" and -1 <= m["ssim"] <= 1
    assert main(["--quiet", "attack", "feature-inversion", *common[:4]]) == 2  # the API is required
    assert "--api-model" in capsys.readouterr().err


def test_challenge_and_gradient_attacks_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from masquerade.instahide.recipe import simulate_challenge

    g = np.random.default_rng(0)
    private = _images(tmp_path / "truth.npz", n=12, size=8, seed=3)
    sim = simulate_challenge(
        private, np.arange(12) % 3, (g.random((40, 8, 8, 3)) * 255).astype(np.uint8), per_image=6, num_classes=3, rng=g
    )
    np.save(tmp_path / "encryption.npy", sim["encryption"])
    np.save(tmp_path / "label.npy", sim["label"])
    _images(tmp_path / "pool.npz", n=200, size=8, seed=4)
    assert (
        main(
            [
                "--quiet",
                "attack",
                "instahide-challenge",
                "--encodings",
                str(tmp_path / "encryption.npy"),
                "--labels",
                str(tmp_path / "label.npy"),
                "--public",
                str(tmp_path / "pool.npz"),
                "--prior",
                "none",
                "--no-colour",
                "--rounds",
                "1",
                "--n-private",
                "12",
                "--truth",
                str(tmp_path / "truth.npz"),
                "--out",
                str(tmp_path / "ch"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    m = _metrics(tmp_path / "ch")
    assert m["images_found"] == 12 and m["matching"] == "best match" and m["scored"] == 12

    import torch

    from masquerade.models import create_model, save_model

    torch.manual_seed(0)
    save_model(
        tmp_path / "m.safetensors",
        create_model("lenet-zhu", num_classes=3),
        arch="lenet-zhu",
        num_classes=3,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )
    _images(tmp_path / "clients.npz", n=6, size=32, seed=6)
    assert (
        main(
            [
                "--quiet",
                "attack",
                "dlg",
                "--model-file",
                str(tmp_path / "m.safetensors"),
                "--data",
                str(tmp_path / "clients.npz"),
                "--images",
                "2",
                "--iterations",
                "2",
                "--seed",
                "0",
                "--out",
                str(tmp_path / "dlg"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert _metrics(tmp_path / "dlg")["images"] == 2


def test_inside_instahide_attack_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import masquerade as mq

    imgs = _digits(tmp_path / "truth.npz", np.random.default_rng(2).permutation(1797)[:20])
    x = np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)).astype(np.float32) / 255
    s = mq.create_scheme("instahide", k=4, mode="inside", pixel_scale="normalize", mean=(0.2,), std=(0.3,))
    labels = np.load(tmp_path / "truth.npz")["labels"].astype(np.int64)
    g = np.random.default_rng(0)
    encs, labs = [], []
    for _ in range(10):
        import torch

        key = s.keygen(20, rng=g, shape=(1, 28, 28))
        encs.append(s.encode(torch.from_numpy(x), key).permute(0, 2, 3, 1).numpy())
        labs.append(s.mix_labels(labels, key, 10).numpy())
    np.save(tmp_path / "encodings.npy", np.concatenate(encs))
    np.save(tmp_path / "labels.npy", np.concatenate(labs))
    assert (
        main(
            [
                "--quiet",
                "attack",
                "instahide-inside",
                "--encodings",
                str(tmp_path / "encodings.npy"),
                "--labels",
                str(tmp_path / "labels.npy"),
                "--mean",
                "0.2",
                "--std",
                "0.3",
                "--rounds",
                "1",
                "--n-private",
                "20",
                "--truth",
                str(tmp_path / "truth.npz"),
                "--out",
                str(tmp_path / "in"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    m = _metrics(tmp_path / "in")
    assert m["n_images"] == 20 and m["passes"] == 10 and m["matching"] == "best match" and m["scored"] == 20
    assert 0 <= m["success"] <= 1 and "ssim" in m and (tmp_path / "in" / "reconstructions.npz").is_file()
