"""FED, FSI and the implicit solvers on images, against dense Kronecker references (float64):
the schemes are written against the operator interface, so the 2D operator plugs in."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pde2net
from reference import dense_gradient_2d
from test_2d import pm, spec

SHAPE, HX, HY, LAM = (6, 7), 1.0, 0.5, 0.7


def setup(boundary, scheme):
    prog = pde2net.compile_text(spec(boundary=boundary, hx=HX, hy=HY, lam=LAM, scheme=scheme))
    gx, gy = dense_gradient_2d([-1.0, 1.0], 0, SHAPE, boundary, HX, HY)
    u = np.random.default_rng(4).standard_normal((3, *SHAPE))
    out = prog.module(dtype=torch.float64)(torch.tensor(u)).numpy().reshape(3, -1)
    return prog, gx, gy, u.reshape(3, -1), out


def frozen_matrix(x, gx, gy):
    """A_G = Gx^T diag(g) Gx + Gy^T diag(g) Gy with g = g(|grad x|^2) per node."""
    g = pm(LAM)((gx @ x) ** 2 + (gy @ x) ** 2)
    return gx.T @ (g[:, None] * gx) + gy.T @ (g[:, None] * gy)


def fed_taus(tau_max, n):
    return [tau_max / (2 * math.cos(math.pi * (2 * i + 1) / (4 * n + 2)) ** 2) for i in range(n)]


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
def test_fed_2d(boundary):
    prog, gx, gy, u, out = setup(boundary, "fed(tau_max = 0.1, cycles = 2, cycle_length = 5)")
    assert prog.stability.verdict == "stable"
    for b in range(3):
        x = u[b]
        for _ in range(2):
            a = frozen_matrix(x, gx, gy)
            for t in fed_taus(0.1, 5):
                x = x - t * (a @ x)
        np.testing.assert_allclose(out[b], x, rtol=0, atol=1e-11)
        assert np.linalg.norm(out[b]) <= np.linalg.norm(u[b])


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
def test_fsi_2d(boundary):
    prog, gx, gy, u, out = setup(boundary, "fsi(tau = 0.1, cycles = 2, cycle_length = 5)")
    assert prog.stability.verdict == "stable"
    for b in range(3):
        x = u[b]
        for _ in range(2):
            a = frozen_matrix(x, gx, gy)
            prev = cur = x
            for k in range(5):
                alpha = (4 * k + 2) / (2 * k + 3)
                prev, cur = cur, alpha * (cur - 0.1 * (a @ cur)) + (1 - alpha) * prev
            x = cur
        np.testing.assert_allclose(out[b], x, rtol=0, atol=1e-11)


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
def test_implicit_cg_2d_solves_the_lagged_system(boundary):
    """Enough CG iterations solve (I + tau A_G(u^k)) u^(k+1) = u^k to round-off (42 unknowns)."""
    prog, gx, gy, u, out = setup(boundary, "implicit(tau = 2, steps = 2, solver = cg, iterations = 80)")
    assert prog.stability.verdict == "stable"
    for b in range(3):
        x = u[b]
        for _ in range(2):
            x = np.linalg.solve(np.eye(x.size) + 2.0 * frozen_matrix(x, gx, gy), x)
        np.testing.assert_allclose(out[b], x, rtol=0, atol=1e-9)
        assert np.linalg.norm(out[b]) <= np.linalg.norm(u[b])


def test_implicit_jacobi_and_fixed_point_2d():
    prog, gx, gy, u, out = setup("neumann", "implicit(tau = 2, steps = 1, solver = jacobi, iterations = 25)")
    omega = float(prog.arch.scheme.omega)
    for b in range(3):
        m = np.eye(u.shape[1]) + 2.0 * frozen_matrix(u[b], gx, gy)
        x = np.zeros_like(u[b])
        for _ in range(25):
            x = x + omega * (u[b] - m @ x) / np.diag(m)
        np.testing.assert_allclose(out[b], x, rtol=0, atol=1e-11)
    prog, gx, gy, u, out = setup("periodic", "implicit(tau = 0.02, steps = 1, solver = fixed_point, "
                                             "iterations = 10)")
    for b in range(3):
        v = u[b]
        for _ in range(10):
            vx, vy = gx @ v, gy @ v
            g = pm(LAM)(vx ** 2 + vy ** 2)
            v = u[b] - 0.02 * (gx.T @ (g * vx) + gy.T @ (g * vy))
        np.testing.assert_allclose(out[b], v, rtol=0, atol=1e-12)
