"""The data and reaction family (docs/theory.md §11): exact decomposition, the bounds' closed forms,
their sharpness against dense NumPy float64 steps written here from the mathematics, the
counterexamples the theory states, and the runtime reaction against a NumPy evaluation.

Measured (printed by the tests, recorded here): at alpha = 1 on the 8 x 8 periodic grid
(lambda_max = 8), a step between 2/(lam + 2 alpha) and 2/(lam + alpha) reaches 11/9 = 1.222 x
max(||u0||, ||f||) (the theory's 1.22); the invariant-region bound of Allen-Cahn with the 5-point
heat operator is tau <= 1/(W + 2) with W = 4/h^2 (2D), sharp: at 1.02 x it a value leaves [-1, 1]
in one step.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pde2net.errors import PdeError, Pos, Source
from pde2net.operators import base
from pde2net.operators import reaction as R
from pde2net.operators.runtime import reaction as runtime

U = sp.Symbol("u'field", real=True)
F = sp.Symbol("f'input", real=True)
G = sp.Symbol("g'input", real=True)
NAMES = ("alpha", "beta", "r", "c", "eps")
P = {n: sp.Symbol(f"{n}'", real=True) for n in NAMES}
ALPHA, BETA, RR, C, EPS = (P[n] for n in NAMES)
VALUES = {"alpha": sp.Rational(1, 2), "beta": sp.Rational(1, 5), "r": sp.Integer(2),
          "c": sp.Rational(3, 10), "eps": sp.Rational(1, 10)}



def claims_region(report) -> bool:
    """An invariant-region claim: proven for inputs with values in [a, b] only, so the verdict,
    which is about every input, is "cannot prove" (docs/theory.md §11)."""
    return report.verdict == "cannot prove" and report.extra.get("invariant_region_proven") is True

def ctx(boundaries=("neumann", "neumann"), values=None, inputs=None) -> base.Context:
    """A Context built by hand, as the analyse hook will (2D unless told otherwise)."""
    text = "equation dt(u) = laplace(u) + REACTION\n"
    return base.Context(
        u=U, dims=("x", "y")[:len(boundaries)], channels=1, grid=(sp.Integer(1),) * len(boundaries),
        boundaries=tuple(boundaries), params=dict(values or VALUES), param_symbols=P,
        inputs=dict(inputs if inputs is not None else {"f": F}), tensors={}, stencil=None,
        source=Source(text, "r.pde"), pos=Pos(1, 32))


def recomposed(r: base.Reaction) -> sp.Expr:
    """alpha (f - u) - beta u + c + N, the decomposition summed back."""
    f = F if r.input == "f" else sp.Integer(0)
    return r.data * (f - U) - r.decay * U + r.constant + (r.nonlinear or 0)


# ------------------------------------------------------------------------------ decomposition
@pytest.mark.parametrize("expr, data, decay, constant, nonlinear", [
    (ALPHA * (F - U), ALPHA, 0, 0, None),                             # data fidelity
    (-BETA * U, 0, BETA, 0, None),                                    # decay
    (C, 0, 0, C, None),                                               # constant source
    (U - U**3, 0, -1, 0, -U**3),                                      # Allen-Cahn
    (RR * U * (1 - U), 0, -RR, 0, -RR * U**2),                        # Fisher
    (ALPHA * (F - U) - BETA * U + C, ALPHA, BETA, C, None),
    (2 * (F - U), 2, 0, 0, None),                                     # sympy distributes the 2
    ((F - U) / EPS**2, EPS**-2, 0, 0, None),
    (ALPHA * (F - U) + (U - U**3) / EPS**2, ALPHA, -EPS**-2, 0, -U**3 / EPS**2),
    (sp.Rational(1, 4) * (1 - U)**2, 0, sp.Rational(1, 2), sp.Rational(1, 4), U**2 / 4),
    (sp.exp(-U) + ALPHA * (F - U), ALPHA, 0, 0, sp.exp(-U)),
])
def test_decomposition_is_exact(expr, data, decay, constant, nonlinear):
    r = R.reaction_of(expr, ctx())
    assert sp.simplify(r.data - data) == 0
    assert sp.simplify(r.decay - decay) == 0
    assert sp.simplify(r.constant - constant) == 0
    assert (r.nonlinear is None) == (nonlinear is None)
    if nonlinear is not None:
        assert sp.simplify(r.nonlinear - nonlinear) == 0
    assert sp.simplify(recomposed(r) - expr) == 0
    assert r.input == ("f" if expr.has(F) else None)


def test_zero_is_the_empty_reaction():
    assert R.reaction_of(sp.Integer(0), ctx()).empty


@pytest.mark.parametrize("expr, words", [
    (ALPHA * F, "no matching -alpha*u"),                  # forcing by f without -alpha u
    (ALPHA * (F - U) + U, "no matching"),                  # data term plus a linear source
    (F * U, "nonlinearly"),
    (F**2, "nonlinearly"),
    (sp.exp(F), "nonlinearly"),
    (-ALPHA * (F - U), "negative"),
    (ALPHA * (F - U) + ALPHA * (G - U), "2 input fields"),
    (sp.Symbol("x") * U, "neither the field"),
    (sp.Function("dx")(U), "contains dx"),
])
def test_malformed_reactions_are_errors(expr, words):
    c = ctx(inputs={"f": F, "g": G})
    with pytest.raises(PdeError) as err:
        R.reaction_of(expr, c)
    e = err.value
    assert words in e.message
    assert e.pos == c.pos and e.source is c.source and e.expected
    assert "'" not in e.message  # the user's names, not the internal symbols


def test_nonlinear_data_with_unmatched_f_is_analysed_as_a_whole():
    """With a nonlinear part any split of the u-linear coefficient is exact: alpha f + u - u^3
    is accepted, and the invariant-region rule analyses R = N - beta u as a whole."""
    r = R.reaction_of(ALPHA * F + U - U**3, ctx())
    assert sp.simplify(recomposed(r) - (ALPHA * F + U - U**3)) == 0


# ------------------------------------------------------------------------------ closed forms
LAM = sp.Integer(8)


def bound(expr, lam=LAM, c=None, **kw) -> R.ReactionClaim:
    c = c or ctx()
    return R.reaction_bound(R.reaction_of(expr, c), lam, c, **kw)


def test_data_term_bounds_are_the_closed_forms():
    a = VALUES["alpha"]
    b = bound(ALPHA * (F - U))                        # f != 0 (default: f = initial image)
    assert b.verdict == "stable" and b.tau_max == 2 / (LAM + 2 * a)
    assert "max(||u^0||_2, ||f||_2)" in b.statement and "not monotone" in b.statement
    b0 = bound(ALPHA * (F - U), data_zero=True)       # f = 0
    assert b0.verdict == "stable" and b0.tau_max == 2 / (LAM + a)
    assert "||u^(n+1)||_2 <= ||u^n||_2" in b0.statement
    tau, statement, verdict, reason, hyps = b       # unpacks as the 5-tuple
    assert tau == b.tau_max and verdict == "stable" and all(h["holds"] for h in hyps)
    assert "docs/theory.md §11" in reason


def test_decay_and_source_bounds_are_the_closed_forms():
    beta, cval, a = VALUES["beta"], VALUES["c"], VALUES["alpha"]
    assert bound(-BETA * U).tau_max == 2 / (LAM + beta)
    assert bound(-BETA * U).verdict == "stable"
    # data + decay: k = alpha + beta, forcing by f: 2/(lam + 2k)
    assert bound(ALPHA * (F - U) - BETA * U).tau_max == 2 / (LAM + 2 * (a + beta))
    # constant with decay = data towards c/beta: bounded by max(||u0||, ||c/beta||)
    b = bound(C - BETA * U)
    assert b.verdict == "stable" and b.tau_max == 2 / (LAM + 2 * beta)
    assert "sqrt(n)" in b.statement and f"|{cval / beta}|" in b.statement
    assert b.forcing == (0, cval, beta)  # verify checks ||u_K|| <= max(||u_0||, ||c / beta||)


@pytest.mark.parametrize("boundaries, verdict", [
    (("neumann", "periodic"), "not stable"), (("dirichlet", "neumann"), "cannot prove")])
def test_sources_grow_or_cannot_prove(boundaries, verdict):
    c = ctx(boundaries)
    for expr in (BETA * U, C, C + BETA * U):  # a linear source; a constant without damping
        b = bound(expr, c=c)
        assert b.verdict == verdict and b.tau_max is None, (expr, b)
    assert bound(-BETA * U, c=c).verdict == "stable"


def test_nonlinear_reactions_cannot_prove_without_the_rule():
    for expr in (U - U**3, RR * U * (1 - U)):
        for kw in ({}, {"terms": (FourthOrder(),)}, {"terms": (FivePoint(),), "scheme": "fed"}):
            b = bound(expr, **kw)
            assert b.verdict == "cannot prove" and b.tau_max is None, (expr, kw)
    b = bound(-U**3, terms=(FivePoint(),))  # one real root: no interval
    assert b.verdict == "cannot prove"


class FivePoint:
    """A term that states a nonnegative stencil with diagonal <= 4/h^2 (2D heat, L = 1)."""

    family = "isotropic"
    nonnegative_stencil = sp.Integer(4)


class FourthOrder:
    family = "fourth_order"


def test_invariant_region_bounds_are_the_closed_forms():
    W = FivePoint.nonnegative_stencil
    ac = bound(U - U**3, terms=(FivePoint(),))        # R' = 1 - 3u^2 >= -2 on [-1, 1]
    assert ac.verdict == "stable" and ac.tau_max == 1 / (W + 2)
    assert "[-1, 1]" in ac.statement
    fisher = bound(RR * U * (1 - U), terms=(FivePoint(),))  # R' = r (1 - 2u) >= -r on [0, 1]
    assert fisher.verdict == "stable" and fisher.tau_max == 1 / (W + VALUES["r"])
    assert "[0, 1]" in fisher.statement
    data = bound(ALPHA * (F - U) + U - U**3, terms=(FivePoint(),))  # f also in [-1, 1]; alpha adds
    assert data.tau_max == 1 / (W + VALUES["alpha"] + 2) and "and of f" in data.statement
    # dirichlet ghosts are 0: [0, 1] contains it; [1, 2] (R = -(u - 1)(u - 2)) does not
    assert bound(RR * U * (1 - U), c=ctx(("dirichlet", "dirichlet")), terms=(FivePoint(),)).verdict == "stable"
    assert bound(-(U - 1) * (U - 2), c=ctx(("dirichlet", "neumann")),
                 terms=(FivePoint(),)).verdict == "cannot prove"


# ------------------------------------------------------------- dense NumPy steps (the theory)
def forward_difference(n: int, boundary: str) -> np.ndarray:
    """The 1D forward difference with the boundary's rows (h = 1)."""
    if boundary == "periodic":
        return np.roll(np.eye(n), 1, axis=1) - np.eye(n)
    if boundary == "dirichlet":
        d = np.zeros((n + 1, n))
        for i in range(n + 1):
            if i < n:
                d[i, i] += 1.0
            if i >= 1:
                d[i, i - 1] -= 1.0
        return d
    return (np.eye(n, k=1) - np.eye(n))[:-1]


