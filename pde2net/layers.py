"""The live PyTorch network, built from an :class:`~pde2net.lower.Architecture` (data only).

Two lowerings of the same IR:

- ``backend="fused"`` (default): D is a weighted sum of shifted views of the padded signal and
  ``W2 = -tau W1^T`` the same for the transposed correlation, so a whole block is one elementwise
  expression that ``torch.compile`` fuses into one kernel;
- ``backend="conv"``: the paper's literal architecture, ``F.conv1d`` with W1, the activation,
  ``F.conv_transpose1d`` with ``W2 = -tau W1`` (one shared weight), plus the skip connection.

Both compute ``u - tau D^T Phi(D u)``; they agree to round-off with each other and with the
dense reference.  Imported lazily: ``pde2net check`` never imports torch.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import exprs
from .errors import PdeError
from .lower import RADIAL_VAR, Architecture, Explicit, FluxIR, StencilIR, min_points
from .stencils import Stencil

BACKENDS = ("fused", "conv")


def pad_last(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """Pads the last axis: ``none``, ``zeros`` or ``circular`` (as slices, any leading shape)."""
    if mode == "none" or left == right == 0:
        return x
    if mode == "circular":
        n = x.shape[-1]
        if left > n or right > n:  # a period shorter than the padding: wrap by index
            return x.index_select(-1, wrap_index(n, left, right, x.device))
        return torch.cat([x[..., n - left:], x, x[..., :right]], dim=-1)
    return F.pad(x, (left, right))


def wrap_index(n: int, left: int, right: int, device=None) -> torch.Tensor:
    """``[-left, ..., n + right - 1] mod n``: the nodes a circular padding reads, any width."""
    return torch.arange(-left, n + right, device=device) % n


def unpad_adjoint(y: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """The adjoint of :func:`pad_last`: crop, and for circular padding fold the ends back."""
    if mode == "none" or left == right == 0:
        return y
    n = y.shape[-1] - left - right
    core = y[..., left:left + n]
    if mode == "circular" and (left > n or right > n):  # fold every wrapped copy back
        return torch.zeros_like(core).index_add_(-1, wrap_index(n, left, right, y.device), y)
    if mode == "circular":
        core = core.clone()
        if left:
            core[..., n - left:] += y[..., :left]
        if right:
            core[..., :right] += y[..., left + n:]
    return core


def shifted_sum(xp: torch.Tensor, coeffs: tuple[float, ...], starts: tuple[int, ...], n: int
                ) -> torch.Tensor:
    """``sum_j c_j xp[..., s_j : s_j + n]`` left to right, skipping zero weights.

    ``1*x`` and ``-1*x`` are written as ``x`` and ``-x``: IEEE gives the same bits, one kernel less.
    """
    return shifted_sum_dim(xp, coeffs, starts, n, -1)


def zero_padded_sum(x: torch.Tensor, left: int, right: int, coeffs: tuple[float, ...],
                    starts: tuple[int, ...]) -> torch.Tensor:
    """``shifted_sum(F.pad(x, (left, right)), coeffs, starts, n)``, bit for bit, as three pieces:
    the interior, where no term reads the padding, from plain slices of x, and the ``left`` and
    ``right`` end columns from the padded form on short windows.

    Used under torch.compile: inductor implements a read of a zero-padded tensor with masked
    index vectors for every term, several times slower on the CPU than the plain vector loop
    it emits for the interior.  Same terms in the same order, so the same bits as eager.
    """
    k, m = len(coeffs), x.shape[-1]
    n = m + left + right - k + 1
    inner = m - k + 1  # outputs left .. left + inner - 1 read x only
    if inner < 1:  # too short for an interior: the padded form
        return shifted_sum(F.pad(x, (left, right)), coeffs, starts, n)
    parts = []
    if left:
        parts.append(shifted_sum(F.pad(x[..., :k - 1], (left, 0)), coeffs, starts, left))
    parts.append(shifted_sum(x, coeffs, starts, inner))
    if right:
        parts.append(shifted_sum(F.pad(x[..., m - k + 1:], (0, right)), coeffs, starts, right))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def zero_pad_stored(x: torch.Tensor, left: int, right: int, dim: int) -> torch.Tensor:
    """``F.pad`` with zeros along ``dim``, written as a concatenation: the same values, but under
    torch.compile on the CPU a concatenation is always stored (inductor's ``ConcatKernel``).

    Used for the flux before ``D^T``: the flux (one division or more per point) is then computed
    once per flux point and stored, and ``D^T`` reads the stored array with plain vector loads.
    A padded read inside the fused kernel would instead recompute the flux for every tap of
    ``D^T`` (twice per point for a two-point stencil) behind masked loads.
    """
    if left == right == 0:
        return x
    shape = list(x.shape)
    parts = []
    if left:
        shape[dim] = left
        parts.append(x.new_zeros(shape))
    parts.append(x)
    if right:
        shape[dim] = right
        parts.append(x.new_zeros(shape))
    return torch.cat(parts, dim=dim)


def scaled_weights(cache: dict, exact: tuple, scale) -> tuple[tuple[float, ...], float]:
    """``(scale * w_j for each exact weight, float(scale))``: formed exactly and rounded once.

    Looked up by the identity of ``scale`` first (the entry keeps the object alive, so the id
    cannot be reused): a scale held by the module, such as ``tau``, is then a dict hit that
    torch.compile traces as constants, instead of tracing sympy arithmetic and guarding on it.
    New objects fall back to the value (the cache stays bounded by the distinct scales).
    """
    by_id, by_value = cache.setdefault("id", {}), cache.setdefault("value", {})
    hit = by_id.get(id(scale))
    if hit is not None and hit[0] is scale:
        return hit[1]
    value = by_value.get(scale)
    if value is None:
        value = by_value[scale] = (tuple(float(scale * w) for w in exact), float(scale))
    if len(by_id) < 256:
        by_id[id(scale)] = (scale, value)
    return value


def register_weights(pair: nn.Module) -> None:
    """The pair's constants as buffers (float64, what ``state_dict`` holds and ``.to()`` moves):
    ``W1`` the stencil weights, ``W2`` the scaled transpose's weights (``-tau W1``, set by
    :func:`prepare_pair`; ``W1`` until then).  The hot path reads the same numbers as Python
    floats (``pair.w1`` and the rounded-scale cache): a float scalar times a float32 tensor
    rounds the scalar to float32, whereas a 0-dim float64 buffer would change the bits under
    some kernels, and torch.compile traces Python floats as constants."""
    pair.register_buffer("W1", torch.tensor(pair.w1, dtype=torch.float64))
    pair.register_buffer("W2", torch.tensor(pair.w1, dtype=torch.float64))


def prepare_pair(pair: nn.Module, scales, w2_scale) -> None:
    """Forms ``scale * W1`` exactly and rounds it once, now, for each scale a network will pass to
    ``Dt`` (and 1, the default): ``forward`` then only looks the floats up by the scale's identity
    and runs no sympy/mpmath arithmetic (no graph break under torch.compile).  ``W2`` becomes
    ``w2_scale * W1`` as rounded here (``-tau W1`` for a network of step tau)."""
    for scale in (1, *scales, w2_scale):
        scaled_weights(pair._w2, pair._exact, scale)
    w2 = scaled_weights(pair._w2, pair._exact, w2_scale)[0]
    pair.W2 = torch.tensor(w2, dtype=torch.float64, device=pair.W1.device).to(pair.W1.dtype)


def param_buffer_name(name: str) -> str:
    """The buffer holding a param's value: ``param_<name>``, never the bare name, so a param called
    ``lambda`` or ``class`` is not an attribute that generated code (torch.export, FX) would spell
    ``self.lambda``."""
    return f"param_{name}"


def register_params(flux: nn.Module, params: dict) -> None:
    """The flux's param values as float64 buffers (the hot path keeps the Python floats)."""
    for name, value in params.items():
        flux.register_buffer(param_buffer_name(name), torch.tensor(float(value), dtype=torch.float64))


