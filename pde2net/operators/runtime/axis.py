"""One-axis diffusion terms ``D^T G D`` with D the order-m forward difference along one axis.

D is the binomial stencil ``(D u)_r = h^-m sum_(j=0..m) (-1)^(m-j) C(m, j) u_(r+j)`` with the
boundary conventions of :mod:`.grid` (docs/theory.md §2, §12):

- ``neumann``: the n - m complete rows (zero flux), an (n - m) x n matrix;
- ``periodic``: n circulant rows (indices mod n);
- ``dirichlet``: u = 0 outside the domain on both sides, every row that touches a node, an
  (n + m) x n matrix (row r uses ``u_(r - m) .. u_r``).

Each convention is closed under composition (valid o valid = valid, full o full = full, circulant
o circulant = circulant), so D is exactly ``m`` applications of :func:`.grid.diff` with the same
boundary, and D^T the ``m`` applications of :func:`.grid.diff_t` in reverse order.  (The m-fold
composition goes wrong only if the stages use different rules, as ``-D1^T D1`` does: that is the
node-centred second difference with the one-sided rows [-1, 1] at a neumann boundary, not D2.)

Fields are ``(B, C, *space)``, x the last axis; every channel gets its own weights
``G = g((D u)^2)`` (no coupling between channels).
"""
from __future__ import annotations

import math

import torch

from .grid import diff, diff_t, space_dim


def axis_binomial_weights(order: int) -> list:
    """``(-1)^(m-j) C(m, j)``, j = 0..m: the forward difference of order m (h = 1)."""
    return [float((-1) ** (order - j) * math.comb(order, j)) for j in range(order + 1)]


def axis_diff(u: torch.Tensor, axis: int, order: int, boundary: str, inv_h: float) -> torch.Tensor:
    """``D u``: the order-m forward difference along ``axis`` (m first differences)."""
    n = u.shape[space_dim(axis)]
    if boundary == "neumann" and n <= order:  # n - m complete rows: none, and no exact transpose
        raise ValueError(f"an order-{order} difference with complete rows (neumann) needs more than "
                         f"{order} points along axis {'xyz'[axis]}; got {n}")
    out = u
    for _ in range(order):
        out = diff(out, axis, boundary, inv_h)
    return out


def axis_diff_t(v: torch.Tensor, axis: int, order: int, boundary: str, inv_h: float) -> torch.Tensor:
    """``D^T v``: the exact transpose of :func:`axis_diff`."""
    out = v
    for _ in range(order):
        out = diff_t(out, axis, boundary, inv_h)
    return out


def axis_diff_sq_t(v: torch.Tensor, axis: int, order: int, boundary: str, inv_h: float,
                   n: int) -> torch.Tensor:
    """``(D o D)^T v`` (D o D: the entries of D squared) on n nodes: ``diag(D^T G D) = (D o D)^T G``.

    Row r of D touches node ``r + j`` (periodic: mod n; dirichlet: ``r - m + j``) with weight
    ``w_j``.  When a periodic axis is shorter than the stencil (n <= m) several weights of a row
    land on the same node and add before squaring: the matrix is built and squared then."""
    dim = space_dim(axis)
    w = axis_binomial_weights(order)
    scale = inv_h ** (2 * order)
    if boundary == "periodic" and n <= order:
        eye = torch.eye(n, dtype=v.dtype, device=v.device)
        dt = axis_diff(eye, 0, order, boundary, inv_h)  # dt[k, r] = (D e_k)_r = D[r, k]
        sq = (dt * dt).transpose(0, 1)                  # sq[r, k] = D[r, k]^2
        return torch.movedim(torch.movedim(v, dim, -1) @ sq, -1, dim)
    out = None
    for j, wj in enumerate(w):
        if boundary == "periodic":     # node k receives row k - j
            part = torch.roll(v, j, dims=dim)
        elif boundary == "dirichlet":  # n + m rows; node k receives row k + m - j
            part = v.narrow(dim, order - j, n)
        else:                          # n - m rows; node k receives row k - j (zero outside)
            part = torch.nn.functional.pad(v, [0, 0] * axis + [j, order - j])
        term = part * (wj * wj * scale)
        out = term if out is None else out + term
    return out


class AxisDiffusion(torch.nn.Module):
    """``D^T G D u`` along one axis with ``G = g((D u)^2)`` per point and channel.

    ``g`` maps a tensor of squared differences to the diffusivity (the term's sign and constant
    factor included); the explicit step of the term alone is ``u - tau D^T G D u``."""

    def __init__(self, g, axis: int, order: int, boundary: str, inv_h: float) -> None:
        super().__init__()
        self.g = g
        self.axis = int(axis)
        self.order = int(order)
        self.boundary = str(boundary)
        self.inv_h = float(inv_h)

    def weights(self, u: torch.Tensor, f=None) -> torch.Tensor:
        """``G = g((D u)^2)`` on the rows of D."""
        d = axis_diff(u, self.axis, self.order, self.boundary, self.inv_h)
        return self.g(d * d)

    def frozen_apply(self, u: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """``D^T G D u`` with G held fixed."""
        d = axis_diff(u, self.axis, self.order, self.boundary, self.inv_h)
        return axis_diff_t(G * d, self.axis, self.order, self.boundary, self.inv_h)

    def frozen_diagonal(self, G: torch.Tensor) -> torch.Tensor:
        """``diag(D^T G D) = (D o D)^T G`` (same shape as the field)."""
        dim = space_dim(self.axis)
        rows = G.shape[dim]
        n = {"neumann": rows + self.order, "dirichlet": rows - self.order}.get(self.boundary, rows)
        return axis_diff_sq_t(G, self.axis, self.order, self.boundary, self.inv_h, n)

    def forward(self, u: torch.Tensor, f=None) -> torch.Tensor:
        """``D^T G(u) D u``."""
        return self.frozen_apply(u, self.weights(u, f))
