"""Jacobi diagonals on periodic grids shorter than the stencil, where two taps of one row of D land
on the same column (N < K): the diagonal of ``D^T G D`` is then ``sum_i G_i (sum of the aliased
weights)^2``, not the correlation of G with the squared weights.  Checked against dense
circulant matrices built here from the stencil definition ``(D u)_i = sum_t w_t u_((i+t-o) mod N)``.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
import torch

import pde2net
from pde2net import layers
from pde2net import multigrid as mg

# (weights, offset): first-derivative stencils of 2..5 points (the 3-point central one has a zero)
STENCILS = [
    (["-1", "1"], 0),
    (["-1", "1"], 1),
    (["-1/2", "0", "1/2"], 1),
    (["-3/2", "2", "-1/2"], 0),
    (["-11/6", "3", "-3/2", "1/3"], 0),
    (["1/12", "-2/3", "0", "2/3", "-1/12"], 2),
]
PM1D = """pde pm
param lambda = 0.5
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
boundary periodic
stencil {stencil}
scheme {scheme}
"""
PM2D = """pde pm2
param lambda = 0.5
field u(x, y)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )
boundary periodic
stencil {stencil}
scheme {scheme}
"""
JACOBI = "implicit(tau = 3, steps = 2, solver = jacobi, iterations = 6)"


def stencil_text(weights, offset):
    return f"[{', '.join(weights)}] @ {offset}"


def circulant(weights, offset, n):
    """The periodic difference matrix: row i has w_t in column (i + t - o) mod n, aliased taps summed."""
    d = np.zeros((n, n))
    for i in range(n):
        for t, w in enumerate(weights):
            d[i, (i + t - offset) % n] += float(Fraction(w))
    return d


def pm_g(s2, lam=0.5):
    return 1.0 / (1.0 + s2 / lam ** 2)


@pytest.mark.parametrize("weights,offset", STENCILS)
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_1d_frozen_diagonal_is_the_dense_diagonal(weights, offset, n):
    prog = pde2net.compile_text(PM1D.format(stencil=stencil_text(weights, offset), scheme=JACOBI))
    op = layers.make_operator(prog.arch)
    d = circulant(weights, offset, n)
    rng = np.random.default_rng(n)
    G = rng.uniform(0.1, 2.0, (3, n))
    for scale in (1, sp.Rational(5, 2)):
        got = op.frozen_diagonal(torch.tensor(G), scale).numpy()
        ref = np.stack([float(scale) * np.diag(d.T @ np.diag(g) @ d) for g in G])
        np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("weights,offset", STENCILS)
@pytest.mark.parametrize("shape", [(2, 3), (3, 5), (4, 4), (6, 2), (5, 6)])
def test_2d_frozen_diagonal_is_the_dense_diagonal(weights, offset, shape):
    prog = pde2net.compile_text(PM2D.format(stencil=stencil_text(weights, offset), scheme=JACOBI))
    op = layers.make_operator(prog.arch)
    H, W = shape
    gx = np.kron(np.eye(H), circulant(weights, offset, W))  # x: the last (fastest) axis
    gy = np.kron(circulant(weights, offset, H), np.eye(W))
    rng = np.random.default_rng(H * 10 + W)
    G = rng.uniform(0.1, 2.0, (2, 1, H, W))
    got = op.frozen_diagonal(torch.tensor(G), sp.Rational(3, 2)).numpy()
    for b in range(2):
        g = np.diag(G[b, 0].ravel())
        ref = 1.5 * np.diag(gx.T @ g @ gx + gy.T @ g @ gy)
        np.testing.assert_allclose(got[b].ravel(), ref, rtol=1e-14, atol=1e-14)


def jacobi_dense(u, matrices, tau, omega, iterations, steps):
    """Damped Jacobi for (I + tau sum_a D_a^T G(u^k) D_a) x = u^k from x = 0, G lagged, per row."""
    out = np.array(u, dtype=float)
    for _ in range(steps):
        for b in range(out.shape[0]):
            f = out[b].copy()
            s2 = sum((m @ f) ** 2 for m in matrices)
            A = np.eye(len(f)) + tau * sum(m.T @ np.diag(pm_g(s2)) @ m for m in matrices)
            x = np.zeros_like(f)
            for _ in range(iterations):
                x = x + omega * (f - A @ x) / np.diag(A)
            out[b] = x
    return out


@pytest.mark.parametrize("weights,offset", STENCILS)
@pytest.mark.parametrize("n", [2, 3, 4])
def test_1d_jacobi_network_on_a_short_periodic_grid(weights, offset, n):
    prog = pde2net.compile_text(PM1D.format(stencil=stencil_text(weights, offset), scheme=JACOBI))
    net = prog.module(dtype=torch.float64)
    u = np.random.default_rng(n).standard_normal((3, n))
    omega = float(prog.arch.scheme.omega)
    ref = jacobi_dense(u, [circulant(weights, offset, n)], 3.0, omega, 6, 2)
    np.testing.assert_allclose(net(torch.tensor(u)).numpy(), ref, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("weights,offset", [STENCILS[0], STENCILS[3], STENCILS[5]])
@pytest.mark.parametrize("shape", [(2, 3), (3, 4), (4, 2)])
def test_2d_jacobi_network_on_a_short_periodic_grid(weights, offset, shape):
    prog = pde2net.compile_text(PM2D.format(stencil=stencil_text(weights, offset), scheme=JACOBI))
    net = prog.module(dtype=torch.float64)
    H, W = shape
    gx = np.kron(np.eye(H), circulant(weights, offset, W))
    gy = np.kron(circulant(weights, offset, H), np.eye(W))
    u = np.random.default_rng(H + W).standard_normal((2, H * W))
    ref = jacobi_dense(u, [gx, gy], 3.0, float(prog.arch.scheme.omega), 6, 2)
    got = net(torch.tensor(u.reshape(2, H, W))).numpy().reshape(2, -1)
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("n,b", [(2, 1), (2, 2), (3, 2), (4, 3), (4, 4), (5, 3)])
def test_multigrid_bands_on_a_periodic_grid_shorter_than_the_band(n, b):
    """The probed bands reproduce A once per column (band_apply of the identity is A) and the
    smoother's diagonal is diag(A), also when diagonals of the band alias (n < 2b + 1)."""
    rng = np.random.default_rng(n * 7 + b)
    c = np.zeros((n, n))  # a random banded circulant A[i, (i + k) mod n], |k| <= b, aliases summed
    for k, a in zip(range(-b, b + 1), rng.uniform(-1, 1, 2 * b + 1)):
        for i in range(n):
            c[i, (i + k) % n] += a
    A = np.eye(n) * (2 * b + 3) + c
    bands = mg.probe_bands(lambda x: x @ A.T, n, b, True, mg.NumpyOps, np.zeros((1, n)))
    dense = mg.band_apply(bands, np.eye(n), "circular", mg.NumpyOps).T
    np.testing.assert_allclose(dense, A, rtol=0, atol=1e-14)
    np.testing.assert_allclose(bands[b], np.diag(A), rtol=0, atol=1e-14)