def laplacian_2d(nx: int, ny: int, boundary: str) -> np.ndarray:
    """D^T D for the 2D forward gradient: the 5-point graph Laplacian (C order, x last)."""
    dx, dy = forward_difference(nx, boundary), forward_difference(ny, boundary)
    return np.kron(np.eye(ny), dx.T @ dx) + np.kron(dy.T @ dy, np.eye(nx))


def step(A, u, tau, alpha=0.0, f=None, beta=0.0, c=0.0, N=None):
    """One explicit step u - tau (A u - r(u, f)), r = alpha (f - u) - beta u + c + N(u)."""
    r = -beta * u + c
    if alpha:
        r = r + alpha * (f - u)
    if N is not None:
        r = r + N(u)
    return u - tau * (A @ u - r)


def checkerboard(nx, ny):
    y, x = np.mgrid[0:ny, 0:nx]
    return ((-1.0) ** (x + y)).ravel()


def test_periodic_laplacian_top_eigenvalue_is_8():
    A = laplacian_2d(8, 8, "periodic")
    assert np.isclose(np.linalg.eigvalsh(A).max(), 8.0, rtol=1e-13)


@pytest.mark.parametrize("alpha", [1.0, 5.0])
def test_data_bound_is_sharp_with_f_zero(alpha):
    """f = 0: at 1.02 x 2/(lam + alpha) a small multiple of the top eigenvector grows (every
    step by |1 - tau (lam + alpha)|); at the bound it does not; ignoring alpha grows."""
    A = laplacian_2d(8, 8, "periodic")
    c = ctx(("periodic", "periodic"), values={**VALUES, "alpha": sp.Rational(alpha)})
    b = R.reaction_bound(R.reaction_of(ALPHA * (F - U), c), LAM, c, data_zero=True)
    tau = float(b.tau_max)
    assert np.isclose(tau, 2 / (8 + alpha), rtol=1e-15)
    v = 1e-6 * checkerboard(8, 8)
    f = np.zeros_like(v)
    for factor, grows in ((1.02, True), (1.0, False)):
        u = v.copy()
        for _ in range(50):
            u = step(A, u, factor * tau, alpha, f)
        assert (np.linalg.norm(u) > np.linalg.norm(v) * 1.5) == grows
    ignored = 2 / 8  # the bound without alpha
    u1 = step(A, v, ignored, alpha, f)
    assert np.linalg.norm(u1) / np.linalg.norm(v) == pytest.approx(abs(1 - ignored * (8 + alpha)))


