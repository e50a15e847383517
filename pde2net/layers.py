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

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import exprs
from .lower import Architecture, Explicit, FluxIR, StencilIR, min_points

BACKENDS = ("fused", "conv")


def pad_last(x: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """Pads the last axis: ``none``, ``zeros`` or ``circular`` (as slices, any leading shape)."""
    if mode == "none" or left == right == 0:
        return x
    if mode == "circular":
        n = x.shape[-1]
        return torch.cat([x[..., n - left:], x, x[..., :right]], dim=-1)
    return F.pad(x, (left, right))


def unpad_adjoint(y: torch.Tensor, left: int, right: int, mode: str) -> torch.Tensor:
    """The adjoint of :func:`pad_last`: crop, and for circular padding fold the ends back."""
    if mode == "none" or left == right == 0:
        return y
    n = y.shape[-1] - left - right
    core = y[..., left:left + n]
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
    acc: Optional[torch.Tensor] = None
    for c, s in zip(coeffs, starts):
        if c == 0.0:
            continue
        t = xp[..., s:s + n]
        if acc is None:
            acc = t if c == 1.0 else -t if c == -1.0 else c * t
        else:
            acc = acc + t if c == 1.0 else acc - t if c == -1.0 else acc + c * t
    assert acc is not None, "a stencil has a nonzero weight (checked when lowering)"
    return acc


class Flux(nn.Module):
    """The activation Phi (and the diffusivity g = Phi(s)/s), evaluated from op trees."""

    def __init__(self, ir: FluxIR) -> None:
        super().__init__()
        self.ir = ir
        self._lib = exprs.LIBS["torch"]()

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return exprs.evaluate(self.ir.op, {"s": s, **self.ir.params}, self._lib)

    def diffusivity(self, s: torch.Tensor) -> torch.Tensor:
        """g = Phi(s)/s, finite at s = 0 (the cancelled ratio)."""
        return exprs.evaluate(self.ir.ratio_op, {"s": s, **self.ir.params}, self._lib)

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
        if backend == "conv":
            self.register_buffer("weight", torch.tensor(self.w1, dtype=torch.float64).view(1, 1, -1))

    def w2(self, scale) -> tuple[float, ...]:
        """``scale * W1``, formed exactly (sympy scale) and rounded once, as the source prints it."""
        key = scale
        if key not in self._w2:
            self._w2[key] = tuple(float(scale * w) for w in self._exact)
        return self._w2[key]

    def D(self, u: torch.Tensor) -> torch.Tensor:
        up = pad_last(u, *self.pad)
        if self.backend == "conv":
            w = self.weight.to(dtype=u.dtype)
            return F.conv1d(up.unsqueeze(-2), w).squeeze(-2)
        n = up.shape[-1] - self.size + 1
        return shifted_sum(up, self.w1, tuple(range(self.size)), n)

    def Dt(self, v: torch.Tensor, scale=1) -> torch.Tensor:
        """``scale * D^T v``: the transposed convolution with ``W2 = scale * W1``."""
        if self.backend == "conv":
            w = float(scale) * self.weight.to(dtype=v.dtype)
            y = F.conv_transpose1d(v.unsqueeze(-2), w).squeeze(-2)
            return unpad_adjoint(y, *self.pad)
        vp = pad_last(v, *self.adj_pad)
        k = self.size
        n = vp.shape[-1] - k + 1
        return shifted_sum(vp, self.w2(scale), tuple(k - 1 - j for j in range(k)), n)

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

    def D(self, u: torch.Tensor) -> torch.Tensor:
        return self.pair.D(u)

    def Dt(self, v: torch.Tensor, scale=1) -> torch.Tensor:
        return self.pair.Dt(v, scale)

    def explicit_step(self, u: torch.Tensor, tau) -> torch.Tensor:
        """``u - tau D^T Phi(D u)``: skip connection + transposed conv of the activated conv."""
        return u + self.pair.Dt(self.flux(self.pair.D(u)), -tau)

    def diffusivity(self, u: torch.Tensor) -> torch.Tensor:
        """``G = g(D u)`` at the flux points, for schemes that freeze it."""
        return self.flux.diffusivity(self.pair.D(u))

    def frozen_apply(self, u: torch.Tensor, G: torch.Tensor, scale=1) -> torch.Tensor:
        """``scale * D^T (G * D u)``: the linear operator with the diffusivity G frozen."""
        return self.pair.Dt(G * self.pair.D(u), scale)


class DiffusionNet(nn.Module):
    """Base class of generated networks: ``steps`` ResNet blocks ``u + W2 Phi(W1 u)``.

    Input ``(N,)``, ``(B, N)`` or ``(B, 1, N)``, any float dtype and device; output the same shape.
    """

    def __init__(self, arch: Architecture, backend: str = "fused") -> None:
        super().__init__()
        if not isinstance(arch.scheme, Explicit):
            raise NotImplementedError(f"no live network for {type(arch.scheme).__name__} yet")
        self.arch = arch
        self.tau = arch.scheme.tau
        self.steps = arch.scheme.steps
        self.min_points = min_points(arch)
        self.op = DiffusionOperator(arch, backend)

    def block(self, u: torch.Tensor) -> torch.Tensor:
        """One explicit step ``u - tau D^T Phi(D u)``."""
        return self.op.explicit_step(u, self.tau)

    def forward(self, u: torch.Tensor, steps: Optional[int] = None) -> torch.Tensor:
        rows = self._rows(u)
        for _ in range(self.steps if steps is None else steps):
            rows = self.block(rows)
        return rows.reshape(u.shape)

    def _rows(self, u: torch.Tensor) -> torch.Tensor:
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(u).__name__}")
        if not u.is_floating_point():
            raise TypeError(f"expected a floating-point tensor, got {u.dtype}")
        if u.dim() == 3 and u.shape[1] != 1:
            raise ValueError(f"expected one channel, shape (B, 1, N); got {tuple(u.shape)}")
        if u.dim() not in (1, 2, 3) or u.shape[-1] < self.min_points:
            raise ValueError(f"expected shape (N,), (B, N) or (B, 1, N) with N >= {self.min_points}; "
                             f"got {tuple(u.shape)}")
        return u.reshape(-1, u.shape[-1])

    def extra_repr(self) -> str:
        return f"ResNet: {self.steps} blocks u <- u - tau D^T Phi(D u), tau = {float(self.tau)!r}"


def build_module(arch: Architecture, backend: str = "fused", doc: str = "") -> DiffusionNet:
    """The live module, as an instance of a subclass named after the spec (``PeronaMalik``)."""
    cls = type(arch.class_name, (DiffusionNet,), {"__doc__": doc or DiffusionNet.__doc__,
                                                  "__module__": "pde2net.generated"})
    return cls(arch, backend)

