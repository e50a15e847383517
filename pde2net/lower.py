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
from .stencils import Stencil, make_stencil


@dataclass(frozen=True)
class StencilIR:
    """D along one axis: exact scaled weights, paddings for D and for D^T, and where it came from."""

    stencil: Stencil
    boundary: str
    axis: int = -1  # the tensor axis it acts on: -1 for x, -2 for y
    # (dim, before, after) per other space axis: the zeros that extend this axis's difference
    # to the flux-point grid of a dirichlet axis there (Stencil.flux_grid_padding), so every
    # gradient channel has the same shape; () in 1D and when no other axis is dirichlet
    cross: tuple[tuple[int, int, int], ...] = ()

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
    # g as a function of the squared length s2 = |v|^2 (2D vector flux g(|v|^2) v); None if not lowerable
    radial: Optional[sp.Expr] = None
    radial_op: Optional[exprs.Op] = None


@dataclass(frozen=True)
class Explicit:
    """``steps`` blocks ``u <- u - tau D^T Phi(D u)`` sharing one weight."""

    tau: sp.Expr
    steps: int


@dataclass(frozen=True)
class FED:
    """Fast Explicit Diffusion (MATH.md 3): ``cycles`` cycles of ``cycle_length`` explicit steps
    with the step sizes ``tau_i = tau_max / (2 cos^2(pi (2i+1) / (4n+2)))`` (exact), applied in
    Leja order (``taus`` is already ordered; ``order`` the original indices i).  ``update``:
    ``cycle`` freezes the diffusivity at the start of each cycle, ``step`` re-evaluates it."""

    tau_max: sp.Expr
    cycles: int
    cycle_length: int
    update: str
    taus: tuple[sp.Expr, ...]
    order: tuple[int, ...]

    @property
    def steps(self) -> int:  # the outer loop counts cycles (``run --steps``)
        return self.cycles

    @property
    def cycle_time(self) -> sp.Expr:
        """``sum tau_i = tau_max (n^2 + n) / 3``."""
        n = self.cycle_length
        return self.tau_max * (n * n + n) / 3


@dataclass(frozen=True)
class FSI:
    """Fast Semi-Iterative scheme (MATH.md 4): per cycle, ``u^(k+1) = a_k (u^k - tau A(u^k)) +
    (1 - a_k) u^(k-1)``, ``a_k = (4k+2)/(2k+3)``, ``u^(-1) = u^0``; diffusivity frozen per cycle
    unless ``update = step``."""

    tau: sp.Expr
    cycles: int
    cycle_length: int
    update: str

    @property
    def steps(self) -> int:
        return self.cycles

    @property
    def alphas(self) -> tuple[sp.Rational, ...]:
        return tuple(sp.Rational(4 * k + 2, 2 * k + 3) for k in range(self.cycle_length))

    @property
    def cycle_time(self) -> sp.Expr:
        n = self.cycle_length
        return self.tau * (n * n + n) / 3


@dataclass(frozen=True)
class Implicit:
    """Implicit time steps as a recurrent network (MATH.md 5, 6).  ``solver``: ``cg`` / ``jacobi``
    solve the lagged-diffusivity system ``(I + tau D^T G(u^k) D) u^(k+1) = u^k`` from 0 with
    ``iterations`` iterations fed with u^k; ``fixed_point`` iterates ``v <- u^k - tau D^T Phi(D v)``
    from ``v = u^k`` (fully implicit).  ``omega`` is the Jacobi damping."""

    tau: sp.Expr
    steps: int
    solver: str
    iterations: int
    omega: sp.Expr


@dataclass(frozen=True)
class Multigrid:
    """Linear implicit steps ``(I + tau c D^T D) u^(k+1) = u^k`` (Phi(s) = c s), each solved by
    ``cycles`` V(pre, post)-cycles from u^k (MATH.md 7): damped Jacobi smoothing, restriction R,
    prolongation ``P = 2 R^T``, Galerkin coarse operators ``R A P``.  ``levels = 0``: as many as
    the grid allows.  ``kernel`` is the interior kernel of A (exact), ``coarse_kernels`` the
    interior Galerkin kernels of the vertex-centred hierarchy (exact, for reports)."""

    tau: sp.Expr
    steps: int
    levels: int
    pre: int
    post: int
    cycles: int
    coefficient: sp.Expr
    omega: sp.Expr = sp.Rational(2, 3)
    kernel: tuple[sp.Expr, ...] = ()
    coarse_kernels: tuple[tuple[sp.Expr, ...], ...] = ()


