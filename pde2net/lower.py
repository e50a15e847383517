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

import re
from dataclasses import dataclass, replace
from typing import Optional, Union

import sympy as sp

from . import exprs
from .analyse import S, Model, python_name, show
from .errors import PdeError
from .stencils import Stencil, make_stencil


@dataclass(frozen=True)
class StencilIR:
    """D along one axis: exact scaled weights, paddings for D and for D^T, and where it came from."""

    stencil: Stencil
    boundary: str
    axis: int = -1  # the tensor axis it acts on: -1 for x, -2 for y

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(float(w) for w in self.stencil.scaled)

    @property
    def padding(self) -> tuple[int, int, str]:
        return self.stencil.padding(self.boundary)

    @property
    def adjoint_padding(self) -> tuple[int, int, str]:
        return self.stencil.adjoint_padding(self.boundary)


@dataclass(frozen=True)
class FluxIR:
    """Phi(s) as an op tree over ``s`` and the params (by their .pde names), and the
    diffusivity ``g = Phi(s)/s`` (cancelled, so finite at s = 0) for schemes that freeze it."""

    expr: sp.Expr
    op: exprs.Op
    params: dict[str, float]
    text: str
    ratio: sp.Expr
    ratio_op: exprs.Op


@dataclass(frozen=True)
class Explicit:
    """``steps`` blocks ``u <- u - tau D^T Phi(D u)`` sharing one weight."""

    tau: sp.Expr
    steps: int


Scheme = Union[Explicit]


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

    def with_steps(self, steps: int) -> "Architecture":
        """The same network with a different number of time steps (``run --steps``)."""
        if not isinstance(self.scheme, Explicit):
            raise ValueError("steps can only be overridden for the explicit scheme")
        return replace(self, scheme=replace(self.scheme, steps=steps))


def class_name(name: str) -> str:
    """CamelCase class name for ``pde NAME`` (``perona_malik`` -> ``PeronaMalik``)."""
    parts = [p for p in re.split(r"_+", name) if p]
    camel = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    if camel[0].isdigit():
        camel = "Pde" + camel
    return python_name(camel, {"torch", "math", "nn", "F"})


def lower_flux(model: Model) -> FluxIR:
    """Phi as an op tree; params stay named so the module can expose (or learn) them."""
    names = {S: "s", **{sym: name for name, sym in model.param_symbols.items()}}
    op = exprs.lower_expr(model.flux, names)
    params = {name: float(v) for name, v in model.params.items()}
    ratio = sp.cancel(model.flux / S) if model.flux.is_rational_function(S) else model.flux / S
    return FluxIR(model.flux, op, params, show(model.flux.xreplace({S: sp.Symbol("s")})),
                  ratio, exprs.lower_expr(ratio, names))


def lower_stencils(model: Model) -> tuple[StencilIR, ...]:
    """D from the ``stencil`` statement, checked to approximate d^m; one per space axis."""
    ch = model.stencil
    out = []
    for axis, h in enumerate(model.grid):
        st = make_stencil(ch.kind, model.order, h, ch.weights, ch.offset)
        why = st.consistency_error()
        if why is not None:
            raise model.error(f"stencil {st.describe()} is not an order-{model.order} difference: {why}",
                              "stencil", f"weights w with sum_j w_j (j - o)^q = 0 for q < {model.order} "
                              f"and sum_j w_j (j - o)^{model.order} = {model.order}!")
        out.append(StencilIR(st, model.boundary, axis=-1 - axis))  # x is the last tensor axis
    return tuple(out)


def lower_scheme(model: Model) -> Scheme:
    if model.scheme == "explicit":
        return Explicit(model.setting("tau"), int(model.setting("steps")))
    raise model.error(f"the {model.scheme} scheme is not supported yet", "scheme",
                      "scheme explicit(tau = ..., steps = ...)")


def lower(model: Model) -> Architecture:
    """Model -> Architecture (raises PdeError for what cannot be built yet)."""
    if model.ndim != 1:
        raise model.error("2D fields are not supported yet", "field", "field u(x)")
    return Architecture(
        name=model.name, class_name=class_name(model.name), dims=model.dims, order=model.order,
        stencils=lower_stencils(model), flux=lower_flux(model), scheme=lower_scheme(model),
        equation_text=model.equation_text, size=model.size,
    )


def min_points(arch: Architecture) -> int:
    """The fewest grid points a network input may have (a valid correlation needs K points)."""
    return max(st.stencil.size for st in arch.stencils) if arch.stencils[0].boundary == "neumann" else 1
