"""Trainable networks that stay provably stable for every value of their parameters.

``prog.module(trainable=True)`` turns the explicit scheme ``u <- u - tau D^T Phi(D u)`` into a
network whose stencil weights, time step and diffusivity params are ``nn.Parameter``s, under a
parametrisation that keeps the hypotheses of docs/theory.md §1 true whatever FINITE float values training
gives them (a NaN or infinite raw parameter is refused with a ValueError: training has diverged):

- Effective weights (scale-free).  With ``w`` the raw weights of all axes, ``m = max_j |w_j|`` and
  ``c = 2^floor(log2 m)`` (a power of two, held constant for the gradient, at least
  ``WEIGHT_FLOOR = 2^-32``), ``W = (w / c) * (s0 / max(sum_j |w_j / c|, 1))``, where ``s0`` is the
  l1 norm of the spec's weights (a constant).  For ``m >= 2^-31`` this is ``s0 w / ||w||_1``: the
  raw scale is irrelevant (the step and the diffusivity params carry it), ``||W||_1 = s0`` and the
  ratios of the weights (the stencil's shape, the x/y balance in 2D) are what is learned; below,
  ``W = s0 w / c`` with ``||W||_1 < s0``.  ``w / c`` is exact (a power of two), lies in
  ``[-2, 2]``, and the gradient ``dW/dw`` is at most ``2 s0 K / c <= 2^33 K s0``: no extreme
  magnitude reaches the step, for tiny (1e-45, 0), huge (3e38) or mixed raw weights.  At the
  spec's weights ``W = w`` (exactly when ``||w||_1`` is exact in float).
- ``tau = theta * 2 / (L * max(B(W), s0^2 / 4))`` with ``theta = THETA_MAX * sigmoid(rho)`` in
  [0, 1) and ``B(W) = sum over axes (sum_j |W_j|)^2``, an upper bound of ``||D(W)||^2``: every D
  here (valid / circular / zero-extended correlation, with zero rows in 2D) has rows and columns
  with entries from ``W`` only (a periodic grid shorter than the stencil sums aliased taps, which
  the triangle inequality keeps below ``sum |W_j|``), so ``||D||_2^2 <= ||D||_1 ||D||_inf <=
  (sum_j |W_j|)^2``, and for the stacked 2D gradient ``||[Dx; Dy]||^2 <= ||Dx||^2 + ||Dy||^2``.
  Clamping B from below only shrinks tau; it bounds ``tau <= 8 / (L s0^2)``, and it is never
  active when ``m >= 2^-31`` (then ``B(W) >= s0^2 / 2``).  Every factor of the step is a
  moderate number, so ``tau * W^2`` neither overflows nor underflows into ``inf * 0``.
- ``L = sup Phi(s)/s`` must hold for every value of a learned param: params are learned (as
  ``p = sign(p0) exp(clamp(q, log|p0| - Q, log|p0| + Q))``, ``Q = 16 ln 2``: ``|p|`` stays within
  a factor ``2^16`` of the spec's value ``p0``, so for a spec value of moderate size Perona-Malik's
  ``s^2 / lambda^2`` is never ``0/0`` or ``inf/inf``, and the float32 gradient stays finite while
  ``|s| < 4e9 lambda0^2`` (its largest intermediate is ``s^2 / lambda^4``); a clamped param has
  zero gradient) only when SymPy proves, with each param a symbol of the sign of its spec value,
  that ``sup Phi(s)/s`` is the same number L for all of them and ``inf Phi(s)/s >= 0``
  (Perona-Malik, Charbonnier, Weickert: L = 1 for every lambda > 0).  Otherwise the params stay
  fixed at their spec values and :attr:`TrainableDiffusionNet.fixed_params` says why.
- The activation is ``Phi(s) = G(s) s`` with ``G = clamp(nan_to_num(g(s)), 0, L)`` and ``g`` the
  cancelled ratio ``Phi(s)/s`` (2D: ``g(|v|^2) v``): mathematically ``G = g`` (``g`` in [0, L] is
  what was proven), and in float the clamp makes ``0 <= G <= L`` true by construction, whatever
  the rounding of the diffusivity's expression.

Then each block is ``(I - tau D^T G D) u`` with ``G`` in [0, L] and ``tau L ||D||^2 <= 2 theta <
2``: the Euclidean norm never increases.  ``THETA_MAX = 1 - 2^-10`` leaves room for the float
rounding of ``B(W)`` and ``tau`` (relative error below ``(K + 10) 2^-24`` in float32, K the
number of weights).  Explicit scheme only (1D and 2D).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import sympy as sp
import torch
import torch.nn.functional as F
from sympy.calculus.util import maximum, minimum
from torch import nn

from . import exprs
from .analyse import S, Model
from .layers import pad_dim, pad_last, specialise
from .lower import RADIAL_VAR, Architecture, Explicit, StencilIR, min_points
from .stability import SYMBOLIC_SECONDS, flux_facts, time_limit

THETA_MAX = 1.0 - 2.0 ** -10
WEIGHT_FLOOR = 2.0 ** -32  # smallest scale c: below it the weights are scaled linearly (finite gradients)
LOG_PARAM_BOUND = 16.0 * math.log(2.0)  # |log(p / p0)| <= Q: p within a factor 2^16 of the spec's
B_FLOOR_FRACTION = 0.25  # B(W) is clamped below at s0^2 / 4
_T = sp.Symbol("t", positive=True)


@dataclass(frozen=True)
class ParamFacts:
    """What is proven about the flux for all values of the learnable params."""

    L: sp.Expr
    learnable: tuple[str, ...]
    fixed: dict[str, str]


_FACTS_CACHE: dict = {}


def param_facts(model: Model, seconds: float = SYMBOLIC_SECONDS) -> ParamFacts:
    """Cached :func:`derive_param_facts` (keyed by the flux and the param values)."""
    key = (model.flux, tuple(model.params.items()), tuple(model.param_symbols.items()))
    if key not in _FACTS_CACHE:
        _FACTS_CACHE[key] = derive_param_facts(model, seconds)
    return _FACTS_CACHE[key]


def derive_param_facts(model: Model, seconds: float = SYMBOLIC_SECONDS) -> ParamFacts:
    """``L`` for the spec's values, and which params may be learned without changing it.

    All params of the flux are tried together; when that is not provable, they are added one at
    a time (greedily) so that the proof covers exactly the set that is learned.  Raises
    ValueError when no stability statement applies even at the spec's values.
    """
    facts = flux_facts(model.flux_value)
    if facts.status != "ok":
        raise ValueError(f"no trainable network with a stability guarantee: {facts.detail or facts.status}")
    used = [n for n, sym in model.param_symbols.items() if model.flux.has(sym)]
    fixed = {n: "does not appear in the flux" for n in model.params if n not in used}
    for n in used:
        if model.params[n] == 0:
            fixed[n] = "spec value 0 has no sign to keep"
    cand = [n for n in used if n not in fixed]
    if not cand:
        return ParamFacts(facts.L, (), fixed)
    if _subset_facts(model, cand, facts.L, seconds) is None:
        return ParamFacts(facts.L, tuple(cand), fixed)
    learn: list[str] = []
    for n in cand:
        why = _subset_facts(model, learn + [n], facts.L, seconds)
        if why is None:
            learn.append(n)
        else:
            fixed[n] = why
    return ParamFacts(facts.L, tuple(learn), fixed)


def _subset_facts(model: Model, names: list[str], L: sp.Expr, seconds: float) -> Optional[str]:
    """None when, with the params ``names`` free (each a symbol of its spec value's sign) and the
    others at their values, ``sup Phi(s)/s = L`` and ``inf Phi(s)/s >= 0`` are proven; else why not."""
    pos = {n: sp.Symbol(f"q_{i}", positive=True) for i, n in enumerate(names)}
    rep = {model.param_symbols[n]: sp.sign(model.params[n]) * q for n, q in pos.items()}
    rep.update({model.param_symbols[n]: v for n, v in model.params.items() if n not in pos})
    phi = model.flux.xreplace(rep)
    why = _same_bound_for_all(phi, L, seconds)
    if why is not None:
        return why
    for scale in (sp.Rational(1, 10), sp.Integer(7)):  # numeric cross-check at other values
        sample = phi.xreplace({q: scale * abs(model.params[n]) for n, q in pos.items()})
        f = flux_facts(sample)
        if f.status != "ok" or sp.N(f.L - L, 30) != 0:
            return f"numeric cross-check at {scale} x the spec values disagrees"
    return None


def _same_bound_for_all(phi: sp.Expr, L: sp.Expr, seconds: float) -> Optional[str]:
    """None when ``sup Phi(s)/s = L`` and ``inf >= 0`` for every positive value of the symbols."""
    try:
        with time_limit(seconds):
            r = sp.cancel(phi / S) if phi.is_rational_function(S) else phi / S
            for branch in (r.xreplace({S: _T}), r.xreplace({S: -_T})):
                hi = maximum(branch, _T, sp.Interval.open(0, sp.oo))
                lo = minimum(branch, _T, sp.Interval.open(0, sp.oo))
                if hi is None or lo is None or not hi.is_number or sp.N(hi - L, 40) != 0:
                    return f"sup Phi(s)/s depends on the params (= {hi})"
                if not (lo.is_number and lo >= 0) and lo.is_nonnegative is not True:
                    return f"inf Phi(s)/s >= 0 is not proven for all param values (= {lo})"
    except Exception as exc:  # noqa: BLE001 - includes SymbolicTimeout: learn nothing, say why
        return f"sympy could not bound Phi(s)/s for symbolic params ({type(exc).__name__})"
    return None


# ---------------------------------------------------------------------------- the layers
def _weighted_sum(xp: torch.Tensor, w: torch.Tensor, starts: list[int], n: int) -> torch.Tensor:
    """``sum_j w_j xp[..., s_j : s_j + n]`` with tensor weights (a correlation as shifted slices:
    autograd through it is far cheaper on CPU than through conv1d for K = 2..5 taps)."""
    acc = w[0] * xp[..., starts[0]:starts[0] + n]
    for j in range(1, len(starts)):
        acc = acc + w[j] * xp[..., starts[j]:starts[j] + n]
    return acc


def axis_D(u: torch.Tensor, w: torch.Tensor, ir: StencilIR, image: bool) -> torch.Tensor:
    """D with the (learned) weights ``w`` along ``ir.axis``: the correlation of the padded rows;
    on images the neumann rows the stencil cannot fill are zero (as
    :class:`~pde2net.layers.AxisPair`)."""
    x = u.movedim(ir.axis, -1) if image else u
    k, o = ir.stencil.size, ir.stencil.offset
    xp = pad_last(x, *ir.padding)
    d = _weighted_sum(xp, w, list(range(k)), xp.shape[-1] - k + 1)
    if image and ir.boundary == "neumann" and k > 1:
        d = F.pad(d, (o, k - 1 - o))
    if not image:
        return d
    d = d.movedim(-1, ir.axis)
    for other, before, after in ir.cross:  # onto a dirichlet axis's flux points (ghosts: 0)
        d = pad_dim(d, before, after, "zeros", other)
    return d


def axis_Dt(v: torch.Tensor, w: torch.Tensor, ir: StencilIR, image: bool) -> torch.Tensor:
    """``D^T v`` with the same weights: the transposed correlation ``(D^T v)_k = sum_j w_j
    vpad_(k + K - 1 - j)`` (the conv_transpose of the same kernel)."""
    if image:
        for other, before, after in ir.cross:  # D's zeros on a dirichlet axis's ghost points
            v = v.narrow(other, before, v.shape[other] - before - after)
    x = v.movedim(ir.axis, -1) if image else v
    k, o = ir.stencil.size, ir.stencil.offset
    if image and ir.boundary == "neumann" and k > 1:
        x = x[..., o:o + x.shape[-1] - k + 1]
    xp = pad_last(x, *ir.adjoint_padding)
    y = _weighted_sum(xp, w, [k - 1 - j for j in range(k)], xp.shape[-1] - k + 1)
    return y.movedim(-1, ir.axis) if image else y


def image_D(u: torch.Tensor, taps: tuple, ir: StencilIR) -> torch.Tensor:
    """:func:`axis_D` on images with the weights as a tuple of 0-dim tensors (``w.unbind()``,
    once per forward): shifted views along ``ir.axis`` itself (no ``movedim``) and no per-step
    indexing of the weight vector.  The same terms in the same order, so the same values."""
    dim, k, o = ir.axis, ir.stencil.size, ir.stencil.offset
    left, _, mode = ir.padding
    if mode == "circular":  # tap j reads u[(i + j - left) mod n]: a roll, no padded copy to slice
        d = weighted_rolls(u, taps, [left - j for j in range(k)], dim)
    else:
        up = pad_dim(u, *ir.padding, dim)
        n = up.shape[dim] - k + 1
        d = taps[0] * up.narrow(dim, 0, n)
        for j in range(1, k):
            d = d + taps[j] * up.narrow(dim, j, n)
    if ir.boundary == "neumann" and k > 1:  # zero flux where the stencil leaves the grid
        d = pad_dim(d, o, k - 1 - o, "zeros", dim)
    for other, before, after in ir.cross:  # onto a dirichlet axis's flux points (ghosts: 0)
        d = pad_dim(d, before, after, "zeros", other)
    return d


def image_Dt(v: torch.Tensor, taps: tuple, ir: StencilIR) -> torch.Tensor:
    """:func:`axis_Dt` on images with the weights as 0-dim tensors (see :func:`image_D`):
    ``(D^T v)_k = sum_j w_j vpad_(k + K - 1 - j)`` along ``ir.axis``, D's zero rows cropped first."""
    dim, k, o = ir.axis, ir.stencil.size, ir.stencil.offset
    for other, before, after in ir.cross:  # D's zeros on a dirichlet axis's ghost points
        v = v.narrow(other, before, v.shape[other] - before - after)
    if ir.boundary == "neumann" and k > 1:
        v = v.narrow(dim, o, v.shape[dim] - k + 1)
    left, _, mode = ir.adjoint_padding
    if mode == "circular":  # tap j reads v[(k + K - 1 - j - left) mod n]
        return weighted_rolls(v, taps, [left - (k - 1 - j) for j in range(k)], dim)
    vp = pad_dim(v, *ir.adjoint_padding, dim)
    n = vp.shape[dim] - k + 1
    y = taps[0] * vp.narrow(dim, k - 1, n)
    for j in range(1, k):
        y = y + taps[j] * vp.narrow(dim, k - 1 - j, n)
    return y


def weighted_rolls(x: torch.Tensor, taps: tuple, shifts: list, dim: int) -> torch.Tensor:
    """``sum_j w_j roll(x, s_j)`` along ``dim`` (a circular correlation; a shift of 0 mod n reads
    ``x`` itself): the terms of the circularly padded form, in its order, so the same values,
    for any period (also shorter than the stencil); autograd through a roll is one roll back."""
    n = x.shape[dim]
    acc = None
    for w, s in zip(taps, shifts):
        t = w * (x if s % n == 0 else torch.roll(x, s, dims=dim))
        acc = t if acc is None else acc + t
    return acc


class ClampedDiffusivity(torch.autograd.Function):
    """``G = clamp(nan_to_num(g, nan=0, posinf=L, neginf=0), 0, L)`` as one autograd node, with
    the derivative of the two torch ops it replaces: ``dG/dg = 1`` where ``g`` is finite and in
    ``[0, L]`` (clamp passes its bounds), else 0.  That set is exactly where ``G == g`` (a NaN
    equals nothing, an infinity or a value outside is moved), so the mask is one comparison made
    in forward, and backward (or a forward-mode jvp) is one ``where``.  Written with
    ``setup_context`` so that torch.func transforms (vmap) apply."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g: torch.Tensor, L: float) -> torch.Tensor:
        return torch.nan_to_num(g, nan=0.0, posinf=L, neginf=0.0).clamp_(0.0, L)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        inside = output == inputs[0]
        ctx.save_for_backward(inside)
        ctx.save_for_forward(inside)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return torch.where(inside, grad, 0.0), None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, _L) -> torch.Tensor:
        (inside,) = ctx.saved_tensors
        return torch.where(inside, tangent, 0.0)


@dataclass
class BlockConstants:
    """What a block needs from its parameter set, formed once per ``forward`` (not once per
    step): the effective weights ``W`` per axis and the transposed conv's weights ``W2 = -tau W``
    (the network ``u + W2^T Phi(W u)``, as the frozen network forms it), each as 0-dim tensors,
    and the diffusivity's op tree specialised to the current param values (its param-only
    subtrees, such as ``lambda^2``, computed once).  Autograd sums the gradients of all the steps
    that share them, exactly as when each step recomputes them (up to the order of the
    additions)."""

    taps: list
    taps2: list
    g: Any


def weight_scale_l1(weights) -> float:
    """``s0``: the l1 norm of all axes' weights (the constant norm of the effective weights)."""
    return float(sum(abs(float(w)) for ws in weights for w in ws))


