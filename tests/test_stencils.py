"""Stencils: exact weights, accuracy measured from the Taylor residual, dot test, norm bounds."""
import numpy as np
import pytest
import sympy as sp

from pde2net.stencils import Stencil, dot_test, make_stencil
from reference import dense_difference

BOUNDARIES = ["neumann", "periodic", "dirichlet"]


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["forward", "backward", "central"])
def test_exact_on_polynomials_and_measured_accuracy(kind, m):
    """D is exact on polynomials of degree < m + p and not on x^(m+p): p is the accuracy."""
    st = make_stencil(kind, m, sp.Rational(1, 3))
    p = st.accuracy
    assert p == (1 if kind != "central" else 2)
    x = sp.Symbol("x")
    h = sp.Rational(1, 3)
    for deg in range(m + p):
        f = x ** deg
        approx = sum(w * f.subs(x, (j - st.offset) * h) for j, w in enumerate(st.scaled))
        assert approx == sp.diff(f, x, m).subs(x, 0)
    f = x ** (m + p)
    approx = sum(w * f.subs(x, (j - st.offset) * h) for j, w in enumerate(st.scaled))
    assert approx != sp.diff(f, x, m).subs(x, 0)


def test_convergence_slope_is_the_order():
    """The log-log slope of the error on sin(x) equals the measured accuracy (findiff's test)."""
    for kind, m in [("forward", 1), ("central", 2), ("central", 1)]:
        errs, hs = [], [0.1 / 2 ** k for k in range(4)]
        for h in hs:
            st = make_stencil(kind, m, sp.Float(h, 30))
            val = sum(float(w) * np.sin(0.3 + (j - st.offset) * h) for j, w in enumerate(st.scaled))
            exact = [np.cos, lambda t: -np.sin(t)][m - 1](0.3)
            errs.append(abs(val - exact))
        slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
        assert slope == pytest.approx(make_stencil(kind, m, sp.Integer(1)).accuracy, abs=0.1)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kind,m", [("forward", 1), ("backward", 2), ("central", 1), ("central", 3)])
def test_matrix_and_adjoint_against_dense(kind, m, boundary):
    rng = np.random.default_rng(3)
    st = make_stencil(kind, m, sp.Rational(1, 2))
    n = 19
    d = dense_difference([float(w) for w in st.weights], st.offset, n, boundary, h=0.5, m=m)
    np.testing.assert_allclose(st.matrix(n, boundary), d, rtol=0, atol=1e-12)
    assert dot_test(st, n, boundary, rng) < 1e-13
    assert st.T.T == st
    # ||D||^2 never exceeds the symbol bound, for any N (docs/theory.md §2)
    for nn in (8, 9, 33):
        dn = dense_difference([float(w) for w in st.weights], st.offset, nn, boundary, h=0.5, m=m)
        assert np.linalg.norm(dn, 2) ** 2 <= float(st.symbol_sq_max()) * (1 + 1e-12)


def test_neumann_exact_finite_norm():
    """m = 1 zero flux: ||D||^2 = (4/h^2) cos^2(pi/2N) exactly (docs/theory.md §2)."""
    for n in (5, 16, 31):
        d = dense_difference([-1.0, 1.0], 0, n, "neumann", h=0.7)
        assert np.linalg.norm(d, 2) ** 2 == pytest.approx(4 / 0.49 * np.cos(np.pi / (2 * n)) ** 2, rel=1e-12)


def test_consistency_errors():
    assert Stencil((sp.Integer(1), sp.Integer(1)), 0, 1).consistency_error() is not None
    assert "not 1" in Stencil((sp.Integer(-2), sp.Integer(2)), 0, 1).consistency_error()
    assert Stencil((sp.Integer(-1), sp.Integer(1)), 0, 1).consistency_error() is None
