"""The data and reaction part ``r(u, f)`` of ``u_t = -A(u) u + r(u, f)`` (docs/theory.md §11).

The recogniser hands over the summands of the right side that contain no derivative;
:func:`reaction_of` decomposes their sum exactly (sympy, params as symbols) into

    r(u, f) = alpha (f - u) - beta u + c + N(u)

with the data weight alpha (the coefficient of the input field f), the decay beta, the constant
source c and the nonlinear remainder N (every summand that is not affine in u).  f may only
appear linearly and with its matching ``-alpha u``; alpha >= 0.

:func:`reaction_bound` turns the reaction and a proven bound ``lam >= lambda_max(A(u))`` (every
frozen u) into the step bound of the explicit scheme ``u+ = u - tau (A u - r(u, f))`` and the
statement it proves, for the statements of docs/theory.md §11:

- no forcing (f = 0, c = 0), ``k = alpha + beta >= 0``: ``tau <= 2 / (lam + k)`` gives
  ``||u^(n+1)|| <= ||u^n||`` (sharp);
- forcing ``alpha f + c`` with ``k > 0``: ``tau <= 2 / (lam + 2 k)`` gives
  ``||u^n|| <= max(||u^0||, ||(alpha f + c) / k||)`` (sharp); with c = 0 the right side is at
  most ``max(||u^0||, ||f||)``; ``||u^n - f||`` is NOT monotone;
- a linear source (beta < 0) or a constant source without damping: constants grow, for every tau
  (neumann / periodic on every axis: "not stable"; otherwise "cannot prove");
- a nonlinear N: no Euclidean statement; the invariant-region rule (:func:`invariant_region`)
  when every term states a nonnegative stencil, else "cannot prove".

:func:`implicit_bound` states what the lagged-weight implicit step proves for every tau.  A claim
that is not a decrease of ``||u||`` travels in the report (``invariant_region``,
``bounded_by_forcing``) so that ``pde2net verify`` checks the claim that is made.

The emitters build :class:`pde2net.operators.runtime.reaction.Reaction` (live) and print the same
object for the standalone source (:func:`reaction_source`); :class:`ReactionFamily` is the object
registered with :func:`pde2net.operators.base.register_reaction`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import sympy as sp
from sympy.core.function import AppliedUndef

from .. import exprs
from . import base
from .base import Context, Reaction, TermSource, cite

FAMILY = "reaction"
#: the op-tree variable of u in the nonlinear remainder (params keep their .pde names)
U_VAR = "__u"
#: the reaction N must stay a polynomial of moderate degree to be expanded exactly
MAX_DEGREE = 64
#: boundary kinds under which every difference operator annihilates constants (A(u) 1 = 0)
CONSTANT_KERNEL = ("neumann", "periodic")
SECTION = cite(11)
EXPECTED = ("alpha * (f - u) (data, alpha >= 0, f an input field), - beta * u (decay), + c "
            "(constant source), or a pointwise function of u such as u - u^3")


# --------------------------------------------------------------------------- decomposition

def as_expr(x: Any) -> sp.Expr:
    """A sympy value from a sympy value or a Python number (never from text)."""
    if isinstance(x, sp.Basic):
        return x
    return sp.Integer(x) if isinstance(x, int) else sp.Float(x)

def reaction_of(expr: sp.Expr, ctx: Context) -> Reaction:
    """The exact decomposition ``r = alpha (f - u) - beta u + c + N(u)`` of the derivative-free
    summands ``expr`` (their sum; params as symbols, values in ``ctx.params``).

    Raises ``ctx.error`` for: a derivative or an unknown name; more than one input field; f
    inside a nonlinear expression (``f * u``, ``f^2``, ``exp(f)``); a term in f without its
    matching ``-alpha u`` (``+ alpha * f`` alone); a negative data weight; a coefficient that is
    not a finite real number; a nonlinear part the network cannot evaluate."""
    expr = as_expr(expr)
    if expr == 0:
        return Reaction()
    _check_names(expr, ctx)
    f, name = _the_input(expr, ctx)
    u = ctx.u
    alpha = sp.Integer(0)
    rest = expr
    if f is not None:
        alpha = sp.expand(sp.diff(expr, f))
        if alpha.has(f) or alpha.has(u):
            raise ctx.error(f"the data field {name} enters the reaction {_plain(expr, ctx)} "
                            f"nonlinearly (coefficient {_plain(alpha, ctx)})",
                            f"{name} only in a data term alpha * ({name} - u)")
        rest = sp.expand(expr - alpha * f)
        if rest.has(f):
            raise ctx.error(f"the data field {name} enters the reaction {_plain(expr, ctx)} "
                            f"nonlinearly", f"{name} only in a data term alpha * ({name} - u)")
    constant, linear, nonlinear = _split(rest, u, ctx)
    decay = sp.expand(-(linear + alpha))
    a_val = _real_value(alpha, ctx, f"the data weight of {name}")
    _real_value(constant, ctx, "the constant source")
    b_val = _real_value(decay, ctx, "the decay")
    if a_val < 0:
        raise ctx.error(f"the data weight {_equals(alpha, a_val, ctx)} is negative: "
                        f"alpha * ({name} - u) with alpha < 0 pushes u away from {name}",
                        f"alpha * ({name} - u) with alpha >= 0")
    if a_val > 0 and b_val < 0 and nonlinear is None:
        # alpha f without its -alpha u: no statement of the theory covers a forcing by f with a
        # linear source (a nonlinear reaction is analysed as a whole, so there any split is fine)
        raise ctx.error(
            f"the term {_plain(alpha * f, ctx)} in the data field {name} has no matching "
            f"{_plain(-alpha * u, ctx)}: the coefficient of u is {_equals(linear, ctx.value(linear), ctx)}, "
            f"larger than -alpha = {-a_val} (a data term together with a linear source)",
            f"alpha * ({name} - u), optionally - beta * u with beta >= 0")
    if nonlinear is not None:
        nonlinear_op(nonlinear, ctx)  # refuses what the network cannot evaluate, here
    return Reaction(decay=decay, data=alpha, input=name if f is not None else None,
                    constant=constant, nonlinear=nonlinear, text=_plain(expr, ctx))


def _check_names(expr: sp.Expr, ctx: Context) -> None:
    """Only u, params and input fields; no derivative (the recogniser's part)."""
    derivs = sorted({str(a.func) for a in expr.atoms(AppliedUndef)})
    if derivs:
        raise ctx.error(f"the reaction part {_plain(expr, ctx)} contains {', '.join(derivs)}",
                        "a derivative-free reaction: " + EXPECTED)
    known = {ctx.u, *ctx.param_symbols.values(), *ctx.inputs.values()}
    unknown = sorted(str(s) for s in expr.free_symbols - known)
    if unknown:
        raise ctx.error(f"the reaction part {_plain(expr, ctx)} uses {', '.join(unknown)}, which is "
                        f"neither the field, a param nor an input field", EXPECTED)


def _the_input(expr: sp.Expr, ctx: Context) -> tuple[Optional[sp.Symbol], Optional[str]]:
    """The one input field the reaction reads (None if none)."""
    used = [(sym, name) for name, sym in ctx.inputs.items() if expr.has(sym)]
    if len(used) > 1:
        raise ctx.error(f"the reaction reads {len(used)} input fields "
                        f"({', '.join(n for _, n in used)})", "one data term alpha * (f - u)")
    return used[0] if used else (None, None)


def _split(rest: sp.Expr, u: sp.Symbol, ctx: Context) -> tuple[sp.Expr, sp.Expr, Optional[sp.Expr]]:
    """``rest(u) = c + b u + N(u)``: the summands free of u, those ``coefficient * u``, and the
    others.  A polynomial of moderate degree is expanded fully (so ``r u (1 - u)`` gives
    ``b = r`` and ``N = -r u^2``); anything else is expanded over products only."""
    if rest.is_polynomial(u) and sp.degree(rest, u) <= MAX_DEGREE:
        expanded = sp.expand(rest)
    else:
        expanded = sp.expand(rest, power_base=False, power_exp=False, multinomial=False, log=False)
    constant, linear, other = sp.Integer(0), sp.Integer(0), []
    for term in sp.Add.make_args(expanded):
        if term == 0:
            continue
        coeff, dep = term.as_independent(u, as_Add=False)
        if dep == 1:
            constant += term
        elif dep == u:
            linear += coeff
        else:
            other.append(term)
    return constant, linear, (sp.Add(*other) if other else None)


def _real_value(expr: sp.Expr, ctx: Context, what: str) -> sp.Expr:
    """The exact value of a coefficient (params substituted): a finite real number."""
    v = sp.simplify(ctx.value(expr))
    if not (v.is_number and v.is_extended_real and v.is_finite):
        raise ctx.error(f"{what} {_plain(expr, ctx)} is {v}, not a finite real number",
                        "real params")
    return v


def _plain(expr: Any, ctx: Context) -> str:
    """The expression as the user wrote it: the symbols' .pde names (no internal markers)."""
    expr = as_expr(expr)
    names = {ctx.u: _name(ctx.u)}
    names.update({s: n for n, s in ctx.param_symbols.items()})
    names.update({s: n for n, s in ctx.inputs.items()})
    return str(expr.xreplace({s: sp.Symbol(n) for s, n in names.items() if s in expr.free_symbols}))


def _equals(expr: sp.Expr, value: sp.Expr, ctx: Context) -> str:
    """``expr = value``, or just the value when the expression is that number."""
    text = _plain(expr, ctx)
    return text if text == str(value) else f"{text} = {value}"


def _name(sym: sp.Symbol) -> str:
    return str(sym).split("'")[0]


# ---------------------------------------------------------------------------------- values
@dataclass(frozen=True)
class Coefficients:
    """The exact values of ``alpha, beta, c`` and ``k = alpha + beta`` (params substituted)."""

    alpha: sp.Expr
    beta: sp.Expr
    c: sp.Expr

    @property
    def k(self) -> sp.Expr:
        return self.alpha + self.beta


def coefficients(reaction: Reaction, ctx: Context) -> Coefficients:
    """alpha, beta and c of ``reaction``, exact."""
    return Coefficients(*(sp.simplify(ctx.value(x))
                          for x in (reaction.data, reaction.decay, reaction.constant)))


def nonlinear_op(n: sp.Expr, ctx: Context) -> exprs.Op:
    """The op tree of N(u) over :data:`U_VAR` (params by name), shared by the live module, the
    source printer and the NumPy evaluation."""
    names = {ctx.u: U_VAR, **{sym: name for name, sym in ctx.param_symbols.items()}}
    floats = {sym: float(ctx.params[name]) for name, sym in ctx.param_symbols.items()}
    try:
        return exprs.lower_expr(n, names, frozenset({ctx.u}), floats)
    except (exprs.UnsupportedExpression, TypeError, ValueError) as exc:
        raise ctx.error(f"the reaction {_plain(n, ctx)} cannot be evaluated by the network: {exc}",
                        "a real function of u built from + - * / ^ and exp log sqrt abs tanh sin "
                        "cos atan min max") from None


def _coefficient_op(x: sp.Expr, ctx: Context) -> exprs.Op:
    names = {sym: name for name, sym in ctx.param_symbols.items()}
    return exprs.lower_expr(as_expr(x), names)


def _floats(ctx: Context) -> dict[str, float]:
    return {name: float(v) for name, v in ctx.params.items()}


def coefficient_floats(reaction: Reaction, ctx: Context) -> tuple[float, float, float]:
    """``(beta, alpha, c)`` as the network's floats: each coefficient's op tree evaluated with the
    params' floats, exactly as the printed source computes it."""
    env = _floats(ctx)
    return tuple(float(exprs.evaluate(_coefficient_op(x, ctx), env, {}))
                 for x in (reaction.decay, reaction.data, reaction.constant))


# ---------------------------------------------------------------------------------- emitters
class LiveNonlinear:
    """Evaluates N(u)'s op tree on a tensor (a plain callable, as the source holds a function)."""

    def __init__(self, op: exprs.Op, params: dict[str, float], text: str) -> None:
        self.op, self.params, self.text = op, params, text
        self.__name__ = "N"
        self._lib = exprs.LIBS["torch"]()

    def __call__(self, u: Any) -> Any:
        import torch

        n = exprs.evaluate(self.op, {**self.params, U_VAR: u}, self._lib)
        return n if isinstance(n, torch.Tensor) and n.shape == u.shape else n + torch.zeros_like(u)


def torch_reaction(reaction: Reaction, ctx: Context) -> Any:
    """The live runtime object :class:`pde2net.operators.runtime.reaction.Reaction`."""
    from .runtime.reaction import Reaction as Runtime

    decay, data, constant = coefficient_floats(reaction, ctx)
    nonlinear = None
    if reaction.nonlinear is not None:
        nonlinear = LiveNonlinear(nonlinear_op(reaction.nonlinear, ctx), _floats(ctx),
                                  _plain(reaction.nonlinear, ctx))
    return Runtime(decay=decay, data=data, constant=constant, nonlinear=nonlinear)


def reaction_source(reaction: Reaction, ctx: Context, pnames: dict[str, str], prefix: str) -> TermSource:
    """How the standalone source builds the same runtime object: the printed N (validated
    names and printed numbers only) and ``Reaction(decay=..., data=..., constant=...,
    nonlinear=...)`` with the coefficients printed from the same op trees as the live values.
    ``pnames``: the params' .pde names -> module-level constants; ``prefix``: a unique prefix."""
    floats = _floats(ctx)
    scalars = frozenset(pnames)

    def coef(x: sp.Expr) -> str:
        return exprs.to_source(_coefficient_op(x, ctx), pnames, "torch", scalars, values=floats)

    functions: tuple[str, ...] = ()
    nonlinear = "None"
    if reaction.nonlinear is not None:
        name = f"{prefix}reaction_n"
        body = exprs.to_source(nonlinear_op(reaction.nonlinear, ctx), {U_VAR: "u", **pnames},
                               "torch", scalars, values=floats)
        functions = (f"def {name}(u: torch.Tensor) -> torch.Tensor:\n"
                     f'    """N(u) = {_doc_text(_plain(reaction.nonlinear, ctx))}"""\n'
                     f"    n = {body}\n"
                     f"    return n if isinstance(n, torch.Tensor) and n.shape == u.shape "
                     f"else n + torch.zeros_like(u)\n",)
        nonlinear = name
    expression = (f"Reaction(decay=float({coef(reaction.decay)}), data=float({coef(reaction.data)}), "
                  f"constant=float({coef(reaction.constant)}), nonlinear={nonlinear})")
    return TermSource(runtime=("reaction",), functions=functions, expression=expression)


def _doc_text(text: str) -> str:
    """Only characters of printed math survive in a docstring."""
    return "".join(ch for ch in text if ch.isalnum() or ch in " +-*/^()._,")


def numpy_reaction(reaction: Reaction, ctx: Context, u: Any, f: Any = None) -> Any:
    """``r(u, f)`` in float64 NumPy from the exact coefficients (verify's reference)."""
    import numpy as np

    u = np.asarray(u, dtype=np.float64)
    c = coefficients(reaction, ctx)
    out = np.zeros_like(u)
    if c.alpha != 0:
        out = out + float(c.alpha) * (np.asarray(f, dtype=np.float64) - u)
    if c.beta != 0:
        out = out - float(c.beta) * u
    if c.c != 0:
        out = out + float(c.c)
    if reaction.nonlinear is not None:
        out = out + np.asarray(exprs.evaluate(nonlinear_op(reaction.nonlinear, ctx),
                                              {**_floats(ctx), U_VAR: u}, exprs.LIBS["numpy"]()))
    return out


def describe(reaction: Reaction, ctx: Context) -> str:
    """One line for reports: the reaction and the branch it becomes."""
    if reaction.empty:
        return "no reaction"
    c = coefficients(reaction, ctx)
    parts = []
    if c.alpha != 0:
        parts.append(f"data alpha = {c.alpha} (skip from {reaction.input} into every block)")
    if c.beta != 0:
        parts.append(f"decay beta = {c.beta}")
    if c.c != 0:
        parts.append(f"constant source c = {c.c}")
    if reaction.nonlinear is not None:
        parts.append(f"pointwise N(u) = {_plain(reaction.nonlinear, ctx)}")
    return f"reaction {reaction.text}: " + ", ".join(parts)


# ------------------------------------------------------------------------------------ bound
@dataclass(frozen=True)
class ReactionClaim:
    """The step bound the reaction allows and the statement it proves: ``tau_max`` (exact, None
    when there is none), ``statement`` (what the verdict claims, in formulas), ``verdict``
    ("stable" | "not stable" | "cannot prove"), ``reason`` (why, citing the theory), and
    ``hypotheses`` (``{"name", "holds", "detail"}`` dicts).  Unpacks as the 5-tuple
    ``(tau_max, statement, verdict, reason, hypotheses)``."""

    tau_max: Optional[sp.Expr]
    statement: str
    verdict: str
    reason: str
    hypotheses: tuple = ()
    section: str = SECTION
    tight: bool = False
    #: (a, b): the claim is the invariant region [a, b] (not a norm bound)
    region: Optional[tuple] = None
    #: (alpha, c, k): the claim is ||u^n|| <= max(||u^0||, ||(alpha f + c) / k||), c != 0
    forcing: Optional[tuple] = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.tau_max, self.statement, self.verdict, self.reason, self.hypotheses))


