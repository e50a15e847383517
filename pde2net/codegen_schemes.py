"""Standalone source for FED, FSI and implicit networks (1D and 2D) and multigrid (1D).

Same habits as :mod:`pde2net.codegen`: built only from IR data (validated identifiers, numbers
printed with ``repr(float)``), imports only torch, and computes what the live fused module
computes in the same order:

- ``W1`` is D as shifted slices (2D: the two-channel gradient ``(Dx u, Dy u)`` of
  :class:`~pde2net.layers.DiffusionOperator2D`, the same lines as the explicit 2D source);
- ``Dt(v, w)`` is the transposed correlation ``scale * D^T v`` with a weight tuple
  ``w = scale * W1``, formed exactly (sympy) and rounded once, one tuple per layer in a table
  (2D: the divergence ``Dtx(v_x, w_x) + Dty(v_y, w_y)``, ``w = (w_x, w_y)``, one tuple per axis,
  as ``AxisPair.Dt``), summed by ``shifted_sum``, the printed twin of ``layers.shifted_sum_dim``;
- the scheme's loop reads like :mod:`pde2net.schemes` and is the same text in 1D and 2D (the
  operator interface is the same).  Only the Jacobi diagonal differs: in 2D
  ``diag(tau grad^T G grad) = tau (Dx^2)^T g + tau (Dy^2)^T g``, each axis's squared weights
  applied to the one-channel diffusivity g and summed (``frozen_diagonal``).

The multigrid U-net (1D only, like the live network) reuses the NumPy/torch-agnostic functions of
:mod:`pde2net.multigrid` verbatim (our own code, not text from the .pde file) with a small torch
adapter.
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Optional

from .codegen_common import (  # noqa: F401 - describe_scheme: this module's API
    _FORWARD, _PAD_DIM_HELPER, _PAD_HELPER, _SQUARED_LENGTH, MG_FUNCTIONS, _axis_dt_prep_lines,
    _class_doc, _grad_doc, _grad_lines, _pad_call, _param_lines, _radial_source, _slices,
    describe_scheme, flux_expression, support_lines)
from .lower import FED, FSI, Architecture, Implicit, Multigrid, StencilIR
from .stability import StabilityReport
from .stencils import Stencil


def _floats(values) -> str:
    return "(" + ", ".join(repr(float(v)) for v in values) + ("," if len(values) == 1 else "") + ")"


def _weights(ir: StencilIR, scale) -> tuple[float, ...]:
    """``scale * W1`` formed exactly (sympy) and rounded once, as layers.StencilPair/AxisPair.w2."""
    return tuple(float(scale * w) for w in ir.stencil.scaled)


def _square_weights(ir: StencilIR, scale) -> tuple[float, ...]:
    """``scale * W1^2`` (elementwise), the weights of diag(D^T G D): the squared stencil
    ``(w_j^2, order 2m)`` built exactly as layers.frozen_diagonal builds it, rounded once.

    Valid whenever no two taps of a row share a column: every boundary but a periodic grid shorter
    than the stencil, where the source uses :func:`_aliased_table` (one table per such size)."""
    st = ir.stencil
    square = Stencil(tuple(w * w for w in st.weights), st.offset, 2 * st.order, st.h)
    return tuple(float(scale * w) for w in square.scaled)


def _aliased_table(ir: StencilIR, scale) -> str:
    """``{N: ((r, scale c_r^2), ...)}`` for every periodic grid of N < K points: the squared folded
    weights of layers.aliased_diagonal (``c_r`` = the sum of the taps t with ``(t - o) mod N = r``,
    exact, then rounded once), zero terms dropped as there.  ``{}`` unless the axis is periodic."""
    st = ir.stencil
    if ir.boundary != "periodic":
        return "{}"
    rows = []
    for n in range(1, st.size):
        folded = [0] * n
        for t, w in enumerate(st.scaled):
            folded[(t - st.offset) % n] += w
        terms = [(r, float(scale * c * c)) for r, c in enumerate(folded)]
        rows.append(f"{n}: (" + "".join(f"({r}, {c!r}), " for r, c in terms if c != 0.0) + ")")
    return "{" + ", ".join(rows) + "}"


_ALIASED_METHOD = '    @staticmethod\n    def aliased(g: torch.Tensor, table: tuple, dim: int) -> torch.Tensor:\n        """diag(tau D^T G D) along dim on a periodic grid shorter than the stencil (its taps alias):\n        G rolled by r, weighted by the squared folded weights (as layers.aliased_diagonal)."""\n        acc = None\n        for r, c in table:\n            term = c * torch.roll(g, shifts=r, dims=dim)\n            acc = term if acc is None else acc + term\n        return acc if acc is not None else torch.zeros_like(g)\n'


def _table(arch: Architecture, scale, square: bool = False) -> str:
    """The printed weight tuple ``scale * W1`` (``square``: ``scale * W1^2``); in 2D the pair
    ``(x tuple, y tuple)``, one per axis, as the generated ``Dt(v, w)`` takes it."""
    rows = [_floats((_square_weights if square else _weights)(ir, scale)) for ir in arch.stencils]
    return rows[0] if len(rows) == 1 else f"({', '.join(rows)})"


def _def(signature: str, doc: str, lines: list[Optional[str]]) -> str:
    """A generated module-level function: ``def signature:``, a one-line docstring, the lines."""
    return f'def {signature}:\n    """{doc}"""\n' + "".join(f"    {line}\n" for line in lines if line)


# The generated twin of layers.shifted_sum_dim: the transposed correlation with a weight tuple
# chosen per layer at run time (a FED table), term by term in the live module's order and form.
_SHIFTED_SUM = '''

def shifted_sum(x: torch.Tensor, w: tuple, starts: tuple, n: int, dim: int) -> torch.Tensor:
    """sum_j w_j x[s_j : s_j + n] along dim, left to right, zero weights skipped, 1 and -1 as x and -x."""
    acc = None
    for c, s in zip(w, starts):
        if c == 0.0:
            continue
        t = x.narrow(dim, s, n)
        if acc is None:
            acc = t if c == 1.0 else -t if c == -1.0 else c * t
        else:
            acc = acc + t if c == 1.0 else acc - t if c == -1.0 else acc + c * t
    return acc
'''

_INNER_SIGNATURE = "inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor"


def _stencil_functions(ir: StencilIR) -> str:
    """``W1(u)`` (D), ``Dt(v, w)`` (the transposed correlation with weights w) and ``inner``."""
    k = ir.stencil.size
    d_pad, a_pad = _pad_call("u", ir.padding), _pad_call("v", ir.adjoint_padding)
    starts = tuple(k - 1 - j for j in range(k))
    d_body = [f"u = {d_pad}" if d_pad else None, f"n = u.shape[-1] - {k - 1}",
              f"return {_slices('u', ir.weights, tuple(range(k)))}"]
    a_body = [f"v = {a_pad}" if a_pad else None, f"n = v.shape[-1] - {k - 1}",
              f"return shifted_sum(v, w, {starts!r}, n, -1)"]
    return "\n\n".join([
        _def("W1(u: torch.Tensor) -> torch.Tensor", f"Convolution D: weights {list(ir.weights)}, offset "
             f"{ir.stencil.offset}, {ir.boundary} boundary.", d_body),
        _def("Dt(v: torch.Tensor, w: tuple) -> torch.Tensor",
             "Transposed convolution with weights w = scale * W1: scale * D^T v.", a_body),
        _def(_INNER_SIGNATURE, "Per-row inner product, shape (B, 1).",
             ["return (a * b).sum(dim=-1, keepdim=True)"]),
    ])


def _stencil_functions_2d(arch: Architecture) -> str:
    """``W1(u)`` (the two-channel gradient), ``Dtx(v, w)`` / ``Dty(v, w)`` (one axis's transposed
    correlation of one channel), ``Dt(v, w)`` (the divergence) and ``inner`` (per image)."""
    axes = []
    for ir, name in zip(arch.stencils, ("Dtx", "Dty")):
        k, axis = ir.stencil.size, name[-1]
        starts = tuple(k - 1 - j for j in range(k))
        axes.append(_def(f"{name}(v: torch.Tensor, w: tuple) -> torch.Tensor",
                         f"scale * D{axis}^T v of one channel along {axis} (dim {ir.axis}), w = scale * "
                         f"W1_{axis}, {ir.boundary} boundary (as AxisPair.Dt).",
                         _axis_dt_prep_lines(ir, "v") + [f"return shifted_sum(v, w, {starts!r}, n, {ir.axis})"]))
    return "\n\n".join([
        _def("W1(u: torch.Tensor) -> torch.Tensor", _grad_doc(arch), _grad_lines(arch)), *axes,
        _def("Dt(v: torch.Tensor, w: tuple) -> torch.Tensor",
             "The divergence scale * (Dx^T v_x + Dy^T v_y), w = (scale * W1_x, scale * W1_y).",
             ["return Dtx(v[..., 0, :, :], w[0]) + Dty(v[..., 1, :, :], w[1])"]),
        _def(_INNER_SIGNATURE, "Per-image inner product over the grid, shape (B, 1, 1).",
             ["return (a * b).sum(dim=(-2, -1), keepdim=True)"]),
    ])


def _scheme_body(arch: Architecture) -> tuple[str, str, str]:
    """(class attributes, the block method, a one-line description) for the scheme."""
    sch, ir = arch.scheme, arch.stencils[0]
    if isinstance(sch, FED):
        rows = "".join(f"        {_table(arch, -t)},  # tau_{i} = {float(t)!r}\n"
                       for i, t in zip(sch.order, sch.taus))
        attrs = (f"    tau_max = {float(sch.tau_max)!r}\n"
                 f"    # W2 = -tau_i W1 per block, FED step sizes in Leja order\n"
                 f"    W2S = (\n{rows}    )\n")
        if sch.update == "cycle":
            block = ('        """One FED cycle, diffusivity frozen: u <- u - tau_i D^T (G * D u)."""\n'
                     "        G = diffusivity(W1(u))\n"
                     "        for w in self.W2S:\n"
                     "            u = u + Dt(G * W1(u), w)\n"
                     "        return u\n")
        else:
            block = ('        """One FED cycle, diffusivity per step: u <- u - tau_i D^T Phi(D u)."""\n'
                     "        for w in self.W2S:\n"
                     "            u = u + Dt(flux(W1(u)), w)\n"
                     "        return u\n")
        return attrs, block, "FED ResNet"
    if isinstance(sch, FSI):
        ab = "".join(f"        ({float(a)!r}, {float(1 - a)!r}),  # a_{k} = {a}\n"
                     for k, a in enumerate(sch.alphas))
        attrs = (f"    tau = {float(sch.tau)!r}\n    W2 = {_table(arch, -sch.tau)}  # -tau W1\n"
                 f"    # (a_k, 1 - a_k), a_k = (4k + 2) / (2k + 3)\n    AB = (\n{ab}    )\n")
        step = ("cur + Dt(G * W1(cur), self.W2)" if sch.update == "cycle"
                else "cur + Dt(flux(W1(cur)), self.W2)")
        block = ('        """One FSI cycle: u^(k+1) = a_k (u^k - tau A u^k) + (1 - a_k) u^(k-1), u^(-1) = u^0."""\n'
                 + ("        G = diffusivity(W1(u))\n" if sch.update == "cycle" else "")
                 + "        prev = cur = u\n"
                 "        for a, b in self.AB:\n"
                 f"            step = {step}\n"
                 "            prev, cur = cur, a * step + b * prev\n"
                 "        return cur\n")
        return attrs, block, "FSI ResNet with a skip from two blocks back"
    if isinstance(sch, Implicit):
        return _implicit_body(arch, sch)
    if isinstance(sch, Multigrid):
        attrs = (f"    tau = {float(sch.tau)!r}\n    W2 = {_table(arch, sch.tau)}  # +tau W1\n"
                 f"    levels, pre, post, cycles, omega = {sch.levels}, {sch.pre}, {sch.post}, "
                 f"{sch.cycles}, {float(sch.omega)!r}\n"
                 f"    periodic, width = {ir.boundary == 'periodic'}, {ir.stencil.size - 1}\n")
        block = ('        """One implicit step: V-cycles for (I + tau D^T Phi(D .)) x = u from x = u."""\n'
                 "        levels = self.hierarchy(u.shape[-1], u)\n"
                 "        x = u\n"
                 "        for _ in range(self.cycles):\n"
                 "            x = vcycle(levels, 0, x, u, self.pre, self.post, self.omega, self.periodic, TorchOps)\n"
                 "        return x\n\n"
                 "    def apply_fine(self, x: torch.Tensor) -> torch.Tensor:\n"
                 '        """A x = x + tau D^T Phi(D x) (linear Phi)."""\n'
                 "        return x + Dt(flux(W1(x)), self.W2)\n\n"
                 "    def hierarchy(self, n: int, like: torch.Tensor) -> list:\n"
                 '        """Banded Galerkin operators for n points, built in float64 once per size."""\n'
                 "        key = (n, like.device, like.dtype)\n"
                 "        if key not in self._cache:\n"
                 "            ref = torch.zeros(1, n, dtype=torch.float64, device=like.device)\n"
                 "            levels = build_hierarchy(self.apply_fine, n, self.width, self.periodic, self.levels,\n"
                 "                                     TorchOps, ref)\n"
                 "            for lv in levels:\n"
                 "                for k in ('bands', 'diag', 'inverse'):\n"
                 "                    if k in lv:\n"
                 "                        lv[k] = lv[k].to(like.dtype)\n"
                 "            self._cache[key] = levels\n"
                 "        return self._cache[key]\n")
        return attrs, block, "U-net of V-cycles"
    raise NotImplementedError(f"no source emitter for {type(sch).__name__}")


def _implicit_body(arch: Architecture, sch: Implicit) -> tuple[str, str, str]:
    attrs = f"    tau = {float(sch.tau)!r}\n    iterations = {sch.iterations}\n"
    if sch.solver == "cg":
        attrs += f"    W2 = {_table(arch, sch.tau)}  # +tau W1\n"
        dims = "-1" if len(arch.dims) == 1 else "(-2, -1)"
        block = ('        """CG for (I + tau D^T G(u) D) x = u from x = 0 (lagged diffusivity), on u / 2^e\n'
                 '        with 2^e >= max |u| per sample (exact; inner(r, r) cannot overflow)."""\n'
                 "        G, tiny = diffusivity(W1(u)), torch.finfo(u.dtype).tiny\n"
                 f"        amax = u.abs().amax(dim={dims}, keepdim=True)\n"
                 "        scale = torch.exp2(torch.ceil(torch.log2(amax.clamp_min(tiny))))\n"
                 "        x, r = torch.zeros_like(u), u / scale\n"
                 "        p, rr = r, inner(r, r)\n"
                 "        for _ in range(self.iterations):\n"
                 "            ap = p + Dt(G * W1(p), self.W2)\n"
                 "            alpha = rr / inner(p, ap).clamp_min(tiny)\n"
                 "            x = x + alpha * p\n"
                 "            r = r - alpha * ap\n"
                 "            rr_new = inner(r, r)\n"
                 "            p = r + (rr_new / rr.clamp_min(tiny)) * p\n"
                 "            rr = rr_new\n"
                 "        return x * scale\n")
        return attrs, block, "recurrent CG network"
    if sch.solver == "jacobi":
        aliased = [_aliased_table(ir, sch.tau) for ir in arch.stencils]
        attrs += (f"    W2 = {_table(arch, sch.tau)}  # +tau W1\n"
                  f"    W2SQ = {_table(arch, sch.tau, square=True)}  # tau W1^2: diag(tau D^T G D)\n"
                  f"    omega = {float(sch.omega)!r}\n")
        if any(t != "{}" for t in aliased):  # periodic grids shorter than the stencil: taps alias
            table = aliased[0] if len(aliased) == 1 else "(" + ", ".join(aliased) + ")"
            attrs += f"    W2SQ_ALIASED = {table}  # per grid size N < K\n" + _ALIASED_METHOD
        if len(arch.dims) == 1:
            dt = "Dt(G, self.W2SQ)"
            if aliased[0] != "{}":
                dt = (f"(self.aliased(G, self.W2SQ_ALIASED[G.shape[-1]], -1) "
                      f"if G.shape[-1] in self.W2SQ_ALIASED else {dt})")
            diag = ("        du = W1(u)\n"
                    "        G = diffusivity(du)\n"
                    "        G = G if isinstance(G, torch.Tensor) else torch.full_like(du, float(G))\n"
                    f"        diag = 1 + {dt}\n")
        else:  # G is (B, 1, H, W): each axis's squared weights act on its one channel, then summed
            parts = []
            for k, (name, dim) in enumerate((("Dtx", -1), ("Dty", -2))):
                part = f"{name}(g, self.W2SQ[{k}])"
                if aliased[k] != "{}":
                    part = (f"(self.aliased(g, self.W2SQ_ALIASED[{k}][g.shape[{dim}]], {dim}) "
                            f"if g.shape[{dim}] in self.W2SQ_ALIASED[{k}] else {part})")
                parts.append(part)
            diag = ("        G = diffusivity(W1(u))\n"
                    "        g = G[..., 0, :, :]\n"
                    f"        diag = 1 + ({parts[0]} + {parts[1]})\n")
        block = ('        """Damped Jacobi x <- x + omega (u - A x) / diag(A) from x = 0, A = I + tau D^T G D."""\n'
                 + diag
                 + "        x = torch.zeros_like(u)\n"
                 "        for _ in range(self.iterations):\n"
                 "            x = x + self.omega * (u - x - Dt(G * W1(x), self.W2)) / diag\n"
                 "        return x\n")
        return attrs, block, "recurrent damped-Jacobi network"
    attrs += f"    W2 = {_table(arch, -sch.tau)}  # -tau W1\n"
    block = ('        """Fixed point v <- u - tau D^T Phi(D v) from v = u (input skip every iteration)."""\n'
             "        v = u\n"
             "        for _ in range(self.iterations):\n"
             "            v = u + Dt(flux(W1(v)), self.W2)\n"
             "        return v\n")
    return attrs, block, "recurrent fixed-point network"


