"""ATS transformation policies (Gao et al., CVPR 2021): augmentations that hide images from gradient inversion.

A client in collaborative learning transforms its private images with a *policy* before it computes the gradient it
shares; the server can then at best reconstruct transformed images. The library is the one of the ATS code: 16
operations, each with 10 magnitude levels, and 51 fixed sub-policies (probability, operation, magnitude level) taken
from AutoAugment. A policy is written as the paper writes it:

- ``"3-1-7"``: sub-policies 3, 1 and 7 applied in that order to every image;
- ``"3-1-7+43-18-18"``: a hybrid; each image gets one of the ``+``-separated lists, chosen at random;
- ``""`` or ``"none"``: no transformation.

Operations work on float32 N×C×H×W tensors in [0, 1] and follow PIL's definitions (the ATS code runs PIL on 8-bit
images): every operation's output is rounded to the 8-bit grid, geometric ones fill with black (rotation with grey
128, as the ATS code does), shears are bicubic (PIL's own kernel, pixel for pixel), translations and rotations
nearest-neighbour.

**Draw, then apply.** ``keygen`` draws every random choice -- the sub-list of a hybrid, the random sign of a
magnitude, whether a sub-policy fires, the crop of ``zoom``, the corners of ``warp`` and the seed of ``zoom``'s noise
-- and ``encode`` is a pure function of the images and that key.

**Probabilities.** The published ``SubPolicy`` stores each sub-policy's probability and never reads it: every
sub-policy is always applied. We honour the probability by default (what the sub-policies say); ``always=True``
reproduces the published behaviour, which is what the paper's numbers measure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from masquerade.contracts import Configurable, check_images, check_key, refuse_base, refuse_pool
from masquerade.errors import InputError, NotInvertibleError
from masquerade.keys import Key, check_key_array, check_key_field, is_count
from masquerade.rng import RngLike, as_generator

__all__ = [
    "OPERATIONS",
    "MAGNITUDES",
    "SUB_POLICIES",
    "parse_policy",
    "format_policy",
    "apply_operation",
    "ATSPolicy",
    "ATSKey",
    "ATSSettings",
    "transform",
]

# operation -> its 10 magnitude levels (level 0 is the mildest), as in the ATS code
MAGNITUDES: dict[str, np.ndarray] = {
    "shearX": np.linspace(0, 0.3, 10),
    "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10),
    "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10),
    "color": np.linspace(0.0, 0.5, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0).astype(np.int64),
    "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.5, 10),
    "sharpness": np.linspace(0.0, 0.5, 10),
    "brightness": np.linspace(0.0, 0.5, 10),
    "autocontrast": np.zeros(10),
    "equalize": np.zeros(10),
    "invert": np.zeros(10),
    "zoom": np.zeros(10),
    "warp": np.zeros(10),
}
OPERATIONS: tuple[str, ...] = tuple(MAGNITUDES)
_SIGNED = {"shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness", "brightness"}

# The 51 sub-policies of the ATS code (its policy.py), in its order: (probability, operation, magnitude level).
SUB_POLICIES: tuple[tuple[float, str, int], ...] = (
    (0.1, "invert", 7),
    (0.2, "contrast", 6),
    (0.7, "rotate", 2),
    (0.3, "translateX", 9),
    (0.8, "sharpness", 1),
    (0.9, "sharpness", 3),
    (0.5, "shearY", 2),
    (0.7, "translateY", 2),
    (0.5, "autocontrast", 5),
    (0.9, "equalize", 2),
    (0.2, "shearY", 5),
    (0.3, "posterize", 5),
    (0.4, "color", 3),
    (0.6, "brightness", 5),
    (0.3, "sharpness", 9),
    (0.7, "brightness", 9),
    (0.6, "equalize", 5),
    (0.5, "equalize", 1),
    (0.6, "contrast", 7),
    (0.6, "sharpness", 5),
    (0.7, "color", 5),
    (0.5, "translateX", 5),
    (0.3, "equalize", 7),
    (0.4, "autocontrast", 8),
    (0.4, "translateY", 3),
    (0.2, "sharpness", 6),
    (0.9, "brightness", 6),
    (0.2, "color", 8),
    (0.5, "solarize", 0),
    (0.0, "invert", 0),
    (0.2, "equalize", 0),
    (0.6, "autocontrast", 0),
    (0.2, "equalize", 8),
    (0.6, "equalize", 4),
    (0.9, "color", 5),
    (0.6, "equalize", 5),
    (0.8, "autocontrast", 4),
    (0.2, "solarize", 4),
    (0.1, "brightness", 3),
    (0.7, "color", 0),
    (0.4, "solarize", 1),
    (0.9, "autocontrast", 0),
    (0.9, "translateY", 3),
    (0.7, "translateY", 3),
    (0.9, "autocontrast", 1),
    (0.8, "solarize", 1),
    (0.8, "equalize", 5),
    (0.1, "invert", 0),
    (0.7, "translateY", 3),
    (0.9, "autocontrast", 1),
)
_OP_OF = np.array([op for _, op, _ in SUB_POLICIES] + [""])  # index -1 (no step) -> ""

_POLICY_RE = re.compile(r"^\d+(-\d+)*(\+\d+(-\d+)*)*$")


def parse_policy(text: str) -> tuple[tuple[int, ...], ...]:
    """``"3-1-7+43-18-18"`` -> ``((3, 1, 7), (43, 18, 18))``; ``""``/``"none"`` -> ``()`` (no transformation)."""
    if not isinstance(text, str):
        raise InputError(f"a policy is a string such as '3-1-7' or '3-1-7+43-18-18', got {type(text).__name__}")
    t = text.strip().replace(" ", "")
    if t in ("", "none"):
        return ()
    if not _POLICY_RE.match(t):
        raise InputError(
            f"policy {text!r}: write sub-policy numbers joined by '-', lists joined by '+' "
            f"(for example '3-1-7' or '3-1-7+43-18-18')"
        )
    lists = tuple(tuple(int(i) for i in part.split("-")) for part in t.split("+"))
    bad = sorted({i for lst in lists for i in lst if i >= len(SUB_POLICIES)})
    if bad:
        raise InputError(f"policy {text!r}: sub-policies are numbered 0-{len(SUB_POLICIES) - 1}, got {bad}")
    return lists


def format_policy(lists: tuple[tuple[int, ...], ...]) -> str:
    return "+".join("-".join(str(i) for i in lst) for lst in lists) or "none"


# ----------------------------------------------------------------------------------------------------------------
# the operations, batched: x is N×C×H×W in [0, 1]; per-image parameters are tensors of length N


def _q(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid, as PIL's uint8 images are."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert('L')`` (ITU-R 601-2 luma, rounded), N×1×H×W."""
    if x.shape[1] == 1:
        return x
    v = torch.round(x * 255).to(torch.int64)
    luma = (v[:, 0:1] * 19595 + v[:, 1:2] * 38470 + v[:, 2:3] * 7471 + 0x8000) >> 16
    return luma.to(x.dtype) / 255


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend`` on 8-bit images: computed in float, clipped, truncated."""
    v = (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)) * 255
    return torch.floor(v.clamp(0, 255) + 1e-4) / 255


def _sample(x: torch.Tensor, src_x: torch.Tensor, src_y: torch.Tensor, mode: str, fill: float) -> torch.Tensor:
    """Resample at source pixel coordinates (N×H×W, pixel centres at integers + 0.5); outside -> ``fill``."""
    n, c, h, w = x.shape
    grid = torch.stack([src_x / w * 2 - 1, src_y / h * 2 - 1], dim=-1).to(x.dtype)
    if mode == "nearest":
        out = F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill
    else:  # PIL: a source point outside the image takes the fill; inside, the kernel clamps at the border
        out = F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False)
        inside = ((src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)).unsqueeze(1)
        out = torch.where(inside, out, torch.full_like(out, fill))
    return _q(out)


def _cubic(v1: torch.Tensor, v2: torch.Tensor, v3: torch.Tensor, v4: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """PIL's cubic through four samples at offset d in [0, 1) from v2 (cubic convolution with a = -1, as its
    ``transform`` uses; ``resize`` uses a = -0.5), with its order of operations, so float64 rounds as PIL's C does."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def _bicubic_pil(x: torch.Tensor, src_x: torch.Tensor, src_y: torch.Tensor, fill: float) -> torch.Tensor:
    """PIL's bicubic resampling of 8-bit images: 4×4 taps clamped at the border, computed in float64 on the 8-bit
    values, saturated and truncated to an integer; a source point outside the image takes ``fill``."""
    n, c, h, w = x.shape
    flat = torch.round(x.clamp(0, 1) * 255).to(torch.float64).reshape(n, c, h * w)
    xin, yin = src_x - 0.5, src_y - 0.5
    x0, y0 = torch.floor(xin), torch.floor(yin)
    dx, dy = (xin - x0).unsqueeze(1), (yin - y0).unsqueeze(1)
    cols = [(x0 + (i - 1)).clamp(0, w - 1).to(torch.int64) for i in range(4)]
    rows = [(y0 + (j - 1)).clamp(0, h - 1).to(torch.int64) for j in range(4)]

    def tap(r: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        idx = (r * w + col).reshape(n, 1, h * w).expand(n, c, h * w)
        return flat.gather(2, idx).reshape(n, c, h, w)

    def along_row(r: torch.Tensor) -> torch.Tensor:
        return _cubic(tap(r, cols[0]), tap(r, cols[1]), tap(r, cols[2]), tap(r, cols[3]), dx)

    v = _cubic(along_row(rows[0]), along_row(rows[1]), along_row(rows[2]), along_row(rows[3]), dy)
    v = torch.trunc(v.clamp(0, 255))
    inside = ((src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)).unsqueeze(1)
    return torch.where(inside, v / 255, torch.full_like(v, fill)).to(x.dtype)


def _centres(n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij"
    )
    return xs.expand(n, h, w), ys.expand(n, h, w)


def _affine(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    d: torch.Tensor,
    e: torch.Tensor,
    f: torch.Tensor,
    mode: str,
    fill: float = 0.0,
) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE, (a, b, c, d, e, f))``: output (x, y) takes input (ax + by + c, dx + ey + f)."""
    n, _, h, w = x.shape
    xs, ys = _centres(n, h, w)
    v = [t.to(torch.float64).view(-1, 1, 1) for t in (a, b, c, d, e, f)]
    src_x, src_y = v[0] * xs + v[1] * ys + v[2], v[3] * xs + v[4] * ys + v[5]
    if mode == "bicubic":
        return _bicubic_pil(x, src_x, src_y, fill)
    return _sample(x, src_x, src_y, mode, fill)


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """PIL's ``rotate`` (counter-clockwise about the centre, nearest), filled with grey 128 as the ATS code does."""
    n, _, h, w = x.shape
    t = torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(t).view(-1, 1, 1), torch.sin(t).view(-1, 1, 1)
    xs, ys = _centres(n, h, w)
    cx, cy = w / 2, h / 2
    dx, dy = xs - cx, ys - cy
    return _sample(x, cos * dx - sin * dy + cx, sin * dx + cos * dy + cy, "nearest", 128 / 255)


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    v = torch.round(x * 255).to(torch.int64)
    mask = (255 - ((1 << (8 - bits.to(torch.int64))) - 1)).view(-1, 1, 1, 1)
    return (v & mask).to(x.dtype) / 255


