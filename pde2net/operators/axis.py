"""One-axis diffusion terms: ``c * dx( phi(dx(u)) )``, ``-dxx( g(dxx(u)^2) * dxx(u) )``, ``dyy(u)``, ...

A summand of the right side that is a constant times a difference along ONE axis (``dx``, ``dy``,
``dz`` of any order) is one term ``D^T G D`` of the operator model, with (docs/theory.md §1, §2):

- D the order-m forward difference along that axis, the binomial stencil
  ``(D u)_r = h^-m sum_(j=0..m) (-1)^(m-j) C(m, j) u_(r+j)`` with complete rows (neumann, an
  (n - m) x n matrix), circulant rows (periodic, n x n) or zero ghosts on both sides (dirichlet,
  (n + m) x n, row r uses ``u_(r-m) .. u_r``): exactly the matrix of the scalar model's forward
  stencil (:meth:`pde2net.stencils.Stencil.matrix`), and the m-fold composition of the first
  difference of :mod:`.runtime.grid` with the same boundary;
- the flux ``Phi(s) = (-1)^(m+1) c phi(s)`` of ``c * d^m( phi(d^m(u)) )`` (the sign convention of
  the scalar model: ``-dxx(dxx(u))`` and ``dxx(-dxx(u))`` are the same term), and
  ``G = Phi(D u) / (D u) = g((D u)^2)`` per point and channel;
- a linear term ``c * d^(2m)(u)`` is the flux ``(-1)^(m+1) c s`` with D of order m.

``g(s2) = Phi(sqrt(s2)) / sqrt(s2)`` is exact only when ``Phi(s)/s`` is even in s (Phi odd, as
every diffusion flux written through ``d^m(u)^2`` is): a flux whose ratio is not even is refused
with that reason.

Bound: ``lambda_max(D^T G D) <= L ||D||^2 <= L 4^m / h^(2m)`` with ``L = sup g`` (the squared
symbol of the binomial difference is ``(2 sin(theta/2))^(2m) / h^(2m)``, and finite sections of a
Toeplitz operator do not exceed it).  The sum over terms (the stability rule adds the terms'
bounds) is attained at ``G_i = L_i I``: every binomial symbol peaks at theta = pi, so the
eigenvalues of terms along different axes, and of different orders along the same axis, add.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Optional

import sympy as sp

from .. import exprs
from ..analyse import DIV, DX, DY, GRAD, LAPLACE, MAX_DEGREE, NORM, degree_bound, show
from ..lower import RADIAL_VAR, S2
from ..stencils import make_stencil
from .base import DZ, GAUSS, Bound, Context, TermSource, cite, register
from .diffusivity import S, Diffusivity, LiveDiffusivity, diffusivity_of, function_source

if TYPE_CHECKING:
    import numpy as np

AXIS_FUNCTIONS = {DX: 0, DY: 1, DZ: 2}
AXIS_NAMES = "xyz"
DERIVATIVES = (DX, DY, DZ, GRAD, DIV, LAPLACE, NORM, GAUSS)
FORMS = ("c * dx( g(dx(u)^2) * dx(u) ) | c * dx( phi(dx(u)) ) | c * dxx(u) | "
         "-dxx( g(dxx(u)^2) * dxx(u) ) | (-1)^(m+1) c * d^m( phi(d^m(u)) ) along x, y or z, "
         "with c a real constant and phi(s)/s even in s")
#: seconds of symbolic work for the evenness test of Phi(s)/s
EVEN_SECONDS = 5.0


# ------------------------------------------------------------------- shared with .fourth
def split_factor(term: sp.Expr, ctx: Context) -> tuple[sp.Expr, sp.Expr]:
    """``term = c * core`` with c free of the field (params, numbers)."""
    return term.as_independent(ctx.u, as_Add=False)


def check_factor(c: sp.Expr, ctx: Context, where: str) -> None:
    """The factor of a term must be a real constant once the params have their values."""
    v = ctx.value(c)
    if not v.is_number or v.is_extended_real is False or v.has(sp.nan, sp.zoo, sp.oo, -sp.oo):
        raise ctx.error(f"the factor {show(c)} of {where} is not a real constant", FORMS)


def flux_of(inner: sp.Expr, arg: sp.Expr, ctx: Context, what: str, expected: str) -> sp.Expr:
    """``phi(s)`` from ``inner = phi(arg)``: the flux may depend on the field only through ``arg``
    (and on params)."""
    phi = inner.xreplace({arg: S})
    stray = [a for a in phi.atoms(sp.Function) if a.func in DERIVATIVES]
    if phi.has(ctx.u) or stray:
        found = show(stray[0]) if stray else show(ctx.u)
        raise ctx.error(f"inside {what}(...) the flux may depend on the field only through "
                        f"{show(arg) if arg.func is not DZ else what + '(u)'}; found {found}", expected)
    allowed = set(ctx.param_symbols.values()) | {S}
    other = sorted((str(x) for x in phi.free_symbols - allowed))
    if other:
        raise ctx.error(f"inside {what}(...) the flux depends on {', '.join(other)}, which is not a "
                        f"param", expected)
    if not phi.has(S):
        raise ctx.error(f"the flux {show(inner)} does not depend on {show(arg)}", expected)
    if degree_bound(phi) > MAX_DEGREE:
        raise ctx.error(f"the flux has degree up to {degree_bound(phi)} in its argument; symbolic "
                        f"analysis of such a polynomial would not finish",
                        f"a flux of degree at most {MAX_DEGREE}")
    for node in sp.preorder_traversal(ctx.value(phi)):
        if node.is_number and node.is_extended_real is False:
            raise ctx.error(f"the flux contains the non-real number {show(node)}",
                            "real constants (a negative base needs an integer exponent)")
    return phi


def radial(flux: sp.Expr, ctx: Context, what: str, expected: str, arg: sp.Expr) -> sp.Expr:
    """``g(s2) = Phi(sqrt(s2)) / sqrt(s2)``, refused unless ``Phi(s)/s`` is even in s (``arg``:
    what s stands for, for the message)."""
    from ..limits import SymbolicTimeout, time_limit

    ratio = sp.cancel(flux / S) if flux.is_rational_function(S) else flux / S
    try:
        with time_limit(EVEN_SECONDS):
            odd_part = ratio.xreplace({S: -S}) - ratio
            even = odd_part == 0 or sp.simplify(odd_part) == 0
    except SymbolicTimeout:
        even = False
    if not even:
        raise ctx.error(f"the flux {show(flux.xreplace({S: arg}))} of {what} is not odd in {show(arg)} (Phi(s)/s is "
                        f"not even, or sympy cannot show it), so its weight is not a function of "
                        f"the squared difference", expected)
    return sp.powsimp(ratio.xreplace({S: sp.sqrt(S2)}), force=False)


def failure_of(g: Diffusivity) -> str:
    """Why no bound is proven: "negative" (backward diffusion), "unbounded" or "unknown"."""
    if g.proven:
        return ""
    if g.facts.status in ("negative", "unbounded"):
        return g.facts.status
    return "unknown"  # sympy could not decide, or g is not real and finite everywhere


def attained_at_zero(g: Diffusivity, ctx: Context) -> bool:
    """Whether ``sup g = L`` is the limit of g at s2 -> 0+ (then small amplitudes reach it, so the
    bound is attained; docs/theory.md §1)."""
    from ..limits import SymbolicTimeout, time_limit

    if g.L is None:
        return False
    try:
        with time_limit(EVEN_SECONDS):
            at0 = sp.limit(ctx.value(g.expr), S2, 0, "+")
            return bool(sp.simplify(at0 - g.L) == 0)
    except (SymbolicTimeout, NotImplementedError, TypeError, ValueError, ArithmeticError):
        return False


def numpy_g(g: Diffusivity, s2: "np.ndarray") -> "np.ndarray":
    """g evaluated on a float64 array (the dense reference): the same op tree, NumPy functions."""
    import numpy as np

    out = exprs.evaluate(g.op, {**g.params, RADIAL_VAR: s2}, exprs.LIBS["numpy"]())
    return np.broadcast_to(np.asarray(out, dtype=np.float64), s2.shape).copy()


def along(m: "np.ndarray", x: "np.ndarray", dim: int) -> "np.ndarray":
    """The 1D matrix ``m`` applied along dimension ``dim`` of ``x`` (float64)."""
    import numpy as np

    return np.moveaxis(np.tensordot(m, x, axes=([1], [dim])), 0, dim)


def g_text(g: Diffusivity) -> str:
    """g(s2) in .pde syntax (params by their names)."""
    return show(g.expr.xreplace({S2: sp.Symbol("s2")}))


def g_hypotheses(g: Diffusivity, name: str = "g") -> tuple:
    """The diffusivity's hypotheses, ``name`` telling the terms of a sum apart (``g_x``, ``g_yy``)."""
    return g.hypotheses(name)


