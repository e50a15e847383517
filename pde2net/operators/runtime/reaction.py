"""The reaction branch of an operator network: ``r(u, f) = -c u + alpha (f - u) + b + N(u)``.

Pure torch (inlined in the standalone source, like every file of this package).  The network's
explicit step is ``u - tau (A(u) u - r(u, f))``: the reaction is a pointwise branch added to the
diffusion's residual block, and ``f`` (the data field; the network's input ``u0`` when none is
given) is a skip connection from the input into every block (docs/theory.md §11).

``decay`` c, ``data`` alpha and ``constant`` b are Python floats (the params' values, computed
once); ``nonlinear`` is None or a callable evaluating N(u) pointwise (the live module's op-tree
evaluator, or the function the standalone source prints).  Implicit schemes treat the linear part
``-(c + alpha) u`` implicitly: :meth:`Reaction.linear` is ``c + alpha`` and :meth:`Reaction.rest`
the remainder ``alpha f + b + N(u)``, so that ``forward = rest - linear * u`` up to rounding.
"""
from __future__ import annotations

import math

import torch


class Reaction(torch.nn.Module):
    """``forward(u, f) = r(u, f)``, evaluated as ``alpha (f - u) - c u + b + N(u)`` (terms that
    are zero are skipped, so an absent data term never reads f)."""

    def __init__(self, decay: float = 0.0, data: float = 0.0, constant: float = 0.0,
                 nonlinear=None) -> None:
        super().__init__()
        for name, v in (("decay", decay), ("data", data), ("constant", constant)):
            if not math.isfinite(v):
                raise ValueError(f"the reaction's {name} coefficient {v} is not finite")
        self.decay = float(decay)
        self.data = float(data)
        self.constant = float(constant)
        self.nonlinear = nonlinear

    @property
    def uses_data(self) -> bool:
        """Whether ``forward`` reads f (a data term alpha (f - u) with alpha != 0)."""
        return self.data != 0.0

    def linear(self) -> float:
        """``c + alpha``: the coefficient of ``-u`` in r, for schemes that treat it implicitly.
        It is negative for a source (Allen-Cahn's ``u`` counts as decay -1): such a scheme should
        then keep the reaction explicit, as ``(1 + tau (c + alpha)) u`` may be singular."""
        return self.decay + self.data

    def forward(self, u: torch.Tensor, f=None) -> torch.Tensor:
        out = torch.zeros_like(u)
        if self.data != 0.0:
            if f is None:
                raise ValueError("the data term alpha * (f - u) needs the data field f")
            out = out + self.data * (f - u)
        if self.decay != 0.0:
            out = out - self.decay * u
        if self.constant != 0.0:
            out = out + self.constant
        if self.nonlinear is not None:
            out = out + self.nonlinear(u)
        return out

    def rest(self, u: torch.Tensor, f=None) -> torch.Tensor:
        """``r(u, f) + (c + alpha) u = alpha f + b + N(u)``: what an implicit scheme keeps on
        the right side when it moves ``(c + alpha) u`` to the left."""
        out = torch.zeros_like(u)
        if self.data != 0.0:
            if f is None:
                raise ValueError("the data term alpha * (f - u) needs the data field f")
            out = out + self.data * f
        if self.constant != 0.0:
            out = out + self.constant
        if self.nonlinear is not None:
            out = out + self.nonlinear(u)
        return out

    def extra_repr(self) -> str:
        parts = [f"decay={self.decay!r}", f"data={self.data!r}", f"constant={self.constant!r}"]
        if self.nonlinear is not None:
            parts.append(f"nonlinear={getattr(self.nonlinear, '__name__', 'N')}")
        return ", ".join(parts)
