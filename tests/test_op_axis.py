"""The axis family: one-axis terms ``c * d^m( phi(d^m(u)) )`` and ``c * d^(2m)(u)`` along x, y, z.

References are dense NumPy float64 matrices written here from the definitions: the order-m
forward difference ``(D u)_r = h^-m sum_j (-1)^(m-j) C(m, j) u_(r+j)`` with complete rows
(neumann), circulant rows (periodic) or zero ghosts (dirichlet, row r uses u_(r-m) .. u_r),
``A = D^T diag(g((D u)^2)) D``, bound ``L 4^m / h^(2m)`` (docs/theory.md §1, §2).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_support import U, inline_source, kron_along, make_ctx, param, pm

from pde2net.analyse import DIV, DX, DY, GRAD, LAPLACE
from pde2net.errors import PdeError
from pde2net.operators.axis import FAMILY, AxisTerm
from pde2net.operators.base import DZ
from pde2net.operators.runtime.axis import axis_diff

AXIS = {0: DX, 1: DY, 2: DZ}
LAM = param("lambda")


def binomial_matrix(n: int, m: int, boundary: str, h: float = 1.0) -> np.ndarray:
    """The order-m forward difference on n points, entry by entry from its definition."""
    w = [(-1) ** (m - j) * math.comb(m, j) / h ** m for j in range(m + 1)]
    if boundary == "neumann":
        d = np.zeros((n - m, n))
        for r in range(n - m):
            for j in range(m + 1):
                d[r, r + j] = w[j]
    elif boundary == "periodic":
        d = np.zeros((n, n))
        for r in range(n):
            for j in range(m + 1):
                d[r, (r + j) % n] += w[j]
    else:
        d = np.zeros((n + m, n))
        for r in range(n + m):
            for j in range(m + 1):
                if 0 <= r - m + j < n:
                    d[r, r - m + j] = w[j]
    return d


def full_matrix(shape: tuple, axis: int, m: int, boundary: str, h: float) -> np.ndarray:
    dim = len(shape) - 1 - axis
    return kron_along(binomial_matrix(shape[dim], m, boundary, h), shape, dim)


def reference(shape, axis, m, boundary, h, g, u) -> np.ndarray:
    """``D^T diag(g((D u)^2)) D`` in float64."""
    d = full_matrix(shape, axis, m, boundary, h)
    du = d @ u.ravel()
    return d.T @ (g(du * du)[:, None] * d)


def pm_term(axis: int, m: int) -> sp.Expr:
    """``(-1)^(m+1) d^m( g(d^m(u)^2) d^m(u) )`` with Perona-Malik g."""
    a = AXIS[axis](U, m)
    return (-1) ** (m + 1) * AXIS[axis](a / (1 + a ** 2 / LAM ** 2), m)


def run(mod, u: np.ndarray, dtype) -> np.ndarray:
    x = torch.tensor(u, dtype=dtype)
    return mod(x).double().numpy()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# (array shape (C, *space) with x last, boundaries x first, grid x first)
CASES = [
    ((2, 9), ("neumann",), (0.5,)),
    ((2, 9), ("periodic",), (1.0,)),
    ((2, 9), ("dirichlet",), (2.0,)),
    ((2, 6, 7), ("neumann", "periodic"), (1.0, 0.5)),
    ((2, 6, 7), ("dirichlet", "neumann"), (0.5, 1.0)),
    ((1, 7, 6), ("periodic", "dirichlet"), (1.0, 1.0)),
    ((2, 4, 5, 6), ("periodic", "neumann", "dirichlet"), (1.0, 0.5, 2.0)),
]


@pytest.mark.parametrize("shape,boundaries,grid", CASES)
@pytest.mark.parametrize("m", [1, 2, 3])
def test_network_equals_dense_reference(shape, boundaries, grid, m):
    """Live module (float64 and float32), frozen diagonal and the term's own dense matrix against
    the reference, for every axis of the field."""
    ctx = make_ctx("xyz"[:len(grid)], boundaries, grid, {"lambda": 0.5}, channels=shape[0])
    rng = np.random.default_rng(m)
    u = rng.standard_normal((2,) + shape)
    g = pm(0.5)
    for axis in range(len(grid)):
        if m >= shape[len(shape) - 1 - axis] and boundaries[axis] == "neumann":
            continue  # no complete row
        term = FAMILY.recognise(pm_term(axis, m), ctx)
        assert isinstance(term, AxisTerm) and (term.axis, term.order) == (axis, m)
        mod = term.torch_term(ctx)
        for b in range(2):
            a = reference(shape, axis, m, boundaries[axis], grid[axis], g, u[b])
            want = (a @ u[b].ravel()).reshape(shape)
            assert rel(run(mod, u[b:b + 1], torch.float64)[0], want) < 1e-12
            assert rel(run(mod, u[b:b + 1], torch.float32)[0], want) < 2e-5
            assert rel(term.dense(ctx, u[b]), a) < 1e-12
            G = mod.weights(torch.tensor(u[b:b + 1]))
            assert rel(mod.frozen_diagonal(G).numpy()[0].ravel(), np.diag(a)) < 1e-12


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("n,m", [(2, 1), (2, 3), (3, 3), (8, 2), (8, 4)])
def test_linear_terms_and_short_axes(boundary, n, m):
    """``(-1)^(m+1) d^(2m)(u)`` is ``D^T D`` with D of order m; a periodic axis shorter than the
    stencil wraps (weights of a row add up on one node), the diagonal included."""
    if boundary == "neumann" and m >= n:
        return
    ctx = make_ctx("x", (boundary,), (0.5,))
    term = FAMILY.recognise((-1) ** (m + 1) * DX(U, 2 * m), ctx)
    assert term.linear and term.order == m
    d = binomial_matrix(n, m, boundary, 0.5)
    a = d.T @ d
    u = np.random.default_rng(n).standard_normal((3, 1, n))
    mod = term.torch_term(ctx)
    assert rel(run(mod, u, torch.float64), (u @ a.T)) < 1e-12
    G = mod.weights(torch.tensor(u))
    assert rel(mod.frozen_diagonal(G).numpy()[0, 0], np.diag(a)) < 1e-12


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_composed_first_differences_are_the_binomial_stencil(boundary, m):
    """m first differences, each with the same boundary rule, are exactly the binomial matrix
    (valid o valid, full o full and circulant o circulant compose), for every boundary."""
    n = 11
    dt = axis_diff(torch.eye(n, dtype=torch.float64), 0, m, boundary, 2.0).numpy()  # dt[k] = D e_k
    assert np.array_equal(dt.T, binomial_matrix(n, m, boundary, 0.5))


def test_per_axis_sum_equals_reference_and_bounds_add():
    """``dx(g(dx(u)^2) dx(u)) + dy(g(dy(u)^2) dy(u))`` (examples/per_axis.pde): the sum of the
    two terms' networks is the dense sum, and the bounds are 4/hx^2 and 4/hy^2 (L = 1)."""
    ctx = make_ctx("xy", ("neumann", "dirichlet"), (1.0, 0.5), {"lambda": 0.3})
    tx, ty = FAMILY.recognise(pm_term(0, 1), ctx), FAMILY.recognise(pm_term(1, 1), ctx)
    assert tx.bound(ctx).value == 4 and ty.bound(ctx).value == 16
    u = np.random.default_rng(3).standard_normal((1, 1, 6, 7))
    a = sum(reference((1, 6, 7), ax, 1, ctx.boundaries[ax], (1.0, 0.5)[ax], pm(0.3), u[0])
            for ax in (0, 1))
    got = run(tx.torch_term(ctx), u, torch.float64) + run(ty.torch_term(ctx), u, torch.float64)
    assert rel(got.ravel(), a @ u.ravel()) < 1e-12