def weight_of(flux: sp.Expr, g: sp.Expr, ctx: Context, what: str) -> Diffusivity:
    """The :class:`Diffusivity` of ``g``; when sympy cannot bound it in the form ``g(s^2) s``
    (square roots of s^2), the facts are derived from the flux as written, the same function
    of s since ``Phi(s)/s`` is even."""
    from ..stability import flux_facts, real_everywhere

    d = diffusivity_of(g, ctx, what)
    if d.facts.status != "unknown":
        return d
    facts = flux_facts(ctx.value(flux))
    if facts.status == "unknown":
        return d
    dom = real_everywhere(ctx.value(flux))
    return replace(d, facts=facts, real=dom.holds is True, real_detail=dom.detail)


# ------------------------------------------------------------------------------- the term
@dataclass(frozen=True)
class AxisTerm:
    """``D^T G D`` with D the order-``order`` forward difference along ``axis`` (0 = x) and
    ``G = g((D u)^2)``; ``g`` carries the term's sign and factor."""

    axis: int
    order: int
    boundary: str
    h: sp.Expr
    g: Diffusivity
    linear: bool
    text: str
    family = "axis"

    @property
    def diffusivities(self) -> tuple:
        return (self.g,)

    @property
    def norm_sq(self) -> sp.Expr:
        """``4^m / h^(2m)``: the symbol bound on ``||D||^2`` (docs/theory.md §2)."""
        return sp.Integer(4) ** self.order / self.h ** (2 * self.order)

    def describe(self) -> str:
        x = AXIS_NAMES[self.axis]
        g = g_text(self.g)
        name = f"g_{x * self.order}"
        weight = f"G = {g}" if self.linear else f"G = {name}(d{x * self.order}(u)^2), {name}(s2) = {g}"
        return (f"{self.text}: order-{self.order} forward difference along {x} ({self.boundary}) "
                f"conv, {weight}, transposed conv")

    def bound(self, ctx: Context) -> Bound:
        x = AXIS_NAMES[self.axis]
        hx = "h" if ctx.ndim == 1 else f"h{x}"  # as the grid statement names it
        rows = {"neumann": "its n - m complete rows", "periodic": "circulant rows",
                "dirichlet": "zero ghosts on both sides (n + m rows)"}[self.boundary]
        hyps = g_hypotheses(self.g, f"g_{x * self.order}") + (
            {"name": "D^T is the exact transpose of D", "holds": True,
             "detail": f"transposed conv of the same binomial stencil along {x}"},
            {"name": f"||D||^2 <= 4^{self.order} / {hx}^{2 * self.order}", "holds": True,
             "detail": f"the binomial order-{self.order} difference with {rows} is a finite section "
                       f"of a Toeplitz operator (or a circulant) with symbol |2 sin(theta/2)|^"
                       f"{self.order}; {cite(2)}"},
        )
        failure = failure_of(self.g)
        if failure:
            return Bound(None, False, f"{self.text}: no bound on g: {self.g.facts.detail or self.g.real_detail}",
                         cite(1), hyps, False, failure)
        L = self.g.L
        value = L * self.norm_sq
        reason = (f"lambda_max(D^T G D) <= L ||D||^2 <= L 4^{self.order} / {hx}^{2 * self.order} "
                  f"= {value} with L = sup g_{x * self.order} = {L}, {hx} = {self.h}")
        return Bound(value, True, reason, cite(2), hyps, attained_at_zero(self.g, ctx), "")

    def nonnegative_stencil(self, ctx: Context) -> Optional[sp.Expr]:
        """For order 1: a bound on the diagonal of every frozen ``D^T G D``, whose off-diagonal
        entries are <= 0 (a nonnegative stencil, docs/theory.md §11): each row of D is one
        difference ``(u_(r+1) - u_r) / h`` and G is diagonal in [0, L], so a node has at most two
        edges of weight <= L / h^2 (dirichlet ghosts add to the diagonal only).  None for higher
        orders (their stencils have positive off-diagonal entries) or unproven ``0 <= g <= L``."""
        if self.order != 1 or not self.g.proven:
            return None
        return sp.simplify(2 * self.g.L / self.h ** 2)

    def torch_term(self, ctx: Context) -> Any:
        from .runtime.axis import AxisDiffusion

        return AxisDiffusion(LiveDiffusivity(self.g), self.axis, self.order, self.boundary,
                             1.0 / float(self.h))

    def source(self, ctx: Context, pnames: dict[str, str], prefix: str) -> TermSource:
        if self.boundary not in ("neumann", "periodic", "dirichlet"):
            raise ValueError(f"unknown boundary {self.boundary!r}")
        name = f"{prefix}g"
        expr = (f"AxisDiffusion({name}, axis={int(self.axis)}, order={int(self.order)}, "
                f"boundary={self.boundary!r}, inv_h={1.0 / float(self.h)!r})")
        return TermSource(("grid", "axis"), (function_source(self.g, name, pnames),), expr)

    def dense(self, ctx: Context, u: "np.ndarray", f: "Optional[np.ndarray]" = None) -> "np.ndarray":
        """``D^T diag(G) D`` with D the 1D binomial matrix of the scalar model
        (:meth:`pde2net.stencils.Stencil.matrix`) along this axis: block diagonal over the lines
        of the axis, so it is assembled line by line (n^2 N work, not n^3)."""
        import numpy as np

        u = np.asarray(u, dtype=np.float64)
        dim = u.ndim - 1 - self.axis
        before, n, after = math.prod(u.shape[:dim]), u.shape[dim], math.prod(u.shape[dim + 1:])
        d1 = make_stencil("forward", self.order, self.h).matrix(n, self.boundary)
        du = np.einsum("ri,aib->arb", d1, u.reshape(before, n, after))
        G = numpy_g(self.g, du * du)
        blocks = np.einsum("ri,arb,rj->abij", d1, G, d1)
        out = np.zeros((before, n, after, before, n, after))
        a, b = np.arange(before)[:, None], np.arange(after)[None, :]
        out[a, :, b, a, :, b] = blocks  # the (line a, b) block of every line along the axis
        return out.reshape(u.size, u.size)


