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


#: cycles longer than this are drawn as first step, the middle steps collapsed into one block
#: ("x n"), last step: an FSI cycle of 10,000 steps is then three blocks tall, not 10,000
COLLAPSE_AFTER = 4


def drawn_steps(n: int) -> list[tuple[int, int]]:
    """The (first, last) step ranges of an n-step cycle that the graph draws as one block each."""
    if n <= COLLAPSE_AFTER:
        return [(i, i) for i in range(n)]
    return [(0, 0), (1, n - 2), (n - 1, n - 1)]


def _step_tag(scheme: str, first: int, last: int) -> str:
    return f"{scheme} step {first}" if first == last else f"{scheme} steps {first}..{last} (x{last - first + 1})"


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
        for first, last in drawn_steps(sch.cycle_length):
            t0, t1 = float(sch.taus[first]), float(sch.taus[last])
            scale = (f"-tau_{first} (tau_{first} = {t0:.6g})" if first == last else
                     f"-tau_i (tau_i = {t0:.6g} ... {t1:.6g}, Leja order)")
            x = b.diffusion_block(x, _step_tag("FED", first, last), scale,
                                  repeat=sch.cycles * (last - first + 1), frozen=frozen)
    elif kind == "FSI":
        frozen = sch.update == "cycle"
        prev = x
        for first, last in drawn_steps(sch.cycle_length):
            tag = _step_tag("FSI", first, last)
            repeat = sch.cycles * (last - first + 1)
            step = b.diffusion_block(x, tag, f"-tau (tau = {float(sch.tau):.6g})", repeat=repeat,
                                     frozen=frozen)
            a = (f"a_{first} = {float(sch.alphas[first]):.6g}" if first == last else
                 f"a_k = (4k+2)/(2k+3), k = {first}..{last}")
            mix = b.node("add", f"{tag} extrapolation a_k (.) + (1 - a_k) u^(k-1), {a}", b.field,
                         repeat=repeat)
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


PICTURE_SUFFIXES = (".png", ".svg", ".pdf")


def write_graph(g: nx.DiGraph, path: str) -> str:
    """Writes the graph in the format the suffix names: .dot/.gv, .graphml, .json, or a picture
    (.png, .svg, .pdf: Graphviz's ``dot`` when installed, else a matplotlib drawing)."""
    suffix = Path(path).suffix.lower()
    if suffix in PICTURE_SUFFIXES:
        render_picture(g, path)
    elif suffix in (".dot", ".gv"):
        Path(path).write_text(to_dot(g), encoding="utf-8")
    elif suffix == ".graphml":
        nx.write_graphml(g, path)
    elif suffix == ".json":
        Path(path).write_text(json.dumps(nx.node_link_data(g, edges="edges"), indent=2), encoding="utf-8")
    else:
        raise ValueError(f"unknown graph format {suffix!r}: use .dot, .graphml, .json, .png, .svg or .pdf")
    return suffix


def render_picture(g: nx.DiGraph, path: str) -> str:
    """Draws the graph into ``path``; returns the renderer used (``graphviz`` or ``matplotlib``)."""
    import shutil
    import subprocess

    fmt = Path(path).suffix.lower()[1:]
    dot = shutil.which("dot")
    if dot is not None:
        r = subprocess.run([dot, f"-T{fmt}", "-o", str(path)], input=to_dot(g), text=True,
                           capture_output=True, timeout=60)
        if r.returncode == 0:
            return "graphviz"
    _draw_matplotlib(g, path)
    return "matplotlib"


def layered_positions(g: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Node positions by data-flow depth (recurrent edges ignored): one row per generation,
    top to bottom, nodes of a row side by side."""
    flow = nx.DiGraph()
    flow.add_nodes_from(g)
    flow.add_edges_from((a, b) for a, b, d in g.edges(data=True) if d.get("kind") != "recurrent")
    pos = {}
    for depth, layer in enumerate(nx.topological_generations(flow)):
        for i, n in enumerate(sorted(layer, key=str)):
            pos[n] = (i - (len(layer) - 1) / 2, -depth)
    return pos


def _draw_matplotlib(g: nx.DiGraph, path: str) -> None:
    import textwrap

    from .plot import _pyplot

    plt = _pyplot(path, "pde2net graph (picture)")
    pos = layered_positions(g)
    depth = 1 - min(y for _, y in pos.values())
    width = max(x for x, _ in pos.values()) - min(x for x, _ in pos.values()) + 1
    fig, ax = plt.subplots(figsize=(4.5 * max(width, 1.5), 1.1 * depth + 0.6))
    style = {"skip": "--", "recurrent": ":", "data": "-"}
    for a, b_, d in g.edges(data=True):
        kind = d.get("kind", "data")
        bend = 0.35 if kind != "data" else 0.0
        ax.annotate("", xy=pos[b_], xytext=pos[a],
                    arrowprops=dict(arrowstyle="->", linestyle=style.get(kind, "-"), lw=1,
                                    connectionstyle=f"arc3,rad={bend}", shrinkA=12, shrinkB=12))
    for n, d in g.nodes(data=True):
        text = "\n".join(textwrap.wrap(str(d["label"]), 44))
        text += f"\n{d['shape']}" + (f"  x{d['repeat']}" if d.get("repeat", 1) not in (1, None) else "")
        ax.text(*pos[n], text, ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round", fc="#eef3fb", ec="#34495e"))
    ax.set_xlim(min(x for x, _ in pos.values()) - 0.8, max(x for x, _ in pos.values()) + 0.8)
    ax.set_ylim(-depth + 0.4, 0.6)
    ax.set_axis_off()
    ax.set_title(str(g.graph.get("name", "")), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