def _hyp(name: str, holds: bool, detail: str = "") -> dict:
    return {"name": name, "holds": bool(holds), "detail": detail}


def reaction_bound(reaction: Reaction, lam: Optional[sp.Expr], ctx: Context, terms: Optional[tuple] = None,
                   data_zero: bool = False, scheme: str = "explicit") -> ReactionClaim:
    """The explicit step's bound with the reaction, given ``lam >= lambda_max(A(u))`` for every
    frozen u (exact; None: no proven bound), per docs/theory.md §11 (see the module docstring).

    ``data_zero``: claim the f = 0 statement (only for a caller that knows f = 0); by default f
    is arbitrary (it defaults to the initial image at run time).  ``terms``: the operator's terms,
    needed only by the invariant-region rule of a nonlinear reaction.  ``scheme``: the statements
    are about the explicit step; a nonlinear reaction under another scheme is "cannot prove"."""
    c = coefficients(reaction, ctx)
    unsafe = _float_unsafe(reaction, ctx)
    if unsafe:
        return ReactionClaim(None, "", "cannot prove", f"cannot prove: {unsafe}")
    forcing = (c.alpha != 0 and not data_zero) or c.c != 0
    psd = _hyp("A(u) symmetric positive semidefinite, lambda_max(A(u)) <= lam for every frozen u",
               lam is not None, f"lam = {lam}" if lam is not None else "no proven bound on lambda_max(A)")
    if reaction.nonlinear is not None:
        return invariant_region(reaction, lam, ctx, terms, scheme)
    growth = _growth(c, ctx)
    if growth is not None:
        return growth
    if lam is None:
        return ReactionClaim(None, "", "cannot prove", "cannot prove: no proven bound on "
                             "lambda_max(A) of the diffusion terms", (psd,))
    k = c.k  # f = 0 removes the forcing, not the damping -alpha u
    signs = (_hyp("alpha >= 0", c.alpha >= 0, f"alpha = {c.alpha}"),
             _hyp("beta >= 0 (decay, not a source)", c.beta >= 0, f"beta = {c.beta}"))
    if not forcing:
        tau = sp.Integer(2) / (lam + k)
        what = _homogeneous_words(c, data_zero)
        statement = f"||u^(n+1)||_2 <= ||u^n||_2 for tau <= 2 / (lam + {k}) = {tau}"
        reason = (f"{what}: u+ = (I - tau (A + k I)) u with k = {k} has spectrum in "
                  f"[1 - tau (lam + k), 1], so ||u+|| <= ||u|| iff tau <= 2 / (lam + k) "
                  f"({SECTION}; sharp: the top eigenvector grows just above it)")
        return ReactionClaim(tau, statement, "stable", reason, (psd,) + signs, tight=True)
    tau = sp.Integer(2) / (lam + 2 * k)
    target = _forcing_words(c, reaction)
    not_monotone = f": ||u^n - {reaction.input}|| is not monotone" if c.alpha != 0 else ""
    statement = (f"||u^n||_2 <= max(||u^0||_2, {target}) for every n, for tau <= 2 / (lam + 2 k) "
                 f"= {tau} with k = alpha + beta = {k} (a bound, not a decrease{not_monotone})")
    reason = (f"forcing {_forcing_text(c, reaction)}: u+ = M u + tau k g with M = I - tau (A + k I), "
              f"g = (alpha f + c) / k; for tau <= 2 / (lam + 2 k) the spectrum of M lies in "
              f"[-(1 - tau k), 1 - tau k], so ||u+|| <= (1 - tau k) ||u|| + tau k ||g|| <= "
              f"max(||u||, ||g||) ({SECTION}; sharp: between 2 / (lam + 2 k) and 2 / (lam + k) one "
              f"step exceeds the max). Claimed: the bounded statement, for every f; with f = 0 the "
              f"larger step 2 / (lam + k) = {sp.Integer(2) / (lam + k)} would give a non-increasing "
              f"||u||, which is not claimed")
    hyps = (psd,) + signs + (_hyp("k = alpha + beta > 0", True, f"k = {k}"),
                              _hyp("f fixed during the run", True,
                                   "the data field is an input of every block"))
    return ReactionClaim(tau, statement, "stable", reason, hyps, tight=True,
                         forcing=(c.alpha, c.c, k) if c.c != 0 else None)


