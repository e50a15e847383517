"""Independent dense NumPy float64 references for the tests.

Written from the mathematics (docs/theory.md), not from pde2net's code: matrices are assembled entry by
entry from the stencil definition ``(D u)_i = h^-m sum_j w_j u_(i + j - o)`` and the boundary rule,
and schemes are iterated with plain matrix products.
"""
from __future__ import annotations

from math import comb

import numpy as np


def binomial_weights(m: int) -> list[float]:
    """Forward/backward order-m difference weights (-1)^(m-k) C(m, k)."""
    return [(-1.0) ** (m - k) * comb(m, k) for k in range(m + 1)]


def dense_difference(weights, offset: int, n: int, boundary: str, h: float = 1.0, m: int = 1) -> np.ndarray:
    """The difference matrix D for n points.

    neumann: only complete stencil rows (zero flux) -> (n - K + 1) x n, row i uses u_i..u_(i+K-1);
    periodic: circulant n x n, row i uses u_((i + j - o) mod n);
    dirichlet: u = 0 outside [0, n) on both sides -> every row that touches a node, (n + K - 1) x n,
    row r uses u_(r + j - (K - 1)) (the full correlation; the offset does not matter).
    """
    w = np.asarray(weights, dtype=float) / h ** m
    k = len(w)
    if boundary == "neumann":
        d = np.zeros((n - k + 1, n))
        for i in range(n - k + 1):
            d[i, i:i + k] = w
        return d
    if boundary == "dirichlet":
        d = np.zeros((n + k - 1, n))
        for r in range(n + k - 1):
            for j in range(k):
                col = r + j - (k - 1)
                if 0 <= col < n:
                    d[r, col] = w[j]
        return d
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(k):
            col = i + j - offset
            d[i, col % n] += w[j]
    return d


def perona_malik(lam: float):
    return lambda s: s / (1.0 + s ** 2 / lam ** 2)


def charbonnier(lam: float):
    return lambda s: s / np.sqrt(1.0 + s ** 2 / lam ** 2)


def linear(c: float = 1.0):
    return lambda s: c * s


def explicit_dense(u0: np.ndarray, d: np.ndarray, phi, tau: float, steps: int) -> np.ndarray:
    """``steps`` explicit steps u <- u - tau D^T phi(D u), row by row for a batch."""
    u = np.array(u0, dtype=float, copy=True)
    for _ in range(steps):
        u = u - tau * (phi(u @ d.T) @ d)
    return u


def dense_axis_2d(weights, offset: int, n: int, boundary: str, h: float = 1.0) -> np.ndarray:
    """The matrix of a first-order difference along one image axis, one row per flux point.

    neumann: the rows of :func:`dense_difference` (complete stencils only) placed at nodes
    offset .. offset + n - K, and zero rows where the stencil would leave the grid (zero flux
    across the far edge for the forward difference), n x n; periodic as in 1D; dirichlet as in 1D,
    (n + K - 1) x n, row r at the point r - (K - 1) + offset.
    """
    d = dense_difference(weights, offset, n, boundary, h, 1)
    if boundary != "neumann":
        return d
    full = np.zeros((n, n))
    full[offset:offset + d.shape[0]] = d
    return full


def flux_embedding(k: int, offset: int, n: int, boundary: str) -> np.ndarray:
    """The zero extension of n nodes to the flux points of an axis: identity unless dirichlet,
    where the flux points are -(K - 1 - offset) .. n - 1 + offset (ghost zeros on both sides)."""
    if boundary != "dirichlet":
        return np.eye(n)
    e = np.zeros((n + k - 1, n))
    e[k - 1 - offset:k - 1 - offset + n] = np.eye(n)
    return e


def dense_gradient_2d(weights, offset: int, shape, boundary, hx: float = 1.0, hy: float = 1.0):
    """(Gx, Gy) acting on images of shape (H, W) flattened row-major (x is the last axis), both
    with one row per point of the common flux grid: Gx = Ey kron Dx, Gy = Dy kron Ex, with E the
    zero extension to a dirichlet axis's flux points.  ``boundary``: one kind, or (x kind, y kind)."""
    H, W = shape
    bx, by = (boundary, boundary) if isinstance(boundary, str) else boundary
    k = len(weights)
    dx = dense_axis_2d(weights, offset, W, bx, hx)
    dy = dense_axis_2d(weights, offset, H, by, hy)
    return (np.kron(flux_embedding(k, offset, H, by), dx),
            np.kron(dy, flux_embedding(k, offset, W, bx)))


def explicit_dense_2d(u0: np.ndarray, gx: np.ndarray, gy: np.ndarray, g, tau: float, steps: int):
    """``steps`` isotropic explicit steps ``u <- u - tau (Gx^T (g Gx u) + Gy^T (g Gy u))`` with the
    diffusivity ``g(|grad u|^2)`` per node; u0 has shape (B, H, W)."""
    shape = u0.shape
    u = np.array(u0, dtype=float).reshape(shape[0], -1)
    for _ in range(steps):
        vx, vy = u @ gx.T, u @ gy.T
        w = g(vx ** 2 + vy ** 2)
        u = u - tau * ((w * vx) @ gx + (w * vy) @ gy)
    return u.reshape(shape)


def load_source(src: str, tmp_path, name: str = "generated"):
    """Generated source written to a file and imported as a module, as ``pde2net compile`` users
    do (a test helper; the source is the package's output under test, not a reference)."""
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