class Flux(nn.Module):
    """The activation Phi (and the diffusivity g = Phi(s)/s), evaluated from op trees."""

    def __init__(self, ir: FluxIR) -> None:
        super().__init__()
        self.ir = ir
        self._lib = exprs.LIBS["torch"]()
        register_params(self, ir.params)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return exprs.evaluate(self.ir.op, self.ir.env(s), self._lib)

    def diffusivity(self, s: torch.Tensor) -> torch.Tensor:
        """g = Phi(s)/s, finite at s = 0 (cancelled, or defined there by its limit)."""
        return exprs.evaluate(self.ir.ratio_op, self.ir.env(s), self._lib)

    def extra_repr(self) -> str:
        return f"Phi(s) = {self.ir.text}"


class StencilPair(nn.Module):
    """D (weights ``W1``) and the scaled transpose ``scale * D^T`` along the last axis."""

    def __init__(self, ir: StencilIR, backend: str) -> None:
        super().__init__()
        st = ir.stencil
        self.ir, self.backend, self.size = ir, backend, st.size
        self.w1 = ir.weights
        self._exact = st.scaled
        self._w2: dict = {}
        self.pad, self.adj_pad = ir.padding, ir.adjoint_padding
        register_weights(self)
        if backend == "conv":
            self.register_buffer("weight", torch.tensor(self.w1, dtype=torch.float64).view(1, 1, -1))

    def w2(self, scale) -> tuple[float, ...]:
        """``scale * W1``, formed exactly (sympy scale) and rounded once, as the source prints it."""
        return scaled_weights(self._w2, self._exact, scale)[0]

    def prepare(self, scales, w2_scale) -> None:
        """Rounds ``scale * W1`` for every scale the network passes (see :func:`prepare_pair`)."""
        prepare_pair(self, scales, w2_scale)

    def D(self, u: torch.Tensor) -> torch.Tensor:
        if self.backend == "fused" and self.pad[2] == "zeros" and torch.compiler.is_compiling():
            return zero_padded_sum(u, self.pad[0], self.pad[1], self.w1, tuple(range(self.size)))
        up = pad_last(u, *self.pad)
        if self.backend == "conv":
            w = self.weight.to(dtype=u.dtype)
            return F.conv1d(up.unsqueeze(-2), w).squeeze(-2)
        n = up.shape[-1] - self.size + 1
        return shifted_sum(up, self.w1, tuple(range(self.size)), n)

    def Dt(self, v: torch.Tensor, scale=1) -> torch.Tensor:
        """``scale * D^T v``: the transposed convolution with ``W2 = scale * W1``."""
        if self.backend == "conv":
            w = scaled_weights(self._w2, self._exact, scale)[1] * self.weight.to(dtype=v.dtype)
            y = F.conv_transpose1d(v.unsqueeze(-2), w).squeeze(-2)
            return unpad_adjoint(y, *self.pad)
        k = self.size
        starts = tuple(k - 1 - j for j in range(k))
        if self.adj_pad[2] == "zeros" and torch.compiler.is_compiling():
            vp = zero_pad_stored(v, self.adj_pad[0], self.adj_pad[1], -1)
        else:
            vp = pad_last(v, *self.adj_pad)
        n = vp.shape[-1] - k + 1
        return shifted_sum(vp, self.w2(scale), starts, n)

    def extra_repr(self) -> str:
        return (f"W1 = {list(self.w1)} (offset {self.ir.stencil.offset}), W2 = -tau W1^T, "
                f"boundary={self.ir.boundary}, backend={self.backend}")