def test_data_bound_with_f_is_sharp_between_the_bounds():
    """f != 0: between 2/(lam + 2 alpha) and 2/(lam + alpha) one step exceeds
    max(||u0||, ||f||) (u0 = -v, f = v, v the top eigenvector: factor tau (lam + 2 alpha) - 1,
    11/9 at alpha = 1 near the f = 0 bound); at the bound it never does (random u0, f, and
    random frozen diagonal weights in [0, 1] at every step, as a nonlinear diffusivity gives)."""
    alpha = 1.0
    c = ctx(("periodic", "periodic"), values={**VALUES, "alpha": sp.Integer(1)})
    b = R.reaction_bound(R.reaction_of(ALPHA * (F - U), c), LAM, c)
    tau = float(b.tau_max)
    assert tau == pytest.approx(2 / 10, rel=1e-15)
    A = laplacian_2d(8, 8, "periodic")
    v = checkerboard(8, 8) / 8.0
    for t in (1.02 * tau, 0.999 * 2 / 9):
        u1 = step(A, -v, t, alpha, v)
        ratio = np.linalg.norm(u1) / max(np.linalg.norm(v), np.linalg.norm(-v))
        assert ratio == pytest.approx(t * (8 + 2 * alpha) - 1, rel=1e-12) and ratio > 1
    print(f"one step at 0.999 x 2/(lam + alpha): {ratio:.4f} x max(||u0||, ||f||)")
    rng = np.random.default_rng(0)
    dx = forward_difference(8, "periodic")
    Dx, Dy = np.kron(np.eye(8), dx), np.kron(dx, np.eye(8))
    for trial in range(20):
        u, f = rng.standard_normal(64), rng.standard_normal(64) * rng.uniform(0, 3)
        top = max(np.linalg.norm(u), np.linalg.norm(f))
        for _ in range(30):
            Gx, Gy = np.diag(rng.uniform(0, 1, 64)), np.diag(rng.uniform(0, 1, 64))
            Au = Dx.T @ Gx @ Dx + Dy.T @ Gy @ Dy  # lambda_max <= 8: lam = 8 is proven
            u = step(Au, u, tau, alpha, f)
            assert np.linalg.norm(u) <= top * (1 + 1e-12)


def test_distance_to_f_is_not_monotone():
    """The false statement of docs/theory.md §11: u0 = f smooth gives ||u0 - f|| = 0 and
    ||u1 - f|| > 0 at the bound (the diffusion moves u away from f)."""
    alpha = 1.0
    A = laplacian_2d(8, 8, "neumann")
    y, x = np.mgrid[0:8, 0:8]
    f = np.sin(np.pi * x / 8).ravel() * np.cos(np.pi * y / 8).ravel()
    tau = 2 / (8 + 2 * alpha)
    u1 = step(A, f.copy(), tau, alpha, f)
    assert np.linalg.norm(f - f) == 0 and np.linalg.norm(u1 - f) > 0.05
    assert np.linalg.norm(u1 - f) == pytest.approx(tau * np.linalg.norm(A @ f), rel=1e-12)


def test_decay_bound_is_sharp():
    beta = float(VALUES["beta"])
    c = ctx(("periodic", "periodic"))
    tau = float(R.reaction_bound(R.reaction_of(-BETA * U, c), LAM, c).tau_max)
    A = laplacian_2d(8, 8, "periodic")
    v = 1e-6 * checkerboard(8, 8)
    grow = step(A, v, 1.02 * tau, beta=beta)
    assert np.linalg.norm(grow) > np.linalg.norm(v)
    assert np.linalg.norm(step(A, v, tau, beta=beta)) <= np.linalg.norm(v) * (1 + 1e-15)


