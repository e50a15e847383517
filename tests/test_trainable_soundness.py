"""Soundness of trainable networks for EVERY value of their raw parameters (issue 11).

Hypothesis draws the raw float32 parameters (stencil weights, the step's raw theta, the log of the
learned diffusivity params) including extreme values (0, +-1e-45, +-1e-20, +-1e20, +-3e38) for 1D
and 2D explicit networks (Perona-Malik, Charbonnier, linear; shared and per-block parameters), and
checks, against an independent dense NumPy float64 computation written here:

- the float32 and float64 outputs on stress inputs are finite and their norm does not grow;
- the float64 network computes the dense step ``u - tau D^T (g(D u) * D u)``, with D built here
  from the network's effective weights and g evaluated in NumPy, to 1e-10 relative;
- ``tau L ||D||^2 <= 2`` with ``||D||`` from a dense SVD, and the gradients are finite.

NaN or infinite raw parameters are refused with a ValueError (and ``verify`` reports them).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pde2net

EXTREMES = [0.0, 1e-45, -1e-45, 1e-20, -1e-20, 1e20, -1e20, 3e38, -3e38, 1.0, -1.0]
PM_G = "diffusivity g(s2) = 1 / (1 + s2 / lambda^2)"
CHARB_G = "diffusivity g(s2) = 1 / sqrt(1 + s2 / lambda^2)"
EQ1 = "equation dt(u) = dx( g(dx(u)^2) * dx(u) )"
EQ2 = "equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )"


def spec_1d(kind, boundary, stencil, steps):
    body = {"pm": f"param lambda = 0.3\n{PM_G}\n{EQ1}", "charb": f"param lambda = 0.3\n{CHARB_G}\n{EQ1}",
            "linear": "equation dt(u) = dxx(u)"}[kind]
    return (f"pde t1\nfield u(x)\n{body}\ngrid h = 0.5\nboundary {boundary}\nstencil {stencil}\n"
            f"scheme explicit(tau = 0.02, steps = {steps})\n")


def spec_2d(kind, boundary, steps):
    body = {"pm": f"param lambda = 0.3\n{PM_G}\n{EQ2}", "charb": f"param lambda = 0.3\n{CHARB_G}\n{EQ2}",
            "linear": "equation dt(u) = laplace(u)"}[kind]
    return (f"pde t2\nfield u(x, y)\n{body}\ngrid hx = 1, hy = 0.5\nboundary {boundary}\n"
            f"scheme explicit(tau = 0.02, steps = {steps})\n")


# (name, spec, shared, field shape, offset of the stencil)
CASES = [
    ("pm1d-periodic-forward-shared", spec_1d("pm", "periodic", "forward", 2), True, (12,), 0),
    ("pm1d-neumann-central-unshared", spec_1d("pm", "neumann", "central", 2), False, (12,), 1),
    ("charb1d-dirichlet-backward-unshared", spec_1d("charb", "dirichlet", "backward", 2), False, (12,), 1),
    ("linear1d-periodic-central-shared", spec_1d("linear", "periodic", "central", 2), True, (12,), 1),
    ("pm2d-neumann-shared", spec_2d("pm", "neumann", 2), True, (5, 6), 0),
    ("charb2d-periodic-unshared", spec_2d("charb", "periodic", 2), False, (5, 6), 0),
    ("linear2d-dirichlet-unshared", spec_2d("linear", "dirichlet", 2), False, (5, 6), 0),
]
_NETS: dict = {}


def network(case):
    name, spec, shared, _, _ = case
    if name not in _NETS:
        _NETS[name] = pde2net.compile_text(spec).module(trainable=True, shared=shared)
    return copy.deepcopy(_NETS[name])


# ------------------------------------------------------------------ the independent dense oracle
def dense_axis(w, offset, n, boundary, image):
    """D along one axis for n points, from ``(D u)_i = sum_j w_j u_(i + j - o)``: neumann keeps the
    complete rows (1D) or puts them at nodes o .. o + n - K with zero rows elsewhere (2D);
    periodic wraps (aliased taps summed), dirichlet extends by zeros on both sides (the full
    correlation, n + K - 1 rows)."""
    k = len(w)
    if boundary == "neumann":
        rows = np.zeros((n - k + 1, n))
        for i in range(n - k + 1):
            rows[i, i:i + k] = w
        if not image:
            return rows
        full = np.zeros((n, n))
        full[offset:offset + n - k + 1] = rows
        return full
    if boundary == "dirichlet":  # u = 0 outside [0, n) on both sides: every row touching a node
        d = np.zeros((n + k - 1, n))
        for r in range(n + k - 1):
            for j in range(k):
                if 0 <= r + j - (k - 1) < n:
                    d[r, r + j - (k - 1)] = w[j]
        return d
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(k):
            d[i, (i + j - offset) % n] += w[j]
    return d


def embedding(k, offset, n, boundary):
    """Zero extension of an axis's n nodes to its flux points (dirichlet: K - 1 more)."""
    if boundary != "dirichlet":
        return np.eye(n)
    e = np.zeros((n + k - 1, n))
    e[k - 1 - offset:k - 1 - offset + n] = np.eye(n)
    return e


