"""Independent dense NumPy float64 references for the tests.

Written from the mathematics (MATH.md), not from pde2net's code: matrices are assembled entry by
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
    dirichlet: n x n, u extended by zeros outside [0, n).
    """
    w = np.asarray(weights, dtype=float) / h ** m
    k = len(w)
    if boundary == "neumann":
        d = np.zeros((n - k + 1, n))
        for i in range(n - k + 1):
            d[i, i:i + k] = w
        return d
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(k):
            col = i + j - offset
            if boundary == "periodic":
                d[i, col % n] += w[j]
            elif 0 <= col < n:
                d[i, col] = w[j]
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