# ---------------------------------------------------------------------------- the family
class AxisFamily:
    """Recognises ``c * d^k( ... )`` along one axis (see the module docstring)."""

    name = "axis"

    def recognise(self, term: sp.Expr, ctx: Context) -> Optional[AxisTerm]:
        c, core = split_factor(term, ctx)
        if not (isinstance(core, sp.Function) and core.func in AXIS_FUNCTIONS):
            return None
        axis = AXIS_FUNCTIONS[core.func]
        x = AXIS_NAMES[axis]
        if axis >= ctx.ndim:
            raise ctx.error(f"{show(core)} differentiates along {x}, but the field has "
                            f"{ctx.ndim} axis{'es' if ctx.ndim > 1 else ''} ({', '.join(ctx.dims)})",
                            f"differences along {', '.join(AXIS_NAMES[:ctx.ndim])}")
        self._check_stencil(ctx)
        inner, k = core.args[0], int(core.args[1])
        text = show(term)
        check_factor(c, ctx, text)
        if inner == ctx.u:
            if k % 2:
                raise ctx.error(f"the term {text} is not a diffusion term: it has odd order {k}, "
                                f"that is transport", FORMS)
            m = k // 2
            flux = (-1) ** (m + 1) * c * S
        else:
            m = k
            phi = flux_of(inner, core.func(ctx.u, sp.Integer(m)), ctx, "d" + x * m, FORMS)
            flux = (-1) ** (m + 1) * c * phi
        g = radial(flux, ctx, text, FORMS, core.func(ctx.u, sp.Integer(m)))
        d = weight_of(flux, g, ctx, f"the weight of {text}")
        linear = not g.has(S2)
        return AxisTerm(axis, m, ctx.boundaries[axis], ctx.value(ctx.grid[axis]), d, linear, text)

    @staticmethod
    def _check_stencil(ctx: Context) -> None:
        """The family's D is the forward (= backward: the same rows) binomial difference; a
        central or explicit stencil would be another matrix."""
        kind = getattr(ctx.stencil, "kind", None)
        if kind not in (None, "forward", "backward", "anisotropic"):  # anisotropic: the tensor term's
            raise ctx.error(f"per-axis terms use the forward difference; the stencil statement asks "
                            f"for {kind}", "no stencil statement, or stencil forward",
                            getattr(ctx.stencil, "pos", None))


FAMILY = register(AxisFamily())