VERTEX_RESTRICTION = (sp.Rational(1, 4), sp.Rational(1, 2), sp.Rational(1, 4))
CELL_RESTRICTION = (sp.Rational(1, 8), sp.Rational(3, 8), sp.Rational(3, 8), sp.Rational(1, 8))

Scheme = Union[Explicit, FED, FSI, Implicit, Multigrid]


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
        if isinstance(self.scheme, (FED, FSI)):  # a step of the outer loop is one cycle
            return replace(self, scheme=replace(self.scheme, cycles=steps))
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
    try:
        return _lower_flux(model)
    except (exprs.UnsupportedExpression, TypeError, ValueError) as exc:  # e.g. (-1)^0.5
        raise model.error(f"the flux {show(model.flux)} cannot be emitted: {exc}", "equation",
                          "a real flux built from + - * / ^ and exp log sqrt abs tanh sin cos "
                          "atan min max") from None


def _lower_flux(model: Model) -> FluxIR:
    names = {S: "s", **{sym: name for name, sym in model.param_symbols.items()}}
    op = exprs.lower_expr(model.flux, names, frozenset({S}))
    params = {name: float(v) for name, v in model.params.items()}
    ratio = sp.cancel(model.flux / S) if model.flux.is_rational_function(S) else model.flux / S
    radial, radial_op = lower_radial(ratio, names) if model.ndim == 2 else (None, None)
    return FluxIR(model.flux, op, params, show(model.flux.xreplace({S: sp.Symbol("s")})),
                  ratio, exprs.lower_expr(ratio, names, frozenset({S})), radial, radial_op)


S2 = sp.Symbol("s2", nonnegative=True)


def lower_radial(ratio: sp.Expr, names: dict) -> tuple[sp.Expr, exprs.Op]:
    """``g(s2) = (Phi(s)/s)`` at ``s = sqrt(s2)``: the 2D diffusivity as a function of
    ``|grad u|^2``, so the vector activation ``g(vx^2 + vy^2) (vx, vy)`` needs no square root
    (Phi(s)/s is even for the radial profiles the 2D recogniser builds, so s = +sqrt(s2) is exact)."""
    g2 = sp.powsimp(ratio.xreplace({S: sp.sqrt(S2)}), force=False)
    return g2, exprs.lower_expr(g2, {**names, S2: "s2"}, frozenset({S2}))


def lower_stencils(model: Model) -> tuple[StencilIR, ...]:
    """D from the ``stencil`` statement, checked to approximate d^m; one per space axis."""
    ch = model.stencil
    stencils = []
    for axis, h in enumerate(model.grid):
        st = make_stencil(ch.kind, model.order, h, ch.weights, ch.offset)
        why = st.consistency_error()
        if why is not None:
            raise model.error(f"stencil {st.describe()} is not an order-{model.order} difference: {why}",
                              "stencil", f"weights w with sum_j w_j (j - o)^q = 0 for q < {model.order} "
                              f"and sum_j w_j (j - o)^{model.order} = {model.order}!")
        stencils.append(st)
    kinds = axis_boundaries(model.boundary, len(stencils))
    out = []
    for axis, st in enumerate(stencils):
        cross = tuple((-1 - other, *stencils[other].flux_grid_padding(kinds[other]))
                      for other in range(len(stencils))
                      if other != axis and kinds[other] == "dirichlet")
        out.append(StencilIR(st, kinds[axis], axis=-1 - axis, cross=cross))  # x: the last tensor axis
    return tuple(out)


def axis_boundaries(boundary, ndim: int) -> tuple[str, ...]:
    """The boundary kind of each space axis (x first): one kind for all, or a per-axis tuple."""
    return (boundary,) * ndim if isinstance(boundary, str) else tuple(boundary)


