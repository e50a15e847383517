"""CPU benchmark: one explicit Perona-Malik step, pde2net against hand-written code, side by side.

    python benchmarks/bench_cpu.py                   # 1D 64 x 4096 and 2D 4 x 512 x 512, f32 + f64
    python benchmarks/bench_cpu.py --quick           # fewer repetitions (a smoke run)
    python benchmarks/bench_cpu.py --write           # also update the table in benchmarks/RESULTS.md
    python benchmarks/bench_cpu.py --operators       # only the operator-model rows (several minutes)
    python benchmarks/bench_cpu.py --operators eed,you_kaveh --no-compile   # a subset, eager only

Rows: pde2net ``compile=True`` (on the CPU the generated C++ kernel of pde2net.fastpath, what
users get), the torch.compile'd step it replaced (the same network's class forward), the eager
modules, hand-written torch and NumPy, and Devito (1D; 2D in two formulations, fluxes recomputed
at the shifted points or stored in Functions first: take the better).  The kernel's g++ time is a
note (0 when it is already in the per-user cache; set PDE2NET_CACHE to an empty directory to see
it).  Run once with ``--threads 1`` and once with ``--threads 2``.

Operator rows (``--operators``, not part of the default run: with torch.compile they take several
minutes): for EED, the 3D heat equation, a 3D Perona-Malik (spec text in this file), colour
Perona-Malik, Catte et al., TV with a data term and You-Kaveh (the examples), pde2net's live
network (eager, and ``compile=True``: its block in torch.compile) against the same scheme written
by hand in torch (eager and torch.compile'd), float32 on 4 x 256 x 256 (colour 1 x 3 x 256 x 256;
3D 2 x 64 x 64 x 64), all checked against the hand-written step in float64 (column "max err"; a
note gives pde2net's float64 network against it: rounding level, so the two are the same
scheme), ratios to the hand-written row of the same mode.

One process, one table.  Every row computes the same scheme (examples/perona_malik.pde and
examples/perona_malik_2d.pde: zero-flux forward differences, Phi(s) = s / (1 + s^2/lambda^2)) and is
first checked against a float64 NumPy reference written here (column "max err").  Rows are timed
in alternation (row 1, row 2, ..., row 1, ...) so that a change in machine load hits all of them;
each row runs its own number of steps per sample (about 50 ms), and the table reports the median
time per grid-point-step with min-max over the samples and the ratio of medians to the fastest row.

Optional rows (skipped with a note when the package is not importable; keep them out of the
project's environment, e.g. ``python -m venv /tmp/bench-venv && pip install py-pde devito``):
py-pde (numba backend, float64, one signal at a time: its grid holds one field) and Devito
(generated C with OpenMP).  Their compile times are reported separately.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
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
from pde2net import fastpath  # noqa: E402

SAMPLE_SECONDS = 0.05


# --------------------------------------------------------------------------- the scheme
def spec_numbers(prog) -> tuple[float, float]:
    """(lambda, tau) of the example, read from the compiled program (not re-typed here)."""
    lam = float(next(iter(prog.arch.flux.params.values())))
    return lam, float(prog.arch.scheme.tau)


def reference_1d(u0: np.ndarray, lam: float, tau: float, steps: int) -> np.ndarray:
    """float64: u <- u + tau (f_i - f_(i-1)), f = Phi(u_(i+1) - u_i) on interior flux points only."""
    u = u0.astype(np.float64).copy()
    for _ in range(steps):
        d = u[:, 1:] - u[:, :-1]
        f = d / (1.0 + d * d / lam ** 2)
        u[:, :-1] += tau * f
        u[:, 1:] -= tau * f
    return u


def reference_2d(u0: np.ndarray, lam: float, tau: float, steps: int) -> np.ndarray:
    """float64 isotropic step: forward differences (zero across the far edge), g(|grad u|^2) grad u
    at each node, u <- u - tau (Dx^T fx + Dy^T fy)."""
    u = u0.astype(np.float64).copy()
    for _ in range(steps):
        dx = np.zeros_like(u)
        dy = np.zeros_like(u)
        dx[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
        dy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
        g = 1.0 / (1.0 + (dx * dx + dy * dy) / lam ** 2)
        fx, fy = g * dx, g * dy
        div = fx.copy()
        div[..., :, 1:] -= fx[..., :, :-1]
        div += fy
        div[..., 1:, :] -= fy[..., :-1, :]
        u = u + tau * div
    return u


# ------------------------------------------------------------------------ hand-written rows
def numpy_inplace_1d(u0: np.ndarray, lam: float, tau: float) -> Callable[[int], np.ndarray]:
    """NumPy, preallocated buffers, every operation in place."""
    u = u0.copy()
    d = np.empty_like(u[:, 1:])
    f = np.empty_like(d)
    c = u.dtype.type(1.0 / lam ** 2)
    t = u.dtype.type(tau)

    def run(steps: int) -> np.ndarray:
        u[...] = u0
        for _ in range(steps):
            np.subtract(u[:, 1:], u[:, :-1], out=d)
            np.multiply(d, d, out=f)
            np.multiply(f, c, out=f)
            np.add(f, 1, out=f)
            np.divide(d, f, out=f)
            np.multiply(f, t, out=f)
            u[:, :-1] += f
            u[:, 1:] -= f
        return u
    return run


def numpy_inplace_2d(u0: np.ndarray, lam: float, tau: float) -> Callable[[int], np.ndarray]:
    u = u0.copy()
    dx, dy, g = np.zeros_like(u), np.zeros_like(u), np.empty_like(u)
    c = u.dtype.type(1.0 / lam ** 2)
    t = u.dtype.type(tau)

    def run(steps: int) -> np.ndarray:
        u[...] = u0
        for _ in range(steps):
            np.subtract(u[..., :, 1:], u[..., :, :-1], out=dx[..., :, :-1])
            np.subtract(u[..., 1:, :], u[..., :-1, :], out=dy[..., :-1, :])
            np.multiply(dx, dx, out=g)
            g[...] += dy * dy
            np.multiply(g, c, out=g)
            np.add(g, 1, out=g)
            np.divide(t, g, out=g)
            np.multiply(dx, g, out=dx)
            np.multiply(dy, g, out=dy)
            u[...] += dx
            u[..., :, 1:] -= dx[..., :, :-1]
            u[...] += dy
            u[..., 1:, :] -= dy[..., :-1, :]
        return u
    return run


def torch_step_1d(lam: float, tau: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The step as one would write it by hand with shifts and F.pad."""
    c = 1.0 / lam ** 2

    def step(u: torch.Tensor) -> torch.Tensor:
        d = u[..., 1:] - u[..., :-1]
        f = F.pad(d / (1 + c * d * d), (1, 1))
        return u + tau * (f[..., 1:] - f[..., :-1])
    return step


