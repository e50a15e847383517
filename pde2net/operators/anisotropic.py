"""Anisotropic diffusion ``div(T grad u)`` (2D): the tensor, its proven facts, the cell-assembled
network and its bound (docs/theory.md §9).

The term ``c * div(T * grad(u))`` with T from a ``tensor`` statement becomes ``A = sum_i D_i^T G_i
D_i`` over four directions (x, y and the two diagonals) with the CELL assembly of
:mod:`pde2net.operators.runtime.anisotropic`: one tensor per 2x2 cell (the mean of its pixels'
tensors), split into four directional weights with the diagonal mass ``m = delta (a + c) / 2``.
Each cell's quadratic form is, in the orthonormal basis const / X / Y / checkerboard of the cell,

    (alpha/hx, beta/hy) T (alpha/hx, beta/hy)^T + (1 - delta) (a/hx^2 + c/hy^2) gamma^2,

so A is positive semidefinite for every ``delta <= 1`` whatever the signs of the weights, and
since every pixel lies in at most four cells

    lambda_max(A) <= 4 max(L / h_min^2, (1 - delta) S),   S = sup tr(diag(hx, hy)^-2 T)

(square pixels: ``(4/h^2) max(L, (1 - delta) sup tr T)``), with L = sup lambda_max(T).  The
facts L and sup tr T come from the tensor: EED (``max(1, sup g)``, ``1 + sup g``), CED
(``max(1, alpha)``, ``alpha + max(1, alpha)``) or an explicit matrix, whose positive
semidefiniteness and sup are proven with sympy or reported as "cannot prove".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import sympy as sp

from .. import exprs
from ..analyse import DIV, DX, DY, GRAD
from ..limits import SYMBOLIC_SECONDS, SymbolicTimeout, time_limit
from ..lower import S2
from ..stability import _check_sampled, _extrema, _T, real_everywhere
from ..stability import S as FLUX_S
from .base import GAUSS, Bound, Context, TensorDef, TermSource, cite, register
from .diffusivity import Diffusivity, LiveDiffusivity, diffusivity_of, function_source

SECTION = 9
KINDS = ("edge_enhancing", "coherence_enhancing", "matrix")


# ----------------------------------------------------------------------------- tensor facts
@dataclass(frozen=True)
class TensorFacts:
    """What is proven about the tensor field: ``L = sup lambda_max(T)`` (an upper bound),
    ``trace = sup tr T`` (an upper bound), both exact and already multiplied by the term's
    factor; or ``failure`` ("negative", "unbounded", "unknown") with ``detail``.
    ``hypotheses``: the report's dicts; ``identity``: T = L I is one of the tensors (the bound is
    then attained)."""

    L: Optional[sp.Expr]
    trace: Optional[sp.Expr]
    failure: str = ""
    detail: str = ""
    hypotheses: tuple = ()
    identity: bool = False


def _hyp(name: str, holds: Optional[bool], detail: str) -> dict:
    return {"name": name, "holds": holds, "detail": detail}


def eed_facts(d: Diffusivity, scale: sp.Expr, ctx: Context) -> TensorFacts:
    """EED: eigenvalues g(|v|^2) and 1, so ``L = max(1, sup g)``, ``sup tr T = 1 + sup g``."""
    hyps = d.hypotheses("g")
    if not d.proven:
        failure = d.facts.status if d.facts.status in ("negative", "unbounded") else "unknown"
        return TensorFacts(None, None, failure, d.facts.detail or d.real_detail, hyps)
    Lg = d.L
    try:  # g at v = 0 (T = g(0) I there), as the network evaluates it: the limit s2 -> 0+
        with time_limit(SYMBOLIC_SECONDS):
            at0 = sp.limit(ctx.value(d.expr), S2, 0, "+")
    except Exception:  # noqa: BLE001 - only the "tight" label depends on it
        at0 = sp.nan
    return TensorFacts(scale * sp.Max(1, Lg), scale * (1 + Lg), hypotheses=hyps,
                       identity=bool(sp.simplify(at0 - 1) == 0 and sp.simplify(Lg - 1) == 0))


def ced_facts(alpha: sp.Expr, C: sp.Expr, scale: sp.Expr) -> TensorFacts:
    """CED: eigenvalues alpha and ``alpha + (1 - alpha) exp(-C / (mu1 - mu2)^2)``, which lies
    between alpha and 1 for C >= 0: ``L = max(1, alpha)`` (a supremum, attained only for
    alpha >= 1), ``sup tr T = alpha + max(1, alpha)``."""
    hyps = (_hyp("alpha >= 0", bool(alpha >= 0), f"alpha = {alpha}"),
            _hyp("C >= 0", bool(C >= 0), f"C = {C}"))
    if alpha < 0:
        return TensorFacts(None, None, "negative", f"alpha = {alpha} < 0: T has a negative "
                           "eigenvalue (backward diffusion across the coherent structures)", hyps)
    if C < 0:
        return TensorFacts(None, None, "unbounded", f"C = {C} < 0: exp(-C / (mu1 - mu2)^2) is "
                           "unbounded as mu1 - mu2 -> 0", hyps)
    return TensorFacts(scale * sp.Max(1, alpha), scale * (alpha + sp.Max(1, alpha)),
                       hypotheses=hyps, identity=bool(alpha >= 1))


# ---------------------------------------------- ranges of explicit entries (proofs, not samples)
class _NoRange(Exception):
    """sympy could not bound an expression (the verdict becomes "cannot prove")."""


def _range_t(e: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(inf, sup) of e(t) over t > 0 (sympy's extrema, cross-checked on a dense sample)."""
    if not e.has(_T):
        return e, e
    lo, hi = _extrema(e)
    if not _check_sampled(e, lo, hi):
        raise _NoRange(f"sympy's extrema of {e} disagree with a numeric sample")
    return lo, hi


