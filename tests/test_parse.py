"""Syntax and semantic errors point at the right line and column; every DSL spelling is accepted."""
import pytest
import sympy as sp

import pde2net
from pde2net import PdeError
from pde2net.analyse import S

HEAD = "pde t\nparam lambda = 0.1\nfield u(x)\n"  # lines 1-3
EQ = "equation dt(u) = dxx(u)\n"
SCHEME = "scheme explicit(tau = 0.1, steps = 2)\n"

# (text, line, column, fragment of the message or of what was expected)
BAD = [
    ("pde\n" + "field u(x)\n" + EQ + SCHEME, 1, 4, "name after the statement word"),
    (HEAD + "equation dt(u) = dxx(u) +\n" + SCHEME, 4, 26, "expression"),
    (HEAD + "equation dt(u) = dxx(u)) \n" + SCHEME, 4, 24, "unexpected ')'"),
    (HEAD + "equation dt(u) = dxx(u\n" + SCHEME, 4, 23, "closing ')'"),
    (HEAD + EQ + "scheme explicit(tau)\n", 5, 20, "settings in parentheses"),
    (HEAD + EQ + "scheme explicit tau = 1\n", 5, 17, "settings in parentheses"),
    (HEAD + "field\n", 4, 6, "name after the statement word"),
    (HEAD + "foo = 3\n" + EQ + SCHEME, 4, 1, "a statement"),
    (HEAD + "param k = 1 2\n" + EQ + SCHEME, 4, 13, "operator or the end of the line"),
    (HEAD + "param k = 1 $ 2\n" + EQ + SCHEME, 4, 13, "unexpected character '$'"),
    (HEAD + "param \u2113 = 1\n" + EQ + SCHEME, 4, 7, "non-ASCII character"),
    (HEAD + "stencil [1, -1]\n" + EQ + SCHEME, 4, 16, "weight list"),
    # semantic errors
    (HEAD + "equation dt(u) = dxx(v)\n" + SCHEME, 4, 22, "undefined name 'v'"),
    (HEAD + "equation dt(u) = dx(gg(dx(u)^2) * dx(u))\n" + SCHEME, 4, 21, "unknown function 'gg'"),
    (HEAD + "param lambda = 2\n" + EQ + SCHEME, 4, 7, "already defined"),
    (HEAD + "param exp = 2\n" + EQ + SCHEME, 4, 7, "reserved word"),
    (HEAD + "param __x = 2\n" + EQ + SCHEME, 4, 7, "'__'"),
    (HEAD + "equation dx(u) = dxx(u)\n" + SCHEME, 4, 10, "dt(FIELD)"),
    (HEAD + EQ + "scheme explicit(tau = 0.1, step = 2)\n", 5, 28, "did you mean 'steps'"),
    (HEAD + EQ + "scheme explicit(tau = 0.1, steps = 2.5)\n", 5, 36, "positive integer"),
    (HEAD + EQ + "scheme explicit(tau = -0.1)\n", 5, 23, "must be positive"),
    (HEAD + EQ + "scheme explict(tau = 0.1)\n", 5, 8, "did you mean 'explicit'"),
    (HEAD + EQ + "boundary neuman\n" + SCHEME, 5, 10, "did you mean 'neumann'"),
    (HEAD + EQ + "scheme explicit(steps = 2)\n", 5, 1, "needs 'tau'"),
    (HEAD + EQ + SCHEME + "scheme explicit(tau = 1)\n", 6, 1, "second 'scheme'"),
    (HEAD + "equation dt(u) = dxx(u) + dx(u)\n" + SCHEME, 4, 18, "the term dx(u) is not a diffusion term"),
    (HEAD + "equation dt(u) = dx(u)\n" + SCHEME, 4, 18, "odd order"),
    (HEAD + "equation dt(u) = dx(dxx(u))\n" + SCHEME, 4, 18, "found dxx(u)"),
    (HEAD + "param k = 10^10^10\n" + EQ + SCHEME, 4, 14, "too large"),
    (HEAD + "param k = 1 / 0\n" + EQ + SCHEME, 4, 15, "division by zero"),
    (HEAD + "param k = sqrt(-1)\n" + EQ + SCHEME, 4, 11, "not a finite real number"),
    (HEAD + "diffusivity g(s2) = dx(u)\n" + EQ + SCHEME, 4, 21, "outside the equation"),
    (HEAD + "equation dt(u) = dyy(u)\n" + SCHEME, 4, 18, "needs a 2D field"),
    (HEAD + EQ + "stencil [1, 1] @ 0\n" + SCHEME, 5, 1, "not an order-1 difference"),
    (HEAD + EQ + "stencil [1, -2, 1] @ 3\n" + SCHEME, 5, 22, "not an index"),
    (HEAD + EQ + "grid h = 0\n" + SCHEME, 5, 10, "must be positive"),
    ("pde t\nfield u(x)\n" + SCHEME, None, None, "missing 'equation'"),
]


