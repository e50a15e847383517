"""Anisotropic diffusion ``div(T grad u)`` (docs/theory.md §9): the cell-assembled network against
a dense NumPy float64 reference written here from the mathematics, positive semidefiniteness, the
bound, the pixel-assembly counterexample, EED/CED tensors and the rotation error.

The reference (``ref_*``) is written from the definitions, not from pde2net: cells per boundary
rule, one tensor per cell (the mean of its pixels' tensors inside the domain), the split
``T = sum_i w_i e_i e_i^T`` with diagonal mass ``m = delta (a + c) / 2`` (square pixels; the
rectangular generalisation of the docs for hx != hy), edges ``w1/2``, ``w2/2``, ``w3``, ``w4``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

from pde2net.analyse import DIV, DX, DY, GRAD, param_symbol
from pde2net.errors import PdeError, Pos
from pde2net.operators import anisotropic as an
from pde2net.operators.base import GAUSS, Context, TensorDef
from pde2net.operators.runtime.anisotropic import AnisotropicDiffusion

BOUNDARIES = ["neumann", "periodic", "dirichlet"]


# ============================================================ the reference (from the mathematics)
def ref_cells(n: int, kind: str) -> list:
    """(low pixel, high pixel) of every cell along one axis; None marks a ghost pixel."""
    if kind == "neumann":
        return [(k, k + 1) for k in range(n - 1)]
    if kind == "periodic":
        return [(k, (k + 1) % n) for k in range(n)]
    return [(k if k >= 0 else None, k + 1 if k + 1 < n else None) for k in range(-1, n)]


def ref_split(a: float, b: float, c: float, delta: float, hx: float, hy: float) -> tuple:
    """w_i with sum_i w_i e_i e_i^T = T.  Square pixels: m = delta (a + c)/2, w = (a - m, c - m,
    m + b, m - b).  Rectangular: diagonal mass s = delta d^2 (a/hx^2 + c/hy^2)/4, so that
    w1/hx^2 + w2/hy^2 = (1 - delta)(a/hx^2 + c/hy^2)."""
    if hx == hy:
        m = delta * (a + c) / 2
        return a - m, c - m, m + b, m - b
    d2 = hx * hx + hy * hy
    s = delta * d2 * (a / hx ** 2 + c / hy ** 2) / 4
    t = b * d2 / (2 * hx * hy)
    return a - 2 * s * hx * hx / d2, c - 2 * s * hy * hy / d2, s + t, s - t


def ref_matrix(T: np.ndarray, delta: float, boundaries: tuple, h=(1.0, 1.0)) -> np.ndarray:
    """The cell-assembled A for a pixel tensor field T of shape (ny, nx, 2, 2)."""
    ny, nx = T.shape[:2]
    hx, hy = h
    e = [np.array([1.0, 0.0]), np.array([0.0, 1.0]),
         np.array([hx, hy]) / math.hypot(hx, hy), np.array([hx, -hy]) / math.hypot(hx, hy)]
    lengths = [hx, hy, math.hypot(hx, hy), math.hypot(hx, hy)]
    A = np.zeros((nx * ny, nx * ny))

    def idx(i, j):
        return None if i is None or j is None else j * nx + i

    def add_edge(p, q, w):
        v = np.zeros(nx * ny)
        if p is not None:
            v[p] += 1.0
        if q is not None:
            v[q] -= 1.0
        A[:] += w * np.outer(v, v)

    for (j0, j1) in ref_cells(ny, boundaries[1]):
        for (i0, i1) in ref_cells(nx, boundaries[0]):
            inside = [T[j, i] for j in (j0, j1) for i in (i0, i1) if i is not None and j is not None]
            Tc = sum(inside) / len(inside)
            w = ref_split(Tc[0, 0], Tc[0, 1], Tc[1, 1], delta, hx, hy)
            assert np.allclose(sum(wi * np.outer(ei, ei) for wi, ei in zip(w, e)), Tc)
            p00, p10, p01, p11 = idx(i0, j0), idx(i1, j0), idx(i0, j1), idx(i1, j1)
            add_edge(p00, p10, w[0] / 2 / lengths[0] ** 2)
            add_edge(p01, p11, w[0] / 2 / lengths[0] ** 2)
            add_edge(p00, p01, w[1] / 2 / lengths[1] ** 2)
            add_edge(p10, p11, w[1] / 2 / lengths[1] ** 2)
            add_edge(p00, p11, w[2] / lengths[2] ** 2)
            add_edge(p01, p10, w[3] / lengths[3] ** 2)
    return A


def ref_extend_index(k: int, n: int, kind: str):
    """The pixel that stands at index k outside [0, n): mirror (u_(-1-k) = u_k), wrap, or None."""
    if 0 <= k < n:
        return k
    if kind == "periodic":
        return k % n
    if kind == "dirichlet":
        return None
    while not 0 <= k < n:
        k = -1 - k if k < 0 else 2 * n - 1 - k
    return k


def ref_gauss(u: np.ndarray, sigma: float, h: tuple, boundaries: tuple) -> np.ndarray:
    """Separable sampled Gaussian, |k h| <= 3 sigma, normalised; extension by the boundary rule."""
    out = u.copy()
    for axis in (0, 1):  # x: the last array axis
        if sigma == 0:
            continue
        r = int(math.floor(3 * sigma / h[axis]))
        w = np.array([math.exp(-(k * h[axis]) ** 2 / (2 * sigma ** 2)) for k in range(-r, r + 1)])
        w /= w.sum()
        arr = out if axis == 0 else out.T
        n = arr.shape[1]
        new = np.zeros_like(arr)
        for i in range(n):
            for k in range(-r, r + 1):
                src = ref_extend_index(i + k, n, boundaries[axis])
                if src is not None:
                    new[:, i] += w[k + r] * arr[:, src]
        out = new if axis == 0 else new.T
    return out


def ref_central(us: np.ndarray, h: tuple, boundaries: tuple) -> tuple:
    ny, nx = us.shape

    def val(j, i):
        ii, jj = ref_extend_index(i, nx, boundaries[0]), ref_extend_index(j, ny, boundaries[1])
        return 0.0 if ii is None or jj is None else us[jj, ii]

    vx = np.array([[(val(j, i + 1) - val(j, i - 1)) / (2 * h[0]) for i in range(nx)] for j in range(ny)])
    vy = np.array([[(val(j + 1, i) - val(j - 1, i)) / (2 * h[1]) for i in range(nx)] for j in range(ny)])
    return vx, vy


def ref_eed(vx, vy, g) -> np.ndarray:
    """T = g(|v|^2) n n^T + (I - n n^T), n = v/|v|; g(0) I where v = 0."""
    T = np.zeros(vx.shape + (2, 2))
    for idx in np.ndindex(vx.shape):
        v = np.array([vx[idx], vy[idx]])
        s2 = v @ v
        if s2 > 0:
            n = v / math.sqrt(s2)
            T[idx] = g(s2) * np.outer(n, n) + (np.eye(2) - np.outer(n, n))
        else:
            T[idx] = g(0.0) * np.eye(2)
    return T


def ref_ced(vx, vy, rho, alpha, C, h, boundaries) -> np.ndarray:
    """J = K_rho * (v v^T); eigenvalue alpha along J's top eigenvector, alpha + (1 - alpha)
    exp(-C/(mu1 - mu2)^2) along the other (alpha where mu1 = mu2)."""
    j11, j12, j22 = (ref_gauss(x, rho, h, boundaries) for x in (vx * vx, vx * vy, vy * vy))
    T = np.zeros(vx.shape + (2, 2))
    for idx in np.ndindex(vx.shape):
        J = np.array([[j11[idx], j12[idx]], [j12[idx], j22[idx]]])
        mu, vec = np.linalg.eigh(J)  # ascending
        gap = mu[1] - mu[0]
        along = alpha + (1 - alpha) * math.exp(-C / gap ** 2) if gap > 0 else alpha
        T[idx] = alpha * np.outer(vec[:, 1], vec[:, 1]) + along * np.outer(vec[:, 0], vec[:, 0])
    return T


def ref_pixel_matrix(T: np.ndarray, delta: float) -> np.ndarray:
    """The PIXEL assembly (the counterexample): w_i(T(p)) on p's four forward edges (periodic,
    h = 1).  Not positive semidefinite once a weight is negative."""
    ny, nx = T.shape[:2]
    A = np.zeros((nx * ny, nx * ny))
    for j in range(ny):
        for i in range(nx):
            w = ref_split(T[j, i, 0, 0], T[j, i, 0, 1], T[j, i, 1, 1], delta, 1.0, 1.0)
            for wi, (di, dj), l2 in zip(w, [(1, 0), (0, 1), (1, 1), (1, -1)], [1, 1, 2, 2]):
                v = np.zeros(nx * ny)
                v[j * nx + i] -= 1
                v[((j + dj) % ny) * nx + (i + di) % nx] += 1
                A += wi / l2 * np.outer(v, v)
    return A


# ================================================================================ helpers
def random_psd(rng, ny, nx, L=1.0, rank_one=False) -> np.ndarray:
    """Random PSD tensors with eigenvalues in [0, L] (rank one: maximally anisotropic)."""
    th = rng.uniform(0, np.pi, (ny, nx))
    l1 = np.full((ny, nx), L) if rank_one else rng.uniform(0, L, (ny, nx))
    l2 = np.zeros((ny, nx)) if rank_one else rng.uniform(0, L, (ny, nx))
    c, s = np.cos(th), np.sin(th)
    T = np.empty((ny, nx, 2, 2))
    T[..., 0, 0] = l1 * c * c + l2 * s * s
    T[..., 1, 1] = l1 * s * s + l2 * c * c
    T[..., 0, 1] = T[..., 1, 0] = (l1 - l2) * c * s
    return T


def runtime(boundaries, delta, h=(1.0, 1.0), **kw) -> AnisotropicDiffusion:
    return AnisotropicDiffusion(kw.pop("kind", "matrix"), boundaries, h, delta, **kw)


def runtime_matrix(term: AnisotropicDiffusion, G: tuple, shape: tuple) -> np.ndarray:
    """The runtime's frozen operator as a dense matrix (applied to every unit vector)."""
    n = shape[0] * shape[1]
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *shape)
    with torch.no_grad():
        return term.frozen_apply(eye, G).reshape(n, n).numpy().T


