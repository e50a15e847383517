"""Stage 5: (Model, Architecture) -> :class:`StabilityReport`, a derived bound and its reasoning.

For the explicit scheme (docs/theory.md §1): with the same D and its exact transpose,

    0 <= Phi(s)/s <= L for all s != 0   and   0 < tau <= 2 / (L ||D||^2)
    =>  ||u - tau D^T Phi(D u)||_2 <= ||u||_2  for every u,

because the step is ``(I - tau D^T G D) u`` with ``G = diag(Phi(Du)/Du)`` in [0, L].  ``L`` and the
sign of ``Phi(s)/s`` are derived symbolically (critical points and the limits at 0 and infinity,
on s > 0 and s < 0 separately), and ``||D||^2`` is bounded by the symbol's supremum, computed
exactly.  Every symbolic answer is cross-checked on a dense sample; any doubt, error or time-out
gives the verdict "cannot prove", never "stable".

Every scheme's proof also needs the network to compute what the mathematics assumes
(:func:`domain_checks`): Phi real and finite for every real s (decided symbolically; a point
where it is not makes the verdict "not stable"), the frozen diffusivity Phi(s)/s with a finite
limit at s = 0 where the network evaluates it, and the op trees the network evaluates finite in
float32 and float64 over the whole range of each (evaluated with NumPy; a failure makes the
verdict "cannot prove", with the dtype and the smallest |D u| where it fails), and the step sizes
finite in both dtypes (:func:`step_check`: a param that is 1e-160 in float64 is 0 in float32
while tau ~ 1/L is inf there, and the step computes 0 * inf = NaN).

``pde2net check --json`` (:meth:`StabilityReport.to_dict`) has the same keys for every scheme,
null where a quantity does not apply:

- ``name``, ``scheme``, ``order`` (m), ``flux`` (Phi), ``stencil``, ``boundary``, ``h`` (a list
  in 2D); ``L`` (sup Phi(s)/s), ``norm_D_sq`` (the bound on ||D||^2), ``tau`` (the step size;
  ``tau_max`` for FED), ``tau_max`` (the derived bound, rounded down), ``bound_expr`` (it as a
  formula); ``verdict`` ("stable" | "not stable" | "cannot prove"), ``stable``, ``reason``,
  ``guarantee`` ("proof" | "observed" | "none"), ``statement``, ``unconditional``;
  ``hypotheses`` (a list of {name, holds (true/false/null), detail}); ``exact`` (exact values
  as text);
- ``steps``: time steps of the network's outer loop (cycles for FED/FSI, what ``run --steps``
  sets); ``stopping_time``: the total diffusion time;
- ``max_min_principle`` (explicit, m = 1 with a two-point stencil in 1D): tau <= h^2/(2L);
- FED/FSI: ``cycle_length``, ``cycles``, ``update`` ("cycle" | "step"), ``cycle_stopping_time``,
  ``stopping_time_formula``, ``step_sizes`` (one cycle's, in the order applied),
  ``largest_step``; ``step_order`` ("Leja", FED); ``alphas`` (FSI extrapolation weights);
- implicit: ``solver`` ("cg" | "jacobi" | "fixed_point"), ``iterations``, ``start``; Jacobi:
  ``omega``, ``jacobi_omega_limit``, ``jacobi_condition``, ``jacobi_converges``; fixed point:
  ``lipschitz``, ``fixed_point_condition``, ``fixed_point_limit``, ``fixed_point_converges``;
- multigrid: ``levels``, ``pre``, ``post``, ``cycles``, ``smoother``, ``multigrid_N``,
  ``multigrid_N_from``, ``coarse_kernels``, ``convergence_factor``, ``convergence_factor_note``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import sympy as sp
from sympy.calculus.util import continuous_domain, function_range

from . import exprs
from .analyse import S, Model
from .limits import SYMBOLIC_SECONDS, SymbolicTimeout, time_limit  # re-exported
from .lower import (FED, FLUX_VAR, FSI, RADIAL_VAR, Architecture, Explicit, Implicit, Multigrid,
                    boundary_text)

if TYPE_CHECKING:  # NumPy is imported by the floating-point check only
    import numpy as np

_T = sp.Symbol("t", positive=True)


# ------------------------------------------------------------------------- flux facts
@dataclass(frozen=True)
class FluxFacts:
    """What is proven about ``r(s) = Phi(s)/s``: sup (``L``), inf, and the status of both."""

    status: str  # "ok" | "negative" | "unbounded" | "unknown"
    L: Optional[sp.Expr]
    inf: Optional[sp.Expr]
    detail: str


def _ratio_branches(phi: sp.Expr) -> list[tuple[str, sp.Expr]]:
    """r(t) on s = t > 0 and on s = -t < 0 (one branch when r is even)."""
    r = sp.cancel(phi / S) if phi.is_rational_function(S) else phi / S
    pos, neg = r.xreplace({S: _T}), r.xreplace({S: -_T})
    if pos == neg or sp.simplify(pos - neg) == 0:
        return [("s != 0", pos)]
    return [("s > 0", pos), ("s < 0", neg)]


def _extremum(fn: Callable, expr: sp.Expr) -> sp.Expr:
    return _closed_form(fn(expr, _T, sp.Interval.open(0, sp.oo)), expr)


def _closed_form(v: Optional[sp.Expr], expr: sp.Expr) -> sp.Expr:
    if v is None or v.has(sp.nan, sp.zoo) or (not v.is_number and v not in (sp.oo, -sp.oo)):
        raise ValueError(f"no closed form for the extremum of {expr}")
    return sp.nsimplify(v) if v.is_Float else v


def _extrema(expr: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """``(inf, sup)`` of ``expr(t)`` over ``t > 0``: what sympy's ``minimum`` and ``maximum`` return
    (each is ``function_range(...).inf / .sup``), from one range computation instead of two."""
    rng = _range_positive(expr)
    return _closed_form(rng.inf, expr), _closed_form(rng.sup, expr)


def _range_positive(expr: sp.Expr) -> sp.Set:
    """sympy's ``function_range(expr, t, (0, oo))``.

    Its first step, ``periodicity``, simplifies the expression (and so imports sympy.physics,
    ~0.5 s) and can only find a period when a trigonometric function occurs.  Without one, the
    remaining steps run directly (:func:`_aperiodic_range`, the same sympy calls in the same
    order); if they fail, sympy's own function runs, so nothing provable is lost.
    """
    domain = sp.Interval.open(0, sp.oo)
    if not expr.has(sp.sin, sp.cos, sp.tan, sp.cot, sp.sec, sp.csc):
        try:
            return _aperiodic_range(expr, domain)
        except SymbolicTimeout:
            raise
        except Exception:  # noqa: BLE001 - fall back to the complete routine below
            pass
    return function_range(expr, _T, domain)


def _aperiodic_range(f: sp.Expr, domain: sp.Interval) -> sp.Set:
    """``function_range`` (sympy 1.12-1.14) after its periodicity step: on each interval where f is
    continuous, the values at closed ends, the one-sided limits at open ends (singularities
    included) and the values at the critical points (all of them: a finite solveset)."""
    intervals = continuous_domain(f, _T, domain)
    parts = intervals.args if isinstance(intervals, sp.Union) else (intervals,)
    out = sp.S.EmptySet
    for interval in parts:
        if isinstance(interval, sp.FiniteSet):
            out += sp.FiniteSet(*(f.subs(_T, p) for p in interval if p in domain))
            continue
        if not isinstance(interval, sp.Interval):
            raise NotImplementedError(f"no range of {f} on {interval}")
        vals, limits = sp.S.EmptySet, sp.S.EmptySet
        for is_open, point, direction in ((interval.left_open, interval.inf, "+"),
                                          (interval.right_open, interval.sup, "-")):
            if is_open:
                limits += sp.FiniteSet(sp.limit(f, _T, point, direction))
                vals += limits
            else:
                vals += sp.FiniteSet(f.subs(_T, point))
        critical = sp.solveset(f.diff(_T), _T, interval)
        if critical is not sp.S.EmptySet and not isinstance(critical, sp.FiniteSet):  # ImageSet, ...
            raise NotImplementedError(f"critical points of {f} not found as a finite set")
        for point in critical:
            vals += sp.FiniteSet(f.subs(_T, point))
        left_open = limits is not sp.S.EmptySet and limits.inf == vals.inf
        right_open = limits is not sp.S.EmptySet and limits.sup == vals.sup
        out += sp.Interval(vals.inf, vals.sup, left_open, right_open)
    return out


#: where Phi(s)/s and Phi' are sampled: 4001 points log-spaced on [1e-8, 1e8] and 4001 evenly
#: spaced on [1e-3, 10] (plain floats: check does not import NumPy)
_SAMPLES = tuple([10.0 ** (-8 + 16 * i / 4000) for i in range(4001)]
                 + [1e-3 + (10 - 1e-3) * i / 4000 for i in range(4001)])


def _check_sampled(expr: sp.Expr, lo: sp.Expr, hi: sp.Expr) -> bool:
    """Does a dense sample of expr (a function of t > 0) stay inside [lo, hi] (relative slack
    1e-9)?  Non-finite samples are skipped; no finite sample at all is a failure."""
    f = exprs.scalar_function(exprs.lower_expr(expr, {_T: "t"}), "t")
    vals = [v for v in map(f, _SAMPLES) if math.isfinite(v)]
    if not vals:
        return False
    ok = True
    if hi != sp.oo:
        h = float(hi)
        ok &= max(vals) <= h + 1e-9 * max(1.0, abs(h))
    if lo != -sp.oo:
        lv = float(lo)
        ok &= min(vals) >= lv - 1e-9 * max(1.0, abs(lv))
    return ok


@functools.lru_cache(maxsize=128)
def flux_facts(phi: sp.Expr, seconds: float = SYMBOLIC_SECONDS) -> FluxFacts:
    """Derives ``L = sup_(s != 0) Phi(s)/s`` and whether ``Phi(s)/s >= 0`` (params substituted)."""
    try:
        with time_limit(seconds):
            sups, infs = [], []
            for where, r in _ratio_branches(phi):
                lo, hi = _extrema(r)
                if not _check_sampled(r, lo, hi):
                    return FluxFacts("unknown", None, None,
                                     f"sympy's extrema of Phi(s)/s on {where} disagree with a numeric sample")
                sups.append(hi)
                infs.append(lo)
                # is_negative is False for -oo (sympy keeps infinities out of it): extended_
                if lo.is_extended_negative:
                    return FluxFacts("negative", None, lo, f"Phi(s)/s < 0 {_negative_region(r, where)}")
                if not lo.is_extended_nonnegative:  # a sign sympy cannot decide is no proof
                    return FluxFacts("unknown", None, None,
                                     f"the sign of inf Phi(s)/s = {lo} on {where} is undecided")
            L, inf = sp.Max(*sups), sp.Min(*infs)
    except SymbolicTimeout:
        return FluxFacts("unknown", None, None, f"symbolic analysis of Phi(s)/s exceeded {seconds:g} s")
    except Exception as exc:  # noqa: BLE001 - any sympy failure means "cannot prove"
        return FluxFacts("unknown", None, None, f"sympy could not bound Phi(s)/s ({type(exc).__name__})")
    if L == sp.oo:
        return FluxFacts("unbounded", None, inf, "sup Phi(s)/s = oo")
    return FluxFacts("ok", L, inf, "")


def _negative_region(r: sp.Expr, where: str) -> str:
    """Where r < 0, in words (best effort; the verdict does not depend on it)."""
    try:
        region = sp.solveset(r < 0, _T, sp.Interval.open(0, sp.oo))
        if isinstance(region, sp.ConditionSet):
            raise ValueError
        text = str(region).replace("Interval.open", "").replace("Interval", "")
        side = "|s|" if where == "s != 0" else ("s" if where == "s > 0" else "-s")
        return f"for {side} in {text}"
    except Exception:  # noqa: BLE001
        return f"somewhere on {where}"


@functools.lru_cache(maxsize=128)
def lipschitz(phi: sp.Expr, seconds: float = SYMBOLIC_SECONDS) -> Optional[sp.Expr]:
    """``Lip = sup |Phi'(s)|`` (docs/theory.md §8), or None when it is unbounded or not derivable."""
    try:
        with time_limit(seconds):
            d = sp.diff(phi, S)
            vals = []
            for s_of_t in (_T, -_T):
                dt = d.xreplace({S: s_of_t})
                lo, hi = _extrema(dt)
                if not _check_sampled(dt, lo, hi):
                    return None
                vals += [hi, -lo]
            lip = sp.Max(*vals)
    except Exception:  # noqa: BLE001 - includes SymbolicTimeout
        return None
    return None if lip == sp.oo else sp.nsimplify(lip) if lip.is_Float else lip