def torch_step_2d(lam: float, tau: float) -> Callable[[torch.Tensor], torch.Tensor]:
    c = 1.0 / lam ** 2

    def step(u: torch.Tensor) -> torch.Tensor:
        dx = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
        dy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
        g = 1 / (1 + c * (dx * dx + dy * dy))
        fx = F.pad(g * dx, (1, 0))
        fy = F.pad(g * dy, (0, 0, 1, 0))
        return u + tau * (fx[..., :, 1:] - fx[..., :, :-1] + fy[..., 1:, :] - fy[..., :-1, :])
    return step


def repeat(step: Callable, u0):
    def run(steps: int):
        u = u0
        for _ in range(steps):
            u = step(u)
        return u
    return run


# ----------------------------------------------------------------------- optional: py-pde
def pypde_row_1d(u0: np.ndarray, lam: float, tau: float):
    """py-pde, numba backend, one signal of the batch (its grid holds one field).  The operator
    ``d_dx_backward(d_dx_forward(u) / (1 + d_dx_forward(u)**2 / lambda**2))`` with these boundary
    operators reproduces the zero-flux scheme exactly; the default Neumann handling does not."""
    import pde

    n = u0.shape[-1]
    grid = pde.CartesianGrid([[0, n]], n)
    rhs = f"d_dx_backward(d_dx_forward(u) / (1 + d_dx_forward(u)**2 / {lam!r}**2))"
    eq = pde.PDE({"u": rhs}, bc="neumann",
                 bc_ops={"u:d_dx_backward": {"x-": {"virtual_point": 0}, "x+": "neumann"}})
    state = pde.ScalarField(grid, u0[0].astype(np.float64))
    solver_cls = getattr(pde, "EulerSolver", None) or pde.ExplicitSolver
    solver = solver_cls(eq, backend="numba", adaptive=False)
    t0 = time.perf_counter()
    stepper = solver.make_stepper(state, dt=tau)
    stepper(state.copy(), 0.0, tau)  # numba compiles on the first call
    compile_s = time.perf_counter() - t0

    def run(steps: int) -> np.ndarray:
        s = state.copy()
        stepper(s, 0.0, (steps - 0.5) * tau)  # steps of dt = tau (t_end inside the last step)
        return s.data[None, :]
    return run, compile_s


# ----------------------------------------------------------------------- optional: Devito
def devito_row_1d(u0: np.ndarray, lam: float, tau: float):
    """Devito: the flux inlined in the update; the zero-flux boundary as a mask on the flux points
    (m_i = 1 for i < n - 1), so there is one equation and one loop nest."""
    from devito import Eq, Function, Grid, Operator, TimeFunction

    b, n = u0.shape
    dtype = u0.dtype.type
    grid = Grid(shape=(b, n), extent=(b - 1, n - 1), dtype=dtype)
    _, x = grid.dimensions
    u = TimeFunction(name="u", grid=grid, space_order=1, time_order=1)
    m = Function(name="m", dimensions=(x,), shape=(n,), space_order=1, dtype=dtype)
    m.data[:] = 1
    m.data[-1] = 0
    t = grid.stepping_dim

    def phi(d):
        return d / (1 + d * d * (1.0 / lam ** 2))

    fwd = m[x] * phi(u[t, grid.dimensions[0], x + 1] - u)
    bwd = m[x - 1] * phi(u - u[t, grid.dimensions[0], x - 1])
    op = Operator([Eq(u.forward, u + tau * (fwd - bwd))])
    t0 = time.perf_counter()
    op.cfunction  # JIT-compiles the C code
    compile_s = time.perf_counter() - t0

    def run(steps: int) -> np.ndarray:
        u.data[0] = u0
        op.apply(time_m=0, time_M=steps - 1)
        return np.array(u.data[steps % 2])
    return run, compile_s