def test_sources_grow_for_every_tau():
    """Neumann: a linear source makes constants grow by 1 + tau |beta| per step; a constant
    source without decay makes the mean grow as c t (and u - c t is the source-free scheme)."""
    A = laplacian_2d(6, 5, "neumann")
    ones = np.ones(30)
    for tau in (1e-3, 0.1, 0.25):
        u = step(A, ones, tau, beta=-0.2)
        assert np.allclose(u, (1 + 0.2 * tau) * ones, rtol=1e-14)
        rng = np.random.default_rng(1)
        u0 = rng.standard_normal(30)
        u, w = u0.copy(), u0.copy()
        for k in range(1, 40):
            u = step(A, u, tau, c=0.3)
            w = step(A, w, tau)
            assert u.mean() == pytest.approx(u0.mean() + 0.3 * k * tau, rel=1e-12)
            assert np.allclose(u - 0.3 * k * tau, w, atol=1e-12)


def test_invariant_region_is_sharp_for_allen_cahn():
    """tau <= 1/(W + 2) with W = 4 (the diagonal of the 5-point Laplacian): at the bound random
    inputs in [-1, 1] (and random frozen weights in [0, 1]) stay in [-1, 1]; at 1.02 x it the
    input 1 everywhere but 1 - e at one interior point gives a value above 1 after one step."""
    c = ctx(("neumann", "neumann"))
    tau = float(R.reaction_bound(R.reaction_of(U - U**3, c), LAM, c, terms=(FivePoint(),)).tau_max)
    assert tau == pytest.approx(1 / 6, rel=1e-15)
    N = lambda u: u - u**3  # noqa: E731
    A = laplacian_2d(7, 7, "neumann")
    u = np.ones(49)
    u[24] = 1 - 1e-3
    assert step(A, u, 1.02 * tau, N=N).max() > 1.0
    assert step(A, u, tau, N=N).max() <= 1.0
    rng = np.random.default_rng(2)
    dx = forward_difference(7, "dirichlet")
    Dx, Dy = np.kron(np.eye(7), dx), np.kron(dx, np.eye(7))
    for trial in range(20):
        u = rng.uniform(-1, 1, 49) * (rng.uniform() ** 0.1)
        u[rng.integers(49)] = rng.choice([-1.0, 1.0])
        for _ in range(30):
            Gx, Gy = np.diag(rng.uniform(0, 1, Dx.shape[0])), np.diag(rng.uniform(0, 1, Dy.shape[0]))
            Au = Dx.T @ Gx @ Dx + Dy.T @ Gy @ Dy  # dirichlet ghosts 0: diagonal <= 4 still
            u = step(Au, u, tau, N=N)
            assert np.all(np.abs(u) <= 1.0)


# --------------------------------------------------------------------------- the runtime branch
def reference_r(u, f, alpha, beta, c, eps):
    """r(u, f) = alpha (f - u) - beta u + c + (u - u^3) / eps^2 in float64 NumPy."""
    return alpha * (f - u) - beta * u + c + (u - u**3) / eps**2


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_runtime_reaction_equals_numpy(dtype, rtol):
    c = ctx()
    expr = ALPHA * (F - U) - BETA * U + C + (U - U**3) / EPS**2
    live = R.torch_reaction(R.reaction_of(expr, c), c)
    rng = np.random.default_rng(3)
    u, f = rng.uniform(-1.5, 1.5, (2, 3, 5, 7)), rng.uniform(-1, 1, (2, 3, 5, 7))
    vals = {k: float(v) for k, v in VALUES.items()}
    want = reference_r(u, f, vals["alpha"], vals["beta"], vals["c"], vals["eps"])
    got = live(torch.tensor(u, dtype=dtype), torch.tensor(f, dtype=dtype)).double().numpy()
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= rtol * scale
    # the implicit split: forward = rest - linear() u, linear() = alpha + beta - 1/eps^2 (the
    # u-linear part of (u - u^3)/eps^2 belongs to the decay: a source, negative here)
    assert live.linear() == pytest.approx(vals["alpha"] + vals["beta"] - 1 / vals["eps"] ** 2, rel=1e-14)
    rest = live.rest(torch.tensor(u, dtype=dtype), torch.tensor(f, dtype=dtype)).double().numpy()
    assert np.abs(rest - live.linear() * u - want).max() <= 10 * rtol * scale
    assert np.abs(R.numpy_reaction(R.reaction_of(expr, c), c, u, f) - want).max() <= 1e-12 * scale


def test_runtime_without_data_never_reads_f():
    c = ctx()
    live = R.torch_reaction(R.reaction_of(U - U**3, c), c)
    u = torch.linspace(-2, 2, 11, dtype=torch.float64).reshape(1, 1, 11)
    assert torch.allclose(live(u), u - u**3, rtol=1e-15, atol=1e-15)
    assert not live.uses_data
    with pytest.raises(ValueError):
        R.torch_reaction(R.reaction_of(ALPHA * (F - U), c), c)(u)


def test_source_builds_the_same_reaction(tmp_path):
    """The printed N and coefficients, loaded as a module with the runtime file, give the live
    module's values bit for bit."""
    from reference import load_source

    c = ctx()
    expr = ALPHA * (F - U) - BETA * U + C + (U - U**3) / EPS**2
    rx = R.reaction_of(expr, c)
    pnames = {n: n for n in NAMES}
    ts = R.reaction_source(rx, c, pnames, "t0_")
    assert ts.runtime == ("reaction",)
    consts = "".join(f"{n} = {float(v)!r}\n" for n, v in VALUES.items())
    text = (inspect.getsource(runtime) + "\n" + consts + "\n".join(ts.functions)
            + f"\nREACTION = {ts.expression}\n")
    mod = load_source(text, tmp_path, "reaction_src")
    rng = np.random.default_rng(4)
    u = torch.tensor(rng.uniform(-1.5, 1.5, (2, 1, 6, 5)))
    f = torch.tensor(rng.uniform(-1, 1, (2, 1, 6, 5)))
    live = R.torch_reaction(rx, c)
    assert torch.equal(mod.REACTION(u, f), live(u, f))
    assert mod.REACTION.linear() == live.linear()


# ------------------------------------------------------------------------------- command line
def _prog(path):
    """Only what the --input options read: the parsed spec (the rest is the lead's plumbing)."""
    from types import SimpleNamespace

    from pde2net import parse

    return SimpleNamespace(spec=parse.parse(path.read_text()))


