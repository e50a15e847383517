"""Small tensors and training steps: pde2net's eager 2D networks against the same step written by
hand in torch, side by side in one run.

    python benchmarks/bench_small.py                  # 8 x 64 x 64, 1 and 2 threads, +- a busy process
    python benchmarks/bench_small.py --reps 9         # fewer samples (a smoke run)
    python benchmarks/bench_small.py --boundary periodic
    python benchmarks/bench_small.py --write          # also update the table in benchmarks/RESULTS.md

The workload of people who train these networks: a batch of 8 images of 64 x 64, float32,
examples/perona_malik_2d.pde (explicit Perona-Malik, forward differences, zero-flux boundary by
default; ``--boundary`` swaps the spec's boundary line).  Rows, per torch thread count
(``torch.set_num_threads``), each next to its hand-written twin:

- frozen fwd: ``pde2net.load(path).module()`` forward, 50 steps, no gradients;
- trainable fwd+bwd: ``module(trainable=True, steps=10)``, forward then backward of a mean
  squared error to a target (gradients of every parameter); the hand-written twin learns the same
  things as plain leaf tensors (both axes' stencil weights, tau and lambda), no parametrisation.

The hand-written step is PM written the obvious good way in torch: forward differences of shifted
slices zero-padded with ``F.pad``, ``g = 1 / (1 + |grad u|^2 / lambda^2)``, the flux, and the
transposed difference of the zero-padded flux (the same scheme; the constants are read from the
compiled program, not re-typed).  Every row is first checked against a float64 NumPy reference
written here (column "max err"; the trainable rows after 10 steps: their step tau is the spec's
tau re-derived through the parametrisation, equal to round-off).

"+ busy process" rows run while a second process spins a torch matmul loop (one thread) on the
same machine; each group's label gives the 1-minute load average after it (the machine's own
load included: on a shared machine "no added load" is not a quiet machine).  Samples of all rows
of a group alternate (row 1, row 2, ..., row 1, ...) so that a change in load hits every row; the
table gives the median and the minimum time per call, the ratio to the hand-written twin of the
same group (medians, and minima: on a shared machine the least disturbed sample is the better
estimate of the cost), and the process CPU time per call (every thread, spin-waiting included;
at one thread on a loaded machine the steadier measure, since time spent descheduled is not counted).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import pde2net  # noqa: E402
from bench_cpu import machine  # noqa: E402 - the same machine line as the CPU table

BATCH, SIZE, FROZEN_STEPS, TRAIN_STEPS = 8, 64, 50, 10
BOUNDARIES = ("neumann", "periodic", "dirichlet")


# ------------------------------------------------------------------------------ the scheme
def load_program(boundary: str):
    """examples/perona_malik_2d.pde with its boundary line set to ``boundary``."""
    text = (ROOT / "examples" / "perona_malik_2d.pde").read_text()
    text = re.sub(r"(?m)^boundary \w+$", f"boundary {boundary}", text)
    return pde2net.compile_text(text, "perona_malik_2d.pde")


def spec_numbers(prog) -> tuple[float, float]:
    """(lambda, tau) of the spec, read from the compiled program."""
    return float(next(iter(prog.arch.flux.params.values()))), float(prog.arch.scheme.tau)


def reference(u0: np.ndarray, lam: float, tau: float, steps: int, boundary: str) -> np.ndarray:
    """float64 NumPy: forward differences per axis (neumann: zero across the far edge; periodic:
    wrapped; dirichlet: the field extended by zeros, flux points -1 .. n - 1), ``g(|grad u|^2)`` at
    each flux point, ``u <- u - tau (Dx^T fx + Dy^T fy)`` with Dx^T the transposed difference."""
    u = u0.astype(np.float64).copy()
    for _ in range(steps):
        if boundary == "dirichlet":  # nodes 0..n-1 inside a frame of zeros: flux points -1..n-1
            p = np.pad(u, ((0, 0), (1, 1), (1, 1)))
            dx = p[:, :, 1:] - p[:, :, :-1]          # (B, H+2, W+1): x-differences on every row
            dy = p[:, 1:, :] - p[:, :-1, :]          # (B, H+1, W+2)
            dx, dy = dx[:, :-1, :], dy[:, :, :-1]    # flux grid (H+1, W+1), ghost row/col first
            dx[:, 0, :] = 0.0                        # the ghost row carries no x-flux
            dy[:, :, 0] = 0.0
        else:
            roll = boundary == "periodic"
            dx = (np.roll(u, -1, axis=2) - u) if roll else np.zeros_like(u)
            dy = (np.roll(u, -1, axis=1) - u) if roll else np.zeros_like(u)
            if not roll:
                dx[:, :, :-1] = u[:, :, 1:] - u[:, :, :-1]
                dy[:, :-1, :] = u[:, 1:, :] - u[:, :-1, :]
        g = 1.0 / (1.0 + (dx * dx + dy * dy) / lam ** 2)
        fx, fy = g * dx, g * dy
        if boundary == "dirichlet":  # (D^T f)_k = f_(k-1) - f_k on the flux grid, nodes 0..n-1
            div = fx[:, 1:, 1:] - fx[:, 1:, :-1] + fy[:, 1:, 1:] - fy[:, :-1, 1:]
        elif boundary == "periodic":
            div = fx - np.roll(fx, 1, axis=2) + fy - np.roll(fy, 1, axis=1)
        else:
            div = fx.copy()
            div[:, :, 1:] -= fx[:, :, :-1]
            div += fy
            div[:, 1:, :] -= fy[:, :-1, :]
        u = u + tau * div
    return u


# ------------------------------------------------------------------ the hand-written twins
def comb(a: torch.Tensor, b: torch.Tensor, w0, w1) -> torch.Tensor:
    """``w0 a + w1 b``; the frozen twin passes no weights and writes the difference ``b - a``."""
    return b - a if w0 is None else w0 * a + w1 * b


def hand_D(u: torch.Tensor, w0, w1, dim: int, boundary: str) -> torch.Tensor:
    """``w0 u_i + w1 u_(i+1)`` along ``dim`` on the flux grid of the boundary."""
    n = u.shape[dim]
    if boundary == "periodic":
        return comb(u, torch.roll(u, -1, dims=dim), w0, w1)
    if boundary == "dirichlet":  # zero frame: flux points -1 .. n - 1
        up = F.pad(u, (1, 1) if dim == -1 else (0, 0, 1, 1))
        m = up.shape[dim] - 1
        return comb(up.narrow(dim, 0, m), up.narrow(dim, 1, m), w0, w1)
    d = comb(u.narrow(dim, 0, n - 1), u.narrow(dim, 1, n - 1), w0, w1)
    return F.pad(d, (0, 1) if dim == -1 else (0, 0, 0, 1))


def hand_Dt(f: torch.Tensor, w0, w1, dim: int, boundary: str) -> torch.Tensor:
    """``(D^T f)_k = w0 f_k + w1 f_(k-1)`` with the boundary's zero or wrapped flux (neumann: the
    flux of the complete differences, zero-padded; dirichlet: f holds points -1 .. n - 1); without
    weights the divergence ``f_k - f_(k-1) = -(D^T f)_k``."""
    if boundary == "periodic":
        return comb(torch.roll(f, 1, dims=dim), f, w1, w0)
    if boundary == "neumann":
        f = F.pad(f.narrow(dim, 0, f.shape[dim] - 1), (1, 1) if dim == -1 else (0, 0, 1, 1))
    m = f.shape[dim] - 1
    return comb(f.narrow(dim, 0, m), f.narrow(dim, 1, m), w1, w0)


def hand_step(boundary: str) -> Callable:
    """One PM step ``u - tau (Dx^T (g dx) + Dy^T (g dy))``; weights, tau, lambda^2 given per call
    (leaf tensors for the trainable twin; ``None`` weights for the frozen twin, which writes the
    differences as subtractions and the step as ``u + tau (f_(k-1) - f_k + ...)``)."""
    def step(u, wx, wy, tau, lam2):
        dx = hand_D(u, wx[0], wx[1], -1, boundary)
        dy = hand_D(u, wy[0], wy[1], -2, boundary)
        if boundary == "dirichlet":  # both channels on the (H+1, W+1) grid, ghost row/col first
            dx, dy = F.pad(dx, (0, 0, 1, 0)), F.pad(dy, (1, 0))
        g = 1 / (1 + (dx * dx + dy * dy) / lam2)
        fx, fy = g * dx, g * dy
        if boundary == "dirichlet":
            fx, fy = fx[..., 1:, :], fy[..., :, 1:]
        div = hand_Dt(fx, wx[0], wx[1], -1, boundary) + hand_Dt(fy, wy[0], wy[1], -2, boundary)
        return u + tau * div if wx[0] is None else u - tau * div
    return step


def hand_frozen(boundary: str, lam: float, tau: float) -> Callable[[torch.Tensor], torch.Tensor]:
    step = hand_step(boundary)
    w = (None, None)

    def run(u: torch.Tensor) -> torch.Tensor:
        for _ in range(FROZEN_STEPS):
            u = step(u, w, w, tau, lam * lam)
        return u
    return run


class HandTrainable(torch.nn.Module):
    """The trainable twin: the same learned quantities as plain leaves (no parametrisation)."""

    def __init__(self, boundary: str, lam: float, tau: float) -> None:
        super().__init__()
        self.wx = torch.nn.Parameter(torch.tensor([-1.0, 1.0]))
        self.wy = torch.nn.Parameter(torch.tensor([-1.0, 1.0]))
        self.tau = torch.nn.Parameter(torch.tensor(tau))
        self.lam = torch.nn.Parameter(torch.tensor(lam))
        self.step = hand_step(boundary)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        wx, wy, lam2 = self.wx.unbind(), self.wy.unbind(), self.lam * self.lam
        for _ in range(TRAIN_STEPS):
            u = self.step(u, wx, wy, self.tau, lam2)
        return u


def train_call(net: torch.nn.Module, u0: torch.Tensor, target: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        net.zero_grad(set_to_none=True)
        out = net(u0)
        F.mse_loss(out, target).backward()
        return out
    return run


# --------------------------------------------------------------------------------- the rows
class Row:
    def __init__(self, name: str, run: Callable[[], torch.Tensor], twin: Optional["Row"] = None,
                 grad: bool = False) -> None:
        self.name, self.run, self.twin, self.grad = name, run, twin, grad
        self.samples: list[float] = []
        self.cpu: list[float] = []  # process CPU time per call (every thread, spinning included)
        self.err = float("nan")


def rows_for(prog, boundary: str, u0: torch.Tensor, target: torch.Tensor) -> tuple[list[Row], dict]:
    lam, tau = spec_numbers(prog)
    net = prog.module()
    trainable = prog.module(trainable=True, steps=TRAIN_STEPS)
    hand_t = HandTrainable(boundary, lam, tau)
    hf = Row("hand-written frozen fwd (50 steps)", lambda: hand_frozen(boundary, lam, tau)(u0))
    pf = Row("pde2net frozen fwd `module()`", lambda: net(u0), twin=hf)
    ht = Row("hand-written trainable fwd+bwd (10 steps)", train_call(hand_t, u0, target), grad=True)
    pt = Row("pde2net trainable fwd+bwd `module(trainable=True)`", train_call(trainable, u0, target),
             twin=ht, grad=True)
    return [hf, pf, ht, pt], {"frozen": FROZEN_STEPS, "trainable": TRAIN_STEPS}


def call(row: Row) -> torch.Tensor:
    if row.grad:
        return row.run()
    with torch.no_grad():
        return row.run()


def check(rows: list[Row], x0: np.ndarray, lam: float, tau: float, boundary: str) -> None:
    """Max abs difference of each row's output to the float64 reference of its step count."""
    refs = {n: reference(x0, lam, tau, n, boundary) for n in (FROZEN_STEPS, TRAIN_STEPS)}
    for r in rows:
        out = call(r).detach().double().numpy()
        r.err = float(np.max(np.abs(out - refs[TRAIN_STEPS if r.grad else FROZEN_STEPS])))