# ----------------------------------------------------------------------------- the report
@dataclass
class StabilityReport:
    """The derived guarantee, in the shape of ``pde2net check --json``."""

    name: str
    scheme: str
    order: int
    L: Optional[float]
    norm_D_sq: Optional[float]
    tau: float
    tau_max: Optional[float]
    stable: bool
    reason: str
    bound_expr: str
    verdict: str  # "stable" | "not stable" | "cannot prove"
    guarantee: str  # "proof" | "observed" | "none"
    statement: str  # which statement of docs/theory.md it rests on
    unconditional: bool = False
    flux: str = ""
    stencil: str = ""
    boundary: str = ""
    h: Any = 1.0
    hypotheses: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    exact: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as ``check --json`` prints it: the fields, then every key of
        :data:`SCHEME_KEYS` (null where the scheme has no such quantity)."""
        d = asdict(self)
        extra = d.pop("extra")
        d.update(dict.fromkeys(SCHEME_KEYS))
        d.update(extra)
        return d


#: the scheme-specific keys of ``pde2net check --json``, present in every report (see the module
#: docstring for their meanings)
SCHEME_KEYS = (
    "steps", "stopping_time", "max_min_principle",
    "cycle_length", "cycles", "update", "cycle_stopping_time", "stopping_time_formula",
    "step_sizes", "step_order", "largest_step", "alphas",
    "solver", "iterations", "start", "omega", "jacobi_omega_limit", "jacobi_condition",
    "jacobi_converges", "lipschitz", "fixed_point_condition", "fixed_point_limit",
    "fixed_point_converges",
    "levels", "pre", "post", "smoother", "multigrid_N", "multigrid_N_from", "coarse_kernels",
    "convergence_factor", "convergence_factor_note",
)


def float_down(x: sp.Expr) -> float:
    """The largest float not above the exact value (a reported bound must stay a bound)."""
    f = float(sp.N(x, 40))
    return math.nextafter(f, -math.inf) if sp.N(sp.Float(f, 40) - x, 40) > 0 else f


def _fmt(x: Optional[sp.Expr]) -> Optional[str]:
    return None if x is None else str(x)


def _le(a: sp.Expr, b: sp.Expr) -> Optional[bool]:
    """Exact ``a <= b`` for real algebraic constants; None only if undecidable numerically."""
    d = sp.N(b - a, 60)
    if d > sp.Float(1e-45):
        return True
    if d < -sp.Float(1e-45):
        return False
    return True if sp.simplify(b - a) == 0 else None


def norm_bound(arch: Architecture) -> Optional[sp.Expr]:
    """``||D||^2 <= sum over axes of the symbol bound`` (exact; None if not derivable)."""
    parts = [st.stencil.symbol_sq_max() for st in arch.stencils]
    if any(p is None for p in parts):
        return None
    total = sum(parts)
    # a consistent stencil is nonzero, so a bound that is not a positive number is wrong
    return total if positive_number(total) else None


def positive_number(x: Optional[sp.Expr]) -> bool:
    """Is x a finite real number > 0 (False for None, nan, zoo, oo and complex values)?"""
    try:
        v = complex(sp.N(x, 30))
    except (TypeError, ValueError, AttributeError):
        return False
    return v.imag == 0 and math.isfinite(v.real) and v.real > 0


def _symbolic_bound(arch: Architecture) -> str:
    """The bound as a formula in h and L, e.g. ``h**2/(2*L)``."""
    L, h = sp.Symbol("L", positive=True), sp.Symbol("h", positive=True)
    st = arch.stencils[0].stencil
    p = st.symbol_sq_max()
    if p is None:
        return "2/(L*||D||^2)"
    per_h = p * st.h ** (2 * st.order)  # the bound for h = 1
    if len(arch.stencils) == 2 and arch.stencils[1].stencil.h != st.h:
        return _symbolic_bound_2d(arch)
    bound = 2 / (L * len(arch.stencils) * per_h / h ** (2 * st.order))
    # a rational per_h is already in canonical form; simplify (~0.3 s on first use) only radicals
    return str(bound if per_h.is_Rational else sp.simplify(bound))


def _symbolic_bound_2d(arch: Architecture) -> str:
    """``2 / (L (p_x/hx^2 + p_y/hy^2))`` for a 2D gradient with cells hx x hy (docs/theory.md §2: the
    squared norm of the stacked gradient is at most the sum of the per-axis symbol bounds)."""
    L = sp.Symbol("L", positive=True)
    total = sp.Integer(0)
    for ir, name in zip(arch.stencils, ("hx", "hy")):
        st = ir.stencil
        p = st.symbol_sq_max()
        if p is None:
            return "2/(L*||D||^2)"
        total += p * st.h ** (2 * st.order) / sp.Symbol(name, positive=True) ** (2 * st.order)
    return str(2 / (L * total))


def analyse(model: Model, arch: Architecture) -> StabilityReport:
    """The stability report for the model's scheme, with the domain hypotheses every proof needs:
    Phi (and the frozen Phi(s)/s where the network freezes it) real and finite for every real s,
    and the network's op trees finite in float32 and float64 (:func:`domain_checks`)."""
    rule = _RULES.get(type(arch.scheme))
    if rule is None:
        raise KeyError(f"no stability rule registered for {type(arch.scheme).__name__} "
                       f"(import pde2net.scheme_stability, or the module of that scheme)")
    return domain_checks(model, arch, rule(model, arch))


