"""Gradient inversion (Inverting Gradients, DLG), the ATS search scores and the privacy evaluation around them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from masquerade.ats.privacy import attack_model, export_rating_set, score_ratings
from masquerade.ats.search import (
    SearchSettings,
    accuracy_score,
    privacy_score,
    random_policies,
    rank,
    search,
)
from masquerade.attacks.gradient_inversion import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DLG,
    InvertingGradients,
    client_gradient,
    evaluation_view,
    gradient_cost,
    infer_labels,
    per_sample_gradients,
)
from masquerade.errors import InputError
from masquerade.metrics import psnr, recognition_accuracy
from masquerade.models import Normalized, create_model, load_model, save_model
from masquerade.registry import create_attack, run_attack
from tests.conftest import SHARED as DATA  # noqa: E402


def _cifar(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    f = DATA / "cifar10-test.npz"
    if f.is_file():
        with np.load(f) as d:
            idx = np.random.default_rng(seed).choice(len(d["labels"]), n, replace=False)
            x = torch.from_numpy(d["images"][idx]).permute(0, 3, 1, 2).float() / 255
            return x, torch.from_numpy(d["labels"][idx].astype(np.int64))
    from skimage import data as skd  # fall back to a photo shipped with scikit-image

    # a cat, as CIFAR-10 has them: at 32×32 the astronaut is mostly fine texture, harder to invert than CIFAR's
    # images (12.4 dB after 300 iterations where the cat reaches 20.5 dB and CIFAR images 14-19 dB)
    img = torch.from_numpy(skd.chelsea()).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(img, size=(32, 32), mode="area").repeat(n, 1, 1, 1)
    return x, torch.arange(n) % 10


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.avg_pool2d(torch.tanh(self.conv(x)), 4).flatten(1))


def _model(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return Normalized(create_model(arch), CIFAR10_MEAN, CIFAR10_STD).eval()


# -- the attack ---------------------------------------------------------------------------------------------------


def test_vectorised_trial_gradients_equal_a_loop() -> None:
    torch.manual_seed(0)
    m = Toy().eval()
    x, y = torch.rand(5, 3, 16, 16), torch.randint(0, 3, (5,))
    g = per_sample_gradients(m, x, y)
    for i in range(5):
        ref = torch.autograd.grad(F.cross_entropy(m(x[i : i + 1]), y[i : i + 1]), list(m.parameters()))
        for a, b in zip(g, ref):
            torch.testing.assert_close(a[i], b, rtol=1e-5, atol=1e-7)
    # the cost and its image gradient, batched vs one problem at a time
    target = [t.clone() for t in g]
    trial = per_sample_gradients(m, x.flip(0), y.flip(0))
    c = gradient_cost(trial, target, "sim")
    for i in range(5):
        a = torch.cat([t[i].flatten() for t in trial])
        b = torch.cat([t[i].flatten() for t in target])
        assert float(c[i]) == pytest.approx(1 - float(F.cosine_similarity(a, b, dim=0)), abs=1e-6)


def test_evaluation_view_has_the_models_derivatives_to_second_order() -> None:
    m = _model("resnet20", seed=1)
    m.train()
    with torch.no_grad():  # running statistics far from (0, 1), so the view's affine map is not the identity
        for _ in range(3):
            m(torch.rand(16, 3, 32, 32) * 0.5 + 0.3)
    m.eval()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    v = evaluation_view(m)
    assert [n for n, _ in v.named_parameters()] == [n for n, _ in m.named_parameters()]
    assert all(a is b for a, b in zip(v.parameters(), m.parameters()))
    assert [n for n, _ in v.named_buffers()] == [n for n, _ in m.named_buffers()]
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in v.modules())
    assert any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())  # the original is not changed
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    y = torch.tensor([3, 7])
    probe = [torch.randn(p.shape, generator=gen) for p in m.parameters()]

    def derivatives(net: nn.Module) -> list[torch.Tensor]:
        z = x.clone().requires_grad_(True)
        out = net(z)
        g = torch.autograd.grad(F.cross_entropy(out, y), list(net.parameters()), create_graph=True)
        (second,) = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, probe)), z)
        return [out.detach(), *[t.detach() for t in g], second]

    # float32 second derivatives through two routes (batch norm as a module and as its affine map) differ by the
    # rounding of sums whose order depends on the CPU and thread count: 1.25e-6 was seen on one element in 6,144
    for a, b in zip(derivatives(v), derivatives(m)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(state[k], t) for k, t in m.state_dict().items())
    # a batch normalisation that uses batch statistics even in evaluation is kept as it is
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert isinstance(evaluation_view(plain)[1], nn.BatchNorm2d)


def test_inverting_gradients_recovers_an_image_from_an_untrained_model() -> None:
    x, y = _cifar(1, seed=3)
    m = _model("convnet16")
    g = client_gradient(m, x, y)
    atk = create_attack("inverting_gradients", iterations=300)
    res = run_attack(atk, model=m, gradients=g, labels=y, rng=0, progress=False)
    p = float(psnr(res.reconstructions, x, data_range=1.0))
    guess = float(psnr(torch.rand_like(x), x, data_range=1.0))
    assert p > guess + 6, (p, guess)
    assert res.metrics["loss"] < 0.05 and res.reconstructions.shape == x.shape
    # a strong policy applied by the client: the reconstruction is far from the private image
    strong = attack_model(
        m, x, y, policy="3-1-7", always=True, attack_settings={"iterations": 300}, rng=0, progress=False
    )
    assert float(strong["psnr"].mean()) < p - 3, (float(strong["psnr"].mean()), p)


def test_labels_are_read_off_the_gradient() -> None:
    x, y = _cifar(6, seed=4)
    m = _model("resnet20")
    for i in range(6):
        g = client_gradient(m, x[i : i + 1], y[i : i + 1])
        assert int(infer_labels(m, g, 1)[0]) == int(y[i])


def test_dlg_matches_gradients_with_lbfgs() -> None:
    torch.manual_seed(0)
    x, y = _cifar(1, seed=5)
    m = Normalized(create_model("lenet-zhu"), CIFAR10_MEAN, CIFAR10_STD).eval()
    g = client_gradient(m, x, y)
    res = DLG(iterations=10).run(model=m, gradients=g, labels=y, rng=1, progress=False)
    assert res.metrics["loss"] < 0.05 * res.metrics["history"][0]
    assert float(psnr(res.reconstructions, x, data_range=1.0)) > float(psnr(torch.rand_like(x), x, data_range=1.0)) + 3


def test_restarts_run_together_and_the_best_wins() -> None:
    x, y = _cifar(2, seed=6)
    m = _model("convnet16")
    grads = per_sample_gradients(m, x, y)
    res = InvertingGradients(iterations=20, restarts=3).run_many(
        model=m, gradients=grads, labels=y[:, None], rng=0, progress=False
    )
    assert len(res) == 2 and all(len(r.restart_losses) == 3 for r in res)
    assert all(r.loss == pytest.approx(min(r.restart_losses)) for r in res)


def test_attack_input_errors() -> None:
    m = _model("convnet16")
    x, y = _cifar(1)
    g = client_gradient(m, x, y)
    atk = InvertingGradients(iterations=2)
    with pytest.raises(InputError):
        atk.run(model=m, gradients=g[:-1], labels=y, progress=False)
    with pytest.raises(InputError):
        atk.run(model=m, gradients=[t * float("nan") for t in g], labels=y)
    with pytest.raises(InputError):
        run_attack(atk, model=m, gradients=g, encodings=x)  # not in its threat model
    with pytest.raises(InputError):
        run_attack(atk, gradients=g)  # needs the model
    with pytest.raises(InputError):
        InvertingGradients(cost="l1")
    with pytest.raises(InputError):
        create_attack("inverting_gradients", lr=0)


# -- the search scores against slow references ---------------------------------------------------------------------


def _slow_privacy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, bins: int) -> list[float]:
    out = []
    params = list(model.parameters())
    for i in range(len(x)):
        true = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        curve = []
        for k in range(bins + 1):
            a = k / bins
            xa = a * x[i : i + 1] + (1 - a) * noise[i : i + 1]
            ga = torch.autograd.grad(F.cross_entropy(model(xa), y[i : i + 1]), params)
            sims = [float(torch.dot(p.flatten(), q.flatten()) / (p.norm() * q.norm())) for p, q in zip(ga, true)]
            curve.append(sum(sims) / len(sims))
        out.append(sum((curve[k] + curve[k - 1]) / 2 * (1 / bins) for k in range(1, bins + 1)))
    return out


def _slow_accuracy(model: nn.Module, x: torch.Tensor, k: float = 1e-5) -> float:
    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (j,) = torch.autograd.grad(model(xi).sum(), xi)
        rows.append(j.flatten().double().numpy())
    j = np.stack(rows)
    j = j - j.mean(1, keepdims=True)
    corr = (j @ j.T) / np.sqrt(np.outer((j * j).sum(1), (j * j).sum(1)))
    v = np.linalg.eigvals(corr).real
    return float(-np.sum(np.log(v + k) + 1 / (v + k)))


def test_search_scores_match_slow_references() -> None:
    torch.manual_seed(1)
    m = Toy().eval()
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 3, (4,))
    noise = torch.rand(4, 3, 16, 16)
    fast = privacy_score(m, x, y, noise, bins=5)
    np.testing.assert_allclose(fast.numpy(), _slow_privacy(m, x, y, noise, 5), rtol=1e-5, atol=1e-6)
    assert float(accuracy_score(m, x)) == pytest.approx(_slow_accuracy(m, x), rel=1e-6)
    # at the image itself the similarity is 1, so the area is at most 1; a path that starts at the image is 1
    assert float(fast.max()) <= 1 + 1e-6
    assert float(privacy_score(m, x, y, x.clone(), bins=5).min()) == pytest.approx(1.0, abs=1e-5)


def test_random_policies_and_ranking() -> None:
    pols = random_policies(30, 3, rng=0)
    assert len(set(pols)) == 30 and pols == random_policies(30, 3, rng=0)
    assert all(len(p.split("-")) <= 3 for p in pols if p != "none")
    table, thr = rank(
        [
            {"policy": "a", "s_pri": 0.5, "s_acc": -70},
            {"policy": "b", "s_pri": 0.2, "s_acc": -90},
            {"policy": "c", "s_pri": 0.3, "s_acc": -80},
        ],
        threshold=-85,
        keep=1,
    )
    assert [r["policy"] for r in table] == ["b", "c", "a"]
    assert [r["chosen"] for r in table] == [False, True, False] and thr == -85


def test_search_in_parallel_equals_serial() -> None:
    torch.manual_seed(2)
    trained, init = Toy().eval(), Toy().eval()
    x, y = torch.rand(12, 3, 16, 16), torch.randint(0, 3, (12,))
    s = dict(privacy_images=4, acc_images=4, acc_runs=2, bins=4, acc_threshold=-1e9, keep=2)
    pols = ["none", "3-1-7", "43-18-18"]
    serial = search(
        trained=trained,
        init=init,
        images=x,
        labels=y,
        candidates=pols,
        rng=0,
        progress=False,
        settings=SearchSettings(workers=1, **s),
    )
    par = search(
        trained=trained,
        init=init,
        images=x,
        labels=y,
        candidates=pols,
        rng=0,
        progress=False,
        settings=SearchSettings(workers=2, **s),
    )
    key = lambda t: {r["policy"]: (round(r["s_pri"], 10), round(r["s_acc"], 6)) for r in t["table"]}  # noqa: E731
    assert key(serial) == key(par) and len(serial["chosen"]) == 2
    # a resumed search recomputes nothing it was given
    again = search(
        trained=trained,
        init=init,
        images=x,
        labels=y,
        candidates=pols,
        rng=0,
        progress=False,
        settings=SearchSettings(workers=1, **s),
        done=serial["table"][:2],
    )
    assert key(again) == key(serial)
    # a policy scores the same however the candidates came (random, given, or as an extra)
    alone = search(
        trained=trained,
        init=init,
        images=x,
        labels=y,
        candidates=["43-18-18"],
        rng=0,
        progress=False,
        settings=SearchSettings(workers=1, **s),
        extra=["3-1-7"],
    )
    assert key(alone) == {p: v for p, v in key(serial).items() if p in ("43-18-18", "3-1-7")}


# -- evaluation, model files, rating sets ---------------------------------------------------------------------------


def test_model_files_round_trip(tmp_path: Path) -> None:
    m = _model("resnet20")
    f = save_model(
        tmp_path / "m.safetensors",
        m,
        arch="resnet20",
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        info={"epoch": 3},
    )
    back = load_model(f)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(back(x), m(x))
    assert back.info == {"epoch": 3}
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(InputError):
        load_model(tmp_path / "bad.safetensors")


def test_recognition_and_rating_set(tmp_path: Path) -> None:
    class Oracle(nn.Module):  # "recognises" an image by its mean brightness bucket
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.one_hot((x.mean((1, 2, 3)) * 2.999).long(), 3).float()

    x = torch.stack([torch.full((3, 8, 8), v) for v in (0.1, 0.5, 0.9, 0.9)])
    assert recognition_accuracy(Oracle(), x, torch.tensor([0, 1, 2, 0])) == 0.75
    folder = export_rating_set(tmp_path / "r", {"original": x, "rec": 1 - x}, [0, 1, 2, 0], ["a", "b", "c"], rng=0)
    man = json.loads((folder / "manifest.json").read_text())
    ans = json.loads((folder / "answers.json").read_text())
    assert man["format"] == "masquerade-rating-set" and len(man["items"]) == 8
    assert all((folder / it["image"]).is_file() for it in man["items"])
    assert "condition" not in json.dumps(man)  # raters never see the condition
    rows = ["rater,id,choice"] + [
        f"p1,{i},{a['class'] if a['condition'] == 'original' else 'unrecognisable'}" for i, a in ans.items()
    ]
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    scores = score_ratings(folder)
    assert scores["original"]["recognised"] == 1.0 and scores["rec"]["recognised"] == 0.0
    with pytest.raises(InputError):
        export_rating_set(tmp_path / "r", {"original": x}, [0, 1, 2, 0], ["a", "b", "c"])