def devito_rows_2d(u0: np.ndarray, lam: float, tau: float):
    """Devito, two formulations of the 2D step (the table shows both; take the better):
    ``recomputed``, one equation with the fluxes recomputed at the shifted points, and ``stored``,
    the fluxes stored in Functions first, then the divergence.  The zero-flux boundary as masks
    on the flux points (m_i = 1 for i < n - 1; the halo at -1 is zero)."""
    from devito import Eq, Function, Grid, Operator, TimeFunction

    b, h, w = u0.shape
    dtype = u0.dtype.type
    out = []
    for kind in ("recomputed", "stored"):
        grid = Grid(shape=(b, h, w), extent=(b - 1, h - 1, w - 1), dtype=dtype)
        k, y, x = grid.dimensions
        u = TimeFunction(name="u", grid=grid, space_order=1, time_order=1)
        mx = Function(name="mx", dimensions=(x,), shape=(w,), space_order=1, dtype=dtype)
        my = Function(name="my", dimensions=(y,), shape=(h,), space_order=1, dtype=dtype)
        mx.data[:] = 1
        mx.data[-1] = 0
        my.data[:] = 1
        my.data[-1] = 0
        t = grid.stepping_dim
        c = 1.0 / lam ** 2

        def flux(yy, xx):
            vx = mx[xx] * (u[t, k, yy, xx + 1] - u[t, k, yy, xx])
            vy = my[yy] * (u[t, k, yy + 1, xx] - u[t, k, yy, xx])
            gg = 1 / (1 + c * (vx * vx + vy * vy))
            return gg * vx, gg * vy

        if kind == "recomputed":
            fx, fy = flux(y, x)
            fxl, _ = flux(y, x - 1)
            _, fyu = flux(y - 1, x)
            eqs = [Eq(u.forward, u + tau * (fx - fxl + fy - fyu))]
        else:
            fxs = Function(name="fx", grid=grid, space_order=1)
            fys = Function(name="fy", grid=grid, space_order=1)
            fx, fy = flux(y, x)
            eqs = [Eq(fxs, fx), Eq(fys, fy),
                   Eq(u.forward, u + tau * (fxs - fxs[k, y, x - 1] + fys - fys[k, y - 1, x]))]
        op = Operator(eqs)
        t0 = time.perf_counter()
        op.cfunction  # JIT-compiles the C code
        secs = time.perf_counter() - t0

        def run(steps: int, u=u, op=op) -> np.ndarray:
            u.data[0] = u0
            op.apply(time_m=0, time_M=steps - 1)
            return np.array(u.data[steps % 2])
        out.append((kind, run, secs))
    return out


# ------------------------------------------------------------- operator rows: hand-written steps
# The operator model (pde2net/operators): each example's scheme written by hand in torch, the way a
# researcher would (F.pad / slicing, a symmetric pad for the mirror boundary), on (B, C, *space)
# with x the last dim.  Every example uses the zero-flux (neumann) boundary and h = 1.

def mirror_pad(u: torch.Tensor, dim: int, r: int) -> torch.Tensor:
    """u extended by r points on both sides of ``dim`` with u_(-1-k) = u_k (the zero-flux mirror)."""
    n = u.shape[dim]
    return torch.cat([u.narrow(dim, 0, r).flip(dim), u, u.narrow(dim, n - r, r).flip(dim)], dim=dim)


def gauss_kernel(sigma: float, truncate: float = 3.0) -> list[float]:
    """exp(-k^2 / (2 sigma^2)) for |k| <= truncate sigma (h = 1), normalised to sum 1."""
    r = int(truncate * sigma)
    w = [math.exp(-k * k / (2.0 * sigma * sigma)) for k in range(-r, r + 1)]
    return [x / sum(w) for x in w]


def gauss_2d(weights: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Separable Gaussian smoothing of (B, C, H, W), mirrored at the edges: two conv2d."""
    r = len(weights) // 2

    def smooth(u: torch.Tensor) -> torch.Tensor:
        k = torch.tensor(weights, dtype=u.dtype)
        b, c, h, w = u.shape
        v = mirror_pad(mirror_pad(u.reshape(b * c, 1, h, w), -1, r), -2, r)
        v = F.conv2d(v, k.reshape(1, 1, 1, -1))
        return F.conv2d(v, k.reshape(1, 1, -1, 1)).reshape(b, c, h, w)
    return smooth


def grad_2d(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences, zero across the far edge (the flux grid of the zero-flux boundary)."""
    return (F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1)), F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1)))


