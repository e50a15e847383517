"""Isotropic nonlinear diffusion ``div( g(|grad u_sigma|^2) grad u )`` in 1D, 2D and 3D, with
channels (pure torch; inlined in the standalone source).

The term is ``A(u) u = D^T G D u`` (docs/theory.md §2, §12): D = the forward-difference gradient
on the common flux grid (:func:`gradient`), D^T its exact transpose (:func:`gradient_t`), and
G = g(s2) per flux point with ``s2 = sum_c |grad_h W_c|^2`` (a joint diffusivity: one weight per
point, the same for every channel).  W is u, or ``K_sigma * u`` (Gaussian presmoothing,
docs/theory.md §10) when ``sigma`` is given: the smoothed field enters only the diffusivity's
argument, the difference D always acts on u.
"""
from __future__ import annotations

import torch

from .grid import flux_grid_crop, flux_grid_pad, gauss, gauss_weights, gradient, gradient_t, space_dim


def _isotropic_touch_sum(v: torch.Tensor, boundary: str) -> torch.Tensor:
    """``|D|^T v`` along the last dim (the entries of D replaced by 1): for every node, the sum of
    the flux values of the rows of :func:`grid.diff` that touch it (the diagonal of ``D^T G D``
    is ``touch_sum(G) / h^2``)."""
    m = v.shape[-1]
    if boundary == "periodic":
        return torch.roll(v, 1, dims=-1) + v
    if boundary == "dirichlet":  # n + 1 rows, row r = u_r - u_(r-1): node i in rows i and i + 1
        return v.narrow(-1, 0, m - 1) + v.narrow(-1, 1, m - 1)
    zero = torch.zeros_like(v.narrow(-1, 0, 1))  # n - 1 rows: node i in rows i - 1 and i
    vp = torch.cat([zero, v, zero], dim=-1)
    return vp.narrow(-1, 0, m + 1) + vp.narrow(-1, 1, m + 1)


def _is_one(g, dtype: torch.dtype) -> bool:
    """Whether the constant diffusivity g evaluates to exactly 1 in ``dtype``."""
    try:
        return bool((g(torch.zeros(1, dtype=dtype)) == 1).all())
    except (RuntimeError, TypeError, ValueError):
        return False


class IsotropicTerm(torch.nn.Module):
    """``D^T g(|grad W|^2) D`` on fields ``(B, C, *space)`` (x the last dim).

    ``g``: the diffusivity, a callable on tensors of ``s2`` (its constant factor included);
    ``boundaries``: one kind per space axis, x first; ``inv_h``: ``1/h`` per axis, x first;
    ``sigma``: the presmoothing's standard deviation (None: W = u) with ``h`` the spacings it is
    sampled on; ``constant``: g does not depend on s2 (linear diffusion: no gradient for G)."""

    def __init__(self, g: "Callable[[torch.Tensor], torch.Tensor]", boundaries: tuple, inv_h: tuple,
                 sigma: float | None = None, h: tuple | None = None, constant: bool = False) -> None:
        super().__init__()
        self.g = g
        self.boundaries = tuple(boundaries)
        self.inv_h = tuple(float(x) for x in inv_h)
        self.constant = bool(constant)
        self.sigma = None if sigma is None else float(sigma)
        spacing = h if h is not None else tuple(1.0 / x for x in self.inv_h)
        # the separable kernel, one list per axis (truncated at 3 sigma, renormalised)
        self.gauss = None if self.sigma is None else [gauss_weights(self.sigma, float(hd))
                                                     for hd in spacing]
        # the dtypes in which a constant g is exactly 1 (the heat equation): G * D u is then D u
        # bit for bit, so forward skips building G and the multiplication
        self.unit_dtypes = tuple(dt for dt in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
                                 if self.constant and _is_one(g, dt))

    def weights(self, u: torch.Tensor, f: torch.Tensor | None = None) -> torch.Tensor:
        """G = g(sum_c |grad_h W_c|^2) on the flux grid, shape (B, 1, *flux grid)."""
        if self.constant:  # zeros on the flux grid, shaped from u so that traced graphs stay dynamic
            zero = flux_grid_pad(torch.zeros_like(u.narrow(1, 0, 1)), -1, self.boundaries, -1)
            return self.g(zero)
        w = u if self.gauss is None else gauss(u, self.gauss, self.boundaries)
        comps = gradient(w, self.boundaries, self.inv_h)
        s2 = comps[0] * comps[0]
        for c in comps[1:]:
            s2 = s2 + c * c
        # one channel: the sum over it is s2 itself (the same bits, one pass fewer)
        return self.g(s2 if s2.shape[1] == 1 else s2.sum(dim=1, keepdim=True))

    def frozen_apply(self, u: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """``D^T G D u`` with G frozen."""
        comps = gradient(u, self.boundaries, self.inv_h)
        return gradient_t([G * c for c in comps], self.boundaries, self.inv_h)

    def frozen_diagonal(self, G: torch.Tensor) -> torch.Tensor:
        """``diag(D^T G D)``, shape (B, 1, *space) (the same for every channel): every entry of
        D along axis a is +-1/h_a, so the diagonal sums G over the rows touching a node / h_a^2."""
        out = None
        for a, kind in enumerate(self.boundaries):
            dim = space_dim(a)
            rows = flux_grid_crop(G, a, self.boundaries, a).transpose(dim, -1)
            part = _isotropic_touch_sum(rows, kind).transpose(dim, -1) * (self.inv_h[a] * self.inv_h[a])
            out = part if out is None else out + part
        return out

    def forward(self, u: torch.Tensor, f: torch.Tensor | None = None) -> torch.Tensor:
        """``A(u) u = D^T G(u) D u``: the same operations as ``frozen_apply(u, weights(u, f))``,
        with ``D u`` computed once when the diffusivity sees u itself (no presmoothing)."""
        if self.constant and u.dtype in self.unit_dtypes:
            return gradient_t(gradient(u, self.boundaries, self.inv_h), self.boundaries, self.inv_h)
        if self.constant or self.gauss is not None:
            return self.frozen_apply(u, self.weights(u, f))
        comps = gradient(u, self.boundaries, self.inv_h)
        s2 = comps[0] * comps[0]
        for c in comps[1:]:
            s2 = s2 + c * c
        G = self.g(s2 if s2.shape[1] == 1 else s2.sum(dim=1, keepdim=True))
        return gradient_t([G * c for c in comps], self.boundaries, self.inv_h)

