from __future__ import annotations

import numpy as np
import pytest

from masquerade.data import extract_patches, load_photos, sift_keypoint_counts
from masquerade.errors import InputError, MasqueradeError
from tests.conftest import shared


@pytest.fixture(scope="module")
def photos() -> tuple[list[np.ndarray], list[str]]:
    return load_photos("bundled:photos")


def test_patches_pass_the_sift_filter(photos) -> None:
    p = extract_patches(photos, 40, (64, 128), rng=0, cache=False)
    assert p.images.shape == (40, 32, 32, 3) and p.images.dtype == np.uint8
    imgs, names = photos
    crops = []
    for name in p.names:  # provenance lets us re-cut each crop and check the filter independently
        src, rest = name.split("@")
        yx, side = rest.split("+")
        y, x = map(int, yx.split(","))
        s = int(side)
        assert 64 <= s <= 128
        crops.append(imgs[names.index(src)][y : y + s, x : x + s])
    assert (sift_keypoint_counts(crops, threads=1) > 40).all()


def test_patches_deterministic_and_cached(photos, tmp_path) -> None:
    a = extract_patches(photos, 20, rng=7, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    b = extract_patches(photos, 20, rng=7, cache=tmp_path)  # from the cache
    c = extract_patches(photos, 20, rng=7, cache=False)  # recomputed
    assert np.array_equal(a.images, b.images) and np.array_equal(a.images, c.images) and a.names == c.names
    d = extract_patches(photos, 20, rng=8, cache=False)
    assert not np.array_equal(a.images, d.images)


def test_patches_filter_rejects_flat_photos() -> None:
    flat = [np.full((200, 200, 3), 128, np.uint8)]
    with pytest.raises(MasqueradeError, match="passed the SIFT filter"):
        extract_patches(flat, 5, rng=0, cache=False, max_candidates=512)
    textured = [np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)]
    assert len(extract_patches(textured, 5, rng=0, cache=False)) == 5


def test_patches_bad_input() -> None:
    with pytest.raises(InputError, match="smaller than the smallest crop"):
        extract_patches([np.zeros((30, 30, 3), np.uint8)], 3, rng=0)
    with pytest.raises(InputError, match="size_range"):
        extract_patches([np.zeros((300, 300, 3), np.uint8)], 3, (100, 50), rng=0)
    with pytest.raises(InputError, match="uint8"):
        extract_patches([np.zeros((300, 300, 3), np.float32)], 3, rng=0)


@pytest.mark.slow
def test_patches_from_imagenet_sample() -> None:
    folder = shared("imagenet-sample")
    p = extract_patches(folder, 300, rng=0, cache=False)
    assert len(p) == 300 and len({n.split("@")[0] for n in p.names}) > 150