def test_source_builds_the_same_network(tmp_path):
    """The term's TermSource, with the runtime files inlined, computes what the live module does."""
    ctx = make_ctx("xy", ("periodic", "dirichlet"), (1.0, 0.5), {"lambda": 0.7})
    u = torch.tensor(np.random.default_rng(4).standard_normal((2, 3, 6, 5)))
    for i, expr in enumerate((pm_term(1, 2), 3 * DX(U, 2), DX(sp.tanh(DX(U, 1)), 1))):
        term = FAMILY.recognise(expr, ctx)
        live, emitted = term.torch_term(ctx), inline_source(term, ctx, tmp_path / str(i))
        assert torch.equal(live(u), emitted(u))
        G = emitted.weights(u)
        assert torch.equal(live.frozen_diagonal(G), emitted.frozen_diagonal(G))


# ------------------------------------------------------------------------------ the bounds
def _bound(expr, dims="x", grid=(1,), boundaries=None, params=None):
    ctx = make_ctx(dims, boundaries or ("neumann",) * len(dims), grid, params or {"lambda": 0.5})
    return FAMILY.recognise(expr, ctx).bound(ctx)


def test_bounds_equal_closed_forms():
    """``L 4^m / h^(2m)``, the factor and sign folded into L (docs/theory.md §2)."""
    a1, a2, a3 = DX(U, 1), DX(U, 2), DX(U, 3)
    assert _bound(pm_term(0, 1), grid=(sp.Rational(1, 2),)).value == 16
    assert _bound(3 * DX(U, 2), grid=(2,)).value == 3
    assert _bound(LAM * DX(U, 2), params={"lambda": sp.Rational(1, 2)}).value == 2
    assert _bound(pm_term(0, 2), grid=(sp.Rational(1, 2),)).value == 256
    assert _bound(DX(a3 / sp.sqrt(1 + a3 ** 2), 3), grid=(2,)).value == sp.Rational(64, 64)
    assert _bound(-DX(U, 4)).value == 16
    assert _bound(DX(-a2, 2)).value == 16                 # dxx(-dxx(u)) = -dxxxx(u)
    assert _bound(DZ(U, 2), "xyz", (1, 1, sp.Rational(1, 3))).value == 36
    assert _bound(DY(2 * DY(U, 1), 1), "xy", (1, sp.Rational(1, 2))).value == 32
    b = _bound(DX(a1 / sp.sqrt(1 + a1 ** 2 / LAM ** 2), 1))
    assert b.value == 4 and b.proven and b.tight


