"""The isotropic family: ``c * div( g(norm(grad(W))^2) * grad(u) )`` and ``c * laplace(u)``.

W is u, or ``gauss(u, sigma)`` (Catte et al.'s presmoothing, docs/theory.md §10); the field may
be 1D, 2D or 3D and have channels (a joint diffusivity ``g(sum_c |grad u_c|^2)``, the same for
every channel, docs/theory.md §12).  The term is ``A(u) = D^T G D`` with

- D the forward-difference gradient on the common flux grid, one boundary kind per axis
  (neumann: complete rows; periodic: circulant; dirichlet: zero ghosts on every side);
- G = c g(|grad_h W|^2) per flux point, the constant factor c absorbed into the diffusivity
  (c g < 0 somewhere is backward diffusion: no bound, the verdict "not stable").

The bound (docs/theory.md §1, §2, §12; proof): with ``0 <= c g <= L``, ``lambda_max(D^T G D) <=
L ||D||^2 <= L sum_d 4/h_d^2``.  It uses only the range of G, so presmoothing (any kernel,
truncation or boundary rule) leaves it unchanged (docs/theory.md §10).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import sympy as sp

from .. import exprs
from ..analyse import DIV, DX, DY, GRAD, LAPLACE, NORM, show
from ..lower import RADIAL_VAR, S2
from .base import DZ, GAUSS, Bound, Context, TermSource, cite, register
from .diffusivity import Diffusivity, LiveDiffusivity, diffusivity_of, function_source

FAMILY = "isotropic"
BOUNDARY_KINDS = ("neumann", "periodic", "dirichlet")
#: the Gaussian's support, in standard deviations (runtime ``grid.gauss_weights``)
TRUNCATE = 3.0
_NORM = sp.Symbol("r'norm", nonnegative=True)  # stands for norm(grad(W)) while splitting g off
_DERIVATIVES = (GRAD, DIV, NORM, LAPLACE, DX, DY, DZ, GAUSS)

EXPECTED = ("c * div( g(norm(grad(u))^2) * grad(u) ), c * div( g(norm(grad(gauss(u, sigma)))^2) "
            "* grad(u) ) or c * laplace(u)")


# ------------------------------------------------------------------------------------ the IR
@dataclass(frozen=True)
class Isotropic:
    """``D^T G D`` with ``G = g(|grad_h W|^2)`` (``g`` its constant factor included).

    ``sigma``: the presmoothing's standard deviation (exact), None without presmoothing;
    ``text``: the summand as written."""

    g: Diffusivity
    sigma: Optional[sp.Expr]
    ndim: int
    channels: int
    text: str
    family: str = FAMILY
    #: sigma with the params' values (exact), for reports
    sigma_value: Optional[sp.Expr] = None

    @property
    def diffusivities(self) -> tuple:
        return (self.g,)

    @property
    def linear(self) -> bool:
        return self.g.constant

    def describe(self) -> str:
        """The term and the network it becomes."""
        arg = "|grad u|^2" if self.sigma is None else f"|grad K_sigma*u|^2, {self._sigma_text()}"
        chans = "" if self.channels == 1 else f", {self.channels} channels, joint diffusivity"
        if self.linear:
            net = "gradient conv -> * constant -> transposed conv"
        else:
            smooth = "" if self.sigma is None else "Gaussian conv branch -> "
            net = f"gradient conv -> {smooth}g({arg}) per point -> transposed conv"
        return f"{self.text}: isotropic diffusion ({self.ndim}D{chans}), {net}"

    def bound(self, ctx: Context) -> Bound:
        """``lambda_max(D^T G D) <= L sum_d 4/h_d^2`` when ``0 <= g <= L`` is proven."""
        norm2 = sp.Add(*(4 / h ** 2 for h in ctx.grid))
        hyps = self.g.hypotheses() + _structure_hypotheses(self, ctx)
        sections = _sections(self, ctx)
        if not self.g.proven:
            status = self.g.facts.status
            failure = status if status in ("negative", "unbounded") else "unknown"
            g = f"g(s2) = {self.g.text.replace(chr(39), '')}"  # params print without their marker
            why = {"negative": f"the diffusivity {g} (its factor included) takes negative values",
                   "unbounded": f"the diffusivity {g} is unbounded: no finite bound on lambda_max"
                   }.get(failure, f"0 <= {g} <= L is not proven")
            return Bound(None, False, f"{why} ({self.g.facts.detail or self.g.real_detail})",
                         sections, hyps, False, failure)
        L = self.g.L
        return Bound(sp.simplify(L * norm2), True, _reason(L, ctx), sections, hyps, True)

    def nonnegative_stencil(self, ctx: Context) -> Optional[sp.Expr]:
        """A bound on the diagonal of every frozen ``D^T G D``, whose off-diagonal entries are
        <= 0 (a nonnegative stencil, docs/theory.md §11): each row of D is one forward difference
        and G is diagonal in [0, L] (presmoothing changes only its values), so ``D^T G D`` is a
        weighted graph Laplacian (dirichlet ghosts add to the diagonal only); a node has at most
        two edges per axis, each of weight <= L / h_d^2.  None when 0 <= g <= L is not proven."""
        if not self.g.proven:
            return None
        return sp.simplify(self.g.L * sp.Add(*(2 / h ** 2 for h in ctx.grid)))

    def torch_term(self, ctx: Context):
        """The live :class:`runtime.isotropic.IsotropicTerm`."""
        from .runtime.isotropic import IsotropicTerm

        return IsotropicTerm(LiveDiffusivity(self.g), _boundaries(ctx), _inv_h(ctx),
                             sigma=self._sigma(ctx), h=tuple(float(h) for h in ctx.grid),
                             constant=self.linear)

    def source(self, ctx: Context, pnames: dict[str, str], prefix: str) -> TermSource:
        """``IsotropicTerm(<prefix>g, ...)`` with the printed diffusivity (numbers printed with
        ``repr(float)``, boundary kinds checked against the known words)."""
        name = f"{prefix}g"
        sigma = self._sigma(ctx)
        args = ", ".join([
            name, repr(_boundaries(ctx)), _floats(_inv_h(ctx)),
            f"sigma={'None' if sigma is None else repr(sigma)}",
            f"h={_floats(tuple(float(h) for h in ctx.grid))}", f"constant={self.linear!r}"])
        return TermSource(("grid", "isotropic"), (function_source(self.g, name, pnames),),
                          f"IsotropicTerm({args})")

    def dense(self, ctx: Context, u: np.ndarray, f: Optional[np.ndarray] = None) -> np.ndarray:
        """``D^T G(u) D`` (float64, block diagonal over the channels), assembled row by row of D:
        a flux row with nodes (p, m) and weight ``G / h^2`` adds to (p, p), (m, m) and subtracts
        from (p, m), (m, p) (a ghost node, u = 0 there, adds nothing); G from the NumPy Gaussian
        (same boundary rule) and the diffusivity's op tree evaluated by NumPy."""
        u = np.asarray(u, dtype=np.float64)
        h = tuple(float(x) for x in ctx.grid)
        rows = flux_rows(u.shape[1:], _boundaries(ctx))
        sigma = self._sigma(ctx)
        w = u if sigma is None else np.stack([gauss_numpy(c, sigma, h, _boundaries(ctx)) for c in u])
        n = math.prod(u.shape[1:])
        s2 = 0.0
        for c in w:
            ext = np.append(c.ravel(), 0.0)  # index -1 (a ghost node) reads 0
            for (plus, minus), hd in zip(rows, h):
                s2 = s2 + ((ext[plus] - ext[minus]) / hd) ** 2
        s2 = np.broadcast_to(np.asarray(s2, dtype=np.float64), rows[0][0].shape)
        g = exprs.evaluate(self.g.op, {**self.g.params, RADIAL_VAR: s2}, exprs.LIBS["numpy"]())
        g = np.broadcast_to(np.asarray(g, dtype=np.float64), s2.shape)
        block = np.zeros((n + 1, n + 1))  # row/column n collects the ghost entries, dropped
        for (plus, minus), hd in zip(rows, h):
            wt = g / (hd * hd)
            np.add.at(block, (plus, plus), wt)
            np.add.at(block, (minus, minus), wt)
            np.add.at(block, (plus, minus), -wt)
            np.add.at(block, (minus, plus), -wt)
        return np.kron(np.eye(u.shape[0]), block[:n, :n])

    def _sigma_text(self) -> str:
        name, value = show(self.sigma), show(self.sigma_value)
        return f"sigma = {value}" if name == value else f"sigma = {name} = {value}"

    def _sigma(self, ctx: Context) -> Optional[float]:
        return None if self.sigma is None else float(ctx.value(self.sigma))