def implicit_bound(reaction: Reaction, ctx: Context) -> ReactionClaim:
    """The statement of the lagged-weight implicit step ``(I + tau (A + k I)) u+ = u + tau (alpha f
    + c)`` (docs/theory.md §5, §11), for every tau: with ``k = alpha + beta > 0`` the solve is
    ``u+ = M u + tau k M g``, M symmetric with spectrum in (0, 1/(1 + tau k)], so
    ``||u+|| <= (||u|| + tau k ||g||) / (1 + tau k) <= max(||u||, ||g||)``, g = (alpha f + c) / k;
    without forcing ``||u+|| <= ||u||``.  A source (beta < 0, or c != 0 with k = 0): as for the
    explicit step, constants grow ("not stable" under neumann / periodic, else "cannot prove").
    ``tau_max`` is None: there is no step bound."""
    c = coefficients(reaction, ctx)
    unsafe = _float_unsafe(reaction, ctx)
    if unsafe:
        return ReactionClaim(None, "", "cannot prove", f"cannot prove: {unsafe}")
    if reaction.nonlinear is not None:
        return ReactionClaim(None, "", "cannot prove", "cannot prove: the implicit step needs a "
                             f"linear reaction ({SECTION})")
    growth = _growth(c, ctx)
    if growth is not None:
        return growth
    forcing = c.alpha != 0 or c.c != 0
    statement = (f"||u^(n+1)|| <= max(||u^n||, {_forcing_words(c, reaction)}) for every tau"
                 if forcing and c.k > 0 else "||u^(n+1)|| <= ||u^n|| for every tau")
    return ReactionClaim(None, statement, "stable", f"{statement} ({SECTION})",
                         forcing=(c.alpha, c.c, c.k) if c.c != 0 else None)


