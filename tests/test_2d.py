"""2D isotropic diffusion: the two-channel gradient conv, the vector activation, the divergence,
the bound 2 / (L (4/hx^2 + 4/hy^2)), against dense Kronecker-product references (float64)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pde2net
from reference import dense_gradient_2d, explicit_dense_2d

STENCILS = {"forward": ([-1.0, 1.0], 0), "backward": ([-1.0, 1.0], 1), "central": ([-0.5, 0.0, 0.5], 1)}
PM = "diffusivity g(s2) = 1 / (1 + s2 / lambda^2)\nequation dt(u) = div( g(norm(grad(u))^2) * grad(u) )"
CHARB = "diffusivity g(s2) = 1 / sqrt(1 + s2 / lambda^2)\nequation dt(u) = div( g(norm(grad(u))^2) * grad(u) )"
LAPLACE = "equation dt(u) = laplace(u)"


def spec(eq: str = PM, boundary: str = "neumann", stencil: str = "forward", hx: float = 1.0,
         hy: float = 0.5, tau: float = 0.05, steps: int = 10, lam: float = 0.7, scheme: str = "") -> str:
    sch = scheme or f"explicit(tau = {tau}, steps = {steps})"
    return (f"pde img\nparam lambda = {lam}\nfield u(x, y)\n{eq}\ngrid hx = {hx}, hy = {hy}\n"
            f"boundary {boundary}\nstencil {stencil}\nscheme {sch}\n")


def pm(lam):
    return lambda s2: 1.0 / (1.0 + s2 / lam ** 2)


def grads(stencil, shape, boundary, hx, hy):
    w, o = STENCILS[stencil]
    return dense_gradient_2d(w, o, shape, boundary, hx, hy)


@pytest.mark.parametrize("backend", ["fused", "conv"])
@pytest.mark.parametrize("stencil", ["forward", "backward", "central"])
@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
def test_operator_matches_kronecker_reference(boundary, stencil, backend):
    hx, hy, shape = 1.0, 0.5, (7, 6)
    prog = pde2net.compile_text(spec(boundary=boundary, stencil=stencil, hx=hx, hy=hy))
    net = prog.module(backend=backend, dtype=torch.float64)
    op = net.op
    gx, gy = grads(stencil, shape, boundary, hx, hy)
    # the flux points: the nodes, plus K - 1 ghost points per axis with dirichlet (zeros outside)
    ghosts = len(STENCILS[stencil][0]) - 1 if boundary == "dirichlet" else 0
    fshape = (shape[0] + ghosts, shape[1] + ghosts)
    assert gx.shape == gy.shape == (fshape[0] * fshape[1], shape[0] * shape[1])
    rng = np.random.default_rng(1)
    u = rng.standard_normal((3, *shape))
    v = rng.standard_normal((3, 2, *fshape))
    uf = u.reshape(3, -1)
    du = op.D(torch.tensor(u)).numpy()
    np.testing.assert_allclose(du[:, 0].reshape(3, -1), uf @ gx.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(du[:, 1].reshape(3, -1), uf @ gy.T, rtol=0, atol=1e-12)
    dtv = op.Dt(torch.tensor(v), -0.3).numpy().reshape(3, -1)
    ref = -0.3 * (v[:, 0].reshape(3, -1) @ gx + v[:, 1].reshape(3, -1) @ gy)
    np.testing.assert_allclose(dtv, ref, rtol=0, atol=1e-12)
    # diffusivity per node and the frozen linear operator
    g = pm(0.7)((uf @ gx.T) ** 2 + (uf @ gy.T) ** 2)
    G = op.diffusivity(torch.tensor(u))
    assert tuple(G.shape) == (3, 1, *fshape)
    np.testing.assert_allclose(G.numpy().reshape(3, -1), g, rtol=1e-13, atol=0)
    fa = op.frozen_apply(torch.tensor(u), G, 2.0).numpy().reshape(3, -1)
    np.testing.assert_allclose(fa, 2.0 * ((g * (uf @ gx.T)) @ gx + (g * (uf @ gy.T)) @ gy),
                               rtol=0, atol=1e-12)
    # the whole network: 10 explicit steps
    out = net(torch.tensor(u)).numpy()
    np.testing.assert_allclose(out, explicit_dense_2d(u, gx, gy, pm(0.7), 0.05, 10), rtol=0, atol=1e-12)


def test_charbonnier_and_linear_laplace_match_reference():
    shape = (5, 8)
    gx, gy = grads("forward", shape, "periodic", 1.0, 1.0)
    u = np.random.default_rng(2).standard_normal((2, *shape))
    charb = pde2net.compile_text(spec(CHARB, "periodic", hx=1, hy=1, tau=0.2, steps=5, lam=0.3))
    ref = explicit_dense_2d(u, gx, gy, lambda s2: 1 / np.sqrt(1 + s2 / 0.09), 0.2, 5)
    np.testing.assert_allclose(charb.module(dtype=torch.float64)(torch.tensor(u)).numpy(), ref,
                               rtol=0, atol=1e-12)
    heat = pde2net.compile_text(spec(LAPLACE, "periodic", hx=1, hy=1, tau=0.2, steps=5))
    lin = np.eye(u[0].size) - 0.2 * (gx.T @ gx + gy.T @ gy)
    ref = (np.linalg.matrix_power(lin, 5) @ u.reshape(2, -1).T).T.reshape(u.shape)
    np.testing.assert_allclose(heat.module(dtype=torch.float64)(torch.tensor(u)).numpy(), ref,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("hx, hy", [(1.0, 1.0), (1.0, 0.5), (0.25, 2.0)])
def test_bound_is_two_over_L_times_four_over_h_squared(hx, hy):
    """docs/theory.md §2: ||grad_h||^2 <= 4/hx^2 + 4/hy^2, tau_max = 2 / (L (4/hx^2 + 4/hy^2))."""
    rep = pde2net.compile_text(spec(hx=hx, hy=hy, tau=1e-3)).stability
    assert rep.verdict == "stable" and rep.L == 1.0
    assert rep.norm_D_sq == pytest.approx(4 / hx ** 2 + 4 / hy ** 2, rel=1e-15)
    assert rep.tau_max == pytest.approx(2 / (4 / hx ** 2 + 4 / hy ** 2), rel=1e-15)
    assert rep.tau_max <= 2 / (4 / hx ** 2 + 4 / hy ** 2)
    if hx == hy:
        assert rep.bound_expr == "h**2/(4*L)"
    else:
        assert "4/hx**2" in rep.bound_expr and "4/hy**2" in rep.bound_expr
    too_big = pde2net.compile_text(spec(hx=hx, hy=hy, tau=1.01 * 2 / (4 / hx ** 2 + 4 / hy ** 2))).stability
    assert too_big.verdict == "not stable"


def test_neumann_norm_equals_closed_form_and_stays_below_symbol():
    """Forward differences with zero flux: ||grad||^2 = 4/hx^2 cos^2(pi/2W) + 4/hy^2 cos^2(pi/2H)
    (the Kronecker sum of the two 1D Neumann Laplacians)."""
    H, W, hx, hy = 6, 9, 1.0, 0.5
    gx, gy = grads("forward", (H, W), "neumann", hx, hy)
    top = np.linalg.eigvalsh(gx.T @ gx + gy.T @ gy)[-1]
    exact = 4 / hx ** 2 * math.cos(math.pi / (2 * W)) ** 2 + 4 / hy ** 2 * math.cos(math.pi / (2 * H)) ** 2
    assert top == pytest.approx(exact, rel=1e-12)
    assert top <= pde2net.compile_text(spec(hx=hx, hy=hy)).stability.norm_D_sq


def _top_vector(gx, gy, shape):
    w, vecs = np.linalg.eigh(gx.T @ gx + gy.T @ gy)
    return w[-1], vecs[:, -1].reshape(shape)


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
def test_stable_at_the_bound_and_tight_above_it(boundary):
    """At tau = tau_max the norm never grows; at 1.1 tau_max (periodic: the bound is attained by
    the checkerboard) a small multiple of the top singular vector grows (docs/theory.md §1)."""
    shape, hx, hy = (8, 6), 1.0, 0.5
    bound = 2 / (4 / hx ** 2 + 4 / hy ** 2)
    prog = pde2net.compile_text(spec(boundary=boundary, hx=hx, hy=hy, tau=bound, steps=1, lam=0.5))
    assert prog.stability.verdict == "stable"
    net = prog.module(dtype=torch.float64)
    rng = np.random.default_rng(3)
    u = torch.tensor(rng.standard_normal((64, *shape)) * rng.uniform(1e-3, 10, (64, 1, 1)))
    for _ in range(5):
        out = net(u)
        assert torch.all(out.flatten(1).norm(dim=1) <= u.flatten(1).norm(dim=1) * (1 + 1e-12))
        u = out
    gx, gy = grads("forward", shape, boundary, hx, hy)
    lam_max, vec = _top_vector(gx, gy, shape)
    if boundary == "periodic":
        assert lam_max == pytest.approx(4 / hx ** 2 + 4 / hy ** 2, rel=1e-12)
        over = pde2net.compile_text(spec(boundary=boundary, hx=hx, hy=hy, tau=1.1 * bound, steps=1, lam=0.5))
        assert over.stability.verdict == "not stable"
        small = torch.tensor(1e-6 * vec)
        grown = over.module(dtype=torch.float64)(small).norm() / small.norm()
        assert float(grown) == pytest.approx(abs(1 - 1.1 * bound * lam_max), rel=1e-6)
        assert float(grown) > 1.19


@pytest.mark.parametrize("shape", [(7, 6), (1, 7, 6), (1, 1, 7, 6)])
def test_input_shapes(shape):
    net = pde2net.compile_text(spec()).module(dtype=torch.float64)
    u = torch.randn(*shape, dtype=torch.float64)
    out = net(u)
    assert out.shape == u.shape
    ref = net(u.reshape(1, 7, 6)).reshape(shape)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError):
        net(torch.randn(2, 3, 7, 6, dtype=torch.float64))
    with pytest.raises(ValueError):
        net(torch.randn(7, 1, dtype=torch.float64))


def test_float32_close_to_float64_and_mean_preserved_neumann():
    """Zero flux conserves the mean (1^T Grad^T = 0), in the network as in the PDE."""
    net64 = pde2net.compile_text(spec(tau=0.1, steps=20)).module(dtype=torch.float64)
    u = torch.randn(2, 16, 12, dtype=torch.float64)
    out = net64(u)
    assert torch.allclose(out.mean(dim=(-2, -1)), u.mean(dim=(-2, -1)), rtol=0, atol=1e-13)
    out32 = pde2net.compile_text(spec(tau=0.1, steps=20)).module()(u.float())
    assert torch.allclose(out32.double(), out, rtol=0, atol=1e-5)


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("stencil", ["forward", "backward", "central"])
def test_generated_source_matches_live_module_bitwise(boundary, stencil, tmp_path):
    import ast
    import importlib.util

    prog = pde2net.compile_text(spec(boundary=boundary, stencil=stencil, steps=4))
    src = prog.source()
    ast.parse(src)
    path = tmp_path / "img2d.py"
    path.write_text(src)
    modspec = importlib.util.spec_from_file_location("img2d", path)
    mod = importlib.util.module_from_spec(modspec)
    modspec.loader.exec_module(mod)
    gen = mod.Img()
    u = torch.randn(2, 9, 7)
    assert torch.equal(gen(u), prog.module()(u))
    assert torch.equal(gen(u.double()), prog.module(dtype=torch.float64)(u.double()))
    gx, gy = grads(stencil, (9, 7), boundary, 1.0, 0.5)
    ref = explicit_dense_2d(u.double().numpy(), gx, gy, pm(0.7), 0.05, 4)
    np.testing.assert_allclose(gen(u.double()).numpy(), ref, rtol=0, atol=1e-12)
