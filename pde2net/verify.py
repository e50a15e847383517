"""Stage 9: :class:`~pde2net.program.Program` -> :class:`VerificationReport`: every claim checked.

The stability report is a claim; ``pde2net verify`` checks it numerically, in float64, for the
spec's grid size N:

1. the symbolic report itself (as ``check``);
2. the actual operator norm ``||D||_2^2`` of this N (dense SVD, or Lanczos on large grids), which
   must not exceed the symbol bound the report used (docs/theory.md §2);
3. a stress battery through the emitted network -- random inputs, steps, ramps, alternating
   signs, spikes and the top singular vector of D, each at amplitudes from 1e-6 to 1e3 of the flux
   argument (growth at the edge of the bound appears only at small amplitude, docs/theory.md §1) -- and an
   adversarial search maximising ``||u_K|| / ||u_0||`` by gradient ascent through the network;
4. agreement of the network with an independent dense-matrix implementation of the scheme
   (D assembled entry by entry, the scheme iterated with NumPy: no code shared with the network
   except the flux's op tree, which is evaluated with NumPy);
5. for a spec not judged stable, the most growing input found (a counterexample) or an honest
   "none found within the budget".

The result is *consistent* (exit status 0) unless a "stable" verdict meets growth beyond
round-off, the operator norm exceeds the bound used, or the reference disagrees (exit status 1).

Schemes plug in through :data:`REFERENCES`, a registry keyed by the scheme IR type
(:func:`register_reference`): each entry iterates the scheme densely and says how much round-off
its layers may add (:func:`growth_tolerance`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from . import exprs, lower
from .errors import PdeError
from .lower import FED, FSI, Architecture, Explicit, FluxIR, Implicit, StencilIR
from .operators.live import scheme_arguments

DEFAULT_SEED = 0
DEFAULT_BUDGET = 1.0  # seconds of adversarial search
DEFAULT_SIZE = 256
DENSE_LIMIT = 2048  # grids up to this many points use dense matrices and a full SVD
MAX_VERIFY_POINTS = 1 << 16
GROWTH_FLOOR = 1e-10  # relative growth below this is round-off for any scheme we build
REFERENCE_RTOL = 1e-9
COMPARABLE_GROWTH = 1e4  # reference runs that grow more are not compared (see compare_reference)
AMPLITUDES = tuple(10.0 ** (k / 3) for k in range(-18, 10))  # max |D u_0| from 1e-6 to 1e3
ADVERSARIAL_MEMORY = 256 * 2 ** 20  # bytes of autograd tape the gradient ascent may keep
EPS = float(np.finfo(np.float64).eps)


# ------------------------------------------------------------------------ dense operators
class SparseRows:
    """A matrix as coordinate lists, applied to a batch of rows: ``x @ A.T`` without a dense A.

    Used above :data:`DENSE_LIMIT` points; assembled entry by entry like the dense matrix."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]):
        self.rows, self.cols, self.vals, self.shape = rows, cols, vals, shape

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x @ A.T`` for x of shape (B, n)."""
        return self._scatter(x[:, self.cols] * self.vals, self.rows, self.shape[0])

    def apply_t(self, y: np.ndarray) -> np.ndarray:
        """``y @ A`` for y of shape (B, m)."""
        return self._scatter(y[:, self.rows] * self.vals, self.cols, self.shape[1])

    @staticmethod
    def _scatter(terms: np.ndarray, index: np.ndarray, width: int) -> np.ndarray:
        """Sums each row's terms into ``width`` bins (one bincount over the whole batch)."""
        b = terms.shape[0]
        at = (np.arange(b)[:, None] * width + index[None, :]).ravel()
        return np.bincount(at, terms.ravel(), minlength=b * width).reshape(b, width)

    def dense(self) -> np.ndarray:
        a = np.zeros(self.shape)
        np.add.at(a, (self.rows, self.cols), self.vals)
        return a


def stencil_entries(ir: StencilIR, n: int) -> SparseRows:
    """D on n points from the definition ``(D u)_i = h^-m sum_j w_j u_(i + j - o)`` and the boundary
    rule: complete rows for neumann ((n - K + 1) x n), wrap-around for periodic (n x n), and for
    dirichlet every row that touches a node, u = 0 outside on both sides ((n + K - 1) x n, row r
    reads ``u_(r + j - (K - 1))``)."""
    st = ir.stencil
    w = np.array([float(x) for x in st.scaled])
    k = w.size
    if ir.boundary == "neumann":
        m = n - k + 1
        i = np.repeat(np.arange(m), k)
        j = np.tile(np.arange(k), m)
        return SparseRows(i, i + j, np.tile(w, m), (m, n))
    m = n + k - 1 if ir.boundary == "dirichlet" else n
    i = np.repeat(np.arange(m), k)
    j = np.tile(np.arange(k), m)
    col = i + j - (k - 1 if ir.boundary == "dirichlet" else st.offset)
    vals = np.tile(w, m)
    if ir.boundary == "periodic":
        col = col % n
    else:
        keep = (col >= 0) & (col < n)
        i, col, vals = i[keep], col[keep], vals[keep]
    return SparseRows(i, col, vals, (m, n))


@dataclass
class DenseOperator:
    """``A(u) = D^T Phi(D u)`` with D an explicit matrix: the reference every scheme is built on.

    Acts on batches of flattened grids, shape (B, n).  In 1D ``Phi`` is the scalar flux; in 2D
    ``D u`` stacks the x and y differences ``[vx; vy]`` node by node and the activation is the
    isotropic vector flux ``g(vx^2 + vy^2) (vx, vy)``.  The flux's op trees are evaluated with
    NumPy (the symbolic flux, not the network's torch code)."""

    matrix: Any  # np.ndarray (m x n) or SparseRows
    flux: FluxIR
    grid: tuple[int, ...]
    order: int = 1

    @property
    def n(self) -> int:
        return int(np.prod(self.grid))

    @property
    def sparse(self) -> SparseRows:
        """The matrix's nonzeros: products with it by bincount, no BLAS (whose threads, on a
        loaded machine, made small dense products 10x slower than this)."""
        if isinstance(self.matrix, SparseRows):
            return self.matrix
        if "_sparse" not in self.__dict__:
            r, c = np.nonzero(self.matrix)
            self.__dict__["_sparse"] = SparseRows(r, c, self.matrix[r, c], self.matrix.shape)
        return self.__dict__["_sparse"]

    def D(self, u: np.ndarray) -> np.ndarray:
        return self.sparse.apply(u)

    def Dt(self, v: np.ndarray) -> np.ndarray:
        return self.sparse.apply_t(v)

    def activation(self, v: np.ndarray) -> np.ndarray:
        """Phi(v) for v = D u: elementwise in 1D, the vector flux in 2D."""
        return v * self.g_of(v)

    def g_of(self, v: np.ndarray) -> np.ndarray:
        """The diffusivity at each entry of v = D u: ``Phi(s)/s`` (1D), ``g(|v|^2)`` (2D)."""
        if len(self.grid) == 1:
            return self._eval(self.flux.ratio_op, {lower.FLUX_VAR: v})
        half = v.shape[-1] // 2
        vx, vy = v[..., :half], v[..., half:]
        g = self._eval(self.flux.radial_op, {lower.RADIAL_VAR: vx * vx + vy * vy})
        return np.concatenate([g, g], axis=-1)

    def phi(self, s: np.ndarray) -> np.ndarray:
        """The scalar flux Phi(s) (its op tree, evaluated directly)."""
        return self._eval(self.flux.op, {lower.FLUX_VAR: s})

    def _eval(self, op: exprs.Op, env: dict) -> np.ndarray:
        shape = next(iter(env.values())).shape
        with np.errstate(all="ignore"):
            out = exprs.evaluate(op, {**env, **self.flux.params}, exprs.LIBS["numpy"]())
        return np.broadcast_to(np.asarray(out, dtype=np.float64), shape)

    def explicit_step(self, u: np.ndarray, tau: float) -> np.ndarray:
        """``u - tau D^T Phi(D u)``."""
        with np.errstate(all="ignore"):
            v = self.D(u)
            flux = self.phi(v) if len(self.grid) == 1 else self.activation(v)
            return u - tau * self.Dt(flux)

    def diffusivity(self, u: np.ndarray) -> np.ndarray:
        """``G = g(D u)``, shaped like D u, for schemes that freeze it."""
        with np.errstate(all="ignore"):
            return self.g_of(self.D(u))

    def frozen_apply(self, u: np.ndarray, G: np.ndarray) -> np.ndarray:
        """``D^T (G * D u)``: the linear operator with the diffusivity G frozen."""
        with np.errstate(all="ignore"):
            return self.Dt(G * self.D(u))

    def abs_norm_sq(self) -> float:
        """An upper bound on ``|| |D| ||_2^2`` (``||.||_1 ||.||_inf``): the scale of round-off."""
        if isinstance(self.matrix, np.ndarray):
            a = np.abs(self.matrix)
            return float(a.sum(axis=0).max() * a.sum(axis=1).max())
        a = np.abs(self.matrix.vals)
        cols = np.bincount(self.matrix.cols, a, minlength=self.matrix.shape[1]).max()
        rows = np.bincount(self.matrix.rows, a, minlength=self.matrix.shape[0]).max()
        return float(cols * rows)