def _float_unsafe(reaction: Reaction, ctx: Context) -> str:
    """Why the network cannot hold the reaction's coefficients in float32 (the narrowest dtype a
    run uses): a nonzero value outside float32's normal range becomes inf or is flushed to 0, and
    the step the report proves is then not the step the network takes.  Empty when they fit."""
    for name, v in zip(("decay", "data weight", "constant source"), coefficient_floats(reaction, ctx)):
        if v != 0 and not exprs.FLOAT32_TINY <= abs(v) <= exprs.FLOAT32_MAX:
            return (f"the reaction's {name} {v:g} is outside float32's normal range "
                    f"[{exprs.FLOAT32_TINY:.3g}, {exprs.FLOAT32_MAX:.3g}] ({SECTION})")
    return ""


def _homogeneous_words(c: Coefficients, data_zero: bool) -> str:
    parts = []
    if c.alpha != 0:
        parts.append(f"data alpha = {c.alpha} with f = 0" if data_zero else f"data alpha = {c.alpha}")
    if c.beta != 0:
        parts.append(f"decay beta = {c.beta}")
    return " and ".join(parts) or "no reaction"


def _forcing_text(c: Coefficients, reaction: Reaction) -> str:
    parts = []
    if c.alpha != 0:
        parts.append(f"{c.alpha} {reaction.input}")
    if c.c != 0:
        parts.append(f"{c.c}")
    return " + ".join(parts)