def _base(model: Model, arch: Architecture, facts: FluxFacts, nb: Optional[sp.Expr]) -> dict:
    st = arch.stencils[0]
    return dict(
        name=model.name, scheme=model.scheme, order=model.order,
        L=None if facts.L is None else float(facts.L), norm_D_sq=None if nb is None else float(nb),
        flux=f"Phi(s) = {arch.flux.text}", stencil=st.stencil.describe(), boundary=boundary_text(arch.stencils),
        h=float(model.grid[0]) if model.ndim == 1 else [float(g) for g in model.grid],
        bound_expr=_symbolic_bound(arch),
    )


def _flux_hypotheses(facts: FluxFacts) -> list[dict[str, Any]]:
    return [
        {"name": "0 <= Phi(s)/s", "holds": None if facts.status == "unknown" else facts.status != "negative",
         "detail": facts.detail or f"inf Phi(s)/s = {facts.inf}"},
        {"name": "Phi(s)/s <= L < oo", "holds": None if facts.status == "unknown"
         else facts.status not in ("unbounded",), "detail": f"L = {facts.L}" if facts.L is not None else facts.detail},
    ]


def _explicit(model: Model, arch: Architecture) -> StabilityReport:
    sch: Explicit = arch.scheme
    facts = flux_facts(model.flux_value)
    nb = norm_bound(arch)
    base = _base(model, arch, facts, nb)
    tau = sch.tau
    hyps = _flux_hypotheses(facts)
    statement = "docs/theory.md §1: Euclidean stability of the explicit scheme"
    extra: dict[str, Any] = {"steps": sch.steps, "stopping_time": float(tau * sch.steps)}
    exact = {"tau": str(tau), "L": _fmt(facts.L), "norm_D_sq": _fmt(nb)}

    def report(stable, verdict, reason, tau_max=None, guarantee="none", unconditional=False):
        if tau_max is not None:
            exact["tau_max"] = str(tau_max)
        return StabilityReport(
            **base, tau=float(tau), tau_max=None if tau_max is None else float_down(tau_max),
            stable=stable, reason=reason, verdict=verdict, guarantee=guarantee,
            statement=statement, unconditional=unconditional, hypotheses=hyps, extra=extra,
            exact=exact,
        )

    if facts.status == "negative":
        return report(False, "not stable",
                      f"backward diffusion (negative diffusivity: {facts.detail}); the proof needs "
                      f"Phi(s)/s >= 0, and with a sign change a ramp grows for every tau > 0 (docs/theory.md §1)")
    if facts.status == "unbounded":
        return report(False, "not stable",
                      f"unbounded diffusivity: {facts.detail}, so no tau satisfies tau <= 2/(L ||D||^2)")
    if facts.status == "unknown":
        return report(False, "cannot prove", f"cannot prove: {facts.detail}")
    if not positive_number(nb):
        return report(False, "cannot prove", "cannot prove: no exact bound on ||D||^2 for this stencil")
    if facts.L == 0:
        return report(True, "stable", "Phi = 0: every step is the identity", None, "proof", True)
    tau_max = sp.nsimplify(2 / (facts.L * nb)) if (2 / (facts.L * nb)).is_Float else 2 / (facts.L * nb)
    hyps.append({"name": "tau <= 2/(L ||D||^2)", "holds": None, "detail": f"tau = {tau}, bound = {tau_max}"})
    if model.order == 1 and model.ndim == 1 and arch.stencils[0].stencil.size == 2:  # docs/theory.md §1 is 1D
        extra["max_min_principle"] = bool(_le(tau, arch.stencils[0].stencil.h ** 2 / (2 * facts.L)))
    ok = _le(tau, tau_max)
    hyps[-1]["holds"] = ok
    if ok is None:
        return report(False, "cannot prove", "cannot prove: tau is within 1e-45 of the bound", tau_max)
    if not ok:
        return report(False, "not stable",
                      f"tau = {float(tau):.6g} exceeds the bound tau_max = 2/(L ||D||^2) = "
                      f"{float(tau_max):.6g} (L = {facts.L}, ||D||^2 <= {nb}); at tau above the bound "
                      f"small multiples of the top singular vector grow (docs/theory.md §1)", tau_max)
    return report(True, "stable",
                  f"0 <= Phi(s)/s <= L = {facts.L} and tau = {float(tau):.6g} <= 2/(L ||D||^2) = "
                  f"{float(tau_max):.6g} with ||D||^2 <= {nb}: ||u^(k+1)|| <= ||u^k|| for every input "
                  f"(docs/theory.md §1)", tau_max, "proof")


