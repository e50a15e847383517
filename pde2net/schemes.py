"""The live networks of every scheme, and :func:`build_module`, which picks one (torch).

Each is written against the operator interface of :mod:`pde2net.layers` (``D``, ``Dt(v, scale)``,
``explicit_step``, ``diffusivity``, ``frozen_apply``, plus ``inner`` / ``frozen_diagonal`` for the
solvers), so the 1D operator and the 2D one plug in alike.  One ``block`` is one step of the
outer loop (one cycle for FED/FSI, one time step otherwise); ``forward`` repeats it ``steps`` times.

- FED  (docs/theory.md §3): ResNet blocks ``u - tau_i D^T (G * D u)`` with the step sizes in Leja order,
  ``G = g(D u)`` frozen at the start of each cycle (``update = step``: ``u - tau_i D^T Phi(D u)``).
- FSI  (docs/theory.md §4): ``u^(k+1) = a_k (u^k - tau D^T (G * D u^k)) + (1 - a_k) u^(k-1)``: a ResNet
  with an extra skip from two blocks back, ``u^(-1) = u^0``, restarted every cycle.
- Implicit (docs/theory.md §5, §6): a recurrent block iterated ``iterations`` times, fed with u^k every
  time: CG or damped Jacobi for ``(I + tau D^T G(u^k) D) x = u^k`` from x = 0, or the fixed point
  ``v <- u^k - tau D^T Phi(D v)`` from v = u^k.
- Multigrid (docs/theory.md §7): V-cycles as a U-net (see :mod:`pde2net.multigrid`).

Imports go one way: this module builds on :mod:`pde2net.layers` (the operators and the explicit
network), which knows nothing of the schemes.
"""
from __future__ import annotations

from typing import Any

import torch

from . import multigrid as mg
from .errors import PdeError
from .layers import DiffusionNet
from .lower import CELL_RESTRICTION, FED, FSI, VERTEX_RESTRICTION, Explicit, Implicit, Multigrid


class GridSizeError(PdeError, ValueError):
    """The input's grid does not fit the multigrid transfers (a ValueError; the CLI prints it)."""


class TorchOps:
    """The array primitives :mod:`pde2net.multigrid` needs, for torch."""

    @staticmethod
    def cat(parts):
        return torch.cat(parts, dim=-1)

    @staticmethod
    def zeros(like, width):
        return like.new_zeros(like.shape[:-1] + (width,))

    @staticmethod
    def arange(n, like):
        return torch.arange(n, device=like.device)

    @staticmethod
    def as_float(mask, like):
        return mask.to(like.dtype)

    @staticmethod
    def eye(n, like):
        return torch.eye(n, dtype=like.dtype, device=like.device)

    @staticmethod
    def inv(a):
        return torch.linalg.inv(a)


class TorchConvOps(TorchOps):
    """TorchOps whose transfers are the literal layers: restriction a stride-2 ``conv1d``,
    prolongation ``P = 2 R^T`` a stride-2 ``conv_transpose1d`` (cell-centred: on the padded grid,
    then the adjoint of the padding folds the ghost nodes back)."""

    @staticmethod
    def weight(kind, scale, like):
        """The restriction R (``scale`` 1) or prolongation ``P = 2 R^T`` (``scale`` 2) as a conv
        weight, from the exact weights the Galerkin operators are built with."""
        r = VERTEX_RESTRICTION if kind == "vertex" else CELL_RESTRICTION
        return torch.tensor([[[float(scale * w) for w in r]]], dtype=like.dtype, device=like.device)

    @staticmethod
    def restrict(f, kind, mode, ops):
        import torch.nn.functional as F

        x, w = f.unsqueeze(-2), TorchConvOps.weight(kind, 1, f)
        if kind == "vertex":
            return F.conv1d(x, w, stride=2, padding=1).squeeze(-2)
        return F.conv1d(F.pad(x, (1, 1), mode=mode), w, stride=2).squeeze(-2)

    @staticmethod
    def prolong(e, kind, mode, ops):
        import torch.nn.functional as F

        x, w = e.unsqueeze(-2), TorchConvOps.weight(kind, 2, e)
        if kind == "vertex":
            return F.conv_transpose1d(x, w, stride=2, padding=1).squeeze(-2)
        y = F.conv_transpose1d(x, w, stride=2).squeeze(-2)  # fine grid with one ghost each side
        core = y[..., 1:-1].clone()
        if mode == "circular":
            core[..., -1] += y[..., 0]
            core[..., 0] += y[..., -1]
        else:  # replicate: the ghost copies its neighbour, so its weight returns there
            core[..., 0] += y[..., 0]
            core[..., -1] += y[..., -1]
        return core


def _tensor_like(g: Any, like: torch.Tensor) -> torch.Tensor:
    """A diffusivity that evaluated to a constant (linear flux) as a tensor of ``like``'s shape."""
    return g if isinstance(g, torch.Tensor) else torch.full_like(like, float(g))