def dense_operator(arch: Architecture, grid: tuple[int, ...]) -> DenseOperator:
    """D for this grid as a matrix: the stencil's matrix (1D), or the stacked per-axis differences
    ``[Ey (x) Dx; Dy (x) Ex]`` acting on row-major flattened images (2D, x the last axis), where a
    neumann difference gets zero rows at the nodes its stencil would leave the grid from, and E is
    the zero extension of the nodes to the flux points of a dirichlet axis (K - 1 - o ghost points
    before, o after), so both blocks have one row per point of the same flux grid."""
    if len(arch.stencils) == 1:
        ir = arch.stencils[0]
        n = grid[-1]
        mat = ir.stencil.matrix(n, ir.boundary) if n <= DENSE_LIMIT else stencil_entries(ir, n)
        return DenseOperator(mat, arch.flux, grid, arch.order)
    nd = len(grid)
    before = [0] * nd  # per array axis: flux points before node 0
    fgrid = list(grid)
    for ir in arch.stencils:
        a = nd + ir.axis
        pre, post = ir.stencil.flux_grid_padding(ir.boundary)
        before[a], fgrid[a] = pre, grid[a] + pre + post
    nf = int(np.prod(fgrid))
    rows, cols, vals, at = [], [], [], 0
    nodes = np.indices(grid).reshape(nd, -1)  # the index of every node, per axis
    idx = np.arange(int(np.prod(grid))).reshape(grid)
    for ir in arch.stencils:
        axis = nd + ir.axis  # -1 -> x (the last axis), -2 -> y
        d1 = stencil_entries(ir, grid[axis])
        shift = ir.stencil.offset if ir.boundary == "neumann" else 0
        # row r of d1 sits at flux index r + shift along its axis; the other axes' nodes at
        # their node index + before (zero rows elsewhere)
        for r, c, v in zip(d1.rows, d1.cols, d1.vals):
            dst = np.take(idx, c, axis=axis).ravel()
            src = [nodes[a][dst] + before[a] if a != axis else np.full(dst.size, r + shift)
                   for a in range(nd)]
            rows.append(at + np.ravel_multi_index(src, fgrid))
            cols.append(dst)
            vals.append(np.full(dst.size, v))
        at += nf
    sparse = SparseRows(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                        (at, int(np.prod(grid))))
    mat = sparse.dense() if sparse.shape[1] <= DENSE_LIMIT else sparse
    return DenseOperator(mat, arch.flux, grid, arch.order)


def top_singular(op: DenseOperator, rng: np.random.Generator, iterations: int = 300
                 ) -> tuple[float, np.ndarray, str]:
    """``(sigma_max^2, v, method)``: the largest eigenvalue of ``D^T D`` and its eigenvector.

    Dense SVD up to :data:`DENSE_LIMIT` points (exact to round-off); above, Lanczos with full
    reorthogonalisation, whose Ritz value is a lower estimate of the true value."""
    if isinstance(op.matrix, np.ndarray):
        import torch  # LAPACK through torch honours torch's thread count (see verify())

        _, s, vt = torch.linalg.svd(torch.from_numpy(op.matrix), full_matrices=False)
        return float(s[0]) ** 2, vt[0].numpy().copy(), "dense SVD"
    n = op.n
    k = min(iterations, n)
    q = np.zeros((k + 1, n))
    alpha, beta = np.zeros(k), np.zeros(k)
    v = rng.standard_normal(n)
    q[0] = v / np.linalg.norm(v)
    steps = k
    for j in range(k):
        w = op.Dt(op.D(q[j][None]))[0]
        alpha[j] = w @ q[j]
        w -= q[:j + 1].T @ (q[:j + 1] @ w)
        w -= q[:j + 1].T @ (q[:j + 1] @ w)  # twice is enough (Kahan)
        beta[j] = np.linalg.norm(w)
        if beta[j] < 1e-12 * max(abs(alpha[j]), 1.0):
            steps = j + 1
            break
        q[j + 1] = w / beta[j]
    t = np.diag(alpha[:steps]) + np.diag(beta[:steps - 1], 1) + np.diag(beta[:steps - 1], -1)
    evals, evecs = np.linalg.eigh(t)
    vec = q[:steps].T @ evecs[:, -1]
    return float(evals[-1]), vec / np.linalg.norm(vec), f"Lanczos ({steps} iterations, lower estimate)"


# ------------------------------------------------------------------ scheme reference registry
@dataclass(frozen=True)
class SchemeReference:
    """How to verify one scheme: iterate it densely, and the round-off its network may add.

    ``run(arch, op, u0)`` returns the state after the whole network for a batch ``u0`` (B, n), or
    ``(state, slack)`` with a per-input relative slack the scheme's own solver error allows;
    ``work(arch, op, L)`` is the sum over the network's layers of each layer's amplification of
    round-off (``1 + tau_i L || |D| ||^2`` for an explicit step), see :func:`growth_tolerance`;
    ``rtol(arch)`` is the agreement demanded of the network (round-off, unless the reference is
    an exact solve that the network only approximates)."""

    run: Callable[[Architecture, DenseOperator, np.ndarray], np.ndarray]
    work: Callable[[Architecture, DenseOperator, float], float]
    rtol: Callable[[Architecture], float] = lambda arch: REFERENCE_RTOL


REFERENCES: dict[type, SchemeReference] = {}


def register_reference(ir_type: type, work: Callable[[Architecture, DenseOperator, float], float],
                       rtol: Optional[Callable[[Architecture], float]] = None):
    """Decorator: ``@register_reference(lower.Explicit, work=...)`` over ``run(arch, op, u0)``."""
    def deco(run):
        REFERENCES[ir_type] = SchemeReference(run, work, rtol or (lambda arch: REFERENCE_RTOL))
        return run
    return deco


def _explicit_work(arch: Architecture, op: DenseOperator, L: float) -> float:
    return arch.scheme.steps * (1.0 + float(arch.scheme.tau) * L * op.abs_norm_sq())


@register_reference(lower.Explicit, work=_explicit_work)
def explicit_reference(arch: Architecture, op: DenseOperator, u0: np.ndarray) -> np.ndarray:
    """``steps`` times ``u <- u - tau D^T Phi(D u)`` (docs/theory.md §1)."""
    tau = float(arch.scheme.tau)
    u = np.array(u0, dtype=np.float64)
    for _ in range(arch.scheme.steps):
        u = op.explicit_step(u, tau)
    return u


def _fed_work(arch: Architecture, op: DenseOperator, L: float) -> float:
    sch = arch.scheme
    return sch.cycles * sum(1.0 + float(t) * L * op.abs_norm_sq() for t in sch.taus)


@register_reference(lower.FED, work=_fed_work)
def fed_reference(arch: Architecture, op: DenseOperator, u0: np.ndarray) -> np.ndarray:
    """Per cycle, ``u <- u - tau_i D^T (G D u)`` over the FED step sizes in the stored (Leja) order
    with ``G = g(D u)`` frozen at the cycle's start; ``update = step``: explicit steps (docs/theory.md §3)."""
    sch = arch.scheme
    u = np.array(u0, dtype=np.float64)
    for _ in range(sch.cycles):
        if sch.update == "step":
            for t in sch.taus:
                u = op.explicit_step(u, float(t))
            continue
        G = op.diffusivity(u)
        for t in sch.taus:
            u = u - float(t) * op.frozen_apply(u, G)
    return u


