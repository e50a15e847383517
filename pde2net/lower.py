"""Stage 4: :class:`~pde2net.analyse.Model` -> :class:`Architecture`, the network as plain data.

The IR says everything the emitters need and nothing about torch: the stencil D (exact weights
and the paddings that realise the boundary), the flux Phi as an op tree, and the time stepper as
a scheme record.  Both emitters -- the live ``nn.Module`` (:mod:`pde2net.layers`) and the
standalone source (:mod:`pde2net.codegen`) -- read only this.

The explicit scheme ``u^(k+1) = u^k - tau D^T Phi(D u^k)`` becomes ``steps`` ResNet blocks that
share one stencil weight W: a convolution with W, the activation Phi, and a transposed
convolution with ``-tau W`` (the paper's ``W2 = -tau W1^T``), added to the skip connection.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Optional, Union

import sympy as sp

from . import exprs
from .analyse import S, Model, python_name, show
from .operators.base import OperatorSpec
from .stencils import Stencil, make_stencil


@dataclass(frozen=True)
class StencilIR:
    """D along one axis: exact scaled weights, paddings for D and for D^T, and where it came from."""

    stencil: Stencil
    boundary: str
    axis: int = -1  # the tensor axis it acts on: -1 for x, -2 for y
    # (dim, before, after) per other space axis: the zeros that extend this axis's difference
    # to the flux-point grid of a dirichlet axis there (Stencil.flux_grid_padding), so every
    # gradient channel has the same shape; () in 1D and when no other axis is dirichlet
    cross: tuple[tuple[int, int, int], ...] = ()

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(float(w) for w in self.stencil.scaled)

    @property
    def padding(self) -> tuple[int, int, str]:
        return self.stencil.padding(self.boundary)

    @property
    def adjoint_padding(self) -> tuple[int, int, str]:
        return self.stencil.adjoint_padding(self.boundary)


# The op trees' own variables: Phi's argument (1D) and the squared gradient length (2D).  User
# names cannot start with "__" (the language refuses them), so a param can never shadow these.
FLUX_VAR = "__s"
RADIAL_VAR = "__s2"


@dataclass(frozen=True)
class FluxIR:
    """Phi(s) as an op tree over :data:`FLUX_VAR` and the params (by their .pde names), and the
    diffusivity ``g = Phi(s)/s`` (cancelled, or defined at s = 0 by its limit, so finite there
    when the limit is) for schemes that freeze it.  Evaluate with :meth:`env`."""

    expr: sp.Expr
    op: exprs.Op
    params: dict[str, float]
    text: str
    ratio: sp.Expr
    ratio_op: exprs.Op
    # g as a function of the squared length s2 = |v|^2 (2D vector flux g(|v|^2) v); None if not lowerable
    radial: Optional[sp.Expr] = None
    radial_op: Optional[exprs.Op] = None

    def env(self, x, params: Optional[dict] = None, radial: bool = False) -> dict:
        """The variables of the op trees: the argument ``x`` (s, or s2 for ``radial_op``) and
        the params (``params``, default this flux's values)."""
        return {**(self.params if params is None else params), RADIAL_VAR if radial else FLUX_VAR: x}


@dataclass(frozen=True)
class Explicit:
    """``steps`` blocks ``u <- u - tau D^T Phi(D u)`` sharing one weight."""

    tau: sp.Expr
    steps: int


@dataclass(frozen=True)
class FED:
    """Fast Explicit Diffusion (docs/theory.md §3): ``cycles`` cycles of ``cycle_length`` explicit steps
    with the step sizes ``tau_i = tau_max / (2 cos^2(pi (2i+1) / (4n+2)))`` (exact), applied in
    Leja order (``taus`` is already ordered; ``order`` the original indices i).  ``update``:
    ``cycle`` freezes the diffusivity at the start of each cycle, ``step`` re-evaluates it."""

    tau_max: sp.Expr
    cycles: int
    cycle_length: int
    update: str
    taus: tuple[sp.Expr, ...]
    order: tuple[int, ...]

    @property
    def steps(self) -> int:  # the outer loop counts cycles (``run --steps``)
        return self.cycles

    @property
    def cycle_time(self) -> sp.Expr:
        """``sum tau_i = tau_max (n^2 + n) / 3``."""
        n = self.cycle_length
        return self.tau_max * (n * n + n) / 3


@dataclass(frozen=True)
class FSI:
    """Fast Semi-Iterative scheme (docs/theory.md §4): per cycle, ``u^(k+1) = a_k (u^k - tau A(u^k)) +
    (1 - a_k) u^(k-1)``, ``a_k = (4k+2)/(2k+3)``, ``u^(-1) = u^0``; diffusivity frozen per cycle
    unless ``update = step``."""

    tau: sp.Expr
    cycles: int
    cycle_length: int
    update: str

    @property
    def steps(self) -> int:
        return self.cycles

    @property
    def alphas(self) -> tuple[sp.Rational, ...]:
        return tuple(sp.Rational(4 * k + 2, 2 * k + 3) for k in range(self.cycle_length))

    @property
    def cycle_time(self) -> sp.Expr:
        n = self.cycle_length
        return self.tau * (n * n + n) / 3


@dataclass(frozen=True)
class Implicit:
    """Implicit time steps as a recurrent network (docs/theory.md §5, §6).  ``solver``: ``cg`` / ``jacobi``
    solve the lagged-diffusivity system ``(I + tau D^T G(u^k) D) u^(k+1) = u^k`` from 0 with
    ``iterations`` iterations fed with u^k; ``fixed_point`` iterates ``v <- u^k - tau D^T Phi(D v)``
    from ``v = u^k`` (fully implicit).  ``omega`` is the Jacobi damping."""

    tau: sp.Expr
    steps: int
    solver: str
    iterations: int
    omega: sp.Expr


@dataclass(frozen=True)
class Multigrid:
    """Linear implicit steps ``(I + tau c D^T D) u^(k+1) = u^k`` (Phi(s) = c s), each solved by
    ``cycles`` V(pre, post)-cycles from u^k (docs/theory.md §7): damped Jacobi smoothing, restriction R,
    prolongation ``P = 2 R^T``, Galerkin coarse operators ``R A P``.  ``levels = 0``: as many as
    the grid allows.  ``kernel`` is the interior kernel of A (exact), ``coarse_kernels`` the
    interior Galerkin kernels of the vertex-centred hierarchy (exact, for reports)."""

    tau: sp.Expr
    steps: int
    levels: int
    pre: int
    post: int
    cycles: int
    coefficient: sp.Expr
    omega: sp.Expr = sp.Rational(2, 3)
    kernel: tuple[sp.Expr, ...] = ()
    coarse_kernels: tuple[tuple[sp.Expr, ...], ...] = ()


VERTEX_RESTRICTION = (sp.Rational(1, 4), sp.Rational(1, 2), sp.Rational(1, 4))
CELL_RESTRICTION = (sp.Rational(1, 8), sp.Rational(3, 8), sp.Rational(3, 8), sp.Rational(1, 8))

Scheme = Union[Explicit, FED, FSI, Implicit, Multigrid]


@dataclass(frozen=True)
class Architecture:
    """The network: its names, D, Phi, and the scheme that arranges the blocks."""

    name: str
    class_name: str
    dims: tuple[str, ...]
    order: int
    stencils: tuple[StencilIR, ...]
    flux: FluxIR
    scheme: Scheme
    equation_text: str
    size: Optional[tuple[int, ...]]
    #: the operator model's terms and reaction (docs/theory.md §9-12); None for the scalar model
    operator: Optional[OperatorSpec] = None

    def with_steps(self, steps: int) -> "Architecture":
        """The same network with a different number of time steps (``run --steps``)."""
        if isinstance(self.scheme, (FED, FSI)):  # a step of the outer loop is one cycle
            return replace(self, scheme=replace(self.scheme, cycles=steps))
        return replace(self, scheme=replace(self.scheme, steps=steps))


def class_name(name: str) -> str:
    """CamelCase class name for ``pde NAME`` (``perona_malik`` -> ``PeronaMalik``)."""
    parts = [p for p in re.split(r"_+", name) if p]
    camel = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    if camel[0].isdigit():
        camel = "Pde" + camel
    return python_name(camel, {"torch", "math", "nn", "F", "W1", "W2", "Dt", "Dtx", "Dty", "TorchOps"})


def lower_flux(model: Model) -> FluxIR:
    """Phi as an op tree; params stay named so the module can expose (or learn) them."""
    try:
        return _lower_flux(model)
    except (exprs.UnsupportedExpression, TypeError, ValueError) as exc:  # e.g. (-1)^0.5
        raise model.error(f"the flux {show(model.flux)} cannot be emitted: {exc}", "equation",
                          "a real flux built from + - * / ^ and exp log sqrt abs tanh sin cos "
                          "atan min max") from None


def _lower_flux(model: Model) -> FluxIR:
    names = {S: FLUX_VAR, **{sym: name for name, sym in model.param_symbols.items()}}
    params = {name: float(v) for name, v in model.params.items()}
    values = {sym: params[name] for name, sym in model.param_symbols.items()}
    lowering = FiniteLowering(names, values)
    phi, op = lowering.lower(model.flux, S)
    ratio = sp.cancel(model.flux / S) if model.flux.is_rational_function(S) else model.flux / S
    ratio, ratio_op = lowering.lower(ratio, S, (divide_out(model.flux, S),))
    radial, radial_op = lower_radial(ratio, names, values) if model.ndim == 2 else (None, None)
    return FluxIR(model.flux, op, params, flux_text(model), ratio, ratio_op, radial, radial_op)


def flux_text(model: Model) -> str:
    """Phi in .pde syntax over its argument ``s`` (printed as ``Phi(s) = ...``).  When a param
    is itself named ``s`` the argument is shown under another name, and the text says so (the
    two would otherwise print alike, and ``s/s`` would read as 1)."""
    arg = "s"
    while arg in model.params:
        arg += "_"
    text = show(model.flux.xreplace({S: sp.Symbol(arg)}))
    return text if arg == "s" else f"{text}  (argument s written {arg}; s is the param)"


S2 = sp.Symbol("s2", nonnegative=True)


def lower_radial(ratio: sp.Expr, names: dict, values: Optional[dict] = None
                 ) -> tuple[sp.Expr, exprs.Op]:
    """``g(s2) = (Phi(s)/s)`` at ``s = sqrt(s2)``: the 2D diffusivity as a function of
    ``|grad u|^2``, so the vector activation ``g(vx^2 + vy^2) (vx, vy)`` needs no square root
    (Phi(s)/s is even for the radial profiles the 2D recogniser builds, so s = +sqrt(s2) is exact).
    Finite at s2 = 0 where its one-sided limit is (see :class:`FiniteLowering`)."""
    g2 = sp.powsimp(ratio.xreplace({S: sp.sqrt(S2)}), force=False)
    lowering = FiniteLowering({**names, S2: RADIAL_VAR}, values or {})
    return lowering.lower(g2, S2, one_sided=True)


# Bounds on the symbolic work one flux may cost when lowering (cancellation, limits).
CANCEL_SECONDS, LIMIT_SECONDS = 2.0, 5.0


def _time_limit(seconds: float):
    """``time_limit`` and its exception, from the bottom module :mod:`pde2net.limits`."""
    from .limits import SymbolicTimeout, time_limit

    return time_limit(seconds), SymbolicTimeout


@dataclass(frozen=True)
class FiniteLowering:
    """Lowers a flux expression f(x) (x = s or s2) so that the network evaluates it finitely at
    x = 0 and does not overflow to inf/inf for large x where f is bounded.

    1. Quotients of exponentials are divided by the dominant exponential
       (:func:`overflow_safe`: ``exp(a)/(1 + exp(a)) -> 1/(exp(-a) + 1)``).
    2. If the op tree is not finite at x = 0 (``(s/2 + s/2)/s`` is 0/0), the alternatives given
       (e.g. Phi(s)/s distributed over the sum) and the cancelled ``cancel(together(f))`` are
       tried, each bounded in time.
    3. Otherwise the value at 0 is defined by the limit (from both sides; ``one_sided``: x >= 0),
       if it is finite: ``where_zero(x, lim, f)`` (see :class:`~pde2net.exprs.Op`).  A genuine
       singularity (TV's ``1/|s|``) stays as it is: the stability report says what it means.
    """

    names: dict
    values: dict

    def op(self, expr: sp.Expr, var: sp.Symbol) -> exprs.Op:
        return exprs.lower_expr(expr, self.names, frozenset({var}), self.values)

    def finite_at(self, op: exprs.Op, var: sp.Symbol, x: float = 0.0, robust: bool = True) -> bool:
        """Whether the tree is finite at ``var = x`` for the params' values; ``robust``: and
        no value of params alone is a nonzero number outside float32's normal range either
        (lambda^2 = 1e-320 is finite in Python, but 0 in float32 and flushed to 0 by some
        float64 kernels, so ``lambda^2 / (lambda^2 + s^2)`` is 0/0 at s = 0 there)."""
        env = {self.names[sym]: v for sym, v in self.values.items()}
        # Python floats only: every node is computed by exprs.ieee_scalar (no NumPy: ``check``
        # starts without it)
        y = exprs.evaluate(op, {**env, self.names[var]: x}, {})
        try:
            if not math.isfinite(float(y)):
                return False
        except (TypeError, ValueError):
            return False
        return not robust or not any(v != 0 and not exprs.FLOAT32_TINY <= abs(v) <= exprs.FLOAT32_MAX
                                     for v in _scalar_values(op, env, self.names[var]))

    def lower(self, expr: sp.Expr, var: sp.Symbol, alternatives: tuple = (),
              one_sided: bool = False) -> tuple[sp.Expr, exprs.Op]:
        first = overflow_safe(expr)
        op = self.op(first, var)
        if self.finite_at(op, var):
            return first, op
        fallback = (first, op) if self.finite_at(op, var, robust=False) else None
        for form in self._alternatives(expr, alternatives):
            form = overflow_safe(form)
            alt = self.op(form, var)
            if self.finite_at(alt, var):
                return form, alt
            if fallback is None and self.finite_at(alt, var, robust=False):
                fallback = (form, alt)
        form, op = fallback or (first, op)
        at_zero = self._limit_at_zero(expr, var, one_sided)
        if at_zero is None:
            return form, op
        return form, exprs.Op("where_zero", (at_zero, op), name=self.names[var])

    @staticmethod
    def _alternatives(expr: sp.Expr, given: tuple):
        yield from given
        limit, timeout = _time_limit(CANCEL_SECONDS)
        try:
            with limit:
                cancelled = sp.cancel(sp.together(expr))
        except (timeout, sp.PolynomialError, NotImplementedError, TypeError, ValueError):
            return
        yield cancelled

    def _limit_at_zero(self, expr: sp.Expr, var: sp.Symbol, one_sided: bool) -> Optional[exprs.Op]:
        """The limit of expr at var = 0 as an op tree over the params, or None if it is not
        finite (or not found in time).  Tried with the params symbolic first (a learned param
        keeps its meaning), then with their values."""
        for form in (expr, expr.xreplace({k: sp.Float(v, 30) for k, v in self.values.items()})):
            lim = self._limit(form, var, one_sided)
            if lim is None:
                continue
            try:
                op = exprs.lower_expr(lim, self.names, frozenset({var}), self.values)
            except exprs.UnsupportedExpression:
                continue
            if self.finite_at(op, var):
                return op
        return None

    @staticmethod
    def _limit(expr: sp.Expr, var: sp.Symbol, one_sided: bool) -> Optional[sp.Expr]:
        limit, timeout = _time_limit(LIMIT_SECONDS)
        try:
            with limit:
                sides = [sp.limit(expr, var, 0, d) for d in (("+",) if one_sided else ("+", "-"))]
        except (timeout, NotImplementedError, TypeError, ValueError, ArithmeticError,
                sp.PolynomialError):
            return None
        lim = sides[0]
        if any(sp.simplify(other - lim) != 0 for other in sides[1:]):
            return None  # the one-sided limits differ: a jump, not a removable singularity
        if lim.has(sp.Limit, sp.AccumBounds, sp.nan, sp.zoo) or lim.is_finite is False:
            return None
        return lim


def _scalar_values(op: exprs.Op, env: dict, var: str):
    """The values of the maximal subtrees of ``op`` free of ``var`` (params and constants)."""
    if not _uses(op, var):
        yield float(exprs.evaluate(op, env, {}))
        return
    for a in op.args:
        yield from _scalar_values(a, env, var)


def _uses(op: exprs.Op, var: str) -> bool:
    return op.name == var or any(_uses(a, var) for a in op.args)


def divide_out(phi: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """``phi / var`` with the division distributed over a sum, so that each term's factor of
    var cancels (sympy cancels ``s * f / s`` automatically, not ``(s f + s g) / s``)."""
    if phi.is_Add:
        return sp.Add(*[divide_out(t, var) for t in phi.args])
    return phi / var


def overflow_safe(expr: sp.Expr) -> sp.Expr:
    """Rewrites quotients of exponentials so that they cannot give inf/inf: ``N / (c + k exp(a))``
    with ``exp(a)`` a factor of N (or of a term of N) becomes ``(N exp(-a)) / (c exp(-a) + k)``,
    both distributed, so the sigmoid ``exp(a)/(1 + exp(a))`` is evaluated as
    ``1/(exp(-a) + 1)``: 1 for large a (``exp(-a)`` underflows to 0), 0 for very negative a
    (``1/inf``), never nan.  An identity: only the order of the floating-point operations
    changes."""
    if expr.is_Atom or not expr.args:
        return expr
    args = tuple(overflow_safe(a) for a in expr.args)
    if args != expr.args:
        expr = expr.func(*args)
    return _divide_by_exponential(expr) if expr.is_Mul else expr


def _divide_by_exponential(mul: sp.Expr) -> sp.Expr:
    num = [f for f in mul.args if not (f.is_Pow and f.exp == -1 and f.base.is_Add)]
    dens = [f.base for f in mul.args if f.is_Pow and f.exp == -1 and f.base.is_Add]
    if len(dens) != 1:
        return mul
    top, den = sp.Mul(*num), dens[0]
    for term in den.args:
        grows = [f for f in sp.Mul.make_args(term) if isinstance(f, sp.exp)]
        if len(grows) != 1 or not _has_exp_factor(top, grows[0]):
            continue
        shrink = sp.exp(-grows[0].args[0])
        scale = lambda e: sp.Add(*[t * shrink for t in sp.Add.make_args(e)])  # noqa: E731
        return sp.Mul(scale(top), sp.Pow(scale(den), -1))
    return mul


def _has_exp_factor(expr: sp.Expr, e: sp.Expr) -> bool:
    """Whether ``e`` is a factor of expr or of one of its terms."""
    return any(e in sp.Mul.make_args(t) for t in sp.Add.make_args(expr))


def lower_stencils(model: Model) -> tuple[StencilIR, ...]:
    """D from the ``stencil`` statement, checked to approximate d^m; one per space axis."""
    ch = model.stencil
    stencils = []
    for axis, h in enumerate(model.grid):
        st = make_stencil(ch.kind, model.order, h, ch.weights, ch.offset)
        why = st.consistency_error()
        if why is not None:
            raise model.error(f"stencil {st.describe()} is not an order-{model.order} difference: {why}",
                              "stencil", f"weights w with sum_j w_j (j - o)^q = 0 for q < {model.order} "
                              f"and sum_j w_j (j - o)^{model.order} = {model.order}!")
        stencils.append(st)
    kinds = axis_boundaries(model.boundary, len(stencils))
    out = []
    for axis, st in enumerate(stencils):
        cross = tuple((-1 - other, *stencils[other].flux_grid_padding(kinds[other]))
                      for other in range(len(stencils))
                      if other != axis and kinds[other] == "dirichlet")
        out.append(StencilIR(st, kinds[axis], axis=-1 - axis, cross=cross))  # x: the last tensor axis
    return tuple(out)


def axis_boundaries(boundary, ndim: int) -> tuple[str, ...]:
    """The boundary kind of each space axis (x first): one kind for all, or a per-axis tuple."""
    return (boundary,) * ndim if isinstance(boundary, str) else tuple(boundary)


def boundary_text(stencils: tuple[StencilIR, ...]) -> str:
    """The boundary as reports show it: ``neumann`` when every axis has it, else per axis
    (``x: periodic, y: neumann``)."""
    kinds = [ir.boundary for ir in stencils]
    if len(set(kinds)) == 1:
        return kinds[0]
    return ", ".join(f"{'xyz'[i]}: {k}" for i, k in enumerate(kinds))


def lower_scheme(model: Model) -> Scheme:
    """The scheme statement as an IR record (step sizes, weights and kernels computed here)."""
    kind, get = model.scheme, model.setting
    if kind == "explicit":
        return Explicit(get("tau"), int(get("steps")))
    if kind == "fed":
        n = int(get("cycle_length"))
        taus = fed_step_sizes(get("tau_max"), n)
        order = leja_order(fed_roots(float(get("tau_max")), n))
        return FED(get("tau_max"), int(get("cycles")), n, str(get("update")),
                   tuple(taus[i] for i in order), tuple(order))
    if kind == "fsi":
        return FSI(get("tau"), int(get("cycles")), int(get("cycle_length")), str(get("update")))
    if kind == "implicit":
        omega = get("omega")
        if omega is None:
            omega = sp.Integer(2) / (jacobi_width(model) + 1)  # inside the limit 2/K (docs/theory.md §5)
        return Implicit(get("tau"), int(get("steps")), str(get("solver")),
                        int(get("iterations")), omega)
    if kind == "multigrid":
        return lower_multigrid(model)
    raise model.error(f"unknown scheme {kind}", "scheme", "explicit, fed, fsi, implicit or multigrid")


def fed_step_sizes(tau_max: sp.Expr, n: int) -> list[sp.Expr]:
    """``tau_i = tau_max / (2 cos^2(pi (2i+1) / (4n+2)))``, i = 0..n-1 (docs/theory.md §3), to 30 digits.

    Exact cosines cost sympy ~1 ms each (seconds for long cycles) and buy nothing: the guarantee
    rests on the cycle polynomial, and each ``-tau_i w_j`` is still rounded to float64 only once.
    """
    import mpmath

    with mpmath.workdps(40):
        tm = mpmath.mpf(sp.Float(tau_max, 45)._mpf_)
        return [sp.Float(tm / (2 * mpmath.cos(mpmath.pi * (2 * i + 1) / (4 * n + 2)) ** 2), 30)
                for i in range(n)]


def fed_roots(tau_max: float, n: int) -> list[float]:
    """``1 / tau_i = 2 cos^2(pi (2i+1) / (4n+2)) / tau_max`` in float64 (enough to order them)."""
    import math

    return [2 * math.cos(math.pi * (2 * i + 1) / (4 * n + 2)) ** 2 / tau_max for i in range(n)]


def leja_order(points: list[float]) -> list[int]:
    """Leja ordering of the roots ``1/tau_i`` of the cycle polynomial: start with the largest,
    then repeatedly take the point maximising the product of distances to those taken (sums of
    logs, so nothing overflows; ties go to the lower index).  Keeps the partial products of
    ``(1 - tau_i lambda)`` small, which is what makes a long FED cycle survive rounding (docs/theory.md §3)."""
    import numpy as np

    x = np.asarray(points, dtype=float)
    taken = np.zeros(len(x), dtype=bool)
    score = np.zeros(len(x))
    out = [int(np.argmax(np.abs(x)))]
    taken[out[0]] = True
    with np.errstate(divide="ignore"):
        for _ in range(len(x) - 1):
            score += np.log(np.abs(x - x[out[-1]]))
            best = int(np.argmax(np.where(taken, -np.inf, score)))
            out.append(best)
            taken[best] = True
    return out


def jacobi_width(model: Model) -> int:
    """K = the number of nonzero weights of D: with K-point rows, ``D^T G D <= K diag(D^T G D)``
    (Cauchy-Schwarz), so damped Jacobi converges for ``omega < 2/K`` (K = m + 1 for binomial D)."""
    st = make_stencil(model.stencil.kind, model.order, model.grid[0], model.stencil.weights,
                      model.stencil.offset)
    return sum(1 for w in st.weights if w != 0)


def lower_multigrid(model: Model) -> Multigrid:
    """Linear diffusion only: ``A = I + tau c D^T D`` with ``Phi(s) = c s``."""
    if not model.linear:
        raise model.error(f"multigrid needs linear diffusion, but the flux Phi(s) = "
                          f"{show(model.flux.xreplace({S: sp.Symbol('s')}))} is nonlinear", "scheme",
                          "a linear equation such as dt(u) = dxx(u) with multigrid, or scheme "
                          "implicit(...) / fed(...) / fsi(...) for a nonlinear flux")
    if model.ndim != 1:
        raise model.error("multigrid is implemented for 1D fields only", "scheme",
                          "field u(x), or scheme implicit(...) for 2D")
    c = sp.nsimplify(sp.cancel(model.flux_value / S))
    get = model.setting
    tau = get("tau")
    st = make_stencil(model.stencil.kind, model.order, model.grid[0], model.stencil.weights,
                      model.stencil.offset)
    # omega = 2/(K+1): 2/3 for m = 1 (docs/theory.md §7), inside the Jacobi limit 2/K for every m (docs/theory.md §5)
    omega = sp.Integer(2) / (jacobi_width(model) + 1)
    kernel = operator_kernel(st.scaled, tau * c)
    coarse = []
    k = kernel
    for _ in range(3):
        k = galerkin_kernel(k, VERTEX_RESTRICTION)
        coarse.append(k)
    return Multigrid(tau, int(get("steps")), int(get("levels")), int(get("pre")), int(get("post")),
                     int(get("cycles")), c, omega, kernel, tuple(coarse))


def operator_kernel(w: tuple[sp.Expr, ...], scale: sp.Expr) -> tuple[sp.Expr, ...]:
    """Interior kernel of ``I + scale D^T D``: ``delta + scale * autocorrelation(w)``, offsets
    -(K-1)..K-1."""
    k = len(w)
    ac = [sum(w[i] * w[i + d] for i in range(k - d)) for d in range(k)]
    return tuple(sp.nsimplify(scale * ac[abs(d)] + (1 if d == 0 else 0)) for d in range(1 - k, k))


def galerkin_kernel(a: tuple[sp.Expr, ...], r: tuple[sp.Expr, ...]) -> tuple[sp.Expr, ...]:
    """Interior kernel of ``R A P`` with ``P = 2 R^T`` and stride 2, exactly:
    ``(RAP)[I, I+e] = 2 sum_(k,l) r_k r_l a[2e + l - k]`` (a centred, odd length)."""
    b = (len(a) - 1) // 2
    kr = len(r)
    out = {}
    bc = (b + kr - 1) // 2
    for e in range(-bc, bc + 1):
        tot = sp.Integer(0)
        for k in range(kr):
            for j in range(kr):
                d = 2 * e + j - k
                if -b <= d <= b:
                    tot += 2 * r[k] * r[j] * a[d + b]
        out[e] = tot
    while bc > 0 and out[bc] == 0 and out[-bc] == 0:
        bc -= 1
    return tuple(sp.nsimplify(out[e]) for e in range(-bc, bc + 1))


@dataclass(frozen=True)
class LearnedBank:
    """A trainable stable filter-bank network (docs/theory.md §13): ``steps`` blocks

        u <- u - tau sum_k W_k^T Phi_k(W_k u),    k = 1..filters,

    each with its own learned bank W (``filters`` stencils of ``size`` taps, ``size x size`` in
    2D, zero padding: the dirichlet boundary) and ``tau = theta 2 / (L B2(W))``, theta < 1, so
    ``tau L ||W||^2 < 2`` for every parameter value.  ``Phi(s) = s scale g(s^2)``: with
    ``learned_g`` g is ``L sigmoid`` of a ``knots``-point radial-basis expansion on [0, s_max]
    (values in [0, L] for every parameter value); otherwise Phi is the spec's fixed flux
    (``Architecture.flux``), its bound L derived by the stability pass."""

    steps: int
    size: int
    filters: int
    dim: int
    learned_g: bool
    knots: int = 16
    L: sp.Expr = sp.Integer(1)
    s_max: sp.Expr = sp.Integer(3)
    scale: sp.Expr = sp.Integer(1)


def lower_learned(model: Model) -> Architecture:
    """A spec with ``stencil learned(...)`` -> an Architecture whose scheme is a
    :class:`LearnedBank` (no fixed stencils; the flux op tree only for a fixed diffusivity)."""
    from .analyse import LEARNED_G

    ch = model.learned
    flux = None
    scale = sp.Integer(1)
    if ch.diffusivity is None:
        flux = lower_flux(model)
    else:
        scale = sp.simplify(model.flux_value / (LEARNED_G(S ** 2) * S))
        if not (scale.is_number and scale.is_extended_real and scale > 0):
            raise model.error(f"the learned diffusivity must enter the flux as c * s * "
                              f"{ch.diffusivity}(s^2) with a constant c > 0; found Phi(s) = "
                              f"{show(model.flux_value)}", "equation",
                              f"dt(u) = dx({ch.diffusivity}(dx(u)^2) * dx(u)) or "
                              f"div({ch.diffusivity}(norm(grad(u))^2) * grad(u))")
    scheme = LearnedBank(int(model.setting("steps")), ch.size, ch.filters, model.ndim,
                         ch.diffusivity is not None, ch.knots, ch.L, ch.s_max, scale)
    return Architecture(
        name=model.name, class_name=class_name(model.name), dims=model.dims, order=model.order,
        stencils=(), flux=flux, scheme=scheme, equation_text=model.equation_text, size=model.size)


def lower_operator(model: Model) -> Architecture:
    """The operator model's architecture: its terms stay as recognised (each family lowers its
    own term when the network is built); the scheme is checked against what the operator
    networks build (docs/theory.md §3-5, §11)."""
    spec = model.operator
    kind = model.scheme
    reaction = not spec.reaction.empty
    if kind == "multigrid":
        raise model.error("the multigrid U-net is built for linear scalar diffusion only", "scheme",
                          "scheme explicit, fed, fsi or implicit(solver = cg)")
    if reaction and spec.context.dirichlet_value is not None:
        raise model.error("a boundary value with a reaction or data term: the network evolves u - b "
                          "(b the boundary value), which changes a reaction's meaning", "boundary",
                          "boundary dirichlet (value 0), or no reaction term")
    if kind in ("fed", "fsi") and reaction:
        raise model.error(f"the {kind} scheme's guarantee is for a pure diffusion operator, and this "
                          f"equation has a reaction part ({spec.reaction.text})", "scheme",
                          "scheme explicit(...) or implicit(solver = cg, ...)")
    if kind == "implicit" and model.setting("solver") != "cg":
        raise model.error(f"the operator model's implicit steps are solved by CG, not "
                          f"{model.setting('solver')}", "solver", "solver = cg")
    if kind == "implicit" and spec.reaction.nonlinear is not None:
        raise model.error("an implicit step needs a linear reaction part (the nonlinear "
                          f"{spec.reaction.text} has none)", "scheme", "scheme explicit(...)")
    scheme = (lower_scheme(model) if kind != "implicit" else
              Implicit(model.setting("tau"), int(model.setting("steps")), "cg",
                       int(model.setting("iterations")), sp.Integer(1)))
    return Architecture(
        name=model.name, class_name=class_name(model.name), dims=model.dims, order=1,
        stencils=(), flux=None, scheme=scheme, equation_text=model.equation_text,
        size=model.size, operator=spec)


def lower(model: Model) -> Architecture:
    """Model -> Architecture (raises PdeError for what cannot be built yet)."""
    if model.learned is not None:
        return lower_learned(model)
    if model.operator is not None:
        return lower_operator(model)
    if model.ndim == 2 and model.order != 1:  # the 2D recogniser only builds m = 1; keep it honest
        raise model.error("2D fields support second-order diffusion only", "field", "field u(x)")
    return Architecture(
        name=model.name, class_name=class_name(model.name), dims=model.dims, order=model.order,
        stencils=lower_stencils(model), flux=lower_flux(model), scheme=lower_scheme(model),
        equation_text=model.equation_text, size=model.size,
    )


def min_points(arch: Architecture) -> int:
    """The fewest grid points a network input may have along every axis: a valid correlation
    (neumann) needs K points; the padded ones (periodic, dirichlet) one."""
    # a learned bank has no fixed stencils: zero padding, one point suffices
    return max((st.stencil.size if st.boundary == "neumann" else 1 for st in arch.stencils),
               default=1)
