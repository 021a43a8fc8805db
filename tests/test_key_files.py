"""Key files are untrusted input: every tampered key is refused with one line (exit 2 on the command line) before any
kernel sees it; an intact key that was re-signed with other material is caught by its recorded fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

from masquerade.cli import main
from masquerade.errors import InputError
from masquerade.keys import load_key, save_key
from masquerade.registry import create_scheme

SCHEMES = {
    "instahide-inside": ("instahide", {"k": 4}, (3, 8, 8), 0),
    "instahide-cross": ("instahide", {"k": 4, "mode": "cross"}, (3, 8, 8), 20),
    "disguise-rmt": ("disguise", {}, (3, 8, 8), 0),
    "disguise-aes-image": (
        "disguise",
        {"transform": "aes", "key_scope": "image", "seeded_aes_key": True},
        (3, 8, 8),
        0,
    ),
    "disguise-aes-ctr": ("disguise", {"transform": "aes", "aes_mode": "ctr", "seeded_aes_key": True}, (3, 8, 8), 0),
    "shufflebits-element": ("shufflebits", {"scope": "element"}, (6,), 0),
    "shufflebits-fixed": ("shufflebits", {"scope": "fixed"}, (6,), 0),
    "ats": ("ats", {"policy": "3-1-7+43-18-18"}, (3, 8, 8), 0),
}


def _write(path: Path, case: str) -> tuple[str, object]:
    name, kw, shape, pool = SCHEMES[case]
    s = create_scheme(name, **kw)
    key = s.keygen(10, rng=1, shape=shape, pool_size=pool)
    save_key(path, key)
    return name, key


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with safe_open(str(path), framework="numpy") as fh:
        meta = dict(fh.metadata())
        arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    return arrays, json.loads(meta["masquerade"])


def _rewrite(path: Path, arrays: dict[str, np.ndarray], doc: dict, *, keep_fingerprint: bool) -> None:
    if not keep_fingerprint:
        doc.pop("fingerprint", None)  # an adversary who knows the format re-signs nothing: no fingerprint at all
    path.unlink()
    save_file(arrays, str(path), metadata={"masquerade": json.dumps(doc)})


MUTATIONS = ["out_of_range", "negative", "repeat", "dtype", "shape", "nan", "truncate_rows", "scalar"]


def _mutate(a: np.ndarray, how: str, where: int) -> np.ndarray:
    b = a.copy()
    flat = b.reshape(-1)
    i = where % max(1, flat.size)
    if how == "out_of_range" and flat.size:
        flat[i] = np.iinfo(b.dtype).max if b.dtype.kind in "iu" else 1e30
    elif how == "negative" and flat.size:
        flat[i] = -1 if b.dtype.kind == "i" else (-5.0 if b.dtype.kind == "f" else flat[i] + 1)
    elif how == "repeat" and flat.size > 1:
        flat[i] = flat[(i + 1) % flat.size]
    elif how == "dtype":
        return b.astype(np.float32 if b.dtype != np.float32 else np.float64)
    elif how == "shape":
        return np.concatenate([b.reshape(-1), b.reshape(-1)[:1]]) if b.size else np.zeros(3, b.dtype)
    elif how == "nan" and b.dtype.kind == "f" and flat.size:
        flat[i] = np.nan
    elif how == "truncate_rows" and b.ndim and len(b):
        return b[:-1]
    elif how == "scalar":
        return np.asarray(b.reshape(-1)[:1].sum(), dtype=b.dtype)
    return b


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    case=st.sampled_from(sorted(SCHEMES)),
    field=st.integers(0, 10),
    how=st.sampled_from(MUTATIONS),
    where=st.integers(0, 10_000),
    keep=st.booleans(),
)
def test_a_tampered_key_is_refused_or_still_a_valid_key(
    tmp_path_factory: pytest.TempPathFactory, case: str, field: int, how: str, where: int, keep: bool
) -> None:
    path = tmp_path_factory.mktemp("k") / "k.safetensors"
    name, original = _write(path, case)
    arrays, doc = _read(path)
    target = sorted(arrays)[field % len(arrays)]
    arrays[target] = np.ascontiguousarray(_mutate(arrays[target], how, where))
    _rewrite(path, arrays, doc, keep_fingerprint=keep)
    try:
        key = load_key(path, expect=name)
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    # not refused: then the contents are those of a valid key (a mutation that kept the key valid, e.g. a swap
    # inside a permutation), and with the fingerprint kept only the untouched key gets through
    key.validate()
    if keep:
        assert key == original


def test_each_class_of_tampering_is_named(tmp_path: Path) -> None:
    path = tmp_path / "k.safetensors"
    _write(path, "disguise-rmt")
    arrays, doc = _read(path)
    arrays["perm"][0] = arrays["perm"][1]
    _rewrite(path, arrays, doc, keep_fingerprint=False)
    with pytest.raises(InputError, match="permutation"):
        load_key(path)
    _write(path, "instahide-inside")
    arrays, doc = _read(path)
    arrays["partners"][3, 1] = 10**9
    _rewrite(path, arrays, doc, keep_fingerprint=False)
    with pytest.raises(InputError, match="partners name images outside"):
        load_key(path)
    _write(path, "shufflebits-element")
    arrays, doc = _read(path)
    doc["fields"]["shape"] = [7]
    _rewrite(path, arrays, doc, keep_fingerprint=False)
    with pytest.raises(InputError, match="perm must have shape"):
        load_key(path)
    _write(path, "disguise-rmt")
    arrays, doc = _read(path)
    doc["fields"]["settings"]["block"] = 3  # does not divide the image
    _rewrite(path, arrays, doc, keep_fingerprint=False)
    with pytest.raises(InputError, match="divisible"):
        load_key(path)
    _write(path, "disguise-rmt")
    arrays, doc = _read(path)
    arrays["rmt"][0] *= 2  # a swap of valid material is caught by the fingerprint
    _rewrite(path, arrays, doc, keep_fingerprint=True)
    with pytest.raises(InputError, match="orthogonal|fingerprint"):
        load_key(path)
    _write(path, "disguise-rmt")
    arrays, doc = _read(path)
    arrays["rmt"][[0, 1]] = arrays["rmt"][[1, 0]]  # still orthogonal matrices: only the fingerprint tells
    _rewrite(path, arrays, doc, keep_fingerprint=True)
    with pytest.raises(InputError, match="does not match the fingerprint"):
        load_key(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(InputError):
        load_key(path)
    _write(path, "ats")
    arrays, doc = _read(path)
    doc["scheme"] = "disguise"  # metadata for another scheme
    _rewrite(path, arrays, doc, keep_fingerprint=False)
    with pytest.raises(InputError):
        load_key(path, expect="disguise")


def test_reveal_with_a_tampered_key_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=(g.random((12, 8, 8, 3)) * 255).astype(np.uint8))
    key = tmp_path / "keys" / "k.safetensors"
    assert (
        main(
            [
                "--quiet",
                "protect",
                "disguise",
                "--in",
                str(tmp_path / "d.npz"),
                "--out",
                str(tmp_path / "e"),
                "--key",
                str(key),
                "--seed",
                "1",
            ]
        )
        == 0
    )
    arrays, doc = _read(key)
    arrays["perm"][:] = 10**6
    _rewrite(key, arrays, doc, keep_fingerprint=False)
    capsys.readouterr()
    assert (
        main(
            [
                "reveal",
                "disguise",
                "--in",
                str(tmp_path / "e" / "encodings.npy"),
                "--key",
                str(key),
                "--out",
                str(tmp_path / "r.npz"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tampered" in err and "Traceback" not in err
    assert not (tmp_path / "r.npz").exists()
    torch.manual_seed(0)


def test_compiled_kernels_check_bounds_at_their_entry() -> None:
    from masquerade.disguise._kernel import gather_u8, scatter_f32
    from masquerade.instahide._kernel import mix_encode

    n, c, p = 4, 3, 16
    priv, pub = np.zeros((n, c, p), np.float32), np.zeros((1, c, p), np.float32)
    lam = np.full((n, 2), 0.5, np.float32)
    affine = np.ones((2, c), np.float32)
    out = np.empty((n, c, p), np.float32)
    mask = np.zeros((n, c * p // 8), np.uint8)
    partners = np.tile(np.arange(2), (n, 1)).astype(np.int64)
    mix_encode(priv, pub, partners, np.zeros(2, bool), lam, affine, affine * 0, mask, True, out)
    for bad in (n, -1, 10**9):
        partners[1, 1] = bad
        with pytest.raises(ValueError, match="outside"):
            mix_encode(priv, pub, partners, np.zeros(2, bool), lam, affine, affine * 0, mask, True, out)
    with pytest.raises(ValueError, match="mask"):
        mix_encode(priv, pub, partners * 0, np.zeros(2, bool), lam, affine, affine * 0, mask[:, :1], True, out)
    x, buf = np.zeros((2, c, p), np.float32), np.zeros((2, c, p), np.uint8)
    offsets = np.arange(p, dtype=np.int64)
    gather_u8(x, offsets, buf)
    offsets[3] = p
    with pytest.raises(ValueError, match="outside"):
        gather_u8(x, offsets, buf)
    with pytest.raises(ValueError, match="outside"):
        scatter_f32(buf, offsets, x)