def _torch_ops_source() -> str:
    """The ``TorchOps`` adapter class, read from pde2net/schemes.py without importing torch."""
    path = Path(__file__).with_name("schemes.py")
    text = path.read_text(encoding="utf-8")
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef) and node.name == "TorchOps":
            return ast.get_source_segment(text, node) + "\n"
    raise RuntimeError("TorchOps not found in schemes.py")


_MG_FUNCTIONS = MG_FUNCTIONS


def _multigrid_source() -> str:
    return "\n\n".join([_torch_ops_source()] + [inspect.getsource(f) for f in _MG_FUNCTIONS])


def _functions(arch: Architecture, pnames: dict[str, str]) -> str:
    """The generated module-level functions: flux, diffusivity, paddings and stencils (1D or 2D)."""
    circular = any("circular" in (ir.padding[2], ir.adjoint_padding[2]) for ir in arch.stencils)
    if len(arch.dims) == 1:
        phi = flux_expression(arch, arch.flux.op, pnames)
        g = flux_expression(arch, arch.flux.ratio_op, pnames)
        return f'''
def flux(s: torch.Tensor) -> torch.Tensor:
    """Activation Phi(s) = {arch.flux.text}"""
    return {phi}


def diffusivity(s: torch.Tensor) -> torch.Tensor:
    """g = Phi(s)/s (finite at s = 0), frozen by the cycle / lagged by the implicit step."""
    return {g}
{_PAD_HELPER if circular else ""}{_SHIFTED_SUM}

{_stencil_functions(arch.stencils[0])}'''
    # 2D: g(|v|^2) is always a tensor of the nodes' shape (the constant g of linear diffusion is
    # broadcast), and the flux is v * g: both exactly as layers.VectorFlux builds them from its g
    return f'''
def diffusivity(v: torch.Tensor) -> torch.Tensor:
    """g(|v|^2) per node, shape (..., 1, H, W), radial profile Phi(s) = {arch.flux.text}.

    Frozen by the cycle / lagged by the implicit step."""
{_SQUARED_LENGTH}    g = {_radial_source(arch, pnames)}
    return g if isinstance(g, torch.Tensor) and g.shape == s2.shape else g + torch.zeros_like(s2)


def flux(v: torch.Tensor) -> torch.Tensor:
    """Vector activation g(|v|^2) v (the two channels coupled through |v|^2 only)."""
    return v * diffusivity(v)
{_PAD_DIM_HELPER if circular else ""}{_SHIFTED_SUM}

{_stencil_functions_2d(arch)}'''


