"""The standalone source: valid Python, imports only torch, equal to the live module."""
import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import pde2net
from reference import load_source as import_source

EXAMPLES = sorted(p.stem for p in Path("examples").glob("*.pde"))



def compilable(stem: str) -> bool:
    try:
        pde2net.load(f"examples/{stem}.pde").source()
        return True
    except (NotImplementedError, pde2net.PdeError):
        return False


@pytest.mark.parametrize("stem", EXAMPLES)
def test_source_is_standalone_and_matches_live(stem, tmp_path):
    prog = pde2net.load(f"examples/{stem}.pde")
    try:
        src = prog.source()
    except NotImplementedError:
        pytest.skip("no source emitter for this scheme")
    tree = ast.parse(src)
    imports = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imports |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imports <= {"torch", "math"}
    mod = import_source(src, tmp_path)
    cls = getattr(mod, prog.arch.class_name)
    net = cls()
    live = prog.module()
    n = prog.arch.size[0] if prog.arch.size else 64
    shape = (3, n)
    if prog.operator:  # (B, [C,] *space), x last
        ctx = prog.arch.operator.context
        space = tuple(reversed(prog.arch.size)) if prog.arch.size else (16,) * ctx.ndim
        shape = (2,) + ((ctx.channels,) if ctx.channels > 1 else ()) + space
    u = torch.tensor(np.random.default_rng(0).standard_normal(shape))
    with torch.no_grad():
        a, b = net(u), live(u)
    assert torch.equal(a, b)  # same operations in the same order: bit for bit
    assert "tau <=" in cls.__doc__ or "Bound:    none" in cls.__doc__


def test_numbers_are_printed_exactly(tmp_path):
    text = ("pde odd\nparam k = 0.1 + 0.2\nfield u(x)\nequation dt(u) = k * dx(dx(u) / (1 + dx(u)^2))\n"
            "grid h = 0.3\nscheme explicit(tau = 0.01, steps = 3)\n")
    prog = pde2net.compile_text(text)
    src = prog.source()
    assert "k = 0.30000000000000004" in src or "k = 0.3" in src
    mod = import_source(src, tmp_path)
    u = torch.randn(2, 20, dtype=torch.float64)
    assert torch.equal(mod.Odd()(u), prog.module()(u))


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("stencil", ["forward", "backward", "central", "[-1/12, 4/3, -5/2, 4/3, -1/12] @ 2"])
def test_source_matches_live_for_every_boundary_and_stencil(boundary, stencil, tmp_path):
    text = (f"pde s\nparam lambda = 0.5\nfield u(x)\ndiffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n"
            f"equation dt(u) = -dxx(g(dxx(u)^2) * dxx(u))\nboundary {boundary}\nstencil {stencil}\n"
            f"scheme explicit(tau = 0.01, steps = 4)\n")
    prog = pde2net.compile_text(text)
    mod = import_source(prog.source(), tmp_path, f"g_{boundary}")
    u = torch.randn(3, 17, dtype=torch.float64)
    assert torch.equal(mod.S()(u), prog.module()(u))