class FEDNet(DiffusionNet):
    """FED: per cycle, ResNet blocks with the FED step sizes tau_i (Leja order); the diffusivity is
    evaluated once per cycle and frozen (the stability proof needs it, docs/theory.md §3)."""

    scheme_type = FED

    def __init__(self, arch, backend: str = "fused") -> None:
        super().__init__(arch, backend)
        sch: FED = arch.scheme
        self._tau = sch.tau_max
        self.taus = sch.taus
        # the exact scales -tau_i, formed once here: no sympy arithmetic inside block (torch.compile)
        self.neg_taus = tuple(-t for t in sch.taus)
        self.frozen = sch.update == "cycle"
        self.register_buffer("step_sizes", torch.tensor([float(t) for t in sch.taus], dtype=torch.float64))
        self.freeze_constants()

    def scales(self) -> tuple:
        return self.taus if not self.frozen else self.neg_taus

    def block(self, u: torch.Tensor) -> torch.Tensor:
        """One FED cycle of stopping time ``tau_max (n^2 + n) / 3``."""
        if not self.frozen:
            for t in self.taus:
                u = self.op.explicit_step(u, t)
            return u
        G = self.op.diffusivity(u)
        for scale in self.neg_taus:
            u = u + self.op.frozen_apply(u, G, scale)
        return u

    def extra_repr(self) -> str:
        return (f"FED ResNet: {self.steps} cycles of {len(self.taus)} blocks, tau_max = "
                f"{float(self.tau)!r}, diffusivity {'frozen per cycle' if self.frozen else 'per step'}")


class FSINet(DiffusionNet):
    """FSI: ResNet blocks with an extrapolating skip connection from two blocks back."""

    scheme_type = FSI

    def __init__(self, arch, backend: str = "fused") -> None:
        super().__init__(arch, backend)
        sch: FSI = arch.scheme
        # a_k and 1 - a_k, each formed exactly and rounded once (as the source prints them)
        self.weights = tuple((float(a), float(1 - a)) for a in sch.alphas)
        self.frozen = sch.update == "cycle"
        self.scale = -sch.tau
        self.register_buffer("alphas", torch.tensor([a for a, _ in self.weights], dtype=torch.float64))
        self.freeze_constants()

    def scales(self) -> tuple:
        return (self.tau, self.scale)

    def block(self, u: torch.Tensor) -> torch.Tensor:
        """One FSI cycle: ``u^(k+1) = a_k (u^k - tau A u^k) + (1 - a_k) u^(k-1)``, u^(-1) = u^0."""
        G = self.op.diffusivity(u) if self.frozen else None
        prev = cur = u
        for a, b in self.weights:
            if G is None:
                step = self.op.explicit_step(cur, self.tau)
            else:
                step = cur + self.op.frozen_apply(cur, G, self.scale)
            prev, cur = cur, a * step + b * prev
        return cur

    def extra_repr(self) -> str:
        return (f"FSI ResNet: {self.steps} cycles of {len(self.weights)} blocks with a skip from two "
                f"blocks back, tau = {float(self.tau)!r}")


class ImplicitNet(DiffusionNet):
    """Implicit steps as a recurrent network: each step iterates one block ``iterations`` times,
    feeding it the step's input u^k."""

    scheme_type = Implicit

    def __init__(self, arch, backend: str = "fused") -> None:
        super().__init__(arch, backend)
        sch: Implicit = arch.scheme
        self.solver, self.iterations = sch.solver, sch.iterations
        self.omega = float(sch.omega)
        self.scale = -sch.tau
        self.freeze_constants()

    def scales(self) -> tuple:
        return (self.tau, self.scale)

    def needs_diagonal(self) -> bool:
        return self.solver == "jacobi"

    def block(self, u: torch.Tensor) -> torch.Tensor:
        """One implicit time step (the recurrent block iterated ``iterations`` times)."""
        return getattr(self, f"_{self.solver}")(u)

    def _cg(self, u: torch.Tensor) -> torch.Tensor:
        """CG for ``(I + tau D^T G(u) D) x = u`` from x = 0 (G lagged); guarded divisions so an
        exactly converged row stays put instead of producing 0/0.

        The solve runs on ``u / 2^e`` with ``2^e >= max |u|`` per sample and scales back: the
        system is linear in its right side and a power of two commutes exactly with every
        operation of CG, so the result is the same bits, but ``inner(r, r)`` can no longer
        overflow (float32 overflowed there for amplitudes ~1e19, with every op tree finite)."""
        G, tiny = self.op.diffusivity(u), torch.finfo(u.dtype).tiny
        scale = torch.exp2(torch.ceil(torch.log2(self.op.amax(u).clamp_min(tiny))))
        x, r = torch.zeros_like(u), u / scale
        p, rr = r, self.op.inner(r, r)
        for _ in range(self.iterations):
            ap = p + self.op.frozen_apply(p, G, self.tau)
            alpha = rr / self.op.inner(p, ap).clamp_min(tiny)
            x = x + alpha * p
            r = r - alpha * ap
            rr_new = self.op.inner(r, r)
            p = r + (rr_new / rr.clamp_min(tiny)) * p
            rr = rr_new
        return x * scale

    def _jacobi(self, u: torch.Tensor) -> torch.Tensor:
        """Damped Jacobi ``x <- x + omega (u - A x) / diag(A)`` from x = 0."""
        G = _tensor_like(self.op.diffusivity(u), self.op.D(u))
        diag = 1 + self.op.frozen_diagonal(G, self.tau)
        x = torch.zeros_like(u)
        for _ in range(self.iterations):
            x = x + self.omega * (u - x - self.op.frozen_apply(x, G, self.tau)) / diag
        return x

    def _fixed_point(self, u: torch.Tensor) -> torch.Tensor:
        """``v <- u - tau D^T Phi(D v)`` from v = u: the input skip feeds u every iteration."""
        v = u
        for _ in range(self.iterations):
            v = u + self.op.Dt(self.op.flux(self.op.D(v)), self.scale)
        return v

    def extra_repr(self) -> str:
        return (f"recurrent network: {self.steps} implicit steps, each {self.iterations} "
                f"{self.solver} iterations, tau = {float(self.tau)!r}")