def _finite_real(v: sp.Expr) -> bool:
    return bool(v.is_real and v.is_finite)


def _range_1d(e: sp.Expr, x: sp.Symbol) -> tuple[sp.Expr, sp.Expr]:
    """(inf, sup) of e(x) over every real x: both half lines and x = 0."""
    dom = real_everywhere(e.xreplace({x: FLUX_S}), str(e))
    if dom.holds is not True or dom.removable_at_zero:
        raise _NoRange(dom.detail)
    at0 = e.xreplace({x: 0})
    if not _finite_real(at0):
        raise _NoRange(f"{e} is not finite at {x} = 0")
    (l1, h1), (l2, h2) = _range_t(e.xreplace({x: _T})), _range_t(e.xreplace({x: -_T}))
    return sp.Min(l1, l2, at0), sp.Max(h1, h2, at0)


def _radial(e: sp.Expr, p: sp.Symbol, q: sp.Symbol) -> Optional[sp.Expr]:
    """g(s2) with ``e = g(p^2 + q^2)`` (checked symbolically), or None."""
    g = e.xreplace({q: 0}).xreplace({p: sp.sqrt(S2)})
    diff = g.xreplace({S2: p ** 2 + q ** 2}) - e
    for pt in ({p: sp.Rational(1, 3), q: sp.Rational(5, 7)}, {p: -2, q: sp.Rational(1, 2)}):
        if abs(complex(sp.N(diff.xreplace(pt), 20))) > 1e-12:  # cheap refusal before simplify
            return None
    if sp.simplify(diff) == 0:
        return g
    return None


