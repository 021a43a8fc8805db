from __future__ import annotations

import functools
import io
import pickle
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from masquerade.data import load_images
from masquerade.errors import InputError, MasqueradeError
from masquerade.quality import brisque as bq


@functools.lru_cache(maxsize=1)
def _brisque_reference() -> object:
    """The brisque package's model, loaded once (as its own ``score`` does, from one ``BRISQUE`` object)."""
    from brisque import BRISQUE

    return BRISQUE(url=False)


def _reference_score(img: np.ndarray) -> float:
    """The brisque package's own features and libsvm's prediction. The package's ``score`` breaks under NumPy 2
    (its features are shape-(1,) arrays that ``float()`` refuses), so flatten them here and call libsvm as it does.
    Also the peer of the speed suite's BRISQUE row (benchmarks/speed/_workers.py)."""
    pytest.importorskip("libsvm")
    import skimage.color
    from libsvm import svmutil

    ref: Any = _brisque_reference()
    g = skimage.color.rgb2gray(img)
    half = cv2.resize(g, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    feats = [
        float(np.ravel(f)[0])
        for f in np.concatenate(
            [ref.calculate_brisque_features(g, 7, 7 / 6), ref.calculate_brisque_features(half, 7, 7 / 6)]
        )
    ]
    scaled = ref.scale_features(np.array(feats, dtype=object))
    x, _ = svmutil.gen_svm_nodearray([float(v) for v in scaled], isKernel=False)
    return float(svmutil.libsvm.svm_predict_probability(ref.model, x, (svmutil.c_double * 1)()))


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.array(Image.open(buf).convert("RGB"))


def test_brisque_agrees_with_the_package_on_bundled_photos() -> None:
    photos = load_images("bundled:photos", size=(384, 512)).images
    imgs = [p for p in photos] + [_jpeg(p, 90) for p in photos]
    ours = bq.brisque_score(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).double() / 255).numpy()
    ref = np.array([_reference_score(im) for im in imgs])
    assert np.abs(ours - ref).max() < 1.0, (ours, ref)
    assert np.corrcoef(ours, ref)[0, 1] > 0.999


@pytest.mark.parametrize("shape", [(37, 51), (40, 64), (17, 16)])
def test_half_bicubic_is_opencvs_resize(shape: tuple[int, int]) -> None:
    g = np.random.default_rng(0).random(shape)
    ref = cv2.resize(g, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    ours = bq.half_bicubic(torch.from_numpy(g)[None, None])[0, 0].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_alpha_solve_inverts_phi_and_gradients_are_sound() -> None:
    alpha = torch.tensor([0.3, 0.8, 1.0, 2.0, 5.0], dtype=torch.float64)
    np.testing.assert_allclose(bq._solve_alpha(bq._phi(alpha)).numpy(), alpha.numpy(), rtol=1e-9)
    r = torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(bq._solve_alpha, (r,), eps=1e-7, atol=1e-6)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    x.requires_grad_(True)
    # fast mode: the Jacobian against finite differences along random directions (a full check takes a minute)
    assert torch.autograd.gradcheck(bq.brisque_score, (x,), eps=1e-6, atol=1e-4, rtol=1e-3, fast_mode=True)


def test_brisque_inputs_and_model_files(tmp_path, monkeypatch) -> None:
    with pytest.raises(InputError, match="N×C×H×W"):
        bq.brisque_score(torch.rand(3, 32, 32))
    with pytest.raises(InputError, match="16×16"):
        bq.brisque_score(torch.rand(1, 3, 8, 8))
    # the feature ranges are read as plain data: a pickle that would call anything is refused
    params_dir = bq._package_dir()
    (tmp_path / "svm.txt").write_text((params_dir / "svm.txt").read_text())
    (tmp_path / "normalize.pickle").write_bytes(pickle.dumps({"min_": [0.0] * 36, "max_": [1.0] * 36}))
    assert len(bq.load_brisque_params(str(tmp_path)).lo) == 36

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pwned",))

    (tmp_path / "normalize.pickle").write_bytes(pickle.dumps({"min_": Evil()}))
    bq.load_brisque_params.cache_clear()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        bq.load_brisque_params(str(tmp_path))
    monkeypatch.setattr(bq.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MasqueradeError, match=r"pip install 'masquerade\[brisque\]'"):
        bq._package_dir()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_quality_models_share_one_interface(tmp_path) -> None:
    from masquerade.quality.models import BrisqueQuality, TorchScriptQuality

    photos = load_images("bundled:photos", size=(96, 128)).to_tensor()[:3]
    bq_model = BrisqueQuality()
    s = bq_model(photos)
    assert s.shape == (3,) and torch.allclose(s, 100 - bq.brisque_score(photos))

    class Mean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3), keepdim=False)[:, None]

    torch.jit.script(Mean()).save(str(tmp_path / "m.pt"))
    ts = TorchScriptQuality(tmp_path / "m.pt", input_range=(-1, 1), output_range=(-1, 1), threshold=60)
    x = torch.full((2, 3, 16, 16), 0.75, requires_grad=True)
    out = ts(x)
    torch.testing.assert_close(out, torch.full((2,), 75.0))  # 0.75 -> 0.5 in [-1, 1] -> 75 on 0-100
    out.sum().backward()
    assert x.grad is not None and ts.is_good(x).all() and not ts.is_good(x * 0.5).any()
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="TorchScript"):
        TorchScriptQuality(tmp_path / "bad.pt")
    with pytest.raises(InputError, match="threshold"):
        BrisqueQuality(threshold=150)
    with pytest.raises(InputError, match="float"):
        bq_model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_torch_export_models_load_too(tmp_path) -> None:
    from masquerade.quality.models import TorchScriptQuality

    class Mean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3))[:, None] * 100

    prog = torch.export.export(Mean(), (torch.rand(2, 3, 16, 16),))
    torch.export.save(prog, str(tmp_path / "m.pt2"))
    q = TorchScriptQuality(tmp_path / "m.pt2")
    torch.testing.assert_close(q(torch.full((2, 3, 16, 16), 0.4)), torch.full((2,), 40.0))


