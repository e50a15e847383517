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


def _resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The package modules (dotted, relative to the package) one ``from ... import`` names."""
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] != "pde2net":
            return []
        base = parts[1:]
    else:
        here = module.split(".")[:-1]  # the importing module's package
        up = here[: len(here) - (node.level - 1)] if node.level - 1 <= len(here) else []
        base = up + ((node.module or "").split(".") if node.module else [])
    targets = [".".join(base)] if base else []
    targets += [".".join(base + [a.name]) for a in node.names]
    return targets


def _imported(module: str, node: ast.AST, modules: set[str]) -> set[str]:
    """The package modules one import statement names (relative or absolute, any depth)."""
    out: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == "pde2net" and len(parts) > 1 and ".".join(parts[1:]) in modules:
                out.add(".".join(parts[1:]))
    elif isinstance(node, ast.ImportFrom):
        out |= {t for t in _resolve(module, node) if t in modules}
    return out - {module}


def import_graph() -> nx.DiGraph:
    """module -> module for every import of one package module by another, at any depth; the
    modules of subpackages by dotted name (``operators.base``); a package's ``__init__`` is
    left out when it imports nothing of the package (importing ``operators.base`` runs it)."""
    modules = {}
    for p in PACKAGE.rglob("*.py"):
        rel = p.relative_to(PACKAGE).with_suffix("")
        if rel.name == "__init__":
            continue
        modules[".".join(rel.parts)] = p
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for m, path in modules.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            for target in _imported(m, node, set(modules)):
                g.add_edge(m, target)
    return g


def test_package_inits_import_nothing_of_the_package():
    """Subpackage ``__init__`` files import nothing (so the graph above sees every edge)."""
    for init in PACKAGE.rglob("__init__.py"):
        if init.parent == PACKAGE:
            continue
        tree = ast.parse(init.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                    and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")], init


def test_the_graph_sees_known_edges():
    g = import_graph()
    assert g.has_edge("stability", "limits") and g.has_edge("stencils", "limits")
    assert g.has_edge("program", "stability") and g.has_edge("lower", "stencils")
    assert g.has_edge("analyse", "limits")  # a function-level import
    assert g.has_edge("operators.rule", "stability") and g.has_edge("analyse", "operators.base")
    assert g.has_edge("operators.live", "operators.runtime.network")


def test_limits_is_a_bottom_module():
    assert list(import_graph().successors("limits")) == []


def test_no_cycle_through_analyse_stability_stencils():
    cycles = sorted(sorted(c) for c in nx.simple_cycles(import_graph()))
    for c in cycles:
        print("import cycle:", " -> ".join(c))
    bad = [c for c in cycles if ALL_CYCLES_FORBIDDEN or len(FORBIDDEN_TOGETHER & set(c)) >= 2]
    assert bad == [], f"import cycles: {bad}"