@pytest.mark.parametrize("weights,offset,n", [(["-1", "1"], 0, 2), (["-3/2", "2", "-1/2"], 0, 2),
                                              (["-3/2", "2", "-1/2"], 0, 4)])
def test_multigrid_network_solves_a_short_periodic_grid(weights, offset, n):
    """One level (the exact inverse): the step is (I + tau D^T D)^-1 u with D the dense circulant."""
    prog = pde2net.compile_text(f"""pde mg
param c = 1
field u(x)
flux phi(s) = c * s
equation dt(u) = dx( phi(dx(u)) )
boundary periodic
stencil {stencil_text(weights, offset)}
scheme multigrid(tau = 3, steps = 1, levels = 1, cycles = 1)
""")
    net = prog.module(dtype=torch.float64)
    d = circulant(weights, offset, n)
    u = np.random.default_rng(n).standard_normal((2, n))
    ref = np.linalg.solve(np.eye(n) + 3.0 * d.T @ d, u.T).T
    np.testing.assert_allclose(net(torch.tensor(u)).numpy(), ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dims,grid,stencil", [
    ("x", (3,), "[1/12, -2/3, 0, 2/3, -1/12] @ 2"),
    ("x", (2,), "[1/12, -2/3, 0, 2/3, -1/12] @ 2"),
    ("x, y", (4, 3), "[-1/3, 0, 0, 1/3] @ 1"),
    ("x, y", (2, 6), "[-1/3, 0, 0, 1/3] @ 1"),
])
def test_generated_source_uses_the_aliased_diagonal_too(dims, grid, stencil):
    """The standalone source prints one folded-weight table per periodic grid size N < K, so it
    computes the live module's (dense-checked) Jacobi diagonal bit for bit on such grids."""
    eq = "dx(g(dx(u)^2) * dx(u))" if dims == "x" else "div(g(norm(grad(u))^2) * grad(u))"
    prog = pde2net.compile_text(
        f"pde p\nparam lambda = 0.5\nfield u({dims})\ndiffusivity g(s2) = 1/(1 + s2/lambda^2)\n"
        f"equation dt(u) = {eq}\nboundary periodic\nstencil {stencil}\n"
        "scheme implicit(tau = 2, steps = 2, solver = jacobi, iterations = 5)\n")
    ns: dict = {}
    exec(compile(prog.source(), "generated", "exec"), ns)
    generated = ns[prog.arch.class_name]()
    assert "W2SQ_ALIASED" in prog.source()
    u = torch.rand(3, *grid, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(generated(u), prog.module(dtype=torch.float64)(u))