def _forcing_words(c: Coefficients, reaction: Reaction) -> str:
    """The norm the iterates stay below: ``||f||`` for a pure data term, else ``||g||``."""
    f = reaction.input
    if c.c == 0 and c.beta == 0:
        return f"||{f}||_2"
    if c.c == 0:
        return f"{c.alpha / c.k} ||{f}||_2 <= ||{f}||_2"
    if c.alpha == 0:
        return f"|{c.c / c.k}| sqrt(n)  (n grid values: ||c / beta||_2 of the constant field)"
    return f"||({c.alpha} {f} + {c.c}) / {c.k}||_2"


def _growth(c: Coefficients, ctx: Context) -> Optional[ReactionClaim]:
    """A source: beta < 0 (and no data term), or a constant c != 0 without damping.  Under
    neumann / periodic on every axis A(u) 1 = 0, so constants show the growth for every tau
    ("not stable"); with a dirichlet axis constants are not in the kernel: "cannot prove"."""
    if c.beta >= 0 and (c.k > 0 or c.c == 0):
        return None
    kernel = all(b in CONSTANT_KERNEL for b in ctx.boundaries)
    hyp = _hyp("A(u) 1 = 0 (neumann or periodic on every axis: differences annihilate constants)",
               kernel, f"boundaries {', '.join(ctx.boundaries)}")
    if c.beta < 0 and c.alpha != 0:
        return ReactionClaim(None, "", "cannot prove",
                             f"cannot prove: data alpha = {c.alpha} with a linear source "
                             f"beta = {c.beta} < 0 ({SECTION})", (hyp,))
    if c.beta < 0:
        if kernel:
            return ReactionClaim(
                None, f"a constant u^0 = s grows: u^n = (1 + tau {-c.beta})^n (s + {c.c / c.beta}) "
                f"- {c.c / c.beta}, for every tau > 0", "not stable",
                f"not stable: the linear source -beta u with beta = {c.beta} < 0 makes constants "
                f"grow by 1 + tau |beta| per step for every tau, since A(u) 1 = 0 ({SECTION})", (hyp,))
        return ReactionClaim(
            None, "", "cannot prove",
            f"cannot prove: a linear source -beta u with beta = {c.beta} < 0 under dirichlet "
            f"boundaries would need lambda_min(A(u)) >= |beta| for every frozen u, which is not "
            f"derived ({SECTION})", (hyp,))
    if kernel:  # c != 0, k = 0: the mean grows linearly
        return ReactionClaim(
            None, f"mean(u^n) = mean(u^0) + {c.c} n tau exactly (no bound on ||u^n||); what holds: "
            f"||u^n - {c.c} t_n||_2 <= ||u^0||_2 for tau <= 2 / lam (explicit; every tau for the "
            f"implicit step)", "not stable",
            f"not stable: the constant source c = {c.c} without decay or data term: 1^T A(u) = 0, "
            f"so the mean of u grows as c t for every tau and ||u|| is unbounded. Since A(u + s 1) = "
            f"A(u), u - c t follows the scheme without source and is non-increasing in norm for "
            f"tau <= 2 / lam (explicit; every tau for the implicit step) ({SECTION})", (hyp,))
    return ReactionClaim(
        None, "", "cannot prove",
        f"cannot prove: a constant source c = {c.c} without decay or data term under dirichlet "
        f"boundaries; a bound on ||u|| would need lambda_min(A(u)) > 0 uniformly in u, which is "
        f"not derived ({SECTION})", (hyp,))


