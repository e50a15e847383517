"""Differences on a grid with a boundary per axis, and their exact transposes (pure torch).

Every file in ``pde2net/operators/runtime`` imports only ``math``, ``torch`` and its siblings: the
standalone source of an operator network is these files, inlined, followed by the network's
construction (:mod:`pde2net.operators.source`), so the live module and the emitted source run the
same code.

Layout: a field is ``(B, C, *space)`` with x the LAST axis (then y, then z); ``axis`` below counts
space axes from x: axis 0 is dim -1, axis 1 dim -2, axis 2 dim -3.

The forward difference along an axis with n points (docs/theory.md §12), ``D u_i = (u_(i+1) - u_i) / h``:
- ``neumann``: the n - 1 complete rows (zero flux across the boundary);
- ``periodic``: n rows, circulant;
- ``dirichlet``: u = 0 outside the domain on both sides: n + 1 rows ``i = -1 .. n - 1``, so
  ``D^T D = tridiag(-1, 2, -1) / h^2``.
"""
from __future__ import annotations

import math

import torch

BOUNDARY_KINDS = ("neumann", "periodic", "dirichlet")


def space_dim(axis: int) -> int:
    """The tensor dim of space axis ``axis`` (x = 0 is the last dim)."""
    return -1 - axis


def diff(u: torch.Tensor, axis: int, boundary: str, inv_h: float) -> torch.Tensor:
    """``D u`` along ``axis``: n - 1 (neumann), n (periodic) or n + 1 (dirichlet) values."""
    dim = space_dim(axis)
    n = u.shape[dim]
    if boundary == "periodic":
        d = torch.roll(u, -1, dims=dim) - u
    elif boundary == "dirichlet":
        zero = torch.zeros_like(u.narrow(dim, 0, 1))
        up = torch.cat([zero, u, zero], dim=dim)
        d = up.narrow(dim, 1, n + 1) - up.narrow(dim, 0, n + 1)
    else:
        d = u.narrow(dim, 1, n - 1) - u.narrow(dim, 0, n - 1)
    return d if inv_h == 1.0 else d * inv_h  # x * 1.0 == x exactly: skip a pass over the field


def diff_t(v: torch.Tensor, axis: int, boundary: str, inv_h: float) -> torch.Tensor:
    """``D^T v`` along ``axis``, the exact transpose of :func:`diff` (n values again)."""
    dim = space_dim(axis)
    m = v.shape[dim]
    if boundary == "periodic":
        out = torch.roll(v, 1, dims=dim) - v
    elif boundary == "dirichlet":  # m = n + 1 rows -> n nodes: (D^T v)_i = v_(i-1) - v_i (row index + 1)
        out = v.narrow(dim, 0, m - 1) - v.narrow(dim, 1, m - 1)
    else:  # m = n - 1 rows -> n nodes: zero rows outside
        zero = torch.zeros_like(v.narrow(dim, 0, 1))
        vp = torch.cat([zero, v, zero], dim=dim)
        out = vp.narrow(dim, 0, m + 1) - vp.narrow(dim, 1, m + 1)
    return out if inv_h == 1.0 else out * inv_h


def flux_grid_pad(d: torch.Tensor, axis: int, boundaries: tuple, own: int) -> torch.Tensor:
    """The difference ``d`` along axis ``own`` on the common flux grid of every axis, so that the
    components of a gradient meet at the same points (the isotropic diffusivity needs
    ``|grad u|^2`` per point).  Along axis ``a``, the flux grid has n + 1 points if ``a`` is
    dirichlet (the ghost row i = -1 first: u = 0 there, so every other component is 0 there),
    otherwise n points (a neumann difference gets a zero row at the end: zero flux)."""
    out = d
    for a, kind in enumerate(boundaries):
        dim = space_dim(a)
        if a == own:
            if kind == "neumann":
                out = torch.cat([out, torch.zeros_like(out.narrow(dim, 0, 1))], dim=dim)
        elif kind == "dirichlet":
            out = torch.cat([torch.zeros_like(out.narrow(dim, 0, 1)), out], dim=dim)
    return out


def flux_grid_crop(v: torch.Tensor, axis: int, boundaries: tuple, own: int) -> torch.Tensor:
    """The transpose of :func:`flux_grid_pad`: drops the padded rows again."""
    out = v
    for a, kind in enumerate(boundaries):
        dim = space_dim(a)
        n = out.shape[dim]
        if a == own:
            if kind == "neumann":
                out = out.narrow(dim, 0, n - 1)
        elif kind == "dirichlet":
            out = out.narrow(dim, 1, n - 1)
    return out


def gradient(u: torch.Tensor, boundaries: tuple, inv_h: tuple) -> list:
    """The components of ``grad_h u`` on the common flux grid (:func:`flux_grid_pad`)."""
    return [flux_grid_pad(diff(u, a, b, inv_h[a]), a, boundaries, a)
            for a, b in enumerate(boundaries)]


def gradient_t(vs: list, boundaries: tuple, inv_h: tuple) -> torch.Tensor:
    """``grad_h^T (v_0, v_1, ...)``: the exact transpose of :func:`gradient`."""
    out = None
    for a, b in enumerate(boundaries):
        part = diff_t(flux_grid_crop(vs[a], a, boundaries, a), a, b, inv_h[a])
        out = part if out is None else out + part
    return out


def gauss_weights(sigma: float, h: float, truncate: float = 3.0) -> list:
    """The sampled Gaussian ``exp(-(k h)^2 / (2 sigma^2))`` for ``|k h| <= truncate sigma``,
    renormalised to sum 1 (docs/theory.md §10: truncation and normalisation do not affect the
    stability bound)."""
    radius = max(int(math.floor(truncate * sigma / h)), 0)
    w = [math.exp(-((k * h) ** 2) / (2.0 * sigma * sigma)) for k in range(-radius, radius + 1)]
    total = sum(w)
    return [x / total for x in w]


def _extend(u: torch.Tensor, dim: int, r: int, boundary: str) -> torch.Tensor:
    """u extended by r points on both sides along dim: mirrored (neumann: u_(-1-k) = u_k, the
    boundary rule of the zero-flux problem), wrapped (periodic) or zero (dirichlet)."""
    n = u.shape[dim]
    if r == 0:
        return u
    if boundary == "periodic":
        idx = torch.arange(-r, n + r, device=u.device) % n
        return u.index_select(dim, idx)
    if boundary == "dirichlet":
        z = torch.zeros_like(u.narrow(dim, 0, 1)).expand(*[r if d == dim % u.dim() else s
                                                            for d, s in enumerate(u.shape)])
        return torch.cat([z, u, z], dim=dim)
    idx = torch.arange(-r, n + r, device=u.device)
    idx = torch.where(idx < 0, -1 - idx, idx)
    idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    idx = idx.clamp(0, n - 1)  # grids shorter than the kernel radius mirror again at the clamp
    return u.index_select(dim, idx)


def gauss(u: torch.Tensor, weights: list, boundaries: tuple) -> torch.Tensor:
    """Separable Gaussian presmoothing ``K_sigma * u`` along every space axis, the field extended
    by each axis's boundary rule (:func:`_extend`).  ``weights``: one list per axis (x first)."""
    out = u
    for a, b in enumerate(boundaries):
        w = weights[a]
        r = len(w) // 2
        if r == 0:
            continue
        dim = space_dim(a)
        n = out.shape[dim]
        ext = _extend(out, dim, r, b)
        acc = ext.narrow(dim, 0, n) * w[0]
        for k in range(1, len(w)):
            acc = acc + ext.narrow(dim, k, n) * w[k]
        out = acc
    return out