def test_differentiable_jpeg_tracks_the_real_codec() -> None:
    from masquerade.metrics import psnr
    from masquerade.quality.jpeg import jpeg_approx, jpeg_real, quant_tables

    x = load_images("bundled:photos", size=(120, 170)).to_tensor()  # sides not multiples of 16 on purpose
    x = (x * 255).round() / 255
    for q in (90, 50):
        real = jpeg_real(x, q)
        approx = jpeg_approx(x, q)
        assert approx.shape == x.shape
        close = float(psnr(approx, real, data_range=1.0).mean())
        change = float(psnr(x, real, data_range=1.0).mean())
        assert close > 40 and close > change + 6, (q, close, change)
    xg = x[:2].clone().requires_grad_(True)
    jpeg_approx(xg, torch.tensor([85.0, 95.0])).square().sum().backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert quant_tables(50)[0][0, 0] == 16 and quant_tables(100)[0].max() == 1
    with pytest.raises(InputError, match="1-100"):
        quant_tables(0)


def _toy_model():  # type: ignore[no-untyped-def]
    """A toy differentiable quality model: 50 + 2000 (mean brightness - 0.5), so a small uniform darkening is
    enough to cross the threshold -- the attack must find it within its budget."""
    from masquerade.quality.models import QualityModel

    class Toy(QualityModel):
        name = "toy"

        def score(self, images: torch.Tensor) -> torch.Tensor:
            return 50 + 2000 * (images.mean((1, 2, 3)) - 0.5)

    return Toy()


@pytest.mark.parametrize("method", ["pgd", "cw", "filter"])
def test_camouflage_pushes_a_toy_model_below_threshold_within_budget(method: str, monkeypatch) -> None:
    from masquerade.quality import camouflage as cam

    model = _toy_model()
    g = torch.Generator().manual_seed(0)
    x = (0.51 + 0.1 * (torch.rand(2, 3, 48, 64, generator=g) - 0.5)).clamp(0, 1)
    assert (model.score(x) > 60).all()
    calls = []
    real = cam.jpeg_real
    monkeypatch.setattr(cam, "jpeg_real", lambda im, q: calls.append(q) or real(im, q))
    s = cam.CamouflageSettings(
        method=method, psnr=30.0, steps=40, iterations=200, search_steps=4, initial_c=1.0, filter_steps=60
    )
    y = cam.camouflage(model, x, s, rng=0, progress=False)
    ev = cam.evaluate_camouflage(model, x, y, quality=90)
    assert ev["success"].all(), ev["camouflaged_score_jpeg"]
    assert calls and all(q == 90 for q in calls)  # success is judged by the real codec
    np.testing.assert_allclose(ev["camouflaged_score_jpeg"], model.score(real(cam.deliver(y), 90)).numpy(), rtol=1e-6)
    if method == "pgd":
        assert (ev["psnr"] >= 30 - 0.2).all()  # the L2 budget (8-bit rounding aside)
        assert (ev["psnr"] < 60).all()
    if method == "filter":  # a monotone tone curve: pixel order is kept
        flat_x, flat_y = x[0, 0].flatten(), y[0, 0].flatten()
        order = flat_x.argsort()
        assert (flat_y[order].diff() >= -1e-6).all()


