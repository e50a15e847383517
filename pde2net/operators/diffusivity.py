"""A scalar diffusivity ``g(s2)`` of a term: its proven range, its op tree, live and as source.

Every family with a pointwise weight ``G = g(...)`` (isotropic, per-axis, fourth order, EED)
builds one :class:`Diffusivity` from the sympy expression of ``g`` over :data:`S2`.  The facts
reuse the flux analysis of the scalar model (``Phi(s) = s g(s^2)``, docs/theory.md §8):
``L = sup g``, ``g >= 0``; the op tree is finite at ``s2 = 0`` (its limit there) and
overflow-safe (:class:`pde2net.lower.FiniteLowering`); the live module evaluates the tree, and the
source prints the same tree, so both compute the same operations in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import sympy as sp

from .. import exprs
from ..lower import RADIAL_VAR, S2, FiniteLowering
from ..stability import FluxFacts, flux_facts, real_everywhere
from .base import Context

S = sp.Symbol("s", real=True)


@dataclass(frozen=True)
class Diffusivity:
    """``g(s2)`` with params as symbols (``expr``), its op tree over ``__s2`` and the params'
    names, the params' float values, and what is proven about it (``facts``: ``L = sup g`` and
    ``g >= 0``; ``real``: g real and finite for every s2 >= 0, with the reason if not)."""

    expr: sp.Expr
    op: exprs.Op
    params: dict[str, float]
    facts: FluxFacts
    real: bool
    real_detail: str
    text: str

    @property
    def L(self) -> Optional[sp.Expr]:
        return self.facts.L if self.facts.status == "ok" else None

    @property
    def constant(self) -> bool:
        return not self.expr.has(S2)

    def hypotheses(self, name: str = "g") -> tuple[dict, ...]:
        """The report's hypotheses about this diffusivity (docs/theory.md §1, §8)."""
        f = self.facts
        return (
            {"name": f"0 <= {name}(s2) for every s2 >= 0", "holds": f.status in ("ok", "unbounded"),
             "detail": f.detail or f"inf {name} = {f.inf}"},
            {"name": f"sup {name} = L finite", "holds": f.status == "ok",
             "detail": f"L = {f.L}" if f.status == "ok" else f.detail},
            {"name": f"{name}(s2) real and finite for every s2 >= 0", "holds": self.real,
             "detail": self.real_detail},
        )

    @property
    def proven(self) -> bool:
        """Whether ``0 <= g <= L`` with a finite L is proven (the hypothesis of every bound)."""
        return self.facts.status == "ok" and self.real


def diffusivity_of(g: sp.Expr, ctx: Context, what: str = "the diffusivity") -> Diffusivity:
    """The :class:`Diffusivity` of ``g`` (a sympy expression of :data:`S2` and param symbols)."""
    values = ctx.values
    names = {S2: RADIAL_VAR, **{sym: name for name, sym in ctx.param_symbols.items()}}
    floats = {name: float(v) for name, v in ctx.params.items()}
    sym_values = {sym: floats[name] for name, sym in ctx.param_symbols.items()}
    try:
        _, op = FiniteLowering(names, sym_values).lower(g, S2, one_sided=True)
    except (exprs.UnsupportedExpression, TypeError, ValueError) as exc:
        raise ctx.error(f"{what} {g} cannot be emitted: {exc}",
                        "a real function built from + - * / ^ and exp log sqrt abs tanh sin cos atan "
                        "min max") from None
    phi = (g.xreplace(values) * S).xreplace({S2: S * S})
    facts = flux_facts(phi)
    dom = real_everywhere(phi)
    return Diffusivity(g, op, floats, facts, dom.holds is True, dom.detail,
                       str(g.xreplace({S2: sp.Symbol("s2")})))


# ---------------------------------------------------------------------------------- emitters
class LiveDiffusivity:
    """Evaluates the op tree on a tensor (the live module's g; not an nn.Module, so that the
    runtime classes hold it as a plain callable, as the source holds a function)."""

    def __init__(self, d: Diffusivity) -> None:
        self.d = d
        self._lib = exprs.LIBS["torch"]()

    def __call__(self, s2: Any) -> Any:
        import torch

        g = exprs.evaluate(self.d.op, {**self.d.params, RADIAL_VAR: s2}, self._lib)
        return g if isinstance(g, torch.Tensor) and g.shape == s2.shape else g + torch.zeros_like(s2)


def function_source(d: Diffusivity, name: str, pnames: dict[str, str]) -> str:
    """``def NAME(s2): return ...``: the same op tree, printed (validated names, printed numbers).
    ``pnames`` maps the params' .pde names to validated Python names of module-level constants
    (the emitter prints ``NAME = value`` lines for them; params alone are computed as Python
    floats, as the live evaluation does)."""
    body = exprs.to_source(d.op, {RADIAL_VAR: "s2", **pnames}, "torch", frozenset(pnames),
                           values=d.params)
    return (f"def {name}(s2: torch.Tensor) -> torch.Tensor:\n"
            f'    """g(s2) = {_doc_text(d.text)}"""\n'
            f"    g = {body}\n"
            f"    return g if isinstance(g, torch.Tensor) and g.shape == s2.shape else g + torch.zeros_like(s2)\n")


def _doc_text(text: str) -> str:
    """The diffusivity's text for a docstring: only characters of printed math survive."""
    return "".join(ch for ch in text.replace("'param", "") if ch.isalnum() or ch in " +-*/^()._,")
