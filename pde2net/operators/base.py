"""The operator model's protocol: ``u_t = -A(u) u + r(u)``, ``A(u) = sum_i D_i^T G_i(u) D_i``.

A *family* (one module in this package, registered with :func:`register`) recognises one kind of
term of the equation's right side and returns its IR, a :class:`Term`.  A term knows, for every
stage of the pipeline:

- ``bound(ctx)``: a guaranteed upper bound on ``lambda_max(D^T G D)`` over every frozen G the
  term can produce (with its hypotheses and the theory section it rests on), the stability stage;
- ``torch_term(ctx)``: the live torch module, an object of the runtime protocol below;
- ``source(ctx)``: how the standalone source builds the same runtime object;
- ``dense(ctx, u)``: the frozen matrix ``D^T G(u) D`` in float64 NumPy (verify's reference).

The runtime protocol of a term (``pde2net/operators/runtime``, pure torch, inlined in the emitted
source): ``weights(u, f) -> G`` (anything: a tensor or a tuple), ``frozen_apply(u, G) -> D^T G D u``
and ``frozen_diagonal(G) -> diag(D^T G D)``, on fields ``(B, C, *space)`` with x the last axis.

The reaction part r (data fidelity, decay, source, nonlinear) is one :class:`Reaction`.
Schemes see the sum through :class:`pde2net.operators.runtime.network.OperatorSum`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Protocol

import sympy as sp

from ..errors import PdeError, Pos, Source

if TYPE_CHECKING:
    import numpy as np

#: the theory guide the verdicts cite (shipped with the project)
THEORY = "docs/theory.md"


def cite(section: int) -> str:
    """``docs/theory.md §N``: how every report cites a statement."""
    return f"{THEORY} §{section}"


# ------------------------------------------------------------------------- what analyse knows
GAUSS = sp.Function("gauss")  # gauss(expr, sigma): Gaussian presmoothing (docs/language.md)
DZ = sp.Function("dz")        # dz(expr, k): the k-th difference along z (3D)


@dataclass(frozen=True)
class TensorDef:
    """A ``tensor T = ...`` statement, built from the parse tree.

    ``kind``: ``edge_enhancing`` (``args = (g_arg, g_body, v)``: the diffusivity as (argument
    symbol, body) and the vector v, e.g. ``grad(gauss(u, sigma))``), ``coherence_enhancing``
    (``args = (smoothed, rho, alpha, C)``) or ``matrix`` (``args`` = the rows, each a tuple of
    sympy expressions).  Params stay symbols; ``Context.value`` substitutes them."""

    name: str
    kind: str
    args: tuple
    pos: Pos


@dataclass(frozen=True)
class Context:
    """What a family needs to recognise and build a term: the field, grid, boundaries, params,
    inputs and tensors of the spec, and where to report errors."""

    u: sp.Symbol
    dims: tuple[str, ...]
    channels: int
    grid: tuple[sp.Expr, ...]              # h per axis, x first
    boundaries: tuple[str, ...]            # one kind per axis, x first
    params: dict[str, sp.Expr]             # name -> exact value
    param_symbols: dict[str, sp.Symbol]    # name -> the symbol in expressions
    inputs: dict[str, sp.Symbol]           # 'input f(x, y)': name -> symbol
    tensors: dict[sp.Symbol, TensorDef]    # the symbol standing for T in the equation -> its def
    stencil: Any                           # analyse.StencilChoice (``stencil anisotropic(delta = ...)``)
    source: Source
    pos: Optional[Pos]                     # the equation's right side
    settings: dict = field(default_factory=dict)
    #: b in 'boundary dirichlet(value = b)' (u = b outside the domain), None when homogeneous:
    #: the networks evolve u - b under the homogeneous problem (docs/theory.md §12)
    dirichlet_value: Optional[sp.Expr] = None

    @property
    def ndim(self) -> int:
        return len(self.dims)

    @property
    def values(self) -> dict[sp.Symbol, sp.Expr]:
        """symbol -> exact value, for ``expr.xreplace``."""
        return {self.param_symbols[k]: v for k, v in self.params.items()}

    def value(self, expr: sp.Expr) -> sp.Expr:
        """``expr`` with every param replaced by its exact value."""
        if isinstance(expr, (int, float)):  # a Python number from a family's arithmetic
            return sp.Float(expr) if isinstance(expr, float) else sp.Integer(expr)
        return expr.xreplace(self.values)

    def error(self, message: str, expected: Optional[str] = None, pos: Optional[Pos] = None) -> PdeError:
        """A PdeError at the equation (or ``pos``)."""
        return PdeError(message, pos or self.pos, self.source, expected)


# ---------------------------------------------------------------------------- the IR protocol
@dataclass(frozen=True)
class Bound:
    """A guaranteed upper bound on ``lambda_max(D^T G D)`` over every G the term can produce.

    ``value`` is exact (sympy) or None when no bound is proven; ``proven`` False with a value
    means an observed (not proven) estimate, which no "stable" verdict may rest on.  ``reason``
    says how it was derived, in words and formulas; ``section`` is the theory section it rests
    on (``cite(N)``); ``hypotheses`` are ``{"name", "holds", "detail"}`` dicts as in the stability
    report; ``tight`` says whether the bound is attained (growth just above it) or conservative."""

    value: Optional[sp.Expr]
    proven: bool
    reason: str
    section: str
    hypotheses: tuple = ()
    tight: bool = False
    #: why there is no proven bound: "" (there is one), "negative" (backward diffusion: the
    #: verdict is "not stable"), "unbounded" (sup g = oo) or "unknown" (cannot prove)
    failure: str = ""


class Term(Protocol):
    """The IR of one term ``D^T G D`` (a frozen dataclass in its family's module)."""

    family: str
    #: the pointwise diffusivities the term evaluates (float checks of the stability stage)
    diffusivities: tuple

    def describe(self) -> str:
        """One line for reports: the term as the user wrote it and the network it becomes."""

    def bound(self, ctx: Context) -> Bound:
        """The guaranteed bound on ``lambda_max`` (see :class:`Bound`)."""

    def torch_term(self, ctx: Context) -> Any:
        """The live runtime object (a ``torch.nn.Module`` of the runtime protocol)."""

    def source(self, ctx: Context, pnames: dict[str, str], prefix: str) -> "TermSource":
        """How the standalone source builds the same runtime object.  ``pnames``: the params'
        .pde names -> validated Python names of module-level constants; ``prefix``: a unique
        prefix for the functions this term defines (e.g. ``t0_``)."""

    def dense(self, ctx: Context, u: "np.ndarray", f: "Optional[np.ndarray]" = None) -> "np.ndarray":
        """The frozen matrix ``D^T G(u) D`` (float64, n x n with n = u.size, C order)."""


@dataclass(frozen=True)
class TermSource:
    """The emitted source of a term: the runtime files it needs (module names in
    ``pde2net.operators.runtime``, inlined once each), the functions it defines first (printed
    diffusivities: validated names and printed numbers only), and the expression that builds the
    runtime object from them."""

    runtime: tuple[str, ...]
    functions: tuple[str, ...]
    expression: str


class Family(Protocol):
    """A registered family: recognises its terms of the equation's right side."""

    name: str

    def recognise(self, term: sp.Expr, ctx: Context) -> Optional[Term]:
        """The IR of ``term`` if it is this family's, else None.  A term that is clearly this
        family's but malformed raises ``ctx.error(...)`` with what is expected."""


@dataclass(frozen=True)
class Reaction:
    """``r(u, f)``: the part of the right side without derivatives.

    ``decay`` c >= 0 and ``data`` alpha >= 0 (exact) give the linear part ``-c u + alpha (f - u)``;
    ``constant`` b a source; ``nonlinear`` a sympy expression of u (Allen-Cahn ``u - u^3``) or None.
    ``input`` names the data field of ``alpha (f - u)``."""

    decay: sp.Expr = sp.Integer(0)
    data: sp.Expr = sp.Integer(0)
    input: Optional[str] = None
    constant: sp.Expr = sp.Integer(0)
    nonlinear: Optional[sp.Expr] = None
    text: str = ""

    @property
    def empty(self) -> bool:
        return (self.decay == 0 and self.data == 0 and self.constant == 0
                and self.nonlinear is None)


class ReactionFamily(Protocol):
    """The reaction part's family (one, registered with :func:`register_reaction`): the
    counterpart of :class:`Family` + :class:`Term` for the pointwise part r(u, f)."""

    def decompose(self, expr: sp.Expr, ctx: Context) -> Reaction:
        """The summands without derivatives, decomposed (raises ``ctx.error`` if malformed)."""

    def bound(self, reaction: Reaction, lam: sp.Expr, ctx: Context) -> "ReactionBound":
        """The step bound of ``u - tau (A u - r)`` given ``lam >= lambda_max(A)`` (proven)."""

    def torch_reaction(self, reaction: Reaction, ctx: Context) -> Any:
        """The live runtime module: ``forward(u, f) = r(u, f)`` on fields (B, C, *space)."""

    def source(self, reaction: Reaction, ctx: Context, pnames: dict[str, str]) -> "TermSource":
        """How the standalone source builds the same runtime module."""

    def linear_coefficient(self, reaction: Reaction, ctx: Context) -> Optional[sp.Expr]:
        """c with ``r(u, f) = -c u + r(0, f)`` when r is affine in u, else None."""


@dataclass(frozen=True)
class ReactionBound:
    """``tau_max`` (exact, None if none is proven), the verdict kind when there is none
    (``"negative"`` -> "not stable", ``"unknown"`` -> "cannot prove"), the statement claimed
    (e.g. "||u^k|| <= max(||u^0||, ||f||)"), the reason in words, the theory section and the
    hypotheses (report dicts)."""

    tau_max: Optional[sp.Expr]
    failure: str
    statement: str
    reason: str
    section: str
    hypotheses: tuple = ()
    #: (a, b) exact when the claim is an invariant region (values of u^0 and f in [a, b] stay
    #: there) instead of a norm bound; verify then checks that claim
    region: Optional[tuple] = None
    #: (alpha, c, k) exact when the claim is ``||u^n|| <= max(||u^0||, ||(alpha f + c) / k||)``
    #: with a constant source c != 0 (the bound then exceeds ||u^0||); verify checks that claim
    forcing: Optional[tuple] = None


REACTION_FAMILY: list[ReactionFamily] = []


def register_reaction(family: ReactionFamily) -> ReactionFamily:
    """Installs the reaction family (once)."""
    REACTION_FAMILY[:] = [family]
    return family


@dataclass(frozen=True)
class OperatorSpec:
    """The recognised right side: ``-sum(terms) u + reaction``, with the context it was read in."""

    terms: tuple
    reaction: Reaction
    context: Context

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(t.family for t in self.terms)


# ------------------------------------------------------------------------------- registration
FAMILIES: list[Family] = []


def register(family: Family) -> Family:
    """Adds a family; the recogniser offers each term to the families in registration order."""
    if any(f.name == family.name for f in FAMILIES):
        raise ValueError(f"family {family.name!r} is registered twice")
    FAMILIES.append(family)
    return family
