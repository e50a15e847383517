"""The derived bound against textbook values, and what it promises checked on the network."""
import math
import re

import numpy as np
import pytest
import sympy as sp
import torch

import pde2net
from reference import binomial_weights, dense_difference

DERIV = {1: "dx", 2: "dxx", 3: "dxxx"}


def linear_spec(m: int, c: str = "1", h: str = "1", tau: str = "0.01", boundary: str = "neumann",
                steps: int = 1, stencil: str = "forward") -> str:
    sign = "" if m % 2 else "-"
    return (f"pde lin\nparam c = {c}\nfield u(x)\nequation dt(u) = {sign}c * {DERIV[m]}({DERIV[m]}(u))\n"
            f"grid h = {h}\nboundary {boundary}\nstencil {stencil}\nscheme explicit(tau = {tau}, steps = {steps})\n")


@pytest.mark.parametrize("m,denominator", [(1, 2), (2, 8), (3, 32)])
@pytest.mark.parametrize("h", ["1", "0.5", "3"])
@pytest.mark.parametrize("c", ["1", "2.5"])
def test_tau_max_is_textbook(m, denominator, h, c):
    """h^2/(2L), h^4/(8L), h^6/(32L) for the binomial stencils; L = c for a constant diffusivity."""
    r = pde2net.compile_text(linear_spec(m, c, h)).stability
    hv, cv = sp.Rational(h), sp.Rational(c)
    assert sp.Rational(r.exact["L"]) == cv
    assert sp.sympify(r.exact["tau_max"]) == hv ** (2 * m) / (denominator * cv)
    assert r.tau_max == pytest.approx(float(hv ** (2 * m) / (denominator * cv)), rel=1e-15)
    assert r.tau_max <= float(hv ** (2 * m) / (denominator * cv))  # a float bound never exceeds the exact one
    assert r.norm_D_sq == pytest.approx(4 ** m / float(hv) ** (2 * m), rel=1e-15)
    assert r.bound_expr == str(sp.Symbol("h", positive=True) ** (2 * m) / (denominator * sp.Symbol("L", positive=True)))


@pytest.mark.parametrize("g,expected_L", [
    ("1 / (1 + s2 / lambda^2)", 1),            # Perona-Malik
    ("1 / sqrt(1 + s2 / lambda^2)", 1),        # Charbonnier
    ("1 - exp(-3.31488 / (s2 / lambda^2)^4)", 1),  # Weickert (g(0) = 1 as a limit)
    ("2 / (1 + s2)", 2),
    ("3 + 1 / (1 + s2)", 4),
])
def test_L_of_diffusivities(g, expected_L):
    text = (f"pde g\nparam lambda = 0.1\nfield u(x)\ndiffusivity g(s2) = {g}\n"
            f"equation dt(u) = dx(g(dx(u)^2) * dx(u))\nscheme explicit(tau = 0.01)\n")
    r = pde2net.compile_text(text).stability
    assert r.L == pytest.approx(expected_L, rel=1e-12)
    assert r.stable and r.verdict == "stable" and r.guarantee == "proof"
    assert r.tau_max == pytest.approx(2 / (expected_L * 4), rel=1e-12)


@pytest.mark.parametrize("g,word", [
    ("(1 - s2 / lambda^2) / (1 + s2 / lambda^2)", "negative diffusivity"),
    ("1 / sqrt(s2)", "unbounded diffusivity"),
    ("1 + s2", "unbounded diffusivity"),
    ("-1 / (1 + s2)", "negative diffusivity"),
])
def test_refusals_name_the_reason(g, word):
    text = (f"pde g\nparam lambda = 0.1\nfield u(x)\ndiffusivity g(s2) = {g}\n"
            f"equation dt(u) = dx(g(dx(u)^2) * dx(u))\nscheme explicit(tau = 0.01)\n")
    r = pde2net.compile_text(text).stability
    assert not r.stable and r.verdict == "not stable" and word in r.reason
    assert r.tau_max is None


