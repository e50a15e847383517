"""The operator ``A(u) = sum_i D_i^T G_i(u) D_i`` plus a reaction, and the networks the schemes
make of it (pure torch; inlined in the emitted source).

- explicit (docs/theory.md §1, §11): ResNet blocks ``u <- u - tau (A(u) u - r(u, f))``;
- FED (§3): per cycle the weights G are frozen, then blocks with the step sizes tau_i;
- FSI (§4): blocks with an extrapolating skip from two blocks back, weights frozen per cycle;
- implicit CG (§5): a recurrent block solving ``(I + tau (A(u^k) + c)) u^(k+1) = u^k + tau b(f)``
  from 0, for a linear reaction ``r = -c u + b(f)``.

Fields are ``(B, C, *space)``; f (the input of a data term) has the same shape.
"""
from __future__ import annotations

import torch


class OperatorSum(torch.nn.Module):
    """``A = sum_i D_i^T G_i D_i`` over the terms, and the reaction ``r(u, f)`` (or None)."""

    def __init__(self, terms: list, reaction=None) -> None:
        super().__init__()
        self.terms = torch.nn.ModuleList(terms)
        self.reaction = reaction

    def weights(self, u: torch.Tensor, f: torch.Tensor) -> list:
        """The frozen weights ``G_i(u)`` of every term."""
        return [t.weights(u, f) for t in self.terms]

    def frozen_apply(self, u: torch.Tensor, G: list) -> torch.Tensor:
        """``sum_i D_i^T G_i D_i u`` with the weights frozen."""
        out = None
        for t, g in zip(self.terms, G):
            part = t.frozen_apply(u, g)
            out = part if out is None else out + part
        return out

    def frozen_diagonal(self, G: list) -> torch.Tensor:
        out = None
        for t, g in zip(self.terms, G):
            part = t.frozen_diagonal(g)
            out = part if out is None else out + part
        return out

    def residual(self, u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """``A(u) u - r(u, f)``: minus the right side of ``u_t = -A(u) u + r(u, f)``.  Each term's
        ``forward`` is its ``frozen_apply(u, weights(u, f))`` (computing what the two share once)."""
        au = None
        for t in self.terms:
            part = t(u, f)
            au = part if au is None else au + part
        return au if self.reaction is None else au - self.reaction(u, f)


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product, shape (B, 1, ..., 1)."""
    return (a * b).flatten(1).sum(dim=1).reshape((-1,) + (1,) * (a.dim() - 1))


def amax(a: torch.Tensor) -> torch.Tensor:
    """Per-sample max |a|, shape (B, 1, ..., 1)."""
    return a.abs().flatten(1).amax(dim=1).reshape((-1,) + (1,) * (a.dim() - 1))


class OperatorNet(torch.nn.Module):
    """``steps`` blocks on fields of ``ndim`` space axes and ``channels`` channels.

    Input: the space shape, ``(B, *space)`` or ``(B, 1, *space)`` for one channel;
    ``(C, *space)`` or ``(B, C, *space)`` for C > 1; output the same shape.  ``f``: the data
    field of a data term, same shape as u (default: u itself, the initial value)."""

    def __init__(self, op: OperatorSum, steps: int, ndim: int, channels: int, offset: float = 0.0) -> None:
        super().__init__()
        self.op, self.steps, self.ndim, self.channels = op, steps, ndim, channels
        #: the Dirichlet boundary value b: the blocks act on u - b (u = b outside the domain)
        self.offset = offset

    def fields(self, u: torch.Tensor) -> torch.Tensor:
        """u as ``(B, C, *space)``."""
        if not isinstance(u, torch.Tensor) or not u.is_floating_point():
            raise TypeError("expected a floating-point torch.Tensor")
        d, c = self.ndim, self.channels
        if c == 1 and u.dim() in (d, d + 1):
            return u.reshape((-1, 1) + tuple(u.shape[-d:]))
        if u.dim() in (d + 1, d + 2) and u.shape[-d - 1] == c:
            return u.reshape((-1, c) + tuple(u.shape[-d:]))
        want = "(*space), (B, *space) or (B, 1, *space)" if c == 1 else f"({c}, *space) or (B, {c}, *space)"
        raise ValueError(f"expected a field of {d} space axes and {c} channel(s), shape {want}; "
                         f"got {tuple(u.shape)}")

    def forward(self, u: torch.Tensor, f=None, steps=None) -> torch.Tensor:
        x = self.fields(u)
        data = x if f is None else self.fields(f.to(dtype=x.dtype, device=x.device))
        if data.shape != x.shape:
            raise ValueError(f"the input field has shape {tuple(f.shape)}, the field {tuple(u.shape)}")
        if self.offset != 0.0:
            x, data = x - self.offset, data - self.offset
        for _ in range(self.steps if steps is None else steps):
            x = self.block(x, data)
        if self.offset != 0.0:
            x = x + self.offset
        return x.reshape(u.shape)

    def block(self, u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ExplicitNet(OperatorNet):
    """ResNet blocks ``u - tau (A(u) u - r(u, f))``."""

    def __init__(self, op, steps, ndim, channels, tau: float, offset: float = 0.0) -> None:
        super().__init__(op, steps, ndim, channels, offset)
        self.tau = tau

    def block(self, u, f):
        return u - self.tau * self.op.residual(u, f)


class FEDNet(OperatorNet):
    """Per cycle: ``u <- u - tau_i A_G u`` for the FED step sizes (Leja order), the weights G
    frozen at the cycle's start (``frozen``) or recomputed every step."""

    def __init__(self, op, steps, ndim, channels, taus: list, frozen: bool = True,
                 offset: float = 0.0) -> None:
        super().__init__(op, steps, ndim, channels, offset)
        self.taus, self.frozen = taus, frozen

    def block(self, u, f):
        G = self.op.weights(u, f) if self.frozen else None
        for t in self.taus:
            u = u - t * self.op.frozen_apply(u, G if self.frozen else self.op.weights(u, f))
        return u


class FSINet(OperatorNet):
    """Per cycle: weights frozen; ``u^(k+1) = a_k (u^k - tau A_G u^k) + (1 - a_k) u^(k-1)``."""

    def __init__(self, op, steps, ndim, channels, tau: float, alphas: list, frozen: bool = True,
                 offset: float = 0.0) -> None:
        super().__init__(op, steps, ndim, channels, offset)
        self.tau, self.alphas, self.frozen = tau, alphas, frozen

    def block(self, u, f):
        G = self.op.weights(u, f) if self.frozen else None
        prev = cur = u
        for a, b in self.alphas:
            step = cur - self.tau * self.op.frozen_apply(cur, G if self.frozen else self.op.weights(cur, f))
            prev, cur = cur, a * step + b * prev
        return cur


class ImplicitCGNet(OperatorNet):
    """Recurrent block: CG for ``(I + tau (A_G + c)) x = u + tau b(f)`` from x = 0, the weights
    G lagged at u^k and the reaction linear, ``r(u, f) = -c u + b(f)`` (``c`` its coefficient,
    ``b(f) = r(0, f)``).  The solve runs on the right side divided by a power of two >= its max,
    so inner products cannot overflow and the result is the same bits."""

    def __init__(self, op, steps, ndim, channels, tau: float, iterations: int, c: float,
                 offset: float = 0.0) -> None:
        super().__init__(op, steps, ndim, channels, offset)
        self.tau, self.iterations, self.c = tau, iterations, c

    def block(self, u, f):
        G = self.op.weights(u, f)
        rhs = u if self.op.reaction is None else u + self.tau * self.op.reaction(torch.zeros_like(u), f)
        tiny = torch.finfo(u.dtype).tiny
        scale = torch.exp2(torch.ceil(torch.log2(amax(rhs).clamp_min(tiny))))
        x, r = torch.zeros_like(u), rhs / scale
        p, rr = r, inner(r, r)
        shift = 1.0 + self.tau * self.c
        for _ in range(self.iterations):
            ap = shift * p + self.tau * self.op.frozen_apply(p, G)
            alpha = rr / inner(p, ap).clamp_min(tiny)
            x = x + alpha * p
            r = r - alpha * ap
            rr_new = inner(r, r)
            p = r + (rr_new / rr.clamp_min(tiny)) * p
            rr = rr_new
        return x * scale
