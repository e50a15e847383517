"""The eager 2D paths made for small images (issue "small tensors and training steps"): the frozen
network's step without autograd (a per-forward plan of zero-framed buffers) and the trainable
network's step (constants once per forward, the clamp as one autograd node), each against dense
Kronecker-product references in float64 (tests/reference.py, written from the mathematics), for
every boundary, in float32 and float64, and with gradients (gradcheck in float64)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch.func import functional_call

import pde2net
from pde2net.trainable import ClampedDiffusivity
from reference import dense_gradient_2d, explicit_dense_2d

BOUNDARIES = ["neumann", "periodic", "dirichlet"]
STENCILS = {"forward": ([-1.0, 1.0], 0), "backward": ([-1.0, 1.0], 1), "central": ([-0.5, 0.0, 0.5], 1)}
PM = "diffusivity g(s2) = 1 / (1 + s2 / lambda^2)\nequation dt(u) = div( g(norm(grad(u))^2) * grad(u) )"


def spec(boundary: str, stencil: str = "forward", hx: float = 1.0, hy: float = 0.5,
         tau: float = 0.05, steps: int = 5, lam: float = 0.7) -> str:
    return (f"pde img\nparam lambda = {lam}\nfield u(x, y)\n{PM}\ngrid hx = {hx}, hy = {hy}\n"
            f"boundary {boundary}\nstencil {stencil}\nscheme explicit(tau = {tau}, steps = {steps})\n")


def pm(lam: float):
    return lambda s2: 1.0 / (1.0 + s2 / lam ** 2)


def dense(stencil: str, shape, boundary: str, hx: float, hy: float):
    w, o = STENCILS[stencil]
    return dense_gradient_2d(w, o, shape, boundary, hx, hy)


def image(shape, seed: int = 0) -> np.ndarray:
    """Smooth plus rough: large and small gradients, so g takes values across (0, 1]."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal(shape), axis=-1) * 0.3 + rng.standard_normal(shape) * 0.2


