"""The fast paths compute the same network, and `check` starts without torch.

- the compiled step (``module(compile=True)``) against eager and the dense float64 reference;
- fused against conv in float32 (round-off), W2 rounded once from the exact product;
- ``u - (tau D^T) v`` is bit for bit ``u + (-tau D^T) v`` (what the emitted source computes);
- the cheaper range computation in stability equals sympy's ``minimum``/``maximum``;
- ``pde2net check`` of an explicit spec imports neither torch, networkx nor NumPy (its start-up
  time, benchmarks/bench_compile.py);
- the scalar sampling that replaced NumPy in the stability cross-check against sympy's values.
"""
import ast
import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import torch
from sympy.calculus.util import maximum, minimum

import pde2net
from pde2net import analyse, stability
from reference import binomial_weights, dense_difference, explicit_dense, perona_malik

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

PM_SPEC = """pde pm
param lambda = 0.7
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
grid h = {h}
boundary {boundary}
scheme explicit(tau = {tau}, steps = {steps})
"""


def pm_program(boundary: str = "neumann", h: str = "1", tau: str = "0.2", steps: int = 3):
    return pde2net.compile_text(PM_SPEC.format(boundary=boundary, h=h, tau=tau, steps=steps))


def test_compiled_step_matches_eager_and_dense_reference():
    """compile=True compiles one step (one graph for all steps) and computes the same network."""
    from torch._dynamo.utils import counters

    prog = pm_program("neumann", tau="0.2", steps=3)
    u0 = np.random.default_rng(0).standard_normal((3, 40))
    before = counters["stats"]["unique_graphs"]
    net = prog.module(compile=True)
    got = type(net).forward(net, torch.tensor(u0)).numpy()  # the compiled step (not the C++ kernel)
    assert counters["stats"]["unique_graphs"] - before >= 1  # compiled (the step, reused 3 times)
    assert type(net).__name__ == "Pm" and isinstance(net, torch.nn.Module)  # not a wrapper
    eager = prog.module()(torch.tensor(u0)).numpy()
    want = explicit_dense(u0, dense_difference(binomial_weights(1), 0, 40, "neumann"),
                          perona_malik(0.7), 0.2, 3)
    assert np.max(np.abs(got - eager)) <= 1e-13
    assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)


def test_compiled_network_follows_a_new_tau_and_grad_mode():
    """The compiled step keeps few guards (program._step_guards), but still the ones a user can
    trip: a new ``net.tau`` recompiles with the new weights, and a step compiled under no_grad
    recompiles (and differentiates) when called with grad enabled."""
    prog = pm_program("dirichlet", tau="0.2", steps=2)
    u0 = np.random.default_rng(3).standard_normal((2, 30))
    d = dense_difference(binomial_weights(1), 0, 30, "dirichlet")
    net = prog.module(compile=True)
    with torch.no_grad():
        net(torch.tensor(u0))
        net.tau = sp.Rational(1, 10)
        got = net(torch.tensor(u0)).numpy()
    want = explicit_dense(u0, d, perona_malik(0.7), 0.1, 2)
    assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)

    x = torch.tensor(u0, requires_grad=True)
    net(x).square().sum().backward()
    eager = prog.module()
    eager.tau = sp.Rational(1, 10)
    y = torch.tensor(u0, requires_grad=True)
    eager(y).square().sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, y.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary,stencil", [
    ("neumann", "forward"), ("neumann", "central"), pytest.param("periodic", "forward", marks=pytest.mark.slow),
    pytest.param("dirichlet", "forward", marks=pytest.mark.slow)])
def test_compiled_2d_step_matches_dense_reference(boundary, stencil):
    """2D under torch.compile (one kernel; for neumann the flux formed on the complete-stencil
    rows only, as D^T reads it) against the Kronecker-product float64 reference."""
    from reference import dense_gradient_2d, explicit_dense_2d

    text = PM_SPEC.replace("field u(x)", "field u(x, y)").replace(
        "equation dt(u) = dx( g(dx(u)^2) * dx(u) )",
        "equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )").replace(
        "boundary {boundary}", f"boundary {{boundary}}\nstencil {stencil}")
    prog = pde2net.compile_text(text.format(boundary=boundary, h="1", tau="0.1", steps=3))
    u0 = np.random.default_rng(4).standard_normal((2, 9, 11))
    got = prog.module(compile=True)(torch.tensor(u0)).numpy()
    weights, offset = ([-1.0, 1.0], 0) if stencil == "forward" else ([-0.5, 0.0, 0.5], 1)
    gx, gy = dense_gradient_2d(weights, offset, (9, 11), boundary)
    want = explicit_dense_2d(u0, gx, gy, lambda s2: 1 / (1 + s2 / 0.49), 0.1, 3)
    assert np.max(np.abs(got - want)) <= 1e-13 * np.max(np.abs(want))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["fused", "conv"])
