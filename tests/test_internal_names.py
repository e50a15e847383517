"""User names of every kind never reach the emitters' own names (issue 11, "what it must show").

tests/test_flux_emission.py renames PARAMS; here the FIELD (``field s(x)``), the FUNCTION
(``diffusivity s(s2) = ...``, functions called ``g``, ``torch``, ``flux``...) and the function's
ARGUMENT are renamed, in 1D (diffusivity and flux spellings) and 2D, for every scheme.  The
reference is the same spec with neutral names (field q, function dif, argument r): the live
module and the generated source must give the same numbers bit for bit, and TorchScript the same
numbers as the reference's TorchScript.  A name the language reserves is refused with a PdeError
naming line and column, never an internal error.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pde2net
from pde2net.errors import PdeError
from test_flux_emission import load_source

NAMES = ["s", "s2", "u", "v", "x", "y", "n", "g", "tau", "torch", "math", "F", "nn", "self", "T",
         "phi", "flux", "vx", "vy", "shifted_sum", "ieee_scalar", "where_zero", "G", "D", "L"]
RESERVED = {"flux"}  # the statement word; every other name here must compile
CORE = {"s", "s2", "u", "g", "tau", "torch", "flux", "self"}
ROLES = ("field", "function", "argument")
SCHEMES = {"explicit": "explicit(tau = 0.05, steps = 2)",
           "fed": "fed(tau_max = 0.1, cycle_length = 3, cycles = 1)",
           "fsi": "fsi(tau = 0.1, cycle_length = 3, cycles = 1)",
           "cg": "implicit(tau = 1, steps = 1, solver = cg, iterations = 3)",
           "jacobi": "implicit(tau = 1, steps = 1, solver = jacobi, iterations = 3)",
           "fixed_point": "implicit(tau = 0.05, steps = 1, solver = fixed_point, iterations = 3)"}
FORMS = ("diffusivity-1d", "flux-1d", "diffusivity-2d")


def spec(form: str, scheme: str, field: str = "q", fn: str = "dif", arg: str = "r") -> str:
    """Perona-Malik (lambda = 0.7, written with a param k) in the given spelling and names."""
    head = f"pde t\nparam k = 0.7\n"
    if form == "diffusivity-2d":
        return (f"{head}field {field}(x, y)\ndiffusivity {fn}({arg}) = 1 / (1 + {arg} / k^2)\n"
                f"equation dt({field}) = div({fn}(norm(grad({field}))^2) * grad({field}))\n"
                f"grid hx = 1, hy = 0.5\nscheme {SCHEMES[scheme]}\n")
    if form == "flux-1d":
        return (f"{head}field {field}(x)\nflux {fn}({arg}) = {arg} / (1 + {arg}^2 / k^2)\n"
                f"equation dt({field}) = dx({fn}(dx({field})))\nscheme {SCHEMES[scheme]}\n")
    return (f"{head}field {field}(x)\ndiffusivity {fn}({arg}) = 1 / (1 + {arg} / k^2)\n"
            f"equation dt({field}) = dx({fn}(dx({field})^2) * dx({field}))\nscheme {SCHEMES[scheme]}\n")


def inputs(form: str) -> torch.Tensor:
    rng = np.random.default_rng(3)
    shape = (2, 5, 6) if form.endswith("2d") else (2, 10)
    return torch.tensor(rng.standard_normal(shape))


_REF: dict = {}


def outputs(text: str, form: str, tmp_path, tag: str) -> list[torch.Tensor]:
    prog = pde2net.compile_text(text)
    u = inputs(form)
    with torch.no_grad():
        return [prog.module()(u), load_source(prog, tmp_path, f"names_{tag}")(u)]


def renamed(name: str, role: str) -> dict:
    if role == "field" and name in ("x", "y"):  # the space variables: a field cannot be called so
        return {}
    return {"field": name} if role == "field" else {"fn": name} if role == "function" else {"arg": name}


def check(name: str, role: str, form: str, scheme: str, tmp_path) -> None:
    kw = renamed(name, role)
    if not kw:
        return
    text = spec(form, scheme, **kw)
    key = (form, scheme)
    if key not in _REF:
        _REF[key] = outputs(spec(form, scheme), form, tmp_path, f"ref_{form}_{scheme}".replace("-", "_"))
    try:
        got = outputs(text, form, tmp_path, f"{role}_{abs(hash((name, form, scheme)))}")
    except PdeError as e:  # a statement word: refused with its place, never an internal error
        assert name in RESERVED and f"'{name}' is a reserved word" in str(e), (name, role, str(e))
        assert str(e).startswith("<string>:"), str(e)
        return
    assert name not in RESERVED, (name, role)
    for a, b in zip(got, _REF[key]):
        assert torch.isfinite(a).all() and torch.equal(a, b), (name, role, form, scheme)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", [n if n in CORE else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_names_cannot_reach_internal_names(name, role, form, tmp_path):
    check(name, role, form, "explicit", tmp_path)
    if name in ("s", "s2", "g", "G"):
        check(name, role, form, "fed", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", NAMES)
def test_names_every_scheme(name, role, form, scheme, tmp_path):
    check(name, role, form, scheme, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("field, fn, arg", [("s", "s2", "u"), ("s2", "g", "torch"), ("torch", "math", "tau"),
                                            ("g", "s", "v"), ("u", "tau", "s")])
@pytest.mark.parametrize("form", FORMS)
def test_names_torchscript(field, fn, arg, form, tmp_path):
    """TorchScript of the renamed spec (field, function and argument at once) gives the numbers
    of the reference spec's TorchScript."""
    from pde2net.export import export_torchscript

    u = inputs(form).float()
    outs = []
    for i, text in enumerate((spec(form, "explicit", field=field, fn=fn, arg=arg), spec(form, "explicit"))):
        net = pde2net.compile_text(text).module()
        ts = export_torchscript(net, str(tmp_path / f"n{i}.pt"), tuple(u.shape))
        with torch.no_grad():
            outs.append(torch.jit.load(ts.path)(u))
    assert torch.equal(outs[0], outs[1])
