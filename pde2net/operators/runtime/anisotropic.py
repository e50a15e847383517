"""Anisotropic diffusion ``div(T grad u)`` in 2D: four directional difference pairs with the CELL
assembly (docs/theory.md §9), pure torch.

Directions ``o1 = (hx, 0)``, ``o2 = (0, hy)``, ``o3 = (hx, hy)``, ``o4 = (hx, -hy)`` with unit
vectors ``e_i = o_i / |o_i|`` and differences ``D_i u(p) = (u(p + o_i) - u(p)) / |o_i|``.

The tensor ``T = [[a, b], [b, c]]`` is computed at every pixel (from the presmoothed field), then
averaged over each 2x2 *cell* (the mean of its pixels' tensors).  A cell's tensor is split as
``T = sum_i w_i e_i e_i^T``:

    s  = delta * d^2 (a / hx^2 + c / hy^2) / 4,   d^2 = hx^2 + hy^2   (the diagonal mass)
    w1 = a - 2 s hx^2 / d^2,  w2 = c - 2 s hy^2 / d^2,
    w3 = s + t,  w4 = s - t,  t = b d^2 / (2 hx hy)

(square pixels: ``s = m = delta (a + c) / 2``, ``w1 = a - m, w2 = c - m, w3 = m + b, w4 = m - b``).
The cell feeds its six edges: ``w1 / 2`` to each of its two x-edges, ``w2 / 2`` to each y-edge,
``w3`` to its (1, 1) diagonal, ``w4`` to its (1, -1) diagonal.  An axis edge therefore gets the mean
of its (up to two) cells' weights, halved where only one cell holds it.

Cells per axis (the same rule on both axes, one boundary kind per axis):
- ``neumann``: only the n - 1 cells inside the image (no flux leaves the domain);
- ``periodic``: n cells, the last one wraps around;
- ``dirichlet``: n + 1 cells, the first and last covering a ghost pixel u = 0 outside the domain;
  a cell's tensor is the mean over its pixels inside the domain.

Every cell form is positive semidefinite for ``delta <= 1`` whatever the signs of the w_i
(docs/theory.md §9), so every subset of cells, hence every boundary rule above, gives a PSD A.
"""
from __future__ import annotations

import math

import torch

from .grid import _extend, diff, diff_t, gauss


# --------------------------------------------------------------------------- the cell grid
def cell_pad(u: torch.Tensor, axis: int, boundary: str) -> torch.Tensor:
    """u extended along ``axis`` so that consecutive pairs are the cells' pixel pairs:
    neumann n (n - 1 cells), periodic n + 1 (the first point again), dirichlet n + 2 (zeros)."""
    dim = -1 - axis
    if boundary == "periodic":
        return torch.cat([u, u.narrow(dim, 0, 1)], dim=dim)
    if boundary == "dirichlet":
        z = torch.zeros_like(u.narrow(dim, 0, 1))
        return torch.cat([z, u, z], dim=dim)
    return u


def cell_pad_t(v: torch.Tensor, axis: int, boundary: str) -> torch.Tensor:
    """The exact transpose of :func:`cell_pad`."""
    dim = -1 - axis
    m = v.shape[dim]
    if boundary == "periodic":
        first = v.narrow(dim, 0, 1) + v.narrow(dim, m - 1, 1)
        return torch.cat([first, v.narrow(dim, 1, m - 2)], dim=dim)
    if boundary == "dirichlet":
        return v.narrow(dim, 1, m - 2)
    return v


def corner(v: torch.Tensor, axis: int, hi: int) -> torch.Tensor:
    """The low (hi = 0) or high (hi = 1) pixel of every cell along ``axis`` of a padded field."""
    dim = -1 - axis
    return v.narrow(dim, hi, v.shape[dim] - 1)