# ------------------------------------------------------------------------- invariant region
def _nonnegative_stencil(term: Any, ctx: Context) -> Optional[sp.Expr]:
    """The term's proven bound on the diagonal of ``D^T G D`` if it states that every frozen
    ``D^T G D`` has nonpositive off-diagonal entries (a nonnegative stencil: the explicit step
    combines the neighbours with nonnegative weights); None otherwise.  Terms state it with the
    optional attribute ``nonnegative_stencil``: the bound itself, or a method of ``ctx``
    returning it (None where the term cannot state it, e.g. g >= 0 not proven)."""
    got = getattr(term, "nonnegative_stencil", None)
    return got(ctx) if callable(got) else got


def invariant_region(reaction: Reaction, lam: Optional[sp.Expr], ctx: Context,
                     terms: Optional[tuple], scheme: str = "explicit") -> ReactionClaim:
    """The invariant-region rule for a nonlinear reaction (docs/theory.md §11), proven there:

    Let ``R(v) = N(v) - beta v + c`` have real roots a < b (the smallest and the largest), every
    term a nonnegative stencil with diagonal at most W (the sum of the terms' diagonal bounds),
    0 in [a, b] if an axis is dirichlet (the ghost values), and ``m = min_{[a, b]} R'``.  If
    ``tau (W + alpha - m) <= 1``, every explicit step maps values in [a, b] (of u and of f) to
    values in [a, b].  Otherwise, or without those hypotheses: "cannot prove"."""
    c = coefficients(reaction, ctx)
    no = "cannot prove: a nonlinear reaction has no Euclidean stability statement (" + SECTION + ")"
    if scheme != "explicit":
        return ReactionClaim(None, "", "cannot prove",
                             f"{no}; the invariant-region rule covers the explicit step only, "
                             f"not {scheme}")
    if terms is None:
        return ReactionClaim(None, "", "cannot prove",
                             f"{no}; the invariant-region rule needs the terms' stencil signs")
    diagonals = [_nonnegative_stencil(t, ctx) for t in terms]
    if any(d is None for d in diagonals):
        bad = ", ".join(sorted({getattr(t, "family", "?") for t, d in zip(terms, diagonals) if d is None}))
        return ReactionClaim(None, "", "cannot prove",
                             f"{no}; the invariant-region rule needs a nonnegative stencil, which "
                             f"the {bad} term does not have (or does not state)")
    v = sp.Symbol("v", real=True)
    R = ctx.value(reaction.nonlinear).xreplace({ctx.u: v}) - c.beta * v + c.c
    R_text = _plain(R.xreplace({v: ctx.u}), ctx)
    region = _roots(R, v)
    if region is None:
        return ReactionClaim(None, "", "cannot prove",
                             f"{no}; the invariant-region rule needs a polynomial reaction R(u) = "
                             f"{R_text} with two distinct real roots")
    a, b = region
    dirichlet = any(kind == "dirichlet" for kind in ctx.boundaries)
    if dirichlet and not (a <= 0 <= b):
        return ReactionClaim(None, "", "cannot prove",
                             f"{no}; with dirichlet boundaries the ghost value 0 must lie in the "
                             f"invariant interval [{a}, {b}]")
    overflow = _float32_overflow(reaction, ctx, a, b)
    if overflow:
        return ReactionClaim(None, "", "cannot prove", f"{no}; {overflow}")
    m, exact = _min_on(sp.diff(R, v), v, a, b)
    W = sp.nsimplify(sum(diagonals, sp.Integer(0)))
    denom = sp.simplify(W + c.alpha - m)
    if not (denom.is_positive):
        return ReactionClaim(None, "", "cannot prove", f"{no}; degenerate invariant-region "
                             f"condition W + alpha - min R' = {denom} <= 0")
    tau = sp.Integer(1) / denom
    fvals = f" and of {reaction.input}" if c.alpha != 0 else ""
    interval = f"[{a}, {b}]"
    statement = (f"invariant region {interval}: if every value of u^0{fvals} lies in {interval}, so "
                 f"does every value of u^n, for tau <= 1 / (W + alpha - min R') = {tau} "
                 f"(nothing is claimed for other inputs)")
    reason = (f"invariant region of R(u) = {R_text} between its roots {a} and {b} "
              f"({SECTION}): with a nonnegative stencil of diagonal <= W = {W}, "
              f"alpha = {c.alpha} and min R' = {m} on {interval}"
              f"{'' if exact else ' (a rational lower bound)'}, the step u+_i = (1 - tau W_i) u_i + "
              f"tau sum_j w_ij u_j + tau (R(u_i) + alpha (f_i - u_i)) is nondecreasing in every "
              f"argument, so [a, b] is invariant")
    hyps = (
        _hyp("every term has a nonnegative stencil (nonpositive off-diagonal entries of D^T G D)",
             True, f"diagonal <= W = {W}"),
        _hyp("R(a) = R(b) = 0 at the ends of the interval", True, f"R(u) = {R_text}"),
        _hyp("the explicit scheme", True, scheme),
        _hyp("0 in the interval (dirichlet ghost values)", (a <= 0 <= b) or not dirichlet,
             "dirichlet" if dirichlet else "no dirichlet axis"),
        _hyp(f"the claim covers inputs with values in {interval}", True,
             "u^0" + (f" and {reaction.input}" if c.alpha != 0 else "") + " outside it: no claim"),
    )
    return ReactionClaim(tau, statement, "stable", reason, hyps, tight=False, region=(a, b))