# ------------------------------------------------------------ where the flux is real and finite
@dataclass(frozen=True)
class DomainFacts:
    """Whether an expression of s is real and finite: proven (True), provably not (False, with a
    point where it fails) or undecided (None), and the reason in words."""

    holds: Optional[bool]
    detail: str
    removable_at_zero: bool = False  # undefined at s = 0 as a formula, with a finite limit there


_X = sp.Symbol("x", real=True)


def _set_text(region: sp.Set) -> str:
    return str(region).replace("Interval.open", "").replace("Interval.Ropen", "") \
        .replace("Interval.Lopen", "").replace("Interval", "").replace("Union", "union")


def _witness(region: sp.Set) -> Optional[sp.Expr]:
    """A rational point of a set of reals (None if sympy cannot name one)."""
    parts = region.args if isinstance(region, sp.Union) else (region,)
    for part in parts:
        if isinstance(part, sp.FiniteSet) and part.args:
            return part.args[0]
        if isinstance(part, sp.Interval):
            a, b = part.inf, part.sup
            if a == -sp.oo and b == sp.oo:
                return sp.Integer(0)
            if a == -sp.oo:
                return sp.floor(b) - 1
            if b == sp.oo:
                return sp.ceiling(a) + 1
            mid = (a + b) / 2
            return mid if mid.is_number else None
    return None


def _failure_kind(value: sp.Expr) -> Optional[str]:
    """'infinite', 'not real', 'undefined' or None when the value is a finite real number."""
    if value.has(sp.nan):
        return "undefined (0/0 or 0*oo)"
    if value.has(sp.zoo, sp.oo, -sp.oo):
        return "infinite"
    v = complex(sp.N(value, 30))
    if not (math.isfinite(v.real) and math.isfinite(v.imag)):
        return "infinite"
    return "not real" if abs(v.imag) > 1e-25 * max(1.0, abs(v.real)) else None


