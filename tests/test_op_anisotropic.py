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


# ============================================================ positive semidefiniteness
def _min_eig_ratio(A: np.ndarray) -> float:
    return np.linalg.eigvalsh((A + A.T) / 2).min() / max(np.abs(A).max(), 1e-300)


def _adversarial_fields(rng, ny, nx) -> list:
    """Maximally anisotropic tensors: the single-pixel counterexample, random rank-one fields,
    alternating diagonal directions, and a short random search for the most negative lambda_min
    of the PIXEL assembly (the tensors that break it)."""
    e4 = np.array([1.0, -1.0]) / math.sqrt(2)
    e3 = np.array([1.0, 1.0]) / math.sqrt(2)
    single = np.zeros((ny, nx, 2, 2))
    single[1, 1] = np.outer(e4, e4)
    alt = np.empty((ny, nx, 2, 2))
    for j, i in np.ndindex(ny, nx):
        alt[j, i] = np.outer(e3, e3) if (i + j) % 2 else np.outer(e4, e4)
    fields = [single, alt, random_psd(rng, ny, nx, rank_one=True)]
    best = random_psd(rng, ny, nx, rank_one=True)
    worst = _min_eig_ratio(ref_pixel_matrix(best, 0.0))
    for _ in range(20):
        cand = best.copy()
        j, i = rng.integers(ny), rng.integers(nx)
        cand[j, i] = random_psd(rng, 1, 1, rank_one=True)[0, 0]
        r = _min_eig_ratio(ref_pixel_matrix(cand, 0.0))
        if r < worst:
            best, worst = cand, r
    return fields + [best]