def _boundaries(ctx: Context) -> tuple[str, ...]:
    kinds = tuple(str(b) for b in ctx.boundaries)
    bad = [b for b in kinds if b not in BOUNDARY_KINDS]
    if bad or len(kinds) != ctx.ndim:
        raise ctx.error(f"boundary kinds {kinds} do not fit a {ctx.ndim}D field",
                        f"one of {', '.join(BOUNDARY_KINDS)} per axis")
    return kinds


def _inv_h(ctx: Context) -> tuple[float, ...]:
    return tuple(float(sp.Integer(1) / h) for h in ctx.grid)


def _floats(xs: tuple) -> str:
    return "(" + "".join(repr(float(x)) + ", " for x in xs) + ")"


def _sections(term: Isotropic, ctx: Context) -> str:
    """The theory sections the bound rests on: §2 (the gradient's norm), §12 when colour, 3D or
    dirichlet enter, §10 with presmoothing."""
    nums = [2]
    if term.sigma is not None:
        nums.append(10)
    if term.channels > 1 or ctx.ndim == 3 or "dirichlet" in ctx.boundaries:
        nums.append(12)
    return ", ".join(cite(n) for n in nums)


def _structure_hypotheses(term: Isotropic, ctx: Context) -> tuple[dict, ...]:
    hyps = [{"name": "D^T is the exact transpose of D (forward differences, boundary rows per axis)",
             "holds": True,
             "detail": "neumann: complete rows; periodic: circulant; dirichlet: zero ghosts on every "
                       f"side ({cite(12)})"}]
    if term.channels > 1:
        hyps.append({"name": "one joint diffusivity g(sum_c |grad u_c|^2) for every channel",
                     "holds": True,
                     "detail": f"A is block diagonal with {term.channels} identical blocks ({cite(12)})"})
    if term.sigma is not None:
        hyps.append({"name": "the presmoothed field enters only the diffusivity's argument",
                     "holds": True,
                     "detail": f"only 0 <= G <= L is used, whatever the smoothing ({cite(10)})"})
    return tuple(hyps)


