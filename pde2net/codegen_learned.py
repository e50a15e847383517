"""Learned stencil banks (``stencil learned(size = K, filters = F)``): the live network, the
``check`` text and the standalone source of a TRAINED network.

A spec with a learned bank lowers to :class:`~pde2net.lower.LearnedBank`; its network is a
:class:`pde2net.nn.StableResNet` (docs/theory.md §13): depth = the scheme's ``steps``, one channel,
``F`` filters of ``K`` taps (``K x K`` in 2D), zero padding (``boundary dirichlet``), and as
activation either a :class:`pde2net.nn.LearnedDiffusivity` per block (``diffusivity g(s2) =
learned(knots = N, L = EXPR)``) or the spec's fixed flux (:class:`pde2net.nn.RatioActivation`
over the flux's op tree ``Phi(s)/s``, with the L the stability pass proved).  Every block
satisfies ``tau L B2(W) < 2`` for every parameter value, so ``||net(u)|| <= ||u||``.

:func:`emit_source` prints the trained values exactly (``repr`` of each float: the effective
filters, each block's tau, the learned diffusivity's values), so the emitted module reproduces the
network's outputs to round-off; its docstring carries the certificate with those numbers.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

import sympy as sp

from . import exprs
from .analyse import python_name, show
from .codegen_common import flux_expression, support_lines
from .errors import PdeError
from .lower import FLUX_VAR, Architecture, LearnedBank
from .stability import LEARNED_FORM, StabilityReport

if TYPE_CHECKING:
    import torch

    from .analyse import Model
    from .nn import StableResNet


# ------------------------------------------------------------------------------ live module
def float_up(x: sp.Expr) -> float:
    """The smallest float not below the exact value (a bound L must stay a bound)."""
    f = float(sp.N(x, 40))
    return math.nextafter(f, math.inf) if sp.N(sp.Float(f, 40) - x, 40) < 0 else f


def activation_options(arch: Architecture, model: "Model", report: StabilityReport) -> dict[str, Any]:
    """The ``StableBlock`` activation options of the spec: the learned diffusivity (L = c L_spec,
    rounded up) or the fixed flux with its proven L (refused when none is proven)."""
    sch: LearnedBank = arch.scheme
    if sch.learned_g:
        return {"activation": "learned", "knots": sch.knots, "L": float_up(sch.scale * sch.L),
                "s_max": float(sch.s_max)}
    if not report.stable:
        raise model.error(f"cannot build a certified learned bank: {report.reason}", "equation",
                          "a diffusivity with 0 <= g <= L (e.g. 1 / (1 + s2 / lambda^2)), or "
                          "diffusivity g(s2) = learned(knots = 16, L = 1)")
    from .nn import RatioActivation

    flux = arch.flux
    op = flux.ratio_op
    lib_t, lib_n = exprs.LIBS["torch"](), exprs.LIBS["numpy"]()

    def ratio(s):
        return exprs.evaluate(op, flux.env(s), lib_t)

    def ratio_numpy(s):
        return exprs.evaluate(op, flux.env(s), lib_n)

    from .stability import flux_facts

    L = float_up(flux_facts(model.flux_value).L)  # exact: proven when report.stable
    return {"activation": RatioActivation(ratio, ratio_numpy, L, f"Phi(s) = {flux.text}")}


def spec_network_class() -> type:
    """:class:`~pde2net.nn.StableResNet` taking the language's layouts: (N,), (B, N) or
    (B, 1, N) in 1D, (H, W), (B, H, W) or (B, 1, H, W) in 2D; the output has the input's shape."""
    from .nn import StableResNet

    class SpecStableResNet(StableResNet):
        @property
        def steps(self) -> int:
            return self.depth

        def forward(self, u: "torch.Tensor") -> "torch.Tensor":
            d = self.block(0).dim
            if u.dim() < d:
                raise ValueError(f"expected a {d}D field of shape {'(N,)' if d == 1 else '(H, W)'}"
                                 f" with optional batch and channel axes; got {tuple(u.shape)}")
            x = u.reshape(-1, 1, *u.shape[u.dim() - d:])
            return super().forward(x).reshape(u.shape)

    return SpecStableResNet


def build_module(arch: Architecture, model: "Model", report: StabilityReport,
                 trainable: bool = True) -> "StableResNet":
    """The spec's :class:`~pde2net.nn.StableResNet` at its initial values (torch's global RNG);
    ``trainable=False`` freezes every parameter (``requires_grad = False``).  Inputs as the
    language's layouts (:func:`spec_network_class`)."""
    sch: LearnedBank = arch.scheme
    net = spec_network_class()(sch.steps, channels=1, filters=sch.filters, size=sch.size,
                               dim=sch.dim, **activation_options(arch, model, report))
    if not trainable:
        net.requires_grad_(False)
    return net


