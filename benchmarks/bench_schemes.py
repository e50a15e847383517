"""Layers needed per scheme for Perona-Malik up to diffusion time T = 200 (h = 1), and the error
against a fine explicit reference (tau = 0.02).  Not a test: prints tables.

    python benchmarks/bench_schemes.py [--n 256] [--lam 0.1]

FED/FSI reach T with O(sqrt(T)) layers (a cycle of n blocks covers tau_max (n^2 + n) / 3); the
explicit scheme needs T / tau_max = O(T).  Multigrid is for linear diffusion only, so its row uses
the heat equation (with its own fine explicit reference).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import pde2net

PM = """pde pm
param lambda = {lam}
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
boundary neumann
scheme {scheme}
"""
HEAT = "pde heat\nfield u(x)\nequation dt(u) = dxx(u)\nboundary neumann\nscheme {scheme}\n"


def test_signal(n: int, batch: int, seed: int = 0) -> np.ndarray:
    """Piecewise constant rows with 8 jumps plus 5% Gaussian noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((batch, n))
    for b in range(batch):
        edges = np.sort(rng.choice(np.arange(1, n), size=8, replace=False))
        levels = rng.uniform(-1.0, 1.0, size=9)
        out[b] = np.repeat(levels, np.diff(np.concatenate([[0], edges, [n]])))
    return out + 0.05 * rng.standard_normal(out.shape)


def fed_plan(T: float, cycles: int, tau_max: float = 0.5) -> tuple[int, float]:
    """The shortest cycle length n with cycles * tau_max (n^2 + n)/3 >= T, and the tau_max that
    hits T exactly."""
    n = math.ceil((-1 + math.sqrt(1 + 12 * T / (cycles * tau_max))) / 2)
    return n, 3 * T / (cycles * (n * n + n))


def run(text: str, u0: torch.Tensor) -> tuple[np.ndarray, float]:
    net = pde2net.compile_text(text).module()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = net(u0)
    return out.numpy(), time.perf_counter() - t0


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def schemes(T: float) -> list[tuple[str, str, int]]:
    """(label, scheme statement, layers) for Perona-Malik to time T."""
    rows = [("explicit tau=0.5", f"explicit(tau = 0.5, steps = {round(T / 0.5)})", round(T / 0.5))]
    for kind, key in (("fed", "tau_max"), ("fsi", "tau")):
        for cycles in (2, 5, 10, 20):
            n, tau = fed_plan(T, cycles)
            rows.append((f"{kind} {cycles} cycles x n={n}",
                         f"{kind}({key} = {tau!r}, cycle_length = {n}, cycles = {cycles})", cycles * n))
    for tau, its in ((10.0, 10), (5.0, 10), (2.0, 5)):
        steps = round(T / tau)
        rows.append((f"implicit cg tau={tau:g} x{its}", f"implicit(tau = {tau}, steps = {steps}, iterations = {its})",
                     steps * its))
    for its in (30, 100):  # from x0 = 0 Jacobi loses mass until it has converged
        rows.append((f"implicit jacobi tau=2 x{its}", f"implicit(tau = 2, steps = {round(T / 2)}, "
                     f"solver = jacobi, iterations = {its})", round(T / 2) * its))
    rows.append(("fixed point tau=0.2 x3", f"implicit(tau = 0.2, steps = {round(T / 0.2)}, solver = fixed_point, "
                 "iterations = 3)", round(T / 0.2) * 3))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=257)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--T", type=float, default=200.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    u0 = torch.tensor(test_signal(args.n, batch=4), dtype=torch.float64)
    T = args.T
    ref, _ = run(PM.format(lam=args.lam, scheme=f"explicit(tau = 0.02, steps = {round(T / 0.02)})"), u0)
    print(f"Perona-Malik, lambda = {args.lam}, N = {args.n}, h = 1, T = {T:g}; reference: explicit tau = 0.02 "
          f"({round(T / 0.02)} steps), float64, CPU 1 thread\n")
    print(f"{'scheme':<30} {'layers':>7} {'rel. error':>11} {'time [s]':>9}")
    for label, scheme, layers in schemes(T):
        out, secs = run(PM.format(lam=args.lam, scheme=scheme), u0)
        print(f"{label:<30} {layers:>7} {rel_err(out, ref):>11.3e} {secs:>9.3f}")
    # multigrid: linear diffusion only
    href, _ = run(HEAT.format(scheme=f"explicit(tau = 0.02, steps = {round(T / 0.02)})"), u0)
    print("\nheat equation (multigrid is linear only), same T; reference explicit tau = 0.02")
    for tau, cycles in ((10.0, 1), (10.0, 2), (50.0, 2)):
        steps = round(T / tau)
        out, secs = run(HEAT.format(scheme=f"multigrid(tau = {tau}, steps = {steps}, cycles = {cycles})"), u0)
        print(f"{f'multigrid tau={tau:g} V(2,2)x{cycles}':<30} {steps * cycles:>7} {rel_err(out, href):>11.3e} "
              f"{secs:>9.3f}   (layers = V-cycles)")
    print("\nlayers to reach T (PM): explicit O(T) vs FED/FSI with 10 cycles O(sqrt(T))")
    print(f"{'T':>8} {'explicit':>9} {'FED':>6} {'FED/sqrt(T)':>12} {'FED err':>10}")
    for t in (12.5, 50.0, 200.0, 800.0):
        n, tau = fed_plan(t, 10)
        r, _ = run(PM.format(lam=args.lam, scheme=f"explicit(tau = 0.05, steps = {round(t / 0.05)})"), u0)
        out, _ = run(PM.format(lam=args.lam, scheme=f"fed(tau_max = {tau!r}, cycle_length = {n}, cycles = 10)"), u0)
        print(f"{t:>8g} {round(t / 0.5):>9} {10 * n:>6} {10 * n / math.sqrt(t):>12.2f} {rel_err(out, r):>10.2e}")


if __name__ == "__main__":
    main()
