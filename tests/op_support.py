"""Helpers of the operator-family tests: a hand-built ``base.Context`` (what analyse builds from a
spec), the right sides as sympy expressions, and a standalone build of a term from its
``TermSource`` (the runtime files inlined, as the emitted source does)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import sympy as sp

from pde2net.errors import Source
from pde2net.operators import base

U = sp.Symbol("u'field", real=True)
RUNTIME = Path(__file__).resolve().parent.parent / "pde2net" / "operators" / "runtime"


def param(name: str) -> sp.Symbol:
    return sp.Symbol(f"{name}'", real=True)


def make_ctx(dims: tuple, boundaries: tuple, grid: tuple = None, params: dict = None,
             channels: int = 1, stencil=None) -> base.Context:
    params = dict(params or {})
    return base.Context(
        u=U, dims=tuple(dims), channels=channels,
        grid=tuple(sp.nsimplify(h) for h in (grid or (1,) * len(dims))),
        boundaries=tuple(boundaries), params={k: sp.nsimplify(v) for k, v in params.items()},
        param_symbols={k: param(k) for k in params}, inputs={"f": sp.Symbol("f'input", real=True)},
        tensors={}, stencil=stencil, source=Source("equation dt(u) = ...\n", "t.pde"), pos=None)


def inline_source(term, ctx, tmp_path, pnames: dict = None):
    """The runtime object built by the term's standalone source: its runtime files inlined (their
    package-relative imports dropped), the printed functions, then the expression."""
    from reference import load_source

    pnames = pnames or {k: f"P_{k}" for k in ctx.params}
    ts = term.source(ctx, pnames, "t0_")
    lines = ["import math", "import torch", ""]
    lines += [f"{py} = {float(ctx.params[k])!r}" for k, py in pnames.items()]
    for mod in ts.runtime:
        text = (RUNTIME / f"{mod}.py").read_text()
        lines += [ln for ln in text.splitlines()
                  if not ln.startswith(("from .", "from __future__"))]
    lines += list(ts.functions)
    lines.append(f"TERM = {ts.expression}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_source("\n".join(lines) + "\n", tmp_path, "generated_term").TERM


def spectral_norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(a, 2))


def kron_along(d1: np.ndarray, shape: tuple, dim: int) -> np.ndarray:
    """``I (x) d1 (x) I``: the 1D matrix acting along array dimension ``dim`` (C order)."""
    before = math.prod(shape[:dim])
    after = math.prod(shape[dim + 1:])
    return np.kron(np.kron(np.eye(before), d1), np.eye(after))


def pm(lam: float):
    """Perona-Malik g(s2) = 1 / (1 + s2 / lam^2) in NumPy."""
    return lambda s2: 1.0 / (1.0 + s2 / lam ** 2)