def dense_blocks(net, shape, boundary, offset):
    """Per parameter set: (list of axis matrices on the flattened field, tau, diffusivity g(s2))."""
    out = []
    for k, cert in enumerate(net.certificate()):
        ws = [np.asarray(w, dtype=float) for w in cert["weights"]]
        if len(shape) == 1:
            mats = [dense_axis(ws[0], offset, shape[0], boundary, False)]
        else:
            H, W = shape
            mats = [np.kron(embedding(len(ws[1]), offset, H, boundary), dense_axis(ws[0], offset, W, boundary, True)),
                    np.kron(dense_axis(ws[1], offset, H, boundary, True), embedding(len(ws[0]), offset, W, boundary))]
        lam = cert["params"].get("lambda")
        kind = net.arch.flux.text
        if "sqrt" in kind:
            g = (lambda s2, lam=lam: 1.0 / np.sqrt(1.0 + s2 / lam ** 2))
        elif lam is not None:
            g = (lambda s2, lam=lam: 1.0 / (1.0 + s2 / lam ** 2))
        else:
            g = (lambda s2: np.ones_like(s2))
        out.append((mats, cert["tau"], g))
    return out


def dense_forward(u, blocks, steps, shared):
    """``u <- u - tau sum_a D_a^T (g(sum_a (D_a u)^2) D_a u)`` per block, rows of a batch."""
    x = np.array(u, dtype=float).reshape(len(u), -1)
    for i in range(steps):
        mats, tau, g = blocks[0 if shared else i]
        if len(mats) == 1:  # 1D: g at each flux point of its own difference
            v = x @ mats[0].T
            x = x - tau * ((g(v ** 2) * v) @ mats[0])
        else:  # 2D: one g per node from the squared gradient length
            vs = [x @ m.T for m in mats]
            gg = g(sum(v ** 2 for v in vs))
            x = x - tau * sum((gg * v) @ m for v, m in zip(vs, mats))
    return x


