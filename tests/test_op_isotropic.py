"""The isotropic family ``c div( g(|grad W|^2) grad u )``, W = u or ``gauss(u, sigma)``, in 2D and
3D, with 1 and 3 channels, against a dense NumPy float64 reference written here from the
mathematics (docs/theory.md §2, §10, §12):

- D_a: the forward difference along axis a, one row per point of the common flux grid, assembled
  entry by entry (neumann: zero flux across the far edge; periodic: wrap; dirichlet: u = 0 outside
  on every side, n + 1 rows, and a zero ghost row of the other components);
- G = g(sum_c sum_a (D_a W_c)^2) per flux point, W_c the channel smoothed by the separable sampled
  Gaussian (truncated at 3 sigma, renormalised, the field extended by the axis's boundary rule);
- A = blockdiag_c( sum_a D_a^T G D_a ).

The runtime term, the emitted source and the family's own ``dense`` must equal it; the bound must
be the closed form ``L sum_d 4/h_d^2``; explicit steps at 1.02 x the bound must grow (power
iteration), and at the bound must not.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import torch
from scipy import sparse

import pde2net

from pde2net.analyse import DIV, DX, GRAD, LAPLACE, NORM, param_symbol
from pde2net.errors import PdeError, Source
from pde2net.operators import base
from pde2net.operators.isotropic import IsotropicFamily
from reference import load_source

ROOT = Path(__file__).resolve().parents[1]
U = sp.Symbol("u")
LAM = param_symbol("lambda")
FAMILY = IsotropicFamily()


# ------------------------------------------------------------------------- the reference
def diff_rows(n: int, kind: str, h: float) -> list[dict]:
    """The rows of the 1D forward difference on the flux grid, as {node: weight}: n rows
    (neumann: the last row zero, no flux across the edge; periodic: row i = u_(i+1 mod n) - u_i)
    or n + 1 rows (dirichlet: row r = u_r - u_(r-1), u = 0 outside)."""
    rows = []
    if kind == "dirichlet":
        for r in range(n + 1):
            row = {}
            if r < n:
                row[r] = 1.0 / h
            if r >= 1:
                row[r - 1] = -1.0 / h
            rows.append(row)
        return rows
    for i in range(n):
        if kind == "periodic":
            rows.append({(i + 1) % n: 1.0 / h, i: -1.0 / h} if n > 1 else {})
        else:
            rows.append({i + 1: 1.0 / h, i: -1.0 / h} if i + 1 < n else {})
    return rows


def carry_rows(n: int, kind: str) -> list[dict]:
    """The flux grid along an axis that is not the difference's own: the node itself, after a
    zero ghost row first when the axis is dirichlet."""
    rows = [{i: 1.0} for i in range(n)]
    return ([{}] + rows) if kind == "dirichlet" else rows


def grad_matrix(space: tuple, bnds: tuple, h: tuple, axis: int) -> sparse.csr_matrix:
    """D_axis from the C-order field (x last) to the C-order flux grid, entry by entry."""
    ndim = len(space)
    per_axis = []
    for a in range(ndim):  # a = 0 is x, the last numpy axis
        n = space[ndim - 1 - a]
        per_axis.append(diff_rows(n, bnds[a], h[a]) if a == axis else carry_rows(n, bnds[a]))
    flux_shape = tuple(len(per_axis[ndim - 1 - k]) for k in range(ndim))
    rows, cols, vals = [], [], []
    for p in itertools.product(*(range(m) for m in flux_shape)):
        row = np.ravel_multi_index(p, flux_shape)
        factors = [per_axis[ndim - 1 - k][p[k]] for k in range(ndim)]
        for combo in itertools.product(*(f.items() for f in factors)):
            rows.append(row)
            cols.append(np.ravel_multi_index(tuple(c[0] for c in combo), space))
            vals.append(math.prod(c[1] for c in combo))
    # duplicates (periodic n = 1, 2) are summed by the conversion, as the matrix entries add
    return sparse.coo_matrix((vals, (rows, cols)), shape=(math.prod(flux_shape), math.prod(space))).tocsr()


def smoothing_matrix(n: int, kind: str, sigma: float, h: float) -> np.ndarray:
    """The 1D sampled Gaussian exp(-(kh)^2 / 2 sigma^2), |k h| <= 3 sigma, sum 1, as an n x n
    matrix; neighbours outside are mirrored (about the left edge u_(-1-k) = u_k, then about the
    right edge u_(n+k) = u_(n-1-k), then clamped to the grid: kernels longer than the grid),
    wrapped, or zero."""
    r = int(math.floor(3 * sigma / h))
    w = np.array([math.exp(-(k * h) ** 2 / (2 * sigma ** 2)) for k in range(-r, r + 1)])
    w /= w.sum()
    k = np.zeros((n, n))
    for i in range(n):
        for j, wj in zip(range(i - r, i + r + 1), w):
            if kind == "periodic":
                k[i, j % n] += wj
            elif kind == "dirichlet":
                if 0 <= j < n:
                    k[i, j] += wj
            else:
                jj = -1 - j if j < 0 else j
                jj = 2 * n - 1 - jj if jj >= n else jj
                k[i, min(max(jj, 0), n - 1)] += wj
    return k


def smooth(u: np.ndarray, sigma: float, h: tuple, bnds: tuple) -> np.ndarray:
    """K_sigma * u for one channel (x the last axis)."""
    out = u
    for a in range(u.ndim):
        ax = u.ndim - 1 - a
        k = smoothing_matrix(u.shape[ax], bnds[a], sigma, h[a])
        out = np.moveaxis(np.tensordot(k, np.moveaxis(out, ax, 0), axes=1), 0, ax)
    return out


def reference_matrix(u: np.ndarray, g, h: tuple, bnds: tuple, sigma=None) -> np.ndarray:
    """A = blockdiag_c(sum_a D_a^T G D_a), G = g(sum_c |D W_c|^2): u has shape (C, *space)."""
    space = u.shape[1:]
    ds = [grad_matrix(space, bnds, h, a) for a in range(len(space))]
    w = u if sigma is None else np.stack([smooth(c, sigma, h, bnds) for c in u])
    s2 = np.zeros(ds[0].shape[0])
    for c in w:
        for d in ds:
            s2 += (d @ c.ravel()) ** 2
    gv = sparse.diags(g(s2))
    block = sum(d.T @ gv @ d for d in ds).toarray()
    return np.kron(np.eye(u.shape[0]), block)


def pm(c: float, lam: float):
    return lambda s2: c / (1.0 + s2 / lam ** 2)


# ------------------------------------------------------------------------------- contexts
def context(space: tuple, bnds: tuple, h: tuple, channels: int = 1, lam=sp.Rational(1, 2),
            **extra) -> base.Context:
    dims = ("x", "y", "z")[:len(space)]
    return base.Context(u=U, dims=dims, channels=channels, grid=tuple(sp.nsimplify(x) for x in h),
                        boundaries=bnds, params={"lambda": lam}, param_symbols={"lambda": LAM},
                        inputs=extra.get("inputs", {}), tensors=extra.get("tensors", {}),
                        stencil=None, source=Source("equation dt(u) = ...", "t.pde"), pos=None)


def pm_term(c=2, sigma=None):
    """c * div( 1/(1 + norm(grad(W))^2/lambda^2) * grad(u) )."""
    w = U if sigma is None else base.GAUSS(U, sigma)
    return c * DIV(1 / (1 + NORM(GRAD(w)) ** 2 / LAM ** 2) * GRAD(U))


def standalone(term, ctx, tmp_path, name="iso_gen"):
    """The emitted source of the term, put together as the standalone source does: the runtime
    files inlined (their relative imports dropped), params as constants, the printed diffusivity."""
    ts = term.source(ctx, {"lambda": "P_LAMBDA"}, "t0_")
    lines = ["from __future__ import annotations", "import math", "import torch"]
    for mod in ts.runtime:
        text = (ROOT / "pde2net" / "operators" / "runtime" / f"{mod}.py").read_text()
        lines += [ln for ln in text.splitlines()
                  if not ln.startswith(("from __future__", "from .", "import math", "import torch"))]
    lines.append(f"P_LAMBDA = {float(ctx.params['lambda'])!r}")
    lines += list(ts.functions)
    lines.append(f"TERM = {ts.expression}")
    return load_source("\n".join(lines) + "\n", tmp_path, name).TERM


# 2D: (NY, NX) with hx = 1, hy = 1/2; 3D: (NZ, NY, NX) with hx = 1, hy = 2, hz = 3/2
CASES_2D = [(("neumann", "neumann"), (7, 6)), (("periodic", "periodic"), (7, 6)),
            (("dirichlet", "dirichlet"), (7, 6)), (("periodic", "dirichlet"), (7, 6))]
CASES_3D = [(("neumann",) * 3, (5, 4, 6)), (("periodic",) * 3, (5, 4, 6)),
            (("dirichlet",) * 3, (5, 4, 6)), (("dirichlet", "neumann", "periodic"), (5, 4, 6))]
H = {2: (1.0, 0.5), 3: (1.0, 2.0, 1.5)}


def _cases():
    for bnds, shape in CASES_2D + CASES_3D:
        for channels in (1, 3):
            for sigma in (None, 1):
                yield bnds, shape, channels, sigma


@pytest.mark.parametrize("bnds,shape,channels,sigma", list(_cases()))
def test_network_equals_dense_reference(bnds, shape, channels, sigma, tmp_path):
    """Live runtime term (float64 and float32), emitted source and the family's dense matrix
    against the reference, every boundary, 2D and 3D, 1 and 3 channels, with/without gauss."""
    h = H[len(shape)]
    ctx = context(shape, bnds, h, channels)
    term = FAMILY.recognise(pm_term(2, sigma), ctx)
    assert term is not None and term.family == "isotropic"
    rng = np.random.default_rng(len(shape) * 10 + channels)
    u = rng.standard_normal((channels,) + shape) * 0.7
    a_ref = reference_matrix(u, pm(2.0, 0.5), h, bnds, sigma)
    want = (a_ref @ u.ravel()).reshape(u.shape)
    scale = np.abs(want).max()

    np.testing.assert_allclose(term.dense(ctx, u), a_ref, rtol=0, atol=1e-12 * np.abs(a_ref).max())

    live = term.torch_term(ctx)
    src = standalone(term, ctx, tmp_path)
    for mod in (live, src):
        got = mod(torch.tensor(u[None]))[0].numpy()
        assert np.abs(got - want).max() <= 1e-12 * scale
        g = mod.weights(torch.tensor(u[None]))
        diag = mod.frozen_diagonal(g).expand((1, channels) + shape)[0].numpy().ravel()
        assert np.abs(diag - np.diag(a_ref)).max() <= 1e-12 * np.abs(np.diag(a_ref)).max()
        got32 = mod(torch.tensor(u[None], dtype=torch.float32))[0].numpy()
        assert got32.dtype == np.float32
        assert np.abs(got32 - want).max() <= 2e-5 * scale


@pytest.mark.parametrize("kind", ["neumann", "periodic", "dirichlet"])
def test_gauss_longer_than_grid(kind, tmp_path):
    """sigma = 1 on h = 1/2: the kernel (radius 6) is longer than the 4 x 5 grid; the boundary
    rule still holds (mirror once, then clamp; wrap; zero)."""
    shape, h = (4, 5), (0.5, 0.5)
    ctx = context(shape, (kind, kind), h, 1)
    term = FAMILY.recognise(pm_term(1, 1), ctx)
    u = np.random.default_rng(5).standard_normal((1,) + shape)
    a_ref = reference_matrix(u, pm(1.0, 0.5), h, (kind, kind), 1.0)
    want = (a_ref @ u.ravel()).reshape(u.shape)
    for mod in (term.torch_term(ctx), standalone(term, ctx, tmp_path)):
        got = mod(torch.tensor(u[None]))[0].numpy()
        assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    np.testing.assert_allclose(term.dense(ctx, u), a_ref, rtol=0, atol=1e-12 * np.abs(a_ref).max())


@pytest.mark.parametrize("spelling", ["laplace", "div_grad"])
@pytest.mark.parametrize("bnds,shape", CASES_2D[:3] + CASES_3D[:3])
def test_linear_term(spelling, bnds, shape, tmp_path):
    """c laplace(u) = c div(grad(u)): D^T (c I) D; frozen apply with the weights of any field."""
    h = H[len(shape)]
    ctx = context(shape, bnds, h, 3)
    core = LAPLACE(U) if spelling == "laplace" else DIV(GRAD(U))
    term = FAMILY.recognise(sp.Rational(3, 4) * core, ctx)
    assert term.linear
    u = np.random.default_rng(1).standard_normal((3,) + shape)
    a_ref = reference_matrix(u, lambda s2: np.full_like(s2, 0.75), h, bnds)
    want = (a_ref @ u.ravel()).reshape(u.shape)
    for mod in (term.torch_term(ctx), standalone(term, ctx, tmp_path)):
        got = mod(torch.tensor(u[None]))[0].numpy()
        assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    np.testing.assert_allclose(term.dense(ctx, u), a_ref, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("h,c,sigma", [((1, 1), 1, None), ((1, sp.Rational(1, 2)), 2, 1),
                                       ((sp.Rational(1, 3), 2, sp.Rational(3, 2)), sp.Rational(1, 2), None),
                                       ((1, 1, 1), 3, sp.Rational(3, 2))])
def test_bound_is_closed_form(h, c, sigma):
    """lambda_max bound = L sum_d 4/h_d^2 with L = sup c g = c, exact."""
    shape = (4,) * len(h)
    ctx = context(shape, ("neumann",) * len(h), h, 3)
    b = FAMILY.recognise(pm_term(c, sigma), ctx).bound(ctx)
    assert b.proven and b.failure == "" and b.tight
    assert sp.simplify(b.value - c * sum(sp.Integer(4) / sp.nsimplify(x) ** 2 for x in h)) == 0
    assert "docs/theory.md §2" in b.section
    assert ("§10" in b.section) == (sigma is not None)
    assert all(hyp["holds"] for hyp in b.hypotheses)


@pytest.mark.parametrize("term,failure", [
    (-LAPLACE(U), "negative"),
    (-DIV(1 / (1 + NORM(GRAD(U)) ** 2) * GRAD(U)), "negative"),
    (DIV((1 - NORM(GRAD(U)) ** 2) / (1 + NORM(GRAD(U)) ** 2) * GRAD(U)), "negative"),
    (DIV(1 / NORM(GRAD(U)) * GRAD(U)), "unbounded"),
])
def test_no_bound_without_proven_range(term, failure):
    """Backward diffusion (c g < 0 somewhere) and sup g = oo give no value."""
    ctx = context((4, 4), ("neumann", "neumann"), (1, 1))
    b = FAMILY.recognise(term, ctx).bound(ctx)
    assert b.value is None and not b.proven and b.failure == failure


@pytest.mark.parametrize("bnds,shape", CASES_2D + CASES_3D)
@pytest.mark.parametrize("sigma", [None, 1])
def test_bound_holds_for_random_fields(bnds, shape, sigma):
    """lambda_max(A(u)) <= bound for rough fields of several amplitudes (dense eigenvalues)."""
    h = H[len(shape)]
    ctx = context(shape, bnds, h, 1)
    bound = float(FAMILY.recognise(pm_term(2, sigma), ctx).bound(ctx).value)
    rng = np.random.default_rng(7)
    for amp in (1e-3, 0.3, 10.0):
        u = amp * rng.standard_normal((1,) + shape)
        lam = np.linalg.eigvalsh(reference_matrix(u, pm(2.0, 0.5), h, bnds, sigma))
        assert lam.min() >= -1e-10 and lam.max() <= bound * (1 + 1e-12)


@pytest.mark.parametrize("kind,n", [("neumann", 16), ("dirichlet", 16), ("periodic", 15), ("periodic", 16)])
def test_bound_strict_by_closed_cosine_factor(kind, n):
    """The finite-grid value ||D||^2 = sum_d (4/h_d^2) cos^2(pi/(2M)): M = N (neumann, odd
    periodic), N + 1 (dirichlet); = 4/h^2 for even periodic N: strict except even periodic."""
    h = (1.0, 0.5)
    bnds = (kind, kind)
    lam = np.linalg.eigvalsh(reference_matrix(np.zeros((1, n, n)), lambda s2: np.ones_like(s2), h, bnds)).max()
    m = n + 1 if kind == "dirichlet" else n
    factor = 1.0 if (kind == "periodic" and n % 2 == 0) else math.cos(math.pi / (2 * m)) ** 2
    assert lam == pytest.approx(sum(4 / x ** 2 for x in h) * factor, rel=1e-12)


def _power_growth(step, v: np.ndarray, iters: int) -> float:
    """``||step(v)|| / ||v||`` after ``iters`` normalised power iterations (for a symmetric frozen
    step it increases towards the spectral radius)."""
    ratio = 0.0
    for _ in range(iters):
        w = step(v)
        ratio = np.linalg.norm(w) / np.linalg.norm(v)
        v = w / np.linalg.norm(w) * np.linalg.norm(v)
    return ratio


def _checkerboard(shape: tuple) -> np.ndarray:
    return np.fromfunction(lambda *i: (-1.0) ** sum(i), shape)


@pytest.mark.parametrize("bnds,shape,h", [
    (("neumann",) * 2, (24, 24), (1.0, 1.0)), (("dirichlet",) * 2, (24, 24), (1.0, 0.5)),
    (("periodic",) * 2, (16, 16), (1.0, 1.0)), (("dirichlet", "periodic"), (20, 16), (0.5, 1.0)),
    (("periodic",) * 3, (8, 8, 8), (1.0, 0.5, 1.0)),
    pytest.param(("neumann",) * 3, (14, 14, 14), (1.0, 1.0, 1.0), marks=pytest.mark.slow),
    pytest.param(("periodic", "dirichlet", "neumann"), (14, 14, 16), (1.0, 1.0, 1.0), marks=pytest.mark.slow)])
def test_linear_growth_above_bound(bnds, shape, h):
    """Linear case, dense frozen matrix: at tau = 1.02 x 2/bound the explicit step grows (power
    iteration finds ||M v|| > ||v||), at tau = 2/bound it does not (||M|| <= 1)."""
    ctx = context(shape, bnds, h, 1)
    term = FAMILY.recognise(LAPLACE(U), ctx)
    bound = float(term.bound(ctx).value)
    assert bound == pytest.approx(sum(4 / x ** 2 for x in h), rel=1e-15)
    a = reference_matrix(np.zeros((1,) + shape), lambda s2: np.ones_like(s2), h, bnds)
    v0 = _checkerboard(shape).ravel() + 0.01 * np.random.default_rng(0).standard_normal(a.shape[0])
    over = _power_growth(lambda v: v - 1.02 * 2 / bound * (a @ v), v0, 300)
    at = _power_growth(lambda v: v - 2 / bound * (a @ v), v0, 300)
    assert over > 1.0
    assert at <= 1.0 + 1e-12


@pytest.mark.parametrize("bnds", [("periodic", "periodic"), ("neumann", "neumann")])
@pytest.mark.parametrize("sigma,amplitude", [(1, 1e-2), (1, 1.0), (2, 10.0)])
def test_catte_growth_above_bound_at_moderate_amplitude(bnds, sigma, amplitude):
    """Catte through the runtime network, nonlinear steps u - tau A(u) u renormalised to the
    amplitude (PM, lambda = 1): growth at 1.02 x the bound also at amplitudes where plain PM
    is far from its sup (the Gaussian hides the checkerboard from g: its truncated transfer at
    the Nyquist frequency is 0.014 for sigma = 1, 7.5e-4 for sigma = 2; docs/theory.md §10).
    Without presmoothing the same steps do not grow at amplitude >= 1 (g = 1/(1 + 8 a^2) there)."""
    shape, h = (24, 24), (1.0, 1.0)
    ctx = context(shape, bnds, h, 1, lam=sp.Integer(1))
    u0 = amplitude * _checkerboard((1, 1) + shape)

    def growth(s):
        term = FAMILY.recognise(pm_term(1, s), ctx)
        net = term.torch_term(ctx)
        tau = 1.02 * 2 / float(term.bound(ctx).value)
        u = torch.tensor(u0)
        for _ in range(150):
            nxt = u - tau * net(u)
            ratio = float(nxt.norm() / u.norm())
            u = nxt / nxt.norm() * float(np.linalg.norm(u0))
        return ratio

    assert growth(sigma) > 1.0
    if amplitude >= 1.0:
        assert growth(None) < 1.0


# ------------------------------------------------------------------------------ recognition
def test_recognises_only_its_forms():
    ctx = context((4, 4), ("neumann", "neumann"), (1, 1),
                  tensors={sp.Symbol("T"): base.TensorDef("T", "matrix", (), None)})
    assert FAMILY.recognise(-LAPLACE(1 / (1 + LAPLACE(U) ** 2) * LAPLACE(U)), ctx) is None
    assert FAMILY.recognise(DIV(sp.Symbol("T") * GRAD(U)), ctx) is None
    assert FAMILY.recognise(DX(1 / (1 + DX(U, 1) ** 2) * DX(U, 1), 1), ctx) is None
    assert FAMILY.recognise(U - U ** 3, ctx) is None
    t = FAMILY.recognise(LAM * DIV(GRAD(U)), ctx)
    assert t is not None and t.linear and t.bound(ctx).value == 4 * sp.Rational(1, 2) * 2
    # a sum inside div with the common factor grad(u): g + 1 with sup 2
    t = FAMILY.recognise(DIV(1 / (1 + NORM(GRAD(U)) ** 2) * GRAD(U) + GRAD(U)), ctx)
    assert t is not None and not t.linear and t.bound(ctx).value == 2 * 8


@pytest.mark.parametrize("term", [
    DIV(1 / (1 + NORM(GRAD(base.GAUSS(U, -1))) ** 2) * GRAD(U)),          # sigma <= 0
    DIV(1 / (1 + NORM(GRAD(U)) ** 2 + NORM(GRAD(base.GAUSS(U, 1))) ** 2) * GRAD(U)),  # two gradients
    DIV(sp.Symbol("f") * GRAD(U)),                                          # an input in g
    DIV(1 / (1 + NORM(U) ** 2) * GRAD(U)),                                  # not a gradient norm
    DIV(1 / (1 + NORM(GRAD(U)) ** 2) * GRAD(base.GAUSS(U, 1))),             # D acts on u only
    sp.Symbol("f") * LAPLACE(U),                                            # a field as the factor
])
def test_malformed_terms_are_errors(term):
    ctx = context((4, 4), ("neumann", "neumann"), (1, 1), inputs={"f": sp.Symbol("f")})
    with pytest.raises(PdeError):
        FAMILY.recognise(term, ctx)


# ------------------------------------------------------------------ end to end (compile_text)
def _example(name: str, **replace: str) -> str:
    """An example's text with whole statement lines replaced (smaller grids for dense checks)."""
    lines = (ROOT / "examples" / f"{name}.pde").read_text().splitlines()
    out = []
    for ln in lines:
        word = ln.split(" ", 1)[0]
        out.append(replace.get(word, ln))
    return "\n".join(out) + "\n"