def _reason(L: sp.Expr, ctx: Context) -> str:
    axes = ", ".join(f"h_{d} = {h}" for d, h in zip(ctx.dims, ctx.grid))
    return (f"lambda_max(D^T G D) <= sup G * ||D||^2 <= L * sum_d 4/h_d^2 with L = sup g = {L} "
            f"({axes}); per axis ||D_d||^2 = (4/h_d^2) cos^2(pi/(2 N_d)) (neumann; N_d + 1 for "
            "dirichlet; periodic: 4/h_d^2 for even N_d), so the bound is strict for neumann and "
            "dirichlet and approached as the grid grows")


# ---------------------------------------------------------------------------- recognition
class IsotropicFamily:
    """Recognises ``c * div( g(norm(grad(W))^2) * grad(u) )``, ``c * div(grad(u))`` and
    ``c * laplace(u)`` (W = u or ``gauss(u, sigma)``) in 1D, 2D and 3D, with channels."""

    name = FAMILY

    def recognise(self, term: sp.Expr, ctx: Context) -> Optional[Isotropic]:
        u = ctx.u
        c, core = term.as_independent(u, as_Add=False)
        if not isinstance(core, sp.Function):
            return None
        if core.func is LAPLACE:
            if core.args[0] != u:
                return None  # laplace(g(...) laplace(u)): fourth order, another family's
            return self._build(c, sp.Integer(1), None, term, ctx)
        if core.func is not DIV:
            return None
        inner = core.args[0]
        if any(s in ctx.tensors for s in inner.free_symbols):
            return None  # div(T * grad(u)): the anisotropic family's
        g, sigma = _split_diffusivity(inner, ctx)
        return self._build(c, g, sigma, term, ctx)

    @staticmethod
    def _build(c: sp.Expr, g: sp.Expr, sigma: Optional[sp.Expr], term: sp.Expr,
               ctx: Context) -> Isotropic:
        _check_constant(c, "the factor", ctx)
        if sigma is not None:
            s = ctx.value(sigma)
            if not (s.is_number and s.is_extended_real and s.is_positive):
                shown = show(sigma) if show(sigma) == show(s) else f"{show(sigma)} = {show(s)}"
                raise ctx.error(f"the presmoothing's sigma ({shown}) is not a positive constant",
                                "gauss(u, sigma) with sigma > 0 (a number or params)")
        full = (c * g).xreplace({_NORM: sp.sqrt(S2)})
        d = diffusivity_of(sp.powsimp(full), ctx)
        return Isotropic(d, sigma, ctx.ndim, ctx.channels, show(term),
                         sigma_value=None if sigma is None else ctx.value(sigma))