def _fsi_work(arch: Architecture, op: DenseOperator, L: float) -> float:
    sch = arch.scheme
    # the extrapolation weights a_k < 2 can double a layer's error
    return 3.0 * sch.cycles * sch.cycle_length * (1.0 + float(sch.tau) * L * op.abs_norm_sq())


@register_reference(lower.FSI, work=_fsi_work)
def fsi_reference(arch: Architecture, op: DenseOperator, u0: np.ndarray) -> np.ndarray:
    """Per cycle, ``u^(k+1) = a_k (u^k - tau D^T (G D u^k)) + (1 - a_k) u^(k-1)``,
    ``a_k = (4k + 2) / (2k + 3)``, ``u^(-1) = u^0`` (docs/theory.md §4)."""
    sch = arch.scheme
    tau = float(sch.tau)
    u = np.array(u0, dtype=np.float64)
    for _ in range(sch.cycles):
        G = op.diffusivity(u) if sch.update == "cycle" else None
        prev = cur = u
        for k in range(sch.cycle_length):
            a = (4 * k + 2) / (2 * k + 3)
            step = op.explicit_step(cur, tau) if G is None else cur - tau * op.frozen_apply(cur, G)
            prev, cur = cur, a * step + (1 - a) * prev
        u = cur
    return u


def _implicit_work(arch: Architecture, op: DenseOperator, L: float) -> float:
    sch = arch.scheme
    return sch.steps * sch.iterations * (1.0 + float(sch.tau) * L * op.abs_norm_sq())


def _solve_matrix(op: DenseOperator, G: np.ndarray, tau: float) -> np.ndarray:
    """``I + tau D^T diag(G) D`` for one row's frozen diffusivity G (dense)."""
    d = op.matrix if isinstance(op.matrix, np.ndarray) else op.matrix.dense()
    return np.eye(d.shape[1]) + tau * (d.T * G) @ d


@register_reference(lower.Implicit, work=_implicit_work)
def implicit_reference(arch: Architecture, op: DenseOperator, u0: np.ndarray) -> np.ndarray:
    """Each time step from u^k with ``A = I + tau D^T G(u^k) D`` (G lagged): ``cg`` -- that many
    conjugate-gradient iterations from x = 0; ``jacobi`` -- damped Jacobi
    ``x <- x + omega (u^k - A x) / diag(A)`` from x = 0, ``diag(A)_j = 1 + tau sum_i D_ij^2 G_i``;
    ``fixed_point`` -- ``v <- u^k - tau D^T Phi(D v)`` from v = u^k (docs/theory.md §5, §6)."""
    sch = arch.scheme
    tau, omega = float(sch.tau), float(sch.omega) if sch.omega is not None else 1.0
    u = np.array(u0, dtype=np.float64)
    slack = np.zeros(u.shape[0])
    for _ in range(sch.steps):
        if sch.solver == "fixed_point":
            v = u
            for _ in range(sch.iterations):
                v = op.explicit_step(v, tau) - v + u
            u = v
            continue
        G = op.diffusivity(u)
        apply = lambda x, G=G: x + tau * op.frozen_apply(x, G)  # noqa: E731 - A x, row by row
        if sch.solver == "cg":
            x = _cg(apply, u, sch.iterations)
            # A >= I, so ||x - x*|| <= ||u - A x||: this step's distance from the exact solve
            slack += np.linalg.norm(u - apply(x), axis=1)
            u = x
        else:
            sq = op.sparse
            diag = 1 + tau * SparseRows(sq.rows, sq.cols, sq.vals ** 2, sq.shape).apply_t(G)
            x = np.zeros_like(u)
            for _ in range(sch.iterations):
                x = x + omega * (u - apply(x)) / diag
            u = x
    if sch.solver != "cg":
        return u
    # An unconverged CG iterate depends on rounding (lost orthogonality) at the level of its own
    # error: two float64 CGs differ by up to about that much (observed: at most half of it).
    return u, 2 * slack / np.maximum(np.linalg.norm(u0, axis=1), 1e-300)


