"""Inside-dataset InstaHide: every private image, exactly, from the encodings and their released mixed labels.

An inside-dataset encoding is ``σ ⊙ Σ_t λ_t x_{i_t}``: k private images and nothing else, under a one-time sign
mask; its label is ``Σ_t λ_t onehot(y_{i_t})``, so it names the classes in the mix and each class's share. Given the
grouping (the images ``i_t`` and coefficients ``λ_t`` of every encoding), each pixel is a real phase retrieval
problem ``|A x_p| = b_p`` with one design matrix ``A`` (E×n, the coefficients) shared by every pixel and E = T·n
equations for n unknowns. :func:`reconstruct_given_grouping` solves it for all pixels at once:

1. **lifted start**: ``b_j² = Σ_tt' λ_t λ_t' X[i_t, i_t']`` is linear in ``X = x_p x_pᵀ``, restricted to the image
   pairs that share an encoding; one ridge-regularised least-squares solve for all pixels, then each pixel's top
   eigenvector gives ``x_p`` up to its sign;
2. **alternating projections**: the signs ``s = sign(A x)``, then ``x = A⁺ (s ⊙ b)``, until nothing moves;
3. **sign synchronisation** between neighbouring pixels (:func:`masquerade.instahide.reconstruct.sign_sync`): one
   sign per pixel is shared by all images, and natural images are smooth.

What is left is one global sign (the images, or their negatives on the encodings' scale). With the right grouping the
fit is exact (the residual is rounding); with a wrong one it is not, so each encoding's residual verifies its slots.

:class:`masquerade.instahide.inside_attack.InsideAttack` (``instahide-inside``) finds the grouping from the
release and then calls this solver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from masquerade.errors import InputError
from masquerade.instahide.reconstruct import _grid_edges, sign_sync

__all__ = ["InsideReconstruction", "reconstruct_given_grouping", "lifted_pairs"]

_MAX_LIFTED = 2 * 10**8  # entries of the lifted design matrix (E × pairs), float64: 1.6 GB


@dataclass
class InsideReconstruction:
    images: torch.Tensor  # n×C×H×W on the encodings' scale, up to one global sign
    residual: torch.Tensor  # E: RMS of |A x| − |encoding| per encoding (the grouping's verifier)
    iterations: int  # alternating projections run


def lifted_pairs(
    partners: np.ndarray, lam: np.ndarray, n_images: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The lifted design of ``b_j² = Σ w X[a, b]`` over the unordered image pairs (a ≤ b) that share an encoding:
    (rows, columns, pairs, weights), where column u is ``X[pairs[u, 0], pairs[u, 1]]`` (``pairs``: U×2). A partner
    id of -1 pads a row with fewer images."""
    e, k = partners.shape
    ti, tj = np.triu_indices(k)
    a, b = partners[:, ti], partners[:, tj]
    ok = (a >= 0) & (b >= 0)
    lo, hi = np.minimum(a, b)[ok], np.maximum(a, b)[ok]
    w = (lam[:, ti] * lam[:, tj] * np.where(ti == tj, 1.0, 2.0)[None, :])[ok]
    uniq, cols = np.unique(lo * n_images + hi, return_inverse=True)
    rows = np.broadcast_to(np.arange(e)[:, None], ok.shape)[ok]
    return rows, cols.ravel(), np.stack([uniq // n_images, uniq % n_images], 1), w


def _lifted_start(design: torch.Tensor, b: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    """Every image's pixels up to one sign per pixel, from the lifted system of ``design`` (E×n, float64) and the
    magnitudes ``b`` (E×P): the ridge solution for ``X = x xᵀ`` (a tiny ridge, solved in the E×E dual: the lifted
    system has about as many pairs as equations, and a rank-revealing minimum-norm solve is unstable there), then
    each pixel's top eigenvector."""
    e, n = design.shape
    support = design != 0
    kmax = max(1, int(support.sum(1).max()))
    order = torch.argsort(support.to(torch.int8), dim=1, descending=True, stable=True)[:, :kmax]
    part = torch.where(support.gather(1, order), order, torch.full_like(order, -1)).numpy()
    rows, cols, pairs, wts = lifted_pairs(part, design.gather(1, order).numpy(), n)
    if e * max(e, len(pairs)) > _MAX_LIFTED:
        raise InputError(
            f"inside reconstruction: {e} encodings × {len(pairs)} image pairs is too large a lifted "
            "system; reconstruct fewer images at once"
        )
    lifted = torch.zeros(e, len(pairs), dtype=torch.float64)
    lifted.index_put_((torch.from_numpy(rows), torch.from_numpy(cols)), torch.from_numpy(wts), accumulate=True)
    gram = lifted @ lifted.T
    ridge = 1e-6 * float(gram.diagonal().mean().clamp_min(1e-300))
    sol = lifted.T @ torch.linalg.solve(gram + ridge * torch.eye(e, dtype=gram.dtype), b * b)  # U × pixels
    pa, pb = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    x = torch.empty(n, b.shape[1], dtype=torch.float64)
    for lo in range(0, b.shape[1], chunk):  # n×n per pixel: in chunks of pixels, so memory stays n²·chunk
        hi = min(lo + chunk, b.shape[1])
        mat = torch.zeros(hi - lo, n, n, dtype=torch.float64)
        mat[:, pa, pb] = sol[:, lo:hi].T
        mat[:, pb, pa] = sol[:, lo:hi].T
        val, vec = torch.linalg.eigh(mat)
        x[:, lo:hi] = (vec[:, :, -1] * val[:, -1:].clamp_min(0).sqrt()).T
    return x


def _alternate(
    design: torch.Tensor,
    b: torch.Tensor,
    x: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    iterations: int = 200,
    tol: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Alternating projections for ``|design x| = b`` from ``x``: signs ``s = sign(design x)``, then the weighted
    least squares ``x = argmin Σ_j w_j |s_j b_j − (design x)_j|²``. Returns x, each encoding's RMS misfit and the
    iterations run."""
    wd = design if weights is None else design * weights[:, None]
    solve = torch.linalg.pinv(design.T @ wd) @ wd.T
    done = 0
    while done < iterations:
        done += 1
        s = torch.sign(design @ x)
        s[s == 0] = 1
        new = solve @ (s * b)
        moved = float((new - x).abs().max())
        x = new
        if moved < tol:
            break
    return x, ((design @ x).abs() - b).pow(2).mean(1).sqrt(), done


def _design(partners: np.ndarray, lam: np.ndarray, n: int) -> torch.Tensor:
    e, k = partners.shape
    design = torch.zeros(e, n, dtype=torch.float64)
    design.index_put_(
        (torch.arange(e)[:, None].expand(-1, k), torch.from_numpy(partners)),
        torch.from_numpy(np.asarray(lam, np.float64)),
        accumulate=True,
    )
    return design


def _pixels(z: torch.Tensor) -> torch.Tensor:
    """|encodings| as E×(H·W·C) float64: pixels in the order the sign synchronisation walks."""
    return z.detach().to(torch.float64).permute(0, 2, 3, 1).reshape(len(z), -1).abs()


def _synchronised(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """n×(H·W·C) pixels with one sign per pixel made to agree between neighbours, as n×C×H×W float32."""
    c, h, w = shape
    x = x * sign_sync(x.float(), _grid_edges(h, w, c)).to(torch.float64)[None]
    return x.reshape(len(x), h, w, c).permute(0, 3, 1, 2).contiguous().float()


def reconstruct_given_grouping(
    encodings: torch.Tensor | np.ndarray,
    partners: np.ndarray,
    lam: np.ndarray,
    *,
    n_images: int | None = None,
    iterations: int = 200,
    tol: float = 1e-9,
    chunk: int = 256,
) -> InsideReconstruction:
    """Every private image from inside-dataset encodings (E×C×H×W, signs flipped) and their grouping:
    ``partners`` (E×k image ids) and ``lam`` (E×k coefficients). ``n_images``: default ``partners.max() + 1``."""
    z = torch.as_tensor(np.asarray(encodings) if not isinstance(encodings, torch.Tensor) else encodings)
    if z.ndim != 4:
        raise InputError(f"inside reconstruction: encodings are E×C×H×W, got shape {tuple(z.shape)}")
    part = np.asarray(partners)
    lm = np.asarray(lam, dtype=np.float64)
    e, c, h, w = z.shape
    if part.ndim != 2 or part.shape[0] != e or lm.shape != part.shape or not np.issubdtype(part.dtype, np.integer):
        raise InputError(f"inside reconstruction: partners and lam are E×k (E = {e}), got {part.shape} and {lm.shape}")
    n = int(part.max()) + 1 if n_images is None else int(n_images)
    if part.min() < 0 or part.max() >= n:
        raise InputError(f"inside reconstruction: partner ids must lie in 0..{n - 1}")
    if not np.isfinite(lm).all() or not torch.isfinite(z).all():
        raise InputError("inside reconstruction: encodings and coefficients must be finite")
    b = _pixels(z)
    design = _design(part.astype(np.int64), lm, n)
    x = _lifted_start(design, b, chunk=chunk)
    x, residual, done = _alternate(design, b, x, iterations=iterations, tol=tol)
    return InsideReconstruction(_synchronised(x, (c, h, w)), residual.float(), done)