def _float32_overflow(reaction: Reaction, ctx: Context, a: sp.Expr, b: sp.Expr) -> str:
    """Why float32 cannot evaluate N(u) on [a, b] (its op tree at 257 points and the ends gives a
    non-finite value), empty when it can: the invariant region is about the network's values."""
    import numpy as np

    u = np.linspace(float(a), float(b), 257, dtype=np.float32)
    with np.errstate(all="ignore"):
        n = exprs.evaluate(nonlinear_op(reaction.nonlinear, ctx), {**_floats(ctx), U_VAR: u},
                           exprs.LIBS["numpy"]())
        n = np.asarray(n, dtype=np.float32) * np.float32(1)
    if np.all(np.isfinite(n)):
        return ""
    return f"N(u) = {_plain(reaction.nonlinear, ctx)} is not finite in float32 on [{a}, {b}]"


def _roots(R: sp.Expr, v: sp.Symbol) -> Optional[tuple[sp.Expr, sp.Expr]]:
    """The smallest and the largest real root of the polynomial R (exact), or None."""
    if not R.is_polynomial(v):
        return None
    try:
        poly = sp.Poly(sp.expand(R), v)
        if poly.degree() < 2 or poly.degree() > MAX_DEGREE:
            return None
        roots = sorted(set(sp.real_roots(poly)), key=lambda r: float(sp.N(r, 30)))
    except (sp.PolynomialError, NotImplementedError, ValueError, TypeError):
        return None
    if len(roots) < 2:
        return None
    return roots[0], roots[-1]