def div_2d(fx: torch.Tensor, fy: torch.Tensor) -> torch.Tensor:
    """-(D^T): the backward-difference divergence of fluxes that vanish across the far edge."""
    fx, fy = F.pad(fx, (1, 0)), F.pad(fy, (0, 0, 1, 0))
    return fx[..., :, 1:] - fx[..., :, :-1] + fy[..., 1:, :] - fy[..., :-1, :]


def hand_pm_2d(lam: float, tau: float, sigma: Optional[float] = None) -> Callable:
    """Perona-Malik, g(s2) = 1 / (1 + s2 / lambda^2) joint over the channels (colour PM); with
    sigma, Catte et al.: g sees the gradient of the Gaussian-smoothed image."""
    c = 1.0 / lam ** 2
    smooth = gauss_2d(gauss_kernel(sigma)) if sigma is not None else None

    def step(u: torch.Tensor) -> torch.Tensor:
        dx, dy = grad_2d(u)
        sx, sy = grad_2d(smooth(u)) if smooth is not None else (dx, dy)
        g = 1 / (1 + c * (sx * sx + sy * sy).sum(dim=1, keepdim=True))
        return u + tau * div_2d(g * dx, g * dy)
    return step


def hand_tv(eps: float, alpha: float, tau: float) -> Callable:
    """Regularised TV flow with a data term: u + tau (div(g grad u) + alpha (f - u)),
    g = 1 / sqrt(1 + |grad u|^2 / eps^2); f = u0 (the first argument the row passes)."""
    c = 1.0 / eps ** 2

    def step(u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        dx, dy = grad_2d(u)
        g = torch.rsqrt(1 + c * (dx * dx + dy * dy))
        return u + tau * (div_2d(g * dx, g * dy) + alpha * (f - u))
    return step


def hand_you_kaveh(lam: float, tau: float) -> Callable:
    """u - tau Lap(g((Lap u)^2) Lap u), Lap the 5-point zero-flux Laplacian (-D^T D)."""
    c = 1.0 / lam ** 2

    def lap(u: torch.Tensor) -> torch.Tensor:
        return div_2d(*grad_2d(u))

    def step(u: torch.Tensor) -> torch.Tensor:
        s = lap(u)
        return u - tau * lap(s / (1 + c * s * s))
    return step


def grad_3d(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (F.pad(u[..., 1:] - u[..., :-1], (0, 1)),
            F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1)),
            F.pad(u[..., 1:, :, :] - u[..., :-1, :, :], (0, 0, 0, 0, 0, 1)))