@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
def test_compiled_backends_match_dense_reference(backend, boundary):
    u0 = np.random.default_rng(1).standard_normal((2, 33))
    net = pm_program(boundary, steps=4).module(backend=backend, compile=True)
    got = net(torch.tensor(u0)).numpy()
    want = explicit_dense(u0, dense_difference(binomial_weights(1), 0, 33, boundary), perona_malik(0.7), 0.2, 4)
    assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)


@pytest.mark.slow
def test_compiled_graph_does_not_grow_with_steps():
    """Compiling the step, not forward: the traced graph has the same size for 2 and 9 steps."""
    from torch._dynamo.utils import counters

    sizes = []
    for steps in (2, 9):
        before = counters["stats"]["calls_captured"]
        net = pm_program(steps=steps).module(compile=True)
        type(net).forward(net, torch.randn(2, 50, dtype=torch.float64))  # the compiled step, not the C++ kernel
        sizes.append(counters["stats"]["calls_captured"] - before)
    assert sizes[0] == sizes[1] > 0


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
def test_fused_and_conv_agree_in_float32(boundary):
    """Both lowerings against the float64 reference, within float32 round-off of 20 steps."""
    u0 = np.random.default_rng(2).standard_normal((4, 64))
    prog = pm_program(boundary, steps=20)
    want = explicit_dense(u0, dense_difference(binomial_weights(1), 0, 64, boundary), perona_malik(0.7), 0.2, 20)
    outs = [prog.module(backend=b)(torch.tensor(u0, dtype=torch.float32)).double().numpy()
            for b in ("fused", "conv")]
    scale = np.max(np.abs(want))
    for got in outs:
        assert np.max(np.abs(got - want)) <= 20 * 8 * np.finfo(np.float32).eps * scale
    assert np.max(np.abs(outs[0] - outs[1])) <= 20 * 8 * np.finfo(np.float32).eps * scale


def test_w2_is_the_exact_product_rounded_once():
    """h = 0.7, tau = 0.0123: tau * w / h^2 formed exactly (fractions here), then rounded once;
    the float product float(tau) * float(w / h^2) differs in the last bit for these numbers."""
    text = """pde q
field u(x)
equation dt(u) = -dxxxx(u)
grid h = 0.7
boundary periodic
scheme explicit(tau = 0.0123, steps = 1)
"""
    net = pde2net.compile_text(text).module()
    pair = net.op.pair
    h, tau = Fraction(7, 10), Fraction(123, 10000)
    want = tuple(float(tau * w / h ** 2) for w in binomial_weights(2))
    assert pair.w2(net.tau) == want
    assert pair.w2(-net.tau) == tuple(-w for w in want)
    assert tuple(float(tau) * float(w / h ** 2) for w in binomial_weights(2)) != want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_minus_tau_dt_is_bitwise_plus_negative_scale(dtype):
    """explicit_step computes u - (tau D^T) v; the source prints u + (-tau D^T) v: same bits."""
    net = pm_program("dirichlet", tau="0.0371").module()
    op = net.op
    u = torch.randn(5, 77, dtype=dtype) * 3
    v = op.flux(op.D(u))
    assert torch.equal(op.explicit_step(u, net.tau), u + op.Dt(v, -net.tau))


RATIOS = {
    "perona-malik": lambda t: 1 / (1 + t ** 2 / sp.Rational(49, 100)),
    "charbonnier": lambda t: 1 / sp.sqrt(1 + t ** 2 * 4),
    "forward-backward": lambda t: (1 - t ** 2) / (1 + t ** 4),
    "tanh": lambda t: sp.tanh(t) / t,
    "gauss": lambda t: sp.exp(-t ** 2 / 2),
    "pole": lambda t: 1 / (t - 1) ** 2,
    "constant": lambda t: sp.Integer(3) + 0 * t,
    "atan": lambda t: sp.atan(3 * t) / t,
}


@pytest.mark.parametrize("name", sorted(RATIOS))
def test_extrema_equal_sympy_minimum_maximum(name):
    t = stability._T
    r = RATIOS[name](t)
    domain = sp.Interval.open(0, sp.oo)
    try:
        want = (stability._closed_form(minimum(r, t, domain), r),
                stability._closed_form(maximum(r, t, domain), r))
    except (NotImplementedError, ValueError) as exc:  # sympy cannot: neither may we (-> "cannot prove")
        with pytest.raises(type(exc)):
            stability._extrema(r)
        return
    assert stability._extrema(r) == want


def test_tree_text_without_networkx_equals_graph_text():
    for path in sorted(EXAMPLES.glob("*.pde")):
        prog = pde2net.load(path)
        assert analyse.expression_text(prog.model) == analyse.graph_text(prog.graph), path.name