@functools.lru_cache(maxsize=128)
def real_everywhere(expr: sp.Expr, name: str = "Phi(s)",
                    seconds: float = SYMBOLIC_SECONDS) -> DomainFacts:
    """Is ``expr(s)`` real and finite for every real s?

    Every function the language emits is continuous where it is real and finite, so sympy's
    ``continuous_domain`` over the reals decides it: the whole line is a proof; any point left
    out (a pole, sqrt or log of a negative number, 0/0) is checked by evaluating the expression
    exactly there, and a failure at that point is reported as the verdict's reason.
    """
    f = expr.xreplace({S: _X})
    try:
        with time_limit(seconds):
            if not f.has(_X):
                kind = _failure_kind(f)
                return DomainFacts(kind is None, f"{name} = {f} is " + (kind or "a finite real constant"))
            dom = continuous_domain(f, _X, sp.S.Reals)
            if dom == sp.S.Reals:
                return DomainFacts(True, f"{name} is continuous (so real and finite) on the real line")
            bad = sp.Complement(sp.S.Reals, dom)
            if bad == sp.FiniteSet(0) and _removable_at_zero(f):
                # e.g. 1 - exp(-C / s^8): the formula is 0/0-free in IEEE arithmetic (exp(-inf)
                # = 0); the network's own value at s = +-0 is checked by float_check
                return DomainFacts(True, f"{name} is continuous on the real line except at s = 0, "
                                         f"where it has a finite limit (the network's value at "
                                         f"0 is checked in floating point)", True)
            point = _witness(bad)
            kind = None if point is None else _failure_kind(f.subs(_X, point))
            where = _set_text(bad)
            if kind is None:
                return DomainFacts(None, f"sympy excludes s in {where} from the domain of {name} "
                                         f"and no point of it was shown to fail")
            return DomainFacts(False, f"{name} is {kind} at s = {point} (it is not real and finite "
                                      f"for s in {where})")
    except SymbolicTimeout:
        return DomainFacts(None, f"deciding where {name} is real exceeded {seconds:g} s")
    except Exception as exc:  # noqa: BLE001 - any sympy failure means "undecided"
        return DomainFacts(None, f"sympy could not decide where {name} is real ({type(exc).__name__})")


def _removable_at_zero(f: sp.Expr) -> bool:
    """Do both one-sided limits of f(x) at 0 exist, finite and equal?"""
    right, left = sp.limit(f, _X, 0, "+"), sp.limit(f, _X, 0, "-")
    ok = all(v.is_number and _failure_kind(v) is None and not v.has(sp.AccumBounds)
             for v in (right, left))
    return ok and sp.N(right - left, 40) == 0


@functools.lru_cache(maxsize=128)
def ratio_at_zero(phi: sp.Expr, seconds: float = SYMBOLIC_SECONDS) -> DomainFacts:
    """Does the frozen diffusivity ``g(s) = Phi(s)/s`` have a finite limit at s = 0 (the value the
    network's g takes there)?  Both one-sided limits, exactly; they must agree."""
    r = sp.cancel(phi / S) if phi.is_rational_function(S) else phi / S
    r = r.xreplace({S: _X})
    try:
        with time_limit(seconds):
            right, left = sp.limit(r, _X, 0, "+"), sp.limit(r, _X, 0, "-")
            for lim in (right, left):
                if lim.has(sp.oo, -sp.oo, sp.zoo):
                    return DomainFacts(False, f"Phi(s)/s -> {lim} as s -> 0: no finite g(0)")
                if not lim.is_number or lim.has(sp.nan, sp.AccumBounds) or _failure_kind(lim):
                    return DomainFacts(None, f"Phi(s)/s has no limit at s = 0 ({lim})")
            if sp.N(right - left, 40) != 0 and sp.simplify(right - left) != 0:
                return DomainFacts(None, f"Phi(s)/s has different one-sided limits at s = 0 "
                                         f"({left} and {right})")
            return DomainFacts(True, f"g(0) = lim Phi(s)/s = {right}")
    except SymbolicTimeout:
        return DomainFacts(None, f"the limit of Phi(s)/s at s = 0 exceeded {seconds:g} s")
    except Exception as exc:  # noqa: BLE001
        return DomainFacts(None, f"sympy could not find the limit of Phi(s)/s at 0 ({type(exc).__name__})")


# ------------------------------------------------------------------- the floating-point check
@dataclass(frozen=True)
class FloatFacts:
    """The op trees evaluated in one dtype over its whole range: finite everywhere, or the
    smallest magnitude found where one is not."""

    dtype: str
    ok: bool
    detail: str


#: magnitudes per decade of the log-spaced sweep from the smallest normal to the largest finite
FLOAT_SWEEP_PER_DECADE = 32
#: points of every magnitude sweep besides the log-spaced ones (near 0, and where fluxes bend)
_EXTRA_POINTS = (1e-8, 1e-4, 1e-2, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0)


def network_trees(arch: Architecture) -> list[tuple[str, exprs.Op, str]]:
    """(label, op tree, argument) for every op tree the scheme's network evaluates: the vector
    diffusivity g(s2) in 2D; Phi, and the frozen Phi(s)/s for FED, FSI and the lagged implicit
    solvers, in 1D; nothing for multigrid (it applies the exact linear coefficient)."""
    fl, sch = arch.flux, arch.scheme
    if isinstance(sch, Multigrid):
        return []
    if len(arch.stencils) == 2:
        return [("g(s2)", fl.radial_op, RADIAL_VAR)] if fl.radial_op is not None else []
    out = [("Phi(s)", fl.op, FLUX_VAR)]
    frozen = isinstance(sch, (FED, FSI)) or (isinstance(sch, Implicit) and sch.solver != "fixed_point")
    if frozen:
        out.append(("Phi(s)/s", fl.ratio_op, FLUX_VAR))
    return out



def float_sweep(dtype: Any, top: float) -> "np.ndarray":
    """Nonnegative magnitudes of ``dtype``: 0, the smallest subnormal, log-spaced magnitudes from
    the smallest normal to ``top`` (at most the largest finite value), and :data:`_EXTRA_POINTS`;
    sorted, in ``dtype``."""
    import numpy as np

    fi = np.finfo(dtype)
    top = min(float(top), float(fi.max))
    lo = float(fi.tiny)
    n = max(2, int(math.ceil((math.log10(top) - math.log10(lo)) * FLOAT_SWEEP_PER_DECADE)) + 1)
    with np.errstate(all="ignore"):
        mags = np.geomspace(lo, top, n)
        extra = [x for x in _EXTRA_POINTS if x <= top]
        pts = np.concatenate([[0.0, float(np.nextafter(dtype(0), dtype(1)))], mags, extra])
        out = np.unique(pts.astype(dtype))
    return out[out <= dtype(top)]