# ------------------------------------------------------------------------------ check text
def check_text(prog: Any) -> str:
    """``pde2net check`` for a learned bank: the network and the certificate's form."""
    m, a, r = prog.model, prog.arch, prog.stability
    sch: LearnedBank = a.scheme
    lines = [
        f"{m.name}: learned stable filter-bank network ({m.ndim}D), docs/theory.md §13",
        f"  equation   dt({m.field}) = {m.equation_text}",
        f"  flux       {r.flux}",
        f"  stencil    {r.stencil} (trainable), boundary dirichlet (zero padding)",
        f"  network    {sch.steps} blocks u <- u - tau sum_k W_k^T Phi_k(W_k u), "
        f"k = 1..{sch.filters}, each block its own W, tau"
        + (" and diffusivity" if sch.learned_g else ""),
        "",
        "certificate (holds for every parameter value)",
        f"  {LEARNED_FORM}",
        f"  L = sup Phi(s)/s     {'none' if r.L is None else f'{r.L:.10g}'}",
        "  tau_max              tau < 2/(L B2(W)): learned, see net.certificate() for the numbers",
    ]
    for h in r.hypotheses:
        mark = {True: "yes", False: "NO", None: "unknown"}[h["holds"]]
        lines.append(f"  {h['name']:<22} {mark:<8} {h['detail']}")
    lines += ["", f"verdict: {r.verdict.upper()} ({r.guarantee}; {r.statement})", f"  {r.reason}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the source
def emit_source(arch: Architecture, report: StabilityReport, net: "StableResNet") -> str:
    """Standalone source of the (trained) network ``net``: torch only, every learned value
    printed exactly."""
    import torch

    from .nn import LearnedDiffusivity, RatioActivation, StableResNet

    sch: LearnedBank = arch.scheme
    if not isinstance(net, StableResNet) or net.depth != sch.steps:
        raise PdeError(f"the weights are not a network of this spec ({sch.steps} blocks of "
                       f"{sch.filters} filters of size {sch.size})", None, None,
                       "weights saved from prog.module(trainable=True).state_dict()")
    blocks = []
    with torch.no_grad():
        for i in range(net.depth):
            b = net.block(i)
            if (b.filters, b.size, b.dim, b.channels) != (sch.filters, sch.size, sch.dim, 1):
                raise PdeError(f"block {i} has another shape than the spec's bank", None, None,
                               f"{sch.filters} filters of size {sch.size} in {sch.dim}D")
            w = b.effective_weight()
            cert = b.certificate()
            entry = {"W": _floats(w), "tau": float(b.tau(w)), "cert": cert}
            if isinstance(b.activation, LearnedDiffusivity):
                entry["values"] = _floats(b.activation.values)
            blocks.append(entry)
    act = net.block(0).activation
    learned = isinstance(act, LearnedDiffusivity)
    if not learned and not isinstance(act, RatioActivation):
        raise PdeError("the network's activation is not the spec's", None, None,
                       "a network from prog.module(trainable=True)")
    pnames: dict[str, str] = {}
    taken = {"torch", "F", "nn", "math", "s", "g", "L", "u", "w", "i"}
    for p in (arch.flux.params if arch.flux is not None else {}):
        pnames[p] = python_name(p, taken)
        taken.add(pnames[p])
    phi_src, imports, helper = _phi_source(arch, act, pnames, learned)
    conv = "conv1d" if sch.dim == 1 else "conv2d"
    lines = [f'"""{_doc(arch, report, blocks, act)}"""',
             "import torch", "import torch.nn.functional as F", imports.rstrip("\n"),
             "from torch import nn", "", "",
             f"WEIGHTS = {_pretty([e['W'] for e in blocks])}",
             f"TAUS = {[e['tau'] for e in blocks]!r}"]
    if learned:
        lines.append(f"VALUES = {_pretty([e['values'] for e in blocks])}")
    lines += [helper.strip("\n"), "", "", phi_src, "", "",
              f"class {arch.class_name}(nn.Module):",
              f'    """{sch.steps} blocks u <- u - tau_i W_i^T Phi(W_i u); input '
              f'{"(N,), (B, N) or (B, 1, N)" if sch.dim == 1 else "(H, W), (B, H, W) or (B, 1, H, W)"}'
              f', any float dtype; output the same shape."""',
              "",
              "    def __init__(self) -> None:",
              "        super().__init__()",
              "        self.register_buffer('weights', torch.tensor(WEIGHTS, dtype=torch.float64))",
              "        self.register_buffer('taus', torch.tensor(TAUS, dtype=torch.float64))"]
    if learned:
        lines.append("        self.register_buffer('values', torch.tensor(VALUES, dtype=torch.float64))")
    lines += ["",
              "    def forward(self, u: torch.Tensor) -> torch.Tensor:",
              "        shape = u.shape",
              f"        u = u.reshape(-1, 1, *shape[len(shape) - {sch.dim}:])",
              f"        for i in range({sch.steps}):",
              "            w = self.weights[i].to(u.dtype)",
              f"            s = F.{conv}(u, w, padding={sch.size // 2})",
              f"            z = phi(s{', self.values[i]' if learned else ''})",
              f"            u = u - self.taus[i].to(u.dtype) * F.conv_transpose{sch.dim}d("
              f"z, w, padding={sch.size // 2})",
              "        return u.reshape(shape)", ""]
    return "\n".join(line for line in lines if line is not None)


def _floats(t: "torch.Tensor") -> Any:
    """A tensor as nested lists of Python floats (exact: float32 and float64 values are
    floats)."""
    return t.detach().double().cpu().tolist()


def _pretty(x: Any) -> str:
    """``repr`` of nested float lists (repr of a float round-trips exactly)."""
    return repr(x)


def _phi_source(arch: Architecture, act: Any, pnames: dict[str, str], learned: bool
                ) -> tuple[str, str, str]:
    """The ``phi`` function of the emitted module, as the live activation computes it."""
    if learned:
        return (f'''def phi(s: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Phi(s) = s g(s^2), g = L sigmoid(a(s)), a the normalised radial-basis interpolant of the
    learned values at {act.knots} knots on [0, {act.s_max!r}] (g in [0, L] for every value)."""
    L, s_max, knots = {act.L!r}, {act.s_max!r}, {act.knots}
    c = torch.linspace(0.0, s_max, knots, dtype=s.dtype, device=s.device)
    h2 = 2.0 * (s_max / (knots - 1)) ** 2
    t = s.clamp(-s_max, s_max).unsqueeze(-1)
    psi = torch.exp(-(t - c) ** 2 / h2) + torch.exp(-(t + c) ** 2 / h2)
    v = values.to(s.dtype)
    v = v[0] if v.shape[0] == 1 else v.view(v.shape[0], *([1] * (s.dim() - 2)), knots)
    a = (psi * v).sum(-1) / psi.sum(-1)
    return s * (L * torch.sigmoid(a))''', "", "")
    expr = flux_expression(arch, arch.flux.ratio_op, pnames)
    imports, helper = support_lines(expr)
    params = "".join(f"    {pnames[p]} = {v!r}\n" for p, v in arch.flux.params.items()
                     if pnames[p] in expr)
    return (f'''def phi(s: torch.Tensor) -> torch.Tensor:
    """Phi(s) = s * clamp(g(s), 0, L), g = Phi(s)/s = {show(arch.flux.ratio)}: the clamp keeps the
    proven 0 <= g <= L true in float."""
    L = {act.L!r}
{params}    g = torch.as_tensor({expr}, dtype=s.dtype, device=s.device)
    return s * torch.nan_to_num(g, nan=0.0, posinf=L, neginf=0.0).clamp(0.0, L)''',
            imports, helper)


def _doc(arch: Architecture, report: StabilityReport, blocks: list[dict], act: Any) -> str:
    sch: LearnedBank = arch.scheme
    worst = max(e["cert"].tau_L_B for e in blocks)
    rows = "\n".join(f"  block {i}: tau = {e['tau']!r}, B2(W) = {e['cert'].B2!r}, "
                     f"tau L B2 = {e['cert'].tau * e['cert'].L * e['cert'].B2!r}"
                     for i, e in enumerate(blocks))
    return (f"{arch.name}: a trained stable filter-bank network, generated by pde2net.\n\n"
            f"dt(u) = {arch.equation_text} with a learned bank of {sch.filters} filters of size "
            f"{sch.size}{'' if sch.dim == 1 else ' x ' + str(sch.size)} (zero padding = boundary "
            f"dirichlet), {sch.steps} blocks u <- u - tau W^T Phi(W u).\n"
            f"{report.flux}; L = {act.L!r}.\n\n"
            f"Certificate (docs/theory.md §13): {LEARNED_FORM}.\n"
            f"With the printed values, max over blocks of tau L min(B1, B2, Gm*) = {worst!r} < 2:\n"
            f"{rows}\n"
            f"so ||net(u)||_2 <= ||u||_2 for every input u.\n")


def load_weights(prog: Any, path: str) -> "StableResNet":
    """The spec's network with the state_dict saved at ``path`` (``torch.load`` with
    ``weights_only=True``: tensors only, no code runs); a wrong file is a PdeError."""
    import torch

    if not prog.learned:
        raise prog.model.error("--weights applies to a spec with a learned stencil bank "
                               "('stencil learned(size = 3, filters = 8)')", "stencil",
                               "pde2net compile FILE without --weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable or foreign file is the user's input
        raise PdeError(f"cannot read the weights {path}: {exc}", None, None,
                       "a file written by torch.save(net.state_dict(), PATH)") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise PdeError(f"{path} is not a state_dict", None, None,
                       "torch.save(net.state_dict(), PATH)")
    # build in the saved precision: loading float64 values into float32 parameters rounds them
    wide = any(t.dtype == torch.float64 for t in state.values())
    net = prog.module(trainable=True, dtype=torch.float64 if wide else None)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise PdeError(f"the weights in {path} do not fit this spec's network: "
                       f"{str(exc).splitlines()[0]}", None, None,
                       "weights of prog.module(trainable=True) for this spec") from None
    return net