def effective_weights(raw: list[torch.Tensor], s0: float) -> list[torch.Tensor]:
    """``W = (w / c) * (s0 / max(||w / c||_1, 1))``, ``c = max(2^floor(log2 max|w|), WEIGHT_FLOOR)``
    held constant for the gradient (see the module docstring: finite, ``||W||_1 <= s0``)."""
    flat = effective_flat(raw, s0)
    return [x.view_as(w) for x, w in zip(flat.split([w.numel() for w in raw]), raw)]


def effective_flat(raw: list[torch.Tensor], s0: float) -> torch.Tensor:
    """:func:`effective_weights` of all axes as one vector (the axes' weights one after the
    other): the parametrisation is a handful of kernels on one small vector, whatever the number
    of axes, rather than the same kernels per axis."""
    w = torch.cat([x.reshape(-1) for x in raw]) if len(raw) > 1 else raw[0].reshape(-1)
    m = w.detach().abs().max()
    c = torch.exp2(torch.floor(torch.log2(m))).clamp_min(WEIGHT_FLOOR)  # log2(0) = -inf -> floor
    v = w / c
    n = v.abs().sum().clamp_min(1.0)
    return v * (s0 / n)


def param_key(name: str) -> str:
    """The key of a learned param in ``log_params`` (and the state dict): ``param_<name>``."""
    return f"param_{name}"