@pytest.mark.parametrize("expr,failure", [
    (-DX(U, 2), "negative"),                  # backward diffusion, as dx(-dx(u))
    (DX(-DX(U, 1), 1), "negative"),
    (DX(U, 4), "negative"),                   # dxxxx(u) = backward fourth order
    (DX(DX(U, 1) / sp.Abs(DX(U, 1)), 1), "unbounded"),                 # TV: g = 1/|s|
    (DX((1 - DX(U, 1) ** 2) / (1 + DX(U, 1) ** 2) * DX(U, 1), 1), "negative"),  # forward-backward
])
def test_no_bound_without_proof(expr, failure):
    b = _bound(expr)
    assert b.value is None and not b.proven and b.failure == failure


# ---------------------------------------------------------------- tightness and growth
def _step_growth(mod, u: np.ndarray, tau: float, steps: int) -> float:
    x = torch.tensor(u)
    n0 = float(x.norm())
    for _ in range(steps):
        x = x - tau * mod(x)
    return float(x.norm()) / n0


@pytest.mark.parametrize("expr,n,boundary", [
    (DX(U, 2), 32, "periodic"),
    (DX(U, 2), 32, "neumann"),
    (-DX(U, 4), 32, "dirichlet"),
    (DX(U, 2) - DX(U, 4), 32, "periodic"),   # mixed orders on one axis: the bounds add exactly
])
def test_linear_growth_above_the_bound(expr, n, boundary):
    """Linear terms: at tau = 2/bound no growth; at 1.02 x that the top eigenvector grows (the
    bound is attained up to cos^2(pi/2N)-type factors, under 2% here)."""
    ctx = make_ctx("x", (boundary,), (1,))
    terms = [FAMILY.recognise(t, ctx) for t in sp.Add.make_args(expr)]
    bound = float(sum(t.bound(ctx).value for t in terms))
    a = sum(binomial_matrix(n, t.order, boundary).T @ binomial_matrix(n, t.order, boundary)
            * float(t.g.L) for t in terms)
    lam, vec = np.linalg.eigh(a)
    assert bound * (1 + 1e-12) >= lam[-1] > bound / 1.02
    if boundary == "periodic":
        assert abs(lam[-1] - bound) < 1e-10 * bound   # the symbols all peak at theta = pi
    mods = [t.torch_term(ctx) for t in terms]

    def total(x):
        return sum(m(x) for m in mods)

    top = vec[:, -1].reshape(1, 1, n)
    assert _step_growth(total, top, 2 / bound, 1) <= 1 + 1e-12
    assert _step_growth(total, top, 1.02 * 2 / bound, 1) > 1.01
    noise = np.random.default_rng(0).standard_normal((1, 1, n))
    assert _step_growth(total, noise, 2 / bound, 300) <= 1
    assert _step_growth(total, noise, 1.02 * 2 / bound, 3000) > 10