def stress_inputs(shape, top, rng):
    """Steps, a constant, ramps of slope 1e3, flat segments, random fields of amplitude 1e6, and
    the dense top singular vector at small amplitude."""
    last = np.indices(shape)[-1].astype(float)
    first = np.indices(shape)[0].astype(float)
    m = int(np.prod(shape))
    rows = [np.where(last < shape[-1] / 2, 0.0, 1.0), np.full(shape, 7.0), 1e3 * last, -1e3 * first,
            np.repeat(rng.uniform(-5, 5, (m + 2) // 3), 3)[:m].reshape(shape),
            rng.standard_normal(shape) * 1e6, rng.standard_normal(shape),
            1e-6 * top.reshape(shape), 1e-3 * top.reshape(shape)]
    return np.stack(rows)


def set_raw(net, values):
    with torch.no_grad():
        it = iter(values)
        for p in net.parameters():
            flat = torch.tensor([next(it) for _ in range(p.numel())], dtype=torch.float32)
            p.copy_(flat.reshape(p.shape))


def n_raw(net):
    return sum(p.numel() for p in net.parameters())


RAW = st.one_of(st.sampled_from(EXTREMES), st.floats(-1e3, 1e3, width=32),
                st.floats(allow_nan=False, allow_infinity=False, width=32))


def check_sound(case, values):
    name, spec, shared, shape, offset = case
    net = network(case)
    set_raw(net, values)
    boundary = net.arch.stencils[0].boundary
    net64 = copy.deepcopy(net).double()
    blocks = dense_blocks(net64, shape, boundary, offset)
    L = net64.L
    for mats, tau, _ in blocks:  # tau L ||D||^2 <= 2, ||D|| of the stacked operator by SVD
        norm_sq = np.linalg.svd(np.vstack(mats), compute_uv=False)[0] ** 2
        assert tau * L * norm_sq <= 2.0, (name, tau, norm_sq)
        assert np.isfinite(tau) and tau >= 0
    stacked = np.vstack(blocks[0][0])
    top = np.linalg.svd(stacked)[2][0] if stacked.shape[0] else np.ones(int(np.prod(shape)))
    u = stress_inputs(shape, top, np.random.default_rng(len(values)))
    norms = np.linalg.norm(u.reshape(len(u), -1), axis=1)
    # float64: finite, no growth, and the dense oracle to 1e-10 relative
    got64 = net64(torch.tensor(u)).detach().numpy().reshape(len(u), -1)
    assert np.all(np.isfinite(got64)), name
    assert np.all(np.linalg.norm(got64, axis=1) <= norms * (1 + 1e-12)), name
    ref = dense_forward(u, blocks, net.steps, shared)
    scale = np.abs(u.reshape(len(u), -1)).max(axis=1, keepdims=True)
    assert np.max(np.abs(got64 - ref) / scale) <= 1e-10, (name, np.max(np.abs(got64 - ref) / scale))
    # float32: finite, no growth, finite gradients
    x = torch.tensor(u, dtype=torch.float32)
    out = net(x)
    got32 = out.detach().double().numpy().reshape(len(u), -1)
    assert np.all(np.isfinite(got32)), name
    n32 = np.linalg.norm(x.double().numpy().reshape(len(u), -1), axis=1)
    assert np.all(np.linalg.norm(got32, axis=1) <= n32 * (1 + 1e-6)), name
    (out.double() ** 2).mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is None or bool(torch.isfinite(p.grad).all()), (name, pname)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_raw_parameters_are_sound(case, data):
    values = data.draw(st.lists(RAW, min_size=n_raw(network(case)), max_size=n_raw(network(case))))
    check_sound(case, values)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_raw_parameters_are_sound_many(case, data):
    values = data.draw(st.lists(RAW, min_size=n_raw(network(case)), max_size=n_raw(network(case))))
    check_sound(case, values)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("value", [1e-20, 1e-45, 0.0, 3e38, -1e20])
def test_uniform_extreme_parameters(case, value):
    """Every raw parameter at one extreme value (the reported bug: weights of 1e-20 gave
    tau = inf and NaN outputs, and verify still said ok)."""
    check_sound(case, [value] * n_raw(network(case)))
    net = network(case)
    set_raw(net, [value] * n_raw(net))
    assert net.verify(size=8 if net.image else 12)["ok"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_raw_parameters_are_refused(bad):
    net = network(CASES[0])
    with torch.no_grad():
        net.blocks[0].weights[0][1] = bad
    with pytest.raises(ValueError, match="non-finite trainable parameters: blocks.0.weights.0"):
        net(torch.zeros(12))
    rep = net.verify()
    assert not rep["ok"] and "blocks.0.weights.0" in rep["error"]


@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=[CASES[0][0], CASES[4][0]])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_verify_fails_on_non_finite_outputs(case, bad):
    """A step that bypasses the parametrisation and produces NaN / inf is caught by verify."""
    net = network(case)
    assert net.verify(size=8)["ok"]
    net.blocks[0].tau = lambda L: torch.tensor(bad)
    assert not net.verify(size=8)["ok"]


def test_effective_weights_are_scale_free_and_exact_at_the_spec():
    """W(w) = s0 w / ||w||_1 for raw weights with max |w| >= 2^-31 (any positive scale of w gives
    the same W), W = s0 w 2^32 below (the documented linear floor), and W = w at the spec's weights."""
    net = network(CASES[0])
    w0 = net.blocks[0].weights[0].detach().clone()
    assert torch.equal(net.effective_weights(0)[0], w0)
    s0 = float(w0.abs().sum())
    for raw in ([3.0, -0.25], [3e-9, -2.5e-10], [3e38, -1e38], [1e-20, 4e-20], [1e-40, 0.0], [0.0, 0.0]):
        with torch.no_grad():
            net.blocks[0].weights[0].copy_(torch.tensor(raw, dtype=torch.float32))
        w = np.asarray(raw, dtype=np.float32).astype(float)
        m = np.abs(w).max()
        want = s0 * w / np.abs(w).sum() if m >= 2.0 ** -31 else s0 * w * 2.0 ** 32
        np.testing.assert_allclose(net.effective_weights(0)[0].detach().double().numpy(), want, rtol=1e-6)


def test_a_spec_whose_step_leaves_the_float32_range_is_refused():
    """h = 1e-20: the weights' l1 norm 2e20 squares to 4e40 > float32 max; no trainable network."""
    spec = ("pde t1\nfield u(x)\nequation dt(u) = dxx(u)\ngrid h = 1e-20\nboundary periodic\n"
            "scheme explicit(tau = 1e-41, steps = 2)\n")
    with pytest.raises(ValueError, match="outside the float32 range"):
        pde2net.compile_text(spec).module(trainable=True)