def _explicit_reference(u0: np.ndarray, g, h, bnds, sigma, tau: float, steps: int) -> np.ndarray:
    """``steps`` explicit steps ``u <- u - tau A(u) u``, A re-assembled from the current u."""
    u = u0.copy()
    for _ in range(steps):
        u = u - tau * (reference_matrix(u, g, h, bnds, sigma) @ u.ravel()).reshape(u.shape)
    return u


BOUNDARY_LINES = {
    2: [("boundary neumann", ("neumann",) * 2), ("boundary periodic", ("periodic",) * 2),
        ("boundary dirichlet", ("dirichlet",) * 2), ("boundary x: periodic, y: dirichlet", ("periodic", "dirichlet"))],
    3: [("boundary neumann", ("neumann",) * 3), ("boundary periodic", ("periodic",) * 3),
        ("boundary dirichlet", ("dirichlet",) * 3),
        ("boundary x: dirichlet, y: neumann, z: periodic", ("dirichlet", "neumann", "periodic"))],
}


def _e2e_cases():
    # (example, statement replacements, space shape (slowest first), channels, h, sigma, g)
    pm05 = pm(1.0, 0.05)
    for line, bnds in BOUNDARY_LINES[2]:
        yield ("catte", {"size": "size NX = 9, NY = 8", "boundary": line,
                         "scheme": "scheme explicit(tau = 0.2, steps = 3)"}, (8, 9), 1, (1.0, 1.0), 1.0, pm05, bnds)
        yield ("color_pm", {"size": "size NX = 7, NY = 6", "boundary": line,
                            "scheme": "scheme explicit(tau = 0.2, steps = 3)"}, (6, 7), 3, (1.0, 1.0), None, pm05, bnds)
    for line, bnds in BOUNDARY_LINES[3]:
        yield ("heat_3d", {"size": "size NX = 6, NY = 5, NZ = 4", "boundary": line,
                           "grid": "grid hx = 1, hy = 0.5, hz = 2",
                           "scheme": "scheme explicit(tau = auto, steps = 3)"},
               (4, 5, 6), 1, (1.0, 0.5, 2.0), None, lambda s2: np.ones_like(s2), bnds)