def test_per_axis_pm_growth_at_small_amplitude():
    """Per-axis Perona-Malik on 32 x 32 (neumann, hx = 1, hy = 1/2): the sum bound 4 + 16 is
    attained as the amplitude goes to 0 (g -> sup g = 1), so a tiny multiple of the linear
    operator's top eigenvector grows at 1.02 x tau_max; at tau_max nothing grows."""
    ctx = make_ctx("xy", ("neumann", "neumann"), (1, sp.Rational(1, 2)), {"lambda": 1})
    tx, ty = FAMILY.recognise(pm_term(0, 1), ctx), FAMILY.recognise(pm_term(1, 1), ctx)
    bound = float(tx.bound(ctx).value + ty.bound(ctx).value)
    assert bound == 20
    shape = (1, 32, 32)
    a = sum(full_matrix(shape, ax, 1, "neumann", h).T @ full_matrix(shape, ax, 1, "neumann", h)
            for ax, h in ((0, 1.0), (1, 0.5)))
    lam, vec = np.linalg.eigh(a)
    mx, my = tx.torch_term(ctx), ty.torch_term(ctx)

    def total(x):
        return mx(x) + my(x)

    top = 1e-6 * vec[:, -1].reshape((1,) + shape)
    assert _step_growth(total, top, 1.02 * 2 / bound, 1) > 1.005
    assert _step_growth(total, top, 2 / bound, 1) <= 1 + 1e-12
    big = 10 * np.random.default_rng(1).standard_normal((1,) + shape)
    assert _step_growth(total, big, 2 / bound, 100) <= 1


def _lambda_max(shape, grid, lam, u) -> float:
    a = sum(reference(shape, ax, 1, "neumann", grid[ax], pm(lam), u) for ax in (0, 1))
    return float(np.linalg.eigvalsh(a)[-1])