class DiffusionOperator(nn.Module):
    """``A(u) = D^T Phi(D u)`` and its pieces: what every scheme's network is made of.

    Schemes use :meth:`explicit_step` (``u - tau A(u)``), or freeze the diffusivity
    ``G = g(D u)`` and apply the linear ``D^T G D`` (:meth:`frozen_apply`).  Scales such as
    ``-tau`` are passed exactly (sympy) so ``W2 = -tau W1^T`` is rounded once.
    """

    def __init__(self, arch: Architecture, backend: str = "fused") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.pair = StencilPair(arch.stencils[0], backend)
        self.flux = Flux(arch.flux)

    def prepare(self, scales, w2_scale, diagonal: bool = False) -> None:
        """Rounds the weights for every scale the network uses (:func:`prepare_pair`), and with
        ``diagonal`` builds the squared-weight pair of :meth:`frozen_diagonal` now, not in forward."""
        self.pair.prepare(scales, w2_scale)
        if diagonal:
            self._square()._square_pair.prepare(scales, w2_scale)

    def _square(self) -> "DiffusionOperator":
        if not hasattr(self, "_square_pair"):
            st = self.pair.ir.stencil
            sq = Stencil(tuple(w * w for w in st.weights), st.offset, 2 * st.order, st.h)
            self._square_pair = StencilPair(StencilIR(sq, self.pair.ir.boundary, self.pair.ir.axis),
                                            self.pair.backend)
        return self

    def D(self, u: torch.Tensor) -> torch.Tensor:
        return self.pair.D(u)

    def Dt(self, v: torch.Tensor, scale=1) -> torch.Tensor:
        return self.pair.Dt(v, scale)

    def explicit_step(self, u: torch.Tensor, tau) -> torch.Tensor:
        """``u - tau D^T Phi(D u)``: skip connection + transposed conv of the activated conv.

        Written ``u - (tau D^T) v`` rather than ``u + (-tau D^T) v``: IEEE rounding is symmetric, so
        the bits are those of ``W2 = -tau W1^T`` (the emitted source), and no sympy negation runs
        per call (torch.compile then traces floats only).
        """
        return u - self.pair.Dt(self.flux(self.pair.D(u)), tau)

    def diffusivity(self, u: torch.Tensor) -> torch.Tensor:
        """``G = g(D u)`` at the flux points, for schemes that freeze it."""
        return self.flux.diffusivity(self.pair.D(u))

    def frozen_apply(self, u: torch.Tensor, G: torch.Tensor, scale=1) -> torch.Tensor:
        """``scale * D^T (G * D u)``: the linear operator with the diffusivity G frozen."""
        return self.pair.Dt(G * self.pair.D(u), scale)

    def frozen_diagonal(self, G: torch.Tensor, scale=1) -> torch.Tensor:
        """``diag(scale * D^T G D)_j = scale * sum_i D_ij^2 G_i``, for Jacobi smoothers.

        Each row of D holds every weight in its own column, except on a periodic grid shorter
        than the stencil (N < K), where taps ``t`` with equal ``(t - o) mod N`` land on one column
        and ``D_ij`` is their sum: there :func:`aliased_diagonal` squares those sums.  Otherwise
        the transposed correlation of G with the squared weights (same paddings).
        """
        ir = self.pair.ir
        if ir.boundary == "periodic" and G.shape[-1] < ir.stencil.size:
            return aliased_diagonal(G, ir.stencil, scale, -1)
        return self._square()._square_pair.Dt(G, scale)

    @staticmethod
    def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-row inner product over the grid, shape ``(B, 1)`` (for Krylov solvers)."""
        return (a * b).sum(dim=-1, keepdim=True)

    @staticmethod
    def amax(a: torch.Tensor) -> torch.Tensor:
        """Per-row ``max |a|`` over the grid, shape ``(B, 1)`` (to scale a solve)."""
        return a.abs().amax(dim=-1, keepdim=True)


class DiffusionNet(nn.Module):
    """Base class of generated networks: ``steps`` ResNet blocks ``u + W2 Phi(W1 u)``.

    Input ``(N,)``, ``(B, N)`` or ``(B, 1, N)``, any float dtype and device; output the same shape.
    """

    scheme_type: type = Explicit

    def __init__(self, arch: Architecture, backend: str = "fused") -> None:
        super().__init__()
        if not isinstance(arch.scheme, self.scheme_type):
            raise NotImplementedError(f"{type(self).__name__} does not build {type(arch.scheme).__name__}")
        self.arch = arch
        self._tau = getattr(arch.scheme, "tau", None)
        self.steps = arch.scheme.steps
        self.min_points = min_points(arch)
        self.op = make_operator(arch, backend)
        #: the proven bound for a new tau: set by ``Program.module`` to a function returning the
        #: stability report; None (a network built directly): tau is read-only
        self.stability_report = None
        self.register_load_state_dict_pre_hook(_refuse_other_constants)
        if self.scheme_type is Explicit:  # the scheme networks call it at the end of their own
            self.freeze_constants()

    # -- constants: Python floats in the hot path, float64 buffers as the described state ------
    def scales(self) -> tuple:
        """The exact scales this network passes to ``Dt`` (``tau`` for ``u - tau D^T v``)."""
        return (self._tau,)

    def needs_diagonal(self) -> bool:
        """Whether ``forward`` uses ``op.frozen_diagonal`` (its squared-weight pairs)."""
        return False

    def freeze_constants(self) -> None:
        """Rounds every scaled weight the network uses now (no sympy in ``forward``) and sets the
        buffers: ``tau_value`` (tau rounded once), each pair's ``W1`` and ``W2 = -tau W1``, and
        each param's ``param_<name>`` on the flux.  Called again after tau changes."""
        tau = self._tau
        if tau is None:
            return
        self.op.prepare(self.scales(), -tau, self.needs_diagonal())
        value = torch.tensor(float(tau), dtype=torch.float64)
        if "tau_value" in self._buffers:
            value = value.to(self._buffers["tau_value"].device)
        self.register_buffer("tau_value", value)

    @property
    def tau(self):
        """The time step, exact (a sympy number, as the spec gives it)."""
        return self._tau

    @tau.setter
    def tau(self, value) -> None:
        """A new time step, re-checked against the derived bound before it is used: refused with
        a ValueError above ``tau_max`` (or where there is no proven bound), and read-only in
        every scheme other than explicit (change it in the spec, or compile again)."""
        new = check_new_tau(self, value)
        self.__dict__["_tau"] = new
        self.freeze_constants()

    def block(self, u: torch.Tensor) -> torch.Tensor:
        """One explicit step ``u - tau D^T Phi(D u)``."""
        return self.op.explicit_step(u, self.tau)

    def forward(self, u: torch.Tensor, steps: Optional[int] = None) -> torch.Tensor:
        rows = self._rows(u)
        with scratch_scope():  # the steps share their padded frames (eager, no autograd)
            for _ in range(self.steps if steps is None else steps):
                rows = self.block(rows)
        return rows.reshape(u.shape)

    def _rows(self, u: torch.Tensor) -> torch.Tensor:
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(u).__name__}")
        if not u.is_floating_point():
            raise TypeError(f"expected a floating-point tensor, got {u.dtype}")
        if len(self.arch.dims) == 2:
            return self._images(u)
        if u.dim() == 3 and u.shape[1] != 1:
            raise ValueError(f"expected one channel, shape (B, 1, N); got {tuple(u.shape)}")
        if u.dim() not in (1, 2, 3) or u.shape[-1] < self.min_points:
            raise ValueError(f"expected shape (N,), (B, N) or (B, 1, N) with N >= {self.min_points}; "
                             f"got {tuple(u.shape)}")
        return u.reshape(-1, u.shape[-1])

    def _images(self, u: torch.Tensor) -> torch.Tensor:
        """2D input ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)`` as a batch ``(B, H, W)``."""
        if u.dim() == 4 and u.shape[1] != 1:
            raise ValueError(f"expected one channel, shape (B, 1, H, W); got {tuple(u.shape)}")
        if u.dim() not in (2, 3, 4) or min(u.shape[-2:]) < self.min_points:
            raise ValueError(f"expected shape (H, W), (B, H, W) or (B, 1, H, W) with H, W >= "
                             f"{self.min_points}; got {tuple(u.shape)}")
        return u.reshape(-1, *u.shape[-2:])

    def extra_repr(self) -> str:
        return f"ResNet: {self.steps} blocks u <- u - tau D^T Phi(D u), tau = {float(self.tau)!r}"


