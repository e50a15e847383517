"""Multigrid U-nets against a dense NumPy float64 V-cycle written here from docs/theory.md §7, the
convergence factor per V(2,2)-cycle, and the refusals (nonlinear flux, unfit grid sizes)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pde2net
from pde2net import PdeError
from reference import binomial_weights, dense_difference


def spec(tau, m=1, boundary="neumann", extra="", size=""):
    eq = "dxx(u)" if m == 1 else "-dxxxx(u)"
    return (f"pde heat_mg\nfield u(x)\nequation dt(u) = {eq}\nboundary {boundary}\n{size}"
            f"scheme multigrid(tau = {tau}{extra})\n")


# ---------------------------------------------------------------------- dense reference
def restriction(n: int, boundary: str) -> np.ndarray:
    """R: full weighting [1/4, 1/2, 1/4] on n = 2^k + 1 (vertex-centred, nodes outside dropped),
    [1, 3, 3, 1]/8 on n = 2^k (cell-centred, replicate or circular extension), stride 2."""
    if (n - 1) & (n - 2) == 0 and n & (n - 1) != 0:
        nc = (n + 1) // 2
        R = np.zeros((nc, n))
        for i in range(nc):
            for k, w in zip((-1, 0, 1), (0.25, 0.5, 0.25)):
                if 0 <= 2 * i + k < n:
                    R[i, 2 * i + k] += w
        return R
    nc = n // 2
    R = np.zeros((nc, n))
    for i in range(nc):
        for k, w in zip((-1, 0, 1, 2), (1 / 8, 3 / 8, 3 / 8, 1 / 8)):
            j = 2 * i + k
            j = j % n if boundary == "periodic" else min(max(j, 0), n - 1)
            R[i, j] += w
    return R


def hierarchy(A: np.ndarray, boundary: str, levels: int):
    ops, Rs = [A], []
    for _ in range(levels - 1):
        R = restriction(ops[-1].shape[0], boundary)
        Rs.append(R)
        ops.append(R @ ops[-1] @ (2 * R.T))  # Galerkin with P = 2 R^T
    return ops, Rs


def vcycle(ops, Rs, level, x, f, pre=2, post=2, omega=2 / 3):
    A = ops[level]
    if level == len(ops) - 1:
        return np.linalg.solve(A, f)
    d = np.diag(A)
    for _ in range(pre):
        x = x + omega * (f - A @ x) / d
    r = f - A @ x
    e = vcycle(ops, Rs, level + 1, np.zeros(Rs[level].shape[0]), Rs[level] @ r, pre, post, omega)
    x = x + 2 * Rs[level].T @ e
    for _ in range(post):
        x = x + omega * (f - A @ x) / d
    return x


def system(m, n, boundary, tau):
    D = dense_difference(binomial_weights(m), 0, n, boundary, 1.0, m)
    return np.eye(n) + tau * D.T @ D


def run(prog, u0, dtype=torch.float64, backend="fused"):
    with torch.no_grad():
        return prog.module(backend=backend)(torch.tensor(u0, dtype=dtype)).double().numpy()


# ---------------------------------------------------------------------- equality
@pytest.mark.parametrize("boundary, n", [("neumann", 33), ("neumann", 32), ("dirichlet", 33),
                                         ("dirichlet", 32), ("periodic", 32)])
@pytest.mark.parametrize("m", [1, 2])
def test_unet_equals_dense_vcycle(m, boundary, n):
    tau, levels, steps, cycles = 7.0, 3, 2, 2
    prog = pde2net.compile_text(spec(tau, m, boundary, f", levels = {levels}, steps = {steps}, "
                                                       f"cycles = {cycles}, pre = 2, post = 1"))
    u0 = np.random.default_rng(n + m).standard_normal((2, n))
    A = system(m, n, boundary, tau)
    ops, Rs = hierarchy(A, boundary, levels)
    want = u0.copy()
    for _ in range(steps):
        for b in range(2):
            x = want[b].copy()
            for _ in range(cycles):
                x = vcycle(ops, Rs, 0, x, want[b], pre=2, post=1, omega=2 / (m + 2))  # 2/(K+1)
            want[b] = x
    got = run(prog, u0)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-12
    assert np.abs(run(prog, u0, backend="conv") - want).max() / np.abs(want).max() < 1e-12


def test_default_levels_go_down_to_three_nodes():
    """levels = 0: 33 -> 17 -> 9 -> 5 -> 3, five grids (vertex-centred)."""
    prog = pde2net.compile_text(spec(10.0))
    u0 = np.random.default_rng(0).standard_normal((1, 33))
    ops, Rs = hierarchy(system(1, 33, "neumann", 10.0), "neumann", 5)
    assert ops[-1].shape == (3, 3)
    want = vcycle(ops, Rs, 0, u0[0].copy(), u0[0])
    assert np.abs(run(prog, u0)[0] - want).max() < 1e-12 * np.abs(want).max()


def test_generated_source_equals_live_unet():
    prog = pde2net.compile_text(spec(50.0, 2, "neumann", ", cycles = 2, steps = 2"))
    src = prog.source()
    ns: dict = {}
    exec(compile(src, "generated.py", "exec"), ns)  # noqa: S102 - the test runs the emitted file
    u0 = np.random.default_rng(1).standard_normal((3, 65))
    with torch.no_grad():
        out = ns[prog.arch.class_name]()(torch.tensor(u0)).numpy()
    live = run(prog, u0)
    assert np.abs(out - live).max() <= 1e-13 * np.abs(live).max()


# ----------------------------------------------------------------- convergence factor
def dense_factor(n, tau, boundary="neumann"):
    """Spectral radius of the dense V(2,2) error propagation matrix (all levels down to 3 / 2)."""
    A = system(1, n, boundary, tau)
    levels = int(math.log2(n - 1)) if n % 2 else int(math.log2(n))
    ops, Rs = hierarchy(A, boundary, levels)
    E = np.stack([vcycle(ops, Rs, 0, e, np.zeros(n)) for e in np.eye(n)], axis=1)
    return max(abs(np.linalg.eigvals(E)))


@pytest.mark.parametrize("n", [65, 64])
@pytest.mark.parametrize("tau", [1, 10, 1000])
def test_dense_factor_matches_report(n, tau):
    rho = dense_factor(n, float(tau))
    assert rho <= 0.1
    rep = pde2net.compile_text(spec(tau, size=f"size N = {n}\n")).stability
    assert rep.extra["multigrid_N"] == n
    assert rep.extra["convergence_factor"] == pytest.approx(rho, rel=0.05)


def measured_factor(n, tau, cycles=(3, 4)):
    """||e_(k+1)|| / ||e_k|| of the live U-net on a random right side, e = x - A^-1 u."""
    from scipy.linalg import solveh_banded

    u0 = np.random.default_rng(n).standard_normal((1, n))
    # A = I + tau D^T D for the forward difference with zero flux, in banded (upper) form
    diag = np.full(n, 1 + 2 * tau)
    diag[0] = diag[-1] = 1 + tau
    ab = np.stack([np.concatenate([[0.0], np.full(n - 1, -tau)]), diag])
    exact = solveh_banded(ab, u0[0])
    errs = []
    for c in cycles:
        p = pde2net.compile_text(spec(tau, extra=f", cycles = {c}"))
        errs.append(np.linalg.norm(run(p, u0)[0] - exact))
    return errs[1] / errs[0]


@pytest.mark.parametrize("n", [65, 257, 1025, 4097, 64, 256, 1024, 4096])
@pytest.mark.parametrize("tau", [1, 10, 1000])
def test_vcycle_factor_at_most_0_1(n, tau):
    rep = pde2net.compile_text(spec(tau, size=f"size N = {n}\n")).stability
    assert rep.extra["convergence_factor"] <= 0.1
    assert measured_factor(n, float(tau)) <= 0.1


def test_report_uses_default_size_and_says_so():
    rep = pde2net.compile_text(spec(10)).stability
    assert rep.extra["multigrid_N"] == 257 and "default" in rep.extra["multigrid_N_from"]
    assert rep.unconditional and rep.tau_max is None and rep.guarantee == "observed"
    assert not rep.stable  # a fixed number of V-cycles has no proof (docs/theory.md §7 is observed)
    bad = pde2net.compile_text(spec(10, size="size N = 100\n")).stability
    assert bad.extra["convergence_factor"] is None and "2^k" in bad.extra["convergence_factor_note"]


# ------------------------------------------------------------------------- refusals
def test_nonlinear_flux_refused_at_the_scheme_statement():
    text = ("pde pm\nparam l = 0.1\nfield u(x)\ndiffusivity g(s2) = 1 / (1 + s2 / l^2)\n"
            "equation dt(u) = dx( g(dx(u)^2) * dx(u) )\nscheme multigrid(tau = 1)\n")
    with pytest.raises(PdeError) as err:
        pde2net.compile_text(text, "pm.pde")
    msg = err.value.format()
    assert "pm.pde:6:1" in msg and "linear" in msg and "^" in msg


@pytest.mark.parametrize("n, boundary", [(100, "neumann"), (33, "periodic"), (48, "dirichlet")])
def test_unfit_grid_is_a_clear_value_error(n, boundary):
    prog = pde2net.compile_text(spec(1, boundary=boundary))
    with pytest.raises(ValueError, match=r"2\^k"):
        prog.module()(torch.zeros(1, n, dtype=torch.float64))


def test_too_many_levels_is_a_value_error():
    prog = pde2net.compile_text(spec(1, extra=", levels = 6"))
    with pytest.raises(ValueError, match="at most 5"):
        prog.module()(torch.zeros(1, 33, dtype=torch.float64))


def test_cli_run_reports_unfit_grid(tmp_path, capsys):
    from pde2net.cli import main

    path = tmp_path / "mg.pde"
    path.write_text(spec(1, size="size N = 100\n"))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2^k" in err and "Traceback" not in err and "internal error" not in err


def test_float32_unet_close_to_float64():
    prog = pde2net.compile_text(spec(100.0, extra=", cycles = 3"))
    u0 = np.random.default_rng(2).standard_normal((2, 257))
    hi, lo = run(prog, u0), run(prog, u0, dtype=torch.float32)
    assert np.abs(hi - lo).max() / np.abs(hi).max() < 1e-5