def test_tau_above_bound_reports_both_numbers():
    r = pde2net.load("examples/too_large_step.pde").stability
    assert not r.stable and "0.6" in r.reason and "0.5" in r.reason and r.tau_max == 0.5


def test_symbol_bounds_of_other_stencils():
    """Central first difference 1/h^2; 4th-order first derivative (3 + 8 sqrt 6)/(12 h^2) (docs/theory.md §2)."""
    r = pde2net.compile_text(linear_spec(1, stencil="central", h="0.5")).stability
    assert sp.sympify(r.exact["norm_D_sq"]) == 4
    text = linear_spec(1).replace("stencil forward", "stencil [1/12, -2/3, 0, 2/3, -1/12] @ 2")
    r = pde2net.compile_text(text).stability
    assert float(sp.sympify(r.exact["norm_D_sq"])) == pytest.approx((3 + 8 * math.sqrt(6)) / 12, rel=1e-15)


def top_singular_vector(d: np.ndarray) -> np.ndarray:
    return np.linalg.svd(d)[2][0]


def norms_over_steps(net, u0: np.ndarray, steps: int) -> np.ndarray:
    u = torch.tensor(u0, dtype=torch.float64)
    out = [np.linalg.norm(u0, axis=-1)]
    with torch.no_grad():
        for _ in range(steps):
            u = net.block(u)
            out.append(torch.linalg.vector_norm(u, dim=-1).numpy())
    return np.array(out)


def stress_inputs(d: np.ndarray, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    v = top_singular_vector(d)
    step = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    return np.stack([rng.standard_normal(n), step, v, 1e-3 * v, 1e3 * v])


@pytest.mark.parametrize("spec_file", ["perona_malik", "weickert", "charbonnier", "fourth_order"])
def test_no_growth_at_the_bound(spec_file):
    """At tau = tau_max: ||u^(k+1)|| <= ||u^k|| (up to round-off) for 1000 steps, float64."""
    prog = pde2net.load(f"examples/{spec_file}.pde")
    tau_max = prog.stability.tau_max
    text = re.sub(r"(?m)^scheme .*$", f"scheme explicit(tau = {tau_max!r}, steps = 1)", prog.spec.source.text)
    prog = pde2net.compile_text(text)
    assert prog.stability.stable
    m, n = prog.model.order, 64
    w = binomial_weights(m)
    d = dense_difference(w, 0, n, prog.model.boundary, m=m)
    norms = norms_over_steps(prog.module(), stress_inputs(d, n), 1000)
    growth = np.max(norms[1:] / norms[:-1])
    assert growth <= 1 + 1e-12


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("m", [1, 2])
def test_linear_grows_just_above_the_bound(m, boundary):
    """At 1.05 tau_max (even N) the top singular vector grows by |1 - tau sigma^2| > 1 each step."""
    n = 64
    tau_max = pde2net.compile_text(linear_spec(m)).stability.tau_max
    tau = 1.05 * tau_max
    prog = pde2net.compile_text(linear_spec(m, tau=repr(tau), boundary=boundary))
    assert not prog.stability.stable
    d = dense_difference(binomial_weights(m), 0, n, boundary, m=m)
    sigma2 = np.linalg.norm(d, 2) ** 2
    v = top_singular_vector(d)
    norms = norms_over_steps(prog.module(), 1e-6 * v[None], 50)[:, 0]
    expected = abs(1 - tau * sigma2)
    assert expected > 1
    assert norms[-1] / norms[0] == pytest.approx(expected ** 50, rel=1e-8)


def test_max_min_principle_flag():
    """m = 1: tau <= h^2/(2L) gives the max-min principle (docs/theory.md §1)."""
    assert pde2net.load("examples/perona_malik.pde").stability.to_dict()["max_min_principle"] is True