def boundary_text(stencils: tuple[StencilIR, ...]) -> str:
    """The boundary as reports show it: ``neumann`` when every axis has it, else per axis
    (``x: periodic, y: neumann``)."""
    kinds = [ir.boundary for ir in stencils]
    if len(set(kinds)) == 1:
        return kinds[0]
    return ", ".join(f"{'xyz'[i]}: {k}" for i, k in enumerate(kinds))


def lower_scheme(model: Model) -> Scheme:
    """The scheme statement as an IR record (step sizes, weights and kernels computed here)."""
    kind, get = model.scheme, model.setting
    if kind == "explicit":
        return Explicit(get("tau"), int(get("steps")))
    if kind == "fed":
        n = int(get("cycle_length"))
        taus = fed_step_sizes(get("tau_max"), n)
        order = leja_order(fed_roots(float(get("tau_max")), n))
        return FED(get("tau_max"), int(get("cycles")), n, str(get("update")),
                   tuple(taus[i] for i in order), tuple(order))
    if kind == "fsi":
        return FSI(get("tau"), int(get("cycles")), int(get("cycle_length")), str(get("update")))
    if kind == "implicit":
        omega = get("omega")
        if omega is None:
            omega = sp.Integer(2) / (jacobi_width(model) + 1)  # inside the limit 2/K (MATH.md 5)
        return Implicit(get("tau"), int(get("steps")), str(get("solver")),
                        int(get("iterations")), omega)
    if kind == "multigrid":
        return lower_multigrid(model)
    raise model.error(f"unknown scheme {kind}", "scheme", "explicit, fed, fsi, implicit or multigrid")


def fed_step_sizes(tau_max: sp.Expr, n: int) -> list[sp.Expr]:
    """``tau_i = tau_max / (2 cos^2(pi (2i+1) / (4n+2)))``, i = 0..n-1 (MATH.md 3), to 30 digits.

    Exact cosines cost sympy ~1 ms each (seconds for long cycles) and buy nothing: the guarantee
    rests on the cycle polynomial, and each ``-tau_i w_j`` is still rounded to float64 only once.
    """
    import mpmath

    with mpmath.workdps(40):
        tm = mpmath.mpf(sp.Float(tau_max, 45)._mpf_)
        return [sp.Float(tm / (2 * mpmath.cos(mpmath.pi * (2 * i + 1) / (4 * n + 2)) ** 2), 30)
                for i in range(n)]


def fed_roots(tau_max: float, n: int) -> list[float]:
    """``1 / tau_i = 2 cos^2(pi (2i+1) / (4n+2)) / tau_max`` in float64 (enough to order them)."""
    import math

    return [2 * math.cos(math.pi * (2 * i + 1) / (4 * n + 2)) ** 2 / tau_max for i in range(n)]


def leja_order(points: list[float]) -> list[int]:
    """Leja ordering of the roots ``1/tau_i`` of the cycle polynomial: start with the largest,
    then repeatedly take the point maximising the product of distances to those taken (sums of
    logs, so nothing overflows; ties go to the lower index).  Keeps the partial products of
    ``(1 - tau_i lambda)`` small, which is what makes a long FED cycle survive rounding (MATH.md 3)."""
    import numpy as np

    x = np.asarray(points, dtype=float)
    taken = np.zeros(len(x), dtype=bool)
    score = np.zeros(len(x))
    out = [int(np.argmax(np.abs(x)))]
    taken[out[0]] = True
    with np.errstate(divide="ignore"):
        for _ in range(len(x) - 1):
            score += np.log(np.abs(x - x[out[-1]]))
            best = int(np.argmax(np.where(taken, -np.inf, score)))
            out.append(best)
            taken[best] = True
    return out


def jacobi_width(model: Model) -> int:
    """K = the number of nonzero weights of D: with K-point rows, ``D^T G D <= K diag(D^T G D)``
    (Cauchy-Schwarz), so damped Jacobi converges for ``omega < 2/K`` (K = m + 1 for binomial D)."""
    st = make_stencil(model.stencil.kind, model.order, model.grid[0], model.stencil.weights,
                      model.stencil.offset)
    return sum(1 for w in st.weights if w != 0)


