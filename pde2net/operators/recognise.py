"""The operator model's recogniser: the equation's right side -> :class:`~.base.OperatorSpec`.

The right side is split into summands (products distributed at the top level only, so that
``alpha * (f - u)`` and ``c * (dx(...) + dy(...))`` split as written).  A summand with a
derivative of the field is offered to the registered families in order; the summands without
one form the reaction part, which the reaction family decomposes (docs/theory.md §11).
"""
from __future__ import annotations

from typing import Optional

import sympy as sp

from . import base
from .base import Context, OperatorSpec, Reaction

#: the derivative functions of the language (undefined sympy functions, by name)
DERIVATIVES = frozenset({"dx", "dy", "dz", "grad", "div", "laplace", "norm", "gauss"})

#: the version-2 forms, for the message when a summand fits none (docs/language.md)
ACCEPTED_TERMS = (
    "a sum of diffusion terms: div(g(norm(grad(u))^2) * grad(u)) (1D-3D, channels, gauss(u, sigma) "
    "inside g), laplace(u), dx(phi(dx(u))), dy(g(dy(u)^2) * dy(u)), -dxx(g(dxx(u)^2) * dxx(u)), "
    "-laplace(g(laplace(u)^2) * laplace(u)), div(T * grad(u)) with a tensor T; plus pointwise terms "
    "alpha * (f - u), -beta * u, a constant, or a function of u"
)


def has_derivative(e: sp.Expr) -> bool:
    return any(str(a.func) in DERIVATIVES for a in e.atoms(sp.Function))


def summands(rhs: sp.Expr, u: sp.Symbol) -> tuple[sp.Expr, ...]:
    """The top-level summands; a factor free of the field multiplies each summand of the sum it
    stands before (``c * (dx(...) + dy(...))`` is two terms, while ``(1 - k) * laplace(u)`` stays
    one term with its factor: expanding the factor would make a forward term look backward)."""
    out: list[sp.Expr] = []
    for t in sp.Add.make_args(rhs):
        coeff, core = t.as_independent(u, as_Add=False) if t.is_Mul else (sp.Integer(1), t)
        if core.is_Add and has_derivative(core):
            out.extend(coeff * a for a in core.args)
        else:
            out.append(t)
    return tuple(out)


def recognise(rhs: sp.Expr, ctx: Context) -> OperatorSpec:
    """The :class:`OperatorSpec` of ``dt(u) = rhs``; raises ``ctx.error`` for a summand that no
    family accepts, naming it and the accepted forms."""
    from .. import analyse  # for show(); imported here: analyse imports base at module level

    terms, pointwise = [], []
    for t in summands(rhs, ctx.u):
        if not has_derivative(t):
            pointwise.append(t)
            continue
        term = _first_family(t, ctx)
        if term is None:
            raise ctx.error(f"the term {analyse.show(t)} is not a diffusion term pde2net knows",
                            ACCEPTED_TERMS)
        terms.append(term)
    if not terms:
        raise ctx.error(f"the right side {analyse.show(rhs)} has no diffusion term", ACCEPTED_TERMS)
    reaction = Reaction()
    if pointwise:
        if not base.REACTION_FAMILY:
            raise ctx.error("reaction and data terms are not available", ACCEPTED_TERMS)
        reaction = base.REACTION_FAMILY[0].decompose(sp.Add(*pointwise), ctx)
    return OperatorSpec(tuple(terms), reaction, ctx)


def _first_family(term: sp.Expr, ctx: Context) -> Optional[base.Term]:
    for family in base.FAMILIES:
        got = family.recognise(term, ctx)
        if got is not None:
            return got
    return None
