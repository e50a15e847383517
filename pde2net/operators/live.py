"""The operator model's live network: the runtime classes built from the IR (docs/theory.md
§9-12); :mod:`.source` prints the same construction as standalone source."""
from __future__ import annotations

from typing import Any

from ..lower import FED, FSI, Architecture, Explicit, Implicit
from .base import REACTION_FAMILY
from .runtime import network


def scheme_arguments(arch: Architecture) -> tuple[str, dict[str, Any]]:
    """The runtime network class for the scheme and its keyword arguments (numbers rounded once
    from the exact values, as the source prints them)."""
    cls, kwargs = _scheme(arch)
    b = arch.operator.context.dirichlet_value
    if b is not None:
        kwargs["offset"] = float(b)
    return cls, kwargs


def _scheme(arch: Architecture) -> tuple[str, dict[str, Any]]:
    sch = arch.scheme
    spec = arch.operator
    if isinstance(sch, Explicit):
        return "ExplicitNet", {"tau": float(sch.tau)}
    if isinstance(sch, FED):
        return "FEDNet", {"taus": [float(t) for t in sch.taus], "frozen": sch.update == "cycle"}
    if isinstance(sch, FSI):
        return "FSINet", {"tau": float(sch.tau), "frozen": sch.update == "cycle",
                          "alphas": [(float(a), float(1 - a)) for a in sch.alphas]}
    assert isinstance(sch, Implicit)
    c = 0.0
    if not spec.reaction.empty:
        c = float(REACTION_FAMILY[0].linear_coefficient(spec.reaction, spec.context))
    return "ImplicitCGNet", {"tau": float(sch.tau), "iterations": sch.iterations, "c": c}


def build_module(arch: Architecture) -> network.OperatorNet:
    """The live network of an operator-model architecture."""
    spec = arch.operator
    ctx = spec.context
    terms = [t.torch_term(ctx) for t in spec.terms]
    reaction = None if spec.reaction.empty else REACTION_FAMILY[0].torch_reaction(spec.reaction, ctx)
    op = network.OperatorSum(terms, reaction)
    cls, kwargs = scheme_arguments(arch)
    return getattr(network, cls)(op, arch.scheme.steps, ctx.ndim, ctx.channels, **kwargs)