def lower_multigrid(model: Model) -> Multigrid:
    """Linear diffusion only: ``A = I + tau c D^T D`` with ``Phi(s) = c s``."""
    if not model.linear:
        raise model.error(f"multigrid needs linear diffusion, but the flux Phi(s) = "
                          f"{show(model.flux.xreplace({S: sp.Symbol('s')}))} is nonlinear", "scheme",
                          "a linear equation such as dt(u) = dxx(u) with multigrid, or scheme "
                          "implicit(...) / fed(...) / fsi(...) for a nonlinear flux")
    if model.ndim != 1:
        raise model.error("multigrid is implemented for 1D fields only", "scheme",
                          "field u(x), or scheme implicit(...) for 2D")
    c = sp.nsimplify(sp.cancel(model.flux_value / S))
    get = model.setting
    tau = get("tau")
    st = make_stencil(model.stencil.kind, model.order, model.grid[0], model.stencil.weights,
                      model.stencil.offset)
    # omega = 2/(K+1): 2/3 for m = 1 (MATH.md 7), inside the Jacobi limit 2/K for every m (MATH.md 5)
    omega = sp.Integer(2) / (jacobi_width(model) + 1)
    kernel = operator_kernel(st.scaled, tau * c)
    coarse = []
    k = kernel
    for _ in range(3):
        k = galerkin_kernel(k, VERTEX_RESTRICTION)
        coarse.append(k)
    return Multigrid(tau, int(get("steps")), int(get("levels")), int(get("pre")), int(get("post")),
                     int(get("cycles")), c, omega, kernel, tuple(coarse))


def operator_kernel(w: tuple[sp.Expr, ...], scale: sp.Expr) -> tuple[sp.Expr, ...]:
    """Interior kernel of ``I + scale D^T D``: ``delta + scale * autocorrelation(w)``, offsets
    -(K-1)..K-1."""
    k = len(w)
    ac = [sum(w[i] * w[i + d] for i in range(k - d)) for d in range(k)]
    return tuple(sp.nsimplify(scale * ac[abs(d)] + (1 if d == 0 else 0)) for d in range(1 - k, k))


def galerkin_kernel(a: tuple[sp.Expr, ...], r: tuple[sp.Expr, ...]) -> tuple[sp.Expr, ...]:
    """Interior kernel of ``R A P`` with ``P = 2 R^T`` and stride 2, exactly:
    ``(RAP)[I, I+e] = 2 sum_(k,l) r_k r_l a[2e + l - k]`` (a centred, odd length)."""
    b = (len(a) - 1) // 2
    kr = len(r)
    out = {}
    bc = (b + kr - 1) // 2
    for e in range(-bc, bc + 1):
        tot = sp.Integer(0)
        for k in range(kr):
            for j in range(kr):
                d = 2 * e + j - k
                if -b <= d <= b:
                    tot += 2 * r[k] * r[j] * a[d + b]
        out[e] = tot
    while bc > 0 and out[bc] == 0 and out[-bc] == 0:
        bc -= 1
    return tuple(sp.nsimplify(out[e]) for e in range(-bc, bc + 1))


def lower(model: Model) -> Architecture:
    """Model -> Architecture (raises PdeError for what cannot be built yet)."""
    if model.ndim == 2 and model.order != 1:  # the 2D recogniser only builds m = 1; keep it honest
        raise model.error("2D fields support second-order diffusion only", "field", "field u(x)")
    return Architecture(
        name=model.name, class_name=class_name(model.name), dims=model.dims, order=model.order,
        stencils=lower_stencils(model), flux=lower_flux(model), scheme=lower_scheme(model),
        equation_text=model.equation_text, size=model.size,
    )


def min_points(arch: Architecture) -> int:
    """The fewest grid points a network input may have along every axis: a valid correlation
    (neumann) needs K points; the padded ones (periodic, dirichlet) one."""
    return max(st.stencil.size if st.boundary == "neumann" else 1 for st in arch.stencils)
