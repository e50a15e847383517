"""Stage 5: (Model, Architecture) -> :class:`StabilityReport`, a derived bound and its reasoning.

For the explicit scheme (MATH.md 1): with the same D and its exact transpose,

    0 <= Phi(s)/s <= L for all s != 0   and   0 < tau <= 2 / (L ||D||^2)
    =>  ||u - tau D^T Phi(D u)||_2 <= ||u||_2  for every u,

because the step is ``(I - tau D^T G D) u`` with ``G = diag(Phi(Du)/Du)`` in [0, L].  ``L`` and the
sign of ``Phi(s)/s`` are derived symbolically (critical points and the limits at 0 and infinity,
on s > 0 and s < 0 separately), and ``||D||^2`` is bounded by the symbol's supremum, computed
exactly.  Every symbolic answer is cross-checked on a dense sample; any doubt, error or time-out
gives the verdict "cannot prove", never "stable".
"""
from __future__ import annotations

import functools
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import sympy as sp
from sympy.calculus.util import continuous_domain, function_range

from . import exprs
from .analyse import S, Model
from .lower import Architecture, Explicit, boundary_text

SYMBOLIC_SECONDS = 20.0
_T = sp.Symbol("t", positive=True)


class SymbolicTimeout(Exception):
    """Symbolic work ran past its time limit."""


@contextmanager
def time_limit(seconds: float):
    """Bounds symbolic work with SIGALRM (main thread only; elsewhere it runs unbounded)."""
    if seconds is None or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return
    # Nested limits: an enclosing one that fires first stays in charge; otherwise it is re-armed
    # with what is left of it when this one ends (one ITIMER_REAL serves both).
    outer = signal.getitimer(signal.ITIMER_REAL)[0]
    if outer and outer <= seconds:
        yield
        return

    def _raise(signum, frame):
        raise SymbolicTimeout()

    start = time.monotonic()
    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


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
    """``Lip = sup |Phi'(s)|`` (MATH.md 8), or None when it is unbounded or not derivable."""
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
    statement: str  # which statement of MATH.md it rests on
    unconditional: bool = False
    flux: str = ""
    stencil: str = ""
    boundary: str = ""
    h: Any = 1.0
    hypotheses: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    exact: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


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
    return None if any(p is None for p in parts) else sum(parts)


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
    """``2 / (L (p_x/hx^2 + p_y/hy^2))`` for a 2D gradient with cells hx x hy (MATH.md 2: the
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
    """The stability report for the model's scheme."""
    return _RULES[type(arch.scheme)](model, arch)


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
    statement = "MATH.md 1: Euclidean stability of the explicit scheme"
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
                      f"Phi(s)/s >= 0, and with a sign change a ramp grows for every tau > 0 (MATH.md 1)")
    if facts.status == "unbounded":
        return report(False, "not stable",
                      f"unbounded diffusivity: {facts.detail}, so no tau satisfies tau <= 2/(L ||D||^2)")
    if facts.status == "unknown":
        return report(False, "cannot prove", f"cannot prove: {facts.detail}")
    if nb is None:
        return report(False, "cannot prove", "cannot prove: no exact bound on ||D||^2 for this stencil")
    if facts.L == 0:
        return report(True, "stable", "Phi = 0: every step is the identity", None, "proof", True)
    tau_max = sp.nsimplify(2 / (facts.L * nb)) if (2 / (facts.L * nb)).is_Float else 2 / (facts.L * nb)
    hyps.append({"name": "tau <= 2/(L ||D||^2)", "holds": None, "detail": f"tau = {tau}, bound = {tau_max}"})
    if model.order == 1 and model.ndim == 1 and arch.stencils[0].stencil.size == 2:  # MATH.md 1 is 1D
        extra["max_min_principle"] = bool(_le(tau, arch.stencils[0].stencil.h ** 2 / (2 * facts.L)))
    ok = _le(tau, tau_max)
    hyps[-1]["holds"] = ok
    if ok is None:
        return report(False, "cannot prove", "cannot prove: tau is within 1e-45 of the bound", tau_max)
    if not ok:
        return report(False, "not stable",
                      f"tau = {float(tau):.6g} exceeds the bound tau_max = 2/(L ||D||^2) = "
                      f"{float(tau_max):.6g} (L = {facts.L}, ||D||^2 <= {nb}); at tau above the bound "
                      f"small multiples of the top singular vector grow (MATH.md 1)", tau_max)
    return report(True, "stable",
                  f"0 <= Phi(s)/s <= L = {facts.L} and tau = {float(tau):.6g} <= 2/(L ||D||^2) = "
                  f"{float(tau_max):.6g} with ||D||^2 <= {nb}: ||u^(k+1)|| <= ||u^k|| for every input "
                  f"(MATH.md 1)", tau_max, "proof")


_RULES: dict[type, Callable[[Model, Architecture], StabilityReport]] = {Explicit: _explicit}

# FED, FSI, implicit and multigrid (MATH.md 3-7) live in their own module; it imports from here.
from .scheme_stability import RULES as _SCHEME_RULES  # noqa: E402

_RULES.update(_SCHEME_RULES)