def corner_t(c: torch.Tensor, axis: int, hi: int) -> torch.Tensor:
    """The transpose of :func:`corner`: the cells' values put back on the padded field."""
    dim = -1 - axis
    z = torch.zeros_like(c.narrow(dim, 0, 1))
    return torch.cat([z, c] if hi else [c, z], dim=dim)


def cell_mean(t: torch.Tensor, boundaries: tuple) -> torch.Tensor:
    """The mean of each cell's pixel values (dirichlet: over its pixels inside the domain, which
    is the mean of the field extended by its edge values)."""
    out = t
    for axis, b in enumerate(boundaries):
        dim = -1 - axis
        if b == "dirichlet":
            p = torch.cat([out.narrow(dim, 0, 1), out, out.narrow(dim, out.shape[dim] - 1, 1)], dim=dim)
        else:
            p = cell_pad(out, axis, b)
        out = 0.5 * (corner(p, axis, 0) + corner(p, axis, 1))
    return out


def cells_to_edges(w: torch.Tensor, axis: int, boundary: str) -> torch.Tensor:
    """Half of each of the (one or two) cells along ``axis`` that hold an edge: the edge weight
    of an axis edge running across the other axis.  n - 1 / n / n + 1 cells -> n edge rows."""
    dim = -1 - axis
    m = w.shape[dim]
    if boundary == "periodic":
        return 0.5 * (torch.roll(w, 1, dims=dim) + w)
    if boundary == "dirichlet":
        return 0.5 * (w.narrow(dim, 0, m - 1) + w.narrow(dim, 1, m - 1))
    z = torch.zeros_like(w.narrow(dim, 0, 1))
    p = torch.cat([z, w, z], dim=dim)
    return 0.5 * (p.narrow(dim, 0, m + 1) + p.narrow(dim, 1, m + 1))


def edge_sum_t(v: torch.Tensor, axis: int, boundary: str) -> torch.Tensor:
    """``|D|^T v`` along ``axis`` (unscaled): each node gets the sum of its edges' values (the
    diagonal of ``D^T diag(v) D`` times h^2)."""
    dim = -1 - axis
    m = v.shape[dim]
    if boundary == "periodic":
        return torch.roll(v, 1, dims=dim) + v
    if boundary == "dirichlet":
        return v.narrow(dim, 0, m - 1) + v.narrow(dim, 1, m - 1)
    z = torch.zeros_like(v.narrow(dim, 0, 1))
    p = torch.cat([z, v, z], dim=dim)
    return p.narrow(dim, 0, m + 1) + p.narrow(dim, 1, m + 1)


# ------------------------------------------------------------------------ pixel tensors
def central_gradient(us: torch.Tensor, boundaries: tuple, h: tuple) -> tuple:
    """``((us(x + hx) - us(x - hx)) / (2 hx), (us(y + hy) - us(y - hy)) / (2 hy))`` at every
    pixel, the field extended by each axis's boundary rule (as the Gaussian presmoothing)."""
    out = []
    for axis, b in enumerate(boundaries):
        dim = -1 - axis
        n = us.shape[dim]
        e = _extend(us, dim, 1, b)
        out.append((e.narrow(dim, 2, n) - e.narrow(dim, 0, n)) * (0.5 / h[axis]))
    return out[0], out[1]


def eed_tensor(vx: torch.Tensor, vy: torch.Tensor, g) -> tuple:
    """EED: ``T = g(|v|^2) v v^T / |v|^2 + v_perp v_perp^T / |v|^2`` (eigenvalue g across v, 1
    along it); ``T = g(0) I`` where v = 0."""
    s2 = vx * vx + vy * vy
    pos = s2 > 0
    safe = torch.where(pos, s2, torch.ones_like(s2))
    zero = torch.zeros_like(s2)
    cx2 = torch.where(pos, vx * vx / safe, zero)
    cy2 = torch.where(pos, vy * vy / safe, zero)
    cxy = torch.where(pos, vx * vy / safe, zero)
    gv = g(s2)
    one_g = 1.0 - gv
    return gv + one_g * cy2, -one_g * cxy, gv + one_g * cx2


