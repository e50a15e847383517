"""Stage 3: finite-difference stencils as exact data, with their transposes and norm bounds.

A stencil is ``(D u)_i = h^-m sum_j w_j u_(i + j - o)`` with exact weights ``w_j`` (sympy
Rationals) and offset ``o``.  Boundary conditions are paddings of the input, so D is always a
correlation of the padded signal and D^T the matching ``conv_transpose``:

- ``neumann``   zero flux: no padding, a valid correlation, N -> N - K + 1 (K = len(w));
- ``periodic``  circular padding (o left, K-1-o right), N -> N;
- ``dirichlet`` u = 0 outside the domain on every side: the "full" correlation of the input
  zero-extended by K-1 on both sides, N -> N + K - 1 (every row that touches a node).  D^T is then
  the valid transposed correlation (no padding).  For the forward difference D is (N+1) x N and
  ``D^T D = tridiag(-1, 2, -1) / h^2`` (docs/theory.md §12).

Each is a finite section of the bi-infinite Toeplitz operator (or a circulant), which is what the
symbol bound ``||D||^2 <= max_theta |sum_j w_j e^(i j theta)|^2 / h^(2m)`` needs (docs/theory.md §2).
Neumann and Dirichlet are adjoint to each other in their paddings: neumann pads D^T by K-1 zeros
on both sides, dirichlet pads D.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import sympy as sp

from . import limits

if TYPE_CHECKING:  # NumPy is loaded only by the dense helpers (check does not need it)
    import numpy as np

BOUNDARIES = ("neumann", "periodic", "dirichlet")


@dataclass(frozen=True)
class Stencil:
    """An order-``order`` difference: exact weights, the offset of the point it belongs to, and h."""

    weights: tuple[sp.Expr, ...]
    offset: int
    order: int
    h: sp.Expr = sp.Integer(1)

    @property
    def size(self) -> int:
        return len(self.weights)

    @property
    def scaled(self) -> tuple[sp.Expr, ...]:
        """The weights divided by h^m: the entries of the matrix D."""
        return tuple(w / self.h ** self.order for w in self.weights)

    @property
    def T(self) -> "Stencil":
        """The adjoint on the bi-infinite grid: ``(D^T v)_k = sum_j w_j v_(k - j + o)``, i.e.
        reversed weights with offset ``K - 1 - o``."""
        return Stencil(tuple(reversed(self.weights)), self.size - 1 - self.offset, self.order, self.h)

    def moments(self, count: int) -> list[sp.Expr]:
        """``M_q = sum_j w_j (j - o)^q / q!`` for q < count: D u = sum_q M_q h^(q-m) u^(q)."""
        return [sum(w * sp.Integer(j - self.offset) ** q for j, w in enumerate(self.weights))
                / sp.factorial(q) for q in range(count)]

    def consistency_error(self) -> Optional[str]:
        """None when the stencil approximates d^m (M_q = 0 for q < m, M_m = 1), else why not."""
        mom = self.moments(self.order + 1)
        for q in range(self.order):
            if mom[q] != 0:
                return (f"its moment sum_j w_j (j - o)^{q} / {q}! is {mom[q]}, not 0, so it does not "
                        f"approximate d^{self.order}/dx^{self.order}")
        if mom[self.order] != 1:
            return (f"its moment sum_j w_j (j - o)^{self.order} / {self.order}! is {mom[self.order]}, "
                    f"not 1 (scale the weights by {1 / mom[self.order] if mom[self.order] else 'oo'})")
        return None

    @property
    def accuracy(self) -> int:
        """The order of accuracy p measured from the Taylor residual (first nonzero M_q, q > m)."""
        mom = self.moments(self.order + 2 * self.size + 2)
        for q in range(self.order + 1, len(mom)):
            if mom[q] != 0:
                return q - self.order
        return len(mom) - self.order

    def padding(self, boundary: str) -> tuple[int, int, str]:
        """(left, right, mode) padding that turns D into a valid correlation of the padded input."""
        if boundary == "neumann":
            return (0, 0, "none")
        if boundary == "dirichlet":  # the full correlation: ghost zeros on every side
            return (self.size - 1, self.size - 1, "zeros")
        return (self.offset, self.size - 1 - self.offset, "circular")

    def adjoint_padding(self, boundary: str) -> tuple[int, int, str]:
        """Padding of v for ``(D^T v)_k = sum_j w_j vpad_(k + K - 1 - j)``."""
        if boundary == "neumann":
            return (self.size - 1, self.size - 1, "zeros")
        if boundary == "dirichlet":  # the adjoint of the full correlation is a valid one
            return (0, 0, "none")
        return (self.size - 1 - self.offset, self.offset, "circular")

    def output_size(self, n: int, boundary: str) -> int:
        """Rows of D on n points: n - K + 1 (neumann), n (periodic), n + K - 1 (dirichlet)."""
        if boundary == "neumann":
            return n - self.size + 1
        return n + self.size - 1 if boundary == "dirichlet" else n

    def flux_grid_padding(self, boundary: str) -> tuple[int, int]:
        """(before, after): how far the grid of flux points extends beyond the nodes along this
        axis.  Row r of the dirichlet D belongs to the point ``r - (K - 1) + o`` (for the forward
        difference r - 1: the ghost point -1 first), so the flux grid is the nodes plus
        ``K - 1 - o`` points before and ``o`` after; with neumann and periodic it is the nodes.
        In 2D the other axis's difference is zero-extended to the same grid, so both gradient
        channels sit at the same points (the vector flux couples them per point)."""
        if boundary != "dirichlet":
            return (0, 0)
        return (self.size - 1 - self.offset, self.offset)

    def matrix(self, n: int, boundary: str) -> np.ndarray:
        """The dense float64 matrix of D on n points (rows x n)."""
        import numpy as np

        w = [float(x) for x in self.scaled]
        rows = self.output_size(n, boundary)
        if rows < 1:
            raise ValueError(f"a {self.size}-point stencil needs at least {self.size} points, got {n}")
        d = np.zeros((rows, n))
        shift = {"neumann": 0, "periodic": -self.offset, "dirichlet": 1 - self.size}[boundary]
        for i in range(rows):
            for j, wj in enumerate(w):
                k = i + j + shift
                if boundary == "periodic":
                    d[i, k % n] += wj
                elif 0 <= k < n:
                    d[i, k] += wj
        return d

    def symbol_sq_max(self) -> Optional[sp.Expr]:
        """``max_theta |sum_j w_j e^(i j theta)|^2 / h^(2m)``, exactly; None when sympy cannot.

        With x = cos(theta), ``|sigma|^2 = sum_(j,k) w_j w_k T_|j-k|(x)`` is a polynomial on [-1, 1];
        its maximum is at x = +-1 or at a real root of its derivative (docs/theory.md §2).
        """
        m = _poly_max(self.weights)
        return None if m is None else m / self.h ** (2 * self.order)

    def describe(self) -> str:
        ws = ", ".join(str(w) for w in self.weights)
        scale = "" if self.h == 1 else f" / {self.h}^{self.order}" if self.order > 1 else f" / {self.h}"
        return f"[{ws}] @ {self.offset}{scale}"


@functools.lru_cache(maxsize=256)
def _poly_max(weights: tuple[sp.Expr, ...]) -> Optional[sp.Expr]:
    """The exact maximum, or None when it cannot be found within the symbolic time limit (long
    stencils with irrational critical points can take sympy minutes)."""
    try:
        with limits.time_limit(limits.SYMBOLIC_SECONDS):  # read now: tests lower it
            exact = _poly_max_exact(weights)
    except limits.SymbolicTimeout:
        return None
    return exact if exact is not None and symbol_max_agrees(weights, exact) else None


#: theta grid of the float cross-check of the exact symbol maximum (points on [0, pi])
SYMBOL_GRID = 4096


def sampled_symbol_max(weights: tuple[float, ...], n: int = SYMBOL_GRID) -> tuple[float, float]:
    """``(max on the grid, max after local refinement)`` of ``|sum_j w_j e^(i j theta)|^2``
    (float64, h = 1) on ``theta_k = pi k / n``; the refinement samples 2001 points on the two grid
    cells around the grid maximum.  The symbol is even in theta (real weights), so [0, pi]
    covers it."""
    import numpy as np

    w = np.asarray(weights, dtype=np.float64)
    j = np.arange(len(w))

    def sym(theta: np.ndarray) -> np.ndarray:
        return np.abs(np.exp(1j * np.outer(theta, j)) @ w) ** 2

    theta = np.pi * np.arange(n + 1) / n
    vals = sym(theta)
    k = int(np.argmax(vals))
    local = np.linspace(theta[max(k - 1, 0)], theta[min(k + 1, n)], 2001)
    return float(vals[k]), max(float(vals[k]), float(sym(local).max()))


def symbol_max_agrees(weights: tuple[sp.Expr, ...], exact: sp.Expr, n: int = SYMBOL_GRID) -> bool:
    """Is the exact maximum of ``|sigma(theta)|^2`` (h = 1) consistent with a float sample?

    ``|sigma|^2`` is a trigonometric polynomial of degree d = K - 1, so by Bernstein's inequality
    ``|d/dtheta| <= d M`` (M its maximum) and every point is within pi/(2n) of the grid:
    ``M <= grid_max / (1 - d pi / (2n))``.  The exact value must lie between the refined sample
    (minus round-off) and that bound (plus round-off); nan, zoo, complex or a non-positive value
    for a nonzero stencil fails."""
    try:
        v = complex(sp.N(exact, 30))
        wf = tuple(float(w) for w in weights)
    except (TypeError, ValueError, OverflowError):
        return False
    if v.imag != 0 or not math.isfinite(v.real):
        return False
    if not any(wf):
        return v.real == 0
    d = len(wf) - 1
    if v.real <= 0 or d * math.pi >= n:
        return False
    grid, refined = sampled_symbol_max(wf, n)
    roundoff = 1e-12 * sum(abs(x) for x in wf) ** 2
    return refined - roundoff <= v.real <= grid / (1 - d * math.pi / (2 * n)) + roundoff


def _poly_max_exact(weights: tuple[sp.Expr, ...]) -> Optional[sp.Expr]:
    x = sp.Symbol("x", real=True)
    k = len(weights)
    p = sp.expand(sum(weights[a] * weights[b] * sp.chebyshevt(abs(a - b), x)
                      for a in range(k) for b in range(k)))
    if not p.has(x):
        return sp.nsimplify(p) if p.is_number else None
    try:
        poly = sp.Poly(p, x)
        if not poly.domain.is_QQ and not poly.domain.is_ZZ:
            return None
        crit = [r for r in sp.real_roots(poly.diff(x)) if -1 < r < 1]
    except (sp.PolynomialError, NotImplementedError):
        return None
    candidates = [p.subs(x, -1), p.subs(x, 1)] + [_eval_at_root(poly, r) for r in crit]
    best = max(candidates, key=lambda c: sp.N(c, 40))
    return sp.radsimp(sp.nsimplify(best)) if not best.is_Rational and _radical_ok(best) else best


def _eval_at_root(poly: sp.Poly, r: sp.Expr) -> sp.Expr:
    """p(r) for an exact root r, in radicals when the root has them."""
    if isinstance(r, sp.CRootOf):
        try:
            exact = sp.roots(sp.Poly(r.poly, r.poly.gens[0]), filter="R")
            for cand in exact:
                if abs(sp.N(cand - r, 50)) < 1e-40:
                    r = cand
                    break
        except Exception:  # noqa: BLE001 - radicals are a nicety; CRootOf is exact already
            pass
    if isinstance(r, sp.CRootOf):  # no radicals: simplify cannot help, and takes seconds
        return poly.as_expr().subs(poly.gens[0], r)
    return sp.simplify(poly.as_expr().subs(poly.gens[0], r))


def _radical_ok(v: sp.Expr) -> bool:
    return not v.has(sp.CRootOf)


@functools.lru_cache(maxsize=64)
def named_stencil(kind: str, order: int) -> tuple[tuple[sp.Expr, ...], int]:
    """(weights, offset) of the forward, backward or central difference of the given order.

    Forward is the binomial ``(-1)^(m-k) C(m, k)`` at offset 0, backward the same at offset m;
    central uses Fornberg's weights on the smallest symmetric point set (m+1 points for even m,
    m+2 for odd m), kept exact.
    """
    m = order
    if kind in ("forward", "backward"):
        w = tuple(sp.Integer((-1) ** (m - k) * sp.binomial(m, k)) for k in range(m + 1))
        return w, (0 if kind == "forward" else m)
    if kind == "central":
        half = m // 2 if m % 2 == 0 else (m + 1) // 2
        pts = [sp.Integer(j) for j in range(-half, half + 1)]
        w = tuple(sp.finite_diff_weights(m, pts, 0)[m][-1])
        return w, half
    raise ValueError(f"unknown stencil kind {kind!r}")


def make_stencil(kind: str, order: int, h: sp.Expr, weights=(), offset: int = 0) -> Stencil:
    """The stencil a spec asks for: a named kind of the equation's order, or given weights."""
    if kind == "weights":
        return Stencil(tuple(weights), offset, order, h)
    w, o = named_stencil(kind, order)
    return Stencil(w, o, order, h)