CHECK_IMPORTS = """
import io, sys, contextlib
from pde2net import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = cli.main(sys.argv[1:])
print(repr((code, sorted(m for m in ("torch", "networkx", "numpy") if m in sys.modules))))
"""


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_check_imports_neither_torch_nor_networkx(extra):
    """``check`` never loads torch or networkx.  NumPy it does load: the floating-point check of
    the flux (docs/theory.md §14) evaluates the network's op trees in real float32 and float64
    arithmetic, which plain Python floats cannot do."""
    args = ["check", str(EXAMPLES / "perona_malik.pde")] + extra
    res = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    code, heavy = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    assert code == 0
    assert heavy in ([], ["numpy"]), f"check imported {heavy}: keep them lazy (start-up time)"


def test_check_json_verdict_unchanged_by_the_fast_range():
    """The bound printed by check: L = 1 for Perona-Malik, tau_max = h^2/2 exactly."""
    res = subprocess.run([sys.executable, "-m", "pde2net.cli", "check", "--json",
                          str(EXAMPLES / "perona_malik.pde")], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    data = json.loads(res.stdout)
    assert (data["L"], data["tau_max"], data["verdict"], data["bound_expr"]) == (1.0, 0.5, "stable", "h**2/(2*L)")


@pytest.mark.slow
def test_many_compiled_networks_in_one_process_all_compile():
    """Each network compiles its own copy of the step: dynamo's limit of 8 recompilations per code
    object would otherwise make the ninth network of a process run eagerly, silently."""
    from torch._dynamo.utils import counters

    u = torch.randn(2, 32, dtype=torch.float64)
    for i in range(10):
        before = counters["stats"]["unique_graphs"]
        prog = pm_program(tau=f"0.{20 + i}", steps=2)
        net = prog.module(compile=True)
        got = type(net).forward(net, u)  # the compiled step (the C++ kernel would compile nothing)
        # >= 1: dynamo may also compile a shape-generic graph (its shape profile is per function)
        assert counters["stats"]["unique_graphs"] - before >= 1, f"network {i} was not compiled"
        assert torch.allclose(got, prog.module()(u), rtol=0, atol=1e-13)


@pytest.mark.parametrize("k,left,right", [(2, 1, 1), (2, 0, 1), (3, 2, 2), (3, 1, 1), (5, 4, 4), (5, 2, 2), (4, 0, 3)])
@pytest.mark.parametrize("extra", [0, 1, 35])
def test_zero_padded_sum_is_bitwise_the_padded_form(k, left, right, extra):
    """The compiled path's split (interior + end columns) equals the padded sum bit for bit."""
    from pde2net.layers import shifted_sum, zero_padded_sum

    n = k + extra
    gen = torch.Generator().manual_seed(k * 100 + n)
    x = torch.randn(3, n, generator=gen, dtype=torch.float32)
    coeffs = tuple(float(c) for c in torch.randn(k, generator=gen, dtype=torch.float64)) if k > 2 else (-0.3, 0.3)
    starts = tuple(k - 1 - j for j in range(k))
    want = shifted_sum(torch.nn.functional.pad(x, (left, right)), coeffs, starts, n + left + right - k + 1)
    got = zero_padded_sum(x, left, right, coeffs, starts)
    assert got.shape == want.shape and torch.equal(got, want)


@pytest.mark.parametrize("dim", [-1, -2])
@pytest.mark.parametrize("left,right", [(1, 1), (0, 1), (2, 0), (0, 0)])
def test_zero_pad_stored_is_zero_padding(dim, left, right):
    """The compiled path's padding by concatenation holds the values of F.pad (zeros around x)."""
    from pde2net.layers import pad_dim, zero_pad_stored

    x = torch.randn(2, 5, 6, dtype=torch.float64)
    got = zero_pad_stored(x, left, right, dim)
    assert torch.equal(got, pad_dim(x, left, right, "zeros", dim))
    n = x.shape[dim]
    assert torch.equal(got.narrow(dim, left, n), x) and got.shape[dim] == n + left + right


SAMPLED = {
    "perona-malik": lambda s: s / (1 + s ** 2 / sp.Rational(49, 100)),
    "pole": lambda s: 1 / s,
    "sqrt of negative": lambda s: sp.sqrt(1 - s),
    "log": lambda s: sp.log(s) * sp.tanh(s),
    "overflow": lambda s: sp.exp(s ** 2) / (1 + s),
    "min": lambda s: sp.Min(s, 2 - s ** 3),
    "power": lambda s: (s - 2) ** sp.Rational(3, 2) + s ** -2,
}


@pytest.mark.parametrize("name", sorted(SAMPLED))
def test_scalar_function_matches_sympy_and_gives_nan_where_undefined(name):
    """exprs.scalar_function against sympy's 30-digit value: equal to round-off where the value
    is a finite real, nan where it is not (NumPy's inf/nan, which the sampler discards)."""
    from pde2net import exprs

    s = sp.Symbol("s", real=True)
    e = SAMPLED[name](s)
    f = exprs.scalar_function(exprs.lower_expr(e, {s: "s"}), "s")
    for x in (0.0, 1e-9, 0.3, 1.0, 1.7, 2.0, 5.5, 30.0, 1e3, 1e8):
        got = f(x)
        exact = sp.N(e.subs(s, sp.Float(x, 30)), 30)
        if exact.is_real and exact.is_finite and abs(float(exact)) < 1e300:
            assert got == pytest.approx(float(exact), rel=1e-14, abs=1e-300), (name, x)
        else:
            assert math.isnan(got), (name, x, got)


def _divisions(op):
    """(divisor, ...) of every div node of an op tree."""
    out = [op.args[1]] if op.kind == "div" else []
    for a in op.args:
        out += _divisions(a)
    return out


def _uses_var(op, name: str) -> bool:
    return (op.kind == "var" and op.name == name) or any(_uses_var(a, name) for a in op.args)


def test_param_denominators_become_one_reciprocal_per_call():
    """s / (1 + s^2/lambda^2): one division per point (by the field-dependent 1 + ...), lambda^2 as
    a reciprocal computed once per call; the value agrees with sympy to a few ulp."""
    from pde2net import exprs

    s, lam = sp.Symbol("s", real=True), sp.Symbol("lambda", positive=True)
    phi = s / (1 + s ** 2 / lam ** 2)
    op = exprs.lower_expr(phi, {s: "s", lam: "lambda"}, frozenset({s}))
    divisors = _divisions(op)
    assert sum(_uses_var(d, "s") for d in divisors) == 1
    assert [d for d in divisors if not _uses_var(d, "s")] == [exprs.Op("pow", (exprs.Op("var", name="lambda"),), 2)]
    plain = exprs.lower_expr(phi, {s: "s", lam: "lambda"})  # no fields given: unchanged lowering
    assert sum(_uses_var(d, "s") for d in _divisions(plain)) == 1 and len(_divisions(plain)) == 2
    x = np.linspace(-30, 30, 1001)
    got = exprs.evaluate(op, {"s": x, "lambda": 0.7}, exprs.LIBS["numpy"]())
    want = np.array([float(phi.subs({s: sp.Float(v, 30), lam: sp.Rational(7, 10)}).evalf(30)) for v in x])
    assert np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-300)) <= 4 * np.finfo(float).eps


