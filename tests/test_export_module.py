"""The module behaves as PyTorch users expect: state_dict round trip, .to(device, dtype),
torch.compile, a repr that shows the architecture, a docstring with the PDE and the bound."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pde2net
from reference import dense_difference, explicit_dense, perona_malik

SPEC = """pde pm
param lambda = 0.5
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
boundary dirichlet
scheme explicit(tau = 0.3, steps = 6)
"""
SPEC_2D = """pde pm2
param lambda = 0.5
field u(x, y)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )
grid hx = 1, hy = 2
scheme explicit(tau = 0.2, steps = 4)
"""


@pytest.fixture(scope="module")
def prog():
    return pde2net.compile_text(SPEC)


def test_state_dict_round_trip_fixed_and_trainable(prog):
    conv = prog.module(backend="conv")
    sd = conv.state_dict()
    # the frozen constants as buffers: W1, W2 = -tau W1, tau and the param (issue 12, section 5)
    assert sorted(sd) == ["op.flux.param_lambda", "op.pair.W1", "op.pair.W2", "op.pair.weight", "tau_value"]
    assert sd["op.pair.weight"].flatten().tolist() == sd["op.pair.W1"].tolist() == [-1.0, 1.0]
    assert sd["op.pair.W2"].tolist() == [0.3, -0.3] and sd["tau_value"].item() == 0.3
    assert sd["op.flux.param_lambda"].item() == 0.5
    fresh = prog.module(backend="conv")
    fresh.load_state_dict(sd)
    u = torch.randn(2, 30)
    assert torch.equal(fresh(u), conv(u))
    learn = prog.module(trainable=True, shared=False)
    opt = torch.optim.SGD(learn.parameters(), lr=0.5)
    learn(u).pow(2).sum().backward()
    opt.step()
    other = prog.module(trainable=True, shared=False)
    assert not torch.equal(other(u), learn(u))
    other.load_state_dict(learn.state_dict())
    assert torch.equal(other(u), learn(u))
    assert len(learn.state_dict()) == 6 * 3  # per block: weights, rho, log lambda


@pytest.mark.parametrize("backend", ["fused", "conv"])
def test_to_dtype_and_device(prog, backend):
    net = prog.module(backend=backend).to("cpu", torch.float64)
    u = np.random.default_rng(0).standard_normal((3, 25))
    out = net(torch.tensor(u))
    assert out.dtype == torch.float64
    ref = explicit_dense(u, dense_difference([-1, 1], 0, 25, "dirichlet"), perona_malik(0.5), 0.3, 6)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-13)
    learn = prog.module(trainable=True).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in learn.parameters())
    np.testing.assert_allclose(learn(torch.tensor(u)).detach().numpy(), ref, rtol=0, atol=1e-6)
    if torch.cuda.is_available():
        gpu = prog.module(backend=backend).to("cuda", torch.float64)
        np.testing.assert_allclose(gpu(torch.tensor(u, device="cuda")).cpu().numpy(), ref, rtol=0, atol=1e-12)


def test_torch_compile_graph_capture(prog):
    """torch.compile captures the whole network (aot_eager: the dynamo graph, no C++ build)."""
    net = prog.module(dtype=torch.float64, steps=2)
    u = torch.randn(4, 33, dtype=torch.float64)
    ref = net(u)  # the first call caches the exact W2 = -tau W1; then the network is one graph
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(u), ref, rtol=0, atol=1e-14)
    two = pde2net.compile_text(SPEC_2D).module(dtype=torch.float64, steps=2)
    img = torch.randn(2, 9, 11, dtype=torch.float64)
    ref = two(img)
    torch.testing.assert_close(torch.compile(two, backend="aot_eager", fullgraph=True)(img), ref,
                               rtol=0, atol=1e-14)


@pytest.mark.slow
def test_torch_compile_inductor(prog):
    net = prog.module()
    u = torch.randn(4, 64)
    torch.testing.assert_close(prog.module(compile=True)(u), net(u), rtol=1e-6, atol=1e-6)


def test_repr_shows_the_architecture(prog):
    text = repr(prog.module(backend="conv"))
    assert text.startswith("Pm(")
    for part in ("6 blocks", "tau = 0.3", "W1 = [-1.0, 1.0]", "W2 = -tau W1^T", "boundary=dirichlet",
                 "Phi(s) = s/(1 + s^2/lambda^2)"):
        assert part in text, part
    two = repr(pde2net.compile_text(SPEC_2D).module())
    assert "DiffusionOperator2D" in two and "axis y: W1 = [-0.5, 0.5]" in two and "g(|v|^2) v" in two
    assert "tau = theta 2/(L B(w))" in repr(prog.module(trainable=True))


def test_docstring_states_the_pde_and_the_bound(prog):
    net = prog.module()
    doc = type(net).__doc__
    assert doc == net.__doc__
    assert "dt(u) = dx(g(dx(u)^2) * dx(u))" in doc
    assert f"tau <= {prog.stability.tau_max!r}" in doc and prog.stability.tau_max == 0.5
    assert "Verdict:  stable" in doc
    two = pde2net.compile_text(SPEC_2D)
    doc2 = type(two.module()).__doc__
    # 2 / (L (4/hx^2 + 4/hy^2)) = 2 / 5 for hx = 1, hy = 2 (docs/theory.md §2)
    bound = two.stability.tau_max
    assert bound == pytest.approx(0.4, rel=1e-15) and bound <= 0.4
    assert "div(g(norm(grad(u))^2) * grad(u))" in doc2 and f"tau <= {bound!r}" in doc2
    assert "Bound" in type(prog.module(trainable=True)).__doc__