def measure(rows: list[Row], reps: int) -> None:
    for r in rows:  # warm-up
        call(r)
    for _ in range(reps):
        for r in rows:
            t0, c0 = time.perf_counter(), time.process_time()
            call(r)
            r.samples.append((time.perf_counter() - t0) * 1e3)
            r.cpu.append((time.process_time() - c0) * 1e3)


def table_lines(groups: list[tuple[str, list[Row]]]) -> list[str]:
    out = ["| threads, load | row | ms / call (median) | min - max | x hand-written (medians) "
           "| x hand-written (minima) | CPU ms / call (min) | x hand-written (CPU) | max err |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, rows in groups:
        for r in rows:
            med, lo = statistics.median(r.samples), min(r.samples)
            if r.twin is not None:
                rm = f"**{med / statistics.median(r.twin.samples):.2f}**"
                rl = f"{lo / min(r.twin.samples):.2f}"
                rc = f"{min(r.cpu) / min(r.twin.cpu):.2f}"
            else:
                rm = rl = rc = "1"
            out.append(f"| {label} | {r.name} | {med:.2f} | {lo:.2f} - {max(r.samples):.2f} | {rm} | "
                       f"{rl} | {min(r.cpu):.2f} | {rc} | {r.err:.1e} |")
    return out


BUSY = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(384, 384)\n"
        "while True:\n    a = (a @ a).tanh_()\n")


