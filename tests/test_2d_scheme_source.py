"""The standalone source of the 2D FED, FSI and implicit networks (`pde2net compile`): the same
operations in the same order as the live fused module, so equal bit for bit in float64 and
float32, and equal to the dense float64 Kronecker reference to round-off."""
from __future__ import annotations

import ast

import numpy as np
import pytest
import torch

import pde2net
from reference import dense_gradient_2d
from test_2d import LAPLACE, spec
from test_2d_schemes import HX, HY, LAM, frozen_matrix
from reference import load_source as import_source

SCHEMES = {
    "fed_cycle": "fed(tau_max = 0.1, cycles = 2, cycle_length = 5)",
    "fed_step": "fed(tau_max = 0.1, cycles = 2, cycle_length = 5, update = step)",
    "fsi_cycle": "fsi(tau = 0.1, cycles = 2, cycle_length = 4)",
    "fsi_step": "fsi(tau = 0.1, cycles = 2, cycle_length = 4, update = step)",
    "cg": "implicit(tau = 2, steps = 2, solver = cg, iterations = 8)",
    "jacobi": "implicit(tau = 2, steps = 2, solver = jacobi, iterations = 8)",
    "fixed_point": "implicit(tau = 0.02, steps = 2, solver = fixed_point, iterations = 5)",
}
SHAPE = (7, 6)  # (H, W): H != W, so a mixed-up axis changes the shape or the values


def load_generated(prog: pde2net.Program, tmp_path, name: str):
    """Writes prog.source() to a file and imports it (as `pde2net compile` users do)."""
    src = prog.source()
    tree = ast.parse(src)
    imports = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert imports == {"torch"} and not any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    return getattr(import_source(src, tmp_path, name), prog.arch.class_name)()


def assert_bitwise(prog: pde2net.Program, gen: torch.nn.Module, seed: int = 0) -> None:
    """Generated == live, torch.equal, in float64 and float32, for a batch (B, H, W)."""
    u = torch.randn(3, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    for dtype in (torch.float64, torch.float32):
        x = u.to(dtype)
        with torch.no_grad():
            out, live = gen(x), prog.module(dtype=dtype)(x)
        assert out.dtype == dtype and out.shape == x.shape
        assert torch.equal(out, live), (dtype, (out - live).abs().max().item())


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("name", list(SCHEMES))
def test_source_matches_live_module_bitwise(name, boundary, tmp_path):
    prog = pde2net.compile_text(spec(boundary=boundary, hx=HX, hy=HY, lam=LAM, scheme=SCHEMES[name]))
    gen = load_generated(prog, tmp_path, f"g_{name}_{boundary}")
    assert_bitwise(prog, gen)
    # (H, W) and (B, 1, H, W) as the live module takes them
    u = torch.randn(2, 1, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(gen(u), prog.module(dtype=torch.float64)(u))
        assert torch.equal(gen(u[0, 0]), prog.module(dtype=torch.float64)(u[0, 0]))


@pytest.mark.parametrize("name", ["fed_cycle", "jacobi", "cg"])
def test_central_stencil_and_linear_diffusion_match_live_bitwise(name, tmp_path):
    """A three-point stencil with a zero weight (skipped terms, two-sided crop) and a constant
    diffusivity (laplace: g is broadcast to a tensor, as the live VectorFlux does)."""
    central = pde2net.compile_text(spec(boundary="neumann", stencil="central", hx=HX, hy=HY, lam=LAM,
                                        scheme=SCHEMES[name]))
    assert_bitwise(central, load_generated(central, tmp_path, f"c_{name}"), seed=1)
    heat = pde2net.compile_text(spec(LAPLACE, "periodic", hx=HX, hy=HY, scheme=SCHEMES[name]))
    assert_bitwise(heat, load_generated(heat, tmp_path, f"h_{name}"), seed=2)


def test_fed_and_cg_sources_match_dense_reference(tmp_path):
    """The generated FED cycle (step sizes in the scheme's Leja order) and CG against plain
    float64 matrix loops over the Kronecker gradients (docs/theory.md §3, §5)."""
    gx, gy = dense_gradient_2d([-1.0, 1.0], 0, SHAPE, "neumann", HX, HY)
    u = np.random.default_rng(5).standard_normal((3, *SHAPE))
    fed = pde2net.compile_text(spec(boundary="neumann", hx=HX, hy=HY, lam=LAM, scheme=SCHEMES["fed_cycle"]))
    cg = pde2net.compile_text(spec(boundary="neumann", hx=HX, hy=HY, lam=LAM, scheme=SCHEMES["cg"]))
    with torch.no_grad():
        got_fed = load_generated(fed, tmp_path, "fed_ref")(torch.tensor(u)).numpy().reshape(3, -1)
        got_cg = load_generated(cg, tmp_path, "cg_ref")(torch.tensor(u)).numpy().reshape(3, -1)
    taus = [float(t) for t in fed.arch.scheme.taus]
    for b in range(3):
        x = u[b].reshape(-1)
        for _ in range(2):  # cycles, the diffusivity frozen at the start of each
            a = frozen_matrix(x, gx, gy)
            for t in taus:
                x = x - t * (a @ x)
        np.testing.assert_allclose(got_fed[b], x, rtol=0, atol=1e-12)
        x = u[b].reshape(-1)
        for _ in range(2):  # implicit steps: 8 CG iterations from 0, diffusivity lagged
            m = np.eye(x.size) + 2.0 * frozen_matrix(x, gx, gy)
            y, r = np.zeros_like(x), x.copy()
            p, rr = r.copy(), r @ r
            for _ in range(8):
                mp = m @ p
                alpha = rr / (p @ mp)
                y, r = y + alpha * p, r - alpha * mp
                rr, rr_old = r @ r, rr
                p = r + (rr / rr_old) * p
            x = y
        np.testing.assert_allclose(got_cg[b], x, rtol=0, atol=1e-12)