def test_camouflage_refuses_bad_input(tmp_path) -> None:
    from masquerade.quality.camouflage import CamouflageSettings, camouflage, camouflage_photos
    from masquerade.quality.models import BrisqueQuality

    m = BrisqueQuality()
    with pytest.raises(InputError, match="N×3×H×W"):
        camouflage(m, torch.rand(3, 32, 32))
    with pytest.raises(InputError, match="\\[0, 1\\]"):
        camouflage(m, torch.rand(1, 3, 32, 32) * 2)
    with pytest.raises(InputError, match="method"):
        CamouflageSettings(method="magic")
    big = np.zeros((300, 400, 3), np.uint8)
    with pytest.raises(InputError, match="larger than the limit"):
        camouflage_photos(m, [big], ["big.png"], tmp_path, max_pixels=100_000)
    with pytest.raises(InputError, match="colour"):
        camouflage_photos(m, [big[..., 0]], ["grey.png"], tmp_path)


def test_cli_camouflage_handles_grey_photos_and_writes_jpegs(tmp_path, cli) -> None:
    photo = load_images("bundled:photos", size=(96, 128)).images[0]
    Image.fromarray(photo).convert("L").save(tmp_path / "grey.png")
    Image.fromarray(photo).save(tmp_path / "colour.png")
    (tmp_path / "notes.txt").write_text("not a photo")
    r = cli("camouflage", "--in", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "not an image" in r.stderr
    (tmp_path / "notes.txt").unlink()
    r = cli(
        "camouflage",
        "--in",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--steps",
        "3",
        "--run-out",
        str(tmp_path / "run"),
        "--seed",
        "0",
    )
    assert r.returncode == 0, r.stderr
    outs = sorted(p.name for p in (tmp_path / "o").iterdir() if not p.name.startswith("."))  # and its mark
    assert outs == ["colour.jpg", "grey.jpg"]
    assert Image.open(tmp_path / "o" / "grey.jpg").mode == "RGB"
    assert (tmp_path / "run" / "camouflage.png").is_file()


def test_koncept512_has_the_published_layout_and_loads_its_state_dict(tmp_path) -> None:
    from masquerade.quality.koncept import KonCept512Quality

    q = KonCept512Quality()
    net = q.net
    # pretrainedmodels' inceptionresnetv2 has 55,843,464 parameters with its 1536x1000 classifier
    assert sum(p.numel() for p in net.base.parameters()) == 55_843_464 - (1536 * 1000 + 1000)
    keys = set(net.state_dict())
    for k in (
        "base.0.conv.weight",
        "base.7.branch3.1.bn.running_var",
        "base.8.9.branch2.2.conv.weight",
        "base.10.19.branch1.2.conv.weight",
        "base.12.8.conv2d.bias",
        "base.13.conv2d.weight",
        "base.14.bn.num_batches_tracked",
        "fc.0.weight",
        "fc.2.running_mean",
        "fc.12.bias",
    ):
        assert k in keys, k
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "w.pth")  # as DataParallel
    q2 = KonCept512Quality(tmp_path / "w.pth")
    x = torch.rand(1, 3, 299, 320)
    with torch.no_grad():
        torch.testing.assert_close(q2(x), q(x))
    torch.save({"fc.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="not a KonCept512"):
        KonCept512Quality(tmp_path / "bad.pth")
    with pytest.raises(InputError, match="299"):
        q(torch.rand(1, 3, 64, 64))