class MultigridNet(DiffusionNet):
    """Linear implicit steps, each solved by V-cycles: a U-net of Jacobi smoothing, strided
    restriction, transposed-conv prolongation and banded Galerkin coarse operators."""

    scheme_type = Multigrid

    def __init__(self, arch, backend: str = "fused") -> None:
        super().__init__(arch, backend)
        sch: Multigrid = arch.scheme
        self.levels, self.pre, self.post, self.cycles = sch.levels, sch.pre, sch.post, sch.cycles
        self.omega = float(sch.omega)
        self.periodic = arch.stencils[0].boundary == "periodic"
        self.width = arch.stencils[0].stencil.size - 1  # half-bandwidth of I + tau c D^T D
        self._cache: dict = {}
        self.ops = TorchConvOps if backend == "conv" else TorchOps
        self.freeze_constants()

    def apply_fine(self, x: torch.Tensor) -> torch.Tensor:
        """``A x = x + tau D^T Phi(D x)`` (Phi linear)."""
        return x + self.op.Dt(self.op.flux(self.op.D(x)), self.tau)

    def hierarchy(self, n: int, like: torch.Tensor) -> list:
        """The grids for n points on like's device/dtype (built in float64 once, then cached)."""
        key = (n, like.device, like.dtype)
        if key not in self._cache:
            ref = torch.zeros(1, n, dtype=torch.float64, device=like.device)
            try:
                levels = mg.build_hierarchy(self.apply_fine, n, self.width, self.periodic, self.levels,
                                            TorchOps, ref)
            except ValueError as exc:
                raise GridSizeError(str(exc), expected="an input whose length fits the transfers, "
                                    "e.g. 257 or 256 points") from None
            for lv in levels:
                for k in ("bands", "diag", "inverse"):
                    if k in lv:
                        lv[k] = lv[k].to(like.dtype)
            self._cache[key] = levels
        return self._cache[key]

    def block(self, u: torch.Tensor) -> torch.Tensor:
        """One implicit step: ``cycles`` V-cycles for ``A x = u`` from x = u."""
        levels = self.hierarchy(u.shape[-1], u)
        x = u
        for _ in range(self.cycles):
            x = mg.vcycle(levels, 0, x, u, self.pre, self.post, self.omega, self.periodic, self.ops)
        return x

    def extra_repr(self) -> str:
        return (f"U-net: {self.steps} implicit steps, each {self.cycles} V({self.pre},{self.post})-"
                f"cycles, tau = {float(self.tau)!r}")


NETWORKS: dict[type, type] = {Explicit: DiffusionNet, FED: FEDNet, FSI: FSINet, Implicit: ImplicitNet,
                              Multigrid: MultigridNet}


def network_class(scheme) -> type:
    """The network class that realises a scheme IR record."""
    try:
        return NETWORKS[type(scheme)]
    except KeyError:
        raise NotImplementedError(f"no live network for {type(scheme).__name__}") from None


def build_module(arch, backend: str = "fused", doc: str = "") -> DiffusionNet:
    """The live module, as an instance of a subclass named after the spec (``PeronaMalik``)."""
    base = network_class(arch.scheme)
    cls = type(arch.class_name, (base,), {"__doc__": doc or base.__doc__,
                                          "__module__": "pde2net.generated"})
    return cls(arch, backend)