def test_sum_bound_tightness_for_per_axis_pm():
    """How tight ``sum_i L_i ||D_i||^2`` is for per-axis Perona-Malik (lambda = 1, 16 x 16,
    neumann, h = 1, bound 8).  Over the frozen weights the bound is attained (G = I: the
    eigenvalues of Kronecker sums add; lambda_max = 8 cos^2(pi/32) = 7.923, ratio 0.990).  At a
    field u, lambda_max(A(u)) / bound measured for Gaussian noise of standard deviation a:
    a = 1e-3: 0.990, 0.1: 0.975, 1: 0.761, 10: 0.460 (the weights 1/(1 + (D u)^2) fall with the
    amplitude; where neighbouring differences happen to be small g stays near 1, so the ratio
    falls slowly).  The ratio never exceeds 1."""
    shape, grid = (1, 16, 16), (1.0, 1.0)
    rng = np.random.default_rng(7)
    ratios = {a: _lambda_max(shape, grid, 1.0, a * rng.standard_normal(shape)) / 8
              for a in (1e-3, 1e-1, 1.0, 10.0)}
    print("lambda_max(A(u)) / bound by amplitude:", {a: round(r, 4) for a, r in ratios.items()})
    assert all(r <= 1 for r in ratios.values())
    assert ratios[1e-3] == pytest.approx(math.cos(math.pi / 32) ** 2, abs=1e-4)
    assert ratios[1e-3] > ratios[1.0] > ratios[10.0]


# ------------------------------------------------------------------------------ recognition
def test_other_terms_are_not_this_family():
    ctx = make_ctx("xy", ("neumann", "neumann"))
    for expr in (LAPLACE(U), DIV(GRAD(U)), U - U ** 3, 2 * U):
        assert FAMILY.recognise(expr, ctx) is None


@pytest.mark.parametrize("expr,dims,match", [
    (DX(U, 1), "x", "not a diffusion term: it has odd order 1, that is transport"),
    (DX(U, 3), "x", "odd order 3"),
    (DY(U, 2), "x", "along y, but the field has 1 axis"),
    (DZ(U, 2), "xy", "along z"),
    (DX(DX(U, 1) * DY(U, 1), 1), "xy", "only through dx"),
    (DX(DX(U, 1) * U, 1), "xy", "only through dx"),
    (DX(DX(U, 1) ** 2, 1), "x", "is not odd in d"),
    (DX(sp.Symbol("f'input", real=True) * DX(U, 1), 1), "x", "not a param"),
    (sp.Symbol("f'input", real=True) * DX(U, 2), "x", "not a real constant"),
    (DX(sp.Integer(2), 1) * DX(U, 2), "x", "not a real constant"),
])
def test_malformed_terms_are_refused(expr, dims, match):
    ctx = make_ctx(dims, ("neumann",) * len(dims))
    with pytest.raises(PdeError, match=match):
        FAMILY.recognise(expr, ctx)


def test_central_stencil_is_refused():
    from pde2net.analyse import StencilChoice

    ctx = make_ctx("x", ("neumann",), stencil=StencilChoice("central"))
    with pytest.raises(PdeError, match="forward difference"):
        FAMILY.recognise(DX(U, 2), ctx)
    assert FAMILY.recognise(DX(U, 2), make_ctx("x", ("neumann",), stencil=StencilChoice("forward")))


# ----------------------------------------------------------------- end to end (compile_text)
PER_AXIS_3D = """pde mixed
param lambda = 0.3
field u(x, y, z)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx(g(dx(u)^2) * dx(u)) - dyyyy(u) + 0.5 * dzz(u)
grid hx = 1, hy = 2, hz = 0.5
boundary x: periodic, y: dirichlet, z: neumann
scheme explicit(tau = 0.05, steps = 3)
"""


def _example(boundary: str) -> str:
    from conftest import EXAMPLES

    text = (EXAMPLES / "per_axis.pde").read_text()
    return text.replace("boundary neumann", f"boundary {boundary}")