def ced_tensor(vx: torch.Tensor, vy: torch.Tensor, rho_weights: list, boundaries: tuple,
               alpha: float, C: float) -> tuple:
    """CED: ``J = K_rho * (v v^T)`` with eigenvalues mu1 >= mu2; T has eigenvalue alpha along J's
    first eigenvector (across the coherent structure) and
    ``alpha + (1 - alpha) exp(-C / (mu1 - mu2)^2)`` along the second; ``T = alpha I`` where
    mu1 = mu2."""
    j11 = gauss(vx * vx, rho_weights, boundaries)
    j12 = gauss(vx * vy, rho_weights, boundaries)
    j22 = gauss(vy * vy, rho_weights, boundaries)
    d = j11 - j22
    gap2 = d * d + 4.0 * j12 * j12  # (mu1 - mu2)^2
    pos = gap2 > 0
    safe = torch.where(pos, gap2, torch.ones_like(gap2))
    gap = torch.sqrt(safe)
    zero = torch.zeros_like(gap2)
    cos2 = torch.where(pos, d / gap, zero)        # cos of twice the first eigenvector's angle
    sin2 = torch.where(pos, 2.0 * j12 / gap, zero)
    along = torch.where(pos, alpha + (1.0 - alpha) * torch.exp(-C / safe), zero + alpha)
    diff_l = alpha - along  # (across - along) times the projector onto the first eigenvector
    return (along + diff_l * 0.5 * (1.0 + cos2), diff_l * 0.5 * sin2,
            along + diff_l * 0.5 * (1.0 - cos2))


