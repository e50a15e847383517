"""Security: no user text is ever evaluated, generated source is built from validated identifiers
and printed numbers only, hostile names are renamed or refused, and bad run inputs are refused
with a message (exit 2)."""
from __future__ import annotations

import ast
import builtins
import importlib.util
import keyword
from pathlib import Path

import numpy as np
import pytest
import torch

import pde2net
from pde2net import cli
from pde2net.errors import PdeError

PACKAGE = Path(pde2net.__file__).resolve().parent
FORBIDDEN_CALLS = {"eval", "exec", "sympify", "parse_expr", "lambdify", "compile", "__import__"}
FORBIDDEN_IMPORTS = {"pickle", "marshal", "shelve", "dill"}
TEXT_PARSERS = {"sympify", "parse_expr", "lambdify"}


# ------------------------------------------------------------------- the package's AST
def _package_trees():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _called_name(call: ast.Call) -> tuple[str, str]:
    """(qualifier, name) of a call: ('', 'eval') for eval(...), ('sp', 'S') for sp.S(...)."""
    f = call.func
    if isinstance(f, ast.Name):
        return "", f.id
    if isinstance(f, ast.Attribute):
        base = f.value.id if isinstance(f.value, ast.Name) else ""
        return base, f.attr
    return "", ""


def test_package_never_evaluates_text():
    """Walks every module of the package: no eval/exec/compile/sympify/parse_expr/lambdify
    (``torch.compile`` of a module is not text), no ``sympy.S("...")``, no pickle."""
    offences = []
    for path, tree in _package_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                qual, name = _called_name(node)
                bare = isinstance(node.func, ast.Name)
                # module.eval() / re.compile / torch.compile are not text evaluation; the sympy
                # parsers are forbidden under any qualifier, the builtins under theirs
                if (bare and name in FORBIDDEN_CALLS) or name in TEXT_PARSERS or \
                        (qual == "builtins" and name in FORBIDDEN_CALLS):
                    offences.append(f"{path.name}:{node.lineno}: {qual + '.' if qual else ''}{name}(...)")
                if name == "S" and qual in ("sp", "sympy"):
                    offences.append(f"{path.name}:{node.lineno}: sympy.S(...) parses strings")
                if name == "load" and qual == "np":
                    pickle = [k for k in node.keywords if k.arg == "allow_pickle"]
                    if not pickle or not (isinstance(pickle[0].value, ast.Constant)
                                          and pickle[0].value.value is False):
                        offences.append(f"{path.name}:{node.lineno}: np.load without allow_pickle=False")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom)
                                                       and node.module else [])
                names = [a.name for a in node.names]
                if any(m.split(".")[0] in FORBIDDEN_IMPORTS for m in mods) or \
                        any(n in FORBIDDEN_CALLS - {"compile"} for n in names):
                    offences.append(f"{path.name}:{node.lineno}: imports {mods}")
    assert not offences, "\n".join(offences)