def exact_number(value):
    """A user's tau as an exact number: a float by its shortest decimal (``0.1`` as 1/10, as the
    spec's ``tau = 0.1`` reads), an int or a sympy number as it is (:func:`analyse.param_override`:
    nothing is parsed or sympified)."""
    import sympy as sp

    from .analyse import param_override

    if isinstance(value, bool) or not isinstance(value, (int, float, sp.Basic)):
        raise TypeError(f"tau must be a number, got {type(value).__name__}")
    try:
        return param_override("tau", value, label="tau")
    except PdeError as exc:
        raise ValueError(exc.message) from None


def check_new_tau(net: "DiffusionNet", value):
    """``value`` as an exact tau if the derived bound proves it stable, else a ValueError naming
    the bound.  Sound: the check is ``tau <= tau_max`` against the report's ``tau_max`` (the largest
    float not above the exact bound)."""
    import sympy as sp

    where = ("set tau in the spec (`scheme explicit(tau = ...)`, or `tau = auto`) and compile it "
             "again: pde2net.load(path, params=...) / pde2net.compile_text(text)")
    if type(net.arch.scheme) is not Explicit:
        raise ValueError(f"tau is read-only for a {type(net.arch.scheme).__name__} network (its "
                         f"step sizes and weights are derived from it); {where}")
    report = net.stability_report() if callable(net.stability_report) else None
    if report is None:
        raise ValueError(f"tau is read-only on a network built without its stability report; "
                         f"use prog.module() or {where}")
    tau = exact_number(value)
    if not (tau.is_real and tau > 0):
        raise ValueError(f"tau must be a positive number, got {value!r}")
    if report.unconditional:
        return tau
    if report.tau_max is None:
        raise ValueError(f"tau = {value!r} refused: no proven bound on tau for this network "
                         f"({report.reason}); {where}")
    if tau > sp.Rational(report.tau_max):
        raise ValueError(f"tau = {value!r} exceeds the proven bound tau_max = {report.tau_max!r} "
                         f"({report.bound_expr}); steps above it can grow the solution. {where}")
    return tau