def _range_radial(g: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(inf, sup) of g(s2) over s2 >= 0."""
    dom = real_everywhere(g.xreplace({S2: FLUX_S ** 2}), str(g))
    if dom.holds is not True:
        raise _NoRange(dom.detail)
    at0 = g.xreplace({S2: 0})
    if not _finite_real(at0):
        raise _NoRange(f"{g} is not finite at s2 = 0")
    lo, hi = _range_t(g.xreplace({S2: _T}))
    return sp.Min(lo, at0), sp.Max(hi, at0)


def expr_range(e: sp.Expr, variables: tuple) -> tuple[sp.Expr, sp.Expr, bool]:
    """Proven ``(lo, hi, exact)`` with ``lo <= e <= hi`` for every real value of ``variables``:
    exact (inf and sup) for constants, functions of one variable and radial functions
    g(p^2 + q^2) of one gradient, and for sums of such parts with disjoint variables; any other
    sum gets the sum of its summands' bounds (``exact`` False).  Raises :class:`_NoRange`."""
    free = [v for v in variables if e.has(v)]
    if not free:
        if not _finite_real(e):
            raise _NoRange(f"{e} is not a finite real number")
        return e, e, True
    if len(free) == 1:
        return (*_range_1d(e, free[0]), True)
    if len(free) == 2:
        g = _radial(e, free[0], free[1])
        if g is not None:
            return (*_range_radial(g), True)
    if e.is_Add:
        groups = _disjoint_groups(e.args, variables)
        parts = groups if len(groups) > 1 else [[a] for a in e.args]
        ranges = [expr_range(sp.Add(*g), variables) for g in parts]
        return (sp.Add(*(r[0] for r in ranges)), sp.Add(*(r[1] for r in ranges)),
                len(groups) > 1 and all(r[2] for r in ranges))
    raise _NoRange(f"no rule bounds {e} (functions of one gradient component, of "
                   "dx^2 + dy^2, and sums of such parts are bounded)")


def _disjoint_groups(args: tuple, variables: tuple) -> list[list]:
    """The summands grouped so that groups share no variable (constants join the first)."""
    groups: list[tuple[set, list]] = []
    for a in args:
        vs = {v for v in variables if a.has(v)}
        merged = [g for g in groups if g[0] & vs]
        rest = [g for g in groups if not g[0] & vs]
        new = (vs.union(*(g[0] for g in merged)), [x for g in merged for x in g[1]] + [a])
        groups = rest + [new]
    return [g[1] for g in groups]


#: points where an entry is evaluated (30 digits): a clearly negative value there shows T indefinite
_PROBES = (0, 1, -1, 2, sp.Rational(1, 2), -sp.Rational(1, 2), 10)


def _negative_at(e: sp.Expr, variables: tuple) -> Optional[str]:
    """A point (all variables equal to one probe value, or one variable at it and the rest 0)
    where e < 0 exactly, or None."""
    free = [v for v in variables if e.has(v)]
    points = [{v: x for v in free} for x in _PROBES] + \
        [{v: (x if v == w else 0) for v in free} for w in free for x in _PROBES]
    for pt in points:
        exact = e.xreplace(pt)
        val = sp.N(exact, 30)  # 30 digits: a value below -1e-10 is negative beyond rounding
        if val.is_number and val.is_real and val < -1e-10:
            val = exact if exact.is_Rational else val
            where = ", ".join(f"{k} = {x}" for k, x in pt.items()) or "everywhere"
            return f"{e} = {val} < 0 at {where}"
    return None


def _nonnegative(e: sp.Expr, variables: tuple) -> tuple[Optional[bool], str]:
    """Is e >= 0 for every real value of the variables?  True (proven), False (a value < 0 is
    proven) or None (undecided), with the reason."""
    witness = _negative_at(e, variables)
    if witness:
        return False, witness
    try:
        lo, _, exact = expr_range(e, variables)
        if lo.is_extended_nonnegative:
            return True, f"{e} >= {lo}"
        if exact and lo.is_extended_negative:
            return False, f"inf {e} = {lo} < 0"
    except (_NoRange, NotImplementedError, ValueError, TypeError) as exc:
        reason = str(exc)
    else:
        reason = f"the bound {e} >= {lo} does not show {e} >= 0"
    for form in (e, sp.factor(sp.cancel(sp.together(e)))):
        if form.is_nonnegative:  # sympy's assumptions with real variables
            return True, f"{form} >= 0 (sympy's sign rules)"
    return None, reason


def matrix_facts(entries: tuple, variables: tuple, scale: sp.Expr,
                 seconds: float = SYMBOLIC_SECONDS) -> TensorFacts:
    """Proves ``T = [[a, b], [b, c]] >= 0`` (a >= 0, c >= 0, ac - b^2 >= 0 over the reals) and
    bounds ``L = sup lambda_max(T)`` and ``sup tr T``; "cannot prove" otherwise."""
    a, b, c = entries
    try:
        with time_limit(seconds):
            return _matrix_facts(a, b, c, variables, scale)
    except SymbolicTimeout:
        return TensorFacts(None, None, "unknown", f"proving T >= 0 exceeded {seconds:g} s",
                           (_hyp("T positive semidefinite", None, "time limit"),))
    except Exception as exc:  # noqa: BLE001 - any sympy failure means "cannot prove"
        return TensorFacts(None, None, "unknown", f"sympy could not analyse T ({type(exc).__name__})",
                           (_hyp("T positive semidefinite", None, str(exc)),))


def _matrix_facts(a, b, c, variables, scale) -> TensorFacts:
    det = sp.expand(a * c - b * b)
    checks = [(f"a = {a} >= 0", a), (f"c = {c} >= 0", c), (f"det T = {det} >= 0", det)]
    hyps = []
    for name, e in checks:
        holds, why = _nonnegative(e, variables)
        hyps.append(_hyp(name, holds, why))
        if holds is False:
            return TensorFacts(None, None, "negative", f"T is not positive semidefinite: {why}",
                               tuple(hyps))
        if holds is None:
            return TensorFacts(None, None, "unknown",
                               f"cannot prove that T is positive semidefinite: {why}", tuple(hyps))
    try:
        trace = _sup(a + c, variables)
        if b == 0:
            L = sp.Max(_sup(a, variables), _sup(c, variables))
        else:
            lam = (a + c) / 2 + sp.sqrt((a - c) ** 2 / 4 + b ** 2)
            try:
                L = _sup(lam, variables)
            except _NoRange:  # Gershgorin and the trace bound lambda_max of a PSD matrix
                lo_b, hi_b, _ = expr_range(b, variables)
                L = sp.Min(trace, sp.Max(_sup(a, variables), _sup(c, variables)) + sp.Max(hi_b, -lo_b))
    except (_NoRange, NotImplementedError, ValueError, TypeError) as exc:
        hyps.append(_hyp("sup lambda_max(T) finite", None, str(exc)))
        return TensorFacts(None, None, "unknown", f"cannot bound sup lambda_max(T): {exc}", tuple(hyps))
    if trace == sp.oo or L == sp.oo:
        exact = expr_range(a + c, variables)[2]  # sup tr T = oo proves sup lambda_max = oo
        hyps.append(_hyp("sup lambda_max(T) finite", False if exact else None, "sup tr T = oo"))
        return TensorFacts(None, None, "unbounded" if exact else "unknown",
                           "sup lambda_max(T) = oo" if exact else "no finite bound on sup tr T found",
                           tuple(hyps))
    hyps.append(_hyp("sup lambda_max(T) finite", True, f"L <= {L}, sup tr T <= {trace}"))
    const = not any(x.has(v) for x in (a, b, c) for v in variables)
    identity = const and b == 0 and sp.simplify(a - c) == 0
    return TensorFacts(scale * L, scale * trace, hypotheses=tuple(hyps), identity=bool(identity))


def _sup(e: sp.Expr, variables: tuple) -> sp.Expr:
    return expr_range(e, variables)[1]


# ------------------------------------------------------------------------------ the bound
def trace_weighted(L: sp.Expr, trace: sp.Expr, hx: sp.Expr, hy: sp.Expr) -> sp.Expr:
    """``S >= sup tr(diag(hx, hy)^-2 T)`` for tensors with eigenvalues mu1 >= mu2 >= 0,
    ``mu1 <= L``, ``mu1 + mu2 <= trace``: ``mu1 / h_min^2 + mu2 / h_max^2`` is largest with
    ``mu1 = min(L, trace)`` (von Neumann's trace inequality); square pixels: trace / h^2."""
    if hx == hy:
        return trace / hx ** 2
    hmin, hmax = sp.Min(hx, hy), sp.Max(hx, hy)
    return sp.Min(L, trace) / hmin ** 2 + sp.Max(trace - L, 0) / hmax ** 2


def cell_bound(L: sp.Expr, trace: sp.Expr, hx: sp.Expr, hy: sp.Expr, delta: sp.Expr) -> sp.Expr:
    """``4 max(L / h_min^2, (1 - delta) S)`` (square: ``(4/h^2) max(L, (1 - delta) sup tr T)``)."""
    S = trace_weighted(L, trace, hx, hy)
    return sp.simplify(4 * sp.Max(L / sp.Min(hx, hy) ** 2, (1 - delta) * S))


def default_delta(L: Optional[sp.Expr], trace: Optional[sp.Expr], hx: sp.Expr, hy: sp.Expr) -> sp.Expr:
    """The smallest delta in [0, 1] with the largest proven step: ``max(0, 1 - (L/h_min^2)/S)``
    (EED with g <= 1: 1/2; CED: alpha / (1 + alpha)).  A larger delta only weakens the damping
    ``(1 - delta)(a/hx^2 + c/hy^2)`` of each cell's checkerboard mode; 0 when nothing is proven."""
    if L is None or trace is None:
        return sp.Integer(0)
    S = trace_weighted(L, trace, hx, hy)
    if S == 0:
        return sp.Integer(0)
    return sp.simplify(sp.Max(0, 1 - (L / sp.Min(hx, hy) ** 2) / S))


# ------------------------------------------------------------------------------ the term
@dataclass(frozen=True)
class AnisotropicTerm:
    """``scale * div(T grad u)``: the tensor's kind and arguments (exact), delta and the facts."""

    tensor: TensorDef
    kind: str
    scale: sp.Expr
    delta: sp.Expr
    delta_default: bool
    facts: TensorFacts
    sigmas: tuple = ()                     # presmoothing scales (exact), one per gradient
    rho: sp.Expr = sp.Integer(0)
    alpha: sp.Expr = sp.Integer(0)
    C: sp.Expr = sp.Integer(0)
    diffusivity: Optional[Diffusivity] = None
    entries: tuple = ()                    # (a, b, c) over P_k, Q_k and param symbols
    variables: tuple = ()                  # (P_0, Q_0, P_1, Q_1, ...)
    text: str = ""
    family: str = field(default="anisotropic", init=False)

    @property
    def diffusivities(self) -> tuple:
        return (self.diffusivity,) if self.diffusivity is not None else ()

    def describe(self) -> str:
        how = "default: the smallest delta with the largest proven step" if self.delta_default \
            else "from 'stencil anisotropic(delta = ...)'"
        return (f"{self.text}: anisotropic diffusion, T = {self.tensor.name} ({self.kind}); four "
                f"directional conv/transposed-conv pairs (x, y, diagonals), cell assembly, "
                f"delta = {self.delta} ({how})")

    # -- bound
    def bound(self, ctx: Context) -> Bound:
        hx, hy = ctx.grid
        f = self.facts
        hyps = f.hypotheses + (_hyp("delta <= 1", bool(self.delta <= 1),
                                    f"delta = {self.delta}" + (" (default)" if self.delta_default else "")),)
        if self.delta > 1:
            return Bound(None, True, f"delta = {self.delta} > 1: the checkerboard of a cell diffuses "
                         "backwards (its energy (1 - delta)(a/hx^2 + c/hy^2) < 0 where tr T > 0), so A "
                         "is indefinite and the scheme grows for every tau", cite(SECTION), hyps,
                         failure="negative")
        if f.failure:
            return Bound(None, False, f.detail, cite(SECTION), hyps, failure=f.failure)
        value = cell_bound(f.L, f.trace, hx, hy, self.delta)
        reason = (f"cell assembly: lambda_max(A) <= 4 max(L / h_min^2, (1 - delta) sup tr(H^-2 T)) "
                  f"with L = sup lambda_max(T) <= {f.L}, sup tr T <= {f.trace}, delta = {self.delta}"
                  f", h = ({hx}, {hy}): {value}; A is positive semidefinite for every delta <= 1")
        return Bound(value, True, reason, cite(SECTION), hyps, tight=f.identity)

    # -- emitters
    def _weights(self, ctx: Context, sigma: sp.Expr, axis: int) -> list:
        from .runtime.grid import gauss_weights
        s = float(sigma)
        return [1.0] if s == 0 else gauss_weights(s, float(ctx.grid[axis]))

    def _weights_text(self, ctx: Context, sigma: sp.Expr, axis: int) -> str:
        s = float(sigma)
        return "[1.0]" if s == 0 else f"gauss_weights({s!r}, {float(ctx.grid[axis])!r})"

    def _runtime_args(self, ctx: Context) -> dict:
        smooth = tuple(tuple(self._weights(ctx, s, a) for a in range(2)) for s in self.sigmas)
        integrate = tuple(self._weights(ctx, self.rho, a) for a in range(2)) \
            if self.kind == "coherence_enhancing" else ()
        return dict(kind=self.kind, boundaries=tuple(ctx.boundaries),
                    h=(float(ctx.grid[0]), float(ctx.grid[1])), delta=float(self.delta),
                    scale=float(ctx.value(self.scale)), smooth=smooth, integrate=integrate,
                    alpha=float(self.alpha), C=float(self.C))

    def _entry_ops(self, ctx: Context) -> list:
        names = {**{v: f"__{v.name}" for v in self.variables},
                 **{sym: name for name, sym in ctx.param_symbols.items()}}
        floats = {sym: float(v) for sym, v in ((ctx.param_symbols[k], x) for k, x in ctx.params.items())}
        return [exprs.lower_expr(e, names, frozenset(self.variables), floats) for e in self.entries]

    def torch_term(self, ctx: Context) -> Any:
        from .runtime.anisotropic import AnisotropicDiffusion
        args = self._runtime_args(ctx)
        if self.kind == "edge_enhancing":
            args["g"] = LiveDiffusivity(self.diffusivity)
        elif self.kind == "matrix":
            args["entries"] = LiveEntries(self._entry_ops(ctx), [f"__{v.name}" for v in self.variables],
                                          {k: float(v) for k, v in ctx.params.items()})
        return AnisotropicDiffusion(**args)

    def source(self, ctx: Context, pnames: dict[str, str], prefix: str) -> TermSource:
        args = self._runtime_args(ctx)
        functions = []
        extra = ""
        if self.kind == "edge_enhancing":
            functions.append(function_source(self.diffusivity, f"{prefix}g", pnames))
            extra = f", g={prefix}g"
        elif self.kind == "matrix":
            functions.append(self._entries_source(ctx, f"{prefix}tensor", pnames))
            extra = f", entries={prefix}tensor"
        # the Gaussians as calls of the inlined gauss_weights (the same floats as the live lists)
        smooth = [[self._weights_text(ctx, sg, a) for a in range(2)] for sg in self.sigmas]
        args["smooth"] = _Raw("(" + "".join(f"({w[0]}, {w[1]}), " for w in smooth) + ")")
        if self.kind == "coherence_enhancing":
            args["integrate"] = _Raw("(" + ", ".join(self._weights_text(ctx, self.rho, a) for a in range(2)) + ")")
        text = ", ".join(f"{k}={_literal(v)}" for k, v in args.items())
        return TermSource(("grid", "anisotropic"), tuple(functions),
                          f"AnisotropicDiffusion({text}{extra})")

    def _entries_source(self, ctx: Context, name: str, pnames: dict[str, str]) -> str:
        arg_names = [v.name.lower() for v in self.variables]
        names = {**{f"__{v.name}": n for v, n in zip(self.variables, arg_names)}, **pnames}
        floats = {k: float(v) for k, v in ctx.params.items()}
        body = [exprs.to_source(op, names, "torch", frozenset(pnames), values=floats)
                for op in self._entry_ops(ctx)]
        params = ", ".join(f"{n}: torch.Tensor" for n in arg_names)
        return (f"def {name}({params}) -> tuple:\n"
                f'    """The tensor (a, b, c) of [[a, b], [b, c]] from the presmoothed gradients."""\n'
                f"    return ({body[0]}, {body[1]}, {body[2]})\n")

    # -- verify's reference
    def dense(self, ctx: Context, u: Any, f: Any = None) -> Any:
        """``D^T G(u) D`` in float64 NumPy, written independently of the runtime: the pixel
        tensors (Gaussian, central gradient, EED / CED by eigen-decomposition / the entries), one
        tensor per cell, its split and its six edges (docs/theory.md §9)."""
        import numpy as np

        u = np.asarray(u, dtype=np.float64)
        h = (float(ctx.grid[0]), float(ctx.grid[1]))
        b = tuple(ctx.boundaries)
        T = np.stack([self._np_tensor(ctx, u[ch], h, b) for ch in range(u.shape[0])])
        return dense_cell_matrix(T * float(ctx.value(self.scale)), float(self.delta), b, h)

    def _np_tensor(self, ctx: Context, u: Any, h: tuple, b: tuple) -> Any:
        """The pixel tensors (ny, nx, 2, 2) of one channel."""
        import numpy as np

        grads = [_np_central(_np_gauss(u, float(s), h, b), h, b) for s in self.sigmas]
        if self.kind == "edge_enhancing":
            vx, vy = grads[0]
            s2 = vx * vx + vy * vy
            g = np.broadcast_to(exprs.evaluate(self.diffusivity.op, {**self.diffusivity.params,
                                                                     "__s2": s2},
                                               exprs.LIBS["numpy"]()), s2.shape)
            n = np.stack([vx, vy], -1) / np.sqrt(np.where(s2 > 0, s2, 1.0))[..., None]
            nn = n[..., :, None] * n[..., None, :]
            eye = np.eye(2)
            return np.where((s2 > 0)[..., None, None], g[..., None, None] * nn + (eye - nn),
                            g[..., None, None] * eye)
        if self.kind == "coherence_enhancing":
            vx, vy = grads[0]
            J = np.stack([np.stack([vx * vx, vx * vy], -1), np.stack([vx * vy, vy * vy], -1)], -2)
            J = np.stack([np.stack([_np_gauss(J[..., i, j], float(self.rho), h, b) for j in range(2)], -1)
                          for i in range(2)], -2)
            mu, vec = np.linalg.eigh(J)  # ascending: vec[..., 1] across, vec[..., 0] along
            gap = mu[..., 1] - mu[..., 0]
            alpha, C = float(self.alpha), float(self.C)
            with np.errstate(divide="ignore", over="ignore"):
                along = np.where(gap > 0, alpha + (1 - alpha) * np.exp(-C / np.where(gap > 0, gap, 1.0) ** 2),
                                 alpha)
            w1, w2 = vec[..., :, 1], vec[..., :, 0]
            return (alpha * w1[..., :, None] * w1[..., None, :]
                    + along[..., None, None] * w2[..., :, None] * w2[..., None, :])
        env = {f"__{v.name}": x for v, x in zip(self.variables, (c for pq in grads for c in pq))}
        env.update({k: float(v) for k, v in ctx.params.items()})
        a, bb, c = (np.broadcast_to(exprs.evaluate(op, env, exprs.LIBS["numpy"]()), u.shape)
                    for op in self._entry_ops(ctx))
        return np.stack([np.stack([a, bb], -1), np.stack([bb, c], -1)], -2)


def _np_index(k: int, n: int, kind: str) -> Optional[int]:
    """The pixel at index k along an axis of n pixels, extended by the boundary rule: mirrored
    (u_(-1-k) = u_k, clamped on grids shorter than the extension), wrapped, or None (zero)."""
    if 0 <= k < n:
        return k
    if kind == "periodic":
        return k % n
    if kind == "dirichlet":
        return None
    k = -1 - k if k < 0 else k
    k = 2 * n - 1 - k if k >= n else k
    return min(max(k, 0), n - 1)


def _np_gauss(u: Any, sigma: float, h: tuple, b: tuple) -> Any:
    """Separable sampled Gaussian (|k h| <= 3 sigma, renormalised), x first, then y."""
    import numpy as np

    out = u
    for axis in (0, 1):
        if sigma == 0:
            break
        r = int(np.floor(3.0 * sigma / h[axis]))
        if r == 0:
            continue
        w = np.exp(-(np.arange(-r, r + 1) * h[axis]) ** 2 / (2 * sigma * sigma))
        w = w / w.sum()
        arr = out if axis == 0 else out.T
        n = arr.shape[1]
        new = np.zeros_like(arr)
        for k in range(-r, r + 1):
            idx = [_np_index(i + k, n, b[axis]) for i in range(n)]
            cols = np.array([arr[:, j] if j is not None else np.zeros(arr.shape[0]) for j in idx]).T
            new = new + w[k + r] * cols
        out = new if axis == 0 else new.T
    return out


def _np_central(us: Any, h: tuple, b: tuple) -> tuple:
    """Central differences at the pixels, the field extended by the boundary rule."""
    import numpy as np

    def shifted(k: int, axis: int) -> Any:
        arr = us if axis == 0 else us.T
        n = arr.shape[1]
        idx = [_np_index(i + k, n, b[axis]) for i in range(n)]
        cols = np.array([arr[:, j] if j is not None else np.zeros(arr.shape[0]) for j in idx]).T
        return cols if axis == 0 else cols.T

    return tuple((shifted(1, a) - shifted(-1, a)) / (2 * h[a]) for a in (0, 1))


def dense_cell_matrix(T: Any, delta: float, boundaries: tuple, h: tuple) -> Any:
    """The cell-assembled matrix of a pixel tensor field ``T`` (C, ny, nx, 2, 2): every cell
    (per boundary rule) takes the mean tensor of its pixels inside the domain, splits it into
    ``w1..w4`` and adds its six edges ``w e e^T / |o|^2`` (axis edges with w/2)."""
    import numpy as np

    C, ny, nx = T.shape[:3]
    hx, hy = h
    d2 = hx * hx + hy * hy
    n = C * ny * nx
    A = np.zeros((n, n))

    def cells(m: int, kind: str) -> list:
        if kind == "neumann":
            return [(k, k + 1) for k in range(m - 1)]
        if kind == "periodic":
            return [(k, (k + 1) % m) for k in range(m)]
        return [(k if k >= 0 else None, k + 1 if k + 1 < m else None) for k in range(-1, m)]

    def edge(p: Optional[int], q: Optional[int], weight: float) -> None:
        for r, sr in ((p, 1.0), (q, -1.0)):
            for c, sc in ((p, 1.0), (q, -1.0)):
                if r is not None and c is not None:
                    A[r, c] += weight * sr * sc

    for ch in range(C):
        def at(i, j):
            return None if i is None or j is None else (ch * ny + j) * nx + i

        for j0, j1 in cells(ny, boundaries[1]):
            for i0, i1 in cells(nx, boundaries[0]):
                inside = [T[ch, j, i] for j in (j0, j1) for i in (i0, i1) if i is not None and j is not None]
                a, b, c = (sum(t[k] for t in inside) / len(inside) for k in ((0, 0), (0, 1), (1, 1)))
                s = delta * d2 * (a / hx ** 2 + c / hy ** 2) / 4
                t = b * d2 / (2 * hx * hy)
                w1, w2 = a - 2 * s * hx * hx / d2, c - 2 * s * hy * hy / d2
                p00, p10, p01, p11 = at(i0, j0), at(i1, j0), at(i0, j1), at(i1, j1)
                edge(p00, p10, w1 / (2 * hx * hx)), edge(p01, p11, w1 / (2 * hx * hx))
                edge(p00, p01, w2 / (2 * hy * hy)), edge(p10, p11, w2 / (2 * hy * hy))
                edge(p00, p11, (s + t) / d2), edge(p01, p10, (s - t) / d2)
    return A


class LiveEntries:
    """Evaluates the explicit tensor's op trees (the live module's ``entries``; the source prints
    the same trees)."""

    def __init__(self, ops: list, names: list, params: dict) -> None:
        self.ops, self.names, self.params = ops, names, params
        self._lib = exprs.LIBS["torch"]()

    def __call__(self, *args: Any) -> tuple:
        env = {**self.params, **dict(zip(self.names, args))}
        return tuple(exprs.evaluate(op, env, self._lib) for op in self.ops)


class _Raw(str):
    """Source text built here from printed numbers (passed through by :func:`_literal`)."""


def _literal(v: Any) -> str:
    """Python text of a runtime argument: strings, floats (repr) and nested tuples/lists."""
    if isinstance(v, _Raw):
        return str(v)
    if isinstance(v, str):
        if v not in KINDS and v not in ("neumann", "periodic", "dirichlet"):
            raise ValueError(f"unexpected word {v!r}")
        return repr(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (tuple, list)):
        inner = ", ".join(_literal(x) for x in v)
        return f"({inner},)" if isinstance(v, tuple) and len(v) == 1 else \
            (f"({inner})" if isinstance(v, tuple) else f"[{inner}]")
    raise ValueError(f"unexpected runtime argument {v!r}")


# -------------------------------------------------------------------------- recognition
def _tensor_symbol(expr: sp.Expr, ctx: Context) -> Optional[sp.Symbol]:
    found = [s for s in expr.free_symbols if s in ctx.tensors]
    return found[0] if found else None


def _split_div(term: sp.Expr, ctx: Context) -> Optional[tuple]:
    """``scale * div(T * grad(u))`` -> (scale, T), None if the term has no tensor."""
    if _tensor_symbol(term, ctx) is None:
        return None
    expected = "div(T * grad(u)) with T a tensor, times a constant factor"
    divs = [f for f in sp.Mul.make_args(term) if f.func == DIV]
    rest = [f for f in sp.Mul.make_args(term) if f.func != DIV]
    if len(divs) != 1 or any(_tensor_symbol(r, ctx) or r.has(ctx.u) for r in rest):
        raise ctx.error("a tensor can only appear as div(T * grad(u))", expected)
    inner = sp.Mul.make_args(divs[0].args[0])
    tensors = [f for f in inner if f in ctx.tensors]
    grads = [f for f in inner if f.func == GRAD]
    consts = [f for f in inner if f not in tensors and f not in grads]
    if len(tensors) != 1 or len(grads) != 1 or grads[0].args[0] != ctx.u \
            or any(c.has(ctx.u) or _tensor_symbol(c, ctx) for c in consts):
        raise ctx.error(f"cannot read {divs[0]} as anisotropic diffusion", expected)
    scale = sp.Mul(*rest) * sp.Mul(*consts)
    bad = scale.free_symbols - set(ctx.param_symbols.values())
    if bad:
        raise ctx.error(f"the factor {scale} of div(T * grad(u)) must be a constant", expected)
    return scale, tensors[0]


def _sigma_of(smoothed: sp.Expr, ctx: Context, tdef: TensorDef) -> sp.Expr:
    """sigma of ``gauss(u, sigma)`` (0 for plain u), checked to be a number >= 0."""
    expected = "gauss(u, sigma) with sigma >= 0, or u"
    if smoothed == ctx.u:
        return sp.Integer(0)
    if smoothed.func != GAUSS or smoothed.args[0] != ctx.u:
        raise ctx.error(f"{tdef.name}: cannot read {smoothed} as the presmoothed field", expected, tdef.pos)
    return _number(smoothed.args[1], "sigma", ctx, tdef, nonnegative=True)


def _number(e: sp.Expr, what: str, ctx: Context, tdef: TensorDef, nonnegative: bool = False) -> sp.Expr:
    v = ctx.value(e)
    if not (v.is_number and v.is_real and v.is_finite):
        raise ctx.error(f"{tdef.name}: {what} = {e} must be a real number", f"{what} a number or param",
                        tdef.pos)
    if nonnegative and v < 0:
        raise ctx.error(f"{tdef.name}: {what} = {v} must be >= 0", f"{what} >= 0", tdef.pos)
    return sp.nsimplify(v) if v.is_Float else v


def _gradient_atoms(e: sp.Expr, ctx: Context, tdef: TensorDef, sigmas: list) -> sp.Expr:
    """The entry with ``dx(gauss(u, s))``, ``dy(gauss(u, s))`` replaced by real symbols
    ``P_k, Q_k`` (k: the index of s in ``sigmas``, appended when new)."""
    subs = {}
    for atom in e.atoms(sp.Function):
        if atom.func not in (DX, DY):
            continue
        if len(atom.args) != 2 or atom.args[1] != 1:
            raise ctx.error(f"{tdef.name}: only first differences dx(...), dy(...) may appear in "
                            f"a tensor, not {atom}", "dx(gauss(u, sigma)) or dy(gauss(u, sigma))", tdef.pos)
        s = _sigma_of(atom.args[0], ctx, tdef)
        if s not in sigmas:
            sigmas.append(s)
        k = sigmas.index(s)
        subs[atom] = sp.Symbol(f"{'P' if atom.func == DX else 'Q'}{k}", real=True)
    out = e.xreplace(subs)
    if out.has(ctx.u) or any(isinstance(a, sp.Function) and a.func in (GRAD, DIV, GAUSS)
                             for a in out.atoms(sp.Function)):
        raise ctx.error(f"{tdef.name}: an entry may use u only as dx(gauss(u, sigma)) or "
                        f"dy(gauss(u, sigma))", "expressions of params and dx(gauss(u, sigma)), "
                        "dy(gauss(u, sigma))", tdef.pos)
    bad = out.free_symbols - set(ctx.param_symbols.values()) - set(subs.values())
    if bad:
        raise ctx.error(f"{tdef.name}: unknown names {sorted(map(str, bad))} in the tensor",
                        "params and dx(gauss(u, sigma)), dy(gauss(u, sigma))", tdef.pos)
    return out


def _displayed(facts: TensorFacts, sigmas: list) -> TensorFacts:
    """The facts' texts with the gradient symbols P_k, Q_k written as the user wrote them."""
    import re

    def show(text: str) -> str:
        return re.sub(r"\b([PQ])(\d+)\b", lambda m: f"{'dx' if m.group(1) == 'P' else 'dy'}"
                      f"(gauss(u, {sigmas[int(m.group(2))]}))", text).replace("**", "^")

    hyps = tuple({**h, "name": show(h["name"]), "detail": show(str(h["detail"]))} for h in facts.hypotheses)
    return TensorFacts(facts.L, facts.trace, facts.failure, show(facts.detail), hyps, facts.identity)


def _delta(ctx: Context, L, trace) -> tuple[sp.Expr, bool]:
    d = ctx.settings.get("delta")
    if d is None:
        return default_delta(L, trace, *ctx.grid), True
    v = ctx.value(d)
    if not (v.is_number and v.is_real and v.is_finite) or v < 0:
        raise ctx.error(f"delta = {d} must be a number >= 0", "stencil anisotropic(delta = EXPR) with "
                        "0 <= delta <= 1", getattr(ctx.stencil, "pos", None))
    return (sp.nsimplify(v) if v.is_Float else v), False


def _show(term: sp.Expr) -> str:
    from .. import analyse
    return analyse.show(term)


def build_term(term: sp.Expr, scale: sp.Expr, tsym: sp.Symbol, ctx: Context) -> AnisotropicTerm:
    """The IR of ``scale * div(T grad u)``: reads T's statement, proves its facts, picks delta."""
    tdef = ctx.tensors[tsym]
    if ctx.ndim != 2:
        raise ctx.error("div(T * grad(u)) with a tensor needs a 2D field", "field u(x, y)")
    if ctx.channels != 1:
        raise ctx.error("div(T * grad(u)) with a tensor takes a scalar field (channels 1)",
                        "field u(x, y) without channels")
    scale_v = ctx.value(scale)
    if not (scale_v.is_number and scale_v.is_real):
        raise ctx.error(f"the factor {scale} must be a real number", "a number or param")
    kw: dict = {}
    if tdef.kind == "edge_enhancing":
        g_arg, g_body, v = tdef.args
        if v.func != GRAD:
            raise ctx.error(f"{tdef.name}: the vector of edge_enhancing must be grad(gauss(u, sigma))",
                            "edge_enhancing(g, grad(gauss(u, sigma)))", tdef.pos)
        sig = _sigma_of(v.args[0], ctx, tdef)
        d = diffusivity_of(g_body.xreplace({g_arg: S2}), ctx, "the EED diffusivity")
        facts = eed_facts(d, scale_v, ctx)
        kw = dict(sigmas=(sig,), diffusivity=d)
    elif tdef.kind == "coherence_enhancing":
        smoothed, rho, alpha, C = tdef.args
        sig = _sigma_of(smoothed, ctx, tdef)
        rho_v = _number(rho, "rho", ctx, tdef, nonnegative=True)
        alpha_v, C_v = _number(alpha, "alpha", ctx, tdef), _number(C, "C", ctx, tdef)
        facts = ced_facts(alpha_v, C_v, scale_v)
        kw = dict(sigmas=(sig,), rho=rho_v, alpha=alpha_v, C=C_v)
    elif tdef.kind == "matrix":
        rows = tdef.args
        if len(rows) != 2 or any(len(r) != 2 for r in rows):
            raise ctx.error(f"{tdef.name} must be a 2 x 2 matrix [[a, b], [b, c]]", "[[a, b], [b, c]]",
                            tdef.pos)
        sigmas: list = []
        (a, b), (b2, c) = [[_gradient_atoms(e, ctx, tdef, sigmas) for e in r] for r in rows]
        if sp.simplify(ctx.value(b - b2)) != 0:
            raise ctx.error(f"{tdef.name} must be symmetric: {b} != {b2}", "[[a, b], [b, c]]", tdef.pos)
        variables = tuple(sp.Symbol(f"{n}{k}", real=True) for k in range(len(sigmas)) for n in "PQ")
        facts = _displayed(matrix_facts(tuple(ctx.value(x) for x in (a, b, c)), variables, scale_v),
                           sigmas)
        kw = dict(sigmas=tuple(sigmas), entries=(a, b, c), variables=variables)
    else:
        raise ctx.error(f"unknown tensor kind {tdef.kind}", ", ".join(KINDS), tdef.pos)
    if scale_v < 0 and not facts.failure:
        facts = TensorFacts(None, None, "negative", f"the factor {scale_v} < 0: backward diffusion",
                            facts.hypotheses)
    delta, default = _delta(ctx, facts.L, facts.trace)
    return AnisotropicTerm(tdef, tdef.kind, scale, delta, default, facts, text=_show(term), **kw)


@dataclass(frozen=True)
class AnisotropicFamily:
    """Recognises ``c * div(T * grad(u))`` with T from a ``tensor`` statement."""

    name: str = "anisotropic"

    def recognise(self, term: sp.Expr, ctx: Context) -> Optional[AnisotropicTerm]:
        split = _split_div(term, ctx)
        if split is None:
            return None
        return build_term(term, split[0], split[1], ctx)


FAMILY = register(AnisotropicFamily())