def evaluate_tree(op: exprs.Op, arg: str, values: "np.ndarray", params: dict[str, float],
                  dtype: Any) -> "np.ndarray":
    """The op tree at ``values`` in ``dtype`` with NumPy (params cast to ``dtype``, constants as
    Python floats, as the network does), always an array of the shape of ``values``; a value
    that raises is nan."""
    import numpy as np

    with np.errstate(all="ignore"):  # overflow in a cast or an operation is what we look for
        env = {name: np.asarray(v, dtype=dtype)[()] for name, v in params.items()}
        env[arg] = np.asarray(values, dtype=dtype)
        try:
            y = exprs.evaluate(op, env, exprs.LIBS["numpy"]())
            y = np.broadcast_to(np.asarray(y), np.shape(values))
            if np.iscomplexobj(y):
                y = np.where(np.imag(y) == 0, np.real(y), np.nan)
            return np.asarray(y, dtype=np.float64)
        except (ArithmeticError, ValueError, TypeError):
            return np.full(np.shape(values), np.nan)


def _finite_at(op, arg, mags, params, dtype, signed: bool) -> "np.ndarray":
    """Per magnitude: is the tree finite at +mag (and at -mag when ``signed``)?"""
    import numpy as np

    ok = np.isfinite(evaluate_tree(op, arg, mags, params, dtype))
    if signed:
        ok &= np.isfinite(evaluate_tree(op, arg, -mags, params, dtype))
    return ok


def _threshold(op, arg, params, dtype, good: float, bad: float, signed: bool) -> float:
    """Bisection (in float64, evaluated in ``dtype``) between a finite and a failing magnitude:
    the smallest failing magnitude it finds."""
    import numpy as np

    for _ in range(80):
        mid = math.sqrt(good * bad) if good > 0 else bad / 2
        if not good < mid < bad or dtype(mid) in (dtype(good), dtype(bad)):
            break
        if _finite_at(op, arg, np.array([mid]), params, dtype, signed)[0]:
            good = mid
        else:
            bad = mid
    return bad


def float_check(trees: list[tuple[str, exprs.Op, str]], params: dict[str, float], dtype: Any,
                L: float = 1.0) -> FloatFacts:
    """Evaluates every tree over the whole range of ``dtype``: Phi(s) for |s| up to
    ``max / (2 max(1, L))`` (beyond it L |s| itself overflows, in the network's D^T as well),
    Phi(s)/s for every finite s, g(s2) for s2 in [0, max] and s2 = inf (``vx^2 + vy^2``
    overflows to inf); both signs of s.  Non-finite anywhere: ``ok`` is False, with the tree,
    the kind of value and the smallest |D u| found where it happens."""
    import numpy as np

    dt = np.dtype(dtype).type
    name = np.dtype(dtype).name
    big = float(np.finfo(dt).max)
    covered = []
    for label, op, arg in trees:
        args = exprs.variables(op) - set(params)
        if len(args) > 1 or (args and args != {arg}):
            return FloatFacts(name, False, f"the op tree of {label} has unexpected variables {sorted(args)}")
        signed = arg not in (RADIAL_VAR, "s2")  # g(s2) takes |v|^2 >= 0; Phi and Phi/s take both signs
        top = big / (2 * max(1.0, L)) if label == "Phi(s)" else big
        mags = float_sweep(dt, top)
        if not signed:
            mags = np.concatenate([mags, np.array([np.inf], dtype=dt)])
        ok = _finite_at(op, arg, mags, params, dt, signed)
        where = f"+-s, |s| <= {float(mags[-1]):.3g}" if signed else "s2 in [0, inf]"
        covered.append(f"{label} for {where}")
        if ok.all():
            if label == "Phi(s)":
                at0 = evaluate_tree(op, arg, np.array([0.0, -0.0], dtype=dt), params, dt)
                if (at0 != 0).any():  # Phi(s) = g(s) s needs Phi(0) = 0
                    return FloatFacts(name, False, f"in {name} the flux Phi(0) = {at0[0]:.3g}, "
                                                   f"not 0 (the proof needs Phi(s) = g(s) s)")
            continue
        i = int(np.argmin(ok))
        first = float(mags[i])
        if i > 0 and ok[i - 1] and math.isfinite(first):
            first = _threshold(op, arg, params, dt, float(mags[i - 1]), first, signed)
        vals = evaluate_tree(op, arg, np.array([first, -first] if signed else [first], dtype=dt),
                             params, dt)
        kind = "NaN" if np.isnan(vals).any() else "infinite"
        du = first if signed else math.sqrt(first)
        at = ("at D u = 0" if first == 0 else f"for |D u| >= {du:.2g}"
              if i > 0 and ok[i - 1] else f"at |D u| = {du:.2g}")
        note = " (|D u|^2 overflows to inf)" if not signed and math.isinf(first) else ""
        return FloatFacts(name, False, f"in {name} the {'flux' if label == 'Phi(s)' else 'diffusivity'} "
                                       f"{label} is {kind} {at}{note}")
    n = len(float_sweep(dt, big))
    return FloatFacts(name, True, f"finite in {name} at 0, -0, the smallest subnormal and {n} "
                                  f"magnitudes up to the largest finite value: "
                                  + "; ".join(covered))


def _at_zero_as_computed(phi: DomainFacts, arch: Architecture) -> DomainFacts:
    """A formula undefined at s = 0 with a finite limit there (1 - exp(-C/s^8)) is fine when IEEE
    arithmetic gives a finite value at 0 (exp(-inf) = 0), and provably not when it gives NaN or
    inf (s log(s^2) = 0 * -inf): the 1D network evaluates the formula, not its limit."""
    if not phi.removable_at_zero or len(arch.stencils) != 1:
        return phi
    import numpy as np

    at0 = evaluate_tree(arch.flux.op, _arg_of(arch.flux.op, arch.flux.params, FLUX_VAR),
                        np.array([0.0, -0.0]), arch.flux.params, np.float64)
    if np.isfinite(at0).all():
        return phi
    return DomainFacts(False, f"Phi(s) is undefined at s = 0 (0/0, 0*oo or log 0 in the formula, "
                              f"although its limit is finite): the network computes "
                              f"{at0[0]} there in float64")