def test_a_second_network_on_another_shape_compiles_a_static_kernel():
    """Each compiled network has its own shape profile: one first called on (2, 57) after another
    ran on (3, 40) is compiled for its shape, not as a shape-generic (slower) kernel."""
    import logging

    marked = []

    class Spy(logging.Handler):
        def emit(self, record):
            if "as dynamic" in record.getMessage():
                marked.append(record.getMessage())

    log = logging.getLogger("torch.fx.experimental.symbolic_shapes")  # where dynamo says so
    spy, level = Spy(level=logging.INFO), log.level
    log.addHandler(spy)
    log.setLevel(logging.INFO)
    try:
        pm_program(tau="0.21").module(compile=True)(torch.randn(3, 40, dtype=torch.float64))
        prog = pm_program(tau="0.22", steps=2)
        u = torch.randn(2, 57, dtype=torch.float64)
        got = prog.module(compile=True)(u)
    finally:
        log.removeHandler(spy)
        log.setLevel(level)
    assert marked == []
    assert torch.allclose(got, prog.module()(u), rtol=0, atol=1e-13)


def test_compiled_trainable_network_gradients_match_eager():
    """compile=True on a trainable network (shared parameters): the same loss and gradients as
    the eager network, and it follows an in-place parameter update (tensor guards kept)."""
    prog = pm_program("neumann", tau="0.2", steps=4)
    torch.manual_seed(0)
    eager = prog.module(trainable=True, dtype=torch.float64)
    net = prog.module(trainable=True, dtype=torch.float64, compile=True)
    net.load_state_dict(eager.state_dict())
    u = torch.randn(3, 40, dtype=torch.float64)
    for model in (eager, net):
        model(u).square().sum().backward()
    for a, b in zip(eager.parameters(), net.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        for model in (eager, net):
            for p in model.parameters():
                p.mul_(1.01)
        assert torch.allclose(net(u), eager(u), rtol=0, atol=1e-13)


def test_compiling_many_unshared_trainable_blocks_warns():
    """One graph per block index: past dynamo's recompile limit the remaining blocks run eagerly,
    which compile_steps says when the network is built."""
    prog = pm_program("neumann", tau="0.2", steps=12)
    with pytest.warns(UserWarning, match="compiles the first"):
        prog.module(trainable=True, shared=False, compile=True)