class StableBlockParams(nn.Module):
    """The parameters of one explicit block: raw stencil weights per axis, ``rho`` (the step), and
    the learnable diffusivity params as logs of their magnitudes."""

    def __init__(self, arch: Architecture, facts: ParamFacts, theta0: float) -> None:
        super().__init__()
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.tensor(st.weights, dtype=torch.float32)) for st in arch.stencils])
        self.s0 = weight_scale_l1(st.weights for st in arch.stencils)
        self.rho = nn.Parameter(torch.tensor(math.log(theta0 / (1.0 - theta0)), dtype=torch.float32))
        # keyed ``param_<name>``: a param called ``lambda`` must not become an attribute that
        # generated code (torch.export's module, FX) spells ``self.lambda`` (a syntax error)
        self.log_params = nn.ParameterDict({
            param_key(n): nn.Parameter(torch.tensor(math.log(abs(arch.flux.params[n])), dtype=torch.float32))
            for n in facts.learnable})
        self.signs = {n: 1.0 if arch.flux.params[n] > 0 else -1.0 for n in facts.learnable}
        self.log_centres = {n: math.log(abs(arch.flux.params[n])) for n in facts.learnable}

    def effective_weights(self) -> list[torch.Tensor]:
        """The weights the operator uses (one tensor per axis): :func:`effective_weights`."""
        return effective_weights(list(self.weights), self.s0)

    def norm_bound(self, weights: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        """``max(B(W), s0^2 / 4)`` with ``B(W) = sum over axes (sum_j |W_j|)^2 >= ||D(W)||^2``."""
        ws = self.effective_weights() if weights is None else weights
        return sum(w.abs().sum() ** 2 for w in ws).clamp_min(B_FLOOR_FRACTION * self.s0 ** 2)

    def flat_constants(self, L: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, tau)`` with every axis's effective weights in one vector ``W``
        (:func:`effective_flat`) and ``tau = theta 2 / (L max(B(W), s0^2 / 4))`` (:meth:`tau`),
        formed with a few kernels on that vector: the per-axis l1 norms of B as one reduction
        over a (axes, K) view when the axes have equal sizes."""
        sizes = [w.numel() for w in self.weights]
        W = effective_flat(list(self.weights), self.s0)
        a = W.abs()
        if len(set(sizes)) == 1:
            sums = a.view(len(sizes), sizes[0]).sum(dim=1)
        else:
            sums = torch.stack([x.sum() for x in a.split(sizes)])
        B = (sums ** 2).sum().clamp_min(B_FLOOR_FRACTION * self.s0 ** 2)
        return W, self.theta() * 2.0 / (L * B)

    def theta(self) -> torch.Tensor:
        return THETA_MAX * torch.sigmoid(self.rho)

    def tau(self, L: float) -> torch.Tensor:
        """``theta * 2 / (L * max(B(W), s0^2/4))``: at most 2 / (L ||D||^2) for any parameter value."""
        return self.theta() * 2.0 / (L * self.norm_bound())

    def params(self, fixed: dict[str, float]) -> dict[str, Any]:
        """The diffusivity's params: ``sign(p0) exp(clamp(q, log|p0| - Q, log|p0| + Q))`` for
        learned ones."""
        out: dict[str, Any] = dict(fixed)
        for key, q in self.log_params.items():
            n = key[len("param_"):]
            c = self.log_centres[n]
            out[n] = self.signs[n] * torch.exp(q.clamp(c - LOG_PARAM_BOUND, c + LOG_PARAM_BOUND))
        return out

    def nonfinite(self) -> list[str]:
        """Names of raw parameters holding a NaN or an infinity (the parametrisation refuses them)."""
        return [n for n, p in self.named_parameters() if not bool(torch.isfinite(p).all())]

    def all_finite(self) -> bool:
        """Whether every raw parameter is finite: one read of the few values into Python (no
        per-parameter ``isfinite`` kernels); :meth:`nonfinite` names the culprits."""
        return all(math.isfinite(x) for p in self.parameters() for x in p.detach().reshape(-1).tolist())


def _check_float32_range(s0: float, L: float) -> None:
    """ValueError unless ``s0^2``, ``L s0^2`` and the largest step ``8 / (L s0^2)`` are normal
    float32 numbers (a spec with an extreme grid spacing or bound)."""
    f32 = np.finfo(np.float32)
    vals = (s0 * s0, L * s0 * s0, 8.0 / (L * s0 * s0) if L * s0 > 0 else math.inf)
    if not all(float(f32.tiny) * 2 ** 10 <= v <= float(f32.max) * 2 ** -10 for v in vals):
        raise ValueError(f"no trainable network: the stencil's weight norm {s0:g} and L = {L:g} give "
                         f"a step outside the float32 range")


class TrainableDiffusionNet(nn.Module):
    """Explicit diffusion ResNet with learned weights, step and diffusivity params; stable for
    every parameter value (see the module docstring for the parametrisation and the proof).

    ``shared=True``: one set of parameters for all blocks (the scheme as written);
    ``shared=False``: each block its own (a deeper learned model, still stable block by block).
    Input (N,), (B, N), (B, 1, N) in 1D; (H, W), (B, H, W), (B, 1, H, W) in 2D.
    """

    def __init__(self, arch: Architecture, model: Model, shared: bool = True) -> None:
        super().__init__()
        if not isinstance(arch.scheme, Explicit):
            raise ValueError(f"trainable networks support the explicit scheme, not {model.scheme}")
        self.arch, self.steps, self.shared = arch, arch.scheme.steps, shared
        self.image = len(arch.dims) == 2
        self.min_points = min_points(arch)
        facts = param_facts(model)
        self.L = float(facts.L)
        self.fixed_params = dict(facts.fixed)
        self.learnable = facts.learnable
        self._fixed_values = {n: v for n, v in arch.flux.params.items() if n not in facts.learnable}
        self._lib = exprs.LIBS["torch"]()
        _check_float32_range(weight_scale_l1(st.weights for st in arch.stencils), self.L)
        b0 = sum(sum(abs(float(w)) for w in st.stencil.scaled) ** 2 for st in arch.stencils)
        theta0 = min(max(float(arch.scheme.tau) * self.L * b0 / 2.0 / THETA_MAX, 1e-6), 1.0 - 1e-3)
        n_sets = 1 if shared else max(self.steps, 1)
        self.blocks = nn.ModuleList([StableBlockParams(arch, facts, theta0) for _ in range(n_sets)])

    # -- the operator with the current weights of block k
    def effective_weights(self, k: int = 0) -> list[torch.Tensor]:
        """The weights ``W`` (one tensor per axis) that block k's D uses: the scale-free image of
        the raw parameters (module docstring); the dense D of a test is built from these."""
        return self.blocks[k].effective_weights()

    def D(self, u: torch.Tensor, k: int = 0, weights: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        ws = self.effective_weights(k) if weights is None else weights
        if self.image:
            return torch.stack([axis_D(u, w, st, True) for w, st in zip(ws, self.arch.stencils)], dim=-3)
        return axis_D(u, ws[0], self.arch.stencils[0], False)

    def Dt(self, v: torch.Tensor, k: int = 0, weights: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        ws = self.effective_weights(k) if weights is None else weights
        if self.image:
            return sum(axis_Dt(v.select(-3, i), w, st, True)
                       for i, (w, st) in enumerate(zip(ws, self.arch.stencils)))
        return axis_Dt(v, ws[0], self.arch.stencils[0], False)

    def diffusivity(self, v: torch.Tensor, k: int = 0) -> torch.Tensor:
        """``G = clamp(nan_to_num(g), 0, L)`` at the flux points: ``g = Phi(s)/s`` (1D, the
        cancelled ratio) or ``g(|v|^2)`` (2D, shape ``(..., 1, H, W)``); in [0, L] by construction."""
        env = self.blocks[k].params(self._fixed_values)
        if self.image:
            s2 = (v.select(-3, 0) ** 2 + v.select(-3, 1) ** 2).unsqueeze(-3)
            g = exprs.evaluate(self.arch.flux.radial_op, self.arch.flux.env(s2, env, radial=True), self._lib)
            like = s2
        else:
            g = exprs.evaluate(self.arch.flux.ratio_op, self.arch.flux.env(v, env), self._lib)
            like = v
        if not isinstance(g, torch.Tensor) or g.shape != like.shape:
            g = g + torch.zeros_like(like)  # a constant diffusivity (linear flux)
        return torch.nan_to_num(g, nan=0.0, posinf=self.L, neginf=0.0).clamp(0.0, self.L)

    def flux(self, v: torch.Tensor, k: int = 0) -> torch.Tensor:
        """Phi(v) = G v: the scalar activation (1D) or the vector activation g(|v|^2) v (2D)."""
        return v * self.diffusivity(v, k)

    def block(self, u: torch.Tensor, k: int = 0) -> torch.Tensor:
        """``u - tau_k D_k^T Phi_k(D_k u)``."""
        if self.image:
            return self.image_step(u, self.constants(k, u.dtype))
        p = self.blocks[k]
        ws = p.effective_weights()
        return u - p.tau(self.L).to(u.dtype) * self.Dt(self.flux(self.D(u, k, ws), k), k, ws)

    def constants(self, k: int, dtype: torch.dtype) -> BlockConstants:
        """Block k's :class:`BlockConstants` (the step ``tau`` in ``dtype``)."""
        p = self.blocks[k]
        W, tau = p.flat_constants(self.L)
        W2 = -(tau.to(dtype) * W.to(dtype))  # = (-tau) W exactly: rounding is symmetric
        sizes = [w.numel() for w in p.weights]
        ends = [sum(sizes[:i]) for i in range(len(sizes) + 1)]

        def per_axis(taps: tuple) -> list:
            return [taps[a:b] for a, b in zip(ends, ends[1:])]

        env = p.params(self._fixed_values)
        g = specialise(self.arch.flux.radial_op, env, RADIAL_VAR, self._lib)
        return BlockConstants(per_axis(W.unbind()), per_axis(W2.unbind()), g)

    def image_step(self, u: torch.Tensor, c: BlockConstants, eager: bool = False) -> torch.Tensor:
        """One 2D block from its constants: ``u - tau (Dx^T (G dx) + Dy^T (G dy))`` with
        ``G = clamp(nan_to_num(g(dx^2 + dy^2)), 0, L)`` (:meth:`diffusivity`), written
        ``u + (W2x^T (G dx) + W2y^T (G dy))`` with ``W2 = -tau W`` (no full-size scaling by tau
        nor negation, forward or backward), the two channels kept apart (no stack, no channel
        selects) and the weights as 0-dim tensors; equal to ``u - tau Dt(flux(D u))`` up to
        rounding.  ``eager``: G by :class:`ClampedDiffusivity` (one autograd node instead of
        two, and a stored mask instead of four kernels backward)."""
        (sx, sy), (tx, ty) = self.arch.stencils, c.taps
        dx, dy = image_D(u, tx, sx), image_D(u, ty, sy)
        g = c.g(dx * dx + dy * dy)
        if not isinstance(g, torch.Tensor) or g.shape != dx.shape:
            g = g + torch.zeros_like(dx)  # a constant diffusivity (linear flux)
        if eager:
            G = ClampedDiffusivity.apply(g, self.L)
        else:
            G = torch.nan_to_num(g, nan=0.0, posinf=self.L, neginf=0.0).clamp(0.0, self.L)
        t2x, t2y = c.taps2
        return u + (image_Dt(dx * G, t2x, sx) + image_Dt(dy * G, t2y, sy))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        tracing = _tracing()
        if not tracing:  # a data-dependent branch: eager only (export and compile trace no check)
            self.check_parameters()
        x = self._batch(u)
        if self.image and not tracing and "block" not in self.__dict__:
            # eager (the step is not replaced by compile=True's): each parameter set's constants
            # once per forward, not once per step
            consts = [self.constants(k, x.dtype) for k in range(len(self.blocks))]
            for i in range(self.steps):
                x = self.image_step(x, consts[0 if self.shared else i], eager=True)
            return x.reshape(u.shape)
        for i in range(self.steps):
            x = self.block(x, 0 if self.shared else i)
        return x.reshape(u.shape)

    def check_parameters(self) -> None:
        """ValueError when a raw parameter is NaN or infinite: the parametrisation is defined (and
        stable) for every finite value; a non-finite one means training diverged."""
        if all(p.all_finite() for p in self.blocks):
            return
        bad = [f"blocks.{k}.{n}" for k, p in enumerate(self.blocks) for n in p.nonfinite()]
        if bad:
            raise ValueError(f"non-finite trainable parameters: {', '.join(bad)} (training diverged; "
                             f"the stability guarantee covers every finite value)")

    def _batch(self, u: torch.Tensor) -> torch.Tensor:
        if not isinstance(u, torch.Tensor) or not u.is_floating_point():
            raise TypeError("expected a floating-point torch.Tensor")
        nd = 2 if self.image else 1
        if u.dim() == nd + 2 and u.shape[1] != 1:
            raise ValueError(f"expected one channel; got shape {tuple(u.shape)}")
        if u.dim() not in (nd, nd + 1, nd + 2) or min(u.shape[-nd:]) < self.min_points:
            raise ValueError(f"expected a {nd}D field (optionally batched, one channel) with at least "
                             f"{self.min_points} points per axis; got shape {tuple(u.shape)}")
        return u.reshape(-1, *u.shape[-nd:])

    @torch.no_grad()
    def certificate(self) -> list[dict[str, Any]]:
        """Per parameter set: the effective values and the bound they satisfy
        (``tau * L * B = 2 theta < 2``, with ``B >= B(W) >= ||D(W)||^2``); ``weights`` are the
        effective weights W, ``raw_weights`` the parameters they are computed from."""
        self.check_parameters()
        out = []
        for p in self.blocks:
            out.append({
                "weights": [w.detach().double().tolist() for w in p.effective_weights()],
                "raw_weights": [w.detach().double().tolist() for w in p.weights],
                "tau": float(p.tau(self.L)), "theta": float(p.theta()), "L": self.L,
                "B": float(p.norm_bound()),
                "params": {n: float(v) for n, v in p.params(self._fixed_values).items()},
            })
        return out

    @torch.no_grad()
    def verify(self, size: Optional[int] = None, seed: int = 0) -> dict[str, Any]:
        """Checks the guarantee numerically for the current (e.g. trained) parameters.

        Per block, in float64: the dense matrix of D is probed from the live operator (D applied
        to unit vectors, so independent of the bound formula); ``||D||^2 <= B``, ``tau L ||D||^2 <
        2``; the live block agrees (1e-10 relative) with the dense step ``u - tau D^T (G * D u)``
        on stress inputs (top singular vector at amplitudes 1e-6 .. 10, steps, constants, ramps of
        slope 1e3, random fields up to amplitude 1e6), and does not grow them.  Then the module
        itself, in its own dtype: every block and the whole forward give finite outputs that do
        not grow (slack 1e-6 in float32, 1e-12 in float64).  ``ok`` is the conjunction; a raw
        parameter that is not finite gives ``ok = False`` and ``error``.
        """
        bad = [f"blocks.{k}.{n}" for k, p in enumerate(self.blocks) for n in p.nonfinite()]
        if bad:
            return {"ok": False, "error": f"non-finite parameters: {', '.join(bad)}", "blocks": []}
        n = size or (12 if self.image else 64)
        shape = (n, n + 1) if self.image else (n,)
        m = int(np.prod(shape))
        net = copy.deepcopy(self).double().cpu()  # float64 checks; the module itself stays as it is
        own, dev = next(self.parameters()).dtype, next(self.parameters()).device
        slack = 1e-6 if own == torch.float32 else 1e-12
        rng = np.random.default_rng(seed)
        blocks = []
        for k, cert in enumerate(net.certificate()):
            eye = torch.eye(m, dtype=torch.float64).reshape(m, *shape)
            dense = net.D(eye, k).reshape(m, -1).T.numpy()  # rows: outputs of D; columns: unit inputs
            evals, evecs = np.linalg.eigh(dense.T @ dense)
            norm_sq = float(evals[-1])
            inputs = _stress_inputs(evecs[:, -1].reshape(shape), shape, rng)
            x = torch.tensor(inputs)
            out = net.block(x, k)
            # the dense reference of the same step: u - tau D^T (G * D u), G from the live D u
            du = dense @ inputs.reshape(len(inputs), -1).T
            g = net.diffusivity(torch.tensor(du.T.reshape(len(inputs), *self._flux_shape(shape))), k)
            with np.errstate(all="ignore"):  # a non-finite step (a bypassed tau) fails below
                ref = inputs.reshape(len(inputs), -1) - cert["tau"] * (
                    dense.T @ (_flux_rows(g.numpy(), self.image) * du)).T
            got = out.reshape(len(inputs), -1).numpy()
            scale = np.abs(inputs.reshape(len(inputs), -1)).max(axis=1, keepdims=True)
            dense_err = float(np.nanmax(np.abs(got - ref) / scale)) if np.all(np.isfinite(got)) else math.inf
            gain = _max_gain(got, inputs)
            live = self.block(x.to(device=dev, dtype=own), k).double().cpu()
            live_ok = bool(torch.isfinite(live).all())
            live_gain = _max_gain(live.reshape(len(inputs), -1).numpy(), inputs) if live_ok else math.inf
            blocks.append({"norm_D_sq": norm_sq, "B": cert["B"], "tau_L_norm_sq": cert["tau"] * self.L * norm_sq,
                           "dense_rel_error": dense_err, "max_gain": gain, "max_gain_own_dtype": live_gain})
        stress = torch.tensor(_stress_inputs(rng.standard_normal(shape), shape, rng))
        stress = stress.to(device=dev, dtype=own)
        full = self(stress).double().cpu()
        full_ok = bool(torch.isfinite(full).all())
        full_gain = _max_gain(full.reshape(len(stress), -1).numpy(),
                              stress.double().cpu().numpy()) if full_ok else math.inf
        ok = all(b["norm_D_sq"] <= b["B"] * (1 + 1e-12) and b["tau_L_norm_sq"] < 2
                 and b["dense_rel_error"] <= 1e-10 and b["max_gain"] <= 1 + 1e-12
                 and b["max_gain_own_dtype"] <= 1 + slack for b in blocks) and full_gain <= 1 + slack
        return {"ok": ok, "size": shape, "blocks": blocks, "max_gain_forward": full_gain}

    def _flux_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of D u for one field, read off D itself: ``(2, Hf, Wf)`` on images (the flux
        grid: larger than the nodes along a dirichlet axis), ``(n_rows,)`` in 1D."""
        probe = self.D(torch.zeros(1, *shape, dtype=torch.float64))
        return tuple(probe.shape[1:])

    def extra_repr(self) -> str:
        learn = ", ".join(self.learnable) or "none"
        fixed = "; ".join(f"{n} fixed: {why}" for n, why in self.fixed_params.items())
        return (f"trainable ResNet: {self.steps} blocks u <- u - tau D^T Phi(D u), "
                f"{'shared' if self.shared else 'per-block'} parameters; weights W = s0 w/||w||_1 "
                f"(s0 = {self.blocks[0].s0:g}); tau = theta 2/(L B(w)), theta in [0, {THETA_MAX}), "
                f"B(w) = max(sum (sum|W|)^2, s0^2/4) >= ||D||^2, L = {self.L:g}; "
                f"learned params: {learn}" + (f"; {fixed}" if fixed else ""))


def _tracing() -> bool:
    """Whether torch.export, torch.compile, jit.trace or the ONNX exporter is tracing forward: the
    parameter check reads tensor values into Python, which a traced graph cannot hold."""
    compiler = torch.compiler
    exporting = getattr(compiler, "is_exporting", lambda: False)()
    return bool(compiler.is_compiling() or exporting or torch.jit.is_tracing()
                or torch.onnx.is_in_onnx_export())


def _stress_inputs(top: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Inputs that expose overflow, cancellation and growth: the top singular vector at
    amplitudes 1e-6 .. 10, a unit step, a constant, ramps of slope +-1e3, flat segments with
    jumps, and random fields of amplitudes 1e-3 .. 1e6."""
    m = int(np.prod(shape))
    last = np.indices(shape)[-1].astype(float)
    rows = [amp * top / np.linalg.norm(top) for amp in (1e-6, 1e-3, 1.0, 10.0)]
    flats = np.repeat(rng.uniform(-1e3, 1e3, (m + 3) // 4), 4)[:m].reshape(shape)
    rows += [np.where(last < shape[-1] / 2, 0.0, 1.0), np.full(shape, 3.0), 1e3 * last,
             -1e3 * np.indices(shape)[0].astype(float), flats]
    rows += [rng.standard_normal(shape) * a for a in (1e-3, 1.0, 1e3, 1e6)]
    return np.stack(rows)


def _flux_rows(g: np.ndarray, image: bool) -> np.ndarray:
    """The diffusivity per row of the dense D u: both channels of a node share g in 2D."""
    b = g.shape[0]
    if image:
        return np.concatenate([g.reshape(b, -1), g.reshape(b, -1)], axis=1).T
    return g.reshape(b, -1).T


def _max_gain(out: np.ndarray, inp: np.ndarray) -> float:
    """``max ||out|| / ||in||`` over the batch (inf when an output is not finite)."""
    out, inp = out.reshape(len(out), -1), inp.reshape(len(inp), -1)
    if not np.all(np.isfinite(out)):
        return math.inf
    return float(np.max(np.linalg.norm(out, axis=1) / np.linalg.norm(inp, axis=1)))


def build_trainable(arch: Architecture, model: Model, shared: bool = True, doc: Any = None
                    ) -> TrainableDiffusionNet:
    """The trainable module, as an instance of a subclass named after the spec."""
    cls = type(arch.class_name, (TrainableDiffusionNet,),
               {"__doc__": doc or TrainableDiffusionNet.__doc__, "__module__": "pde2net.generated"})
    return cls(arch, model, shared)