@pytest.mark.parametrize("delta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_cell_assembly_is_psd(delta, boundary):
    """lambda_min(A) >= -1e-12 (relative) for random and adversarial PSD tensor fields: the cell
    form argument holds per cell, whatever the signs of the weights."""
    rng = np.random.default_rng(11)
    ny, nx = 5, 5
    fields = [random_psd(rng, ny, nx), random_psd(rng, ny, nx, L=3.0)] + _adversarial_fields(rng, ny, nx)
    for T in fields:
        A = ref_matrix(T, delta, (boundary, boundary))
        assert _min_eig_ratio(A) >= -1e-12
        term = runtime((boundary, boundary), delta)
        M = runtime_matrix(term, term.weights_of_tensor(*tensor_torch(T)), (ny, nx))
        assert np.abs(M - A).max() <= 1e-12 * np.abs(A).max()
        assert np.linalg.eigvalsh((M + M.T) / 2).min() >= -1e-12 * np.abs(M).max()


def test_pixel_assembly_counterexample_is_indefinite():
    """docs/theory.md §9: one pixel p with T = L e4 e4^T (e4 = (1, -1)/sqrt 2), pixel assembly,
    delta = 0: w3 = b = -L/2 < 0 on p's (1, 1) edge, and u = indicator of p + (1, 1) has energy
    -L/(4 h^2).  The cell assembly of the same field is PSD: the reason for the cell assembly."""
    L, n = 2.0, 4
    e4 = np.array([1.0, -1.0]) / math.sqrt(2)
    T = np.zeros((n, n, 2, 2))
    T[1, 1] = L * np.outer(e4, e4)
    P = ref_pixel_matrix(T, 0.0)
    u = np.zeros(n * n)
    u[2 * n + 2] = 1.0  # p + (1, 1)
    assert u @ P @ u == pytest.approx(-L / 4, abs=1e-14)
    assert np.linalg.eigvalsh(P).min() < -0.1
    C = ref_matrix(T, 0.0, ("periodic", "periodic"))
    assert np.linalg.eigvalsh(C).min() >= -1e-12


def test_delta_above_one_is_indefinite():
    """delta > 1: the checkerboard of a cell with tr T > 0 has negative energy."""
    T = np.broadcast_to(np.eye(2), (4, 4, 2, 2)).copy()
    A = ref_matrix(T, 1.25, ("periodic", "periodic"))
    assert np.linalg.eigvalsh(A).min() < -0.1


# ============================================================================ the IR
U = sp.Symbol("u")
TS = sp.Symbol("T")
POS = Pos(1, 1)


def make_ctx(tdef_kind: str, args: tuple, boundaries=("neumann", "neumann"), grid=(1, 1),
             params: dict | None = None, delta=None, channels: int = 1, dims=("x", "y")) -> Context:
    params = params or {}
    psyms = {k: param_symbol(k) for k in params}
    settings = {} if delta is None else {"delta": sp.sympify(delta)}
    return Context(U, dims, channels, tuple(sp.sympify(h) for h in grid), tuple(boundaries),
                   {k: sp.sympify(v) for k, v in params.items()}, psyms, {},
                   {TS: TensorDef("T", tdef_kind, args, POS)}, None, None, POS, settings)


def aniso(c=1):
    return c * DIV(TS * GRAD(U))


def recognise(ctx, term=None):
    return an.FAMILY.recognise(aniso() if term is None else term, ctx)


def matrix_ctx(rows, **kw) -> Context:
    return make_ctx("matrix", tuple(tuple(sp.sympify(e) for e in r) for r in rows), **kw)


@pytest.mark.parametrize("delta", [0, sp.Rational(1, 4), sp.Rational(1, 2), sp.Rational(3, 4), 1])
@pytest.mark.parametrize("h", [1, sp.Rational(1, 2)])
def test_bound_closed_form_constant_tensor(delta, h):
    """T = L I: bound = (4/h^2) max(L, (1 - delta) 2L) (docs/theory.md §9), attained: the dense
    lambda_max on a periodic 8 x 8 grid equals it, and explicit steps at 1.02 x the derived
    tau_max = 2 / bound grow, at 0.98 x they do not."""
    L = sp.Integer(3)
    ctx = matrix_ctx([[L, 0], [0, L]], boundaries=("periodic", "periodic"), grid=(h, h), delta=delta)
    term = recognise(ctx)
    b = term.bound(ctx)
    closed = 4 / h ** 2 * sp.Max(L, (1 - delta) * 2 * L)
    assert b.proven and b.failure == "" and sp.simplify(b.value - closed) == 0 and b.tight
    tau_max = 2 / float(b.value)
    assert tau_max == pytest.approx(float(h ** 2 / (2 * L * max(1, 2 * (1 - delta)))), rel=1e-15)
    mod = term.torch_term(ctx).double()
    n = 8
    T = np.broadcast_to(float(L) * np.eye(2), (n, n, 2, 2)).copy()
    A = ref_matrix(T, float(delta), ("periodic", "periodic"), (float(h), float(h)))
    assert np.linalg.eigvalsh(A).max() == pytest.approx(float(b.value), rel=1e-12)
    rng = np.random.default_rng(0)
    u0 = torch.as_tensor(rng.standard_normal((1, 1, n, n)) * 1e-3)
    for factor, grows in ((1.02, True), (0.98, False)):
        u = u0.clone()
        with torch.no_grad():
            for _ in range(300):
                u = u - factor * tau_max * mod(u)
        ratio = float(u.norm() / u0.norm())
        assert (ratio > 10) if grows else (ratio <= 1 + 1e-12)


def test_bound_rectangular_pixels():
    """hx != hy: 4 max(L/h_min^2, (1 - delta) S) with S = L (1/hx^2 + 1/hy^2) for T = L I;
    attained at delta = 0 (the 5-point bound 4L/hx^2 + 4L/hy^2) on a periodic grid."""
    hx, hy = sp.Integer(1), sp.Rational(1, 2)
    ctx = matrix_ctx([[2, 0], [0, 2]], boundaries=("periodic", "periodic"), grid=(hx, hy), delta=0)
    b = recognise(ctx).bound(ctx)
    assert sp.simplify(b.value - (4 * 2 / hx ** 2 + 4 * 2 / hy ** 2)) == 0
    T = np.broadcast_to(2 * np.eye(2), (6, 6, 2, 2)).copy()
    A = ref_matrix(T, 0.0, ("periodic", "periodic"), (1.0, 0.5))
    assert np.linalg.eigvalsh(A).max() == pytest.approx(float(b.value), rel=1e-12)
    # the default delta: the smallest with the largest step; the bound is 4 L / h_min^2 then
    ctx = matrix_ctx([[2, 0], [0, 2]], boundaries=("periodic", "periodic"), grid=(hx, hy))
    term = recognise(ctx)
    assert term.delta_default and sp.simplify(term.bound(ctx).value - 4 * 2 / hy ** 2) == 0
    A = ref_matrix(T, float(term.delta), ("periodic", "periodic"), (1.0, 0.5))
    assert np.linalg.eigvalsh(A).max() <= float(term.bound(ctx).value) * (1 + 1e-12)


def _eed_ctx(boundaries=("neumann", "neumann"), sigma=1, delta=None, grid=(1, 1)):
    s2, lam = sp.Symbol("s2"), param_symbol("lambda")
    g = 1 / (1 + s2 / lam ** 2)
    return make_ctx("edge_enhancing", (s2, g, GRAD(GAUSS(U, sigma))), boundaries, grid,
                    {"lambda": sp.Rational(1, 10)}, delta)


def _ced_ctx(boundaries=("neumann", "neumann"), alpha=sp.Rational(1, 100), C=1, delta=None):
    return make_ctx("coherence_enhancing", (GAUSS(U, sp.Rational(1, 2)), 2, alpha, C), boundaries,
                    params={}, delta=delta)


def test_eed_facts_and_default_delta():
    """EED with g <= 1, g(0) = 1: L = 1, sup tr T = 2; default delta = 1/2, bound 4/h^2 (tau_max =
    h^2/2); delta = 0 gives 8/h^2."""
    ctx = _eed_ctx()
    term = recognise(ctx)
    assert term.delta == sp.Rational(1, 2) and term.delta_default
    b = term.bound(ctx)
    assert b.value == 4 and b.tight and b.proven
    ctx0 = _eed_ctx(delta=0)
    assert recognise(ctx0).bound(ctx0).value == 8
    assert "delta = 1/2" in term.describe()


def test_ced_facts_and_default_delta():
    """CED: L = 1, sup tr T = 1 + alpha; default delta = alpha/(1 + alpha); delta = 0 gives
    (4/h^2)(1 + alpha); alpha < 0 is backward diffusion, C < 0 unbounded."""
    alpha = sp.Rational(1, 100)
    ctx = _ced_ctx()
    term = recognise(ctx)
    assert term.delta == alpha / (1 + alpha)
    assert term.bound(ctx).value == 4 and not term.bound(ctx).tight
    ctx0 = _ced_ctx(delta=0)
    assert recognise(ctx0).bound(ctx0).value == 4 * (1 + alpha)
    neg = _ced_ctx(alpha=-sp.Rational(1, 10))
    assert recognise(neg).bound(neg).failure == "negative"
    unb = _ced_ctx(C=-1)
    assert recognise(unb).bound(unb).failure == "unbounded"


def test_delta_settings():
    """delta > 1: "not stable" (failure negative); delta < 0 refused with a PdeError."""
    ctx = _eed_ctx(delta=sp.Rational(5, 4))
    b = recognise(ctx).bound(ctx)
    assert b.value is None and b.failure == "negative" and "indefinite" in b.reason
    with pytest.raises(PdeError, match="delta"):
        recognise(_eed_ctx(delta=-1))


def test_eed_negative_diffusivity_is_not_stable():
    s2 = sp.Symbol("s2")
    ctx = make_ctx("edge_enhancing", (s2, 1 - s2, GRAD(GAUSS(U, 1))))
    b = recognise(ctx).bound(ctx)
    assert b.value is None and b.failure == "negative"


def test_scale_factor():
    """c div(T grad u): the bound scales with c; c < 0 is backward diffusion."""
    ctx = _eed_ctx()
    assert recognise(ctx, aniso(3)).bound(ctx).value == 12
    assert recognise(ctx, aniso(-1)).bound(ctx).failure == "negative"


def test_refusals():
    with pytest.raises(PdeError, match="2D"):
        recognise(_eed_ctx().__class__(**{**_eed_ctx().__dict__, "dims": ("x",)}))
    with pytest.raises(PdeError, match="channels"):
        recognise(make_ctx("matrix", ((1, 0), (0, 1)), channels=3))
    with pytest.raises(PdeError, match="symmetric"):
        recognise(matrix_ctx([[1, 1], [0, 1]]))
    with pytest.raises(PdeError, match="div"):
        recognise(matrix_ctx([[1, 0], [0, 1]]), TS * GRAD(U))
    assert an.FAMILY.recognise(DIV(GRAD(U)), matrix_ctx([[1, 0], [0, 1]])) is None


# ===================================================================== explicit matrices
P = DX(GAUSS(U, 1), 1)
Q = DY(GAUSS(U, 1), 1)


@pytest.mark.parametrize("rows,L,trace", [
    ([[2, 1], [1, 2]], 3, 4),
    ([[1, 0], [0, 1 / (1 + P ** 2)]], 1, 2),
    ([[1 / (1 + P ** 2 + Q ** 2), 0], [0, 1]], 1, 2),
    ([[2, sp.tanh(P)], [sp.tanh(P), 2]], None, 4),
])
def test_matrix_proven(rows, L, trace):
    """PSD and sup lambda_max proven: constants exactly, functions of one component, of
    dx^2 + dy^2; with b != 0 and no closed sup of lambda_max, min(sup tr, max(sup a, sup c) +
    sup |b|) (here 3)."""
    ctx = matrix_ctx(rows)
    term = recognise(ctx)
    f = term.facts
    assert f.failure == "", f.detail
    assert sp.simplify(f.trace - trace) == 0
    assert sp.simplify(f.L - (L if L is not None else 3)) == 0
    b = term.bound(ctx)
    assert b.proven and b.value is not None


@pytest.mark.parametrize("rows,failure", [
    ([[1, 2], [2, 1]], "negative"),
    ([[-1, 0], [0, 1]], "negative"),
    ([[1 + P ** 2, 0], [0, 1]], "unbounded"),
    ([[1 + P * Q / (1 + P ** 2 + Q ** 2 + P ** 4), 0], [0, 1]], "unknown"),
])
def test_matrix_not_proven(rows, failure):
    """Indefinite: "negative" (not stable); unbounded entries; and "cannot prove" where no rule
    bounds an entry."""
    ctx = matrix_ctx(rows)
    b = recognise(ctx).bound(ctx)
    assert b.value is None and b.failure == failure, b.reason


def test_matrix_with_params():
    ctx = matrix_ctx([[param_symbol("k"), 0], [0, 1]], params={"k": 2})
    assert recognise(ctx).bound(ctx).value == 8  # L = 2 = sup tr / ... max(2, 3/2 ...) -> 4 * 2


# ==================================================== EED / CED / matrix: the whole term
def _reference_A(ctx: Context, term, u: np.ndarray) -> np.ndarray:
    """The frozen matrix of the term at u from the reference alone."""
    h = tuple(float(x) for x in ctx.grid)
    b = tuple(ctx.boundaries)
    delta = float(term.delta)
    tdef = ctx.tensors[TS]
    if tdef.kind == "edge_enhancing":
        sigma = float(tdef.args[2].args[0].args[1])
        lam = float(ctx.params["lambda"])
        vx, vy = ref_central(ref_gauss(u, sigma, h, b), h, b)
        T = ref_eed(vx, vy, lambda s2: 1.0 / (1.0 + s2 / lam ** 2))
    elif tdef.kind == "coherence_enhancing":
        smoothed, rho, alpha, C = tdef.args
        vx, vy = ref_central(ref_gauss(u, float(smoothed.args[1]), h, b), h, b)
        T = ref_ced(vx, vy, float(rho), float(alpha), float(C), h, b)
    else:
        vx, vy = ref_central(ref_gauss(u, 1.0, h, b), h, b)
        T = np.zeros(u.shape + (2, 2))
        T[..., 0, 0] = 1 + 1 / (1 + vx ** 2 + vy ** 2)
        T[..., 1, 1] = 1.5
        T[..., 0, 1] = T[..., 1, 0] = 0.5 * np.tanh(vy)
    return ref_matrix(T, delta, b, h)


def _smooth_image(ny: int, nx: int, rng) -> np.ndarray:
    y, x = np.mgrid[0:ny, 0:nx]
    return (np.sin(0.9 * x + 0.4 * y) + (x - nx / 2) ** 2 / nx ** 2 > 0.3) * 1.0 + 0.1 * rng.standard_normal((ny, nx))


CONTEXTS = {
    "eed": lambda b: _eed_ctx(b),
    "ced": lambda b: _ced_ctx(b),
    "matrix": lambda b: matrix_ctx([[1 + 1 / (1 + P ** 2 + Q ** 2), sp.tanh(Q) / 2],
                                    [sp.tanh(Q) / 2, sp.Rational(3, 2)]], boundaries=b),
}


@pytest.mark.parametrize("kind", sorted(CONTEXTS))
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_term_equals_reference(kind, boundary):
    """weights(u) then frozen_apply(u) == A(u) u from the reference (presmoothing, central
    gradient, tensor, cell assembly) to 1e-12 in float64; float32 to 1e-5; ``dense`` (verify's
    matrix) equals the reference too."""
    ctx = CONTEXTS[kind]((boundary, "neumann" if boundary == "periodic" else boundary))
    term = recognise(ctx)
    rng = np.random.default_rng(5)
    ny, nx = 7, 8
    u = _smooth_image(ny, nx, rng)
    A = _reference_A(ctx, term, u)
    ref = (A @ u.ravel()).reshape(ny, nx)
    mod = term.torch_term(ctx)
    with torch.no_grad():
        out64 = mod.double()(torch.as_tensor(u)[None, None])[0, 0].numpy()
        out32 = mod.float()(torch.as_tensor(u, dtype=torch.float32)[None, None])[0, 0].numpy()
    scale = np.abs(ref).max()
    assert np.abs(out64 - ref).max() <= 1e-12 * scale
    assert np.abs(out32 - ref).max() <= 1e-5 * scale
    D = term.dense(ctx, u[None])
    assert np.abs(D - A).max() <= 1e-12 * np.abs(A).max()
    assert np.linalg.eigvalsh(A).min() >= -1e-12 * np.abs(A).max()
    assert np.linalg.eigvalsh(A).max() <= float(term.bound(ctx).value) * (1 + 1e-12)


def _load_term_source(term, ctx) -> AnisotropicDiffusion:
    """The emitted source of the term (runtime files inlined, functions, expression) executed."""
    import inspect

    from pde2net.operators.runtime import anisotropic as rt
    from pde2net.operators.runtime import grid

    pnames = {k: f"P_{k}" for k in ctx.params}
    src = term.source(ctx, pnames, "t0_")
    text = "import math\nimport torch\n"
    for mod in (grid, rt):
        text += "\n" + inspect.getsource(mod).replace("from __future__ import annotations\n", "") \
            .replace("from .grid import _extend, diff, diff_t, gauss\n", "")
    text += "".join(f"{pnames[k]} = {float(v)!r}\n" for k, v in ctx.params.items())
    text += "\n".join(src.functions) + f"\nTERM = {src.expression}\n"
    import ast
    ast.parse(text)
    ns: dict = {"__name__": "emitted"}
    exec(compile(text, "<emitted>", "exec"), ns)  # noqa: S102 - our own generated source, in a test
    assert src.runtime == ("grid", "anisotropic")
    return ns["TERM"]


@pytest.mark.parametrize("kind", sorted(CONTEXTS))
def test_source_equals_live(kind):
    """The TermSource builds the same runtime object: bit-equal to the live module in float64."""
    ctx = CONTEXTS[kind](("dirichlet", "periodic"))
    term = recognise(ctx)
    emitted = _load_term_source(term, ctx)
    u = torch.as_tensor(_smooth_image(6, 9, np.random.default_rng(2)))[None, None]
    with torch.no_grad():
        assert torch.equal(emitted.double()(u), term.torch_term(ctx).double()(u))


# ================================================= end to end: compile_text, live and source
def _spec(tensor: str, boundary: str, delta: str = "", scheme: str = "explicit(tau = auto, steps = 3)") -> str:
    lines = ["pde aniso", "param lambda = 0.1", "param sigma = 1", "field u(x, y)",
             "diffusivity g(s2) = 1 / (1 + s2 / lambda^2)", f"tensor T = {tensor}",
             "equation dt(u) = div( T * grad(u) )", "grid h = 1", "size NX = 7, NY = 6",
             f"boundary {boundary}"]
    if delta:
        lines.append(f"stencil anisotropic(delta = {delta})")
    return "\n".join(lines + [f"scheme {scheme}"]) + "\n"


E2E_TENSORS = {
    "eed": "edge_enhancing(g, grad(gauss(u, sigma)))",
    "ced": "coherence_enhancing(gauss(u, 0.5), 2, 0.01, 1)",
    "matrix": "[[1 + 1 / (1 + dx(gauss(u, sigma))^2 + dy(gauss(u, sigma))^2), tanh(dy(gauss(u, sigma))) / 2], "
              "[tanh(dy(gauss(u, sigma))) / 2, 1.5]]",
}


def _e2e_reference(kind: str, u: np.ndarray, boundaries: tuple, delta: float, tau: float, steps: int):
    """Explicit steps u <- u - tau A(u) u with A(u) from the reference, recomputed every step."""
    h = (1.0, 1.0)
    for _ in range(steps):
        if kind == "eed":
            vx, vy = ref_central(ref_gauss(u, 1.0, h, boundaries), h, boundaries)
            T = ref_eed(vx, vy, lambda s2: 1.0 / (1.0 + s2 / 0.01))
        elif kind == "ced":
            vx, vy = ref_central(ref_gauss(u, 0.5, h, boundaries), h, boundaries)
            T = ref_ced(vx, vy, 2.0, 0.01, 1.0, h, boundaries)
        else:
            vx, vy = ref_central(ref_gauss(u, 1.0, h, boundaries), h, boundaries)
            T = np.zeros(u.shape + (2, 2))
            T[..., 0, 0] = 1 + 1 / (1 + vx ** 2 + vy ** 2)
            T[..., 1, 1] = 1.5
            T[..., 0, 1] = T[..., 1, 0] = 0.5 * np.tanh(vy)
        u = u - tau * (ref_matrix(T, delta, boundaries, h) @ u.ravel()).reshape(u.shape)
    return u


@pytest.mark.parametrize("kind", sorted(E2E_TENSORS))
@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet", "x: periodic, y: dirichlet"])
def test_compiled_network_equals_reference(kind, boundary, tmp_path):
    """compile_text -> live module (float64: 1e-12, float32: 1e-5) and prog.source() loaded as
    a file: three explicit steps at tau = auto equal the reference's steps."""
    import pde2net
    from reference import load_source

    prog = pde2net.compile_text(_spec(E2E_TENSORS[kind], boundary))
    rep = prog.stability
    assert rep.stable, rep.reason
    tau = float(rep.tau)
    kinds = (boundary,) * 2 if ":" not in boundary else ("periodic", "dirichlet")
    term = prog.arch.operator.terms[0]
    u0 = _smooth_image(6, 7, np.random.default_rng(1))
    ref = _e2e_reference(kind, u0, kinds, float(term.delta), tau, 3)
    scale = np.abs(ref).max()
    with torch.no_grad():
        live = prog.module(dtype=torch.float64)(torch.as_tensor(u0)[None, None])[0, 0].numpy()
        live32 = prog.module(dtype=torch.float32)(torch.as_tensor(u0, dtype=torch.float32)[None, None])
    assert np.abs(live - ref).max() <= 1e-12 * scale
    assert np.abs(live32[0, 0].numpy() - ref).max() <= 1e-5 * scale
    mod = load_source(prog.source(), tmp_path, f"aniso_{kind}")
    cls = [v for k, v in vars(mod).items() if isinstance(v, type) and issubclass(v, torch.nn.Module)
           and v.__module__ == mod.__name__ and k.lower() == "aniso"][0]
    with torch.no_grad():
        emitted = cls().double()(torch.as_tensor(u0)[None, None])[0, 0].numpy()
    assert np.array_equal(emitted, live)


def test_compiled_delta_setting_and_verdicts():
    """``stencil anisotropic(delta = 0)`` halves EED's step (8/h^2); delta > 1 is "not stable";
    an indefinite explicit matrix is "not stable"; an unprovable one "cannot prove"."""
    import pde2net

    rep = pde2net.compile_text(_spec(E2E_TENSORS["eed"], "neumann", "0")).stability
    assert rep.stable and sp.Rational(str(rep.tau_max)) == sp.Rational(1, 4)
    rep = pde2net.compile_text(_spec(E2E_TENSORS["eed"], "neumann")).stability
    assert rep.stable and sp.Rational(str(rep.tau_max)) == sp.Rational(1, 2)
    rep = pde2net.compile_text(_spec(E2E_TENSORS["eed"], "neumann", "1.5",
                                     "explicit(tau = 0.1, steps = 3)")).stability
    assert not rep.stable and "delta" in rep.reason
    rep = pde2net.compile_text(_spec("[[1, 2], [2, 1]]", "neumann", "", "explicit(tau = 0.1, steps = 3)")).stability
    assert not rep.stable
    rep = pde2net.compile_text(_spec("[[1 + dx(gauss(u, 1)) * dy(gauss(u, 1)) / (1 + dx(gauss(u, 1))^4 + "
                                     "dy(gauss(u, 1))^2), 0], [0, 1]]", "neumann", "",
                                     "explicit(tau = 0.1, steps = 3)")).stability
    assert not rep.stable and "prove" in (rep.verdict + rep.reason).lower()


# ====================================================================== rotation error
def _pattern(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth test image with edges in every direction: stripes and an ellipse."""
    return 0.5 * np.tanh(3 * np.sin(0.3 * x) * np.cos(0.2 * y)) + 0.5 * np.tanh((300 - x * x - 2 * y * y) / 40)


def rotation_error(spec_text: str, n: int = 64, h: float = 1.0) -> dict:
    """The rotation error of a compiled network (explicit scheme, float64).

    90 degrees: ``net(rot90(u))`` against ``rot90(net(u))`` (max abs difference over max |u|).
    45 degrees: the pattern sampled on the grid (A) and sampled rotated by 45 degrees about the
    centre (B, no interpolation); ``net(B)`` against ``net(A)`` rotated by cubic interpolation, on
    the central disc of radius (n/2 - 8) h (away from the boundary), as a relative L2 error; and
    the same for the inputs (``interp``: what interpolation alone contributes).  ``change``: the
    error over ``||net(B) - B||``, relative to what the diffusion did."""
    import pde2net
    from scipy.ndimage import map_coordinates

    prog = pde2net.compile_text(spec_text)
    net = prog.module(dtype=torch.float64)
    run = lambda a: net(torch.as_tensor(a)[None, None])[0, 0].detach().numpy()  # noqa: E731
    c = (n - 1) / 2
    yi, xi = np.mgrid[0:n, 0:n] - c
    x, y = xi * h, yi * h
    A = _pattern(x, y)
    co, si = math.cos(math.pi / 4), math.sin(math.pi / 4)
    B = _pattern(co * x + si * y, -si * x + co * y)  # B(p) = A(R^-1 p): A rotated by +45 degrees

    def rotate(img):
        xs, ys = co * xi + si * yi + c, -si * xi + co * yi + c
        return map_coordinates(img, [ys, xs], order=3, mode="nearest")

    disc = xi * xi + yi * yi <= (n / 2 - 8) ** 2
    with torch.no_grad():
        ra, rb = run(A), run(B)
        r90 = np.abs(run(np.rot90(A).copy()) - np.rot90(ra)).max() / np.abs(A).max()
    err = np.linalg.norm((rb - rotate(ra))[disc]) / np.linalg.norm(rb[disc])
    interp = np.linalg.norm((B - rotate(A))[disc]) / np.linalg.norm(B[disc])
    change = np.linalg.norm((rb - rotate(ra))[disc]) / np.linalg.norm((rb - B)[disc])
    return {"rot90": r90, "rot45": err, "interp": interp, "change": change}


def _rotation_spec(tensor: str, delta: str, n: int, h: float = 1.0, t_end: float = 10.0) -> str:
    """A 64 x 64 (h = 1) or finer grid over the same physical domain, evolved to t_end with
    tau = h^2 / 4 (stable for every delta in [0, 1])."""
    tau = h * h / 4
    return "\n".join(["pde rot", "param lambda = 0.1", "param C = 3.31488", "field u(x, y)",
                      "diffusivity g(s2) = 1 - exp(-C / (s2 / lambda^2)^4)", f"tensor T = {tensor}",
                      "equation dt(u) = div( T * grad(u) )", f"grid h = {h}", f"size NX = {n}, NY = {n}",
                      "boundary neumann", f"stencil anisotropic(delta = {delta})",
                      f"scheme explicit(tau = {tau}, steps = {int(round(t_end / tau))})"]) + "\n"


def test_rotation_90_is_exact():
    """The cell assembly, the presmoothing and the central gradient are symmetric under 90 degree
    rotations (w1 <-> w2, w3 <-> w4): the error is rounding only."""
    r = rotation_error(_rotation_spec("edge_enhancing(g, grad(gauss(u, 1)))", "0.5", 24, t_end=1), 24)
    assert r["rot90"] <= 1e-13


ROTATION_TENSORS = {"eed": "edge_enhancing(g, grad(gauss(u, 1)))",
                    "ced": "coherence_enhancing(gauss(u, 1), 4, 0.001, 0.0001)"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(ROTATION_TENSORS))
def test_rotation_45_measured(kind, capsys):
    """Measured (printed, in the docs): the 45 degree rotation error for delta in {0, 1/2, 1} at
    t = 10, on 64 x 64 (h = 1) and on the same domain at h = 1/2 (128 x 128).  The error is
    below the change the diffusion makes, and it shrinks under refinement (consistency)."""
    for delta in ("0", "0.5", "1"):
        coarse = rotation_error(_rotation_spec(ROTATION_TENSORS[kind], delta, 64), 64)
        fine = rotation_error(_rotation_spec(ROTATION_TENSORS[kind], delta, 128, 0.5), 128, 0.5)
        with capsys.disabled():
            for name, r in (("64, h = 1", coarse), ("128, h = 1/2", fine)):
                print(f"\n{kind} delta = {delta} ({name}): rot90 {r['rot90']:.1e}, rot45 {r['rot45']:.4f}, "
                      f"interpolation alone {r['interp']:.4f}, error / change {r['change']:.3f}")
        assert coarse["rot90"] <= 1e-13 and coarse["change"] < 1
        assert fine["rot45"] < coarse["rot45"]


@pytest.mark.parametrize("delta", [None, 0])
def test_eed_bound_attained(delta):
    """EED with g(0) = 1 = sup g: near a constant image T = I, so the bound (4/h^2) max(1, 2(1 -
    delta)) is attained: live explicit steps (T recomputed every step) from 1 + 1e-8 noise grow
    at 1.02 x the derived tau_max and do not at 0.98 x (periodic 8 x 8)."""
    ctx = _eed_ctx(("periodic", "periodic"), delta=delta)
    term = recognise(ctx)
    b = term.bound(ctx)
    assert b.tight and b.value == (4 if delta is None else 8)
    mod = term.torch_term(ctx).double()
    rng = np.random.default_rng(4)
    u0 = 1 + 1e-8 * torch.as_tensor(rng.standard_normal((1, 1, 8, 8)))
    for factor, grows in ((1.02, True), (0.98, False)):
        u = u0.clone()
        with torch.no_grad():
            for _ in range(400):
                u = u - factor * 2 / float(b.value) * mod(u)
        ratio = float((u - u.mean()).norm() / (u0 - u0.mean()).norm())
        assert (ratio > 10) if grows else (ratio <= 1 + 1e-9)


# ===================================================== soundness: no wrong "stable" verdict
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SOUND_G = ("1 / (1 + s2 / lambda^2)", "exp(-s2 / lambda^2)", "1 - exp(-3.31488 / (s2 / lambda^2)^4)",
           "k / (1 + s2)", "(1 + s2) / (2 + s2 / lambda^2)")
SOUND_MATRICES = ("[[k, 0], [0, 1]]", "[[2, 1], [1, 2]]", "[[1, k], [k, 1]]",
                  "[[1 + 1 / (1 + dx(gauss(u, 1))^2 + dy(gauss(u, 1))^2), tanh(dy(gauss(u, 1))) / 2], "
                  "[tanh(dy(gauss(u, 1))) / 2, 1.5]]",
                  "[[exp(-dx(u)^2), 0], [0, k / (1 + dy(gauss(u, 2))^2)]]")


@st.composite
def aniso_specs(draw):
    """A random anisotropic spec with tau = auto and a factor for the step."""
    kind = draw(st.sampled_from(("eed", "ced", "matrix")))
    if kind == "eed":
        tensor = f"edge_enhancing(g, grad(gauss(u, {draw(st.sampled_from(('0', '1', '2')))})))"
    elif kind == "ced":
        a = draw(st.sampled_from(("0", "0.001", "0.5", "2")))
        c = draw(st.sampled_from(("0", "0.0001", "1")))
        tensor = f"coherence_enhancing(gauss(u, {draw(st.sampled_from(('0', '1')))}), 2, {a}, {c})"
    else:
        tensor = draw(st.sampled_from(SOUND_MATRICES))
    kinds = [draw(st.sampled_from(BOUNDARIES)) for _ in range(2)]
    hs = [draw(st.sampled_from(("1", "1/2", "2"))) for _ in range(2)]
    delta = draw(st.sampled_from(("", "0", "0.25", "0.5", "1", "1.25")))
    scale = draw(st.sampled_from(("", "2 * ", "1/3 * ")))
    extra = draw(st.sampled_from(("", " + laplace(u)", " + 0.5 * (f - u)")))
    factor = draw(st.sampled_from((0.5, 0.99, 1.0)))
    lines = ["pde s", f"param lambda = {draw(st.sampled_from(('0.05', '1')))}",
             f"param k = {draw(st.sampled_from(('1', '3', '1/3')))}", "field u(x, y)"]
    if "f - u" in extra:
        lines.append("input f(x, y)")
    lines += [f"diffusivity g(s2) = {draw(st.sampled_from(SOUND_G))}", f"tensor T = {tensor}",
              f"equation dt(u) = {scale}div( T * grad(u) ){extra}", f"grid hx = {hs[0]}, hy = {hs[1]}",
              f"boundary x: {kinds[0]}, y: {kinds[1]}"]
    if delta:
        lines.append(f"stencil anisotropic(delta = {delta})")
    lines.append("scheme explicit(tau = auto, steps = 1)")
    return "\n".join(lines) + "\n", factor, 1.0 if "f - u" in extra else 0.0


def _frozen(net, u: torch.Tensor) -> np.ndarray:
    """The network's own frozen operator at u, column by column (float64)."""
    n = u.numel()
    eye = torch.eye(n, dtype=torch.float64).reshape((n,) + tuple(u.shape[1:]))
    G = net.op.weights(u.expand_as(eye).contiguous(), u.expand_as(eye).contiguous())
    return net.op.frozen_apply(eye, G).reshape(n, n).T.numpy()


def check_aniso_sound(case) -> None:
    """Every "stable" verdict: at inputs from tiny to large (random, 45 degree stripes, constant)
    A_G is symmetric, PSD and tau (lambda_max + k) <= 2 (k = 2 alpha with a data term)."""
    import pde2net

    text, factor, k = case
    try:
        auto = pde2net.compile_text(text)
        tau = float(auto.stability.tau) * factor
        prog = pde2net.compile_text(text.replace("tau = auto", f"tau = {tau!r}"))
    except PdeError as exc:  # nothing proven for tau = auto: refused clearly
        assert "error" in str(exc)
        return
    if prog.stability.verdict != "stable":
        return
    net = prog.module(dtype=torch.float64)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:6, 0:6]
    inputs = [amp * rng.standard_normal((6, 6)) for amp in (1e-6, 1e-2, 1.0, 30.0)]
    inputs += [np.sin(1.3 * (x + y)), np.sign(np.sin(1.1 * (x - y))) * 5, np.ones((6, 6))]
    for u in inputs:
        A = _frozen(net, torch.as_tensor(u)[None, None])
        scale = max(float(np.abs(A).max()), 1e-300)
        assert np.abs(A - A.T).max() <= 1e-12 * scale, text
        ev = np.linalg.eigvalsh((A + A.T) / 2)
        assert ev[0] >= -1e-10 * scale, (text, ev[0])
        assert tau * (ev[-1] + k) <= 2 * (1 + 1e-10), (text, tau, ev[-1])


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(aniso_specs())
def test_no_wrong_stable_anisotropic(case):
    check_aniso_sound(case)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(aniso_specs())
def test_no_wrong_stable_anisotropic_many(case):
    check_aniso_sound(case)


@pytest.mark.parametrize("name,delta", [("eed", sp.Rational(1, 2)), ("ced", sp.Rational(1, 1001))])
def test_examples(name, delta):
    """examples/eed.pde and ced.pde: stable, lambda_max(A) <= 4 = (4/h^2) max(L, (1 - delta) sup tr T)
    with the reported default delta, tau_max = h^2/2; 50 steps on a noisy 64 x 64 image do not
    increase the norm (docs/theory.md §9: every step non-expansive) and preserve the mean."""
    from pathlib import Path

    import pde2net

    prog = pde2net.load(Path(__file__).resolve().parent.parent / "examples" / f"{name}.pde")
    rep = prog.stability
    term = prog.arch.operator.terms[0]
    assert rep.stable and term.delta == delta and term.delta_default
    assert term.bound(prog.arch.operator.context).value == 4
    assert sp.Rational(str(rep.tau_max)) == sp.Rational(1, 2)
    rng = np.random.default_rng(9)
    u0 = torch.as_tensor(_pattern(*np.mgrid[-32:32, -32:32][::-1] * 1.0) + 0.1 * rng.standard_normal((64, 64)))
    with torch.no_grad():
        u = prog.module(dtype=torch.float64)(u0[None, None])[0, 0]
    assert float(u.norm()) <= float(u0.norm())
    assert abs(float(u.mean() - u0.mean())) <= 1e-12


def test_neumann_identity_tensor_semantics():
    """T = I, delta = 0, neumann (only the cells inside): every axis edge inside the image has
    weight 1, an edge running along the boundary (held by one cell) weight 1/2; no diagonals.
    The matrix is written here edge by edge, not from cells."""
    ny, nx = 4, 5
    E = np.zeros((nx * ny, nx * ny))

    def add(p, q, w):
        v = np.zeros(nx * ny)
        v[p], v[q] = 1.0, -1.0
        E[:] += w * np.outer(v, v)

    for j in range(ny):
        for i in range(nx - 1):
            add(j * nx + i, j * nx + i + 1, 0.5 if j in (0, ny - 1) else 1.0)
    for j in range(ny - 1):
        for i in range(nx):
            add(j * nx + i, (j + 1) * nx + i, 0.5 if i in (0, nx - 1) else 1.0)
    T = np.broadcast_to(np.eye(2), (ny, nx, 2, 2)).copy()
    term = runtime(("neumann", "neumann"), 0.0)
    M = runtime_matrix(term, term.weights_of_tensor(*tensor_torch(T)), (ny, nx))
    assert np.abs(M - E).max() <= 1e-14


def ref_edge_matrix(T: np.ndarray, delta: float) -> np.ndarray:
    """The EDGE assembly (periodic, h = 1): each edge (p, p + o_i) takes the split of the mean
    tensor of its two endpoints, weight w_i / |o_i|^2."""
    ny, nx = T.shape[:2]
    A = np.zeros((nx * ny, nx * ny))
    for j in range(ny):
        for i in range(nx):
            for k, ((di, dj), l2) in enumerate(zip([(1, 0), (0, 1), (1, 1), (1, -1)], [1, 1, 2, 2])):
                q = ((j + dj) % ny, (i + di) % nx)
                Te = (T[j, i] + T[q]) / 2
                w = ref_split(Te[0, 0], Te[0, 1], Te[1, 1], delta, 1.0, 1.0)[k]
                v = np.zeros(nx * ny)
                v[j * nx + i] -= 1
                v[q[0] * nx + q[1]] += 1
                A += w / l2 * np.outer(v, v)
    return A


def test_edge_assembly_counterexample_is_indefinite():
    """The single-pixel tensor T = L e4 e4^T breaks the EDGE assembly too: the (1, 1) edge from p
    gets w3 = -L/4, and the indicator of p + (1, 1) has energy -L/8 (h = 1)."""
    L, n = 2.0, 4
    e4 = np.array([1.0, -1.0]) / math.sqrt(2)
    T = np.zeros((n, n, 2, 2))
    T[1, 1] = L * np.outer(e4, e4)
    E = ref_edge_matrix(T, 0.0)
    u = np.zeros(n * n)
    u[2 * n + 2] = 1.0
    assert u @ E @ u == pytest.approx(-L / 8, abs=1e-14)
    assert np.linalg.eigvalsh(E).min() < 0


@pytest.mark.parametrize("scheme", ["fed(tau_max = auto, cycles = 2, cycle_length = 4)",
                                    "fsi(tau = auto, cycles = 2, cycle_length = 4)",
                                    "implicit(tau = 2, steps = 2, solver = cg, iterations = 30)"])
def test_verify_other_schemes(scheme):
    """``verify`` is consistent for EED under FED, FSI and implicit CG (8 x 8): the network equals
    the dense float64 scheme (the FSI reference once added its last extrapolation weight to the
    result, a name clash with the boundary value)."""
    import pde2net
    from pde2net import verify

    text = _spec(E2E_TENSORS["eed"], "neumann", "", scheme)
    prog = pde2net.compile_text(text)
    rep = verify.verify_operator(prog, 8, 0, 0.2)
    assert rep.reference["ok"] and not rep.failures, rep.failures