def div_3d(fx: torch.Tensor, fy: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
    fx, fy, fz = F.pad(fx, (1, 0)), F.pad(fy, (0, 0, 1, 0)), F.pad(fz, (0, 0, 0, 0, 1, 0))
    return (fx[..., 1:] - fx[..., :-1] + fy[..., 1:, :] - fy[..., :-1, :]
            + fz[..., 1:, :, :] - fz[..., :-1, :, :])


def hand_heat_3d(tau: float) -> Callable:
    """u + tau Lap u, the 7-point zero-flux Laplacian."""
    def step(u: torch.Tensor) -> torch.Tensor:
        return u + tau * div_3d(*grad_3d(u))
    return step


def hand_pm_3d(lam: float, tau: float) -> Callable:
    c = 1.0 / lam ** 2

    def step(u: torch.Tensor) -> torch.Tensor:
        dx, dy, dz = grad_3d(u)
        g = 1 / (1 + c * (dx * dx + dy * dy + dz * dz))
        return u + tau * div_3d(g * dx, g * dy, g * dz)
    return step


def hand_eed(lam: float, sigma: float, C: float, delta: float, tau: float) -> Callable:
    """Edge-enhancing diffusion with Weickert's g(s2) = 1 - exp(-C / (s2 / lambda^2)^4): the tensor
    T = I + (g - 1) v v^T / |v|^2 of v = central gradient of the smoothed image (mirrored); the
    2x2 cell means of T split into x, y and two diagonal weights (diagonal mass m = delta (a + c) / 2):
    w1 = a - m, w2 = c - m, w3 = m + b, w4 = m - b; an axis edge gets half of each cell beside it."""
    smooth = gauss_2d(gauss_kernel(sigma))

    def cells(t: torch.Tensor) -> torch.Tensor:
        return 0.25 * (t[..., :-1, :-1] + t[..., :-1, 1:] + t[..., 1:, :-1] + t[..., 1:, 1:])

    def step(u: torch.Tensor) -> torch.Tensor:
        us = mirror_pad(mirror_pad(smooth(u), -1, 1), -2, 1)
        vx = 0.5 * (us[..., 1:-1, 2:] - us[..., 1:-1, :-2])
        vy = 0.5 * (us[..., 2:, 1:-1] - us[..., :-2, 1:-1])
        s2 = vx * vx + vy * vy
        gm1 = -torch.exp(-C / (s2 / lam ** 2) ** 4)  # g - 1 (g(0) = 1)
        k = gm1 / s2.clamp_min(torch.finfo(u.dtype).tiny)
        a, b, c = cells(1 + k * vx * vx), cells(k * vx * vy), cells(1 + k * vy * vy)
        m = (0.5 * delta) * (a + c)
        w1 = F.pad(a - m, (0, 0, 1, 1))
        w2 = F.pad(c - m, (1, 1))
        gx = 0.5 * (w1[..., 1:, :] + w1[..., :-1, :])
        gy = 0.5 * (w2[..., :, 1:] + w2[..., :, :-1])
        fx = gx * (u[..., :, 1:] - u[..., :, :-1])
        fy = gy * (u[..., 1:, :] - u[..., :-1, :])
        f3 = 0.5 * (m + b) * (u[..., 1:, 1:] - u[..., :-1, :-1])   # |o|^2 = 2 on the diagonals
        f4 = 0.5 * (m - b) * (u[..., :-1, 1:] - u[..., 1:, :-1])
        # each edge's flux leaves its upper end and enters its lower end
        div = (F.pad(fx, (0, 1)) - F.pad(fx, (1, 0)) + F.pad(fy, (0, 0, 0, 1)) - F.pad(fy, (0, 0, 1, 0))
               + F.pad(f3, (0, 1, 0, 1)) - F.pad(f3, (1, 0, 1, 0))
               + F.pad(f4, (0, 1, 1, 0)) - F.pad(f4, (1, 0, 0, 1)))
        return u + tau * div
    return step


# ------------------------------------------------------------------------------ the runs
class Row:
    def __init__(self, name: str, run: Callable[[int], object], points: int, note: str = "") -> None:
        self.name, self.run, self.points, self.note = name, run, points, note
        self.steps = 5
        self.samples: list[float] = []
        self.cpu: list[float] = []  # process CPU time per point-step (all threads, spinning included)
        self.err: Optional[float] = None
        self.faults = 0
        self.versus: Optional[Row] = None  # the hand-written row it is compared with


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check(rows: list[Row], reference: Callable[[int], np.ndarray], steps: int = 20) -> None:
    """Max abs difference to the float64 reference after ``steps`` steps."""
    ref = reference(steps)
    for r in rows:
        out = to_numpy(r.run(steps)).astype(np.float64)
        r.err = float(np.max(np.abs(out - ref[: out.shape[0]])))


def calibrate(rows: list[Row]) -> None:
    for r in rows:
        r.run(2)  # warm-up (and compilation for compiled rows)
        per_step = float("inf")
        for _ in range(3):  # the least disturbed of three: a load spike must not shrink the samples
            t0 = time.perf_counter()
            r.run(r.steps)
            per_step = min(per_step, (time.perf_counter() - t0) / r.steps)
        r.steps = int(min(400, max(3, SAMPLE_SECONDS / max(per_step, 1e-9))))


def minor_faults() -> int:
    """Page faults of this process so far (first touches of freshly mapped memory)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(rows: list[Row], reps: int) -> None:
    """Alternating samples; also counts page faults per step (a row that allocates large
    temporaries can fault on every step once glibc returns freed memory to the system)."""
    with torch.no_grad():
        for _ in range(reps):
            for r in rows:
                f0, t0, c0 = minor_faults(), time.perf_counter(), time.process_time()
                r.run(r.steps)
                r.samples.append((time.perf_counter() - t0) / (r.steps * r.points) * 1e9)
                r.cpu.append((time.process_time() - c0) / (r.steps * r.points) * 1e9)
                r.faults += minor_faults() - f0


def table(rows: list[Row]) -> list[str]:
    """Ratios of medians, and of minima (the least disturbed sample: on a shared machine the
    minimum is the better estimate of what the code costs).  The CPU column is the process's CPU
    time (every thread, spin-waiting included) per point-step: on a loaded machine the better
    estimate of a one-thread row's cost, since time spent descheduled is not counted."""
    best = min(statistics.median(r.samples) for r in rows)
    best_min = min(min(r.samples) for r in rows)
    out = ["| row | ns / point-step (median) | min - max | x fastest (medians) | x fastest (minima) "
           "| CPU ns / point-step (min) | steps/sample | page faults/step | max err | note |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        med = statistics.median(r.samples)
        out.append(f"| {r.name} | {med:.3f} | {min(r.samples):.3f} - {max(r.samples):.3f} | "
                   f"{med / best:.2f} | {min(r.samples) / best_min:.2f} | {min(r.cpu):.3f} | {r.steps} | "
                   f"{r.faults / (r.steps * len(r.samples)):.0f} | {r.err:.1e} | {r.note} |")
    return out


def pde2net_rows(prog, u0: torch.Tensor, notes: list[str]) -> list[Row]:
    """compile=True (the C++ kernel of pde2net.fastpath: what users get), the torch.compile'd
    step it replaced (the same network's class forward: the compiled block in a Python loop),
    and the eager modules."""
    points = u0.numel()
    t0 = time.perf_counter()
    fast = prog.module(steps=1, compile=True)
    build = time.perf_counter() - t0
    if isinstance(fast.forward, fastpath.FastForward):
        notes.append(f"pde2net compile=True: module with the C++ kernel in {build:.2f} s, of which g++ "
                     f"{fast.fastpath_compile_seconds:.2f} s (0 when the kernel was already built and "
                     f"cached; per-user cache, keyed by the flux)")
    else:
        notes.append(f"pde2net compile=True: no kernel ({fast.fastpath_skipped})")
    rows = [Row("pde2net compile=True (C++ kernel)", lambda k: fast(u0, steps=k), points)]
    step = prog.module(steps=1, compile=True)
    rows.append(Row("pde2net torch.compile'd step (before)",
                    lambda k: type(step).forward(step, u0, steps=k), points))
    for name, kw in (("pde2net fused, eager", {}), ("pde2net conv (literal), eager", dict(backend="conv"))):
        net = prog.module(steps=1, **kw)
        rows.append(Row(name, lambda k, net=net: net(u0, steps=k), points))
    return rows


def hand_written_rows(step: Callable, numpy_run: Callable, u0: torch.Tensor, lam: float, tau: float
                      ) -> list[Row]:
    """The hand-written references: the torch step compiled and eager, and NumPy in place."""
    n = u0.numel()
    return [Row("torch shifts (hand-written), compiled", repeat(torch.compile(step), u0), n),
            Row("torch shifts (hand-written), eager", repeat(step, u0), n),
            Row("NumPy in place (hand-written)", numpy_run(u0.numpy(), lam, tau), n)]


def config_1d(dtype: torch.dtype, batch: int, n: int, optional: bool) -> tuple[list[Row], Callable, list[str]]:
    prog = pde2net.load(ROOT / "examples" / "perona_malik.pde")
    lam, tau = spec_numbers(prog)
    rng = np.random.default_rng(0)
    x0 = np.cumsum(rng.standard_normal((batch, n)), axis=-1) * 0.05
    u0 = torch.tensor(x0, dtype=dtype)
    notes: list[str] = []
    rows = pde2net_rows(prog, u0, notes) + hand_written_rows(torch_step_1d(lam, tau), numpy_inplace_1d, u0,
                                                            lam, tau)
    if optional:
        notes += optional_rows(rows, x0.astype(u0.numpy().dtype), lam, tau, dtype)
    return rows, lambda k: reference_1d(x0, lam, tau, k), notes


def optional_rows(rows: list[Row], x0: np.ndarray, lam: float, tau: float, dtype) -> list[str]:
    notes = []
    try:
        run, secs = devito_row_1d(x0, lam, tau)
        rows.append(Row(f"Devito (C, OpenMP {os.environ.get('OMP_NUM_THREADS', '?')} threads)", run,
                        x0.size))
        notes.append(f"Devito compile (JIT of the generated C): {secs:.2f} s")
    except ImportError:
        notes.append("Devito: not installed (row skipped)")
    if dtype == torch.float64:
        try:
            run, secs = pypde_row_1d(x0, lam, tau)
            rows.append(Row("py-pde (numba), one signal", run, x0.shape[-1], "batch of 1"))
            notes.append(f"py-pde numba compile (first step): {secs:.1f} s")
        except ImportError:
            notes.append("py-pde: not installed (row skipped)")
    return notes


def config_2d(dtype: torch.dtype, batch: int, n: int, optional: bool) -> tuple[list[Row], Callable, list[str]]:
    prog = pde2net.load(ROOT / "examples" / "perona_malik_2d.pde")
    lam, tau = spec_numbers(prog)
    rng = np.random.default_rng(0)
    x0 = np.cumsum(np.cumsum(rng.standard_normal((batch, n, n)), axis=-1), axis=-2) * 0.002
    u0 = torch.tensor(x0, dtype=dtype)
    notes: list[str] = []
    rows = pde2net_rows(prog, u0, notes) + hand_written_rows(torch_step_2d(lam, tau), numpy_inplace_2d, u0,
                                                            lam, tau)
    if optional:
        try:
            for kind, run, secs in devito_rows_2d(x0.astype(u0.numpy().dtype), lam, tau):
                rows.append(Row(f"Devito, fluxes {kind} (C, OpenMP {os.environ.get('OMP_NUM_THREADS', '?')} "
                                f"threads)", run, x0.size))
                notes.append(f"Devito ({kind}) compile (JIT of the generated C): {secs:.2f} s")
        except ImportError:
            notes.append("Devito: not installed (rows skipped)")
    return rows, lambda k: reference_2d(x0, lam, tau, k), notes


# ---------------------------------------------------------------------------- operator rows
PM_3D = """pde pm_3d
param lambda = 0.05
field u(x, y, z)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )
grid h = 1
size NX = 64, NY = 64, NZ = 64
boundary neumann
scheme explicit(tau = 0.16, steps = 20)
"""


def operator_case(name: str):
    """(program, hand-written step factory (dtype-free), field shape (B, C, *space), whether the
    step reads the data field f) of one operator row group; numbers read from the compiled program."""
    prog = pde2net.compile_text(PM_3D, "pm_3d.pde") if name == "pm_3d" else \
        pde2net.load(ROOT / "examples" / f"{name}.pde")
    ctx = prog.arch.operator.context
    p = {k: float(v) for k, v in ctx.params.items()}
    tau = float(prog.arch.scheme.tau)
    if name == "eed":
        delta = float(prog.arch.operator.terms[0].delta)
        return prog, hand_eed(p["lambda"], p["sigma"], p["C"], delta, tau), (4, 1, 256, 256), False
    if name == "heat_3d":
        return prog, hand_heat_3d(tau), (2, 1, 64, 64, 64), False
    if name == "pm_3d":
        return prog, hand_pm_3d(p["lambda"], tau), (2, 1, 64, 64, 64), False
    if name == "color_pm":
        return prog, hand_pm_2d(p["lambda"], tau), (1, 3, 256, 256), False
    if name == "catte":
        return prog, hand_pm_2d(p["lambda"], tau, p["sigma"]), (4, 1, 256, 256), False
    if name == "tv_denoise":
        return prog, hand_tv(p["eps"], p["alpha"], tau), (4, 1, 256, 256), True
    if name == "you_kaveh":
        return prog, hand_you_kaveh(p["lambda"], tau), (4, 1, 256, 256), False
    raise ValueError(name)


OPERATOR_CASES = ("eed", "heat_3d", "pm_3d", "color_pm", "catte", "tv_denoise", "you_kaveh")


def smooth_field(shape: tuple, scale: float) -> np.ndarray:
    """A rough image: white noise summed along every space axis (a random walk per axis)."""
    x = np.random.default_rng(0).standard_normal(shape)
    for dim in range(2, len(shape)):
        x = np.cumsum(x, axis=dim)
    return x * scale


def repeat_data(step: Callable, u0: torch.Tensor, data: bool):
    """``steps`` applications of a hand-written step (with the data field f = u0 if it reads one)."""
    if not data:
        return repeat(step, u0)

    def run(steps: int):
        u = u0
        for _ in range(steps):
            u = step(u, u0)
        return u
    return run


def compiled_warm(row: "Row", notes: list[str]) -> "Row":
    """Runs a compiled row once (torch.compile's tracing and C++ build) and notes the time."""
    t0 = time.perf_counter()
    with torch.no_grad():
        row.run(1)
    notes.append(f"{row.name}: first call (torch.compile) {time.perf_counter() - t0:.1f} s")
    return row


def config_operator(name: str, dtype: torch.dtype, compiled: bool) -> tuple[list[Row], Callable, list[str]]:
    """pde2net's live network (eager; ``compile=True``: its block in torch.compile) against the
    hand-written step (eager; torch.compile'd), all checked against the hand-written step in
    float64.  A note gives pde2net's float64 network against that reference: the two are the
    same scheme when it is at rounding level."""
    prog, step, shape, data = operator_case(name)
    x0 = smooth_field(shape, 0.0005 if len(shape) == 5 else 0.002)
    u0 = torch.tensor(x0, dtype=dtype)
    n = u0.numel()
    notes: list[str] = []
    net = prog.module(dtype=dtype)
    rows = [Row("pde2net live network, eager", lambda k: net(u0, steps=k), n),
            Row("torch hand-written, eager", repeat_data(step, u0, data), n)]
    rows[0].versus = rows[1]
    if compiled:
        fast = prog.module(dtype=dtype, compile=True)
        pc = compiled_warm(Row("pde2net compile=True (block in torch.compile)",
                               lambda k: fast(u0, steps=k), n), notes)
        hc = compiled_warm(Row("torch hand-written, torch.compile", repeat_data(torch.compile(step), u0, data),
                               n), notes)
        pc.versus = hc
        rows[1:1] = [pc]
        rows.append(hc)
    x64 = torch.tensor(x0, dtype=torch.float64)
    ref_run = repeat_data(step, x64, data)

    def reference(k: int) -> np.ndarray:
        with torch.no_grad():
            return ref_run(k).numpy()

    with torch.no_grad():
        same = float((prog.module(dtype=torch.float64)(x64, steps=20) - ref_run(20)).abs().max())
        scale = float(x64.abs().max())
    notes.append(f"pde2net float64 against the hand-written float64 step, 20 steps: max diff {same:.1e} "
                 f"(field max {scale:.2f}; tau = {float(prog.arch.scheme.tau):.6g})")
    return rows, reference, notes


def op_table(rows: list[Row]) -> list[str]:
    """The operator rows: ratios of medians (and minima) to the hand-written step of the same mode
    (eager against eager, torch.compile against torch.compile)."""
    out = ["| row | ns / point-step (median) | min - max | x hand-written (medians) | x hand-written (minima) "
           "| CPU ns / point-step (min) | steps/sample | max err | note |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        med = statistics.median(r.samples)
        base = r.versus if r.versus is not None else r
        out.append(f"| {r.name} | {med:.2f} | {min(r.samples):.2f} - {max(r.samples):.2f} | "
                   f"{med / statistics.median(base.samples):.2f} | {min(r.samples) / min(base.samples):.2f} | "
                   f"{min(r.cpu):.2f} | {r.steps} | {r.err:.1e} | {r.note} |")
    return out


def operator_section(names: list[str], reps: int, compiled: bool) -> list[str]:
    """One table per operator case (float32), printed as it completes."""
    lines = []
    for name in names:
        t0 = time.perf_counter()
        rows, ref, notes = config_operator(name, torch.float32, compiled)
        shape = " x ".join(str(s) for s in operator_case(name)[2])
        with torch.no_grad():
            check(rows, ref)
            calibrate(rows)
        load0 = os.getloadavg()[0]
        measure(rows, reps)
        block = ["", f"### operator {name} (B x C x space {shape}), float32, {reps} samples per row "
                 f"(load {load0:.2f} -> {os.getloadavg()[0]:.2f}; setup {time.perf_counter() - t0:.0f} s)",
                 ""] + op_table(rows) + [""] + [f"- {n}" for n in notes]
        print("\n".join(block), flush=True)
        lines += block
    return lines


def has_2d() -> bool:
    try:
        pde2net.load(ROOT / "examples" / "perona_malik_2d.pde").module(steps=1)
        return True
    except Exception as exc:  # noqa: BLE001 - the 2D operator may not exist yet
        print(f"(2D skipped: {type(exc).__name__}: {exc})")
        return False


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
            f"torch {torch.__version__}, NumPy {np.__version__}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--quick", action="store_true", help="3 repetitions (1D float32 only unless --only)")
    p.add_argument("--no-optional", action="store_true", help="skip py-pde and Devito")
    p.add_argument("--only", default="", help="comma-separated subset of 1D-f32,1D-f64,2D-f32,2D-f64")
    p.add_argument("--write", action="store_true", help="update the table in benchmarks/RESULTS.md")
    p.add_argument("--operators", nargs="?", const=",".join(OPERATOR_CASES), default="",
                   help="only the operator-model rows (pde2net live network against a hand-written torch "
                        "step), optionally a comma-separated subset of " + ",".join(OPERATOR_CASES))
    p.add_argument("--no-compile", action="store_true", help="operator rows: eager only (no torch.compile rows)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("DEVITO_LANGUAGE", "openmp")
    os.environ.setdefault("DEVITO_LOGGING", "WARNING")
    os.environ.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    torch.set_num_threads(args.threads)
    reps = 3 if args.quick else args.reps
    configs = [("1D", torch.float32), ("1D", torch.float64), ("2D", torch.float32), ("2D", torch.float64)]
    if args.quick and not args.only:
        configs = configs[:1]
    if args.only:
        wanted = set(args.only.split(","))
        configs = [(d, t) for d, t in configs if f"{d}-f{torch.finfo(t).bits}" in wanted]
    if not has_2d():
        configs = [c for c in configs if c[0] == "1D"]
    lines = [f"machine: {machine()}", f"torch threads: {torch.get_num_threads()}, "
             f"/proc/loadavg before: {Path('/proc/loadavg').read_text().strip()}"]
    if args.operators:
        names = [n for n in args.operators.split(",") if n]
        unknown = sorted(set(names) - set(OPERATOR_CASES))
        if unknown:
            p.error(f"unknown operator case(s) {unknown}; known: {', '.join(OPERATOR_CASES)}")
        configs = []
        lines += operator_section(names, reps, not args.no_compile)
    for dim, dtype in configs:
        t0 = time.perf_counter()
        if dim == "1D":
            rows, ref, notes = config_1d(dtype, 64, 4096, not args.no_optional)
            shape = "64 x 4096"
        else:
            rows, ref, notes = config_2d(dtype, 4, 512, not args.no_optional)
            shape = "4 x 512 x 512"
        with torch.no_grad():
            check(rows, ref)
            calibrate(rows)
        load0 = os.getloadavg()[0]
        measure(rows, reps)
        lines += ["", f"### {dim} {shape}, {str(dtype).replace('torch.', '')}, {reps} samples per row "
                  f"(load {load0:.2f} -> {os.getloadavg()[0]:.2f}; setup {time.perf_counter() - t0:.0f} s)",
                  ""] + table(rows) + ([""] + [f"- {n}" for n in notes] if notes else [])
        print("\n".join(lines[-(len(rows) + 4 + (len(notes) + 1 if notes else 0)):]), flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        write_results(text, f"bench_cpu{' operators' if args.operators else ''} threads={args.threads}")
    return 0


def write_results(text: str, key: str) -> None:
    """Replaces the block between ``<!-- KEY:begin -->`` and ``<!-- KEY:end -->`` in RESULTS.md
    (appended when absent)."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin not in old:
        old = f"{old.rstrip()}\n\n{begin}\n{end}\n"
    head, _, rest = old.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