# -------------------------------------------------------------------------- the operator
class AnisotropicDiffusion(torch.nn.Module):
    """``A(u) = sum_i D_i^T G_i D_i`` for ``-scale div(T grad u)`` with the cell assembly.

    ``kind``: ``edge_enhancing`` (``g``: the diffusivity, ``smooth``: one list of per-axis
    Gaussian weights), ``coherence_enhancing`` (``smooth``, ``integrate``: the K_rho weights,
    ``alpha``, ``C``) or ``matrix`` (``entries(p0, q0, p1, q1, ...) -> (a, b, c)`` with p_k, q_k
    the central gradient of the k-th smoothing in ``smooth``).  ``h = (hx, hy)``."""

    def __init__(self, kind: str, boundaries: tuple, h: tuple, delta: float, scale: float = 1.0,
                 smooth: tuple = (), integrate: tuple = (), g=None, alpha: float = 0.0,
                 C: float = 0.0, entries=None) -> None:
        super().__init__()
        self.kind, self.boundaries = kind, tuple(boundaries)
        self.h = (float(h[0]), float(h[1]))
        self.delta, self.scale = float(delta), float(scale)
        self.smooth, self.integrate = [list(map(list, s)) for s in smooth], [list(w) for w in integrate]
        self.g, self.alpha, self.C, self.entries = g, float(alpha), float(C), entries
        hx, hy = self.h
        self.d2 = hx * hx + hy * hy
        self.inv = (1.0 / hx, 1.0 / hy, 1.0 / math.sqrt(self.d2))

    # -- the tensor field
    def pixel_tensor(self, u: torch.Tensor) -> tuple:
        """``(a, b, c)`` at every pixel (scale not applied)."""
        grads = [central_gradient(gauss(u, w, self.boundaries), self.boundaries, self.h)
                 for w in self.smooth]
        if self.kind == "edge_enhancing":
            return eed_tensor(grads[0][0], grads[0][1], self.g)
        if self.kind == "coherence_enhancing":
            return ced_tensor(grads[0][0], grads[0][1], self.integrate, self.boundaries,
                              self.alpha, self.C)
        args = [c for pq in grads for c in pq]
        a, b, c = self.entries(*args)
        return tuple(x if torch.is_tensor(x) and x.shape == u.shape else x + torch.zeros_like(u)
                     for x in (a, b, c))

    def cell_weights(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple:
        """The directional weights ``(w1, w2, w3, w4)`` of every cell from the pixel tensors."""
        hx, hy = self.h
        a, b, c = (cell_mean(t, self.boundaries) * self.scale for t in (a, b, c))
        s = (0.25 * self.delta * self.d2) * (a * (1.0 / (hx * hx)) + c * (1.0 / (hy * hy)))
        t = b * (self.d2 / (2.0 * hx * hy))
        return (a - s * (2.0 * hx * hx / self.d2), c - s * (2.0 * hy * hy / self.d2), s + t, s - t)

    def weights_of_tensor(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple:
        """G from a pixel tensor field: the x-edge and y-edge weights (each the half weights of
        the edge's cells) and the two diagonals' cell weights."""
        w1, w2, w3, w4 = self.cell_weights(a, b, c)
        bx, by = self.boundaries
        return cells_to_edges(w1, 1, by), cells_to_edges(w2, 0, bx), w3, w4

    def weights(self, u: torch.Tensor, f=None) -> tuple:
        """G of the tensor field of u (see :meth:`weights_of_tensor`)."""
        return self.weights_of_tensor(*self.pixel_tensor(u))

    # -- the frozen operator
    def _diagonals(self, u: torch.Tensor) -> tuple:
        bx, by = self.boundaries
        p = cell_pad(cell_pad(u, 0, bx), 1, by)
        lo_lo, hi_hi = corner(corner(p, 0, 0), 1, 0), corner(corner(p, 0, 1), 1, 1)
        hi_lo, lo_hi = corner(corner(p, 0, 1), 1, 0), corner(corner(p, 0, 0), 1, 1)
        return (hi_hi - lo_lo) * self.inv[2], (hi_lo - lo_hi) * self.inv[2]

    def _diagonals_t(self, v3: torch.Tensor, v4: torch.Tensor) -> torch.Tensor:
        bx, by = self.boundaries

        def put(v, x_hi, y_hi):
            return corner_t(corner_t(v, 1, y_hi), 0, x_hi)

        p = put(v3, 1, 1) - put(v3, 0, 0) + put(v4, 1, 0) - put(v4, 0, 1)
        return cell_pad_t(cell_pad_t(p, 1, by), 0, bx) * self.inv[2]

    def frozen_apply(self, u: torch.Tensor, G: tuple) -> torch.Tensor:
        """``D^T G D u = sum_i D_i^T (G_i * D_i u)``."""
        gx, gy, g3, g4 = G
        bx, by = self.boundaries
        d3, d4 = self._diagonals(u)
        out = diff_t(gx * diff(u, 0, bx, self.inv[0]), 0, bx, self.inv[0])
        out = out + diff_t(gy * diff(u, 1, by, self.inv[1]), 1, by, self.inv[1])
        return out + self._diagonals_t(g3 * d3, g4 * d4)

    def frozen_diagonal(self, G: tuple) -> torch.Tensor:
        """``diag(D^T G D)``: every node gets its edges' weights over ``|o_i|^2``."""
        gx, gy, g3, g4 = G
        bx, by = self.boundaries
        out = edge_sum_t(gx, 0, bx) * (self.inv[0] ** 2) + edge_sum_t(gy, 1, by) * (self.inv[1] ** 2)

        def put(v, x_hi, y_hi):
            return corner_t(corner_t(v, 1, y_hi), 0, x_hi)

        p = put(g3, 1, 1) + put(g3, 0, 0) + put(g4, 1, 0) + put(g4, 0, 1)
        return out + cell_pad_t(cell_pad_t(p, 1, by), 0, bx) * (self.inv[2] ** 2)

    def forward(self, u: torch.Tensor, f=None) -> torch.Tensor:
        """``A(u) u``."""
        return self.frozen_apply(u, self.weights(u, f))
