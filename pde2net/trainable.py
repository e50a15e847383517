"""Trainable networks that stay provably stable for every value of their parameters.

``prog.module(trainable=True)`` turns the explicit scheme ``u <- u - tau D^T Phi(D u)`` into a
network whose stencil weights ``w`` (one set per axis, shared by each conv and its transposed
conv), time step and diffusivity params are ``nn.Parameter``s, under a parametrisation that keeps
the hypotheses of MATH.md 1 true whatever values training gives them:

- ``tau = theta * 2 / (L * B(w))`` with ``theta = THETA_MAX * sigmoid(rho)`` in (0, 1) and
  ``B(w) = sum over axes (sum_j |w_j|)^2``, a differentiable upper bound of ``||D||^2`` for the
  current weights: every D here (valid / circular / zero-extended correlation, with zero rows in
  2D) has rows and columns with entries from ``w`` only, each ``w_j`` at most once per row and
  column, so ``||D||_2^2 <= ||D||_1 ||D||_inf <= (sum_j |w_j|)^2``, and for the stacked 2D
  gradient ``||[Dx; Dy]||^2 <= ||Dx||^2 + ||Dy||^2``;
- ``L = sup Phi(s)/s`` must hold for every value of a learned param: params are learned (as
  ``p = sign(p0) exp(q)``) only when SymPy proves, with each param a symbol of the sign of its
  spec value, that ``sup Phi(s)/s`` is the same number L for all of them and ``inf Phi(s)/s >= 0``
  (Perona-Malik, Charbonnier, Weickert: L = 1 for every lambda > 0).  Otherwise the params stay
  fixed at their spec values and :attr:`TrainableDiffusionNet.fixed_params` says why.

Then each block is ``(I - tau D^T G D) u`` with ``G`` in [0, L] and ``tau L ||D||^2 < 2``: the
Euclidean norm never increases.  ``THETA_MAX = 1 - 2^-10`` leaves room for the float rounding of
``B(w)`` and ``tau``.  Explicit scheme only (1D and 2D).
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
from .layers import pad_dim, pad_last
from .lower import Architecture, Explicit, StencilIR, min_points
from .stability import SYMBOLIC_SECONDS, flux_facts, time_limit

THETA_MAX = 1.0 - 2.0 ** -10
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


class StableBlockParams(nn.Module):
    """The parameters of one explicit block: stencil weights per axis, ``rho`` (the step), and
    the learnable diffusivity params as logs of their magnitudes."""

    def __init__(self, arch: Architecture, facts: ParamFacts, theta0: float) -> None:
        super().__init__()
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.tensor(st.weights, dtype=torch.float32)) for st in arch.stencils])
        self.rho = nn.Parameter(torch.tensor(math.log(theta0 / (1.0 - theta0)), dtype=torch.float32))
        self.log_params = nn.ParameterDict({
            n: nn.Parameter(torch.tensor(math.log(abs(arch.flux.params[n])), dtype=torch.float32))
            for n in facts.learnable})
        self.signs = {n: 1.0 if arch.flux.params[n] > 0 else -1.0 for n in facts.learnable}

    def norm_bound(self) -> torch.Tensor:
        """``B(w) = sum over axes (sum_j |w_j|)^2 >= ||D||^2``."""
        return sum(w.abs().sum() ** 2 for w in self.weights)

    def theta(self) -> torch.Tensor:
        return THETA_MAX * torch.sigmoid(self.rho)

    def tau(self, L: float) -> torch.Tensor:
        """``theta * 2 / (L * B(w))``: below the bound 2 / (L ||D||^2) for any parameter value."""
        return self.theta() * 2.0 / (L * self.norm_bound())

    def params(self, fixed: dict[str, float]) -> dict[str, Any]:
        out: dict[str, Any] = dict(fixed)
        for n, q in self.log_params.items():
            out[n] = self.signs[n] * torch.exp(q)
        return out


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
        b0 = sum(sum(abs(float(w)) for w in st.stencil.scaled) ** 2 for st in arch.stencils)
        theta0 = min(max(float(arch.scheme.tau) * self.L * b0 / 2.0 / THETA_MAX, 1e-6), 1.0 - 1e-3)
        n_sets = 1 if shared else max(self.steps, 1)
        self.blocks = nn.ModuleList([StableBlockParams(arch, facts, theta0) for _ in range(n_sets)])

    # -- the operator with the current weights of block k
    def D(self, u: torch.Tensor, k: int = 0) -> torch.Tensor:
        ws = self.blocks[k].weights
        if self.image:
            return torch.stack([axis_D(u, w, st, True) for w, st in zip(ws, self.arch.stencils)], dim=-3)
        return axis_D(u, ws[0], self.arch.stencils[0], False)

    def Dt(self, v: torch.Tensor, k: int = 0) -> torch.Tensor:
        ws = self.blocks[k].weights
        if self.image:
            return sum(axis_Dt(v.select(-3, i), w, st, True)
                       for i, (w, st) in enumerate(zip(ws, self.arch.stencils)))
        return axis_Dt(v, ws[0], self.arch.stencils[0], False)

    def flux(self, v: torch.Tensor, k: int = 0) -> torch.Tensor:
        """Phi(v): the scalar activation (1D) or the vector activation g(|v|^2) v (2D)."""
        env = self.blocks[k].params(self._fixed_values)
        if not self.image:
            return exprs.evaluate(self.arch.flux.op, {"s": v, **env}, self._lib)
        s2 = (v.select(-3, 0) ** 2 + v.select(-3, 1) ** 2).unsqueeze(-3)
        return v * exprs.evaluate(self.arch.flux.radial_op, {"s2": s2, **env}, self._lib)

    def block(self, u: torch.Tensor, k: int = 0) -> torch.Tensor:
        """``u - tau_k D_k^T Phi_k(D_k u)``."""
        p = self.blocks[k]
        return u - p.tau(self.L).to(u.dtype) * self.Dt(self.flux(self.D(u, k), k), k)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = self._batch(u)
        for i in range(self.steps):
            x = self.block(x, 0 if self.shared else i)
        return x.reshape(u.shape)

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
        """Per parameter set: the learned values and the bound they satisfy
        (``tau * L * B(w) = 2 theta < 2``, with ``B(w) >= ||D||^2``)."""
        out = []
        for p in self.blocks:
            out.append({
                "weights": [w.detach().double().tolist() for w in p.weights],
                "tau": float(p.tau(self.L)), "theta": float(p.theta()), "L": self.L,
                "B": float(p.norm_bound()),
                "params": {n: float(v) for n, v in p.params(self._fixed_values).items()},
            })
        return out

    @torch.no_grad()
    def verify(self, size: Optional[int] = None, seed: int = 0) -> dict[str, Any]:
        """Checks the guarantee numerically for the current (e.g. trained) parameters, in float64:
        per block, the dense matrix of D is probed from the live operator (D applied to unit
        vectors, so independent of the bound formula), and ``||D||^2 <= B(w)``,
        ``tau L ||D||^2 < 2``, and no growth of the live block on its top singular vector at
        amplitudes 1e-6 .. 10 and on random inputs are checked.  ``ok`` is the conjunction."""
        n = size or (12 if self.image else 64)
        shape = (n, n + 1) if self.image else (n,)
        m = int(np.prod(shape))
        net = copy.deepcopy(self).double()  # float64 checks; the module itself stays as it is
        rng = np.random.default_rng(seed)
        blocks = []
        for k, cert in enumerate(net.certificate()):
            eye = torch.eye(m, dtype=torch.float64).reshape(m, *shape)
            dense = net.D(eye, k).reshape(m, -1).T.numpy()  # rows: outputs of D; columns: unit inputs
            evals, evecs = np.linalg.eigh(dense.T @ dense)
            norm_sq = float(evals[-1])
            top = evecs[:, -1].reshape(shape)
            gains = []
            for amp in (1e-6, 1e-3, 1.0, 10.0):
                u = torch.tensor(amp * top)
                gains.append(float(net.block(u[None], k).norm() / u.norm()))
            rand = torch.tensor(rng.standard_normal((32, *shape)) * rng.uniform(1e-3, 10, (32,) + (1,) * len(shape)))
            out = net.block(rand, k)
            ratio = float((out.flatten(1).norm(dim=1) / rand.flatten(1).norm(dim=1)).max())
            blocks.append({"norm_D_sq": norm_sq, "B": cert["B"], "tau_L_norm_sq": cert["tau"] * self.L * norm_sq,
                           "max_gain_top": max(gains), "max_gain_random": ratio})
        tol = 1e-12
        ok = all(b["norm_D_sq"] <= b["B"] * (1 + tol) and b["tau_L_norm_sq"] < 2
                 and b["max_gain_top"] <= 1 + tol and b["max_gain_random"] <= 1 + tol for b in blocks)
        return {"ok": ok, "size": shape, "blocks": blocks}

    def extra_repr(self) -> str:
        learn = ", ".join(self.learnable) or "none"
        fixed = "; ".join(f"{n} fixed: {why}" for n, why in self.fixed_params.items())
        return (f"trainable ResNet: {self.steps} blocks u <- u - tau D^T Phi(D u), "
                f"{'shared' if self.shared else 'per-block'} parameters; tau = theta 2/(L B(w)), "
                f"theta in (0, {THETA_MAX}), B(w) = sum (sum|w|)^2 >= ||D||^2, L = {self.L:g}; "
                f"learned params: {learn}" + (f"; {fixed}" if fixed else ""))


def build_trainable(arch: Architecture, model: Model, shared: bool = True, doc: Any = None
                    ) -> TrainableDiffusionNet:
    """The trainable module, as an instance of a subclass named after the spec."""
    cls = type(arch.class_name, (TrainableDiffusionNet,),
               {"__doc__": doc or TrainableDiffusionNet.__doc__, "__module__": "pde2net.generated"})
    return cls(arch, model, shared)