def _dense_steps(u: np.ndarray, terms: list, tau: float, steps: int) -> np.ndarray:
    """``u <- u - tau sum_i D_i^T diag(g_i((D_i u)^2)) D_i u``, ``terms``: (D, g) pairs."""
    x = u.ravel().copy()
    for _ in range(steps):
        x = x - tau * sum(d.T @ (g((d @ x) ** 2) * (d @ x)) for d, g in terms)
    return x.reshape(u.shape)


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet", "x: dirichlet, y: periodic"])
def test_per_axis_example_end_to_end(boundary, tmp_path):
    """examples/per_axis.pde through pde2net.compile_text: live module (float64, float32) and the
    standalone source against the dense iteration written here."""
    import pde2net
    from reference import load_source

    prog = pde2net.compile_text(_example(boundary))
    kinds = [k.strip().split(": ")[-1] for k in boundary.split(",")] if ":" in boundary else [boundary] * 2
    rep = prog.stability
    assert rep.verdict.lower().startswith("stable") and float(rep.tau_max) == 0.25
    shape = (1, 9, 12)
    u0 = np.random.default_rng(11).standard_normal(shape)
    terms = [(full_matrix(shape, ax, 1, kinds[ax], 1.0), pm(0.05)) for ax in (0, 1)]
    want = _dense_steps(u0, terms, 0.2, 4)
    x = torch.tensor(u0[None])
    live = prog.module(dtype=torch.float64, steps=4)
    assert rel(live(x).numpy()[0], want) < 1e-12
    assert rel(prog.module(dtype=torch.float32, steps=4)(x.float()).double().numpy()[0], want) < 1e-4
    mod = load_source(prog.source(), tmp_path)
    emitted = mod.Network(steps=4).double()
    assert torch.equal(emitted(x), live(x))


def test_mixed_orders_3d_end_to_end(tmp_path):
    """dx(PM) - dyyyy(u) + 0.5 dzz(u) in 3D with a boundary per axis: bound 4 + 16/16 + 0.5*16
    = 13, verdict and network against the dense iteration."""
    import pde2net
    from reference import load_source

    prog = pde2net.compile_text(PER_AXIS_3D)
    assert float(prog.stability.tau_max) == pytest.approx(2 / 13, rel=1e-15)
    shape = (1, 5, 6, 7)
    u0 = np.random.default_rng(12).standard_normal(shape)
    terms = [(full_matrix(shape, 0, 1, "periodic", 1.0), pm(0.3)),
             (full_matrix(shape, 1, 2, "dirichlet", 2.0), lambda s2: np.ones_like(s2)),
             (full_matrix(shape, 2, 1, "neumann", 0.5), lambda s2: 0.5 * np.ones_like(s2))]
    want = _dense_steps(u0, terms, 0.05, 3)
    x = torch.tensor(u0[None])
    live = prog.module(dtype=torch.float64)
    assert rel(live(x).numpy()[0], want) < 1e-12
    emitted = load_source(prog.source(), tmp_path).Network().double()
    assert torch.equal(emitted(x), live(x))


def test_program_run_equals_module():
    """``Program.run`` (block by block, as ``pde2net run``) gives the module's output."""
    import pde2net

    prog = pde2net.compile_text(_example("periodic"))
    x = torch.tensor(np.random.default_rng(14).standard_normal((1, 1, 8, 10)))
    net = prog.module(dtype=torch.float64, steps=6)
    assert torch.equal(prog.run(x, steps=6, every=2, net=prog.module(dtype=torch.float64)), net(x))


# ------------------------------------------------------------------ soundness (hypothesis)

BOUNDARIES = ("neumann", "periodic", "dirichlet")


@st.composite
def random_sums(draw):
    ndim = draw(st.integers(1, 2))
    kinds = tuple(draw(st.sampled_from(BOUNDARIES)) for _ in range(ndim))
    grid = tuple(draw(st.sampled_from([sp.Rational(1, 2), sp.Integer(1), sp.Integer(2)])) for _ in range(ndim))
    sizes = tuple(draw(st.integers(4, 6)) for _ in range(ndim))
    terms = []
    for _ in range(draw(st.integers(1, 3))):
        axis, m = draw(st.integers(0, ndim - 1)), draw(st.integers(1, 2))
        c = draw(st.sampled_from([sp.Rational(-3, 2), sp.Rational(1, 2), sp.Integer(1), sp.Integer(3)]))
        lam = draw(st.sampled_from([None, sp.Rational(1, 5), sp.Integer(2)]))
        terms.append((axis, m, c, lam))
    return ndim, kinds, grid, sizes, terms


