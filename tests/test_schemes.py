"""FED, FSI and implicit schemes: networks against dense NumPy float64 implementations written
here from docs/theory.md §3-§6, the generated source against the live module, and the verdicts.

The dense references build D entry by entry (reference.dense_difference), apply ``D^T diag(G) D``
as matrix products and iterate the algorithms of docs/theory.md literally; nothing is taken from pde2net.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import pde2net
from reference import binomial_weights, dense_difference

BOUNDARIES = ("neumann", "periodic", "dirichlet")
LAM = 1.0


def spec(scheme: str, m: int = 1, boundary: str = "neumann", flux: str = "pm", h: str = "1",
         size: str = "") -> str:
    """A .pde text: Perona-Malik (or linear, Charbonnier, Weickert) of order 2m."""
    d = "d" + "x" * m
    g = {"pm": "1 / (1 + s2 / lambda^2)", "charbonnier": "1 / sqrt(1 + s2 / lambda^2)",
         "weickert": "1 - exp(-3.31488 / (s2 / lambda^2)^4)"}
    if flux == "linear":
        eq = f"dt(u) = {'-' if m % 2 == 0 else ''}d{'x' * (2 * m)}(u)"
        head = ""
    else:
        sign = "" if m % 2 == 1 else "-"
        eq = f"dt(u) = {sign}{d}( g({d}(u)^2) * {d}(u) )"
        head = f"param lambda = {LAM}\ndiffusivity g(s2) = {g[flux]}\n"
    return (f"pde test_scheme\n{head}field u(x)\nequation {eq}\ngrid h = {h}\nboundary {boundary}\n"
            f"{size}scheme {scheme}\n")


def g_pm(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + s ** 2 / LAM ** 2)


def matrix(m: int, n: int, boundary: str) -> np.ndarray:
    return dense_difference(binomial_weights(m), 0, n, boundary, 1.0, m)


def signal(n: int, batch: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((batch, n)), axis=1) * 0.3 + rng.standard_normal((batch, n))


def run(prog, u0: np.ndarray, dtype=torch.float64, backend: str = "fused", steps=None) -> np.ndarray:
    net = prog.module(backend=backend, steps=steps)
    with torch.no_grad():
        return net(torch.tensor(u0, dtype=dtype)).double().numpy()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# ------------------------------------------------------------------------ dense references
def fed_steps(tau_max: float, n: int) -> np.ndarray:
    i = np.arange(n)
    return tau_max / (2.0 * np.cos(np.pi * (2 * i + 1) / (4 * n + 2)) ** 2)


def leja(points: np.ndarray) -> list[int]:
    """Greedy Leja order: the largest point, then each next maximises prod |x - chosen|."""
    chosen = [int(np.argmax(np.abs(points)))]
    while len(chosen) < len(points):
        best, best_val = None, -np.inf
        for i in range(len(points)):
            if i in chosen:
                continue
            val = sum(math.log(abs(points[i] - points[j])) for j in chosen)
            if val > best_val:
                best, best_val = i, val
        chosen.append(best)
    return chosen


def fed_dense(u, d, g, taus, cycles, frozen=True):
    u = np.array(u, dtype=float)
    for _ in range(cycles):
        G = g(u @ d.T)
        for t in taus:
            w = G if frozen else g(u @ d.T)
            u = u - t * ((w * (u @ d.T)) @ d)
    return u


def fsi_dense(u, d, g, tau, n, cycles, frozen=True):
    u = np.array(u, dtype=float)
    for _ in range(cycles):
        G = g(u @ d.T)
        prev = cur = u
        for k in range(n):
            a = (4 * k + 2) / (2 * k + 3)
            w = G if frozen else g(cur @ d.T)
            step = cur - tau * ((w * (cur @ d.T)) @ d)
            prev, cur = cur, a * step + (1 - a) * prev
        u = cur
    return u


def lagged_matrix(row: np.ndarray, d: np.ndarray, g, tau: float) -> np.ndarray:
    return np.eye(d.shape[1]) + tau * d.T @ np.diag(g(d @ row)) @ d


def cg_dense(u, d, g, tau, iterations, steps):
    out = np.array(u, dtype=float)
    tiny = np.finfo(float).tiny
    for _ in range(steps):
        for b in range(out.shape[0]):
            A, f = lagged_matrix(out[b], d, g, tau), out[b].copy()
            x, r = np.zeros_like(f), f.copy()
            p, rr = r.copy(), r @ r
            for _ in range(iterations):
                ap = A @ p
                alpha = rr / max(p @ ap, tiny)
                x, r = x + alpha * p, r - alpha * ap
                rr_new = r @ r
                p, rr = r + rr_new / max(rr, tiny) * p, rr_new
            out[b] = x
    return out


def jacobi_dense(u, d, g, tau, omega, iterations, steps):
    out = np.array(u, dtype=float)
    for _ in range(steps):
        for b in range(out.shape[0]):
            A, f = lagged_matrix(out[b], d, g, tau), out[b].copy()
            x = np.zeros_like(f)
            for _ in range(iterations):
                x = x + omega * (f - A @ x) / np.diag(A)
            out[b] = x
    return out


def fixed_point_dense(u, d, phi, tau, iterations, steps):
    out = np.array(u, dtype=float)
    for _ in range(steps):
        v = out.copy()
        for _ in range(iterations):
            v = out - tau * (phi(v @ d.T) @ d)
        out = v
    return out


def pm_phi(s):
    return s * g_pm(s)


# ------------------------------------------------------------- networks equal dense schemes
CASES = {  # name: (scheme text for m = 1, for m = 2)
    "fed": ("fed(tau_max = 0.5, cycle_length = 7, cycles = 2)", "fed(tau_max = 0.125, cycle_length = 7, cycles = 2)"),
    "fed_step": ("fed(tau_max = 0.5, cycle_length = 5, cycles = 2, update = step)",
                 "fed(tau_max = 0.125, cycle_length = 5, cycles = 2, update = step)"),
    "fsi": ("fsi(tau = 0.5, cycle_length = 6, cycles = 2)", "fsi(tau = 0.125, cycle_length = 6, cycles = 2)"),
    "fsi_step": ("fsi(tau = 0.4, cycle_length = 4, cycles = 2, update = step)",
                 "fsi(tau = 0.1, cycle_length = 4, cycles = 2, update = step)"),
    "cg": ("implicit(tau = 5, steps = 2, iterations = 12)", "implicit(tau = 5, steps = 2, iterations = 12)"),
    "jacobi": ("implicit(tau = 5, steps = 2, solver = jacobi, iterations = 15)",
               "implicit(tau = 5, steps = 2, solver = jacobi, iterations = 15)"),
    "fixed_point": ("implicit(tau = 0.2, steps = 2, solver = fixed_point, iterations = 10)",
                    "implicit(tau = 0.05, steps = 2, solver = fixed_point, iterations = 10)"),
}


def dense_for(name: str, m: int, boundary: str, u0: np.ndarray) -> np.ndarray:
    d = matrix(m, u0.shape[-1], boundary)
    if name.startswith("fed"):
        tau_max, n = (0.5 if m == 1 else 0.125), (7 if name == "fed" else 5)
        taus = fed_steps(tau_max, n)
        taus = taus[leja(1.0 / taus)]
        return fed_dense(u0, d, g_pm, taus, 2, frozen=name == "fed")
    if name.startswith("fsi"):
        frozen = name == "fsi"
        tau = (0.5 if m == 1 else 0.125) if frozen else (0.4 if m == 1 else 0.1)
        return fsi_dense(u0, d, g_pm, tau, 6 if frozen else 4, 2, frozen)
    if name == "cg":
        return cg_dense(u0, d, g_pm, 5.0, 12, 2)
    if name == "jacobi":
        return jacobi_dense(u0, d, g_pm, 5.0, 2.0 / (m + 2), 15, 2)  # default omega = 2/(K+1), K = m+1
    return fixed_point_dense(u0, d, pm_phi, 0.2 if m == 1 else 0.05, 10, 2)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_network_equals_dense_scheme(name, m, boundary):
    prog = pde2net.compile_text(spec(CASES[name][m - 1], m, boundary))
    u0 = signal(37)
    assert rel(run(prog, u0), dense_for(name, m, boundary, u0)) < 1e-12


@pytest.mark.parametrize("name", list(CASES))
def test_conv_backend_and_generated_source_agree(name):
    prog = pde2net.compile_text(spec(CASES[name][1], 2, "periodic"))
    u0 = signal(33, seed=1)
    fused = run(prog, u0)
    assert rel(run(prog, u0, backend="conv"), fused) < 1e-12
    src = prog.source()
    compile(src, "generated.py", "exec")  # parses
    ns: dict = {}
    exec(compile(src, "generated.py", "exec"), ns)  # noqa: S102 - the test runs the emitted file
    net = ns[prog.arch.class_name]()
    with torch.no_grad():
        out = net(torch.tensor(u0)).numpy()
    assert rel(out, fused) < 1e-13


def test_fed_step_sizes_are_leja_ordered_fed_sizes():
    prog = pde2net.compile_text(spec("fed(tau_max = 0.5, cycle_length = 12)"))
    taus = np.array([float(t) for t in prog.arch.scheme.taus])
    want = fed_steps(0.5, 12)
    np.testing.assert_allclose(taus, want[leja(1.0 / want)], rtol=1e-14)


# ------------------------------------------------------------------------------ FED / FSI
@pytest.mark.parametrize("n", [1, 2, 5, 17, 50])
def test_cycle_stopping_time_is_exact(n):
    for kind, key in (("fed", "tau_max"), ("fsi", "tau")):
        prog = pde2net.compile_text(spec(f"{kind}({key} = 0.4, cycle_length = {n}, cycles = 3)"))
        rep = prog.stability
        want = 0.4 * (n * n + n) / 3
        assert rep.extra["cycle_stopping_time"] == pytest.approx(want, rel=1e-14)
        assert rep.extra["stopping_time"] == pytest.approx(3 * want, rel=1e-14)
    # the FED step sizes sum to it (closed form of docs/theory.md §3)
    assert fed_steps(0.4, n).sum() == pytest.approx(0.4 * (n * n + n) / 3, rel=1e-12)
    taus = pde2net.compile_text(spec(f"fed(tau_max = 0.4, cycle_length = {n})")).arch.scheme.taus
    assert sum(float(t) for t in taus) == pytest.approx(0.4 * (n * n + n) / 3, rel=1e-12)


def test_fsi_cycle_has_fed_stopping_time_on_a_slow_mode():
    """Linear FSI and FED cycles share the polynomial p(lambda) = 1 - T lambda + O(lambda^2):
    on the slowest periodic Fourier mode the decay equals 1 - T lambda to second order."""
    n_pts, n = 256, 10
    lam = 4 * math.sin(math.pi / n_pts) ** 2  # eigenvalue of D^T D for the mode cos(2 pi x / N)
    mode = np.cos(2 * np.pi * np.arange(n_pts) / n_pts)[None]
    for kind, key in (("fed", "tau_max"), ("fsi", "tau")):
        prog = pde2net.compile_text(spec(f"{kind}({key} = 0.5, cycle_length = {n})", 1, "periodic", "linear"))
        factor = float(run(prog, mode)[0] @ mode[0] / (mode[0] @ mode[0]))
        T = 0.5 * (n * n + n) / 3
        assert abs(factor - (1 - T * lam)) < (T * lam) ** 2


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("n", [3, 10, 25, 50])
@pytest.mark.parametrize("kind", ["fed", "fsi"])
def test_linear_cycles_stable_at_the_bound(kind, n, m):
    """tau = 2/||D||^2 (the symbol bound 4^m): the cycle matrix has 2-norm <= 1."""
    tau = 2 / 4 ** m
    key = "tau_max" if kind == "fed" else "tau"
    for boundary in ("periodic", "neumann"):
        prog = pde2net.compile_text(spec(f"{kind}({key} = {tau}, cycle_length = {n})", m, boundary, "linear"))
        assert prog.stability.stable
        cycle = run(prog, np.eye(32))  # rows: the cycle applied to each unit vector
        assert np.linalg.norm(cycle, 2) <= 1 + 1e-9


def test_fed_50_float32_close_to_float64_thanks_to_leja_order():
    prog = pde2net.compile_text(spec("fed(tau_max = 0.5, cycle_length = 50)", 1, "neumann", "linear"))
    u0 = signal(256, batch=4, seed=3)
    hi = run(prog, u0)
    lo = run(prog, u0, dtype=torch.float32)
    assert np.abs(lo - hi).max() / np.abs(hi).max() < 1e-5
    # the same cycle in ascending order is ruined by rounding even in float64 (docs/theory.md §3)
    d = matrix(1, 256, "neumann")
    asc = fed_dense(u0, d, lambda s: np.ones_like(s), np.sort(fed_steps(0.5, 50)), 1)
    assert np.abs(asc - hi).max() / np.abs(hi).max() > 1e-3


def test_frozen_nonlinear_fed_and_fsi_never_grow():
    """PM at the bound, frozen per cycle: ||u|| is nonincreasing cycle by cycle (docs/theory.md §3, §4)."""
    u0 = signal(64, batch=8, seed=4) * 3
    for text in ("fed(tau_max = 0.5, cycle_length = 20)", "fsi(tau = 0.5, cycle_length = 20)"):
        prog = pde2net.compile_text(spec(text))
        u = u0
        for _ in range(5):
            nxt = run(prog, u)
            assert np.all(np.linalg.norm(nxt, axis=1) <= np.linalg.norm(u, axis=1) * (1 + 1e-12))
            u = nxt


@pytest.mark.parametrize("flux", ["pm", "charbonnier", "weickert"])
@pytest.mark.parametrize("kind", ["fed", "fsi"])
def test_per_step_updates_are_never_reported_stable(kind, flux):
    key = "tau_max" if kind == "fed" else "tau"
    for tau in ("0.5", "0.1"):
        rep = pde2net.compile_text(spec(f"{kind}({key} = {tau}, cycle_length = 10, update = step)",
                                        flux=flux)).stability
        assert not rep.stable and rep.verdict != "stable" and "not proven stable" in rep.reason
        frozen = pde2net.compile_text(spec(f"{kind}({key} = {tau}, cycle_length = 10)", flux=flux)).stability
        assert frozen.stable and frozen.guarantee == "proof"


def test_fed_above_the_bound_is_not_stable():
    rep = pde2net.compile_text(spec("fed(tau_max = 0.51, cycle_length = 10)")).stability
    assert rep.verdict == "not stable" and rep.tau_max == 0.5


# ------------------------------------------------------------------------------- implicit
@pytest.mark.parametrize("m", [1, 2])
def test_cg_from_zero_never_grows(m):
    u0 = signal(48, batch=6, seed=5) * 4
    for tau in (0.1, 1, 10, 100, 1000):
        for its in (1, 2, 5, 25):
            prog = pde2net.compile_text(spec(f"implicit(tau = {tau}, iterations = {its})", m))
            assert prog.stability.stable and prog.stability.unconditional
            u = u0
            for _ in range(3):
                nxt = run(prog, u)
                assert np.all(np.linalg.norm(nxt, axis=1) <= np.linalg.norm(u, axis=1) * (1 + 1e-12))
                u = nxt


def test_cg_converges_to_the_lagged_solve():
    u0 = signal(40, batch=2, seed=6)
    d = matrix(1, 40, "neumann")
    prog = pde2net.compile_text(spec("implicit(tau = 1000, iterations = 200)"))
    exact = np.stack([np.linalg.solve(lagged_matrix(r, d, g_pm, 1000.0), r) for r in u0])
    assert rel(run(prog, u0), exact) < 1e-8


def test_damped_jacobi_converges_for_m2_at_tau_1000():
    n, tau = 40, 1000.0
    prog = pde2net.compile_text(spec(f"implicit(tau = {tau}, solver = jacobi, iterations = 10)", 2))
    omega = float(prog.arch.scheme.omega)
    assert omega < 2 / 3 and prog.stability.extra["jacobi_converges"]
    d = matrix(2, n, "neumann")
    u0 = signal(n, batch=1, seed=7)
    A = lagged_matrix(u0[0], d, g_pm, tau)
    iteration = np.eye(n) - omega * A / np.diag(A)[:, None]
    assert max(abs(np.linalg.eigvals(iteration))) < 1  # converges (docs/theory.md §5)
    plain = np.eye(n) - A / np.diag(A)[:, None]
    assert max(abs(np.linalg.eigvals(plain))) > 1  # undamped Jacobi diverges for m = 2
    # and the network's iterates approach the solution in the A-norm, iteration by iteration
    exact = np.linalg.solve(A, u0[0])
    errs = []
    for its in (10, 100, 1000):
        p = pde2net.compile_text(spec(f"implicit(tau = {tau}, solver = jacobi, iterations = {its})", 2))
        e = run(p, u0)[0] - exact
        errs.append(float(e @ A @ e))
    assert errs[0] > errs[1] > errs[2]


def test_jacobi_verdicts():
    m1 = pde2net.compile_text(spec("implicit(tau = 1000, solver = jacobi)", 1)).stability
    assert m1.stable and m1.unconditional and m1.tau_max is None
    m2 = pde2net.compile_text(spec("implicit(tau = 1000, solver = jacobi)", 2)).stability
    assert not m2.stable and m2.verdict == "cannot prove"
    assert m2.extra["jacobi_omega_limit"] == pytest.approx(2 / 3)
    bad = pde2net.compile_text(spec("implicit(tau = 1, solver = jacobi, omega = 0.9)", 2)).stability
    assert not bad.extra["jacobi_converges"]


def test_jacobi_from_zero_m1_never_grows():
    u0 = signal(48, batch=6, seed=8) * 4
    for tau in (0.5, 10, 1000):
        for its in (1, 3, 30):
            prog = pde2net.compile_text(spec(f"implicit(tau = {tau}, solver = jacobi, iterations = {its})"))
            out = run(prog, u0)
            assert np.all(np.linalg.norm(out, axis=1) <= np.linalg.norm(u0, axis=1) * (1 + 1e-12))


@pytest.mark.parametrize("flux, lip", [("pm", 1.0), ("weickert", 8 * math.exp(-7 / 8) - 1)])
@pytest.mark.parametrize("m", [1, 2])
def test_fixed_point_limit(flux, lip, m):
    rep = pde2net.compile_text(spec("implicit(tau = 0.01, solver = fixed_point)", m, flux=flux)).stability
    norm_sq = 4.0 ** m  # symbol bound of the binomial order-m difference, h = 1
    assert rep.extra["lipschitz"] == pytest.approx(lip, rel=1e-9)
    assert rep.extra["fixed_point_limit"] == pytest.approx(1 / (lip * norm_sq), rel=1e-9)
    assert rep.tau_max == pytest.approx(1 / (lip * norm_sq), rel=1e-9)
    assert not rep.stable


def test_fixed_point_iteration_converges_below_the_limit():
    """At tau = 0.9 / (Lip ||D||^2) the iterates contract to the fully implicit solution."""
    n = 40
    d = matrix(1, n, "neumann")
    u0 = signal(n, batch=2, seed=9) * 2
    outs = [run(pde2net.compile_text(spec(f"implicit(tau = 0.225, solver = fixed_point, iterations = {k})")), u0)
            for k in (40, 80)]
    resid = outs[1] + 0.225 * (pm_phi(outs[1] @ d.T) @ d) - u0
    assert np.abs(resid).max() < 1e-8 and rel(outs[0], outs[1]) < 1e-6


# ----------------------------------------------------------------------- reports and CLI
def test_check_json_has_scheme_keys(tmp_path, capsys):
    from pde2net.cli import main

    cases = {
        "fed(tau_max = 0.5, cycle_length = 10, cycles = 2)": ["cycle_stopping_time", "stopping_time", "step_sizes"],
        "fsi(tau = 0.5, cycle_length = 10)": ["cycle_stopping_time", "stopping_time", "alphas"],
        "implicit(tau = 100, solver = jacobi)": ["jacobi_omega_limit", "jacobi_converges"],
        "implicit(tau = 0.1, solver = fixed_point)": ["fixed_point_limit", "lipschitz"],
    }
    for i, (scheme, keys) in enumerate(cases.items()):
        path = tmp_path / f"s{i}.pde"
        path.write_text(spec(scheme))
        assert main(["check", str(path), "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        for k in keys + ["tau", "tau_max", "stable", "guarantee", "statement", "unconditional"]:
            assert k in data, (scheme, k)
        assert data["guarantee"] in ("proof", "observed", "none")
        assert data["statement"].startswith("docs/theory.md")
        assert main(["check", str(path)]) == 0
        assert "verdict" in capsys.readouterr().out


def test_negative_diffusivity_refused_by_every_scheme():
    text = ("pde fb\nparam l = 1\nfield u(x)\ndiffusivity g(s2) = (1 - s2 / l^2) / (1 + s2 / l^2)\n"
            "equation dt(u) = dx( g(dx(u)^2) * dx(u) )\nscheme {}\n")
    for scheme in ("fed(tau_max = 0.1, cycle_length = 5)", "fsi(tau = 0.1, cycle_length = 5)",
                   "implicit(tau = 1)", "implicit(tau = 1, solver = jacobi)"):
        rep = pde2net.compile_text(text.format(scheme)).stability
        assert not rep.stable and rep.verdict == "not stable"


def test_examples_one_per_scheme(examples_dir):
    want = {"fed.pde": FED_VERDICT, "fsi.pde": FED_VERDICT, "implicit.pde": "stable",
            "multigrid.pde": "cannot prove"}
    for name, verdict in want.items():
        prog = pde2net.load(examples_dir / name)
        assert prog.arch.scheme.__class__.__name__.lower().startswith(name[:3])
        assert prog.stability.verdict == verdict
        if name != "multigrid.pde":
            assert not prog.model.linear  # Perona-Malik for the nonlinear ones
        n = prog.model.size[0] if prog.model.size else 257
        out = run(prog, signal(n, batch=1))
        assert np.all(np.isfinite(out))


FED_VERDICT = "stable"
