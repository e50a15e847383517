"""The package's import graph (module-level and function-level imports both count) has no
cycle: imports run one way, from a stage to the stages below it.  The time limits several stages
share live in the bottom module ``pde2net.limits``; codegen_common holds what codegen and
codegen_schemes share; schemes builds the networks from layers; scheme_stability registers its
rules with stability (``stability.register_rule``) instead of stability importing it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import pde2net

#: True: no import cycle at all in the package; False: no cycle through two of FORBIDDEN_TOGETHER
ALL_CYCLES_FORBIDDEN = True
FORBIDDEN_TOGETHER = frozenset({"analyse", "stability", "stencils"})

PACKAGE = Path(pde2net.__file__).parent


def _imported(module: str, node: ast.AST, modules: set[str]) -> set[str]:
    """The package modules one import statement names (relative or absolute)."""
    out: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == "pde2net" and len(parts) > 1 and parts[1] in modules:
                out.add(parts[1])
    elif isinstance(node, ast.ImportFrom):
        absolute = node.level == 0 and (node.module or "").split(".")[0] == "pde2net"
        if node.level == 1 or absolute:
            base = (node.module or "").split(".")
            base = base[1:] if absolute else base
            if base and base[0]:
                if base[0] in modules:
                    out.add(base[0])
            else:  # from . import a, b
                out |= {a.name for a in node.names if a.name in modules}
    return out - {module}


def import_graph() -> nx.DiGraph:
    """module -> module for every import of one package module by another, at any depth."""
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for m in modules:
        tree = ast.parse((PACKAGE / f"{m}.py").read_text())
        for node in ast.walk(tree):
            for target in _imported(m, node, modules):
                g.add_edge(m, target)
    return g


def test_the_graph_sees_known_edges():
    g = import_graph()
    assert g.has_edge("stability", "limits") and g.has_edge("stencils", "limits")
    assert g.has_edge("program", "stability") and g.has_edge("lower", "stencils")
    assert g.has_edge("analyse", "limits")  # a function-level import


def test_limits_is_a_bottom_module():
    assert list(import_graph().successors("limits")) == []


def test_no_cycle_through_analyse_stability_stencils():
    cycles = sorted(sorted(c) for c in nx.simple_cycles(import_graph()))
    for c in cycles:
        print("import cycle:", " -> ".join(c))
    bad = [c for c in cycles if ALL_CYCLES_FORBIDDEN or len(FORBIDDEN_TOGETHER & set(c)) >= 2]
    assert bad == [], f"import cycles: {bad}"
