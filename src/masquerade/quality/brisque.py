"""BRISQUE (Mittal, Moorthy, Bovik 2012) in torch: differentiable, batched, and equal to the ``brisque`` package.

Features, as the ``brisque`` package (Apache-2.0) computes them: grey = skimage's rgb2gray; MSCN coefficients with
a 7×7 Gaussian window (σ = 7/6, zero padding, C = 1/255); an asymmetric generalised Gaussian fit (moment matching:
the shape α solves Γ(2/α)²/(Γ(1/α)Γ(3/α)) = R̂) of the MSCN map -> (α, (σl² + σr²)/2) and of its four pairwise
products (horizontal, vertical, both diagonals) -> (α, mean, σl², σr²); the same again on the grey image halved by
OpenCV's bicubic resize: 36 features. They are scaled to [-1, 1] by the package's ranges and fed to its RBF
ε-SVR. The SVR's support vectors and the ranges are read at run time from the installed ``brisque`` wheel --
nothing of them is copied here.

Gradients: α comes from a root solve done without autograd (bisection in float64), followed by one Newton step
whose derivative is the implicit one, dα/dR̂ = 1/φ'(α); everything else is plain differentiable torch.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from masquerade.errors import InputError, MasqueradeError

__all__ = ["BrisqueParams", "load_brisque_params", "brisque_features", "brisque_score", "GREY_WEIGHTS"]

GREY_WEIGHTS = (0.2125, 0.7154, 0.0721)  # skimage.color.rgb2gray
_C = 1.0 / 255.0


class BrisqueParams:
    """The SVR (support vectors, coefficients, rho, gamma) and the feature ranges of the ``brisque`` package."""

    def __init__(
        self, sv: np.ndarray, coef: np.ndarray, rho: float, gamma: float, lo: np.ndarray, hi: np.ndarray
    ) -> None:
        self.sv, self.coef, self.rho, self.gamma, self.lo, self.hi = sv, coef, rho, gamma, lo, hi

    def tensors(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        return tuple(torch.as_tensor(a, dtype=dtype, device=device) for a in (self.sv, self.coef, self.lo, self.hi))


class _PlainData(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name}: the feature ranges are plain lists of floats")


def _package_dir() -> Path:
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        from masquerade.extras import MissingExtra

        raise MissingExtra(
            "the BRISQUE quality model needs the 'brisque' package, whose wheel ships the SVR model "
            "and feature ranges read here: pip install 'masquerade[brisque]'"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@functools.lru_cache(maxsize=4)
def load_brisque_params(model_dir: str | None = None) -> BrisqueParams:
    """Parse ``svm.txt`` (libsvm text format) and ``normalize.pickle`` (plain data only) of the brisque package."""
    d = Path(model_dir) if model_dir else _package_dir()
    header: dict[str, str] = {}
    coefs, rows = [], []
    with open(d / "svm.txt") as fh:
        for line in fh:
            if line.strip() == "SV":
                break
            k, _, v = line.strip().partition(" ")
            header[k] = v
        if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
            raise MasqueradeError(f"{d / 'svm.txt'}: expected an RBF epsilon-SVR, got {header}")
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            coefs.append(float(parts[0]))
            rows.append({int(i): float(v) for i, v in (p.split(":") for p in parts[1:])})
    dim = max(max(r) for r in rows)
    sv = np.zeros((len(rows), dim))
    for n, r in enumerate(rows):
        for i, value in r.items():
            sv[n, i - 1] = value
    with open(d / "normalize.pickle", "rb") as fh:
        ranges = _PlainData(io.BytesIO(fh.read())).load()
    lo, hi = np.asarray(ranges["min_"], float), np.asarray(ranges["max_"], float)
    if len(lo) != dim or len(hi) != dim:
        raise MasqueradeError(f"{d}: {dim} SVR features but {len(lo)} ranges")
    return BrisqueParams(sv, np.asarray(coefs), float(header["rho"]), float(header["gamma"]), lo, hi)


def _gaussian(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The package's normalised 7×7 Gaussian (σ = 7/6) is the outer product of this 1-D kernel with itself."""
    t = torch.arange(7, dtype=torch.float64) - 3
    g = torch.exp(-(t**2) / (2 * (7 / 6) ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=16)
def _band(n: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """n × n banded matrix B with (x @ B)[j] = Σ_k g[k] x[j + k - 3] (zeros outside): a zero-padded 'same' filter."""
    g = _gaussian(torch.float64, torch.device("cpu"))
    b = torch.zeros(n, n, dtype=torch.float64)
    for k in range(7):
        b += torch.diag(torch.full((n - abs(k - 3),), float(g[k])), diagonal=3 - k)
    return b.to(dtype=dtype, device=device)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """'same' zero-padded 7×7 Gaussian filter (x: N×1×H×W) as two banded matrix products: on CPUs a BLAS matmul
    beats a single-channel convolution several times over."""
    h, w = x.shape[-2:]
    return _band(h, x.dtype, str(x.device)).T @ (x @ _band(w, x.dtype, str(x.device)))


def grey(images: torch.Tensor) -> torch.Tensor:
    """N×3×H×W (or N×1×H×W) in [0, 1] -> N×1×H×W luminance, as skimage's rgb2gray."""
    if images.shape[1] == 1:
        return images
    w = torch.tensor(GREY_WEIGHTS, dtype=images.dtype, device=images.device)
    return (images * w[None, :, None, None]).sum(1, keepdim=True)


@functools.lru_cache(maxsize=16)
def _half_matrix(n: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """m × n matrix of OpenCV's cubic taps (a = -0.75) for halving n samples, edge samples replicated."""
    m = int(np.rint(n * 0.5))  # OpenCV rounds half to even (cvRound)
    a = torch.zeros(m, n, dtype=torch.float64)
    rows = torch.arange(m)
    for off, wgt in ((-1, -0.09375), (0, 0.59375), (1, 0.59375), (2, -0.09375)):
        a.index_put_(
            (rows, (2 * rows + off).clamp(0, n - 1)), torch.full((m,), wgt, dtype=torch.float64), accumulate=True
        )  # source centre 2x + 0.5: taps 2x-1 .. 2x+2
    return a.to(dtype=dtype, device=device)


def half_bicubic(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``resize(fx=0.5, fy=0.5, INTER_CUBIC)`` on N×1×H×W, as two matrix products."""
    h, w = x.shape[-2:]
    return _half_matrix(h, x.dtype, str(x.device)) @ x @ _half_matrix(w, x.dtype, str(x.device)).T


def mscn(x: torch.Tensor) -> torch.Tensor:
    both = _blur(torch.cat([x, x * x], 0))  # one pass for the mean and the second moment
    mu, second = both[: len(x)], both[len(x) :]
    var = second - mu * mu
    sigma = torch.sqrt(var.abs().clamp_min(1e-20))  # the package's sqrt(|E[x²] - μ²|); safe gradient at 0
    return (x - mu) / (sigma + _C)


def _phi(alpha: torch.Tensor) -> torch.Tensor:
    return torch.exp(2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha))


def _solve_alpha(r: torch.Tensor) -> torch.Tensor:
    """α with φ(α) = r (φ increases from 0 to 3/4): bisection in log α without autograd, then one Newton step that
    carries the implicit derivative dα/dr = 1/φ'(α)."""
    with torch.no_grad():
        rr = r.detach().double().clamp(1e-6, 0.75 - 1e-9)
        lo = torch.full_like(rr, np.log(0.02))
        hi = torch.full_like(rr, np.log(50.0))
        for _ in range(60):
            mid = (lo + hi) / 2
            up = _phi(mid.exp()) < rr
            lo = torch.where(up, mid, lo)
            hi = torch.where(up, hi, mid)
        a0 = ((lo + hi) / 2).exp()
        h = a0 * 1e-6
        dphi = (_phi(a0 + h) - _phi(a0 - h)) / (2 * h)
        a0, dphi = a0.to(r.dtype), dphi.to(r.dtype)
    return a0 - (_phi(a0) - r) / dphi


def _aggd(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-image (α, mean, σl², σr²) of N×P coefficients, by the package's moment matching (left: x < 0)."""
    p = x.shape[1]
    with torch.no_grad():
        n_left = (x < 0).sum(1).to(x.dtype)
    sq_total = (x * x).sum(1)
    neg = x.clamp(max=0)
    sq_left = (neg * neg).sum(1)
    left = sq_left / n_left.clamp_min(1)
    right = (sq_total - sq_left) / (p - n_left).clamp_min(1)
    r_hat = (x.abs().sum(1) / p) ** 2 / (sq_total / p)
    g = torch.sqrt(left) / torch.sqrt(right)
    big_r = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = _solve_alpha(big_r)
    sl, sr = torch.sqrt(left), torch.sqrt(right)
    const = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    mean = (sr - sl) * const * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
    return alpha, mean, left, right


def _scale_features(x: torch.Tensor) -> torch.Tensor:
    m = mscn(x)[:, 0]
    n = len(m)
    maps = [
        m.reshape(n, -1),
        (m[:, :, :-1] * m[:, :, 1:]).reshape(n, -1),
        (m[:, :-1, :] * m[:, 1:, :]).reshape(n, -1),
        (m[:, :-1, :-1] * m[:, 1:, 1:]).reshape(n, -1),
        (m[:, 1:, :-1] * m[:, :-1, 1:]).reshape(n, -1),
    ]
    feats = []
    for i, c in enumerate(maps):
        alpha, mean, left, right = _aggd(c)
        feats += [alpha, (left + right) / 2] if i == 0 else [alpha, mean, left, right]
    return torch.stack(feats, 1)


def brisque_features(images: torch.Tensor) -> torch.Tensor:
    """The 36 BRISQUE features of N×C×H×W images in [0, 1] (C = 1 or 3), differentiable."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InputError("brisque: expected images as an N×C×H×W tensor (C = 1 or 3) in [0, 1]")
    if min(images.shape[2:]) < 16:
        raise InputError(f"brisque: images must be at least 16×16, got {tuple(images.shape[2:])}")
    g = grey(images)
    return torch.cat([_scale_features(g), _scale_features(half_bicubic(g))], 1)


def brisque_score(images: torch.Tensor, params: BrisqueParams | None = None) -> torch.Tensor:
    """BRISQUE scores (lower is better; about 0-100) of N×C×H×W images in [0, 1], differentiable."""
    p = params or load_brisque_params()
    f = brisque_features(images)
    sv, coef, lo, hi = p.tensors(f.dtype, f.device)
    z = -1 + 2 * (f - lo) / (hi - lo)
    d2 = (z * z).sum(1, keepdim=True) - 2 * z @ sv.T + (sv * sv).sum(1)[None]
    return torch.exp(-p.gamma * d2.clamp_min(0)) @ coef - p.rho