def _min_on(dR: sp.Expr, v: sp.Symbol, a: sp.Expr, b: sp.Expr) -> tuple[sp.Expr, bool]:
    """``min_{[a, b]} dR`` (a polynomial): exact where the candidates (ends and critical points)
    are rational, otherwise a rational lower bound (at most 2e-30 below it)."""
    cands = [a, b]
    crit = sp.Poly(sp.expand(sp.diff(dR, v)), v)
    if crit.degree() >= 1:
        cands += [r for r in sp.real_roots(crit) if a < r < b]
    values = [sp.expand(dR.xreplace({v: x})) for x in cands]
    if all(x.is_Rational for x in values):
        return min(values), True
    lows = [x if x.is_Rational else sp.Rational(int(sp.floor(sp.N(x, 50) * 10**30)) - 1, 10**30)
            for x in values]
    return min(lows), False


# ------------------------------------------------------------------------------- the family
@dataclass(frozen=True)
class ReactionFamily:
    """The reaction family of :class:`pde2net.operators.base.ReactionFamily`: decomposition,
    bound, live module, source and the linear coefficient for the implicit scheme."""

    name: str = FAMILY

    def decompose(self, expr: sp.Expr, ctx: Context) -> Reaction:
        return reaction_of(expr, ctx)

    def bound(self, reaction: Reaction, lam: sp.Expr, ctx: Context,
              terms: Optional[tuple] = None) -> base.ReactionBound:
        """:func:`reaction_bound` in the report's form: ``failure`` "negative" for "not stable",
        "unknown" for "cannot prove", "" when a step bound is proven.  ``terms`` (the
        operator's) are needed by the invariant-region rule only."""
        claim = reaction_bound(reaction, lam, ctx, terms=terms)
        failure = "" if claim.tau_max is not None else \
            "negative" if claim.verdict == "not stable" else "unknown"
        statement = claim.statement or claim.verdict
        return base.ReactionBound(claim.tau_max, failure, statement, claim.reason, claim.section,
                                  tuple(claim.hypotheses), claim.region, claim.forcing)

    def implicit(self, reaction: Reaction, ctx: Context) -> base.ReactionBound:
        """:func:`implicit_bound` in the report's form (``failure`` as in :meth:`bound`)."""
        claim = implicit_bound(reaction, ctx)
        failure = "" if claim.verdict == "stable" else \
            "negative" if claim.verdict == "not stable" else "unknown"
        return base.ReactionBound(None, failure, claim.statement, claim.reason, claim.section,
                                  tuple(claim.hypotheses), None, claim.forcing)

    def torch_reaction(self, reaction: Reaction, ctx: Context) -> Any:
        return torch_reaction(reaction, ctx)

    def source(self, reaction: Reaction, ctx: Context, pnames: dict[str, str],
               prefix: str = "reaction_") -> TermSource:
        return reaction_source(reaction, ctx, pnames, prefix)

    def linear_coefficient(self, reaction: Reaction, ctx: Context) -> Optional[sp.Expr]:
        """``c = beta + alpha`` (exact value) with ``r(u, f) = -c u + r(0, f)`` when r is affine
        in u (no nonlinear part), else None."""
        if reaction.nonlinear is not None:
            return None
        return coefficients(reaction, ctx).k


FAMILY_OBJECT = base.register_reaction(ReactionFamily())
