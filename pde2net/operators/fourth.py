"""Fourth-order diffusion (You-Kaveh): ``c * laplace( phi(laplace(u)) )``, typically
``-laplace( g(laplace(u)^2) * laplace(u) )``.

The term is ``A = Delta_h G Delta_h`` (docs/theory.md §12) with

- ``Delta_h = -D^T D``, D the forward-difference gradient of :mod:`.runtime.grid` (complete rows
  for neumann, circulant for periodic, zero ghosts on every side for dirichlet), so Delta_h is
  symmetric for every boundary.  NOT the node-centred mirror-ghost Laplacian (``u_(-1) = u_1``):
  that matrix is not symmetric, and ``||I - tau Delta^2||_2 > 1`` for every tau > 0;
- the flux ``Phi(s) = -c phi(s)`` (``u_t = c Delta_h phi(Delta_h u) = -Delta_h (-c G) Delta_h u``),
  ``G = Phi(Delta_h u) / (Delta_h u) = g((Delta_h u)^2)`` per node and channel.

Bound: ``lambda_max(Delta_h G Delta_h) <= L ||Delta_h||^2 <= L (sum_d 4 / h_d^2)^2`` with
``L = sup g`` (``||Delta_h|| = ||D||^2 <= sum_d 4/h_d^2``, docs/theory.md §2, §12): in 2D with
square cells ``tau <= 2 / (64 L / h^4) = h^4 / (32 L)``.  Any number of space axes (1D, 2D, 3D).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import sympy as sp

from ..analyse import LAPLACE, show
from ..lower import S2
from ..stencils import make_stencil
from .axis import (along, attained_at_zero, check_factor, failure_of, flux_of, g_hypotheses, g_text,
                   numpy_g, radial, split_factor, weight_of)
from .base import Bound, Context, TermSource, cite, register
from .diffusivity import Diffusivity, LiveDiffusivity, function_source

if TYPE_CHECKING:
    import numpy as np

FORMS = ("-laplace( g(laplace(u)^2) * laplace(u) ) | -laplace(laplace(u)) | "
         "c * laplace( phi(laplace(u)) ), with c a real constant and phi(s)/s even in s")


@dataclass(frozen=True)
class FourthTerm:
    """``Delta_h G Delta_h`` with ``G = g((Delta_h u)^2)``; ``g`` carries the sign and factor."""

    boundaries: tuple
    grid: tuple
    g: Diffusivity
    linear: bool
    text: str
    family = "fourth"

    @property
    def diffusivities(self) -> tuple:
        return (self.g,)

    @property
    def laplace_norm(self) -> sp.Expr:
        """``sum_d 4 / h_d^2 >= ||D||^2 = ||Delta_h||`` (docs/theory.md §2, §12)."""
        return sp.Add(*(sp.Integer(4) / h ** 2 for h in self.grid))

    def describe(self) -> str:
        g = g_text(self.g)
        weight = f"G = {g}" if self.linear else f"G = g(laplace(u)^2), g(s2) = {g}"
        bnd = ", ".join(f"{'xyz'[a]}: {b}" for a, b in enumerate(self.boundaries))
        return (f"{self.text}: Laplacian -D^T D (forward-difference gradient conv and its "
                f"transposed conv; {bnd}), {weight}, Laplacian again")

    def bound(self, ctx: Context) -> Bound:
        norm = self.laplace_norm
        hyps = g_hypotheses(self.g) + (
            {"name": "Delta_h = -D^T D is symmetric", "holds": True,
             "detail": "the forward-difference gradient and its exact transpose (not the "
                       f"mirror-ghost Laplacian); {cite(12)}"},
            {"name": f"||Delta_h|| <= {norm}", "holds": True,
             "detail": f"||Delta_h|| = ||D||^2 <= sum_d 4/h_d^2; {cite(2)}"},
        )
        failure = failure_of(self.g)
        if failure:
            return Bound(None, False, f"{self.text}: no bound on g: {self.g.facts.detail or self.g.real_detail}",
                         cite(1), hyps, False, failure)
        L = self.g.L
        value = L * norm ** 2
        reason = (f"lambda_max(Delta_h G Delta_h) <= L ||Delta_h||^2 <= L (sum_d 4/h_d^2)^2 = {value} "
                  f"with L = sup g = {L}")
        return Bound(value, True, reason, cite(12), hyps, attained_at_zero(self.g, ctx), "")

    def _inv_h(self) -> tuple:
        return tuple(1.0 / float(h) for h in self.grid)

    def torch_term(self, ctx: Context) -> Any:
        from .runtime.fourth import FourthOrder

        return FourthOrder(LiveDiffusivity(self.g), self.boundaries, self._inv_h())

    def source(self, ctx: Context, pnames: dict[str, str], prefix: str) -> TermSource:
        if any(b not in ("neumann", "periodic", "dirichlet") for b in self.boundaries):
            raise ValueError(f"unknown boundary in {self.boundaries!r}")
        name = f"{prefix}g"
        expr = (f"FourthOrder({name}, boundaries={tuple(str(b) for b in self.boundaries)!r}, "
                f"inv_h={self._inv_h()!r})")
        return TermSource(("grid", "fourth"), (function_source(self.g, name, pnames),), expr)

    def dense(self, ctx: Context, u: "np.ndarray", f: "Optional[np.ndarray]" = None) -> "np.ndarray":
        """``Delta_h diag(G) Delta_h`` with ``Delta_h = -sum_d D_d^T D_d`` (D_d the 1D forward
        difference of the scalar model, :meth:`pde2net.stencils.Stencil.matrix`), assembled
        column by column as ``Delta_h (G * Delta_h e_k)`` (n^2 sum_d N_d work, not n^3)."""
        import numpy as np

        u = np.asarray(u, dtype=np.float64)
        lines = []
        for a, (b, h) in enumerate(zip(self.boundaries, self.grid)):
            d1 = make_stencil("forward", 1, h).matrix(u.shape[u.ndim - 1 - a], b)
            lines.append((u.ndim - 1 - a, -(d1.T @ d1)))

        def laplace(x: "np.ndarray", lead: int) -> "np.ndarray":
            return sum(along(m, x, dim + lead) for dim, m in lines)

        s = laplace(u, 0)
        G = numpy_g(self.g, s * s)
        cols = laplace(G * laplace(np.eye(u.size).reshape((u.size,) + u.shape), 1), 1)
        return cols.reshape(u.size, u.size).T  # row k of cols is A e_k


class FourthFamily:
    """Recognises ``c * laplace( phi(laplace(u)) )`` (see the module docstring)."""

    name = "fourth"

    def recognise(self, term: sp.Expr, ctx: Context) -> Optional[FourthTerm]:
        c, core = split_factor(term, ctx)
        if not (isinstance(core, sp.Function) and core.func is LAPLACE):
            return None
        inner, lap = core.args[0], LAPLACE(ctx.u)
        if inner == ctx.u or not inner.has(lap):
            return None  # laplace(u) and other second-order forms belong to other families
        text = show(term)
        check_factor(c, ctx, text)
        phi = flux_of(inner, lap, ctx, "laplace", FORMS)
        flux = -c * phi
        g = radial(flux, ctx, text, FORMS, lap)
        d = weight_of(flux, g, ctx, f"the weight of {text}")
        grid = tuple(ctx.value(h) for h in ctx.grid)
        return FourthTerm(tuple(ctx.boundaries), grid, d, not g.has(S2), text)


FAMILY = register(FourthFamily())