def dot_test(stencil: Stencil, n: int, boundary: str, rng: np.random.Generator) -> float:
    """Relative mismatch of ``<D u, v>`` and ``<u, D^T v>`` with D^T applied as the padded
    reversed stencil (not the matrix transpose): the adjoint the network uses."""
    u = rng.standard_normal(n)
    v = rng.standard_normal(stencil.output_size(n, boundary))
    du = apply_numpy(stencil, u, boundary)
    dtv = apply_adjoint_numpy(stencil, v, boundary)
    lhs, rhs = float(du @ v), float(u @ dtv)
    return abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300)


def _pad_numpy(x: np.ndarray, left: int, right: int, mode: str) -> np.ndarray:
    import numpy as np

    if mode == "none" or left == right == 0:
        return x
    if mode == "circular":
        n = x.shape[-1]
        return np.take(x, np.arange(-left, n + right) % n, axis=-1)  # any width, wrapping
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, right)])


def apply_numpy(stencil: Stencil, u: np.ndarray, boundary: str) -> np.ndarray:
    """D u along the last axis (NumPy, float64), by padding and shifted slices."""
    pl, pr, mode = stencil.padding(boundary)
    up = _pad_numpy(u, pl, pr, mode)
    n = up.shape[-1] - stencil.size + 1
    return sum(float(w) * up[..., j:j + n] for j, w in enumerate(stencil.scaled))


def apply_adjoint_numpy(stencil: Stencil, v: np.ndarray, boundary: str) -> np.ndarray:
    """D^T v along the last axis (NumPy, float64)."""
    pl, pr, mode = stencil.adjoint_padding(boundary)
    vp = _pad_numpy(v, pl, pr, mode)
    k = stencil.size
    n = vp.shape[-1] - k + 1
    return sum(float(w) * vp[..., k - 1 - j:k - 1 - j + n] for j, w in enumerate(stencil.scaled))