def _arg_of(op: exprs.Op, params: dict[str, float], default: str) -> str:
    """The op tree's argument: its one variable that is not a param (``default`` if none)."""
    args = sorted(exprs.variables(op) - set(params))
    return args[0] if len(args) == 1 else default


# margin for the products the solvers form from the step (inner products over the grid, the
# residual 1 + tau L ||D||^2): the step passes when tau L ||D||^2 stays 2^-24 below the dtype's max
STEP_PRODUCT_MARGIN = 2.0 ** -24


def step_constants(arch: Architecture) -> list[tuple[str, float]]:
    """(label, value) of every step size the scheme's network multiplies D^T by (FED: each
    tau_i), as float64 numbers (inf where the exact value leaves float64)."""
    sch = arch.scheme
    taus = [("tau_i", t) for t in sch.taus] if isinstance(sch, FED) else [("tau", sch.tau)]
    out = []
    for label, t in taus:
        try:
            out.append((label, float(t)))
        except (OverflowError, TypeError, ValueError):
            out.append((label, math.inf))
    return out


def step_check(arch: Architecture, dtype: Any, L: float,
               norm_d_sq: Optional[float]) -> Optional[str]:
    """Why the network's step sizes are not usable in ``dtype``, or None: each tau must be finite
    there, and so must ``tau * max |w|`` (the scaled weights of ``tau D^T``) and ``tau L ||D||^2``
    with a margin (the implicit solvers form ``(I + tau D^T G D) p`` and inner products of it).
    A param that is finite in float64 but not in float32 (1e-160 as a diffusivity: 0, and
    tau = 1e159: inf) gives 0 * inf = NaN in the float32 network."""
    import numpy as np

    fi = np.finfo(dtype)
    big = float(fi.max)
    wmax = max((abs(w) for st in arch.stencils for w in st.weights), default=0.0)
    nd = norm_d_sq if norm_d_sq is not None and math.isfinite(norm_d_sq) else wmax ** 2 * 4
    for label, t in step_constants(arch):
        if not math.isfinite(t) or t > big:
            return f"the step {label} = {t:.3g} is not finite in {fi.dtype}"
        if t * max(1.0, wmax) > big:
            return f"the scaled weights {label} * w = {t * wmax:.3g} are not finite in {fi.dtype}"
        if t * max(1.0, L) * max(1.0, nd) > big * STEP_PRODUCT_MARGIN:
            return (f"{label} L ||D||^2 = {t * L * nd:.3g} is too close to the largest {fi.dtype} "
                    f"(the solver's products overflow)")
    sch = arch.scheme
    if isinstance(sch, Implicit) and sch.solver == "cg":
        kappa = 1.0 + float(sch.tau) * L * nd  # bound on the condition number of I + tau D^T G D
        if kappa * float(fi.eps) > CG_ROUNDING_LIMIT:
            return (f"CG's condition number bound 1 + tau L ||D||^2 = {kappa:.3g} is beyond what "
                    f"{fi.dtype} rounding covers (kappa eps <= 2^-4): CG's norm property holds in "
                    f"exact arithmetic, and at this kappa its float iterates lose orthogonality and "
                    f"can grow (docs/theory.md §14)")
    return None


#: CG's "never increases the norm" (docs/theory.md §5) is a statement about exact arithmetic; its
#: float iterates stay close to the exact ones only while kappa * eps is small.  At kappa ~ 1e28
#: in float32 the residual grew 1e6-fold in 4 iterations (found by the soundness property).
CG_ROUNDING_LIMIT = 2.0 ** -4


def domain_checks(model: Model, arch: Architecture, report: StabilityReport) -> StabilityReport:
    """Adds the hypotheses "Phi(s) is real and finite for every real s", "Phi(s)/s has a finite
    limit at 0" (where the network evaluates the frozen or radial diffusivity) and "the network's
    op trees are finite in float32 and float64" to the report.  A "stable" verdict stays only if
    all hold: a point where Phi is provably not real and finite makes it "not stable", anything
    undecided or a floating-point failure "cannot prove"; a "cannot prove" stays, with the reason
    added.  Multigrid evaluates no op tree (the float check is skipped)."""
    failures: list[tuple[str, str]] = []
    phi = _at_zero_as_computed(real_everywhere(model.flux_value), arch)
    report.hypotheses.append({"name": "Phi(s) real and finite", "holds": phi.holds,
                              "detail": phi.detail})
    if phi.holds is not True:
        failures.append(("not stable" if phi.holds is False else "cannot prove", phi.detail))
    trees = network_trees(arch)
    if any(label != "Phi(s)" for label, _, _ in trees):
        zero = ratio_at_zero(model.flux_value)
        report.hypotheses.append({"name": "g(0) = lim Phi(s)/s", "holds": zero.holds,
                                  "detail": zero.detail})
        if zero.holds is not True:
            failures.append(("cannot prove", zero.detail))
    if len(arch.stencils) == 2 and not trees:
        failures.append(("cannot prove", "the 2D flux has no radial diffusivity g(s2) to evaluate"))
    if trees:
        L = report.L if report.L is not None and math.isfinite(report.L) else 1.0
        for dtype in ("float32", "float64"):
            fc = float_check(trees, arch.flux.params, dtype, L)
            report.hypotheses.append({"name": f"op trees in {fc.dtype}", "holds": fc.ok,
                                      "detail": fc.detail})
            if not fc.ok:
                failures.append(("cannot prove", fc.detail))
    L = report.L if report.L is not None and math.isfinite(report.L) else 1.0
    for dtype in ("float32", "float64"):
        why = step_check(arch, dtype, L, report.norm_D_sq)
        ok_text = f"every step size and tau L ||D||^2 finite in {dtype}"
        report.hypotheses.append({"name": f"steps in {dtype}", "holds": why is None,
                                  "detail": why or ok_text})
        if why is not None:
            failures.append(("cannot prove", why))
    if not failures or report.verdict == "not stable":
        return report
    verdict = "not stable" if any(v == "not stable" for v, _ in failures) else "cannot prove"
    why = "; ".join(d for v, d in failures if v == verdict)
    if report.verdict == "cannot prove":  # already no proof: say why the flux fails, keep the verdict
        verdict = "cannot prove"
    if verdict == "not stable":
        reason = (f"the flux is not real and finite everywhere: {why}; the network computes NaN or "
                  f"inf for inputs with such differences")
    elif report.verdict == "stable":
        reason = f"cannot prove: {why} (the bound above holds only where the network is finite)"
    else:
        reason = f"{report.reason}; also: {why}"
    report.verdict, report.stable, report.reason = verdict, False, reason
    report.guarantee = "none" if report.guarantee == "proof" else report.guarantee
    return report