def tensor_torch(T: np.ndarray, dtype=torch.float64) -> tuple:
    return tuple(torch.as_tensor(T[..., i, j], dtype=dtype)[None, None] for i, j in ((0, 0), (0, 1), (1, 1)))


# ==================================================================== assembly == reference
@pytest.mark.parametrize("bx", BOUNDARIES)
@pytest.mark.parametrize("by", BOUNDARIES)
@pytest.mark.parametrize("delta", [0.0, 0.5, 1.0])
def test_cell_assembly_equals_reference(bx, by, delta):
    """frozen_apply(u, G(T)) == A(T) u (float64, 1e-12) and frozen_diagonal == diag(A), for a
    random PSD tensor field, every pair of boundary kinds."""
    rng = np.random.default_rng(hash((bx, by, delta)) % 2 ** 32)
    ny, nx = 5, 6
    T = random_psd(rng, ny, nx)
    A = ref_matrix(T, delta, (bx, by))
    term = runtime((bx, by), delta)
    G = term.weights_of_tensor(*tensor_torch(T))
    M = runtime_matrix(term, G, (ny, nx))
    scale = np.abs(A).max()
    assert np.abs(M - A).max() <= 1e-12 * scale
    diag = term.frozen_diagonal(G)[0, 0].numpy().ravel()
    assert np.abs(diag - np.diag(A)).max() <= 1e-12 * scale


