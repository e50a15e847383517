"""``pde2net graph``: the network's architecture as a networkx graph of layers with shapes.

Nodes are layers with attributes ``op`` (``input``, ``conv``, ``activation``,
``transposed_conv``, ``add``, ``scale``, ``solver``, ``restriction``, ``smoothing``,
``prolongation``, ``output``), ``label``, ``shape`` (the tensor shape the layer produces, with
``B`` the batch and ``N`` / ``H``, ``W`` the grid) and, where they apply, ``weights`` and
``repeat`` (how many times the block runs with shared weights).  Edges carry ``kind``:
``data``, ``skip`` (a skip connection) or ``recurrent``.  One block (explicit), one cycle (FED,
FSI), one time step (implicit) or one V-cycle (multigrid) is drawn; ``repeat`` says the rest.

Written as DOT (by hand: no pydot needed), GraphML or node-link JSON.  Imports no torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx

from .lower import Architecture, Explicit


def _shapes(arch: Architecture) -> tuple[str, str]:
    """(field shape, gradient shape) as text."""
    st = arch.stencils[0]
    k = st.stencil.size
    if len(arch.dims) == 2:  # the flux grid: K - 1 ghost points along a dirichlet axis
        ghosts = [f"+{ir.stencil.size - 1}" if ir.boundary == "dirichlet" and ir.stencil.size > 1 else ""
                  for ir in arch.stencils]
        return "(B, H, W)", f"(B, 2, H{ghosts[1]}, W{ghosts[0]})"
    grad = {"neumann": f"(B, N-{k - 1})", "dirichlet": f"(B, N+{k - 1})"}.get(st.boundary, "(B, N)")
    return "(B, N)", grad if k > 1 else "(B, N)"


class _Builder:
    def __init__(self, arch: Architecture) -> None:
        self.g = nx.DiGraph(name=arch.name, scheme=type(arch.scheme).__name__.lower())
        self.arch = arch
        self.field, self.grad = _shapes(arch)
        self.count = 0

    def node(self, op: str, label: str, shape: str, **attrs: Any) -> str:
        name = f"{self.count}_{op}"
        self.count += 1
        self.g.add_node(name, op=op, label=label, shape=shape, **attrs)
        return name

    def edge(self, a: str, b: str, kind: str = "data") -> None:
        self.g.add_edge(a, b, kind=kind)

    def diffusion_block(self, src: str, tag: str, scale: str, repeat: int = 1, frozen: bool = False) -> str:
        """conv -> activation -> transposed conv -> add (skip from src)."""
        a = self.arch
        ws = [list(st.weights) for st in a.stencils]
        conv = self.node("conv", f"{tag} conv W1 (D)", self.grad, weights=json.dumps(ws), repeat=repeat)
        act_label = ("frozen diffusivity G * (.)" if frozen else
                     f"activation Phi = {a.flux.text}" if len(a.dims) == 1 else
                     f"vector activation g(|v|^2) v, Phi(s) = {a.flux.text}")
        act = self.node("activation", f"{tag} {act_label}", self.grad, repeat=repeat)
        tconv = self.node("transposed_conv", f"{tag} transposed conv W2 = {scale} W1^T (D^T)", self.field,
                          repeat=repeat)
        add = self.node("add", f"{tag} add (skip connection)", self.field, repeat=repeat)
        self.edge(src, conv)
        self.edge(conv, act)
        self.edge(act, tconv)
        self.edge(tconv, add)
        self.edge(src, add, "skip")
        return add


def architecture_graph(arch: Architecture) -> nx.DiGraph:
    """The layer graph of the architecture (see the module docstring)."""
    b = _Builder(arch)
    sch = arch.scheme
    kind = type(sch).__name__
    x = b.node("input", "input u^0", b.field)
    if isinstance(sch, Explicit):
        x = b.diffusion_block(x, "block", f"-tau (tau = {float(sch.tau):.6g})", repeat=sch.steps)
    elif kind == "FED":
        frozen = sch.update == "cycle"
        for i, t in enumerate(sch.taus):
            x = b.diffusion_block(x, f"FED step {i}", f"-tau_{i} (tau_{i} = {float(t):.6g})",
                                  repeat=sch.cycles, frozen=frozen)
    elif kind == "FSI":
        frozen = sch.update == "cycle"
        prev = x
        for k, a in enumerate(sch.alphas):
            step = b.diffusion_block(x, f"FSI step {k}", f"-tau (tau = {float(sch.tau):.6g})",
                                     repeat=sch.cycles, frozen=frozen)
            mix = b.node("add", f"FSI step {k} extrapolation a_{k} (.) + (1 - a_{k}) u^(k-1), "
                         f"a_{k} = {float(a):.6g}", b.field, repeat=sch.cycles)
            b.edge(step, mix)
            b.edge(prev, mix, "skip")
            prev, x = x, mix
    elif kind == "Implicit":
        it = b.node("solver", f"{sch.solver} iteration block (tau = {float(sch.tau):.6g})", b.field,
                    iterations=sch.iterations, repeat=sch.steps)
        conv = b.node("conv", "conv W1 (D)", b.grad, repeat=sch.iterations)
        act = b.node("activation", "frozen diffusivity G * (.)" if sch.solver != "fixed_point"
                     else f"activation Phi = {arch.flux.text}", b.grad, repeat=sch.iterations)
        tconv = b.node("transposed_conv", "transposed conv tau W1^T (D^T)", b.field, repeat=sch.iterations)
        b.edge(x, it)
        b.edge(it, conv)
        b.edge(conv, act)
        b.edge(act, tconv)
        b.edge(tconv, it, "recurrent")
        b.edge(x, it, "skip")  # the input skip: u^k fed to every iteration
        x = it
    elif kind == "Multigrid":
        pre = b.node("smoothing", f"pre-smoothing: {sch.pre} damped Jacobi sweeps (conv)", "(B, N)")
        r = b.node("restriction", "restriction R: strided conv [1/4, 1/2, 1/4], stride 2", "(B, N/2)")
        coarse = b.node("solver", f"coarse-grid correction (recursive, levels = {sch.levels or 'auto'})",
                        "(B, N/2)")
        p = b.node("prolongation", "prolongation P = 2 R^T: transposed strided conv", "(B, N)")
        add = b.node("add", "add coarse correction (skip)", "(B, N)")
        post = b.node("smoothing", f"post-smoothing: {sch.post} damped Jacobi sweeps (conv)", "(B, N)",
                      repeat=sch.cycles * sch.steps)
        for a_, c_ in ((x, pre), (pre, r), (r, coarse), (coarse, p), (p, add), (add, post)):
            b.edge(a_, c_)
        b.edge(pre, add, "skip")
        x = post
    out = b.node("output", "output", b.field)
    b.edge(x, out)
    return b.g


def to_dot(g: nx.DiGraph) -> str:
    """DOT text: one box per layer (label and shape), dashed skip edges, dotted recurrent edges."""
    def esc(s: Any) -> str:
        return str(s).replace("\\", "\\\\").replace('"', '\\"')

    def q(s: Any) -> str:
        return f'"{esc(s)}"'

    lines = [f"digraph {q(g.graph.get('name', 'net'))} {{", "  rankdir=TB;", "  node [shape=box, fontsize=10];"]
    for n, d in g.nodes(data=True):
        parts = [esc(d["label"]), esc(d["shape"])]
        if d.get("repeat", 1) not in (1, None):
            parts.append(f"x{d['repeat']}")
        text = "\\n".join(parts)  # DOT's line break inside a label
        lines.append(f'  {q(n)} [label="{text}"];')
    style = {"skip": " [style=dashed]", "recurrent": " [style=dotted]", "data": ""}
    for a, b_, d in g.edges(data=True):
        lines.append(f"  {q(a)} -> {q(b_)}{style.get(d.get('kind', 'data'), '')};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(g: nx.DiGraph, path: str) -> str:
    """Writes the graph in the format the suffix names (.dot, .gv, .graphml, .json)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".dot", ".gv"):
        Path(path).write_text(to_dot(g), encoding="utf-8")
    elif suffix == ".graphml":
        nx.write_graphml(g, path)
    elif suffix == ".json":
        Path(path).write_text(json.dumps(nx.node_link_data(g, edges="edges"), indent=2), encoding="utf-8")
    else:
        raise ValueError(f"unknown graph format {suffix!r}: use .dot, .graphml or .json")
    return suffix