# ---------------------------------------------------------------------------- frozen, eager
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stencil", ["forward", "backward", "central"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_frozen_eager_step_matches_dense_reference(boundary, stencil, dtype):
    shape, hx, hy, tau, steps = (7, 9), 1.0, 0.5, 0.05, 5
    net = pde2net.compile_text(spec(boundary, stencil, hx, hy, tau, steps)).module(dtype=dtype)
    u = image((3, *shape))
    with torch.no_grad():
        out = net(torch.tensor(u, dtype=dtype)).double().numpy()
    gx, gy = dense(stencil, shape, boundary, hx, hy)
    ref = explicit_dense_2d(u, gx, gy, pm(0.7), tau, steps)
    atol = 1e-12 if dtype == torch.float64 else 2e-5
    np.testing.assert_allclose(out, ref, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stencil", ["forward", "backward", "central"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_frozen_eager_step_equals_the_autograd_path_bitwise(boundary, stencil, dtype):
    """Without autograd the step runs the buffered plan; with an input that requires a gradient,
    the reference composition ``u - Dt(flux(D u), tau)``: the same bits, and a gradient."""
    net = pde2net.compile_text(spec(boundary, stencil)).module(dtype=dtype)
    u = torch.tensor(image((2, 6, 8), 1), dtype=dtype)
    fast = net(u)
    slow = net(u.clone().requires_grad_(True))
    assert slow.requires_grad and not fast.requires_grad
    assert torch.equal(fast, slow.detach())


def test_unit_scaled_transposed_weights():
    """``tau w = +-1`` (hx = hy = 4, tau = 4 = h^2 / 4, the bound): the branch that subtracts
    the two views of the padded flux without scaling it."""
    hx = hy = 4.0
    for boundary in BOUNDARIES:
        prog = pde2net.compile_text(spec(boundary, "forward", hx, hy, tau=4.0, steps=3))
        net = prog.module(dtype=torch.float64)
        assert net.op.px.w2(net.tau) == (-1.0, 1.0)
        u = image((2, 5, 6), 2) * 10
        with torch.no_grad():
            out = net(torch.tensor(u)).numpy()
        gx, gy = dense("forward", (5, 6), boundary, hx, hy)
        np.testing.assert_allclose(out, explicit_dense_2d(u, gx, gy, pm(0.7), 4.0, 3), rtol=0, atol=1e-11)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_frozen_network_gradcheck(boundary):
    """With gradients the frozen network is differentiable in its input (float64, tiny grid)."""
    net = pde2net.compile_text(spec(boundary, steps=2)).module(dtype=torch.float64)
    u = torch.tensor(image((1, 4, 5), 3), requires_grad=True)
    assert torch.autograd.gradcheck(net, (u,), eps=1e-6, atol=1e-7)


def test_buffers_are_not_shared_between_calls_shapes_or_threads():
    """The plan's buffers live for one forward: an earlier result is never overwritten, inputs of
    other shapes and dtypes get their own, and concurrent calls from two threads do not mix."""
    net = pde2net.compile_text(spec("dirichlet", steps=4)).module()
    a, b = torch.tensor(image((2, 6, 7), 4), dtype=torch.float32), torch.tensor(image((3, 8, 5), 5),
                                                                              dtype=torch.float32)
    ref_a, ref_b = net(a.requires_grad_()).detach(), net(b.requires_grad_()).detach()
    a, b = a.detach(), b.detach()
    out_a = net(a)
    keep = out_a.clone()
    out_b = net(b)
    assert torch.equal(out_a, keep) and torch.equal(out_a, ref_a) and torch.equal(out_b, ref_b)
    assert torch.equal(net.double()(a.double()), net(a.double().requires_grad_()).detach())
    net = net.float()
    results: dict = {}

    def work(name, x):
        results[name] = [net(x) for _ in range(20)]

    threads = [threading.Thread(target=work, args=("a", a)), threading.Thread(target=work, args=("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(r, ref_a) for r in results["a"])
    assert all(torch.equal(r, ref_b) for r in results["b"])


def test_block_outside_forward_allocates_its_own_buffers():
    """``net.block`` called alone (``prog.run``'s loop) runs the same step without a scope."""
    prog = pde2net.compile_text(spec("neumann", steps=3))
    net = prog.module()
    u = torch.tensor(image((2, 6, 7), 6), dtype=torch.float32)
    x = u
    for _ in range(3):
        x = net.block(x)
    assert torch.equal(x, net(u))
    assert torch.equal(prog.run(u), net(u))


# ------------------------------------------------------------------------------- trainable
def trainable(boundary: str, dtype: torch.dtype, steps: int = 4):
    prog = pde2net.compile_text(spec(boundary, "forward", 1.0, 0.5, 0.05, steps))
    net = prog.module(trainable=True)
    return net.double() if dtype == torch.float64 else net


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_trainable_forward_matches_dense_reference(boundary, dtype):
    """At the spec's weights the trainable network is the scheme with its own step tau (the
    certificate's, re-derived through the parametrisation; learned lambda at its spec value)."""
    net = trainable(boundary, dtype)
    cert = net.certificate()[0]
    assert cert["weights"] == [[-1.0, 1.0], [-2.0, 2.0]]  # hx = 1, hy = 0.5
    u = image((2, 6, 7), 7)
    out = net(torch.tensor(u, dtype=dtype)).detach().double().numpy()
    gx, gy = dense("forward", (6, 7), boundary, 1.0, 0.5)
    ref = explicit_dense_2d(u, gx, gy, pm(cert["params"]["lambda"]), cert["tau"], 4)
    atol = 1e-12 if dtype == torch.float64 else 2e-5
    np.testing.assert_allclose(out, ref, rtol=0, atol=atol)


def parameter_function(net):
    names = [n for n, _ in net.named_parameters()]

    def f(u, *params):
        return functional_call(net, dict(zip(names, params)), (u,))
    return f, [p.detach().clone().requires_grad_(True) for _, p in net.named_parameters()]


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_trainable_gradcheck(boundary):
    """Gradients of the eager trainable forward in its input and every raw parameter (stencil
    weights of both axes, rho, log lambda), float64 finite differences on a tiny grid."""
    net = trainable(boundary, torch.float64, steps=2)
    f, params = parameter_function(net)
    assert len(params) == 4
    u = torch.tensor(image((1, 4, 5), 8), requires_grad=True)
    assert torch.autograd.gradcheck(f, (u, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_trainable_forward_equals_its_blocks_with_gradients(boundary, dtype):
    """``forward`` (constants once, ClampedDiffusivity) against stepping ``net.block`` (constants
    per block, torch's nan_to_num and clamp): the same values and the same gradients."""
    net = trainable(boundary, dtype)
    u = torch.tensor(image((2, 6, 7), 9), dtype=dtype)
    target = torch.tensor(image((2, 6, 7), 10), dtype=dtype)
    out = net(u)
    ((out - target) ** 2).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    x = u
    for _ in range(net.steps):
        x = net.block(x)
    ((x - target) ** 2).sum().backward()
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out, x, rtol=rtol, atol=0)
    for g, p in zip(grads, net.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=rtol, atol=rtol)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap of the in-place clamp
def test_clamped_diffusivity_values_and_gradient_match_torch_ops():
    """One node for ``clamp(nan_to_num(g, nan=0, posinf=L, neginf=0), 0, L)``: the same values,
    and the gradient torch's two ops give (1 where g is finite in [0, L], bounds included)."""
    L = 1.5
    vals = [float("nan"), float("inf"), -float("inf"), -1.0, -0.0, 0.0, 0.25, 1.5, 2.0, 1e30, -1e-30]
    for dtype in (torch.float32, torch.float64):
        g1 = torch.tensor(vals, dtype=dtype, requires_grad=True)
        g2 = g1.detach().clone().requires_grad_(True)
        w = torch.arange(1.0, len(vals) + 1, dtype=dtype)
        a = ClampedDiffusivity.apply(g1, L)
        b = torch.nan_to_num(g2, nan=0.0, posinf=L, neginf=0.0).clamp(0.0, L)
        assert torch.equal(a, b)
        (a * w).sum().backward()
        (b * w).sum().backward()
        assert torch.equal(g1.grad, g2.grad)
        assert g1.grad.tolist() == [0, 0, 0, 0, 5, 6, 7, 8, 0, 0, 0]
        # forward mode and vmap give the same derivative
        x = g1.detach()
        _, ta = torch.func.jvp(lambda t: ClampedDiffusivity.apply(t, L), (x,), (w,))
        _, tb = torch.func.jvp(lambda t: torch.nan_to_num(t, nan=0.0, posinf=L, neginf=0.0).clamp(0.0, L),
                               (x,), (w,))
        assert torch.equal(ta, tb)
        batch = torch.stack([x, x.flip(0)])
        assert torch.equal(torch.vmap(lambda t: ClampedDiffusivity.apply(t, L))(batch),
                           torch.nan_to_num(batch, nan=0.0, posinf=L, neginf=0.0).clamp(0.0, L))