@pytest.mark.parametrize("bx,by", [("neumann", "dirichlet"), ("periodic", "neumann"), ("dirichlet", "periodic")])
def test_cell_assembly_rectangular_pixels(bx, by):
    """hx != hy: the generalised split (docs) assembled cell by cell, equal to the runtime."""
    rng = np.random.default_rng(7)
    T = random_psd(rng, 4, 5)
    h = (1.0, 0.6)
    A = ref_matrix(T, 0.5, (bx, by), h)
    term = runtime((bx, by), 0.5, h)
    M = runtime_matrix(term, term.weights_of_tensor(*tensor_torch(T)), (4, 5))
    assert np.abs(M - A).max() <= 1e-12 * np.abs(A).max()
    assert np.linalg.eigvalsh(A).min() >= -1e-12 * np.abs(A).max()


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_cell_assembly_float32(boundary):
    """The same operator in float32 (looser tolerance)."""
    rng = np.random.default_rng(3)
    T = random_psd(rng, 6, 6, rank_one=True)
    A = ref_matrix(T, 0.0, (boundary, boundary))
    u = rng.standard_normal((6, 6))
    term = runtime((boundary, boundary), 0.0)
    G = term.weights_of_tensor(*tensor_torch(T, torch.float32))
    out = term.frozen_apply(torch.as_tensor(u, dtype=torch.float32)[None, None], G)[0, 0].numpy()
    ref = (A @ u.ravel()).reshape(6, 6)
    assert np.abs(out - ref).max() <= 2e-6 * np.abs(ref).max()


def test_constant_identity_tensor_is_the_laplacian():
    """T = I, delta = 0, dirichlet: the cell assembly gives exactly the 5-point Dirichlet
    Laplacian in the interior rows (the boundary axis edges keep their half weight only where a
    single cell holds them: with ghost cells around the image, none does)."""
    n = 5
    T = np.broadcast_to(np.eye(2), (n, n, 2, 2)).copy()
    A = ref_matrix(T, 0.0, ("dirichlet", "dirichlet"))
    lap1 = 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
    five = np.kron(np.eye(n), lap1) + np.kron(lap1, np.eye(n))
    term = runtime(("dirichlet", "dirichlet"), 0.0)
    M = runtime_matrix(term, term.weights_of_tensor(*tensor_torch(T)), (n, n))
    assert np.abs(A - five).max() <= 1e-14
    assert np.abs(M - five).max() <= 1e-14