def emit_scheme_source(arch: Architecture, report: Optional[StabilityReport] = None) -> str:
    """The standalone module text for a FED, FSI or implicit network (1D or 2D) or a multigrid
    network (1D: there is no 2D multigrid network to mirror)."""
    sch, ndim = arch.scheme, len(arch.dims)
    if ndim != 1 and isinstance(sch, Multigrid):
        raise NotImplementedError("no 2D source emitter for Multigrid (multigrid is 1D only)")
    pnames, params = _param_lines(arch, set())
    functions = _functions(arch, pnames)
    imports, helper = support_lines(functions)
    attrs, block, what = _scheme_body(arch)
    mg_src = _multigrid_source() if isinstance(sch, Multigrid) else ""
    cache = "        self._cache = {}\n" if isinstance(sch, Multigrid) else ""
    return f'''"""{arch.class_name}: a PyTorch network generated by pde2net ({what}). Imports only torch.

dt(u) = {arch.equation_text}
"""
import torch
{imports}
{params}{helper}
{functions}
{mg_src}

class {arch.class_name}(torch.nn.Module):
    """{_class_doc(arch, report)}
    """

{attrs}
    def __init__(self, steps: int = {sch.steps}) -> None:
        super().__init__()
        self.steps = steps
{cache}
    def block(self, u: torch.Tensor) -> torch.Tensor:
{block}
{_FORWARD[ndim]}'''