def _split_diffusivity(inner: sp.Expr, ctx: Context) -> tuple[sp.Expr, Optional[sp.Expr]]:
    """``g * grad(u)`` -> (g with norm(grad(W)) as :data:`_NORM`, sigma or None)."""
    u = ctx.u
    norms = sorted((a for a in inner.atoms(sp.Function) if a.func is NORM), key=sp.default_sort_key)
    args = {_norm_argument(n, ctx) for n in norms}
    if len(args) > 1:
        raise ctx.error("the diffusivity depends on two different gradients "
                        f"({', '.join(show(n) for n in norms)})", EXPECTED)
    # factor_terms: div(g * grad(u) + grad(u)) is div((g + 1) * grad(u))
    flux = sp.factor_terms(inner.xreplace({n: _NORM for n in norms}))
    g, vec = flux.as_independent(GRAD(u), as_Add=False)
    if vec != GRAD(u):
        raise ctx.error(f"inside div(...) the flux must be g(norm(grad(u))^2) * grad(u); found "
                        f"{show(inner)}", EXPECTED)
    stray = sorted((a for a in g.atoms(sp.Function) if a.func in _DERIVATIVES), key=sp.default_sort_key)
    others = g.free_symbols - set(ctx.param_symbols.values()) - {_NORM}
    if stray or others:
        what = show(stray[0]) if stray else ", ".join(sorted(str(s) for s in others))
        raise ctx.error(f"the diffusivity {show(g.xreplace({_NORM: norms[0]}) if norms else g)} may "
                        f"depend on the field only through norm(grad(u)) (found {what})", EXPECTED)
    sigma = next(iter(args)) if args else None
    return g, sigma


def _norm_argument(n: sp.Expr, ctx: Context) -> Optional[sp.Expr]:
    """sigma of ``norm(grad(gauss(u, sigma)))``, None for ``norm(grad(u))``; else an error."""
    u = ctx.u
    v = n.args[0]
    if isinstance(v, sp.Function) and v.func is GRAD:
        w = v.args[0]
        if w == u:
            return None
        if isinstance(w, sp.Function) and w.func is GAUSS and len(w.args) == 2 and w.args[0] == u:
            return w.args[1]
    raise ctx.error(f"{show(n)} in the diffusivity is not a gradient norm of the field",
                    "norm(grad(u)) or norm(grad(gauss(u, sigma)))")


