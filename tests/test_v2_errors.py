"""The version-2 statements' errors: one message at file:line:col with what was expected, exit 2."""
import pytest

import pde2net
from pde2net import PdeError
from pde2net.cli import main

H2 = "pde t\nparam sigma = 1\nfield u(x, y)\n"  # lines 1-3
PM = "diffusivity g(s2) = 1 / (1 + s2)\n"      # line 4
SCHEME = "scheme explicit(tau = 0.1, steps = 2)\n"

# (text, line, column, fragment of the message or of what was expected)
BAD = [
    ("pde t\ninput f(x)\nfield u(x)\nequation dt(u) = dxx(u)\n" + SCHEME, 2, 1, "before the 'field'"),
    (H2 + "input f(x)\nequation dt(u) = laplace(u)\n" + SCHEME, 4, 1, "input f(x, y)"),
    (H2 + "input f(x, y)\nequation dt(u) = laplace(u) + alpha * (f - u)\n" + SCHEME, 5, 31, "undefined name 'alpha'"),
    ("pde t\nfield u(x)\ntensor T = [[1, 0], [0, 1]]\nequation dt(u) = dxx(u)\n" + SCHEME, 3, 1, "2D field"),
    (H2 + "tensor T = [[1, 0, 0], [0, 1, 0]]\nequation dt(u) = div(T * grad(u))\n" + SCHEME, 4, 12, "2 x 2"),
    (H2 + "tensor T = foo(u)\nequation dt(u) = div(T * grad(u))\n" + SCHEME, 4, 12, "edge_enhancing"),
    (H2 + "tensor T = edge_enhancing(h, grad(gauss(u, sigma)))\nequation dt(u) = div(T * grad(u))\n"
     + SCHEME, 4, 27, "not a diffusivity defined before"),
    (H2 + PM + "equation dt(u) = [[1, 0], [0, 1]]\n" + SCHEME, 5, 18, "only as a tensor's value"),
    (H2 + PM + "equation dt(u) = div(g(norm(grad(gauss(u)))^2) * grad(u))\n" + SCHEME, 5, 34, "gauss(u, sigma)"),
    ("pde t\nfield u(x, y) channels 0\nequation dt(u) = laplace(u)\n" + SCHEME, 2, 24, "channels"),
    ("pde t\nfield u(x, y) channels 100\nequation dt(u) = laplace(u)\n" + SCHEME, 2, 24, "channels"),
    ("pde t\nfield u(x, y)\nequation dt(u) = dz(dz(u))\n" + SCHEME, 3, 18, "3D field"),
    ("pde t\nfield u(x, y, z)\nequation dt(u) = laplace(u)\nsize NX = 8, NY = 8\n" + SCHEME, 4, 1, "NZ"),
    ("pde t\nfield u(x, y, w)\nequation dt(u) = laplace(u)\n" + SCHEME, 2, 15, "field NAME(x, y, z)"),
    (H2 + "equation dt(u) = laplace(u)\nboundary neumann(value = 1)\n" + SCHEME, 5, 18, "belongs to dirichlet"),
    (H2 + "equation dt(u) = laplace(u)\nboundary dirichlet(level = 1)\n" + SCHEME, 5, 20, "dirichlet(value = 1)"),
    (H2 + "equation dt(u) = laplace(u)\nboundary x: dirichlet(value = 1), y: dirichlet(value = 2)\n"
     + SCHEME, 5, 31, "different values"),
    (H2 + "input f(x, y)\nequation dt(u) = laplace(u) + (f - u)\nboundary dirichlet(value = 1)\n" + SCHEME,
     6, 1, "boundary value with a reaction"),
    (H2 + "equation dt(u) = laplace(u) + 0.5 * (u - u^3)\nscheme fed(tau_max = 0.1, cycles = 1, cycle_length = 2)\n",
     5, 1, "pure diffusion operator"),
    (H2 + "equation dt(u) = laplace(u) + dx(u)\n" + SCHEME, 4, 18, "not a diffusion term"),
    (H2 + "equation dt(u) = laplace(u) + dx(u)\nstencil anisotropic(gamma = 1)\n" + SCHEME, 5, 21, "delta"),
]


@pytest.mark.parametrize("text, line, col, fragment", BAD)
def test_errors_point_at_the_place(text, line, col, fragment):
    with pytest.raises(PdeError) as err:
        pde2net.compile_text(text, "bad.pde")
    e = err.value
    assert (e.pos.line, e.pos.col) == (line, col), str(e)
    assert fragment in str(e), str(e)


def test_cli_exit_status_two_without_traceback(tmp_path, capsys):
    path = tmp_path / "bad.pde"
    path.write_text(BAD[1][0])
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.pde:4:1" in err and "Traceback" not in err


@pytest.mark.parametrize("spelling", [
    "boundary dirichlet(value = 0.5)", "boundary x: dirichlet(value = 0.5), y: neumann",
    "boundary x: periodic, y: dirichlet(value = 0.5)"])
def test_a_boundary_value_shifts_the_evolution(spelling):
    """With u = b outside the domain, a constant field b is a steady state, and u - b evolves as
    under the homogeneous problem (the difference of two runs is the b-shift)."""
    import torch

    text = H2 + PM + f"equation dt(u) = div(g(norm(grad(u))^2) * grad(u))\n{spelling}\n" + SCHEME
    prog = pde2net.compile_text(text)
    assert prog.operator and "||u^k - b||" in prog.stability.reason
    net = prog.module(dtype=torch.float64)
    const = torch.full((1, 6, 7), 0.5, dtype=torch.float64)
    assert torch.equal(net(const), const)
    homog = pde2net.compile_text(text.replace("(value = 0.5)", "")).module(dtype=torch.float64)
    v = torch.randn(1, 6, 7, dtype=torch.float64)
    assert torch.allclose(net(v + 0.5) - 0.5, homog(v), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", ["operator_sum", "explicit_net", "gradient", "network"])
def test_spec_named_like_runtime_code(name, tmp_path):
    """The standalone source inlines the runtime: a spec named like one of its classes or
    functions gets another class name, and still equals the live network bit for bit."""
    import torch

    from reference import load_source

    prog = pde2net.compile_text(f"pde {name}\nparam lambda = 0.5\nfield u(x, y)\n" + "diffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n"
                                + "equation dt(u) = div(g(norm(grad(u))^2) * grad(u)) - 0.1 * u\n" + SCHEME)
    mod = load_source(prog.source(), tmp_path)
    u = torch.randn(2, 6, 5, dtype=torch.float64)
    assert torch.equal(mod.Network()(u), prog.module(dtype=torch.float64)(u))


def test_a_factor_stays_with_its_term():
    """``(1 - k) * laplace(u)`` with k = 1/2 is forward diffusion with weight 1/2: the factor is
    not expanded into ``laplace(u) - k laplace(u)`` (a backward-looking term)."""
    prog = pde2net.compile_text("pde t\nparam k = 0.5\nfield u(x, y)\n"
                                "equation dt(u) = (1 - k) * laplace(u) - 0.1 * u\n" + SCHEME)
    rep = prog.stability
    assert rep.verdict == "stable" and len(rep.extra["terms"]) == 1
    assert rep.exact["lambda_max_bound"] == "4"  # (1 - 1/2) * 8 for h = 1
    split = pde2net.compile_text("pde t\nparam k = 0.5\nfield u(x, y)\n"
                                 "equation dt(u) = k * (dx(dx(u)) + dy(dy(u))) - 0.1 * u\n" + SCHEME)
    assert len(split.stability.extra["terms"]) == 2 and split.stability.exact["lambda_max_bound"] == "4"