def _cg(apply: Callable[[np.ndarray], np.ndarray], f: np.ndarray, iterations: int) -> np.ndarray:
    """Conjugate gradients from 0 for every row of f at once (a row whose residual vanished
    exactly stays put)."""
    x, r = np.zeros_like(f), f.copy()
    p, rr = r.copy(), np.sum(r * r, axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        for _ in range(iterations):
            ap = apply(p)
            pap = np.sum(p * ap, axis=1, keepdims=True)
            alpha = np.where(pap > 0, rr / np.where(pap > 0, pap, 1.0), 0.0)
            x, r = x + alpha * p, r - alpha * ap
            rr_new = np.sum(r * r, axis=1, keepdims=True)
            beta = np.where(rr > 0, rr_new / np.where(rr > 0, rr, 1.0), 0.0)
            p, rr = r + beta * p, rr_new
    return x


def _multigrid_work(arch: Architecture, op: DenseOperator, L: float) -> float:
    sch = arch.scheme
    per_cycle = 2 * (sch.pre + sch.post + 2)  # smoothing sweeps and transfers, over the levels
    return sch.steps * sch.cycles * per_cycle * (1.0 + float(sch.tau) * L * op.abs_norm_sq())


def _multigrid_rtol(arch: Architecture) -> float:
    """The network's V-cycles only approximate the exact solve: from x = u^k each cycle reduces
    the error by a factor rho (docs/theory.md §7 observes rho <= 0.084 for V(2,2) from N = 65 to 4097; we
    allow rho = 0.3 for any smoothing counts), and the solve is a contraction, so the steps' errors
    add up: ``||x_net - x_exact|| <= steps rho^cycles ||u^0||``."""
    sch = arch.scheme
    return max(REFERENCE_RTOL, sch.steps * 0.3 ** sch.cycles)


@register_reference(lower.Multigrid, work=_multigrid_work, rtol=_multigrid_rtol)
def multigrid_reference(arch: Architecture, op: DenseOperator, u0: np.ndarray) -> np.ndarray:
    """The exact linear implicit steps ``u <- (I + tau c D^T D)^-1 u`` (dense solve), which the
    V-cycles approximate (tolerance: :func:`_multigrid_rtol`)."""
    sch = arch.scheme
    G = np.full(op.matrix.shape[0], float(sch.coefficient))
    a = _solve_matrix(op, G, float(sch.tau))
    u = np.array(u0, dtype=np.float64)
    for _ in range(sch.steps):
        u = np.linalg.solve(a, u.T).T
    return u


def growth_tolerance(work: float) -> float:
    """The relative growth ``||u_K|| / ||u_0|| - 1`` that round-off alone can explain.

    In exact arithmetic a stable scheme never grows.  In float64 each layer ``u - tau D^T Phi(D u)``
    commits an error of at most a few ulps of every term it adds up: ``c eps (1 + tau L || |D| ||^2)
    ||u||`` with c the number of terms (at most a few tens for our stencils, 64 is generous).  These
    errors add up over the layers, so K layers can show a relative growth of at most
    ``64 eps work`` with ``work = sum_k (1 + tau_k L || |D| ||^2)`` (:class:`SchemeReference`); for
    100 Perona-Malik steps that is ~3e-12.  Anything below :data:`GROWTH_FLOOR` = 1e-10 is round-off
    for every network we build; above the larger of the two, growth is real.
    """
    return max(GROWTH_FLOOR, 64.0 * EPS * work)


# --------------------------------------------------------------------------------- report
@dataclass
class VerificationReport:
    """What ``pde2net verify`` found: each check's numbers and the consistency verdict."""

    name: str
    scheme: str
    grid: tuple[int, ...]
    seed: int
    budget: float
    verdict: str
    stable: bool
    symbolic: dict[str, Any]
    norm: dict[str, Any]
    battery: list[dict[str, Any]]
    adversarial: dict[str, Any]
    reference: dict[str, Any]
    growth: float
    tolerance: float
    counterexample_growth: Optional[float]
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    counterexample: Optional[np.ndarray] = None  # the growing input (not in to_dict)

    @property
    def consistent(self) -> bool:
        return not self.failures

    @property
    def exit_status(self) -> int:
        """0 consistent, 1 a verification failure (CLI exit statuses)."""
        return 0 if self.consistent else 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("counterexample")
        d["grid"] = list(self.grid)
        d["consistent"] = self.consistent
        d["growth_found"] = self.counterexample_growth is not None
        return _jsonable(d)


def _jsonable(x: Any) -> Any:
    """Floats that JSON can carry (inf and nan become strings)."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else str(float(x))
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# ------------------------------------------------------------------------------ the battery
def battery_inputs(op: DenseOperator, top: np.ndarray, rng: np.random.Generator
                   ) -> list[tuple[str, float, np.ndarray]]:
    """(family, amplitude, u0) for every shape at every amplitude of :data:`AMPLITUDES`.

    Each shape is scaled so that ``max |D u_0|`` (the largest flux argument) equals the
    amplitude: flux nonlinearities live on that scale, and small amplitudes are where a step
    just above the bound shows its growth (docs/theory.md §1)."""
    grid = op.grid
    n = op.n
    idx = np.indices(grid).reshape(len(grid), -1).astype(np.float64)
    x = idx[-1]
    shapes: dict[str, np.ndarray] = {
        "random": rng.standard_normal(n),
        "random-2": rng.standard_normal(n),
        "step": (x >= grid[-1] // 2).astype(np.float64) - 0.5,
        "ramp": ((x - x.mean()) / max(grid[-1], 1)) ** _ramp_power(op),
        "alternating": (-1.0) ** idx.sum(axis=0),
        "spike": (np.arange(n) == n // 2).astype(np.float64),
        "top singular vector": top,
    }
    if len(grid) == 2:
        y = idx[0]
        shapes["step-y"] = (y >= grid[0] // 2).astype(np.float64) - 0.5
        shapes["ramp-xy"] = (x - x.mean()) + (y - y.mean())
    out = []
    for fam, u in shapes.items():
        scale = float(np.max(np.abs(op.D(u[None])))) if u.any() else 0.0
        if not math.isfinite(scale) or scale == 0.0:
            continue
        for a in AMPLITUDES:
            out.append((fam, a, u * (a / scale)))
    return out


def _ramp_power(op: DenseOperator) -> int:
    """A ramp of the equation's order (x^m has a constant m-th difference)."""
    return 1 if len(op.grid) == 2 else op.order


def _nonfinite_rows(uk: np.ndarray) -> np.ndarray:
    """Which outputs hold a NaN or an infinity (a NaN must never read as "no growth")."""
    return ~np.isfinite(uk.reshape(uk.shape[0], -1)).all(axis=1)


def _growth(u0: np.ndarray, uk: np.ndarray) -> np.ndarray:
    """``||u_K|| / ||u_0||`` per row; inf for an output with a NaN or an infinity."""
    n0 = np.linalg.norm(u0.reshape(u0.shape[0], -1), axis=1)
    with np.errstate(all="ignore"):
        nk = np.linalg.norm(uk.reshape(uk.shape[0], -1), axis=1)
        g = nk / n0
    return np.where(np.isfinite(g) & ~_nonfinite_rows(uk), g, np.inf)


def _growth_forcing(u0: np.ndarray, uk: np.ndarray, alpha: float, c: float, k: float) -> np.ndarray:
    """``||u_K|| / max(||u_0||, ||(alpha u_0 + c) / k||)`` per row (the data field f = u_0):
    the claim of a forcing with a constant source (docs/theory.md §11); inf for NaN or inf."""
    g = (alpha * u0 + c) / k
    ref = np.maximum(np.linalg.norm(u0, axis=1), np.linalg.norm(g, axis=1))
    with np.errstate(all="ignore"):
        out = np.linalg.norm(uk, axis=1) / ref
    return np.where(np.isfinite(out) & ~_nonfinite_rows(uk), out, np.inf)


def _network_rows(net, rows: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = torch.as_tensor(rows.reshape((rows.shape[0],) + tuple(grid)), dtype=torch.float64)
        out = net(x)
    return out.detach().numpy().reshape(rows.shape[0], -1)


def run_battery(net, op: DenseOperator, top: np.ndarray, rng: np.random.Generator,
                chunk: int = 64) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """Runs every battery input through the network: per-family worst growth, all growths, inputs."""
    cases = battery_inputs(op, top, rng)
    u0 = np.stack([c[2] for c in cases])
    grows, bad = [], []
    for i in range(0, len(cases), chunk):
        uk = _network_rows(net, u0[i:i + chunk], op.grid)
        grows.append(_growth(u0[i:i + chunk], uk))
        bad.append(_nonfinite_rows(uk))
    grow, nonfinite = np.concatenate(grows), np.concatenate(bad)
    families: dict[str, dict[str, Any]] = {}
    for (fam, amp, _), g in zip(cases, grow):
        best = families.get(fam)
        if best is None or g > best["growth"]:
            families[fam] = {"family": fam, "growth": float(g), "amplitude": amp, "inputs": 0,
                             "nonfinite": 0}
    for (fam, _, _), nf in zip(cases, nonfinite):
        families[fam]["inputs"] += 1
        families[fam]["nonfinite"] += int(nf)
    return list(families.values()), grow, u0


# ---------------------------------------------------------------------- adversarial search
def adversarial_search(net, starts: np.ndarray, grid: tuple[int, ...], budget: float, seed: int,
                       depth: int) -> dict[str, Any]:
    """Maximises ``log ||u_K|| - log ||u_0||`` by gradient ascent through the network itself.

    Each start is parameterised as ``u_0 = exp(a) x / ||x||`` so that both the direction x and the
    amplitude a are searched (Adam, all starts as one batch).  Runs until ``budget`` seconds are
    spent; returns the best growth, its input and how many iterations ran."""
    import torch

    per_row = 8 * starts.shape[1] * max(depth, 1) * 8  # bytes of autograd tape for one input
    rows = int(min(starts.shape[0], max(ADVERSARIAL_MEMORY // per_row, 0)))
    if rows == 0 or budget <= 0:
        why = "no budget" if budget <= 0 else "the network is too deep for gradient ascent in memory"
        return {"growth": None, "iterations": 0, "starts": 0, "seconds": 0.0, "skipped": why,
                "input": None, "nonfinite": False}
    gen = torch.Generator().manual_seed(seed)
    s = torch.as_tensor(starts[:rows], dtype=torch.float64)
    norms = s.norm(dim=1, keepdim=True).clamp_min(1e-300)
    n = s.shape[1]
    x = (s / norms * math.sqrt(n)).clone().requires_grad_(True)
    loga = norms.log().clone().requires_grad_(True)
    opt = _Adam([(x, 0.05), (loga, 0.1)])
    best_g, best_u, its, nonfinite = -math.inf, None, 0, False
    t0 = time.perf_counter()
    t_end = t0 + budget
    while True:
        u0 = loga.exp() * x / x.norm(dim=1, keepdim=True)
        uk = net(u0.reshape((rows,) + tuple(grid))).reshape(rows, -1)
        logg = uk.norm(dim=1).log() - loga.squeeze(1)
        with torch.no_grad():
            g = logg.exp()
            finite_out = torch.isfinite(uk).all(dim=1)
            nonfinite = nonfinite or not bool(finite_out.all())
            g = torch.where(torch.isfinite(g) & finite_out, g, torch.full_like(g, math.inf))
            i = int(torch.argmax(g))
            if float(g[i]) > best_g:
                best_g, best_u = float(g[i]), u0[i].detach().numpy().copy()
        its += 1
        if time.perf_counter() >= t_end or not math.isfinite(best_g):
            break
        finite = torch.isfinite(logg)
        loss = -(logg[finite].sum()) if bool(finite.any()) else None
        if loss is None:
            break
        grads = torch.autograd.grad(loss, [x, loga])
        opt.step([torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) for g in grads])
        with torch.no_grad():  # restart directions that collapsed or overflowed
            bad = ~torch.isfinite(x).all(dim=1) | ~torch.isfinite(loga).squeeze(1)
            if bool(bad.any()):
                x[bad] = torch.randn(int(bad.sum()), n, generator=gen, dtype=torch.float64)
                loga[bad] = 0.0
            loga.clamp_(math.log(1e-8), math.log(1e4))
    return {"growth": best_g, "iterations": its, "starts": rows,
            "seconds": time.perf_counter() - t0, "skipped": None, "input": best_u,
            "nonfinite": nonfinite}


class _Adam:
    """Adam (Kingma & Ba) on a few tensors, written out: ``torch.optim`` costs ~1 s to import."""

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8) -> None:
        self.params = params
        self.b1, self.b2, self.eps, self.t = betas[0], betas[1], eps, 0
        self.m = [p.detach() * 0 for p, _ in params]
        self.v = [p.detach() * 0 for p, _ in params]

    def step(self, grads) -> None:
        import torch

        self.t += 1
        with torch.no_grad():
            for k, ((p, lr), g) in enumerate(zip(self.params, grads)):
                self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
                self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
                mhat = self.m[k] / (1 - self.b1 ** self.t)
                vhat = self.v[k] / (1 - self.b2 ** self.t)
                p -= lr * mhat / (vhat.sqrt() + self.eps)


# -------------------------------------------------------------------------- the reference
def compare_reference(net, arch: Architecture, op: DenseOperator, inputs: np.ndarray,
                      stable: bool = False) -> dict[str, Any]:
    """Largest relative difference between the network and the dense reference on ``inputs``.

    The difference is measured against ``max(||u_0||, ||u_K||)`` of each input.  An input whose
    run blows up (grows more than :data:`COMPARABLE_GROWTH`, or overflows to inf / NaN) in the
    reference or, for a spec not judged ``stable``, in the network is not compared: an unstable
    run amplifies every rounding difference, and overflow leaves nothing to compare.  Under a
    ``stable`` verdict a non-finite network output is never excused: it counts as a disagreement
    (``nonfinite`` in the result)."""
    ref = REFERENCES.get(type(arch.scheme))
    if ref is None:
        return {"available": False, "ok": False, "max_rel_diff": None, "tolerance": None,
                "compared": 0, "detail": f"no dense reference for the {type(arch.scheme).__name__} "
                                         f"scheme (register one in pde2net.verify.REFERENCES)"}
    rtol = ref.rtol(arch)
    want = ref.run(arch, op, inputs)
    slack = np.zeros(len(inputs))
    if isinstance(want, tuple):  # (states, per-input slack the scheme's own solver error allows)
        want, slack = want
    got = _network_rows(net, inputs, op.grid)
    # A run that blows up amplifies every rounding difference along with it: compare only the
    # inputs whose reference (and, unless the verdict is "stable", network) stays within
    # COMPARABLE_GROWTH of its start.
    ref_blows = ~(_growth(inputs, want) <= COMPARABLE_GROWTH)
    net_blows = ~(_growth(inputs, got) <= COMPARABLE_GROWTH)
    net_nonfinite = _nonfinite_rows(got)
    ok_rows = ~ref_blows & (~net_blows | stable)
    if stable:
        ok_rows |= net_nonfinite  # a NaN from a "stable" network is a failure, never skipped
    worst, compared, ok = 0.0, int(ok_rows.sum()), True
    for w, g, u, extra in zip(want[ok_rows], got[ok_rows], inputs[ok_rows], slack[ok_rows]):
        scale = max(np.linalg.norm(u), np.linalg.norm(w), 1e-300)
        with np.errstate(all="ignore"):
            diff = np.linalg.norm(g - w) / scale
        diff = float(diff) if math.isfinite(diff) else math.inf
        worst, ok = max(worst, diff), ok and diff <= rtol + float(extra)
    rtol = rtol + float(slack[ok_rows].max()) if compared else rtol
    skipped = ~ok_rows
    both = int((skipped & ref_blows & net_blows).sum())
    detail = "dense NumPy float64"
    if both:
        detail += (f"; {both} input{'s' if both > 1 else ''} on which both the network and the "
                   f"reference blow up (grow more than {COMPARABLE_GROWTH:g}x or overflow to inf/NaN)"
                   f" not compared")
    only = int(skipped.sum()) - both
    if only:
        detail += (f"; {only} input{'s' if only > 1 else ''} on which one side blows up (more than "
                   f"{COMPARABLE_GROWTH:g}x, inf or NaN) not compared")
    return {"available": True, "ok": ok, "max_rel_diff": worst,
            "tolerance": rtol, "compared": compared, "detail": detail,
            "both_blow_up": both, "nonfinite": int(net_nonfinite.sum())}


def _reference_inputs(op: DenseOperator, top: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A piecewise constant noisy signal, a random input, and a small top singular vector."""
    n = op.n
    edges = np.sort(rng.choice(np.arange(1, n), size=min(8, n - 1), replace=False))
    levels = rng.uniform(-1.0, 1.0, size=edges.size + 1)
    piecewise = np.repeat(levels, np.diff(np.concatenate([[0], edges, [n]])))
    rows = [piecewise + 0.05 * rng.standard_normal(n), rng.standard_normal(n), 1e-3 * top,
            1e-4 * rng.standard_normal(n)]
    return np.stack(rows)


# ------------------------------------------------------------------------------ the driver
def verify_grid(prog, size: Optional[int] = None) -> tuple[int, ...]:
    """The grid verify uses: ``size`` (all axes), else the spec's ``size``, else 256 per axis."""
    arch = prog.arch
    ndim = len(arch.dims)
    if size is not None:
        grid = (size,) * ndim
    elif arch.size:
        grid = tuple(reversed(arch.size)) if ndim == 2 else tuple(arch.size)  # (NY, NX)
    else:
        grid = (DEFAULT_SIZE if ndim == 1 else 64,) * ndim
    from .fieldio import input_min_points  # periodic grids too: at least the stencil's width

    need = input_min_points(prog)
    where = "size" if size is None else None
    if min(grid) < need:
        raise _grid_error(prog, f"verify needs at least {need} points per axis for this stencil, "
                                f"got {min(grid)}", where, f"size N >= {need}")
    if math.prod(grid) > MAX_VERIFY_POINTS:
        raise _grid_error(prog, f"a grid of {math.prod(grid)} points is too large to verify",
                          where, f"at most {MAX_VERIFY_POINTS} points (use --size)")
    return grid


def _grid_error(prog, message: str, where: Optional[str], expected: str) -> PdeError:
    if where is not None and where in prog.model.positions:
        return prog.model.error(message, where, expected)
    return PdeError(message, None, prog.model.source, expected)


def verify(prog, size: Optional[int] = None, seed: int = DEFAULT_SEED,
           budget: float = DEFAULT_BUDGET) -> VerificationReport:
    """Runs checks 1-5 on a compiled program and returns the report (see the module docstring)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batched tensors: threads only add contention
    try:
        return _verify(prog, size, seed, budget)
    finally:
        torch.set_num_threads(threads)


def _verify(prog, size: Optional[int], seed: int, budget: float) -> VerificationReport:
    import torch

    if getattr(prog, "operator", False):
        return verify_operator(prog, size, seed, budget)

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    grid = verify_grid(prog, size)
    report = prog.stability                                       # 1. the claim
    arch = prog.arch
    op = dense_operator(arch, grid)
    sigma2, top, method = top_singular(op, rng)                   # 2. ||D||^2 for this N
    norm = {"actual": sigma2, "bound": report.norm_D_sq, "method": method, "ok": True}
    failures, notes = [], []
    if report.norm_D_sq is not None and not sigma2 <= report.norm_D_sq * (1 + 1e-12) + 1e-300:
        norm["ok"] = False
        failures.append(f"||D||^2 = {sigma2:.17g} for N = {_grid_text(grid)} exceeds the bound "
                        f"{report.norm_D_sq:.17g} that the report used")
    net = prog.module(dtype=torch.float64)
    families, grow, u0s = run_battery(net, op, top, rng)          # 3. stress battery
    ref = REFERENCES.get(type(arch.scheme))
    L = report.L if report.L is not None else 1.0
    work = ref.work(arch, op, L) if ref is not None else 1.0
    tol = growth_tolerance(work)
    order = np.argsort(-grow)
    starts = np.concatenate([u0s[order[:8]], _random_starts(rng, op, 8)])
    adv = adversarial_search(net, starts, grid, budget, seed, _depth(arch))
    adv_input = adv.pop("input")
    comparison = compare_reference(net, arch, op, _reference_inputs(op, top, rng),  # 4.
                                   stable=report.verdict == "stable")
    if not comparison["ok"]:
        failures.append("the network disagrees with the dense reference: " + (
            f"relative difference {comparison['max_rel_diff']:.3g} > {comparison['tolerance']:g}"
            if comparison["available"] else comparison["detail"]))
    i_best = int(order[0])
    best_g, best_u = float(grow[i_best]), u0s[i_best]
    if adv["growth"] is not None and adv["growth"] > best_g:
        best_g, best_u = adv["growth"], adv_input
    grows = not best_g <= 1.0 + tol                               # 5. counterexample (NaN grows)
    nonfinite = sum(f["nonfinite"] for f in families) + int(bool(adv.get("nonfinite"))) \
        + comparison.get("nonfinite", 0)
    if report.verdict == "stable" and nonfinite:
        failures.append(f"BUG: the verdict is 'stable' but the network's output holds NaN or "
                        f"infinite values ({_nonfinite_text(families, adv, comparison)}): the "
                        f"stability analysis or the network is wrong for this spec; please report it")
    elif report.verdict == "stable" and grows:
        failures.append(f"BUG: the verdict is 'stable' but an input grows by a factor {best_g:.17g} "
                        f"(> 1 + {tol:.2g}, beyond round-off): the stability analysis is wrong for "
                        f"this spec; please report it with the counterexample (--counterexample)")
    if report.verdict != "stable" and not grows:
        notes.append(f"no growing input found within the budget ({budget:g} s); that proves nothing")
    if report.verdict != "stable" and comparison.get("both_blow_up"):
        notes.append(f"the network and the dense reference both blow up on "
                     f"{comparison['both_blow_up']} reference input(s), as the verdict "
                     f"'{report.verdict}' allows; that is agreement, not a disagreement")
    return VerificationReport(
        name=prog.name, scheme=prog.model.scheme, grid=grid, seed=seed, budget=budget,
        verdict=report.verdict, stable=report.stable, symbolic=report.to_dict(), norm=norm,
        battery=families, adversarial=adv, reference=comparison, growth=best_g, tolerance=tol,
        counterexample_growth=best_g if grows else None, failures=failures, notes=notes,
        seconds=time.perf_counter() - t0, counterexample=best_u.reshape(grid) if grows else None,
    )


def _nonfinite_text(families: list[dict[str, Any]], adv: dict[str, Any], comparison: dict) -> str:
    """Where the network produced NaN or inf: battery inputs, adversarial search, reference inputs."""
    parts = []
    battery = sum(f["nonfinite"] for f in families)
    if battery:
        parts.append(f"{battery} battery input{'s' if battery > 1 else ''}")
    if adv.get("nonfinite"):
        parts.append("the adversarial search")
    if comparison.get("nonfinite"):
        parts.append(f"{comparison['nonfinite']} reference input(s)")
    return "on " + ", ".join(parts)


def _random_starts(rng: np.random.Generator, op: DenseOperator, count: int) -> np.ndarray:
    u = rng.standard_normal((count, op.n))
    amps = np.geomspace(1e-4, 10.0, count)
    return u / np.linalg.norm(u, axis=1, keepdims=True) * amps[:, None]


def _depth(arch: Architecture) -> int:
    """Layers the autograd tape holds per input (time steps times inner iterations)."""
    sch = arch.scheme
    if isinstance(sch, (lower.FED, lower.FSI)):
        return sch.cycles * sch.cycle_length
    if isinstance(sch, lower.Implicit):
        return sch.steps * sch.iterations
    if isinstance(sch, lower.Multigrid):
        return sch.steps * sch.cycles * 4 * (sch.pre + sch.post + 2)
    return int(getattr(sch, "steps", 1) or 1)


def _grid_text(grid: tuple[int, ...]) -> str:
    return " x ".join(str(g) for g in reversed(grid)) if len(grid) >= 2 else str(grid[0])


# ------------------------------------------------------------------- the operator model
# ``pde2net verify`` for the operator model (docs/theory.md §9-12): the claim checked against
# dense NumPy float64.
# 1. the claim: the stability report (pde2net.operators.rule);
# 2. the operator: at battery inputs u, the dense frozen matrix A(u) = sum_i D_i^T G_i(u) D_i
#    (each family's Term.dense) is symmetric, positive semidefinite, and its largest eigenvalue is
#    at most the proven bound lambda;
# 3. the battery through the network: growth of ||u_K - b|| / ||u_0 - b|| beyond round-off under a
#    "stable" verdict is a failure (b the Dirichlet boundary value, 0 when homogeneous; with a data
#    term the default f = u_0 makes the claim ||u_K|| <= max(||u_0||, ||f||) = ||u_0||);
# 4. gradient ascent on the growth through the network (adversarial_search);
# 5. the network against a dense float64 implementation of the scheme built from the same dense
#    matrices (explicit, FED, FSI, CG) on a few inputs, for at most OPERATOR_REFERENCE_STEPS steps.
#: steps (cycles) of the reference comparison: the dense matrices are rebuilt every step
OPERATOR_REFERENCE_STEPS = 8
#: default grid per axis (the dense matrices are n x n)
OPERATOR_DEFAULT_SIZE = {1: 64, 2: 16, 3: 8}
#: relative tolerance of the reference comparison (float64 round-off over a few steps)
OPERATOR_REFERENCE_RTOL = 1e-10


def operator_field_shape(prog, size: Optional[int]) -> tuple[int, ...]:
    """``(C, *space)`` with x last: ``size`` per axis, else the spec's size capped at the default
    per axis (the checks form dense n x n matrices and their eigenvalues)."""
    ctx = prog.arch.operator.context
    cap = OPERATOR_DEFAULT_SIZE[ctx.ndim]
    if size is not None:
        space = (size,) * ctx.ndim
    elif prog.arch.size:
        space = tuple(min(n, cap) for n in reversed(prog.arch.size))
    else:
        space = (cap,) * ctx.ndim
    shape = (ctx.channels,) + space
    if math.prod(shape) > 4096:
        raise _grid_error(prog, f"a field of {math.prod(shape)} values is too large for the "
                                       f"operator model's dense checks", "size" if size is None else None,
                                 "at most 4096 values (C x NX x NY x NZ; use --size)")
    return shape


def dense_A(spec, u: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``sum_i D_i^T G_i(u) D_i`` as a dense float64 matrix (n x n, n = u.size)."""
    ctx = spec.context
    return sum(t.dense(ctx, u, f) for t in spec.terms)


def reaction_numpy(spec, u: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``r(u, f) = -decay u + data (f - u) + constant + nonlinear(u)`` in float64."""
    r = spec.reaction
    if r.empty:
        return np.zeros_like(u)
    ctx = spec.context
    out = (-float(ctx.value(r.decay))) * u + float(ctx.value(r.data)) * (f - u) + float(ctx.value(r.constant))
    if r.nonlinear is not None:
        op = exprs.lower_expr(ctx.value(r.nonlinear), {ctx.u: "u"})
        out = out + exprs.evaluate(op, {"u": u}, exprs.LIBS["numpy"]())
    return out


def reference_run(prog, u0: np.ndarray, steps: int) -> np.ndarray:
    """The scheme on one field ``u0`` (shape (C, *space)), f = u0, in dense float64."""
    arch = prog.arch
    spec = arch.operator
    sch = arch.scheme
    _, kw = scheme_arguments(arch)
    b = kw.pop("offset", 0.0)  # u = b outside: evolve u - b under the homogeneous problem
    u, f = u0.astype(np.float64) - b, u0.astype(np.float64) - b
    shape = u.shape

    def A(v):
        return dense_A(spec, v.reshape(shape), f)

    vec = u.reshape(-1)
    for _ in range(steps):
        if isinstance(sch, Explicit):
            vec = vec - kw["tau"] * (A(vec) @ vec - reaction_numpy(spec, vec.reshape(shape), f).reshape(-1))
        elif isinstance(sch, FED):
            M = A(vec)
            for t in kw["taus"]:
                vec = vec - t * ((M if kw["frozen"] else A(vec)) @ vec)
        elif isinstance(sch, FSI):
            M = A(vec)
            prev = cur = vec
            for a_k, b_k in kw["alphas"]:  # not ``b``: that is the boundary value added back below
                step = cur - kw["tau"] * ((M if kw["frozen"] else A(cur)) @ cur)
                prev, cur = cur, a_k * step + b_k * prev
            vec = cur
        else:
            assert isinstance(sch, Implicit)
            M = np.eye(vec.size) * (1 + kw["tau"] * kw["c"]) + kw["tau"] * A(vec)
            rhs = vec + kw["tau"] * reaction_numpy(spec, np.zeros(shape), f).reshape(-1)
            vec = _cg(lambda x: x @ M.T, rhs[None], kw["iterations"])[0]
    return vec.reshape(shape) + b


def operator_battery(shape: tuple[int, ...], rng: np.random.Generator) -> list[tuple[str, float, np.ndarray]]:
    """(family, amplitude, u0) scaled so that max |u0 difference| equals the amplitude."""
    idx = np.indices(shape[1:]).astype(np.float64)
    x = idx[-1]
    chan = np.ones(shape[0])[(slice(None),) + (None,) * (len(shape) - 1)]
    shapes = {
        "random": rng.standard_normal(shape),
        "step": chan * ((x >= shape[-1] // 2) - 0.5),
        "alternating": chan * (-1.0) ** idx.sum(axis=0),
        "spike": np.where(np.arange(math.prod(shape)).reshape(shape) == math.prod(shape) // 2, 1.0, 0.0),
        "ramp": chan * (idx.sum(axis=0) - idx.sum(axis=0).mean()),
    }
    out = []
    for fam, u in shapes.items():
        scale = float(np.max(np.abs(np.diff(u, axis=-1)))) if shape[-1] > 1 else 1.0
        scale = scale or float(np.max(np.abs(u))) or 1.0
        for a in AMPLITUDES[::3]:
            out.append((fam, a, u * (a / scale)))
    return out


def verify_operator(prog, size: Optional[int], seed: int, budget: float) -> VerificationReport:
    """Checks 1-5 of the module docstring."""
    import torch

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    shape = operator_field_shape(prog, size)
    report = prog.stability
    spec = prog.arch.operator
    failures: list[str] = []
    notes: list[str] = []
    stable = report.verdict == "stable"
    lam = report.extra.get("lambda_max_bound")
    if report.extra.get("invariant_region") is not None:
        return _verify_region(prog, shape, rng, seed, budget, t0)
    cases = operator_battery(shape, rng)
    norm = _operator_check(spec, cases[::4], lam, failures)
    net = prog.module(dtype=torch.float64)
    net_shape = shape if shape[0] > 1 else shape[1:]
    u0 = np.stack([c[2] for c in cases])
    with torch.no_grad():
        uk = net(torch.as_tensor(u0.reshape((len(cases),) + net_shape))).numpy().reshape(len(cases), -1)
    # the claim is about u - b (b the Dirichlet boundary value, 0 when homogeneous)
    b = float(spec.context.dirichlet_value or 0)
    grow = _growth(u0.reshape(len(cases), -1) - b, uk - b)
    forcing = report.extra.get("bounded_by_forcing")
    if forcing is not None:  # a constant source: the claim is ||u_K|| <= max(||u_0||, ||g||)
        grow = _growth_forcing(u0.reshape(len(cases), -1), uk, *forcing)
        notes.append("the claim is ||u_K|| <= max(||u_0||, ||g||) with g = (alpha f + c) / k, "
                     "f = u_0 (docs/theory.md §11): 'growth' is ||u_K|| / that maximum")
    nonfinite = _nonfinite_rows(uk)
    families: dict[str, dict[str, Any]] = {}
    for (fam, amp, _), g, nf in zip(cases, grow, nonfinite):
        best = families.setdefault(fam, {"family": fam, "growth": -math.inf, "amplitude": amp,
                                         "inputs": 0, "nonfinite": 0})
        best["inputs"] += 1
        best["nonfinite"] += int(nf)
        if g > best["growth"]:
            best["growth"], best["amplitude"] = float(g), amp
    tol = growth_tolerance(float(sum(1 for _ in range(prog.arch.scheme.steps))) * 4.0)
    starts = u0[np.argsort(-grow)[:8]].reshape(8, -1)
    shifted = net if b == 0 else (lambda v: net(v + b) - b)  # the search works on u - b
    if forcing is None:
        adv = adversarial_search(shifted, starts - b, net_shape, budget, seed, prog.arch.scheme.steps)
    else:  # the search maximises ||u_K|| / ||u_0||, not the claim's ratio
        adv = {"skipped": "the claim is a bound by max(||u_0||, ||g||), not ||u_0||", "growth": None,
               "input": None}
    adv_input = adv.pop("input")
    comparison = _operator_compare(prog, shape, rng)
    if not comparison["ok"]:
        failures.append(f"the network disagrees with the dense reference: relative difference "
                        f"{comparison['max_rel_diff']:.3g} > {comparison['tolerance']:g}")
    i_best = int(np.argmax(grow))
    best_g, best_u = float(grow[i_best]), u0[i_best]
    if adv["growth"] is not None and adv["growth"] > best_g:
        best_g, best_u = adv["growth"], adv_input
    grows = not best_g <= 1.0 + tol
    if stable and (nonfinite.any() or adv.get("nonfinite")):
        failures.append("BUG: the verdict is 'stable' but the network's output holds NaN or infinite "
                        "values; please report it")
    elif stable and grows:
        failures.append(f"BUG: the verdict is 'stable' but an input grows by {best_g:.17g} "
                        f"(> 1 + {tol:.2g}); please report it with the counterexample")
    if not stable and not grows:
        notes.append(f"no growing input found within the budget ({budget:g} s); that proves nothing")
    return VerificationReport(
        name=prog.name, scheme=prog.model.scheme, grid=shape[1:][::-1], seed=seed, budget=budget,
        verdict=report.verdict, stable=report.stable, symbolic=report.to_dict(), norm=norm,
        battery=list(families.values()), adversarial=adv, reference=comparison, growth=best_g,
        tolerance=tol, counterexample_growth=best_g if grows else None, failures=failures,
        notes=notes, seconds=time.perf_counter() - t0,
        counterexample=np.asarray(best_u).reshape(net_shape) if grows else None)


def _verify_region(prog, shape, rng, seed: int, budget: float, t0: float) -> VerificationReport:
    """An invariant-region claim (docs/theory.md §11: values of u^0 and f in [a, b] stay in [a, b];
    a nonlinear reaction has no norm bound): the battery's shapes mapped onto [a, b] and its two
    ends go through the network (f = u^0); "growth" is 1 + the largest excursion of an output
    outside [a, b], relative to b - a.  Checks 2 and 5 as for a norm bound, 5 on inputs in [a, b]."""
    import torch

    a, b = prog.stability.extra["invariant_region"]
    report, spec = prog.stability, prog.arch.operator
    failures: list[str] = []
    cases = []
    for fam, amp, u in operator_battery(shape, rng):
        lo, hi = float(u.min()), float(u.max())
        cases.append((fam, amp, np.full(shape, (a + b) / 2) if hi == lo else a + (b - a) * (u - lo) / (hi - lo)))
    cases += [("ends", 0.0, np.full(shape, a)), ("ends", 0.0, np.full(shape, b))]
    norm = _operator_check(spec, cases[::4], report.extra.get("lambda_max_bound"), failures)
    net = prog.module(dtype=torch.float64)
    net_shape = shape if shape[0] > 1 else shape[1:]
    u0 = np.stack([c[2] for c in cases])
    with torch.no_grad():
        uk = net(torch.as_tensor(u0.reshape((len(cases),) + net_shape))).numpy().reshape(len(cases), -1)
    with np.errstate(invalid="ignore"):
        out = np.maximum(uk.max(axis=1) - b, a - uk.min(axis=1))
    finite = np.all(np.isfinite(uk), axis=1)
    grow = np.where(finite, 1.0 + np.maximum(out, 0.0) / (b - a), np.inf)
    families: dict[str, dict[str, Any]] = {}
    for (fam, amp, _), g, ok in zip(cases, grow, finite):
        best = families.setdefault(fam, {"family": fam, "growth": -math.inf, "amplitude": amp,
                                         "inputs": 0, "nonfinite": 0})
        best["inputs"] += 1
        best["nonfinite"] += int(not ok)
        if g > best["growth"]:
            best["growth"], best["amplitude"] = float(g), amp
    tol = 1e-10
    comparison = _operator_compare(prog, shape, rng, [rng.uniform(a, b, shape) for _ in range(3)])
    if not comparison["ok"]:
        failures.append(f"the network disagrees with the dense reference: relative difference "
                        f"{comparison['max_rel_diff']:.3g} > {comparison['tolerance']:g}")
    i_best = int(np.argmax(grow))
    best_g = float(grow[i_best])
    grows = not best_g <= 1.0 + tol
    if (report.verdict == "stable" or report.extra.get("invariant_region_proven")) and grows:
        failures.append(f"BUG: the report claims the invariant region [{a:.17g}, {b:.17g}] but an input "
                        f"with values in it leaves it (growth {best_g:.17g}); please report it")
    notes = [f"the claim is the invariant region [{a:.10g}, {b:.10g}]: every input has its values in "
             f"it, and 'growth' is 1 + the largest excursion of the output outside it / (b - a)"]
    return VerificationReport(
        name=prog.name, scheme=prog.model.scheme, grid=shape[1:][::-1], seed=seed, budget=budget,
        verdict=report.verdict, stable=report.stable, symbolic=report.to_dict(), norm=norm,
        battery=list(families.values()),
        adversarial={"skipped": "the claim is an invariant region, not a norm bound", "growth": None},
        reference=comparison, growth=best_g, tolerance=tol,
        counterexample_growth=best_g if grows else None, failures=failures, notes=notes,
        seconds=time.perf_counter() - t0,
        counterexample=np.asarray(u0[i_best]).reshape(net_shape) if grows else None)


def _operator_check(spec, cases, lam: Optional[float], failures: list[str]) -> dict[str, Any]:
    """Check 2: symmetric, positive semidefinite, lambda_max <= the bound, at the given inputs."""
    worst, worst_min, asym = 0.0, math.inf, 0.0
    for _, _, u in cases:
        A = dense_A(spec, u, u)
        scale = max(float(np.abs(A).max()), 1e-300)
        asym = max(asym, float(np.abs(A - A.T).max()) / scale)
        ev = np.linalg.eigvalsh((A + A.T) / 2)
        worst, worst_min = max(worst, float(ev[-1])), min(worst_min, float(ev[0]) / scale)
    ok = asym <= 1e-12 and worst_min >= -1e-10 and (lam is None or worst <= lam * (1 + 1e-12))
    if asym > 1e-12:
        failures.append(f"the frozen operator A(u) is not symmetric (relative asymmetry {asym:.3g})")
    if worst_min < -1e-10:
        failures.append(f"the frozen operator A(u) is indefinite (lambda_min / max|A| = {worst_min:.3g})")
    if lam is not None and worst > lam * (1 + 1e-12):
        failures.append(f"lambda_max(A(u)) = {worst:.17g} exceeds the proven bound {lam:.17g}")
    return {"actual": worst, "bound": lam, "method": f"dense eigvalsh of A(u) at {len(cases)} inputs",
            "ok": ok, "lambda_min_relative": worst_min, "asymmetry": asym}


def _operator_compare(prog, shape, rng, inputs: Optional[list] = None) -> dict[str, Any]:
    """Check 5 on three inputs (``inputs``: instead of the default ones), at most
    OPERATOR_REFERENCE_STEPS steps."""
    import torch

    steps = min(prog.arch.scheme.steps, OPERATOR_REFERENCE_STEPS)
    net = prog.module(dtype=torch.float64, steps=steps)
    net_shape = shape if shape[0] > 1 else shape[1:]
    if inputs is None:
        inputs = [rng.standard_normal(shape), 1e-3 * rng.standard_normal(shape),
                  np.cumsum(rng.standard_normal(shape), axis=-1)]
    worst = 0.0
    for u in inputs:
        want = reference_run(prog, u, steps)
        with torch.no_grad():
            got = net(torch.as_tensor(u.reshape(net_shape))).numpy().reshape(shape)
        if not np.all(np.isfinite(want)):  # the scheme itself blows up (a cubic reaction on a
            # large input): the network must blow up too, and there is nothing else to compare
            worst = max(worst, 0.0 if not np.all(np.isfinite(got)) else math.inf)
            continue
        scale = max(np.linalg.norm(u), np.linalg.norm(want), 1e-300)
        with np.errstate(all="ignore"):
            d = float(np.linalg.norm(got - want) / scale)
        worst = max(worst, d if math.isfinite(d) else math.inf)
    return {"available": True, "ok": worst <= OPERATOR_REFERENCE_RTOL, "max_rel_diff": worst,
            "tolerance": OPERATOR_REFERENCE_RTOL, "compared": len(inputs),
            "detail": f"dense NumPy float64 ({steps} step(s), every term's dense matrix)"}


# ---------------------------------------------------------------------------------- text
def verify_text(r: VerificationReport, saved_to: Optional[str] = None) -> str:
    """The human-readable verification report (``saved_to``: where the counterexample was written)."""
    sym = r.symbolic
    tau_max = "none" if sym.get("tau_max") is None else f"{sym['tau_max']:.10g}"
    bound = "none" if r.norm["bound"] is None else f"{r.norm['bound']:.10g}"
    lines = [
        f"verify {r.name} ({r.scheme}, N = {_grid_text(r.grid)}, float64, seed {r.seed})",
        f"  1. claim        verdict {r.verdict.upper()}: tau = {sym.get('tau'):.10g}, tau_max = {tau_max}"
        f" ({sym.get('guarantee')})",
        f"  2. {'lambda_max(A) ' if 'asymmetry' in r.norm else '||D||^2      '}"
        f"{r.norm['actual']:.10g} for this N ({r.norm['method']}) <= bound {bound}: "
        + ("ok" if r.norm["ok"] else "VIOLATED"),
        f"  3. battery      {sum(f['inputs'] for f in r.battery)} inputs, max |D u0| from "
        f"{AMPLITUDES[0]:.0e} to {AMPLITUDES[-1]:.0e}; worst growth ||u_K||/||u_0|| by family:",
    ]
    for f in r.battery:
        bad = f" [{f['nonfinite']} of {f['inputs']} outputs NaN/inf]" if f.get("nonfinite") else ""
        lines.append(f"       {f['family']:<20} {_g(f['growth'])}  (at max |D u0| = {f['amplitude']:.2g})"
                     + bad)
    a = r.adversarial
    if a.get("skipped"):
        lines.append(f"     adversarial    skipped: {a['skipped']}")
    else:
        lines.append(f"     adversarial    gradient ascent, {a['starts']} starts, {a['iterations']} "
                     f"iterations in {a['seconds']:.2f} s: best growth {_g(a['growth'])}")
    ref = r.reference
    if ref["available"]:
        lines.append(f"  4. reference    {ref['detail']}: max relative difference {ref['max_rel_diff']:.3g} "
                     f"(tolerance {ref['tolerance']:g}) on {ref['compared']} inputs: "
                     + ("ok" if ref["ok"] else "DISAGREES"))
    else:
        lines.append(f"  4. reference    UNAVAILABLE: {ref['detail']}")
    lines.append(f"  growth beyond round-off means ||u_K||/||u_0|| > 1 + {r.tolerance:.2g}")
    if r.counterexample_growth is not None:
        where = f" (saved to {saved_to})" if saved_to else \
            " (save it with --counterexample out.npy)" if r.verdict != "stable" else ""
        lines.append(f"  5. counterexample  an input grows by {_g(r.counterexample_growth)}{where}")
    else:
        lines.append("  5. counterexample  none found within the budget"
                     + (" (as the proof says)" if r.verdict == "stable" else ""))
    lines += [f"  note: {n}" for n in r.notes]
    lines.append("")
    if r.consistent:
        lines.append(f"result: CONSISTENT ({r.seconds:.1f} s)")
    else:
        lines.append(f"result: VERIFICATION FAILED ({r.seconds:.1f} s)")
        lines += [f"  !!! {f}" for f in r.failures]
    return "\n".join(lines)


def _g(x: Optional[float]) -> str:
    if x is None:
        return "none"
    return f"{x:.12g}" if math.isfinite(x) else "inf (overflow or NaN)"


def growth_text(x: Optional[float]) -> str:
    """A growth factor for messages: a number, or "inf (overflow or NaN)"."""
    return _g(x)