@pytest.mark.parametrize("name,replace,shape,channels,h,sigma,g,bnds", list(_e2e_cases()),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_examples_end_to_end(name, replace, shape, channels, h, sigma, g, bnds, tmp_path):
    """The examples through compile_text: report (tau_max = 2 / (L sum 4/h^2)), live module and
    standalone source against explicit steps with the dense reference, float64 and float32."""
    prog = pde2net.compile_text(_example(name, **replace), f"{name}.pde")
    bound = sum(4 / x ** 2 for x in h)
    report = prog.stability
    assert report.stable and float(report.tau_max) == pytest.approx(2 / bound, rel=1e-15)
    tau = float(report.tau) if name == "heat_3d" else 0.2
    assert tau == pytest.approx(2 / bound if name == "heat_3d" else 0.2, rel=1e-15)
    rng = np.random.default_rng(3)
    u0 = rng.uniform(0, 1, (channels,) + shape)
    want = _explicit_reference(u0, g, h, bnds, sigma, tau, 3)
    scale = np.abs(want).max()
    mod = load_source(prog.source(), tmp_path, f"e2e_{name}")
    for net in (prog.module(dtype=torch.float64), mod.Network().double()):
        got = net(torch.tensor(u0[None]))[0].numpy()
        assert np.abs(got - want).max() <= 1e-12 * scale
    got32 = prog.module()(torch.tensor(u0[None], dtype=torch.float32))[0].numpy()
    assert np.abs(got32 - want).max() <= 1e-5 * scale


@pytest.mark.parametrize("name", ["catte", "color_pm", "heat_3d"])
def test_examples_compile_stable(name):
    """The bundled examples as written: stable, with the closed-form bound."""
    prog = pde2net.load(ROOT / "examples" / f"{name}.pde")
    h = (1.0,) * (3 if name == "heat_3d" else 2)
    assert prog.stability.stable
    assert float(prog.stability.tau_max) == pytest.approx(2 / sum(4 / x ** 2 for x in h), rel=1e-15)


@pytest.mark.parametrize("equation,verdict,words", [
    ("-laplace(u)", "not stable", "backward diffusion"),
    ("div( (1 - norm(grad(gauss(u, 1)))^2) / (1 + norm(grad(gauss(u, 1)))^2) * grad(u) )", "not stable",
     "backward diffusion"),
    ("div( 1 / norm(grad(u)) * grad(u) )", "not stable", "unbounded"),
])
def test_no_stable_verdict_without_bound_3d(equation, verdict, words):
    """3D specs whose diffusivity is not in [0, L]: the report says why, never "stable"."""
    text = _example("heat_3d", equation=f"equation dt(u) = {equation}",
                    scheme="scheme explicit(tau = 0.1, steps = 3)")
    report = pde2net.compile_text(text, "bad.pde").stability
    assert not report.stable and report.verdict == verdict and words in report.reason


def test_step_above_bound_is_not_stable():
    text = _example("heat_3d", scheme="scheme explicit(tau = 0.17, steps = 3)")
    report = pde2net.compile_text(text, "big.pde").stability
    assert not report.stable and report.verdict == "not stable"


# ----------------------------------------------------------------- soundness (property test)
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DIFFUSIVITIES = {  # name -> (sympy g(r) with r = norm(grad(W)), NumPy g(s2), negative somewhere)
    "pm": (lambda r: 1 / (1 + r ** 2 / LAM ** 2), lambda s2, l: 1 / (1 + s2 / l ** 2), False),
    "charbonnier": (lambda r: 1 / sp.sqrt(1 + r ** 2 / LAM ** 2), lambda s2, l: 1 / np.sqrt(1 + s2 / l ** 2), False),
    "forward_backward": (lambda r: (1 - r ** 2 / LAM ** 2) / (1 + r ** 2 / LAM ** 2),
                         lambda s2, l: (1 - s2 / l ** 2) / (1 + s2 / l ** 2), True),
    "linear": (lambda r: sp.Integer(1), lambda s2, l: np.ones_like(s2), False),
}


@settings(max_examples=12, deadline=None)
@given(ndim=st.sampled_from([2, 3]), data=st.data(),
       kind=st.sampled_from(sorted(DIFFUSIVITIES)), c=st.sampled_from([sp.Rational(1, 2), 2, -1]),
       lam=st.sampled_from([sp.Rational(1, 10), sp.Integer(1)]), sigma=st.sampled_from([None, 1]),
       amplitude=st.sampled_from([1e-3, 1.0, 30.0]))
def test_soundness_no_wrong_stable(ndim, data, kind, c, lam, sigma, amplitude):
    """0 wrong verdicts: a proven bound is >= the dense lambda_max of A(u) (and A is PSD); a
    diffusivity negative somewhere (negative factor, forward-backward) never gets a bound."""
    shape = tuple(data.draw(st.integers(4, 6 if ndim == 2 else 4)) for _ in range(ndim))
    bnds = tuple(data.draw(st.sampled_from(["neumann", "periodic", "dirichlet"])) for _ in range(ndim))
    h = tuple(data.draw(st.sampled_from([1.0, 0.5, 2.0])) for _ in range(ndim))
    ctx = context(shape, bnds, h, data.draw(st.sampled_from([1, 3])), lam=lam)
    sym_g, np_g, negative = DIFFUSIVITIES[kind]
    w = U if sigma is None else base.GAUSS(U, sigma)
    term = FAMILY.recognise(c * DIV(sym_g(NORM(GRAD(w))) * GRAD(U)), ctx)
    b = term.bound(ctx)
    if negative or c < 0:
        assert b.value is None and b.failure == "negative"
        return
    assert b.proven and b.value is not None
    u = amplitude * np.random.default_rng(0).standard_normal((ctx.channels,) + shape)
    a = reference_matrix(u, lambda s2: float(c) * np_g(s2, float(lam)), h, bnds,
                         None if sigma is None else float(sigma))
    ev = np.linalg.eigvalsh(a)
    assert ev.min() >= -1e-9 * max(1.0, ev.max())
    assert ev.max() <= float(b.value) * (1 + 1e-12)


@pytest.mark.parametrize("equation,param,words", [
    ("div( g(norm(grad(gauss(u, sigma)))^2) * grad(u) )", "param sigma = -1", "sigma (sigma = -1)"),
    ("div( g(norm(grad(u))^2) * grad(gauss(u, 1)) )", "", "must be g(norm(grad(u))^2) * grad(u)"),
    ("div( g(norm(grad(u))^2 + norm(grad(gauss(u, 1)))^2) * grad(u) )", "", "two different gradients"),
])
def test_malformed_specs_point_at_the_equation(equation, param, words):
    """Bad input through compile_text: a PdeError at the equation's line, saying what is expected."""
    text = (f"pde bad\n{param}\nfield u(x, y, z)\ndiffusivity g(s2) = 1 / (1 + s2)\n"
            f"equation dt(u) = {equation}\nsize NX = 4, NY = 4, NZ = 4\nscheme explicit(tau = 0.1, steps = 2)\n")
    with pytest.raises(PdeError) as err:
        pde2net.compile_text(text, "bad.pde")
    assert words in str(err.value) and "bad.pde:5:" in str(err.value)


def test_implicit_cg_solves_the_dense_system():
    """Catte in 3D, semi-implicit: each step solves (I + tau A(u^k)) u^(k+1) = u^k (CG from 0,
    enough iterations to converge) - compared with numpy.linalg.solve on the reference matrix."""
    text = _example("catte", field="field u(x, y, z)", size="size NX = 5, NY = 4, NZ = 3",
                    boundary="boundary x: dirichlet, y: neumann, z: periodic",
                    scheme="scheme implicit(tau = 3, steps = 2, iterations = 120)")
    prog = pde2net.compile_text(text, "implicit.pde")
    assert prog.stability.stable and prog.stability.unconditional
    u0 = np.random.default_rng(11).uniform(0, 1, (1, 3, 4, 5))
    u = u0.copy()
    for _ in range(2):
        a = reference_matrix(u, pm(1.0, 0.05), (1.0, 1.0, 1.0), ("dirichlet", "neumann", "periodic"), 1.0)
        u = np.linalg.solve(np.eye(a.shape[0]) + 3.0 * a, u.ravel()).reshape(u.shape)
    got = prog.module(dtype=torch.float64)(torch.tensor(u0[None]))[0].numpy()
    assert np.abs(got - u).max() <= 1e-9 * np.abs(u).max()


@pytest.mark.parametrize("sigma,linear", [(None, True), (None, False), (1, False)])
def test_traced_term_keeps_dynamic_shapes(sigma, linear):
    """torch.jit.trace of the runtime term on one grid, run on another: the same values as the
    live term there (no shape is frozen into the graph; ONNX/TorchScript export rely on it)."""
    bnds = ("dirichlet", "neumann", "periodic")
    ctx = context((4, 5, 6), bnds, (1.0, 1.0, 1.0), 2)
    term = FAMILY.recognise(LAPLACE(U) if linear else pm_term(1, sigma), ctx).torch_term(ctx)
    rng = np.random.default_rng(2)
    a = torch.tensor(rng.standard_normal((1, 2, 4, 5, 6)))
    b = torch.tensor(rng.standard_normal((3, 2, 7, 6, 9)))
    with torch.no_grad():
        traced = torch.jit.trace(term, (a,), check_trace=False)
    assert torch.allclose(traced(b), term(b), rtol=1e-13, atol=1e-13)


def test_colour_catte_with_data_term_end_to_end(tmp_path):
    """A sum with the data term: dt(u) = div(g(|grad u_sigma|^2) grad u) + alpha (f - u) on a
    colour image with an input f, explicit steps u - tau (A(u) u + alpha (u - f)) in dense float64,
    against the live module and the standalone source."""
    text = _example("catte", field="field u(x, y) channels 3\ninput f(x, y)",
                    equation="equation dt(u) = div( g(norm(grad(gauss(u, sigma)))^2) * grad(u) ) + 0.5 * (f - u)",
                    size="size NX = 7, NY = 6", boundary="boundary x: dirichlet, y: periodic",
                    scheme="scheme explicit(tau = 0.2, steps = 3)")
    prog = pde2net.compile_text(text, "data.pde")
    assert prog.stability.stable
    rng = np.random.default_rng(4)
    u0, f = rng.uniform(0, 1, (3, 6, 7)), rng.uniform(0, 1, (3, 6, 7))
    u = u0.copy()
    for _ in range(3):
        a = reference_matrix(u, pm(1.0, 0.05), (1.0, 1.0), ("dirichlet", "periodic"), 1.0)
        u = u - 0.2 * ((a @ u.ravel()).reshape(u.shape) + 0.5 * (u - f))
    mod = load_source(prog.source(), tmp_path, "data_term")
    for net in (prog.module(dtype=torch.float64), mod.Network().double()):
        got = net(torch.tensor(u0[None]), torch.tensor(f[None]))[0].numpy()
        assert np.abs(got - u).max() <= 1e-12 * np.abs(u).max()


@pytest.mark.parametrize("name,size", [("color_pm", "size NX = 9, NY = 8"), ("heat_3d", "size NX = 6, NY = 5, NZ = 4")])
def test_colour_and_3d_export(name, size, tmp_path):
    """TorchScript, ONNX and torch.export of the colour and 3D examples, checked on another grid:
    the channel axis stays fixed, the grid axes dynamic."""
    from pde2net import export

    prog = pde2net.compile_text(_example(name, size=size, scheme="scheme explicit(tau = 0.1, steps = 2)"))
    shape = export.example_shape(prog)
    assert shape == ((1, 3, 8, 9) if name == "color_pm" else (1, 4, 5, 6))
    checks = [export.export_torchscript(prog.module(), str(tmp_path / "n.pt"), shape),
              export.export_pt2(prog.module(), str(tmp_path / "n.pt2"), shape)]
    pytest.importorskip("onnxruntime")
    checks.append(export.export_onnx(prog.module(), str(tmp_path / "n.onnx"), shape))
    for c in checks:
        assert c.checked_shape[1:] == ((3, 11, 12) if name == "color_pm" else (7, 8, 9))
        assert c.rel_error is not None and c.rel_error <= 1e-6
