"""Fourth-order diffusion (You-Kaveh): ``A = Delta_h G Delta_h`` with the symmetric Laplacian.

``Delta_h = -D^T D = -sum_d D_d^T D_d``, D the forward-difference gradient of :mod:`.grid`
(neumann: complete rows; periodic: circulant; dirichlet: ghost zeros on every side), so Delta_h
is symmetric for every boundary and ``Delta_h G Delta_h`` is symmetric positive semidefinite for
``G >= 0`` (docs/theory.md §12).  (The node-centred mirror-ghost Laplacian, ``u_(-1) = u_1``, is
not symmetric: with it no step size keeps ``||I - tau Delta^2||_2 <= 1``.)

``G = g((Delta_h u)^2)`` per node and channel, the term's sign and factor included in g.
Fields are ``(B, C, *space)`` with x the last axis; every space axis takes part.
"""
from __future__ import annotations

import torch

from .grid import diff, diff_t, space_dim


def fourth_laplace(u: torch.Tensor, boundaries: tuple, inv_h: tuple) -> torch.Tensor:
    """``Delta_h u = -sum_d D_d^T D_d u`` (the flux grid of :func:`.grid.gradient` only adds
    zero rows, so the per-axis sum is the same matrix)."""
    out = None
    for a, b in enumerate(boundaries):
        part = diff_t(diff(u, a, b, inv_h[a]), a, b, inv_h[a])
        out = part if out is None else out + part
    return -out


def _fourth_line_matrix(n: int, boundary: str, inv_h: float, dtype, device) -> torch.Tensor:
    """The 1D ``-D^T D`` on n points as a dense n x n matrix (for the diagonal of short axes)."""
    eye = torch.eye(n, dtype=dtype, device=device)
    return -diff_t(diff(eye, 0, boundary, inv_h), 0, boundary, inv_h)


def _fourth_diag_line(shape_n: int, boundary: str, inv_h: float, ref: torch.Tensor, axis: int) -> torch.Tensor:
    """The diagonal of the 1D ``-D^T D`` along ``axis``, shaped to broadcast against ``ref``."""
    dim = space_dim(axis)
    mat = _fourth_line_matrix(shape_n, boundary, inv_h, ref.dtype, ref.device)
    view = [1] * ref.dim()
    view[dim] = shape_n
    return torch.diagonal(mat).reshape(view)


def _fourth_offdiag_sq(G: torch.Tensor, axis: int, boundary: str, inv_h: float) -> torch.Tensor:
    """``sum_(k != i) L_(k i)^2 G_k`` along ``axis``, L the 1D ``-D^T D``: each node's neighbours
    along the axis (weight ``1/h^4`` each).  Axes of one or two points (where a periodic
    neighbour appears twice) use the dense 1D matrix."""
    dim = space_dim(axis)
    n = G.shape[dim]
    if n <= 2:
        mat = _fourth_line_matrix(n, boundary, inv_h, G.dtype, G.device)
        off = mat - torch.diag(torch.diagonal(mat))
        return torch.movedim(torch.movedim(G, dim, -1) @ (off * off), -1, dim)
    w = inv_h ** 4
    if boundary == "periodic":
        return (torch.roll(G, 1, dims=dim) + torch.roll(G, -1, dims=dim)) * w
    pad = torch.nn.functional.pad
    lower = pad(G.narrow(dim, 0, n - 1), [0, 0] * axis + [1, 0])  # node k receives G_(k-1)
    upper = pad(G.narrow(dim, 1, n - 1), [0, 0] * axis + [0, 1])  # node k receives G_(k+1)
    return (lower + upper) * w


class FourthOrder(torch.nn.Module):
    """``Delta_h G Delta_h u`` with ``G = g((Delta_h u)^2)`` (You-Kaveh)."""

    def __init__(self, g, boundaries: tuple, inv_h: tuple) -> None:
        super().__init__()
        self.g = g
        self.boundaries = tuple(str(b) for b in boundaries)
        self.inv_h = tuple(float(x) for x in inv_h)

    def weights(self, u: torch.Tensor, f=None) -> torch.Tensor:
        """``G = g((Delta_h u)^2)`` per node."""
        s = fourth_laplace(u, self.boundaries, self.inv_h)
        return self.g(s * s)

    def frozen_apply(self, u: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        """``Delta_h G Delta_h u`` with G held fixed."""
        return fourth_laplace(G * fourth_laplace(u, self.boundaries, self.inv_h), self.boundaries, self.inv_h)

    def frozen_diagonal(self, G: torch.Tensor) -> torch.Tensor:
        """``diag(Delta_h G Delta_h)_i = sum_k Delta_(k i)^2 G_k``: the node itself (the squared
        diagonal of Delta_h) and its neighbours along each axis (off-diagonal entries of Delta_h
        belong to exactly one axis)."""
        diag = None
        for a, b in enumerate(self.boundaries):
            part = _fourth_diag_line(G.shape[space_dim(a)], b, self.inv_h[a], G, a)
            diag = part if diag is None else diag + part
        out = diag * diag * G
        for a, b in enumerate(self.boundaries):
            out = out + _fourth_offdiag_sq(G, a, b, self.inv_h[a])
        return out

    def forward(self, u: torch.Tensor, f=None) -> torch.Tensor:
        """``Delta_h G(u) Delta_h u``."""
        return self.frozen_apply(u, self.weights(u, f))