def start_busy() -> subprocess.Popen:
    """A second process that keeps one core busy (a torch matmul loop), until it is terminated."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY])
    time.sleep(1.5)  # let it import torch and start spinning
    return proc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=25, help="samples per row (alternated)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--boundary", default="neumann", choices=BOUNDARIES)
    p.add_argument("--no-busy", action="store_true", help="skip the rows under a busy second process")
    p.add_argument("--write", action="store_true", help="update the table in benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    prog = load_program(args.boundary)
    lam, tau = spec_numbers(prog)
    rng = np.random.default_rng(0)
    x0 = np.cumsum(np.cumsum(rng.standard_normal((BATCH, SIZE, SIZE)), axis=-1), axis=-2) * 0.01
    u0 = torch.tensor(x0, dtype=torch.float32)
    target = torch.tensor(reference(x0, lam, tau, TRAIN_STEPS, args.boundary), dtype=torch.float32) + 0.01
    threads = [int(t) for t in args.threads.split(",")]
    lines = [f"machine: {machine()}; /proc/loadavg before: {Path('/proc/loadavg').read_text().strip()}",
             f"workload: {BATCH} x {SIZE} x {SIZE} float32, examples/perona_malik_2d.pde, boundary "
             f"{args.boundary}, {args.reps} samples per row", ""]
    groups = []
    loads = [False] if args.no_busy else [False, True]
    for busy in loads:
        proc = start_busy() if busy else None
        try:
            for t in threads:
                torch.set_num_threads(t)
                rows, _ = rows_for(prog, args.boundary, u0, target)
                check(rows, x0, lam, tau, args.boundary)
                measure(rows, args.reps)
                label = (f"{t}, {'+ busy process' if busy else 'no added load'} "
                         f"(load {os.getloadavg()[0]:.1f})")
                groups.append((label, rows))
                print("\n".join(table_lines([(label, rows)])[2:]), flush=True)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()
    lines += table_lines(groups)
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        from bench_cpu import write_results  # noqa: E402 - the same block format as bench_cpu

        write_results(text, f"bench_small boundary={args.boundary}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