def _refuse_other_constants(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook of a frozen network: its buffers describe constants that the
    stability proof is about, and forward reads them as Python floats, so a state holding other
    values is refused before anything is copied (loading equal values, e.g. into a copy moved with
    ``.to()``, succeeds).  Other constants come from the spec (``pde2net.load(..., params=...)``)
    or, for tau, from the re-checked setter ``net.tau = ...``."""
    for name, buf in module.named_buffers():
        key = prefix + name
        if key in state_dict and isinstance(state_dict[key], torch.Tensor):
            new = state_dict[key].detach().to(device=buf.device, dtype=buf.dtype)
            if new.shape != buf.shape or not torch.equal(new, buf):
                raise ValueError(
                    f"load_state_dict: {key} differs from this frozen network's constant (the "
                    f"stability proof is for the spec's values); change params with "
                    f"pde2net.load(path, params=...), tau with net.tau = ... (re-checked against "
                    f"the bound), or train prog.module(trainable=True)")


# ------------------------------------------------------------------------------------ 2D
def pad_dim(x: torch.Tensor, left: int, right: int, mode: str, dim: int) -> torch.Tensor:
    """:func:`pad_last` along ``dim`` (-1 for x, -2 for y): ``none``, ``zeros`` or ``circular``."""
    if mode == "none" or left == right == 0:
        return x
    n = x.shape[dim]
    if mode == "circular" and (left > n or right > n):  # a period shorter than the padding
        return x.index_select(dim, wrap_index(n, left, right, x.device))
    if mode == "circular":
        return torch.cat([x.narrow(dim, n - left, left), x, x.narrow(dim, 0, right)], dim=dim)
    return F.pad(x, (left, right) if dim == -1 else (0, 0, left, right))


def unpad_dim(y: torch.Tensor, left: int, right: int, mode: str, dim: int) -> torch.Tensor:
    """The adjoint of :func:`pad_dim`: crop, and for circular padding fold the ends back."""
    if mode == "none" or left == right == 0:
        return y
    n = y.shape[dim] - left - right
    core = y.narrow(dim, left, n)
    if mode == "circular" and (left > n or right > n):  # fold every wrapped copy back
        return torch.zeros_like(core).index_add_(dim, wrap_index(n, left, right, y.device), y)
    if mode == "circular":
        core = core.clone()
        if left:
            core.narrow(dim, n - left, left).add_(y.narrow(dim, 0, left))
        if right:
            core.narrow(dim, 0, right).add_(y.narrow(dim, left + n, right))
    return core


def shifted_sum_dim(xp: torch.Tensor, coeffs: tuple[float, ...], starts: tuple[int, ...], n: int,
                    dim: int) -> torch.Tensor:
    """``sum_j c_j xp[s_j : s_j + n]`` along ``dim``, in the order and form codegen prints."""
    return weighted_terms([xp.narrow(dim, s, n) if c != 0.0 else None for c, s in zip(coeffs, starts)],
                          coeffs)


def weighted_terms(terms: list, coeffs: tuple[float, ...]) -> torch.Tensor:
    """``sum_j c_j t_j`` left to right, skipping zero weights (their terms may be None), ``1*t`` and
    ``-1*t`` written ``t`` and ``-t`` (IEEE gives the same bits, one kernel less): the form of
    :func:`shifted_sum_dim` for terms that are not views of one padded array."""
    acc: Optional[torch.Tensor] = None
    for c, t in zip(coeffs, terms):
        if c == 0.0:
            continue
        if acc is None:
            acc = t if c == 1.0 else -t if c == -1.0 else c * t
        else:
            acc = acc + t if c == 1.0 else acc - t if c == -1.0 else acc + c * t
    assert acc is not None, "a stencil has a nonzero weight (checked when lowering)"
    return acc


_SCRATCH = threading.local()


@contextlib.contextmanager
def scratch_scope() -> Iterator[None]:
    """Within it, :func:`scoped` hands the same object to the same caller for the same key: the
    steps of one ``forward`` reuse their plan and its zero-framed buffers instead of allocating
    and zero-filling new ones per step (per thread; released when the scope ends)."""
    prev = getattr(_SCRATCH, "cache", None)
    _SCRATCH.cache = {}
    try:
        yield
    finally:
        _SCRATCH.cache = prev


def scoped(key: tuple, make: Callable[[], Any]) -> Any:
    """``make()``, or inside a :func:`scratch_scope` the object made for ``key`` before (the
    key holds the caller's id: the caller is alive for the whole scope)."""
    cache = getattr(_SCRATCH, "cache", None)
    if cache is None:
        return make()
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = make()
    return hit


def correlate_into(terms: list, coeffs: tuple[float, ...], out: torch.Tensor) -> None:
    """``out = weighted_terms(terms, coeffs)``, bit for bit (``terms[j]``: what tap j reads).  The
    forward and backward differences (-1, 1) and (1, -1) are one subtraction written into
    ``out``: ``-a + b`` and ``b - a`` are the same IEEE operation."""
    if coeffs == (-1.0, 1.0):
        torch.sub(terms[1], terms[0], out=out)
    elif coeffs == (1.0, -1.0):
        torch.sub(terms[0], terms[1], out=out)
    else:
        out.copy_(weighted_terms(terms, coeffs))


def specialise(op: "exprs.Op", params: dict, var: str, lib: dict) -> Callable[[Any], Any]:
    """``x -> exprs.evaluate(op, {**params, var: x}, lib)`` for a tensor ``x``, with the tree walked
    once now: every subtree without ``var`` is evaluated here (by ``evaluate`` itself, so with the
    same scalar arithmetic), and the rest becomes nested closures applying the same operations in
    the same order.  Same values, no per-call tree walk, dict or scalar math."""
    if var not in exprs.variables(op):
        value = exprs.evaluate(op, params, lib)
        return lambda x: value
    kind = op.kind
    if kind == "var":
        return lambda x: x
    if kind == "where_zero":
        return lambda x: exprs.evaluate(op, {**params, var: x}, lib)
    fs = [specialise(a, params, var, lib) for a in op.args]
    if kind in ("add", "mul"):
        def fold(x, add=kind == "add"):
            vals = [f(x) for f in fs]
            out = vals[0]
            for a in vals[1:]:
                out = out + a if add else out * a
            return out
        return fold
    if kind == "neg":
        f0 = fs[0]
        return lambda x: -f0(x)
    if kind == "pow" and len(fs) == 1:
        f0, p = fs[0], op.value
        return lambda x: f0(x) ** p
    if kind == "div":
        f0, f1 = fs
        return lambda x: f0(x) / f1(x)
    if kind == "pow":
        f0, f1 = fs
        return lambda x: f0(x) ** f1(x)
    fn = lib[kind]
    return lambda x: fn(*[f(x) for f in fs])


def eager_tensor(u: Any) -> bool:
    """Whether ``u`` is a plain tensor in eager mode that no autograd graph records: not traced
    (torch.compile, torch.export, jit.trace, ONNX), not a tensor subclass (fake, functional,
    FX proxies), and not requiring a gradient while grad mode is on."""
    if type(u) is not torch.Tensor or torch.compiler.is_compiling():
        return False
    if u.requires_grad and torch.is_grad_enabled():
        return False
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    return not (exporting or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


class AxisPair(nn.Module):
    """D and ``scale * D^T`` along one axis of an image (x: dim -1, y: dim -2), output the size of
    the input at every node.

    neumann: the valid correlation (complete stencil rows only) followed by zero rows where the
    stencil would leave the grid (for the forward difference: zero across the far edge), so
    ``D_axis = I (x) D_1d`` with zero rows inserted: same norm, and D^T crops then transposes.
    periodic: circular padding as in 1D.  dirichlet: the full correlation of the zero-extended
    input, K - 1 more points along the axis (the flux grid, see Stencil.flux_grid_padding).

    Both channels live on one grid of flux points: along a dirichlet axis it has K - 1 more
    points than the nodes (for the forward difference the ghost row/column -1 first), so the
    difference along the OTHER axis is zero-extended there (``ir.cross``; on a ghost row the
    x-difference is 0 - 0 = 0) and D^T crops those zeros first.  Index ``i`` of the flux grid
    along an axis is the point ``i - before`` with ``before = K - 1 - o`` (dirichlet) or 0.
    """

    def __init__(self, ir: StencilIR, backend: str) -> None:
        super().__init__()
        st = ir.stencil
        self.ir, self.backend, self.size, self.dim = ir, backend, st.size, ir.axis
        self.offset, self.neumann = st.offset, ir.boundary == "neumann"
        self.w1 = ir.weights
        self._exact = st.scaled
        self._w2: dict = {}
        self.pad, self.adj_pad = ir.padding, ir.adjoint_padding
        register_weights(self)
        if backend == "conv":
            shape = (1, 1, 1, -1) if self.dim == -1 else (1, 1, -1, 1)
            self.register_buffer("weight", torch.tensor(self.w1, dtype=torch.float64).view(*shape))

    def w2(self, scale) -> tuple[float, ...]:
        """``scale * W1``, formed exactly and rounded once (as the source prints it)."""
        return scaled_weights(self._w2, self._exact, scale)[0]

    def prepare(self, scales, w2_scale) -> None:
        """Rounds ``scale * W1`` for every scale the network passes (see :func:`prepare_pair`)."""
        prepare_pair(self, scales, w2_scale)

    def D(self, u: torch.Tensor, zero_rows: bool = True) -> torch.Tensor:
        """D along the axis on the flux grid; ``zero_rows=False``: only the rows :meth:`rows`
        keeps (no zero rows)."""
        k, dim = self.size, self.dim
        up = pad_dim(u, *self.pad, dim)
        if self.backend == "conv":
            lead = up.shape[:-2]
            d = F.conv2d(up.reshape(-1, 1, *up.shape[-2:]), self.weight.to(dtype=u.dtype))
            d = d.reshape(*lead, *d.shape[-2:])
        else:
            d = shifted_sum_dim(up, self.w1, tuple(range(k)), up.shape[dim] - k + 1, dim)
        if zero_rows:
            if self.neumann and k > 1:  # zero flux where the stencil leaves the grid
                d = pad_dim(d, self.offset, k - 1 - self.offset, "zeros", dim)
            for other, before, after in self.ir.cross:  # onto a dirichlet axis's flux grid
                d = pad_dim(d, before, after, "zeros", other)
        return d

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of a flux-grid array that D^T reads, the others being D's zero rows: the
        complete-stencil rows (neumann) and the nodes of the other axes (without the zeros that
        extend them to a dirichlet axis's flux grid)."""
        k, dim = self.size, self.dim
        for other, before, after in self.ir.cross:
            x = x.narrow(other, before, x.shape[other] - before - after)
        return x.narrow(dim, self.offset, x.shape[dim] - k + 1) if self.neumann and k > 1 else x

    def Dt(self, v: torch.Tensor, scale=1, cropped: bool = False) -> torch.Tensor:
        """``scale * D^T v``: crop D's zero rows (neumann, and the cross-axis zeros of a
        dirichlet axis; ``cropped``: v holds only the rows :meth:`rows` keeps), then the
        transposed correlation."""
        k, dim = self.size, self.dim
        if not cropped:
            v = self.rows(v)
        if self.backend == "conv":
            lead = v.shape[:-2]
            w = scaled_weights(self._w2, self._exact, scale)[1] * self.weight.to(dtype=v.dtype)
            y = F.conv_transpose2d(v.reshape(-1, 1, *v.shape[-2:]), w)
            return unpad_dim(y.reshape(*lead, *y.shape[-2:]), *self.pad, dim)
        vp = pad_dim(v, *self.adj_pad, dim)
        return shifted_sum_dim(vp, self.w2(scale), tuple(k - 1 - j for j in range(k)),
                               vp.shape[dim] - k + 1, dim)

    # -- the allocation-free step (eager, no autograd): see DiffusionOperator2D.explicit_step
    def flux_len(self, n: int) -> int:
        """Points of the flux grid along this axis for ``n`` nodes: ``n`` (neumann: D's zero rows
        included; periodic), ``n + K - 1`` (dirichlet)."""
        left, right, _ = self.pad
        return n + left + right - self.size + 1 + (self.size - 1 if self.neumann else 0)

    def rows_spec(self, shape) -> list[tuple[int, int, int]]:
        """The narrows ``(dim, start, length)`` by which :meth:`rows` crops a flux-grid array of
        ``shape`` (precomputed once for the eager step)."""
        spec, shape = [], list(shape)
        for other, before, after in self.ir.cross:
            spec.append((other, before, shape[other] - before - after))
            shape[other] -= before + after
        if self.neumann and self.size > 1:
            spec.append((self.dim, self.offset, shape[self.dim] - self.size + 1))
        return spec

    def extra_repr(self) -> str:
        axis = "x" if self.dim == -1 else "y"
        return (f"axis {axis}: W1 = {list(self.w1)} (offset {self.offset}), W2 = -tau W1^T, "
                f"boundary={self.ir.boundary}, backend={self.backend}")


class AxisPlan:
    """One axis of :meth:`DiffusionOperator2D._explicit_step_eager` for one input shape: the
    buffers and the fixed views into them, made once per ``forward`` (no narrows, lookups or
    module attribute reads per step beyond the input's own views).

    ``D``: the rows of ``D u`` that :meth:`AxisPair.rows` keeps, written into this axis's channel
    of the shared flux-grid buffer (the zero rows around them are zero from its creation); a
    zero padding of the input is a zero-framed buffer whose interior is copied per step, not an
    ``F.pad``.  ``Dt``: the flux of the rows D^T reads, ``rows(v) * rows(g)``, written straight
    into the interior of a zero-framed (or, periodic, wrapped) buffer, then the transposed
    correlation.  The same operations on the same values as :meth:`AxisPair.D` and
    :meth:`AxisPair.Dt` (see :func:`correlate_into` and :meth:`Dt`).
    """

    def __init__(self, pair: AxisPair, channel: torch.Tensor, like: torch.Tensor) -> None:
        self.pair, dim, k = pair, pair.dim, pair.size
        self.dim = dim
        self.out = pair.rows(channel)
        self.channel_rows = self.out
        left, right, mode = pair.pad
        self.pad = pair.pad
        n_in = like.shape[dim]
        self.frame = self.frame_inner = None
        if mode == "zeros" and (left or right):
            shape = list(like.shape)
            shape[dim] += left + right
            self.frame = like.new_zeros(shape)
            self.frame_inner = self.frame.narrow(dim, left, n_in)
        self.g_rows = pair.rows_spec(channel.shape)
        fv = self.out
        n = fv.shape[dim]
        aleft, aright, amode = pair.adj_pad
        self.wrap = amode == "circular" and (aleft or aright)
        self.fallback = amode == "circular" and (aleft > n or aright > n)
        if self.fallback:  # a period shorter than the padding: AxisPair.Dt's index arithmetic
            return
        shape = list(fv.shape)
        shape[dim] = n + aleft + aright
        self.vp = fv.new_zeros(shape)
        self.vp_inner = self.vp.narrow(dim, aleft, n)
        self.edges = []
        if self.wrap:  # the wrapped copies of the ends, as pad_dim's concatenation
            if aleft:
                self.edges.append((self.vp.narrow(dim, 0, aleft), self.vp.narrow(dim, n, aleft)))
            if aright:
                self.edges.append((self.vp.narrow(dim, aleft + n, aright),
                                   self.vp.narrow(dim, aleft, aright)))
        n_out = shape[dim] - k + 1
        starts = [k - 1 - j for j in range(k)]
        taps = [(j, starts[j]) for j, c in enumerate(pair.w1) if c != 0.0]
        self.two = None
        if len(taps) == 2 and pair.w1[taps[0][0]] == -pair.w1[taps[1][0]]:
            (j0, s0), (j1, s1) = taps
            self.two = (j0, j1, self.vp.narrow(dim, s0, n_out), self.vp.narrow(dim, s1, n_out))

    def D(self, u: torch.Tensor) -> None:
        """Writes the rows of ``D u`` into this axis's channel of the flux-grid buffer.  Tap j
        reads ``u_pad[i + j]``: a view of the zero-framed copy of u (dirichlet) or of u itself
        (neumann), and for periodic ``u[(i + j - left) mod n]``, a roll of u (0: u itself; the
        same values as the concatenation pad_dim builds, without slicing it)."""
        dim, out, w1 = self.dim, self.out, self.pair.w1
        left, _, mode = self.pad
        if mode == "circular":
            n = u.shape[dim]
            terms = [None if c == 0.0 else u if (left - j) % n == 0 else torch.roll(u, left - j, dim)
                     for j, c in enumerate(w1)]
        else:
            up = u
            if self.frame is not None:
                self.frame_inner.copy_(u)
                up = self.frame
            m = out.shape[dim]
            terms = [None if c == 0.0 else up.narrow(dim, j, m) for j, c in enumerate(w1)]
        correlate_into(terms, w1, out)

    def Dt(self, g: torch.Tensor, scale) -> torch.Tensor:
        """``scale * D^T (rows(v) * rows(g))``, v this axis's channel of ``D u``.  Two taps ``m``
        and ``-m`` (the scaled forward or backward difference): the padded flux is scaled by
        ``m`` in place and the two shifted views subtracted, since ``(-m) x = -(m x)`` exactly
        (rounding is symmetric), so ``(-m) a + m b = m b - m a``: two kernels instead of three,
        no temporaries.  Other stencils: :func:`shifted_sum_dim` on the padded flux."""
        for d, start, length in self.g_rows:
            g = g.narrow(d, start, length)
        if self.fallback:
            return self.pair.Dt(self.channel_rows * g, scale, cropped=True)
        torch.mul(self.channel_rows, g, out=self.vp_inner)
        for dst, src in self.edges:
            dst.copy_(src)
        w2 = self.pair.w2(scale)
        if self.two is not None and w2[self.two[0]] == -w2[self.two[1]] != 0.0:
            j0, _, a, b = self.two
            c0 = w2[j0]
            if abs(c0) != 1.0:
                self.vp.mul_(abs(c0))
            return torch.sub(a, b) if c0 > 0 else torch.sub(b, a)
        k = self.pair.size
        return shifted_sum_dim(self.vp, w2, tuple(k - 1 - j for j in range(k)),
                               self.vp.shape[self.dim] - k + 1, self.dim)


class StepPlan:
    """:meth:`DiffusionOperator2D._explicit_step_eager` for one input shape, dtype and device: the
    flux-grid buffer ``v`` (both channels of ``D u``), each axis's :class:`AxisPlan`, and the
    diffusivity's op tree specialised to the param values (:func:`specialised_radial`)."""

    def __init__(self, op: "DiffusionOperator2D", u: torch.Tensor) -> None:
        px, py = op.px, op.py
        h, w = u.shape[-2:]
        self.v = u.new_zeros((*u.shape[:-2], 2, py.flux_len(h), px.flux_len(w)))
        self.vx, self.vy = self.v.select(-3, 0), self.v.select(-3, 1)
        self.axes = (AxisPlan(px, self.vx, u), AxisPlan(py, self.vy, u))
        self.flux = op.flux
        self.g = specialised_radial(op.flux.ir.radial_op, op.flux.params(), op.flux._lib)

    def step(self, u: torch.Tensor, tau) -> torch.Tensor:
        ax, ay = self.axes
        ax.D(u)
        ay.D(u)
        vx, vy = self.vx, self.vy
        s2 = vx * vx + vy * vy
        g = self.flux.g(s2) if self.g is None else self.g(s2)
        if not (isinstance(g, torch.Tensor) and g.shape == s2.shape):
            g = g + torch.zeros_like(s2)
        return u - (ax.Dt(g, tau) + ay.Dt(g, tau))


_SPECIALISED: dict = {}


def specialised_radial(op: "exprs.Op", params: dict, lib: dict) -> Optional[Callable]:
    """The cached :func:`specialise` of a radial op tree for these param values (None when a
    value is not a Python number).  Kept in a bounded module-level table, not on the module, so
    that modules stay picklable; the entry holds the tree, so its id is not reused."""
    if not all(exprs.is_number(v) for v in params.values()):
        return None
    key = (id(op), tuple(params.items()))
    hit = _SPECIALISED.get(key)
    if hit is not None and hit[0] is op:
        return hit[1]
    if len(_SPECIALISED) >= 256:
        _SPECIALISED.clear()
    fn = specialise(op, dict(params), RADIAL_VAR, lib)
    _SPECIALISED[key] = (op, fn)
    return fn


class VectorFlux(nn.Module):
    """The isotropic vector activation ``Phi(v) = g(vx^2 + vy^2) (vx, vy)``: it couples the two
    channels of a node through the squared gradient length only (channels on dim -3)."""

    def __init__(self, ir: FluxIR) -> None:
        super().__init__()
        if ir.radial_op is None:
            raise ValueError("the flux has no radial diffusivity g(s2) (not a 2D architecture)")
        self.ir = ir
        self._lib = exprs.LIBS["torch"]()
        register_params(self, ir.params)

    def params(self) -> dict:
        """The values of the diffusivity's params (trainable networks override this)."""
        return self.ir.params

    def g(self, s2: torch.Tensor) -> torch.Tensor:
        """``g(s2)``, always a tensor of the shape of s2 (constant for linear diffusion)."""
        g = exprs.evaluate(self.ir.radial_op, self.ir.env(s2, self.params(), radial=True), self._lib)
        return g if isinstance(g, torch.Tensor) and g.shape == s2.shape else g + torch.zeros_like(s2)

    def squared_length(self, v: torch.Tensor) -> torch.Tensor:
        vx, vy = v.select(-3, 0), v.select(-3, 1)
        return (vx * vx + vy * vy).unsqueeze(-3)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v * self.g(self.squared_length(v))

    def diffusivity(self, v: torch.Tensor) -> torch.Tensor:
        """``g(|v|^2)`` per node, shape ``(..., 1, H, W)`` (broadcasts over the two channels)."""
        return self.g(self.squared_length(v))

    def extra_repr(self) -> str:
        return f"Phi(v) = g(|v|^2) v, radial profile Phi(s) = {self.ir.text}"


class DiffusionOperator2D(nn.Module):
    """``A(u) = grad_h^T Phi(grad_h u)`` on images ``(B, H, W)``, x the last axis: the
    :class:`DiffusionOperator` interface in 2D.

    ``D(u)`` is the two-channel gradient ``(B, 2, H', W')`` on the grid of flux points
    (channel 0 = x, 1 = y; one conv2d per axis): ``H' = H`` and ``W' = W`` except along a
    dirichlet axis, which has K - 1 ghost points more (see :class:`AxisPair`).  ``Dt(v, scale)``
    is the divergence ``scale * (Dx^T v_x + Dy^T v_y)`` (transposed conv2d with the same weights),
    the activation the vector flux ``g(|v|^2) v``, and ``diffusivity(u)`` is ``g(|grad u|^2)``
    per flux point, shape ``(B, 1, H', W')``.  ``||grad_h||^2 <= 4/hx^2 + 4/hy^2``.
    """

    ndim = 2

    def __init__(self, arch: Architecture, backend: str = "fused") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if len(arch.stencils) != 2:
            raise ValueError("DiffusionOperator2D needs one stencil per axis (a 2D architecture)")
        self.px = AxisPair(arch.stencils[0], backend)
        self.py = AxisPair(arch.stencils[1], backend)
        self.flux = VectorFlux(arch.flux)

    def prepare(self, scales, w2_scale, diagonal: bool = False) -> None:
        """As :meth:`DiffusionOperator.prepare`, for both axes."""
        pairs = [self.px, self.py] + (list(self._squares()) if diagonal else [])
        for p in pairs:
            p.prepare(scales, w2_scale)

    def _squares(self) -> nn.ModuleList:
        if not hasattr(self, "_square_pairs"):
            pairs = []
            for p in (self.px, self.py):
                st = p.ir.stencil
                sq = Stencil(tuple(w * w for w in st.weights), st.offset, 2 * st.order, st.h)
                pairs.append(AxisPair(StencilIR(sq, p.ir.boundary, p.ir.axis, p.ir.cross),
                                      p.backend))
            self._square_pairs = nn.ModuleList(pairs)
        return self._square_pairs

    def D(self, u: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.px.D(u), self.py.D(u)], dim=-3)

    def Dt(self, v: torch.Tensor, scale=1) -> torch.Tensor:
        return self.px.Dt(v.select(-3, 0), scale) + self.py.Dt(v.select(-3, 1), scale)

    def explicit_step(self, u: torch.Tensor, tau) -> torch.Tensor:
        """``u - tau div(g(|grad u|^2) grad u)`` discretely: skip + transposed conv of the
        activated two-channel conv.  ``u - (tau D^T) v`` has the bits of ``u + (-tau D^T) v``
        (IEEE rounding is symmetric) and runs no sympy negation per call (as in 1D).

        Under torch.compile the same operations on the same values, arranged for one kernel
        whose only allocation is the output: the two channels are not stacked (on the CPU a stack
        is stored: a temporary of twice the image), and with neumann each channel's flux is formed
        on the complete-stencil rows that D^T reads, ``rows(D u) * rows(g)``, rather than padded
        with D's zero rows and cropped again (inductor would mask every load of the padded form;
        in float64 that doubled the step).  Storing each channel's flux, as 1D does
        (:func:`zero_pad_stored`), saves divisions but allocates two image-sized temporaries per
        step, which page-fault on every step once glibc returns freed memory to the system (see
        the page-fault column of benchmarks/bench_cpu.py).

        Eager without autograd (fused backend, a plain tensor that no graph records): the same
        operations on the same values again, over buffers made once per ``forward``
        (:meth:`_explicit_step_eager`); with autograd, the plain composition below.
        """
        if self.px.backend == "fused" and eager_tensor(u):
            return self._explicit_step_eager(u, tau)
        if torch.compiler.is_compiling():
            px, py = self.px, self.py
            dx, dy = px.D(u), py.D(u)
            g = self.flux.g(dx * dx + dy * dy)
            fx = px.D(u, zero_rows=False) * px.rows(g)  # = rows(dx * g): no zero rows to mask
            fy = py.D(u, zero_rows=False) * py.rows(g)
            return u - (px.Dt(fx, tau, cropped=True) + py.Dt(fy, tau, cropped=True))
        return u - self.Dt(self.flux(self.D(u)), tau)

    def _explicit_step_eager(self, u: torch.Tensor, tau) -> torch.Tensor:
        """The eager step without autograd, arranged for small images, where the cost is the
        number of kernels, allocations and Python calls rather than memory traffic (a
        :class:`StepPlan`, made once per ``forward`` and shape): ``D u`` written channel by
        channel into one flux-grid buffer whose zero rows were filled once, the flux
        ``rows(v) * rows(g)`` straight into the zero-framed buffer that ``D^T`` reads, the
        diffusivity by its specialised op tree, and ``-tau D^T`` of a difference as one scaling
        in place and one subtraction.  No ``F.pad``, no stack, and the same operations on the
        same values as ``u - Dt(flux(D u), tau)``, bit for bit."""
        key = (id(self), "plan", u.shape, u.dtype, u.device)
        return scoped(key, lambda: StepPlan(self, u)).step(u, tau)

    def diffusivity(self, u: torch.Tensor) -> torch.Tensor:
        return self.flux.diffusivity(self.D(u))

    def frozen_apply(self, u: torch.Tensor, G: torch.Tensor, scale=1) -> torch.Tensor:
        """``scale * D^T (G * D u)`` with ``G`` of shape ``(B, 1, H, W)`` (or broadcastable)."""
        return self.Dt(G * self.D(u), scale)

    def frozen_diagonal(self, G: torch.Tensor, scale=1) -> torch.Tensor:
        """``diag(scale * grad^T G grad)_k = scale * sum_axes sum_i D_ik^2 G_i``, for Jacobi
        smoothers: per axis the transposed correlation of G with the squared weights, or, along a
        periodic axis shorter than the stencil (aliased taps), :func:`aliased_diagonal`."""
        self._squares()
        g = G.select(-3, 0) if G.dim() >= 3 and G.shape[-3] == 1 else G
        parts = []
        for p, sq in zip((self.px, self.py), self._square_pairs):
            if p.ir.boundary == "periodic" and g.shape[p.dim] < p.size:
                parts.append(aliased_diagonal(g, p.ir.stencil, scale, p.dim))
            else:
                parts.append(sq.Dt(g, scale))
        return parts[0] + parts[1]

    @staticmethod
    def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample inner product over the image, shape ``(B, 1, 1)`` (for Krylov solvers)."""
        return (a * b).sum(dim=(-2, -1), keepdim=True)

    @staticmethod
    def amax(a: torch.Tensor) -> torch.Tensor:
        """Per-sample ``max |a|`` over the image, shape ``(B, 1, 1)`` (to scale a solve)."""
        return a.abs().amax(dim=(-2, -1), keepdim=True)


def aliased_diagonal(G: torch.Tensor, stencil: Stencil, scale, dim: int) -> torch.Tensor:
    """``diag(scale * D^T G D)`` along ``dim`` for the periodic D of a grid of ``N`` points, any N.

    D is circulant: ``D_ij = c_((j - i) mod N)`` with the folded weights ``c_r = sum of w_t over
    the taps t with (t - o) mod N = r`` (exact, then rounded once with ``scale``), so
    ``diag_j = scale * sum_r c_r^2 G_((j - r) mod N)``: ``G`` rolled by r, weighted and summed.
    Equals the squared-weight correlation when N >= K (no two taps share a column).
    """
    n = G.shape[dim]
    folded = [0] * n
    for t, w in enumerate(stencil.scaled):
        folded[(t - stencil.offset) % n] += w
    acc = None
    for r, c in enumerate(folded):
        coeff = float(scale * c * c)
        if coeff == 0.0:
            continue
        term = coeff * torch.roll(G, shifts=r, dims=dim)
        acc = term if acc is None else acc + term
    return acc if acc is not None else torch.zeros_like(G)


def make_operator(arch: Architecture, backend: str = "fused") -> nn.Module:
    """The diffusion operator of the architecture's dimension (1D rows or 2D images)."""
    return DiffusionOperator2D(arch, backend) if len(arch.dims) == 2 else DiffusionOperator(arch, backend)