def _check_constant(c: sp.Expr, what: str, ctx: Context) -> None:
    k = ctx.value(c)
    if not (k.is_number and k.is_extended_real):
        raise ctx.error(f"{what} {show(c)} is not a real constant", EXPECTED)


# ------------------------------------------------------------------- dense NumPy reference
def flux_rows(space: tuple, boundaries: tuple) -> list[tuple[np.ndarray, np.ndarray]]:
    """For every axis a (x = 0), the rows of D_a on the common flux grid (C order) as the flat
    node indices (plus, minus) of ``(D_a u)_r = (u_plus - u_minus) / h_a``; -1 is a node outside
    (u = 0: dirichlet ghosts, and the zero rows of neumann and of the other axes' ghost rows).
    Along axis a: neumann n - 1 rows and a zero row, periodic n rows (wrapping), dirichlet n + 1
    rows; along another axis b: its nodes, after a ghost row first if b is dirichlet."""
    ndim = len(space)
    idx = np.arange(math.prod(space)).reshape(space)
    out = []
    for a in range(ndim):
        ax = ndim - 1 - a
        n = space[ax]
        ghost = np.full_like(np.take(idx, [0], axis=ax), -1)
        if boundaries[a] == "periodic":
            plus, minus = np.roll(idx, -1, axis=ax), idx
        elif boundaries[a] == "dirichlet":
            ext = np.concatenate([ghost, idx, ghost], axis=ax)
            plus, minus = np.take(ext, np.arange(1, n + 2), axis=ax), np.take(ext, np.arange(0, n + 1), axis=ax)
        else:
            plus = np.concatenate([np.take(idx, np.arange(1, n), axis=ax), ghost], axis=ax)
            minus = np.concatenate([np.take(idx, np.arange(0, n - 1), axis=ax), ghost], axis=ax)
            if n == 1:
                plus = minus = ghost
        for b in range(ndim):
            if b != a and boundaries[b] == "dirichlet":
                bx = ndim - 1 - b
                pad = np.full_like(np.take(plus, [0], axis=bx), -1)
                plus = np.concatenate([pad, plus], axis=bx)
                minus = np.concatenate([pad, minus], axis=bx)
        out.append((plus.ravel(), minus.ravel()))
    return out


def gauss_numpy(u: np.ndarray, sigma: float, h: tuple, boundaries: tuple) -> np.ndarray:
    """``K_sigma * u`` (one channel, x the last axis), separable: the sampled Gaussian truncated
    at 3 sigma and renormalised, the field extended per axis by its boundary rule (neumann:
    mirrored about the left edge ``u_(-1-k) = u_k``, then about the right edge
    ``u_(n+k) = u_(n-1-k)``, then clamped, for kernels longer than the grid; periodic: wrap;
    dirichlet: zeros)."""
    out = np.asarray(u, dtype=np.float64)
    for a, kind in enumerate(boundaries):
        r = max(int(np.floor(TRUNCATE * sigma / h[a])), 0)
        if r == 0:
            continue
        k = np.arange(-r, r + 1) * h[a]
        w = np.exp(-k ** 2 / (2 * sigma * sigma))
        w /= w.sum()
        axis = out.ndim - 1 - a
        n = out.shape[axis]
        idx = np.arange(-r, n + r)
        if kind == "periodic":
            ext = np.take(out, idx % n, axis=axis)
        elif kind == "dirichlet":
            pad = [(0, 0)] * out.ndim
            pad[axis] = (r, r)
            ext = np.pad(out, pad)
        else:
            idx = np.where(idx < 0, -1 - idx, idx)
            idx = np.clip(np.where(idx >= n, 2 * n - 1 - idx, idx), 0, n - 1)
            ext = np.take(out, idx, axis=axis)
        out = sum(w[j] * np.take(ext, np.arange(j, j + n), axis=axis) for j in range(2 * r + 1))
    return out


register(IsotropicFamily())