_RULES: dict[type, Callable[[Model, Architecture], StabilityReport]] = {Explicit: _explicit}


def register_rule(scheme_type: type, rule: Callable[[Model, Architecture], StabilityReport]) -> None:
    """Registers the stability rule of a scheme IR type.  The rules of FED, FSI, implicit and
    multigrid live in :mod:`pde2net.scheme_stability`, which imports this module and registers
    them when it is imported (the pipeline, :mod:`pde2net.program`, imports it): imports run one
    way, and a new scheme is one module plus its registration."""
    _RULES[scheme_type] = rule


# ---------------------------------------------------------------- learned filter banks
#: theta < THETA_MAX in the parametrisation tau = theta 2 / (L B2(W)) (pde2net.nn.THETA_MAX)
LEARNED_THETA_MAX = "1 - 2^-10"
LEARNED_FORM = ("tau L B(W) < 2 with B = B2(W) = max_c sum_c' ||r_cc'||_1 >= ||sum_k W_k^T W_k|| "
                "(r_cc' the autocorrelations of the filters, Gershgorin), tau = theta 2/(L B2(W)), "
                f"theta = ({LEARNED_THETA_MAX}) sigmoid(rho) in [0, 1): the bound holds for every "
                "parameter value (docs/theory.md §13)")


def analyse_learned(model: Model, arch: Architecture) -> StabilityReport:
    """The certificate of a learned stencil bank (:class:`~pde2net.lower.LearnedBank`),
    docs/theory.md §13: each block is ``(I - tau W^T G W) u`` with ``G = diag(Phi(s)/s)`` in
    [0, L] and W^T the exact adjoint (zero padding), and ``tau L ||W||^2 <= tau L B2(W) < 2`` by
    the parametrisation of tau, so every block is non-expansive for EVERY parameter value.

    L: for a learned diffusivity ``c L_spec`` (g = L_spec sigmoid(...) in [0, L_spec] by
    construction, c the constant factor of the flux); for a fixed flux L = sup Phi(s)/s derived
    as for the explicit scheme, and the verdict is "stable" only when 0 <= Phi(s)/s <= L < oo is
    proven (the network clamps Phi(s)/s into [0, L] in float, so rounding and the float range
    cannot break the hypothesis).  The network's numbers (tau, B(W)) change with training, so
    ``tau`` and ``tau_max`` are null and ``bound_expr`` is the formula."""
    from .lower import LearnedBank

    sch: LearnedBank = arch.scheme
    if sch.learned_g:
        L = sch.scale * sch.L
        facts = FluxFacts("ok", L, sp.Integer(0), f"g = L sigmoid(a) in [0, {sch.L}] by construction")
        flux = (f"Phi(s) = {show_scale(sch.scale)}s * {model.learned.diffusivity}(s^2), "
                f"{model.learned.diffusivity} = {sch.L} * sigmoid(a), a learned "
                f"({sch.knots} knots on [0, {sch.s_max}])")
    else:
        facts = flux_facts(model.flux_value)
        L = facts.L
        flux = f"Phi(s) = {arch.flux.text}"
    size = f"{sch.size}" if sch.dim == 1 else f"{sch.size} x {sch.size}"
    hyps = _flux_hypotheses(facts) + [
        {"name": "W^T the exact adjoint", "holds": True,
         "detail": "conv_transpose with the same weights and zero padding (boundary dirichlet)"},
        {"name": "B2(W) >= ||W||^2", "holds": True,
         "detail": "Gershgorin on the autocorrelations of the filters (docs/theory.md §13)"},
        {"name": "tau L B2(W) < 2", "holds": True,
         "detail": f"tau = theta 2/(L B2(W)), theta < {LEARNED_THETA_MAX}: for every parameter value"},
    ]
    extra = {"steps": sch.steps, "stopping_time": None, "learned": True, "filters": sch.filters,
             "filter_size": sch.size, "learned_diffusivity": sch.learned_g,
             "knots": sch.knots if sch.learned_g else None,
             "certificate": LEARNED_FORM, "training_bound": "B2",
             "tau_formula": "theta*2/(L*B2(W))", "theta_max": LEARNED_THETA_MAX}
    base = dict(name=model.name, scheme=model.scheme, order=model.order,
                L=None if L is None else float(L), norm_D_sq=None, tau=None, tau_max=None,
                bound_expr="tau < 2/(L*B2(W))", flux=flux,
                stencil=f"learned bank: {sch.filters} filters of size {size}",
                boundary="dirichlet (zero padding)", h=None, hypotheses=hyps, extra=extra,
                exact={"L": _fmt(L)},
                statement="docs/theory.md §13: stable learned filter banks (symmetric ResNet blocks)")
    if facts.status == "ok" and L is not None:
        return StabilityReport(**base, stable=True, verdict="stable", guarantee="proof",
                               reason=f"by construction: {LEARNED_FORM}; each of the {sch.steps} "
                                      f"blocks is non-expansive, so the network is")
    verdict = "not stable" if facts.status in ("negative", "unbounded") else "cannot prove"
    return StabilityReport(**base, stable=False, verdict=verdict, guarantee="none",
                           reason=f"{verdict}: the flux does not satisfy 0 <= Phi(s)/s <= L < oo "
                                  f"({facts.detail}); the bank's certificate needs it")


def show_scale(c: sp.Expr) -> str:
    return "" if c == 1 else f"{c} * "


def _register_learned() -> None:
    from .lower import LearnedBank

    register_rule(LearnedBank, analyse_learned)


_register_learned()
