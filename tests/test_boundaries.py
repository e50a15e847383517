"""Boundaries that mean their names, and the sign of the equation decided by its normal form.

Every network (live fused, live conv, the emitted source; float64 and float32) is compared with a
dense NumPy float64 implementation written here from the mathematics (docs/theory.md §2, §12):

- neumann: only the complete stencil rows (zero flux), (N - K + 1) x N;
- periodic: the circulant, row i reads u_((i + j - o) mod N);
- dirichlet: u = 0 outside the domain on EVERY side: the signal is extended by K - 1 ghost zeros
  on both sides and D has a row for every window that touches a node, (N + K - 1) x N.

In 2D both gradient channels live on one grid of flux points: the nodes, plus the K - 1 ghost
points along a dirichlet axis (the difference along the other axis is 0 there), and a neumann
axis's difference has zero rows where its stencil leaves the grid.  Nothing here is built from
pde2net's matrices.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import pde2net
from pde2net.errors import PdeError
from reference import load_source as import_source

LAM = 0.7


def pm_flux(s: np.ndarray) -> np.ndarray:
    """Perona-Malik Phi(s) = s / (1 + s^2 / lambda^2)."""
    return s / (1.0 + s * s / LAM ** 2)


def pm_g(s2: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + s2 / LAM ** 2)


# ------------------------------------------------------------------- dense references
def ghost_difference(weights, n: int, boundary: str, offset: int = 0, h: float = 1.0, m: int = 1
                     ) -> np.ndarray:
    """D, column by column: apply the stencil to each unit vector, extended by the boundary rule
    (ghost zeros for dirichlet, wrap-around for periodic, nothing for neumann)."""
    w = np.array([float(Fraction(str(x))) for x in weights]) / h ** m
    k = len(w)
    cols = []
    for c in range(n):
        e = np.zeros(n)
        e[c] = 1.0
        if boundary == "dirichlet":
            ext = np.concatenate([np.zeros(k - 1), e, np.zeros(k - 1)])
            cols.append(np.array([w @ ext[r:r + k] for r in range(n + k - 1)]))
        elif boundary == "periodic":
            cols.append(np.array([sum(w[j] * e[(i + j - offset) % n] for j in range(k)) for i in range(n)]))
        else:
            cols.append(np.array([w @ e[i:i + k] for i in range(n - k + 1)]))
    return np.stack(cols, axis=1)


def axis_on_flux_points(weights, offset: int, n: int, boundary: str, h: float) -> np.ndarray:
    """One axis's difference with one row per flux point along that axis: the neumann rows are
    placed at the node their stencil belongs to (zero rows where it leaves the grid)."""
    d = ghost_difference(weights, n, boundary, offset, h)
    if boundary != "neumann":
        return d
    full = np.zeros((n, n))
    full[offset:offset + d.shape[0]] = d
    return full


def extension(k: int, offset: int, n: int, boundary: str) -> np.ndarray:
    """Nodes -> flux points along an axis: along a dirichlet axis the flux points are
    -(K - 1 - o) .. n - 1 + o, the ghosts carrying zero."""
    if boundary != "dirichlet":
        return np.eye(n)
    e = np.zeros((n + k - 1, n))
    for i in range(n):
        e[i + k - 1 - offset, i] = 1.0
    return e


def gradient(weights, offset: int, shape, kinds, hx: float = 1.0, hy: float = 1.0):
    """(Gx, Gy) on row-major (H, W) images, both with one row per point of the flux grid."""
    H, W = shape
    bx, by = kinds
    k = len(weights)
    dx = axis_on_flux_points(weights, offset, W, bx, hx)
    dy = axis_on_flux_points(weights, offset, H, by, hy)
    return np.kron(extension(k, offset, H, by), dx), np.kron(dy, extension(k, offset, W, bx))


def explicit_1d(u0, d, tau, steps, phi=pm_flux):
    u = np.array(u0, dtype=np.float64)
    for _ in range(steps):
        u = u - tau * (phi(u @ d.T) @ d)
    return u


def explicit_2d(u0, gx, gy, tau, steps, g=pm_g):
    b = u0.shape[0]
    u = np.array(u0, dtype=np.float64).reshape(b, -1)
    for _ in range(steps):
        vx, vy = u @ gx.T, u @ gy.T
        w = g(vx * vx + vy * vy)
        u = u - tau * ((w * vx) @ gx + (w * vy) @ gy)
    return u.reshape(u0.shape)


# ------------------------------------------------------------------------- the specs
# name -> (stencil statement, order m, weights, offset)
CASES_1D = {
    "forward-1": ("forward", 1, [-1, 1], 0),
    "backward-1": ("backward", 1, [-1, 1], 1),
    "central-1": ("central", 1, [Fraction(-1, 2), 0, Fraction(1, 2)], 1),
    "forward-2": ("forward", 2, [1, -2, 1], 0),
    "backward-2": ("backward", 2, [1, -2, 1], 2),
    "central-2": ("central", 2, [1, -2, 1], 1),
    # the fourth-order first derivative, an explicit weight list
    "custom-1": ("[1/12, -2/3, 0, 2/3, -1/12] @ 2", 1,
                 [Fraction(1, 12), Fraction(-2, 3), 0, Fraction(2, 3), Fraction(-1, 12)], 2),
}
EQ_1D = {1: "dx( g(dx(u)^2) * dx(u) )", 2: "-dxx( g(dxx(u)^2) * dxx(u) )"}
TAU = {1: 0.2, 2: 0.05}  # under 2/(L ||D||^2) for h = 1: 0.5 and 0.125 (L = 1)
H_1D = 1.0


def spec_1d(case: str, boundary: str, steps: int = 7) -> str:
    stencil, m, _, _ = CASES_1D[case]
    return (f"pde b1\nparam lambda = {LAM}\nfield u(x)\ndiffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n"
            f"equation dt(u) = {EQ_1D[m]}\ngrid h = {H_1D}\nboundary {boundary}\nstencil {stencil}\n"
            f"scheme explicit(tau = {TAU[m]}, steps = {steps})\n")


STENCILS_2D = {"forward": ([-1, 1], 0), "backward": ([-1, 1], 1),
               "central": ([Fraction(-1, 2), 0, Fraction(1, 2)], 1)}
BOUNDARIES_2D = {  # statement -> (x kind, y kind)
    "neumann": ("neumann", "neumann"), "periodic": ("periodic", "periodic"),
    "dirichlet": ("dirichlet", "dirichlet"),
    "x: periodic, y: neumann": ("periodic", "neumann"),
    "x: dirichlet, y: periodic": ("dirichlet", "periodic"),
    "x: neumann, y: dirichlet": ("neumann", "dirichlet"),
    "y: dirichlet": ("neumann", "dirichlet"),  # an axis left out is neumann
}
HX, HY = 1.0, 0.8


def spec_2d(stencil: str, boundary: str, tau: float = 0.1, steps: int = 6,
            eq: str = "div( g(norm(grad(u))^2) * grad(u) )") -> str:
    return (f"pde b2\nparam lambda = {LAM}\nfield u(x, y)\ndiffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n"
            f"equation dt(u) = {eq}\ngrid hx = {HX}, hy = {HY}\nboundary {boundary}\n"
            f"stencil {stencil}\nscheme explicit(tau = {tau}, steps = {steps})\n")



def networks(prog, tmp_path, name):
    """(label, callable on a float64 tensor) for the live fused, live conv and emitted networks."""
    src_cls = getattr(import_source(prog.source(), tmp_path, name), prog.arch.class_name)
    return [("fused", prog.module(backend="fused")), ("conv", prog.module(backend="conv")),
            ("source", src_cls())]


def assert_close(got, want, rtol):
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= rtol * scale, (np.abs(got - want).max() / scale)


# ---------------------------------------------------------------------- 1D equality
@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("case", list(CASES_1D))
def test_1d_networks_equal_dense_reference(case, boundary, tmp_path):
    _, m, weights, offset = CASES_1D[case]
    prog = pde2net.compile_text(spec_1d(case, boundary))
    n = 13
    d = ghost_difference(weights, n, boundary, offset, H_1D, m)
    rows = {"neumann": n - len(weights) + 1, "periodic": n, "dirichlet": n + len(weights) - 1}[boundary]
    assert d.shape == (rows, n)
    u0 = np.random.default_rng(3).standard_normal((3, n))
    want = explicit_1d(u0, d, TAU[m], 7)
    for label, net in networks(prog, tmp_path, f"b1_{case.replace('-', '_')}_{boundary}"):
        with torch.no_grad():
            got64 = net.double()(torch.tensor(u0)).numpy()
            got32 = net.float()(torch.tensor(u0, dtype=torch.float32)).double().numpy()
        assert_close(got64, want, 1e-12)
        assert_close(got32, want, 2e-5)
    # the derived bound covers the true norm of this D
    assert prog.stability.norm_D_sq >= np.linalg.norm(d, 2) ** 2 * (1 - 1e-12)


def test_1d_dirichlet_forward_is_the_dirichlet_laplacian():
    """D is (N+1) x N, D^T D = tridiag(-1, 2, -1) / h^2, ||D||^2 = (4/h^2) cos^2(pi / (2(N+1)))."""
    n, h = 9, 0.5
    text = spec_1d("forward-1", "dirichlet").replace(f"grid h = {H_1D}", f"grid h = {h}")
    op = pde2net.compile_text(text).module(dtype=torch.float64).op
    eye = torch.eye(n, dtype=torch.float64)
    d = op.D(eye).numpy().T  # column c = D e_c
    assert d.shape == (n + 1, n)
    lap = (2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)) / h ** 2
    np.testing.assert_allclose(d.T @ d, lap, rtol=0, atol=1e-12)
    np.testing.assert_allclose(op.Dt(torch.tensor(d.T.copy())).numpy(), d.T @ d, rtol=0, atol=1e-12)
    assert abs(np.linalg.norm(d, 2) ** 2 - 4 / h ** 2 * np.cos(np.pi / (2 * (n + 1))) ** 2) < 1e-12


# ---------------------------------------------------------------------- 2D equality
@pytest.mark.parametrize("boundary", list(BOUNDARIES_2D))
@pytest.mark.parametrize("stencil", list(STENCILS_2D))
def test_2d_networks_equal_dense_reference(stencil, boundary, tmp_path):
    weights, offset = STENCILS_2D[stencil]
    kinds = BOUNDARIES_2D[boundary]
    prog = pde2net.compile_text(spec_2d(stencil, boundary))
    shape = (6, 7)
    gx, gy = gradient(weights, offset, shape, kinds, HX, HY)
    u0 = np.random.default_rng(5).standard_normal((2, *shape))
    want = explicit_2d(u0, gx, gy, 0.1, 6)
    name = f"b2_{stencil}_{boundary.replace(':', '').replace(', ', '_').replace(' ', '_')}"
    for label, net in networks(prog, tmp_path, name):
        with torch.no_grad():
            got64 = net.double()(torch.tensor(u0)).numpy()
            got32 = net.float()(torch.tensor(u0, dtype=torch.float32)).double().numpy()
        assert_close(got64, want, 1e-12)
        assert_close(got32, want, 2e-5)
    assert prog.stability.norm_D_sq >= np.linalg.norm(np.vstack([gx, gy]), 2) ** 2 * (1 - 1e-12)
    if kinds[0] != kinds[1]:
        assert prog.stability.boundary == f"x: {kinds[0]}, y: {kinds[1]}"


def test_2d_dirichlet_is_the_five_point_dirichlet_laplacian():
    """Zero ghosts on all four sides: Dx has H (W+1) nonzero rows, Dy (H+1) W, and
    D^T D = I (x) T_W / hx^2 + T_H (x) I / hy^2 with T = tridiag(-1, 2, -1)."""
    H, W = 5, 6
    op = pde2net.compile_text(spec_2d("forward", "dirichlet")).module(dtype=torch.float64).op
    basis = torch.eye(H * W, dtype=torch.float64).reshape(H * W, H, W)
    v = op.D(basis)  # (H*W, 2, H+1, W+1): the flux grid includes the ghost row and column -1
    assert tuple(v.shape[1:]) == (2, H + 1, W + 1)
    dx = v[:, 0].reshape(H * W, -1).numpy().T
    dy = v[:, 1].reshape(H * W, -1).numpy().T
    assert np.count_nonzero(np.abs(dx).sum(axis=1)) == H * (W + 1)
    assert np.count_nonzero(np.abs(dy).sum(axis=1)) == (H + 1) * W

    def t(n):
        return 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)

    lap = np.kron(np.eye(H), t(W)) / HX ** 2 + np.kron(t(H), np.eye(W)) / HY ** 2
    np.testing.assert_allclose(dx.T @ dx + dy.T @ dy, lap, rtol=0, atol=1e-12)
    dtd = op.Dt(v).reshape(H * W, -1).numpy()
    np.testing.assert_allclose(dtd, lap, rtol=0, atol=1e-12)


@pytest.mark.parametrize("stencil", list(STENCILS_2D))
def test_constant_image_decays_symmetrically_under_dirichlet(stencil):
    """u = 0 outside on every side: a constant image decays from all four edges alike (before,
    the top-left corner stayed 1.00 after 50 steps while the bottom-right went to 0.02)."""
    text = spec_2d(stencil, "dirichlet", tau=0.1, steps=50, eq="laplace(u)").replace(
        f"grid hx = {HX}, hy = {HY}", "grid h = 1")
    prog = pde2net.compile_text(text)
    u0 = np.ones((1, 8, 8))
    out = prog.module(dtype=torch.float64)(torch.tensor(u0)).detach().numpy()[0]
    weights, offset = STENCILS_2D[stencil]
    gx, gy = gradient(weights, offset, (8, 8), ("dirichlet", "dirichlet"))
    want = explicit_2d(u0, gx, gy, 0.1, 50, g=lambda s2: np.ones_like(s2))[0]
    assert_close(out, want, 1e-12)
    corners = [out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]]
    assert max(corners) - min(corners) < 1e-12
    np.testing.assert_allclose(out, out[::-1, ::-1], rtol=0, atol=1e-12)
    assert max(corners) < 0.5 and out[4, 4] < 1.0


def test_compiled_step_dirichlet_2d_matches_dense():
    """module(compile=True) (zero_padded_sum, rows, the flux grid) computes the same network."""
    weights, offset = STENCILS_2D["forward"]
    prog = pde2net.compile_text(spec_2d("forward", "x: dirichlet, y: neumann", steps=3))
    u0 = np.random.default_rng(9).standard_normal((2, 6, 7))
    gx, gy = gradient(weights, offset, (6, 7), ("dirichlet", "neumann"), HX, HY)
    net = prog.module(dtype=torch.float64, compile=True)
    with torch.no_grad():
        got = net(torch.tensor(u0)).numpy()
    assert_close(got, explicit_2d(u0, gx, gy, 0.1, 3), 1e-12)


def test_compiled_step_dirichlet_1d_matches_dense():
    _, m, weights, offset = CASES_1D["central-1"]
    prog = pde2net.compile_text(spec_1d("central-1", "dirichlet", steps=3))
    u0 = np.random.default_rng(2).standard_normal((2, 20))
    net = prog.module(dtype=torch.float64, compile=True)
    with torch.no_grad():
        got = net(torch.tensor(u0)).numpy()
    assert_close(got, explicit_1d(u0, ghost_difference(weights, 20, "dirichlet", offset), TAU[m], 3), 1e-12)


# -------------------------------------------------------------------- other schemes
@pytest.mark.parametrize("boundary", ["dirichlet", "x: dirichlet, y: periodic"])
def test_2d_fed_and_implicit_sources_use_the_flux_grid(boundary, tmp_path):
    """FED (diffusivity frozen per cycle) and implicit CG, live and emitted, against dense
    iterations with the same D."""
    weights, offset = STENCILS_2D["forward"]
    kinds = BOUNDARIES_2D[boundary]
    shape = (5, 6)
    gx, gy = gradient(weights, offset, shape, kinds, HX, HY)
    u0 = np.random.default_rng(4).standard_normal((2, *shape))
    uf = u0.reshape(2, -1)
    # FED, one cycle of 3 steps, diffusivity frozen at the start of the cycle
    base = spec_2d("forward", boundary).replace("scheme explicit(tau = 0.1, steps = 6)",
                                                "scheme fed(tau_max = 0.2, cycles = 1, cycle_length = 3)")
    prog = pde2net.compile_text(base)
    vx, vy = uf @ gx.T, uf @ gy.T
    w = pm_g(vx * vx + vy * vy)
    want = np.empty_like(uf)
    for b in range(2):
        A = gx.T @ np.diag(w[b]) @ gx + gy.T @ np.diag(w[b]) @ gy
        x = uf[b].copy()
        for t in prog.arch.scheme.taus:
            x = x - float(t) * (A @ x)
        want[b] = x
    for label, net in networks(prog, tmp_path, f"fed_{kinds[0]}_{kinds[1]}"):
        with torch.no_grad():
            got = net.double()(torch.tensor(u0)).numpy().reshape(2, -1)
        assert_close(got, want, 1e-11)
    # implicit, lagged diffusivity solved by CG to convergence
    text = spec_2d("forward", boundary).replace("scheme explicit(tau = 0.1, steps = 6)",
                                                "scheme implicit(tau = 0.5, steps = 1, solver = cg, "
                                                "iterations = 60)")
    prog = pde2net.compile_text(text)
    for b in range(2):
        A = np.eye(uf.shape[1]) + 0.5 * (gx.T @ np.diag(w[b]) @ gx + gy.T @ np.diag(w[b]) @ gy)
        want[b] = np.linalg.solve(A, uf[b])
    for label, net in networks(prog, tmp_path, f"imp_{kinds[0]}_{kinds[1]}"):
        with torch.no_grad():
            got = net.double()(torch.tensor(u0)).numpy().reshape(2, -1)
        assert_close(got, want, 1e-9)
    # the same system by damped Jacobi: its diagonal sum_i D_ik^2 G_i reads G on the flux grid
    prog = pde2net.compile_text(text.replace("solver = cg, iterations = 60",
                                             "solver = jacobi, iterations = 400"))
    for label, net in networks(prog, tmp_path, f"jac_{kinds[0]}_{kinds[1]}"):
        with torch.no_grad():
            got = net.double()(torch.tensor(u0)).numpy().reshape(2, -1)
        assert_close(got, want, 1e-9)


def test_multigrid_dirichlet_solves_the_dirichlet_problem():
    """Many V-cycles converge to (I + tau D^T D)^-1 u with the (N+1) x N Dirichlet D."""
    n, tau = 33, 3.0
    prog = pde2net.compile_text(
        "pde mg\nfield u(x)\nequation dt(u) = dxx(u)\nboundary dirichlet\n"
        f"scheme multigrid(tau = {tau}, steps = 1, levels = 3, cycles = 30)\n")
    u0 = np.random.default_rng(6).standard_normal((2, n))
    d = ghost_difference([-1, 1], n, "dirichlet")
    want = np.linalg.solve(np.eye(n) + tau * d.T @ d, u0.T).T
    with torch.no_grad():
        got = prog.module(dtype=torch.float64)(torch.tensor(u0)).numpy()
    assert_close(got, want, 1e-10)


def test_trainable_dirichlet_2d_starts_as_the_dense_network():
    """trainable.axis_D / axis_Dt put both channels on the flux grid too."""
    weights, offset = STENCILS_2D["forward"]
    prog = pde2net.compile_text(spec_2d("forward", "x: dirichlet, y: neumann", steps=2))
    net = prog.module(trainable=True).double()
    u0 = np.random.default_rng(8).standard_normal((2, 5, 6))
    gx, gy = gradient(weights, offset, (5, 6), ("dirichlet", "neumann"), HX, HY)
    from pde2net.trainable import axis_D, axis_Dt

    irx, iry = prog.arch.stencils
    wx = torch.tensor(irx.weights, dtype=torch.float64)
    wy = torch.tensor(iry.weights, dtype=torch.float64)
    u = torch.tensor(u0)
    dx, dy = axis_D(u, wx, irx, True), axis_D(u, wy, iry, True)
    assert dx.shape == dy.shape == (2, 5, 7)
    np.testing.assert_allclose(dx.reshape(2, -1).numpy(), u0.reshape(2, -1) @ gx.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dy.reshape(2, -1).numpy(), u0.reshape(2, -1) @ gy.T, rtol=0, atol=1e-12)
    v = np.random.default_rng(1).standard_normal((2, 2, 5, 7))
    dt = axis_Dt(torch.tensor(v[:, 0]), wx, irx, True) + axis_Dt(torch.tensor(v[:, 1]), wy, iry, True)
    ref = v[:, 0].reshape(2, -1) @ gx + v[:, 1].reshape(2, -1) @ gy
    np.testing.assert_allclose(dt.reshape(2, -1).numpy(), ref, rtol=0, atol=1e-12)


# ----------------------------------------------------------------- per-axis statement
@pytest.mark.parametrize("text, col, fragment", [
    ("boundary x: periodc, y: neumann", 13, "did you mean 'periodic'"),
    ("boundary z: periodic", 10, "space variables are x, y"),
    ("boundary x: periodic, x: neumann", 23, "given twice"),
    ("boundary x: periodic y: neumann", 22, "AXIS: KIND"),
    ("boundary xx: periodic", 10, "did you mean 'x'"),
])
def test_per_axis_boundary_errors(text, col, fragment):
    src = spec_2d("forward", "neumann").replace("boundary neumann", text)
    with pytest.raises(PdeError) as info:
        pde2net.compile_text(src)
    msg = str(info.value)
    assert f":7:{col}:" in msg and fragment in msg


def test_1d_per_axis_spelling_is_the_plain_kind():
    a = pde2net.compile_text(spec_1d("forward-1", "x: periodic"))
    b = pde2net.compile_text(spec_1d("forward-1", "periodic"))
    assert a.stability.boundary == b.stability.boundary == "periodic"
    u = torch.tensor(np.random.default_rng(0).standard_normal((2, 10)))
    with torch.no_grad():
        assert torch.equal(a.module(dtype=torch.float64)(u), b.module(dtype=torch.float64)(u))


# ------------------------------------------------------------------------- the sign
SIGN_1D = "pde s\nfield u(x)\nequation dt(u) = {eq}\nscheme explicit(tau = {tau}, steps = 4)\n"


@pytest.mark.parametrize("eq", ["-dxx(u)", "dx(-dx(u))", "-dx(dx(u))", "dxxxx(u)", "-2 * dxx(u)"])
def test_backward_diffusion_compiles_not_stable(eq):
    prog = pde2net.compile_text(SIGN_1D.format(eq=eq, tau=0.1))
    r = prog.stability
    assert r.verdict == "not stable" and not r.stable
    assert "backward diffusion" in r.reason
    prog.module()  # it still builds


def test_backward_laplace_compiles_not_stable():
    prog = pde2net.compile_text(spec_2d("forward", "neumann", eq="-laplace(u)"))
    assert prog.stability.verdict == "not stable" and "backward diffusion" in prog.stability.reason


@pytest.mark.parametrize("eq, m", [("dxx(u)", 1), ("dx(dx(u))", 1), ("-dx(-dx(u))", 1)])
def test_spellings_of_forward_heat_agree(eq, m):
    prog = pde2net.compile_text(SIGN_1D.format(eq=eq, tau=0.4))
    assert prog.model.order == m and prog.stability.verdict == "stable"


def test_fourth_order_sign_decided_by_normal_form():
    """u_t = (-1)^(m+1) d^m Phi(d^m u) with m = 2: dxx(-dxx(u)) has Phi(s) = s (forward),
    the same network as -dxx(dxx(u)) and -dxxxx(u); stable at tau = 0.1 < 2/16."""
    progs = [pde2net.compile_text(SIGN_1D.format(eq=eq, tau=0.1))
             for eq in ("dxx(-dxx(u))", "-dxx(dxx(u))", "-dxxxx(u)")]
    u = torch.tensor(np.random.default_rng(0).standard_normal((2, 16)))
    outs = []
    for p in progs:
        assert p.model.order == 2 and p.stability.verdict == "stable"
        assert p.stability.tau_max == pytest.approx(2 / 16)
        with torch.no_grad():
            outs.append(p.module(dtype=torch.float64)(u).numpy())
    # and against the dense bi-Laplacian step: u - tau D^T D u with D the 3-point neumann rows
    d = ghost_difference([1, -2, 1], 16, "neumann", m=2)
    want = explicit_1d(u.numpy(), d, 0.1, 4, phi=lambda s: s)
    for o in outs:
        assert_close(o, want, 1e-12)
    np.testing.assert_array_equal(outs[0], outs[1])