def _term_expr(axis: int, m: int, c, lam) -> sp.Expr:
    sign = (-1) ** (m + 1)
    if lam is None:
        return sign * c * AXIS[axis](U, 2 * m)
    a = AXIS[axis](U, m)
    return sign * c * AXIS[axis](a / (1 + a ** 2 / lam ** 2), m)


@settings(max_examples=25, deadline=None)
@given(random_sums())
def test_soundness_of_sum_bounds(case):
    """Random sums of one-axis terms (orders 1-2, linear or Perona-Malik, factors of both signs,
    a boundary per axis): a proven bound is never below the dense lambda_max(A(u)) (the oracle:
    the references of this file, at three amplitudes); a "negative" failure has a negative
    eigenvalue at small amplitude (backward diffusion is real)."""
    ndim, kinds, grid, sizes, terms = case
    ctx = make_ctx("xy"[:ndim], kinds, grid)
    shape = (1,) + tuple(reversed(sizes))
    built = []
    for axis, m, c, lam in terms:
        if kinds[axis] == "neumann" and sizes[axis] <= m:
            continue
        t = FAMILY.recognise(_term_expr(axis, m, c, lam), ctx)
        g = (lambda s2, c=c: float(c) * np.ones_like(s2)) if lam is None else \
            (lambda s2, c=c, lam=lam: float(c) / (1 + s2 / float(lam) ** 2))
        built.append((t, full_matrix(shape, axis, m, kinds[axis], float(grid[axis])), g))
    if not built:
        return
    rng = np.random.default_rng(0)
    bounds = [t.bound(ctx) for t, _, _ in built]
    for a in (1e-4, 1.0, 30.0):
        u = a * rng.standard_normal(shape).ravel()
        mat = sum(d.T @ (g((d @ u) ** 2)[:, None] * d) for _, d, g in built)
        eig = np.linalg.eigvalsh(mat)
        if all(b.proven for b in bounds):
            assert eig[-1] <= float(sum(b.value for b in bounds)) * (1 + 1e-12)
        for (t, d, g), b in zip(built, bounds):
            if b.failure == "negative" and a == 1e-4:
                assert np.linalg.eigvalsh(d.T @ (g((d @ u) ** 2)[:, None] * d))[0] < 0
            assert b.failure in ("", "negative")


def test_neumann_axis_without_complete_rows_is_refused_at_run_time():
    """n <= m points along a neumann axis: D has no complete row; the network says so."""
    ctx = make_ctx("x", ("neumann",))
    mod = FAMILY.recognise(-DX(U, 4), ctx).torch_term(ctx)
    with pytest.raises(ValueError, match="more than 2 points"):
        mod(torch.zeros(1, 1, 2))
    assert mod(torch.zeros(1, 1, 3)).shape == (1, 1, 3)


def test_channels_end_to_end(tmp_path):
    """``channels 3``: every channel gets its own weights (block diagonal, identical bound)."""
    import pde2net
    from reference import load_source

    text = _example("dirichlet").replace("field u(x, y)", "field u(x, y) channels 3")
    prog = pde2net.compile_text(text)
    assert float(prog.stability.tau_max) == 0.25
    shape = (3, 7, 8)
    u0 = np.random.default_rng(15).standard_normal(shape)
    terms = [(full_matrix(shape, ax, 1, "dirichlet", 1.0), pm(0.05)) for ax in (0, 1)]
    want = _dense_steps(u0, terms, 0.2, 3)
    x = torch.tensor(u0[None])
    live = prog.module(dtype=torch.float64, steps=3)
    assert rel(live(x).numpy()[0], want) < 1e-12
    assert torch.equal(load_source(prog.source(), tmp_path).Network(steps=3).double()(x), live(x))
