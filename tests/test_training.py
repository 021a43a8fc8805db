from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import masquerade as mq
from masquerade.data import load_images
from masquerade.errors import InputError
from masquerade.models import create_model, list_models
from masquerade.training import TrainSettings, augment, train


@pytest.fixture(scope="module")
def digits() -> tuple[mq.ImageSet, mq.ImageSet]:
    ds = load_images("bundled:digits", size=16).to_rgb()
    return ds.split(0.8, rng=0)


def test_models_shapes() -> None:
    for name in list_models():
        m = create_model(name, num_classes=7)
        assert m(torch.rand(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(InputError, match="unknown model"):
        create_model("vgg")


def test_augment_is_crop_and_flip() -> None:
    x = torch.rand(50, 3, 8, 8)
    y = augment(x, np.random.default_rng(0))
    assert y.shape == x.shape
    assert torch.equal(augment(x, np.random.default_rng(0)), y)
    # every output is a shifted (and maybe flipped) window of the zero-padded input
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(5):
        ok = any(
            torch.equal(y[i], padded[i, :, a : a + 8, b : b + 8])
            or torch.equal(y[i], padded[i, :, a : a + 8, b : b + 8].flip(-1))
            for a in range(9)
            for b in range(9)
        )
        assert ok


def test_training_learns_quickly(digits) -> None:
    tr, te = digits
    s = TrainSettings(model="fastresnet", epochs=3, batch_size=64, lr=0.1, precision="fp32")
    r = train(tr, te, settings=s, seed=0, progress=False)
    assert r["test_acc"] > 0.5  # ten classes: chance is 0.1


def test_training_on_mixed_encodings_learns(digits) -> None:
    tr, te = digits
    # plain 2-way mixup (InstaHide without signs) trains on soft labels and transfers to clean images
    scheme = mq.create_scheme("instahide", k=2, sign_flip=False)
    s = TrainSettings(model="fastresnet", epochs=6, batch_size=64, lr=0.05, precision="fp32", infer_encodings=3)
    r = train(tr, te, scheme=scheme, settings=s, seed=0, progress=False)
    assert r["test_acc"] > 0.5 and r["test_acc_encoded"] > 0.3


def test_resume_reaches_the_same_result(digits, tmp_path: Path) -> None:
    tr, te = digits
    tr = tr[:400]
    s = TrainSettings(model="fastresnet", epochs=2, batch_size=64, lr=0.05, precision="fp32")
    full = train(tr, te, settings=s, seed=5, checkpoint=tmp_path / "a.pt", progress=False)
    one = TrainSettings(model="fastresnet", epochs=2, batch_size=64, lr=0.05, precision="fp32")

    class Stop(Exception):
        pass

    def stop_after_first(rec: dict) -> None:
        if rec["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(tr, te, settings=one, seed=5, checkpoint=tmp_path / "b.pt", on_epoch=stop_after_first, progress=False)
    resumed = train(tr, te, settings=one, seed=5, checkpoint=tmp_path / "b.pt", resume=True, progress=False)
    a = full["model_state"].state_dict()
    b = resumed["model_state"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["test_acc"] for h in full["history"]] == [h["test_acc"] for h in resumed["history"]]
    with pytest.raises(InputError, match="other settings"):
        train(
            tr,
            te,
            settings=TrainSettings(epochs=3, precision="fp32"),
            seed=5,
            checkpoint=tmp_path / "b.pt",
            resume=True,
            progress=False,
        )
    # a dataset-key scheme whose key came from OS randomness: no checkpoint holds it, so no resume
    with pytest.raises(InputError, match="cannot be resumed"):
        train(
            tr,
            te,
            scheme="disguise",
            settings=one,
            seed=None,
            checkpoint=tmp_path / "b.pt",
            resume=True,
            progress=False,
        )


def test_bad_settings() -> None:
    with pytest.raises(InputError):
        TrainSettings(epochs=0)
    with pytest.raises(InputError):
        TrainSettings(schedule="cosine")


def test_training_leaves_the_global_rngs_alone(digits) -> None:
    tr, te = digits
    torch.manual_seed(123)
    np.random.seed(7)
    t_state, n_state = torch.get_rng_state().clone(), np.random.get_state()[1].copy()
    train(tr[:64], te[:32], settings=TrainSettings(epochs=1, batch_size=32, precision="fp32"), seed=1, progress=False)
    assert torch.equal(torch.get_rng_state(), t_state) and np.array_equal(np.random.get_state()[1], n_state)


def test_dataset_key_schemes_train_and_test_on_disguised_images(digits) -> None:
    tr, te = digits
    tr16 = mq.ImageSet(np.ascontiguousarray(tr.images), tr.labels, tr.classes)
    scheme = mq.create_scheme("disguise", transform="none")  # block permutation only
    s = TrainSettings(model="fastresnet", epochs=4, batch_size=64, lr=0.05, precision="fp32", augment=False)
    r = train(tr16, te, scheme=scheme, settings=s, seed=0, progress=False)
    assert r["tested_on"] == "images disguised with the dataset key" and r["test_acc"] > 0.3