def _solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    v = torch.round(x * 255)
    return torch.where(v >= threshold.to(x.dtype).view(-1, 1, 1, 1), 255 - v, v) / 255


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL: the degenerate image is the mean of the grayscale histogram, rounded
    mean = torch.floor(_gray(x).mean(dim=(1, 2, 3)) * 255 + 0.5) / 255
    return _blend(mean.view(-1, 1, 1, 1).expand_as(x), x, factor)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL's SMOOTH filter (centre weight 5, the rest 1, /13) inside, the border pixels unchanged
    n, c, h, w = x.shape
    k = torch.ones(3, 3, dtype=x.dtype)
    k[1, 1] = 5
    k = (k / 13).expand(c, 1, 3, 3)
    smooth = _q(F.conv2d(x, k, groups=c))
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, factor)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    v = torch.round(x * 255)
    lo = v.amin(dim=(2, 3), keepdim=True)
    hi = v.amax(dim=(2, 3), keepdim=True)
    scale = 255 / (hi - lo).clamp_min(1)
    out = torch.floor((v - lo) * scale + 1e-6).clamp(0, 255)  # PIL's lut: int(i * scale - lo * scale)
    return torch.where(hi > lo, out, v) / 255


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize``, per channel, vectorised over the batch."""
    n, c, h, w = x.shape
    v = torch.round(x * 255).to(torch.int64).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.int64).scatter_add_(1, v, torch.ones_like(v))
    nonzero = hist > 0
    last = torch.where(nonzero, torch.arange(256), torch.full_like(hist, -1)).amax(1)
    last_count = hist.gather(1, last.clamp_min(0)[:, None])[:, 0]
    step = (h * w - last_count) // 255
    before = torch.cumsum(hist, 1) - hist  # pixels strictly below each level
    lut = (step[:, None] // 2 + before) // step.clamp_min(1)[:, None]
    lut = lut.clamp(max=255)
    out = torch.where((step > 0)[:, None], lut.gather(1, v), v)
    return (out.to(x.dtype) / 255).reshape(n, c, h, w)


def _zoom(x: torch.Tensor, params: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """The ATS ``zoom``: a (32 + p)-crop of the image zero-padded by p (p in 8..16), resized back; black pixels
    become uniform noise. ``params`` is N×3 (p, crop y, crop x)."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    for p in torch.unique(params[:, 0]).tolist():  # a handful of pad sizes, each a batched crop + resize
        sel = torch.nonzero(params[:, 0] == p)[:, 0]
        pad = F.pad(x[sel], (p, p, p, p))
        oy, ox = params[sel, 1], params[sel, 2]
        rows = (oy[:, None] + torch.arange(h + p))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w + p))[:, None, None, :]
        crop = pad[torch.arange(len(sel))[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
        out[sel] = _q(F.interpolate(crop, size=(h, w), mode="bilinear", antialias=True, align_corners=False))
    for i in range(n):  # the noise, one generator per image so that each is reproducible from its key
        g = torch.Generator().manual_seed(int(seeds[i]))
        noise = torch.floor(torch.rand(c, h, w, generator=g, dtype=torch.float64) * 255).to(x.dtype) / 255
        out[i] = torch.where(out[i] == 0, noise, out[i])
    return out


def _warp(x: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """A perspective warp (torchvision's RandomPerspective, distortion 0.3): ``corners`` N×8 are the end points of
    the image corners (top-left, top-right, bottom-right, bottom-left), bilinear, black fill."""
    n, _, h, w = x.shape
    start = torch.tensor([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=torch.float64).expand(n, 4, 2)
    end = corners.to(torch.float64).view(n, 4, 2)
    # the homography that maps output (end) points to input (start) points
    rows = []
    for k in range(4):
        ex, ey = end[:, k, 0], end[:, k, 1]
        sx, sy = start[:, k, 0], start[:, k, 1]
        z, o = torch.zeros_like(ex), torch.ones_like(ex)
        rows.append(torch.stack([ex, ey, o, z, z, z, -sx * ex, -sx * ey], 1))
        rows.append(torch.stack([z, z, z, ex, ey, o, -sy * ex, -sy * ey], 1))
    a = torch.stack(rows, 1)
    b = torch.stack([start[:, k // 2 % 4, k % 2] for k in range(8)], 1)
    coef = torch.linalg.solve(a, b)
    # the corner points are pixel indices: map output indices to input indices, then to centre coordinates
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    cf = [coef[:, i].view(-1, 1, 1) for i in range(8)]
    den = cf[6] * xs + cf[7] * ys + 1
    src_x = (cf[0] * xs + cf[1] * ys + cf[2]) / den
    src_y = (cf[3] * xs + cf[4] * ys + cf[5]) / den
    return _sample(x, src_x + 0.5, src_y + 0.5, "bilinear", 0.0)


def apply_operation(
    x: torch.Tensor,
    op: str,
    magnitude: float,
    *,
    sign: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
    seeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply one operation at ``magnitude`` to a batch. ``sign`` (±1 per image) for the signed operations,
    ``extra`` the per-image draws of ``zoom`` (N×3 ints) and ``warp`` (N×8 corner points), ``seeds`` the noise seeds
    of ``zoom``."""
    n, _, h, w = x.shape
    s = torch.ones(n, dtype=torch.float64) if sign is None else sign.to(torch.float64)
    m = torch.full((n,), float(magnitude), dtype=torch.float64)
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    if op == "shearX":
        return _affine(x, one, m * s, zero, zero, one, zero, "bicubic")
    if op == "shearY":
        return _affine(x, one, zero, zero, m * s, one, zero, "bicubic")
    if op == "translateX":
        return _affine(x, one, zero, m * w * s, zero, one, zero, "nearest")
    if op == "translateY":
        return _affine(x, one, zero, zero, zero, one, m * h * s, "nearest")
    if op == "rotate":
        return _rotate(x, m)
    if op in ("color", "contrast", "sharpness", "brightness"):
        factor = (1 + m * s).to(x.dtype)
        if op == "color":
            return _blend(_gray(x).expand_as(x), x, factor)
        if op == "brightness":
            return _blend(torch.zeros_like(x), x, factor)
        return _contrast(x, factor) if op == "contrast" else _sharpness(x, factor)
    if op == "posterize":
        return _posterize(x, m.to(torch.int64))
    if op == "solarize":
        return _solarize(x, m)
    if op == "autocontrast":
        return _autocontrast(x)
    if op == "equalize":
        return _equalize(x)
    if op == "invert":
        return _q(1 - x)
    if op == "zoom":
        if extra is None or seeds is None:
            raise InputError("zoom needs its drawn crop (extra) and noise seeds")
        return _zoom(x, extra.to(torch.int64), seeds)
    if op == "warp":
        if extra is None:
            raise InputError("warp needs its drawn corner points (extra)")
        return _warp(x, extra)
    raise InputError(f"unknown operation {op!r}; the library has {', '.join(OPERATIONS)}")


# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ATSSettings:
    policy: str = "3-1-7+43-18-18"  # a hybrid of two policies ATS reports for ResNet-20 on CIFAR-100
    always: bool = False  # True: ignore the sub-policies' probabilities, as the published code does

    def __post_init__(self) -> None:
        if isinstance(self.policy, (int, np.integer)) and not isinstance(self.policy, bool):
            object.__setattr__(self, "policy", str(int(self.policy)))  # "--set policy=3" reads as a number
        lists = parse_policy(self.policy)
        object.__setattr__(self, "policy", format_policy(lists))
        if not isinstance(self.always, (bool, np.bool_)):
            raise InputError(f"ats: always must be true or false, got {self.always!r}")


@dataclass(frozen=True, repr=False, eq=False)
class ATSKey(Key):
    """The random choices of one application of a policy to ``n`` images (not a secret worth keeping)."""

    scheme: ClassVar[str] = "ats"
    public_fields: ClassVar[tuple[str, ...]] = ("settings", "n", "shape")
    settings: ATSSettings
    n: int
    shape: list[int]
    steps: np.ndarray  # n×L sub-policy index applied at each step, -1 for none
    sign: np.ndarray  # n×L ±1
    extra: np.ndarray  # n×L×8 float64: zoom (pad, y, x) or warp corner points
    seeds: np.ndarray  # n×L int64 noise seeds (zoom)

    def validate(self) -> None:
        check_key_field(self, "settings", isinstance(self.settings, ATSSettings), "ATS settings")
        check_key_field(self, "n", is_count(self.n, 0), "a count")
        check_key_field(
            self,
            "shape",
            isinstance(self.shape, list) and len(self.shape) == 3 and all(is_count(v, 1) for v in self.shape),
            "[C, H, W] of positive sizes",
        )
        n = int(self.n)
        steps = check_key_array(self, "steps", dtype=np.int64, shape=(n, None), low=-1, high=len(SUB_POLICIES))
        length = steps.shape[1]
        sign = check_key_array(self, "sign", dtype=np.int64, shape=(n, length))
        if sign.size and not np.isin(sign, (-1, 1)).all():
            raise InputError("ats key: sign holds values other than -1 and 1")
        check_key_array(self, "extra", dtype=np.float64, shape=(n, length, 8), finite=True, low=-1e6, high=1e6)
        check_key_array(self, "seeds", dtype=np.int64, shape=(n, length), low=0)


def _draw_extra(op: str, g: np.random.Generator, n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    extra = np.zeros((n, 8))
    seeds = g.integers(0, 2**62, n)
    if op == "zoom":
        pad = g.integers(8, 17, n)
        extra[:, 0] = pad
        extra[:, 1] = np.floor(g.random(n) * (pad + 1))
        extra[:, 2] = np.floor(g.random(n) * (pad + 1))
    elif op == "warp":
        d = 0.3
        hw, hh = w // 2, h // 2
        bx, by = int(d * hw) + 1, int(d * hh) + 1
        tl = np.stack([g.integers(0, bx, n), g.integers(0, by, n)], 1)
        tr = np.stack([w - 1 - g.integers(0, bx, n), g.integers(0, by, n)], 1)
        br = np.stack([w - 1 - g.integers(0, bx, n), h - 1 - g.integers(0, by, n)], 1)
        bl = np.stack([g.integers(0, bx, n), h - 1 - g.integers(0, by, n)], 1)
        extra[:] = np.concatenate([tl, tr, br, bl], 1)
    return extra, seeds


class ATSPolicy(Configurable):
    """Apply an ATS policy (``policy="3-1-7+43-18-18"``); one fresh draw per image and call."""

    name = "ats"
    invertible = False
    data_kind = "images"
    one_time_keys = True
    Settings = ATSSettings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.lists = parse_policy(self.settings.policy)

    def keygen(
        self,
        n: int,
        *,
        rng: RngLike = None,
        shape: tuple[int, ...] = (3, 32, 32),
        pool_size: int = 0,
        base: Key | None = None,
    ) -> ATSKey:
        refuse_pool(self.name, pool_size)
        refuse_base(self.name, base)
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"ats.keygen: n must be a non-negative int, got {n!r}")
        g = as_generator(rng)
        c, h, w = (int(v) for v in shape)
        length = max((len(lst) for lst in self.lists), default=0)
        steps = np.full((n, length), -1, dtype=np.int64)
        sign = np.ones((n, length), dtype=np.int64)
        extra = np.zeros((n, length, 8))
        seeds = np.zeros((n, length), dtype=np.int64)
        if self.lists and n:
            choice = g.integers(0, len(self.lists), n)
            for li, lst in enumerate(self.lists):
                rows = np.nonzero(choice == li)[0]
                steps[rows[:, None], np.arange(len(lst))[None]] = lst
            fire = g.random((n, length))
            sign = np.where(g.random((n, length)) < 0.5, -1, 1).astype(np.int64)
            for step in range(length):
                for op in ("zoom", "warp"):
                    e, s = _draw_extra(op, g, n, h, w)
                    rows = _OP_OF[steps[:, step]] == op
                    extra[rows, step] = e[rows]
                    seeds[rows, step] = s[rows]
            if not self.settings.always:
                prob = np.array([p for p, _, _ in SUB_POLICIES] + [0.0])
                steps = np.where(fire < prob[steps], steps, -1)
        return ATSKey(
            settings=self.settings, n=int(n), shape=[c, h, w], steps=steps, sign=sign, extra=extra, seeds=seeds
        )

    def encode(
        self, x: torch.Tensor, key: Key, *, public: torch.Tensor | None = None, rng: RngLike = None
    ) -> torch.Tensor:
        x = check_images(x, where="ats.encode")
        check_key(key, ATSKey, where="ats.encode", n=x.shape[0])
        assert isinstance(key, ATSKey)
        if list(x.shape[1:]) != list(key.shape):
            raise InputError(f"ats.encode: the key was drawn for images of shape {key.shape}, got {list(x.shape[1:])}")
        return transform(x, key.steps, key.sign, key.extra, key.seeds)

    def decode(self, z: torch.Tensor, key: Key, *, public: torch.Tensor | None = None) -> torch.Tensor:
        raise NotInvertibleError("ats: transformation policies are not invertible")


def transform(
    x: torch.Tensor, steps: np.ndarray, sign: np.ndarray, extra: np.ndarray, seeds: np.ndarray
) -> torch.Tensor:
    """Apply drawn sub-policies: at each step, every operation once on the images that take it."""
    out = x.clone()
    for step in range(steps.shape[1]):
        col = steps[:, step]
        for sp in np.unique(col[col >= 0]).tolist():
            rows = torch.from_numpy(np.nonzero(col == sp)[0])
            _, op, level = SUB_POLICIES[sp]
            out[rows] = apply_operation(
                out[rows],
                op,
                float(MAGNITUDES[op][level]),
                sign=torch.from_numpy(sign[rows.numpy(), step]),
                extra=torch.from_numpy(extra[rows.numpy(), step]),
                seeds=torch.from_numpy(seeds[rows.numpy(), step]),
            )
    return out
