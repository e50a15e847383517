"""`pde2net graph`: the architecture as a networkx graph of layers with shapes."""
from __future__ import annotations

import json

import networkx as nx
import pytest

import pde2net
from pde2net.cli import main
from pde2net.netgraph import architecture_graph, to_dot

BASE = """pde g
field u(x)
equation dt(u) = dxx(u)
stencil {stencil}
scheme {scheme}
"""


def ops(g):
    return [g.nodes[n]["op"] for n in nx.topological_sort(nx.DiGraph(
        [(a, b) for a, b, d in g.edges(data=True) if d["kind"] != "recurrent"]))]


def test_explicit_block_is_conv_activation_transposed_conv_add_with_skip():
    g = architecture_graph(pde2net.compile_text(BASE.format(stencil="central",
                                                            scheme="explicit(tau = 0.5, steps = 7)")).arch)
    assert ops(g) == ["input", "conv", "activation", "transposed_conv", "add", "output"]
    skips = [(a, b) for a, b, d in g.edges(data=True) if d["kind"] == "skip"]
    assert [(g.nodes[a]["op"], g.nodes[b]["op"]) for a, b in skips] == [("input", "add")]
    conv = next(n for n in g if g.nodes[n]["op"] == "conv")
    assert json.loads(g.nodes[conv]["weights"]) == [[-0.5, 0.0, 0.5]]
    assert g.nodes[conv]["repeat"] == 7 and g.nodes[conv]["shape"] == "(B, N-2)"


def test_schemes_fed_fsi_implicit_multigrid_and_2d():
    fed = architecture_graph(pde2net.compile_text(BASE.format(
        stencil="forward", scheme="fed(tau_max = 0.5, cycles = 2, cycle_length = 3)")).arch)
    assert [d["op"] for _, d in fed.nodes(data=True)].count("transposed_conv") == 3
    fsi = architecture_graph(pde2net.compile_text(BASE.format(
        stencil="forward", scheme="fsi(tau = 0.5, cycles = 2, cycle_length = 3)")).arch)
    # each FSI step adds an extrapolating skip from two layers back
    assert sum(d["kind"] == "skip" for *_, d in fsi.edges(data=True)) == 6
    imp = architecture_graph(pde2net.compile_text(BASE.format(
        stencil="forward", scheme="implicit(tau = 5, steps = 2, iterations = 9)")).arch)
    assert any(d["kind"] == "recurrent" for *_, d in imp.edges(data=True))
    mg = architecture_graph(pde2net.compile_text(BASE.format(stencil="forward", scheme="multigrid(tau = 5)")).arch)
    assert {"restriction", "prolongation", "smoothing"} <= {d["op"] for _, d in mg.nodes(data=True)}
    two = architecture_graph(pde2net.compile_text(
        "pde i\nfield u(x, y)\nequation dt(u) = laplace(u)\nscheme explicit(tau = 0.2, steps = 3)\n").arch)
    assert {d["shape"] for _, d in two.nodes(data=True)} == {"(B, H, W)", "(B, 2, H, W)"}


@pytest.mark.parametrize("suffix", [".dot", ".graphml", ".json"])
def test_cli_graph_formats_round_trip(tmp_path, examples_dir, suffix):
    out = tmp_path / f"net{suffix}"
    assert main(["graph", str(examples_dir / "perona_malik.pde"), "-o", str(out)]) == 0
    ref = architecture_graph(pde2net.load(examples_dir / "perona_malik.pde").arch)
    if suffix == ".graphml":
        back = nx.read_graphml(out)
    elif suffix == ".json":
        back = nx.node_link_graph(json.loads(out.read_text()), edges="edges")
    else:
        text = out.read_text()
        assert text.startswith('digraph "perona_malik"') and text == to_dot(ref)
        assert text.count("->") == ref.number_of_edges() and "style=dashed" in text
        return
    assert set(back.nodes) == set(ref.nodes) and set(back.edges) == set(ref.edges)
    assert all(back.nodes[n]["op"] == ref.nodes[n]["op"] for n in ref)


def test_cli_graph_bad_suffix_and_stdout(tmp_path, examples_dir, capsys):
    assert main(["graph", str(examples_dir / "perona_malik.pde"), "-o", str(tmp_path / "x.xyz")]) == 2
    assert main(["graph", str(examples_dir / "perona_malik.pde")]) == 0
    assert capsys.readouterr().out.startswith("digraph")