@pytest.mark.parametrize("text,line,col,fragment", BAD)
def test_errors_point_at_the_place(text, line, col, fragment):
    with pytest.raises(PdeError) as info:
        pde2net.compile_text(text, "bad.pde")
    err = info.value
    shown = err.format()
    assert fragment in shown, shown
    if line is None:
        assert err.pos is None and shown.startswith("bad.pde: error:")
        return
    assert (err.pos.line, err.pos.col) == (line, col), shown
    header, src_line, caret = shown.splitlines()[:3]
    assert header.startswith(f"bad.pde:{line}:{col}: error:")
    assert src_line.strip() == text.splitlines()[line - 1].strip()
    assert caret.index("^") - 4 == col - 1  # the caret sits under the column
    assert "expected" in shown


def flux_of(rhs: str, extra: str = "") -> tuple[int, sp.Expr]:
    text = HEAD + extra + f"equation dt(u) = {rhs}\n" + SCHEME
    model = pde2net.compile_text(text).model
    return model.order, sp.simplify(model.flux_value)


PM = "diffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n"
PHI = "flux phi(s) = s / (1 + s^2 / lambda^2)\n"
PM_FLUX = S / (1 + 100 * S ** 2)


@pytest.mark.parametrize("rhs,extra,order,flux", [
    ("dx( g(dx(u)^2) * dx(u) )", PM, 1, PM_FLUX),
    ("dx( phi(dx(u)) )", PHI, 1, PM_FLUX),
    ("dxx(u)", "", 1, S),
    ("dx(dx(u))", "", 1, S),
    ("3 * dxx(u)", "", 1, 3 * S),
    ("dxx(u) / 2", "", 1, S / 2),
    ("lambda * dx(g(dx(u)^2) * dx(u))", PM, 1, PM_FLUX / 10),
    ("-dxx( g(dxx(u)^2) * dxx(u) )", PM, 2, PM_FLUX),
    ("-dxxxx(u)", "", 2, S),
    ("(-1)^(2+1) * dxx(phi(dxx(u)))", PHI, 2, PM_FLUX),
    ("dxxx( phi(dxxx(u)) )", PHI, 3, PM_FLUX),
    ("dxxxxxx(u)", "", 3, S),
    ("-dxxxxxxxx(u)", "", 4, S),
    ("dx( dx(u) ^ 3 + dx(u) )", "", 1, S ** 3 + S),
    ("dx( g(dx(u)**2) * dx(u) )", PM, 1, PM_FLUX),
])
def test_every_spelling_is_recognised(rhs, extra, order, flux):
    m, got = flux_of(rhs, extra)
    assert m == order
    assert sp.simplify(got - flux) == 0


@pytest.mark.parametrize("text", [
    "pde heat\nfield u(x, y)\nequation dt(u) = laplace(u)\nscheme explicit(tau = 0.1)\n",
    "pde pm\nparam l = 1\nfield u(x, y)\ndiffusivity g(s2) = 1 / (1 + s2 / l^2)\n"
    "equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )\ngrid hx = 1, hy = 0.5\nsize NX = 32, NY = 16\n"
    "scheme explicit(tau = 0.1)\n",
])
def test_2d_syntax_parses_and_is_recognised(text):
    """2D is part of the language; the model stage recognises the isotropic forms."""
    model = pde2net.analyse.compile_model(pde2net.parse.parse(text))
    assert model.ndim == 2 and model.order == 1


def test_python_keywords_are_valid_names():
    text = ("pde class\nparam lambda = 0.1\nparam sum = 2\nfield u(x)\n"
            "diffusivity exec(s2) = sum / (1 + s2 / lambda^2)\n"
            "equation dt(u) = dx(exec(dx(u)^2) * dx(u))\nscheme explicit(tau = 0.1)\n")
    prog = pde2net.compile_text(text)
    assert prog.arch.class_name == "Class"
    src = prog.source()
    assert "lambda_ = 0.1" in src and "sum_ = 2.0" in src


def test_comments_blank_lines_and_crlf():
    text = "# c\r\n\r\npde t  # name\r\n   # indented comment\r\nfield u(x)\r\nequation dt(u) = dxx(u)\r\n" \
           "scheme explicit(tau = 0.1)  # end"
    assert pde2net.compile_text(text).model.order == 1


def test_numbers_are_exact_rationals():
    model = pde2net.compile_text(HEAD + EQ + "scheme explicit(tau = 1e-1, steps = 2)\n").model
    assert model.setting("tau") == sp.Rational(1, 10)
    assert model.params["lambda"] == sp.Rational(1, 10)


def test_file_errors(tmp_path):
    with pytest.raises(PdeError, match="cannot read"):
        pde2net.load(tmp_path / "missing.pde")
    bad = tmp_path / "latin1.pde"
    bad.write_bytes(b"pde t\nparam k = 1 # \xe9\n")
    with pytest.raises(PdeError, match="not valid UTF-8") as info:
        pde2net.load(bad)
    assert info.value.pos.line == 2
