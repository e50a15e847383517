"""The fourth family (You-Kaveh): ``c * laplace( phi(laplace(u)) )``, ``A = Delta_h G Delta_h``.

References written here from the mathematics (docs/theory.md §12): the 1D second difference
``-D^T D`` per boundary in closed form (neumann: tridiag(1, -2, 1) with -1 in the two corners;
periodic: circulant; dirichlet: tridiag(1, -2, 1)), ``Delta_h`` its Kronecker sum over the axes,
``A = Delta_h diag(g((Delta_h u)^2)) Delta_h``, bound ``L (sum_d 4/h_d^2)^2``.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_support import U, inline_source, kron_along, make_ctx, param, pm, spectral_norm

from pde2net.analyse import DIV, DX, GRAD, LAPLACE, NORM
from pde2net.errors import PdeError
from pde2net.operators.fourth import FAMILY, FourthTerm

LAM = param("lambda")
LAP = LAPLACE(U)


def second_difference(n: int, boundary: str, h: float) -> np.ndarray:
    """The 1D ``-D^T D`` (D the forward difference) on n points, in closed form."""
    a = np.zeros((n, n))
    for i in range(n):
        for j in (i - 1, i + 1):
            if boundary == "periodic":
                a[i, j % n] += 1.0
            elif 0 <= j < n:
                a[i, j] += 1.0
    if boundary == "periodic" and n == 1:
        return np.zeros((1, 1))           # u_(i+1) - u_i = 0 on one periodic point
    degree = a.sum(axis=1) if boundary != "dirichlet" else np.full(n, 2.0)
    return (a - np.diag(degree)) / h ** 2


def laplacian(shape: tuple, boundaries: tuple, grid: tuple) -> np.ndarray:
    """``Delta_h`` on (C, *space), x the last axis: the Kronecker sum of the 1D matrices."""
    out = 0
    for axis, (b, h) in enumerate(zip(boundaries, grid)):
        dim = len(shape) - 1 - axis
        out = out + kron_along(second_difference(shape[dim], b, h), shape, dim)
    return out


def reference(shape, boundaries, grid, g, u) -> np.ndarray:
    lap = laplacian(shape, boundaries, grid)
    s = lap @ u.ravel()
    return lap @ (g(s * s)[:, None] * lap)


def you_kaveh(c=-1) -> sp.Expr:
    """``c * laplace( g(laplace(u)^2) * laplace(u) )`` with Perona-Malik g."""
    return c * LAPLACE(LAP / (1 + LAP ** 2 / LAM ** 2))


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


CASES = [
    ((2, 6, 7), ("neumann", "neumann"), (1.0, 0.5)),
    ((2, 6, 7), ("periodic", "periodic"), (1.0, 1.0)),
    ((2, 6, 7), ("dirichlet", "dirichlet"), (0.5, 2.0)),
    ((1, 5, 4), ("periodic", "neumann"), (1.0, 1.0)),
    ((2, 2, 3), ("dirichlet", "periodic"), (1.0, 1.0)),    # a periodic axis of 2 points
    ((1, 1, 5), ("periodic", "periodic"), (1.0, 1.0)),     # ... and of 1 point
    ((2, 9), ("neumann",), (0.5,)),
    ((2, 3, 4, 5), ("periodic", "neumann", "dirichlet"), (1.0, 0.5, 2.0)),
]


@pytest.mark.parametrize("shape,boundaries,grid", CASES)
def test_network_equals_dense_reference(shape, boundaries, grid):
    """Live module (float64, float32), frozen diagonal and the term's dense matrix, 1D/2D/3D,
    every boundary, two channels."""
    ctx = make_ctx("xyz"[:len(grid)], boundaries, grid, {"lambda": 0.5}, channels=shape[0])
    term = FAMILY.recognise(you_kaveh(), ctx)
    assert isinstance(term, FourthTerm)
    mod = term.torch_term(ctx)
    u = np.random.default_rng(len(shape)).standard_normal((2,) + shape)
    for b in range(2):
        a = reference(shape, boundaries, grid, pm(0.5), u[b])
        want = (a @ u[b].ravel()).reshape(shape)
        x64 = torch.tensor(u[b:b + 1])
        assert rel(mod(x64).numpy()[0], want) < 1e-12
        assert rel(mod(x64.float()).double().numpy()[0], want) < 2e-5
        assert rel(term.dense(ctx, u[b]), a) < 1e-12
        assert rel(mod.frozen_diagonal(mod.weights(x64)).numpy()[0].ravel(), np.diag(a)) < 1e-12


def test_laplacian_is_symmetric_for_every_boundary():
    """The reference itself: ``-D^T D`` is symmetric and agrees with the 5-point stencil inside."""
    for b in ("neumann", "periodic", "dirichlet"):
        lap = laplacian((1, 6, 7), (b, b), (1.0, 1.0))
        assert np.array_equal(lap, lap.T)
        i = 3 * 7 + 3
        assert lap[i, i] == -4 and lap[i, i + 1] == lap[i, i - 1] == lap[i, i + 7] == lap[i, i - 7] == 1


def test_source_builds_the_same_network(tmp_path):
    ctx = make_ctx("xy", ("periodic", "dirichlet"), (1.0, 0.5), {"lambda": 0.7})
    term = FAMILY.recognise(you_kaveh(), ctx)
    live, emitted = term.torch_term(ctx), inline_source(term, ctx, tmp_path)
    u = torch.tensor(np.random.default_rng(2).standard_normal((2, 3, 6, 5)))
    assert torch.equal(live(u), emitted(u))
    G = live.weights(u)
    assert torch.equal(live.frozen_diagonal(G), emitted.frozen_diagonal(G))


# ------------------------------------------------------------------------------ the bounds
@pytest.mark.parametrize("grid,expected", [
    ((1, 1), 64),                                        # (4 + 4)^2
    ((sp.Rational(1, 2), 1), 400),                       # (16 + 4)^2
    ((2, 2), 4),
    ((1, 1, 1), 144),                                    # 3D: (4 + 4 + 4)^2
])
def test_bound_equals_closed_form(grid, expected):
    ctx = make_ctx("xyz"[:len(grid)], ("neumann",) * len(grid), grid, {"lambda": 0.5})
    b = FAMILY.recognise(you_kaveh(), ctx).bound(ctx)
    assert b.value == expected and b.proven and b.tight
    assert FAMILY.recognise(-3 * LAPLACE(LAP), ctx).bound(ctx).value == 3 * expected


def test_step_bound_is_h4_over_32L():
    """``tau_max = 2 / (L (4/h^2 + 4/h^2)^2) = h^4 / (32 L)`` on square cells (docs/theory.md §12)."""
    h, lam = sp.Rational(3, 10), sp.Rational(1, 4)
    ctx = make_ctx("xy", ("neumann", "neumann"), (h, h), {"lambda": lam})
    L = 5
    b = FAMILY.recognise(L * LAPLACE(-LAP / sp.sqrt(1 + LAP ** 2 / LAM ** 2)), ctx).bound(ctx)
    assert 2 / b.value == h ** 4 / (32 * L)


@pytest.mark.parametrize("expr,failure", [
    (LAPLACE(LAP), "negative"),                          # +laplace(laplace(u)): backward
    (you_kaveh(c=1), "negative"),
    (-LAPLACE(LAP / sp.Abs(LAP)), "unbounded"),          # a TV-like weight 1/|s|
])
def test_no_bound_without_proof(expr, failure):
    ctx = make_ctx("xy", ("neumann", "neumann"), params={"lambda": 0.5})
    b = FAMILY.recognise(expr, ctx).bound(ctx)
    assert b.value is None and not b.proven and b.failure == failure


# ---------------------------------------------------------------- growth and the trap
def test_linear_growth_above_the_bound():
    """``-laplace(laplace(u))`` periodic 16 x 16 (h = 1): lambda_max(Delta_h^2) = 64 exactly (the
    checkerboard), so the bound is attained: no growth at tau_max = 1/32, growth at 1.02 x."""
    ctx = make_ctx("xy", ("periodic", "periodic"))
    term = FAMILY.recognise(-LAPLACE(LAP), ctx)
    bound = float(term.bound(ctx).value)
    lap = laplacian((1, 16, 16), ("periodic", "periodic"), (1.0, 1.0))
    assert abs(np.linalg.eigvalsh(lap @ lap)[-1] - bound) < 1e-9
    mod = term.torch_term(ctx)
    rng = np.random.default_rng(0)

    def growth(tau: float, steps: int) -> float:
        x = torch.tensor(rng.standard_normal((1, 1, 16, 16)))
        n0 = float(x.norm())
        for _ in range(steps):
            x = x - tau * mod(x)
        return float(x.norm()) / n0

    assert growth(2 / bound, 300) <= 1
    assert growth(1.02 * 2 / bound, 300) > 100


def test_nonlinear_growth_at_small_amplitude():
    """You-Kaveh with Perona-Malik g (sup g = g(0) = 1): a tiny multiple of the top eigenvector of
    Delta_h^2 grows at 1.02 x the bound (neumann 16 x 16: lambda_max(Delta_h^2) = 64 cos^4(pi/32),
    0.981 of the bound, so the growth factor is 1.02 * 2 * 0.981 - 1 = 1.0009), and never at the
    bound itself."""
    ctx = make_ctx("xy", ("neumann", "neumann"), params={"lambda": 1})
    term = FAMILY.recognise(you_kaveh(), ctx)
    bound = float(term.bound(ctx).value)
    lap = laplacian((1, 16, 16), ("neumann", "neumann"), (1.0, 1.0))
    lam, vec = np.linalg.eigh(lap @ lap)
    assert bound / 1.02 < lam[-1] < bound
    mod = term.torch_term(ctx)
    top = torch.tensor(1e-6 * vec[:, -1].reshape(1, 1, 16, 16))
    assert lam[-1] == pytest.approx(64 * np.cos(np.pi / 32) ** 4, rel=1e-12)
    ratio = float((top - 1.02 * 2 / bound * mod(top)).norm() / top.norm())
    assert ratio > 1 and ratio == pytest.approx(1.02 * 2 * lam[-1] / bound - 1, abs=1e-9)
    assert float((top - 2 / bound * mod(top)).norm() / top.norm()) <= 1 + 1e-12


def mirror_ghost_laplacian(n: int) -> np.ndarray:
    """The node-centred 5-point Laplacian with mirror ghosts u_(-1) = u_1, u_n = u_(n-2) (h = 1):
    the boundary rows read 2 u_1 - 2 u_0, so the matrix is NOT symmetric."""
    a = np.zeros((n, n))
    for i in range(n):
        for j in (i - 1, i + 1):
            j = 1 if j == -1 else n - 2 if j == n else j   # the mirror
            a[i, j] += 1.0
        a[i, i] -= 2.0
    eye = np.eye(n)
    return np.kron(a, eye) + np.kron(eye, a)


def test_mirror_ghost_trap():
    """docs/theory.md §12: with the mirror-ghost Laplacian M (16 x 16), ``||I - tau M^2||_2 > 1``
    for EVERY tau in (0, 1/32] (measured 1.0572 at the bound), although its spectral radius is
    at most 1 there; with the symmetric ``Delta_h = -D^T D``, ``||I - tau Delta_h G Delta_h||_2 <= 1``
    at the bound for every frozen G in [0, 1]."""
    n = 16
    m = mirror_ghost_laplacian(n)
    assert not np.allclose(m, m.T)
    tau_max = 1 / 32
    eye = np.eye(n * n)
    norms = {tau: spectral_norm(eye - tau * m @ m) for tau in (tau_max, tau_max / 10, tau_max / 1000)}
    print("mirror ghost ||I - tau M^2||_2:", {t: round(v, 6) for t, v in norms.items()})
    assert all(v > 1 for v in norms.values())
    assert norms[tau_max] == pytest.approx(1.0572, abs=1e-4)
    assert max(abs(np.linalg.eigvals(eye - tau_max * m @ m))) <= 1 + 1e-9
    ctx = make_ctx("xy", ("neumann", "neumann"), params={"lambda": 1})
    term = FAMILY.recognise(you_kaveh(), ctx)
    assert 2 / term.bound(ctx).value == sp.Rational(1, 32)
    lap = laplacian((1, n, n), ("neumann", "neumann"), (1.0, 1.0))
    rng = np.random.default_rng(5)
    for G in (np.ones(n * n), rng.uniform(0, 1, n * n), (rng.uniform(0, 1, n * n) > 0.5) * 1.0):
        assert spectral_norm(eye - tau_max * lap @ (G[:, None] * lap)) <= 1 + 1e-12
    u = rng.standard_normal((1, 1, n, n))                # and the term's own frozen matrix
    a = term.dense(ctx, u[0])
    assert spectral_norm(eye - tau_max * a) <= 1 + 1e-12


# ------------------------------------------------------------------------------ recognition
def test_other_terms_are_not_this_family():
    ctx = make_ctx("xy", ("neumann", "neumann"))
    for expr in (LAP, -2 * LAP, DIV(GRAD(U)), DX(U, 2), U - U ** 3, LAPLACE(U ** 2)):
        assert FAMILY.recognise(expr, ctx) is None


@pytest.mark.parametrize("expr,match", [
    (-LAPLACE(LAP * NORM(GRAD(U)) ** 2), "only through laplace"),
    (-LAPLACE(LAP + U), "only through laplace"),
    (-LAPLACE(LAP ** 2), "is not odd in laplace"),
    (-LAPLACE(sp.Symbol("f'input", real=True) * LAP), "not a param"),
])
def test_malformed_terms_are_refused(expr, match):
    ctx = make_ctx("xy", ("neumann", "neumann"))
    with pytest.raises(PdeError, match=match):
        FAMILY.recognise(expr, ctx)


# ----------------------------------------------------------------- end to end (compile_text)
def _example(boundary: str, field: str = "field u(x, y)", grid: str = "grid h = 1") -> str:
    from conftest import EXAMPLES

    text = (EXAMPLES / "you_kaveh.pde").read_text()
    return (text.replace("boundary neumann", f"boundary {boundary}")
            .replace("field u(x, y)", field).replace("grid h = 1", grid)
            .replace("size NX = 48, NY = 32", "size NX = 6, NY = 5, NZ = 4" if "z" in field else
                     "size NX = 48, NY = 32"))


def _dense_steps(u: np.ndarray, lap: np.ndarray, g, tau: float, steps: int) -> np.ndarray:
    x = u.ravel().copy()
    for _ in range(steps):
        s = lap @ x
        x = x - tau * (lap @ (g(s * s) * s))
    return x.reshape(u.shape)


@pytest.mark.parametrize("boundary,field,grid,shape", [
    ("neumann", "field u(x, y)", "grid h = 1", (1, 9, 12)),
    ("periodic", "field u(x, y)", "grid hx = 1, hy = 0.5", (1, 8, 10)),
    ("dirichlet", "field u(x, y)", "grid h = 1", (1, 9, 12)),
    ("x: periodic, y: neumann, z: dirichlet", "field u(x, y, z)", "grid hx = 1, hy = 1, hz = 2",
     (1, 4, 5, 6)),
])
def test_you_kaveh_example_end_to_end(boundary, field, grid, shape, tmp_path):
    """examples/you_kaveh.pde through pde2net.compile_text (2D, and 3D with a boundary per axis):
    bound, live module (float64, float32) and standalone source against the dense iteration."""
    import pde2net
    from reference import load_source

    prog = pde2net.compile_text(_example(boundary, field, grid))
    ndim = len(shape) - 1
    kinds = ([k.strip().split(": ")[-1] for k in boundary.split(",")] if ":" in boundary
             else [boundary] * ndim)
    hs = {"grid h = 1": (1.0, 1.0), "grid hx = 1, hy = 0.5": (1.0, 0.5)}.get(grid, (1.0, 1.0, 2.0))
    assert float(prog.stability.tau_max) == pytest.approx(2 / sum(4 / h ** 2 for h in hs) ** 2, rel=1e-15)
    u0 = np.random.default_rng(13).standard_normal(shape)
    lap = laplacian(shape, tuple(kinds), hs)
    tau = float(prog.arch.scheme.tau)
    want = _dense_steps(u0, lap, pm(0.05), tau, 3)
    x = torch.tensor(u0[None])
    live = prog.module(dtype=torch.float64, steps=3)
    assert rel(live(x).numpy()[0], want) < 1e-12
    assert rel(prog.module(dtype=torch.float32, steps=3)(x.float()).double().numpy()[0], want) < 1e-4
    emitted = load_source(prog.source(), tmp_path).Network(steps=3).double()
    assert torch.equal(emitted(x), live(x))


def test_bound_tightness_for_you_kaveh():
    """How tight ``L (sum_d 4/h_d^2)^2`` is for You-Kaveh with Perona-Malik g (lambda = 1,
    16 x 16, h = 1, bound 64).  Over the frozen weights the bound is attained up to the finite-N
    factor: G = I gives lambda_max = 64 cos^4(pi/32) (neumann, ratio 0.981) and exactly 64
    (periodic, even N).  At a field u (Gaussian noise of standard deviation a, neumann),
    lambda_max(A(u)) / bound measured: a = 1e-3: 0.981, 0.1: 0.871, 1: 0.502, 10: 0.316 (the
    weights 1/(1 + (Delta_h u)^2) fall with the amplitude).
    The ratio never exceeds 1."""
    shape = (1, 16, 16)
    lap = laplacian(shape, ("neumann", "neumann"), (1.0, 1.0))
    rng = np.random.default_rng(8)
    ratios = {}
    for a in (1e-3, 1e-1, 1.0, 10.0):
        u = a * rng.standard_normal(shape)
        ratios[a] = float(np.linalg.eigvalsh(reference(shape, ("neumann",) * 2, (1.0, 1.0), pm(1.0), u))[-1]) / 64
    print("lambda_max(A(u)) / bound by amplitude:", {a: round(r, 4) for a, r in ratios.items()})
    assert all(r <= 1 for r in ratios.values())
    assert ratios[1e-3] == pytest.approx(np.cos(np.pi / 32) ** 4, abs=1e-4)
    assert ratios[1e-3] > ratios[1.0] > ratios[10.0]
    assert np.linalg.eigvalsh(lap @ lap)[-1] == pytest.approx(64 * np.cos(np.pi / 32) ** 4, rel=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 3), st.lists(st.sampled_from(["neumann", "periodic", "dirichlet"]), min_size=3, max_size=3),
       st.lists(st.sampled_from([sp.Rational(1, 2), sp.Integer(1), sp.Integer(2)]), min_size=3, max_size=3),
       st.sampled_from([sp.Rational(-2), sp.Rational(-1, 2), sp.Rational(1, 3), sp.Integer(4)]),
       st.sampled_from([None, sp.Rational(1, 5), sp.Integer(3)]))
def test_soundness_of_the_bound(ndim, kinds, grid, c, lam):
    """Random You-Kaveh terms (2D/3D, a boundary and spacing per axis, factors of both signs,
    linear or Perona-Malik): a proven bound is never below the dense lambda_max(A(u)) at three
    amplitudes, and "negative" means a negative eigenvalue (backward diffusion)."""
    kinds, grid = tuple(kinds[:ndim]), tuple(grid[:ndim])
    ctx = make_ctx("xyz"[:ndim], kinds, grid)
    inner = LAP if lam is None else LAP / (1 + LAP ** 2 / lam ** 2)
    term = FAMILY.recognise(c * LAPLACE(inner), ctx)
    b = term.bound(ctx)
    shape = (1,) + (3, 4, 5)[:ndim]
    lap = laplacian(shape, kinds, tuple(float(h) for h in grid))
    k = -float(c)                                         # the flux is -c phi
    g = (lambda s2: k * np.ones_like(s2)) if lam is None else (lambda s2: k / (1 + s2 / float(lam) ** 2))
    rng = np.random.default_rng(1)
    for a in (1e-4, 1.0, 30.0):
        u = a * rng.standard_normal(shape).ravel()
        s = lap @ u
        eig = np.linalg.eigvalsh(lap @ (g(s * s)[:, None] * lap))
        if b.proven:
            assert eig[-1] <= float(b.value) * (1 + 1e-12)
        else:
            assert b.failure == "negative" and (a != 1e-4 or eig[0] < 0)


def test_sum_across_families_is_attained():
    """``-laplace(laplace(u)) - 0.5 dyyyy(u) + laplace(u)``, periodic 10 x 8, h = 1: the three
    bounds 64 + 8 + 8 add to lambda_max exactly (every symbol peaks at the checkerboard), so the
    compiled tau_max = 2/80 is attained."""
    import pde2net

    text = (_example("periodic").replace("-laplace(g(laplace(u)^2) * laplace(u))",
                                         "-laplace(laplace(u)) - 0.5 * dyyyy(u) + laplace(u)"))
    prog = pde2net.compile_text(text)
    assert float(prog.stability.tau_max) == pytest.approx(2 / 80, rel=1e-15)
    shape = (1, 8, 10)
    lap = laplacian(shape, ("periodic", "periodic"), (1.0, 1.0))
    d2 = np.zeros((8, 8))
    for r in range(8):
        for j, w in enumerate((1.0, -2.0, 1.0)):
            d2[r, (r + j) % 8] += w
    dyy = kron_along(d2, shape, 1)
    a = lap @ lap + 0.5 * dyy.T @ dyy - lap
    assert np.linalg.eigvalsh(a)[-1] == pytest.approx(80, rel=1e-12)