def test_the_ast_walk_catches_what_it_should():
    """The walker itself: planted offences are found (a check that cannot fail proves nothing)."""
    planted = "import sympy as sp\nsp.sympify(t)\neval(t)\nsp.S('x')\nfrom pickle import loads\n"
    tree = ast.parse(planted)
    calls = [_called_name(n) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert ("sp", "sympify") in calls and ("", "eval") in calls and ("sp", "S") in calls


# ------------------------------------------------------------------------ hostile names
HOSTILE = ("lambda", "class", "exec", "eval", "print", "open", "import", "self", "torch", "math",
           "phi", "pad_last", "F", "nn", "super", "int", "range", "float", "tuple", "zip", "getattr",
           "steps", "tau", "forward", "block", "W1", "W2", "Dt", "inner", "diffusivity_", "u", "v",
           "n", "x", "None", "True", "def", "return", "yield", "global", "os", "sys", "compile",
           "globals", "breakpoint", "staticmethod", "Hostile", "lambda_", "s2")
SCHEMES = {
    "explicit": "explicit(tau = 0.2, steps = 3)",
    "fed": "fed(tau_max = 0.5, cycle_length = 4, cycles = 2)",
    "fsi": "fsi(tau = 0.5, cycle_length = 4)",
    "implicit": "implicit(tau = 2, steps = 2, solver = jacobi, iterations = 5, omega = 0.5)",
    "multigrid": "multigrid(tau = 2, steps = 1)",
}


def hostile_spec(scheme: str, names=HOSTILE, pde: str = "exec", field: str = "object") -> str:
    params = "".join(f"param {p} = {0.1 + i / 100}\n" for i, p in enumerate(names))
    first = names[0]
    if scheme == "multigrid":  # linear only
        eq, fn = f"dt({field}) = {first} * dxx({field})", ""
    else:
        fn = f"diffusivity locals(vars) = 1 / (1 + vars / {first}^2)\n"
        eq = f"dt({field}) = dx( locals(dx({field})^2) * dx({field}) )"
    return (f"pde {pde}\n{params}field {field}(x)\n{fn}equation {eq}\nsize N = 33\n"
            f"scheme {SCHEMES[scheme]}\n")


def _shape(tree: ast.Module):
    """Imports, top-level defined names, builtins named, dunder attributes, non-docstring strings."""
    imports, defined, strings = set(), set(), set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            imports |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add(node.module or "")
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            raise AssertionError(f"unexpected top-level statement: {ast.unparse(node)[:80]}")
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            strings.add(node.value)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node not in tree.body:
            imports |= {a.name for a in node.names} | ({node.module} if isinstance(node, ast.ImportFrom) else set())
    named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    dunders = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("__")}
    return imports, defined, {b for b in named if hasattr(builtins, b)}, dunders, strings, named


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_hostile_names_are_renamed_in_generated_source(scheme, tmp_path):
    benign = pde2net.compile_text(hostile_spec(scheme, names=("k",), pde="benign", field="u"))
    hostile = pde2net.compile_text(hostile_spec(scheme))
    b_imp, b_def, b_builtins, b_dunder, b_strings, _ = _shape(ast.parse(benign.source()))
    src = hostile.source()
    tree = ast.parse(src)
    imports, defined, used_builtins, dunders, strings, named = _shape(tree)
    assert {i.split(".")[0] for i in imports} <= {"torch", "math"}
    # defines nothing but what the benign program defines, with its params and class renamed
    params = {n for n in defined - b_def if n != hostile.arch.class_name}
    assert defined - params - {hostile.arch.class_name} == b_def - {"k", benign.arch.class_name}
    assert len(params) == len(HOSTILE)  # every param emitted once, under its own safe name
    for p in params:
        assert not keyword.iskeyword(p) and not hasattr(builtins, p) and p.isidentifier()
    # names only the builtins the generator means to use, and no new strings or dunders
    assert used_builtins <= b_builtins, used_builtins - b_builtins
    assert dunders <= b_dunder | {"__init__"} and strings <= b_strings
    # the source runs (in this test, never in the package) and computes what the live module does
    path = tmp_path / "hostile_net.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("hostile_net", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = getattr(mod, hostile.arch.class_name)()
    x = torch.linspace(-1, 1, 33, dtype=torch.float64).sin()[None]
    want = hostile.module(dtype=torch.float64)(x)
    torch.testing.assert_close(net(x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("text, needle", [
    ("pde __evil\nfield u(x)\nequation dt(u) = dxx(u)\nscheme explicit(tau = 0.1)\n", "'__'"),
    ("pde a\nparam __k = 1\nfield u(x)\nequation dt(u) = dxx(u)\nscheme explicit(tau = 0.1)\n", "'__'"),
    ("pde a\nfield __u(x)\nequation dt(__u) = dxx(__u)\nscheme explicit(tau = 0.1)\n", "'__'"),
    ("pde a\ndiffusivity __g(s2) = 1\nfield u(x)\nequation dt(u) = dxx(u)\nscheme explicit(tau = 0.1)\n",
     "'__'"),
    ("pde a\nparam l\u0430mbda = 1\nfield u(x)\nequation dt(u) = dxx(u)\nscheme explicit(tau = 0.1)\n",
     "U+0430 CYRILLIC SMALL LETTER A"),
    ("pde a\nparam \u2113 = 1\nfield u(x)\nequation dt(u) = dxx(u)\nscheme explicit(tau = 0.1)\n",
     "U+2113"),
])
def test_dunder_and_lookalike_names_are_refused(text, needle):
    with pytest.raises(PdeError) as exc:
        pde2net.compile_text(text, "h.pde")
    msg = exc.value.format()
    assert needle in msg and msg.startswith("h.pde:") and "^" in msg


# --------------------------------------------------------------------------- run inputs
RUN_SPEC = "pde r\nfield u(x)\nequation dt(u) = dxx(u)\nsize N = 16\nscheme explicit(tau = 0.25, steps = 2)\n"


@pytest.mark.parametrize("data, needle", [
    (np.array([0.0, np.nan] + [1.0] * 14), "NaN or infinite"),
    (np.array([np.inf] * 16), "NaN or infinite"),
    (np.zeros((2, 3, 16, 16)), "shape"),  # no 1D layout has four axes
    (np.zeros(16, dtype=np.complex128), "real numeric array"),
    (np.zeros(16, dtype=bool), "real numeric array"),
    (np.array(["a"] * 16), "real numeric array"),
    (np.zeros(1), "points"),
])
def test_run_refuses_bad_inputs_with_exit_2(tmp_path, capsys, data, needle):
    spec_path, npy = tmp_path / "r.pde", tmp_path / "in.npy"
    spec_path.write_text(RUN_SPEC)
    np.save(npy, data)
    rc = cli.main(["run", str(spec_path), "--input", str(npy), "--dtype", "float64"])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err


def test_run_refuses_pickles_and_garbage(tmp_path, capsys):
    spec_path = tmp_path / "r.pde"
    spec_path.write_text(RUN_SPEC)
    pick = tmp_path / "obj.npy"
    np.save(pick, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x93NUMPY garbage")
    for path in (pick, junk, tmp_path / "missing.npy"):
        rc = cli.main(["run", str(spec_path), "--input", str(path)])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and "error" in err


def test_run_accepts_integer_inputs_and_matches_the_dense_reference(tmp_path, capsys):
    from reference import dense_difference, explicit_dense

    spec_path, npy, out = tmp_path / "r.pde", tmp_path / "in.npy", tmp_path / "out.npy"
    spec_path.write_text(RUN_SPEC)
    data = np.arange(16) % 3
    np.save(npy, data)
    assert cli.main(["run", str(spec_path), "--input", str(npy), "--output", str(out),
                     "--dtype", "float64"]) == 0
    d = dense_difference([-1, 1], 0, 16, "neumann")
    want = explicit_dense(data[None].astype(float), d, lambda s: s, 0.25, 2)[0]
    np.testing.assert_allclose(np.load(out), want, rtol=1e-13, atol=1e-13)
