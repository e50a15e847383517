"""Networks that behave in any PyTorch code: constants as buffers (state_dict, .to(),
load_state_dict), zero graph breaks under torch.compile, a re-checked tau, exports of frozen and
trainable networks with keyword-named params, ONNX of one step, and freezing a trained network
back into a spec."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pde2net
from reference import binomial_weights, dense_difference, explicit_dense, perona_malik

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

PM_SPEC = """pde pm
param lambda = 0.7
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
grid h = {h}
boundary neumann
scheme explicit(tau = {tau}, steps = {steps})
"""

#: params named after Python keywords and after the flux argument
KEYWORD_SPEC = """pde kw
param lambda = 0.7
param class = 1.5
param s = 2
field u(x)
equation dt(u) = dx( s * class / (1 + dx(u)^2 / lambda^2) * dx(u) )
grid h = 1
boundary neumann
scheme explicit(tau = 0.05, steps = 3)
"""


def pm(h: str = "1", tau: str = "0.2", steps: int = 3):
    return pde2net.compile_text(PM_SPEC.format(h=h, tau=tau, steps=steps))


# ------------------------------------------------------------------ 1. buffers, graph breaks
@pytest.mark.parametrize("example", ["perona_malik.pde", "perona_malik_2d.pde", "fed.pde", "fsi.pde",
                                     "implicit.pde", "multigrid.pde"])
def test_compiled_sequential_has_no_graph_breaks(example):
    """``nn.Sequential(conv, net)`` traces as one graph (no sympy or mpmath in forward), and the
    traced run computes what the eager network computes."""
    prog = pde2net.load(EXAMPLES / example)
    net = prog.module(steps=2)  # breaks do not depend on the number of steps; the trace does
    image = len(prog.arch.dims) == 2
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 1, 3, padding=1) if image else nn.Conv1d(1, 1, 3, padding=1)
    x = torch.rand(1, 1, 24, 20) if image else torch.rand(2, 1, 65)
    model = nn.Sequential(conv, net)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    with torch.no_grad():
        assert torch.equal(torch.compile(model, backend="eager")(x), model(x))


def test_state_dict_holds_the_constants():
    """W1 = (-1, 1)/h, W2 = -tau W1 rounded once from the exact product, tau, and the param, as
    float64 buffers; the network has no parameters."""
    net = pm(h="0.7", tau="0.0123").module()
    sd = net.state_dict()
    assert list(net.parameters()) == []
    assert sd["op.pair.W1"].dtype == torch.float64
    assert sd["op.pair.W1"].tolist() == [-1 / 0.7, 1 / 0.7]
    from fractions import Fraction
    exact = [Fraction(-123, 10000) * w / Fraction(7, 10) for w in (-1, 1)]
    assert sd["op.pair.W2"].tolist() == [float(w) for w in exact]
    assert sd["tau_value"].item() == 0.0123
    assert sd["op.flux.param_lambda"].item() == 0.7


def test_to_moves_the_buffers_and_load_state_dict_round_trips():
    net = pm().module().to(torch.float32)
    assert all(b.dtype == torch.float32 for b in net.buffers())
    net64 = pm().module().to(torch.float64)
    assert all(b.dtype == torch.float64 for b in net64.buffers())
    fresh = pm().module()
    fresh.load_state_dict(net64.state_dict())  # the same constants: accepted
    u0 = np.random.default_rng(0).standard_normal((2, 30))
    want = explicit_dense(u0, dense_difference(binomial_weights(1), 0, 30, "neumann"), perona_malik(0.7),
                          0.2, 3)
    assert np.max(np.abs(fresh(torch.tensor(u0)).numpy() - want)) <= 1e-13


def test_load_state_dict_refuses_other_constants_and_changes_nothing():
    """forward reads the constants as Python floats: a state with other values would be a network
    the buffers no longer describe, so it is refused before anything is copied."""
    net = pm().module()
    sd = net.state_dict()
    sd["tau_value"] = torch.tensor(0.6, dtype=torch.float64)
    with pytest.raises(ValueError, match="tau_value differs"):
        net.load_state_dict(sd)
    assert net.tau_value.item() == 0.2


# ------------------------------------------------------------------ 2. tau re-checked
def test_tau_above_the_bound_is_refused():
    """Perona-Malik: Phi(s)/s <= L = 1, ||D||^2 <= 4/h^2, so tau_max = 2 / (L 4/h^2) = 0.5 for h = 1."""
    net = pm().module()
    with pytest.raises(ValueError, match=r"tau_max = 0\.5"):
        net.tau = 0.6
    assert float(net.tau) == 0.2 and net.tau_value.item() == 0.2
    with pytest.raises(ValueError, match="positive"):
        net.tau = -0.1


def test_tau_within_the_bound_is_used_everywhere():
    """A new tau below the bound updates forward, the compiled step and the buffers alike."""
    u0 = np.random.default_rng(1).standard_normal((2, 30))
    want = explicit_dense(u0, dense_difference(binomial_weights(1), 0, 30, "neumann"), perona_malik(0.7),
                          0.45, 3)
    for compile in (False, True):
        net = pm().module(compile=compile)
        with torch.no_grad():
            net(torch.tensor(u0))
            net.tau = 0.45
            got = net(torch.tensor(u0)).numpy()
        assert np.max(np.abs(got - want)) <= 1e-13
        assert net.tau_value.item() == 0.45
        assert net.op.pair.W2.tolist() == [0.45, -0.45]


def test_tau_is_read_only_for_other_schemes():
    net = pde2net.load(EXAMPLES / "fed.pde").module()
    with pytest.raises(ValueError, match="read-only"):
        net.tau = 0.1


# ------------------------------------------------------------------ 3. exports
def _dense_keyword_reference(u0: np.ndarray) -> np.ndarray:
    """The keyword spec from the mathematics: Phi(s) = s * class * s / (1 + s^2 / lambda^2) with
    s = 2, class = 1.5, lambda = 0.7, tau = 0.05, 3 steps, forward difference, neumann."""
    d = dense_difference(binomial_weights(1), 0, u0.shape[-1], "neumann")
    return explicit_dense(u0, d, lambda v: 2 * 1.5 * v / (1 + v ** 2 / 0.49), 0.05, 3)


@pytest.mark.parametrize("trainable", [False, True])
def test_torch_export_with_keyword_params(trainable, tmp_path):
    """torch.export (saved as .pt2 and loaded back) of a spec whose params are named lambda, class
    and s; the batch and grid axes stay dynamic."""
    prog = pde2net.compile_text(KEYWORD_SPEC)
    net = prog.module(trainable=trainable).to(torch.float64)
    x = torch.randn(2, 32, dtype=torch.float64)
    dims = ({0: torch.export.Dim("batch"), 1: torch.export.Dim("n", min=4)},)
    ep = torch.export.export(net, (x,), dynamic_shapes=dims)
    torch.export.save(ep, tmp_path / "net.pt2")
    loaded = torch.export.load(tmp_path / "net.pt2").module()
    u0 = np.random.default_rng(2).standard_normal((3, 40))
    got = loaded(torch.tensor(u0)).detach().numpy()
    assert np.max(np.abs(got - net(torch.tensor(u0)).detach().numpy())) <= 1e-14
    if not trainable:  # the trainable network starts from other (stabilised) weights
        assert np.max(np.abs(got - _dense_keyword_reference(u0))) <= 1e-12


@pytest.mark.parametrize("trainable", [False, True])
def test_jit_trace_with_keyword_params(trainable):
    prog = pde2net.compile_text(KEYWORD_SPEC)
    net = prog.module(trainable=trainable).to(torch.float64)
    u0 = np.random.default_rng(3).standard_normal((2, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.tensor(u0), check_trace=False)
    got = traced(torch.tensor(u0)).detach().numpy()
    assert np.max(np.abs(got - net(torch.tensor(u0)).detach().numpy())) <= 1e-14
    if not trainable:
        assert np.max(np.abs(got - _dense_keyword_reference(u0))) <= 1e-12


@pytest.mark.parametrize("trainable", [False, True])
def test_onnx_with_keyword_params_runs_in_onnxruntime(trainable, tmp_path):
    pytest.importorskip("onnxruntime")
    from pde2net import export

    prog = pde2net.compile_text(KEYWORD_SPEC)
    net = prog.module(trainable=trainable)
    check = export.export_onnx(net, str(tmp_path / "net.onnx"), (1, 32))
    assert check.rel_error is not None and check.rel_error <= 1e-5


# ------------------------------------------------------------------ 4. ONNX of one step
def test_onnx_node_count_does_not_grow_with_steps(tmp_path):
    """The file holds one step; applied ``steps`` times in onnxruntime it is the whole network,
    checked here against the dense float64 reference."""
    ort = pytest.importorskip("onnxruntime")
    from pde2net import export

    counts = []
    for steps in (5, 50):
        net = pm(tau="0.2", steps=steps).module()
        path = str(tmp_path / f"s{steps}.onnx")
        check = export.export_onnx(net, path, (1, 40), torch.float64)
        assert check.repeat == steps and check.rel_error <= 1e-12
        counts.append(check.nodes)
        u0 = np.random.default_rng(4).standard_normal((2, 40))
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        u = u0.copy()
        for _ in range(check.repeat):
            u = sess.run(None, {"u": u})[0]
        want = explicit_dense(u0, dense_difference(binomial_weights(1), 0, 40, "neumann"),
                              perona_malik(0.7), 0.2, steps)
        assert np.max(np.abs(u - want)) <= 1e-12 * np.max(np.abs(want))
    assert counts[0] == counts[1] is not None


def test_cli_export_pt2_and_says_what_onnx_holds(tmp_path):
    pytest.importorskip("onnxruntime")
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, "-m", "pde2net.cli", "export", str(EXAMPLES / "heat.pde"),
                          "--pt2", str(tmp_path / "h.pt2"), "--onnx", str(tmp_path / "h.onnx"),
                          "--shape", "1,32", "--steps", "3"], capture_output=True, text=True, cwd=root, timeout=300,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert "torch.export" in res.stdout and "exported one step (block" in res.stdout
    net = pde2net.load(EXAMPLES / "heat.pde").module(steps=3)
    loaded = torch.export.load(tmp_path / "h.pt2").module()
    u = torch.randn(3, 35)
    assert torch.allclose(loaded(u), net(u), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ 5. freeze
def _train(net, steps: int = 5, weights: bool = True) -> None:
    """A few Adam steps towards half the input (any objective moves the parameters)."""
    net.blocks[0].weights.requires_grad_(weights)
    torch.manual_seed(0)
    u = torch.randn(8, 32, dtype=torch.float64)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        (net(u) - 0.5 * u).pow(2).mean().backward()
        opt.step()


def test_freeze_round_trip_gives_the_trained_outputs_and_a_stable_verdict():
    """Trained tau and lambda (the stencil kept a difference), frozen into a spec and compiled
    again: the frozen module computes the trained network (float64 round-off), checked against
    the dense reference built from the frozen text's numbers, and the bound is re-derived."""
    prog = pde2net.compile_text(PM_SPEC.format(h="0.5", tau="0.05", steps=4))
    net = prog.module(trainable=True).double()
    before = net.certificate()[0]
    _train(net, weights=False)
    cert = net.certificate()[0]
    assert cert["tau"] != before["tau"] and cert["params"]["lambda"] != before["params"]["lambda"]
    text = pde2net.freeze(net, prog)
    assert f"tau = {cert['tau']!r}" in text and f"param lambda = {cert['params']['lambda']!r}" in text
    frozen = pde2net.compile_text(text)
    assert frozen.stability.verdict == "stable"
    # Perona-Malik with h = 1/2: L = 1, ||D||^2 <= 4/h^2 = 16, so the bound is 2/16
    assert frozen.stability.tau_max == 0.125
    u0 = np.random.default_rng(5).standard_normal((3, 40))
    got = frozen.module()(torch.tensor(u0)).numpy()
    trained = net(torch.tensor(u0)).detach().numpy()
    assert np.max(np.abs(got - trained)) <= 1e-13 * np.max(np.abs(trained))
    d = dense_difference([-2.0, 2.0], 0, 40, "neumann")
    want = explicit_dense(u0, d, perona_malik(cert["params"]["lambda"]), cert["tau"], 4)
    assert np.max(np.abs(got - want)) <= 1e-13 * np.max(np.abs(want))


def test_freeze_of_a_learned_stencil_that_is_no_difference_is_refused_with_the_reason():
    prog = pde2net.compile_text(PM_SPEC.format(h="1", tau="0.2", steps=2))
    net = prog.module(trainable=True).double()
    _train(net, weights=True)
    w = net.certificate()[0]["weights"][0]
    text = pde2net.freeze(net, prog)
    assert f"stencil [{w[0]!r}, {w[1]!r}] @ 0" in text  # h = 1: the learned floats as written
    assert abs(sum(w)) > 1e-3  # training moved the weights off a difference (sum w_j = 0)
    with pytest.raises(pde2net.PdeError, match="not an order-1 difference"):
        pde2net.compile_text(text)