def test_input_options_name_the_data_field(examples_dir):
    from pde2net.cli import _input_options

    prog = _prog(examples_dir / "tv_denoise.pde")
    assert _input_options([], prog) == (None, {})
    assert _input_options(["a.npy", "f=b.png"], prog) == ("a.npy", {"f": "b.png"})
    assert _input_options(["u=a.npy"], prog) == ("a.npy", {})  # the field's own name
    with pytest.raises(PdeError) as err:
        _input_options(["ff=b.npy"], prog)
    assert "did you mean 'f'" in err.value.message and "f, u" in err.value.expected
    for bad in (["f=a.npy", "f=b.npy"], ["a.npy", "u=b.npy"]):
        with pytest.raises(PdeError):
            _input_options(bad, prog)


def test_unknown_input_name_exits_2(examples_dir, capsys):
    from pde2net.cli import main

    rc = main(["run", str(examples_dir / "heat.pde"), "--input", "f=nothing.npy"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no input 'f'" in err and "Traceback" not in err


# ------------------------------------------------------------------ end to end (compile_text)
def _needs_isotropic():
    """The end-to-end tests need a diffusion family (the isotropic one) registered."""
    pytest.importorskip("pde2net.operators.isotropic")


LINEAR_SPEC = """pde react
param alpha = 0.5
param beta = 0.25
param c = 0.125
param eps = 2
field u(x, y)
input f(x, y)
equation dt(u) = laplace(u) + REACTION
grid h = 1
size NX = 7, NY = 6
BOUNDARY
scheme explicit(tau = 0.1, steps = 4)
"""

BOUNDARIES = [("boundary neumann", ("neumann", "neumann")),
              ("boundary periodic", ("periodic", "periodic")),
              ("boundary dirichlet", ("dirichlet", "dirichlet")),
              ("boundary x: periodic, y: dirichlet", ("periodic", "dirichlet"))]


def laplacian_axes(nx: int, ny: int, bx: str, by: str) -> np.ndarray:
    """D^T D of the 2D forward gradient with a boundary per axis (x last in C order)."""
    dx, dy = forward_difference(nx, bx), forward_difference(ny, by)
    return np.kron(np.eye(ny), dx.T @ dx) + np.kron(dy.T @ dy, np.eye(nx))


@pytest.mark.parametrize("line, bnds", BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
@pytest.mark.parametrize("reaction, r", [
    ("alpha * (f - u) - beta * u + c", lambda u, f: 0.5 * (f - u) - 0.25 * u + 0.125),
    ("(u - u^3) / eps^2", lambda u, f: (u - u**3) / 4.0),
], ids=["linear", "allen_cahn"])
def test_network_end_to_end(line, bnds, reaction, r, tmp_path):
    """compile_text -> live module and standalone source, float64 and float32, against explicit
    steps u - tau (A u - r(u, f)) with the dense 5-point A, f a second field (not u0)."""
    _needs_isotropic()
    import pde2net
    from reference import load_source

    prog = pde2net.compile_text(LINEAR_SPEC.replace("REACTION", reaction).replace("BOUNDARY", line))
    A = laplacian_axes(7, 6, *bnds)
    rng = np.random.default_rng(5)
    u0, f = rng.uniform(-1, 1, (6, 7)), rng.uniform(-1, 1, (6, 7))
    want = u0.ravel()
    for _ in range(4):
        want = want - 0.1 * (A @ want - r(want, f.ravel()))
    want = want.reshape(6, 7)
    scale = np.abs(want).max()
    mod = load_source(prog.source(), tmp_path, "react_e2e")
    for net in (prog.module(dtype=torch.float64), mod.Network().double()):
        got = net(torch.tensor(u0[None]), torch.tensor(f[None]))[0].numpy()
        assert np.abs(got - want).max() <= 1e-12 * scale
    got32 = prog.module()(torch.tensor(u0[None], dtype=torch.float32),
                          torch.tensor(f[None], dtype=torch.float32))[0].numpy()
    assert np.abs(got32 - want).max() <= 1e-5 * scale
    report = prog.stability
    assert report.verdict == "stable" if reaction.startswith("alpha") else claims_region(report)
    if reaction.startswith("alpha"):  # forcing alpha f + c, k = alpha + beta: 2 / (8 + 2 k)
        assert float(report.tau_max) == pytest.approx(2 / (8 + 2 * 0.75), rel=1e-15)
    else:  # invariant region [-1, 1]: 1 / (W - min R') = 1 / (4 + 2 / eps^2)
        assert float(report.tau_max) == pytest.approx(1 / (4 + 2 / 4), rel=1e-15)
        assert report.extra["invariant_region"] == [-1.0, 1.0]


def test_examples_compile(examples_dir):
    _needs_isotropic()
    import pde2net

    tv = pde2net.load(examples_dir / "tv_denoise.pde").stability
    assert tv.verdict == "stable" and float(tv.tau_max) == pytest.approx(2 / (8 + 2 * 0.1), rel=1e-15)
    assert "max(||u^0||_2, ||f||_2)" in tv.reason
    ac = pde2net.load(examples_dir / "allen_cahn.pde").stability
    assert claims_region(ac) and float(ac.tau_max) == pytest.approx(2 / 9, rel=1e-15)
    assert "invariant region [-1, 1]" in ac.reason


def test_default_data_field_is_the_initial_value():
    """net(u0) = net(u0, u0): f defaults to the initial value (not to each block's input)."""
    _needs_isotropic()
    import pde2net

    prog = pde2net.compile_text(LINEAR_SPEC.replace("REACTION", "alpha * (f - u)")
                                .replace("BOUNDARY", "boundary neumann"))
    net = prog.module(dtype=torch.float64)
    u0 = torch.tensor(np.random.default_rng(6).uniform(0, 1, (1, 6, 7)))
    assert torch.equal(net(u0), net(u0, u0))


# ------------------------------------------------------------- soundness (hypothesis property)
SOUND = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))
RATS = (0, sp.Rational(1, 5), sp.Rational(1, 2), 1, 5)


def frozen_operator(rng, nx, ny, bx, by, L=1.0):
    """A random frozen D^T G D of the 2D forward gradient, G diagonal in [0, L]: symmetric PSD,
    lambda_max <= L (4 + 4) (the proven bound for h = 1), nonpositive off-diagonal entries and
    diagonal <= 4 L (a nonnegative stencil)."""
    dx, dy = forward_difference(nx, bx), forward_difference(ny, by)
    Dx, Dy = np.kron(np.eye(ny), dx), np.kron(dy, np.eye(nx))
    gx, gy = rng.uniform(0, L, Dx.shape[0]), rng.uniform(0, L, Dy.shape[0])
    if rng.uniform() < 0.3:  # the worst case: every weight at its bound
        gx, gy = np.full_like(gx, L), np.full_like(gy, L)
    return Dx.T @ (gx[:, None] * Dx) + Dy.T @ (gy[:, None] * Dy)


def full_operator(nx, ny, bx, by):
    """D^T D: every weight at its bound L = 1 (lambda_max closest to the proven 8)."""
    return laplacian_axes(nx, ny, bx, by)


@SOUND
@given(alpha=st.sampled_from(RATS), beta=st.sampled_from(RATS + (-sp.Rational(1, 2),)),
       c=st.sampled_from((0, sp.Rational(3, 10), -1)), bx=st.sampled_from(("neumann", "periodic", "dirichlet")),
       by=st.sampled_from(("neumann", "periodic", "dirichlet")), data_zero=st.booleans(),
       seed=st.integers(0, 2**16))
def test_linear_verdicts_are_sound(alpha, beta, c, bx, by, data_zero, seed):
    """Every "stable" claim holds along random frozen operators (including the top
    eigenvector as a start); every "not stable" shows growth."""
    cx = ctx((bx, by), values={**VALUES, "alpha": sp.sympify(alpha), "beta": sp.sympify(beta),
                               "c": sp.sympify(c)})
    expr = ALPHA * (F - U) - BETA * U + C
    try:
        rx = R.reaction_of(expr, cx)
    except PdeError:
        assert alpha > 0 and beta < 0  # the only refusal: a data term with a linear source
        return
    claim = R.reaction_bound(rx, LAM, cx, data_zero=data_zero)
    rng = np.random.default_rng(seed)
    nx, ny, n = 5, 4, 20
    a, b, cv = float(alpha), float(beta), float(c)
    f = np.zeros(n) if data_zero else rng.uniform(-2, 2, n)
    if claim.verdict == "stable":
        tau = float(claim.tau_max)
        forcing = (a != 0 and not data_zero) or cv != 0
        for start in range(3):
            A0 = frozen_operator(rng, nx, ny, bx, by)
            u = rng.uniform(-3, 3, n)
            if start == 0:  # the sharp case: every weight at L, u0 = -s v and f = s v (v on top)
                v = np.linalg.eigh(full_operator(nx, ny, bx, by))[1][:, -1] * rng.uniform(0.1, 3)
                A0, u = full_operator(nx, ny, bx, by), -v
                if a != 0 and not data_zero:
                    f = v.copy()
            g = (a * f + cv) / (a + b) if forcing else None
            top = max(np.linalg.norm(u), np.linalg.norm(g)) if forcing else np.linalg.norm(u)
            prev = np.linalg.norm(u)
            for k in range(40):
                A = A0 if k == 0 else frozen_operator(rng, nx, ny, bx, by)
                u = step(A, u, tau, a, f, b, cv)
                now = np.linalg.norm(u)
                assert now <= top * (1 + 1e-12) + 1e-300
                if not forcing:
                    assert now <= prev * (1 + 1e-12) + 1e-300
                prev = now
    elif claim.verdict == "not stable":
        assert bx != "dirichlet" and by != "dirichlet"
        u = np.ones(n)
        for _ in range(400):
            u = step(frozen_operator(rng, nx, ny, bx, by), u, 0.1, a, f, b, cv)
        assert np.linalg.norm(u) > 10 * max(np.sqrt(n), np.linalg.norm(f))


@SOUND
@given(kind=st.sampled_from(("cubic", "logistic", "quadratic")), lo=st.sampled_from((-2, -1, 0)),
       width=st.sampled_from((sp.Rational(1, 2), 1, 2, 3)), scale=st.sampled_from((sp.Rational(1, 4), 1, 3)),
       alpha=st.sampled_from((0, sp.Rational(1, 2))), bx=st.sampled_from(("neumann", "periodic", "dirichlet")),
       seed=st.integers(0, 2**16))
def test_invariant_region_is_sound(kind, lo, width, scale, alpha, bx, seed):
    """Random polynomial reactions with roots a < b: at the rule's tau, values (of u^0 and f) in
    [a, b] stay in [a, b] along random frozen nonnegative stencils with diagonal <= 4."""
    a, b = sp.Integer(lo), lo + width
    m = (a + b) / 2
    N = {"cubic": -scale * (U - a) * (U - m) * (U - b), "logistic": scale * (U - a) * (b - U),
         "quadratic": scale * (U - a) * (U - b)}[kind]
    cx = ctx((bx, "neumann"), values={**VALUES, "alpha": sp.sympify(alpha)})
    rx = R.reaction_of(N + ALPHA * (F - U), cx)
    claim = R.reaction_bound(rx, LAM, cx, terms=(FivePoint(),))
    if bx == "dirichlet" and not (a <= 0 <= b):
        assert claim.verdict == "cannot prove"
        return
    assert claim.verdict == "stable" and f"[{a}, {b}]" in claim.statement
    tau, fa, fb = float(claim.tau_max), float(a), float(b)
    Nf = sp.lambdify(U, N, "numpy")
    rng = np.random.default_rng(seed)
    for _ in range(4):
        u = rng.uniform(fa, fb, 20)
        u[rng.integers(20)], u[rng.integers(20)] = fa, fb
        f = rng.uniform(fa, fb, 20)
        for _ in range(25):
            u = step(frozen_operator(rng, 5, 4, bx, "neumann"), u, tau, float(alpha), f, N=Nf)
            assert np.all(u >= fa - 1e-12 * (1 + abs(fa))) and np.all(u <= fb + 1e-12 * (1 + abs(fb)))


@pytest.mark.parametrize("tau, verdict", [("0.2", "region"), ("0.24", "cannot prove")])
def test_invariant_region_end_to_end(examples_dir, capsys, tmp_path, tau, verdict):
    """The isotropic term states its nonnegative stencil (diagonal <= 4 for h = 1, L = 1), so
    Allen-Cahn's report claims the invariant region [-1, 1] for tau <= 1 / (4 + 2 / eps^2) = 2/9;
    verify checks that claim (inputs in [-1, 1], outputs must stay there) and is consistent; above
    the bound: "cannot prove"."""
    _needs_isotropic()
    import pde2net
    from pde2net.cli import main

    text = (examples_dir / "allen_cahn.pde").read_text().replace("tau = 0.2,", f"tau = {tau},")
    path = tmp_path / "allen_cahn.pde"
    report = pde2net.compile_text(text).stability
    assert report.verdict == "cannot prove" and float(report.tau_max) == pytest.approx(2 / 9, rel=1e-15)
    assert report.extra["invariant_region"] == [-1.0, 1.0]
    assert claims_region(report) == (verdict == "region")
    if verdict == "region":
        assert "invariant region [-1, 1]" in report.reason
    path.write_text(text)
    rc = main(["verify", str(path), "--size", "12", "--budget", "0.2"])
    out = capsys.readouterr().out
    assert rc == 0 and "CONSISTENT" in out and "invariant region [-1, 1]" in out


ISO_SPECS = [
    ("div( g(norm(grad(u))^2) * grad(u) )", "field u(x, y)", (1.0, 1.0)),
    ("div( g(norm(grad(gauss(u, 1)))^2) * grad(u) )", "field u(x, y)", (1.0, 1.0)),
    ("div( g(norm(grad(u))^2) * grad(u) )", "field u(x, y) channels 2", (1.0, 1.0)),
]


@pytest.mark.parametrize("line, bnds", BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
@pytest.mark.parametrize("term, field, h", ISO_SPECS, ids=["pm", "catte", "colour"])
def test_isotropic_stencil_is_nonnegative(term, field, h, line, bnds):
    """What the isotropic term states for the invariant-region rule, checked on its dense frozen
    matrices at random inputs: off-diagonal entries <= 0 and diagonal <= L sum_d 2/h_d^2 (with
    g = PM, L = 1), attained by the linear case at an interior node."""
    _needs_isotropic()
    import pde2net

    text = (f"pde iso\nparam lambda = 0.3\n{field}\ndiffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n"
            f"equation dt(u) = {term} + u - u^3\ngrid h = 1\nsize NX = 6, NY = 5\n{line}\n"
            f"scheme explicit(tau = 0.1, steps = 2)\n")
    prog = pde2net.compile_text(text)
    spec = prog.arch.operator
    (t,), c = spec.terms, spec.context
    bound = float(t.nonnegative_stencil(c))
    assert bound == pytest.approx(sum(2 / x**2 for x in h), rel=1e-15)
    rng = np.random.default_rng(7)
    for amp in (1e-3, 0.3, 10.0):
        u = amp * rng.standard_normal((c.channels, 5, 6))
        A = t.dense(c, u, u)
        off = A - np.diag(np.diag(A))
        assert off.max() <= 1e-15 and np.diag(A).max() <= bound * (1 + 1e-12)
        if amp == 1e-3:  # g ~ L = 1 everywhere: an interior node's diagonal is the bound
            assert np.diag(A).max() >= bound * (1 - 1e-3)
    assert claims_region(prog.stability)


def test_run_warns_outside_the_invariant_region(examples_dir, tmp_path, capsys):
    """A run whose input leaves [-1, 1] is told that the claim does not cover it (and the cubic
    then blows up: exit status 1); an input inside gets no warning."""
    _needs_isotropic()
    from pde2net.cli import main

    big, small = tmp_path / "big.npy", tmp_path / "small.npy"
    rng = np.random.default_rng(8)
    np.save(big, 3 * rng.standard_normal((16, 16)))
    np.save(small, rng.uniform(-1, 1, (16, 16)))
    assert main(["run", str(examples_dir / "allen_cahn.pde"), "--input", str(big)]) == 1
    assert "outside the invariant region [-1, 1]" in capsys.readouterr().err
    assert main(["run", str(examples_dir / "allen_cahn.pde"), "--input", str(small)]) == 0
    assert "invariant region" not in capsys.readouterr().err


@pytest.mark.parametrize("reaction", ["0.3 - 0.2 * u", "alpha * (f - u) - 0.2 * u + 0.3"])
def test_verify_checks_the_forcing_claim(reaction, tmp_path, capsys):
    """A constant source with damping: the claim is ||u_K|| <= max(||u_0||, ||(alpha f + c)/k||),
    which exceeds ||u_0|| for small inputs; verify checks that claim and is consistent."""
    _needs_isotropic()
    import pde2net
    from pde2net.cli import main

    text = (f"pde t\nparam alpha = 0.5\nfield u(x, y)\ninput f(x, y)\nequation dt(u) = laplace(u) + "
            f"{reaction}\nsize NX = 8, NY = 8\nscheme explicit(tau = 0.1, steps = 30)\n")
    report = pde2net.compile_text(text).stability
    assert report.verdict == "stable" and report.extra["bounded_by_forcing"][1] == pytest.approx(0.3)
    path = tmp_path / "forcing.pde"
    path.write_text(text)
    assert main(["verify", str(path), "--budget", "0.2"]) == 0
    assert "max(||u_0||, ||g||)" in capsys.readouterr().out


def test_implicit_claims():
    """The lagged-weight implicit step (I + tau (A + k)) u+ = u + tau (alpha f + c): stable for
    every tau with k > 0 (bounded by max(||u||, ||g||)) or without forcing; a source grows."""
    cases = [(ALPHA * (F - U), "stable", None), (C - BETA * U, "stable", (0, VALUES["c"])),
             (-BETA * U, "stable", None), (C, "not stable", None), (BETA * U, "not stable", None),
             (U - U**3, "cannot prove", None)]
    for expr, verdict, forcing in cases:
        claim = R.implicit_bound(R.reaction_of(expr, ctx()), ctx())
        assert claim.verdict == verdict and claim.tau_max is None, expr
        assert (claim.forcing is None) == (forcing is None)
        if forcing is not None:
            assert tuple(claim.forcing[:2]) == forcing
    assert R.implicit_bound(R.reaction_of(C, ctx(("dirichlet", "neumann"))),
                            ctx(("dirichlet", "neumann"))).verdict == "cannot prove"


def test_implicit_step_claim_holds_in_numpy():
    """(I + tau (A + k)) u+ = u + tau k g: ||u+|| <= max(||u||, ||g||) at large tau, random frozen
    A (dense NumPy float64 solve), for the constant-source case g = c / beta."""
    rng = np.random.default_rng(9)
    beta, c = 0.2, 0.3
    for tau in (0.5, 10.0, 1e4):
        u = 1e-3 * rng.standard_normal(20)
        top = max(np.linalg.norm(u), np.linalg.norm(np.full(20, c / beta)))
        for _ in range(30):
            A = frozen_operator(rng, 5, 4, "neumann", "neumann")
            u = np.linalg.solve(np.eye(20) * (1 + tau * beta) + tau * A, u + tau * c)
            assert np.linalg.norm(u) <= top * (1 + 1e-12)


@pytest.mark.parametrize("reaction, verdict", [("0.3", "not stable"), ("0.3 - 0.2 * u", "stable"),
                                               ("alpha * (f - u)", "stable")])
def test_implicit_end_to_end(reaction, verdict, tmp_path):
    """The implicit scheme's report: a constant source without damping is 'not stable' (the
    mean grows as c t for every tau), with damping or a data term stable; verify consistent."""
    _needs_isotropic()
    import pde2net
    from pde2net.cli import main

    text = (f"pde t\nparam alpha = 0.5\nfield u(x, y)\ninput f(x, y)\nequation dt(u) = laplace(u) + "
            f"{reaction}\nsize NX = 8, NY = 8\nscheme implicit(tau = 1, steps = 10)\n")
    assert pde2net.compile_text(text).stability.verdict == verdict
    path = tmp_path / "implicit.pde"
    path.write_text(text)
    assert main(["verify", str(path), "--budget", "0.2"]) == 0


AXIS_SPECS = [
    ("dx(g(dx(u)^2) * dx(u)) + dy(g(dy(u)^2) * dy(u))", "grid hx = 1, hy = 2", 2 / 1 + 2 / 4, True),
    ("dxx(u) + dy(g(dy(u)^2) * dy(u))", "grid hx = 1, hy = 2", 2 / 1 + 2 / 4, True),
    ("-dxx(g(dxx(u)^2) * dxx(u)) + dyy(u)", "grid h = 1", None, False),  # order 2: positive entries
]


@pytest.mark.parametrize("line, bnds", BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
@pytest.mark.parametrize("terms, grid, W, stated", AXIS_SPECS, ids=["pm", "mixed", "fourth"])
def test_axis_stencil_is_nonnegative(terms, grid, W, stated, line, bnds):
    """The per-axis second-order terms state a nonnegative stencil (diagonal <= 2 L / h_d^2 each);
    checked on their dense frozen matrices; an order-2 term does not state one (its matrix has
    positive off-diagonal entries), so Allen-Cahn with it is "cannot prove"."""
    pytest.importorskip("pde2net.operators.axis")
    import pde2net

    text = (f"pde ax\nparam lambda = 0.3\nfield u(x, y)\ndiffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n"
            f"equation dt(u) = {terms} + u - u^3\n{grid}\nsize NX = 6, NY = 5\n{line}\n"
            f"scheme explicit(tau = 0.01, steps = 2)\n")
    prog = pde2net.compile_text(text)
    spec = prog.arch.operator
    c = spec.context
    rng = np.random.default_rng(10)
    u = 0.3 * rng.standard_normal((1, 5, 6))
    A = sum(t.dense(c, u, u) for t in spec.terms)
    off = A - np.diag(np.diag(A))
    if stated:
        assert sum(float(t.nonnegative_stencil(c)) for t in spec.terms) == pytest.approx(W, rel=1e-15)
        assert off.max() <= 1e-15 and np.diag(A).max() <= W * (1 + 1e-12)
        assert claims_region(prog.stability)
        assert float(prog.stability.tau_max) == pytest.approx(1 / (W + 2), rel=1e-15)
    else:
        assert off.max() > 0.1 and prog.stability.verdict == "cannot prove"


@pytest.mark.parametrize("value", ["1e39", "1e-39"])
def test_coefficients_outside_float32_cannot_prove(value):
    """A data weight that float32 cannot hold (inf, or flushed to 0) makes no claim."""
    c = ctx(values={**VALUES, "alpha": sp.Rational(value)})
    rx = R.reaction_of(ALPHA * (F - U), c)
    for claim in (R.reaction_bound(rx, LAM, c), R.implicit_bound(rx, c)):
        assert claim.verdict == "cannot prove" and "float32" in claim.reason


def test_invariant_region_needs_float32_values():
    """(u - u^3) / eps^2 with eps = 1e-30 overflows float32 on [-1, 1]: no claim."""
    c = ctx(values={**VALUES, "eps": sp.Rational("1e-30")})
    claim = R.reaction_bound(R.reaction_of((U - U**3) / EPS**2, c), LAM, c, terms=(FivePoint(),))
    assert claim.verdict == "cannot prove" and "float32" in claim.reason
