"""Stage 2: :class:`~pde2net.parse.Spec` -> :class:`Model`, the PDE as sympy values.

Two passes.  :func:`check_spec` checks meaning (statements present once, names defined before
use, settings of the right kind) and raises :class:`PdeError` at the offending token.
:func:`build_model` then constructs sympy objects from the AST -- never from text -- and
recognises generalised nonlinear diffusion of order 2m,

    u_t = (-1)^(m+1) d^m( Phi(d^m u) )          (1D)
    u_t = div( g(|grad u|^2) grad u )            (2D, isotropic),

normalised to the order ``m`` and the flux ``Phi(s)`` (a constant factor absorbed, whatever its
sign: the sign of the normal form's flux decides forward or backward diffusion, not the spelling).
Derivatives of the field are kept as the undefined sympy functions ``dx(expr, k)``, ``dy``,
``grad``, ``div``, ``norm``, ``laplace`` so the recogniser can match them structurally.
"""
from __future__ import annotations

import cmath
import keyword
import math
import re
import sys
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Union

import sympy as sp

from . import parse as ast
from .errors import PdeError, Pos, Source, did_you_mean
from .operators import base as _base

if TYPE_CHECKING:  # networkx is imported when a graph is asked for (check prints the tree without it)
    import networkx as nx

# ------------------------------------------------------------------------------ vocabulary
STATEMENT_WORDS = frozenset(
    "pde param field diffusivity flux equation grid size boundary stencil scheme input tensor "
    "channels".split()
)
MATH_FUNCTIONS: dict[str, tuple[int, Callable[..., sp.Expr]]] = {
    "exp": (1, sp.exp), "log": (1, sp.log), "sqrt": (1, sp.sqrt), "abs": (1, sp.Abs),
    "tanh": (1, sp.tanh), "sin": (1, sp.sin), "cos": (1, sp.cos), "atan": (1, sp.atan),
    "min": (2, sp.Min), "max": (2, sp.Max),
}
OPERATOR_WORDS = frozenset({"dt", "grad", "div", "laplace", "norm", "gauss"})
#: the tensor constructors of ``tensor T = ...`` (docs/language.md, anisotropic diffusion)
TENSOR_WORDS = ("edge_enhancing", "coherence_enhancing")
_DERIV_RE = re.compile(r"^d(x+|y+|z+)$")
MAX_CHANNELS = 64

BOUNDARIES = ("neumann", "periodic", "dirichlet")
NAMED_STENCILS = ("forward", "backward", "central")
# scheme -> {key: kind}; kind "real" = positive real, "int" = positive integer, or a tuple of words
SCHEME_KEYS: dict[str, dict[str, Union[str, tuple[str, ...]]]] = {
    "explicit": {"tau": "real", "steps": "int", "time": "real"},
    "fed": {"tau_max": "real", "cycles": "int", "cycle_length": "int", "update": ("cycle", "step"),
            "time": "real"},
    "fsi": {"tau": "real", "cycles": "int", "cycle_length": "int", "update": ("cycle", "step"),
            "time": "real"},
    "implicit": {"tau": "real", "steps": "int", "solver": ("cg", "jacobi", "fixed_point"),
                 "iterations": "int", "omega": "real", "time": "real"},
    "multigrid": {"tau": "real", "steps": "int", "levels": "int", "pre": "int", "post": "int",
                  "cycles": "int", "time": "real"},
}
#: the step-size key of each scheme (``tau = auto`` is allowed there) and the key that counts
#: the outer steps (what ``time = T`` sets)
STEP_KEY = {"explicit": "tau", "fed": "tau_max", "fsi": "tau", "implicit": "tau", "multigrid": "tau"}
COUNT_KEY = {"explicit": "steps", "fed": "cycles", "fsi": "cycles", "implicit": "steps",
             "multigrid": "steps"}
AUTO = "auto"
SCHEME_REQUIRED = {
    "explicit": ("tau",), "fed": ("tau_max", "cycle_length"), "fsi": ("tau", "cycle_length"),
    "implicit": ("tau",), "multigrid": ("tau",),
}
SCHEME_DEFAULTS: dict[str, dict[str, object]] = {
    "explicit": {"steps": 1},
    "fed": {"cycles": 1, "update": "cycle"},
    "fsi": {"cycles": 1, "update": "cycle"},
    "implicit": {"steps": 1, "solver": "cg", "iterations": 20},
    "multigrid": {"steps": 1, "levels": 0, "pre": 2, "post": 2, "cycles": 1},
}
MAX_STEPS = 1_000_000
# A FED/FSI cycle of n steps has a largest step of about 0.2 n^2 tau_max, so beyond a few thousand
# rounding, not stability, is what limits it; ordering the steps (Leja) also costs O(n^2).
MAX_CYCLE_LENGTH = 2000
MAX_POINTS = 50_000_000
MAX_EXPONENT = 1000
MAX_DECIMAL_EXPONENT = 300
CONSTANT_SECONDS = 2.0  # to evaluate one constant expression
MAX_DEGREE = 64  # of the flux, after expanding powers: keeps every symbolic step bounded

# Derivative atoms of the equation.  Undefined functions keep the structure visible.
DX, DY = sp.Function("dx"), sp.Function("dy")
DZ, GAUSS = _base.DZ, _base.GAUSS
GRAD, DIV, NORM, LAPLACE = (sp.Function(n) for n in ("grad", "div", "norm", "laplace"))
S = sp.Symbol("s", real=True)  # the flux argument; params live in their own namespace below


def is_reserved(name: str) -> bool:
    """Statement words, math functions and derivative operators cannot name things."""
    return (name in STATEMENT_WORDS or name in MATH_FUNCTIONS or name in OPERATOR_WORDS
            or name in TENSOR_WORDS or bool(_DERIV_RE.match(name)))


def param_symbol(name: str) -> sp.Symbol:
    """Params get their own symbols (a trailing marker in sympy's name) so that a param called
    ``s`` can never collide with the flux argument."""
    return sp.Symbol(f"{name}'", real=True)


# ------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class Setting:
    """One scheme setting: its value (sympy number or a word) and where it was written."""

    value: Union[sp.Expr, str, int]
    pos: Optional[Pos]


@dataclass(frozen=True)
class StencilChoice:
    """The ``stencil`` statement: a named kind, or explicit weights (unscaled) and offset."""

    kind: str  # forward / backward / central / weights
    weights: tuple[sp.Expr, ...] = ()
    offset: int = 0
    pos: Optional[Pos] = None


@dataclass(frozen=True)
class LearnedChoice:
    """``stencil learned(size = K, filters = F)`` and, if written,
    ``diffusivity g(s2) = learned(knots = N, L = EXPR, s_max = EXPR)``: the spec compiles to a
    trainable stable filter-bank network (docs/theory.md §13)."""

    size: int
    filters: int
    diffusivity: Optional[str] = None  # the learned diffusivity's name, None: the fixed flux
    knots: int = 16
    L: sp.Expr = sp.Integer(1)
    s_max: sp.Expr = sp.Integer(3)
    pos: Optional[Pos] = None


#: keys of the learned forms: key -> (kind, default); "int" positive integer up to the limit
LEARNED_STENCIL_KEYS: dict[str, tuple[str, object]] = {"size": ("int", 3), "filters": ("int", 8)}
LEARNED_DIFFUSIVITY_KEYS: dict[str, tuple[str, object]] = {
    "knots": ("int", 16), "L": ("real", sp.Integer(1)), "s_max": ("real", sp.Integer(3))}
LEARNED_LIMITS = {"size": 15, "filters": 1024, "knots": 1024}
LEARNED = "learned"
#: the learned diffusivity inside the sympy model: an undefined function of s^2 (never lowered
#: to an op tree; the network evaluates its own parametrised g)
LEARNED_G = sp.Function("learned'g")


@dataclass(frozen=True)
class Model:
    """The PDE in normal form ``u_t = -D* Phi(D u)`` with D = d^m (1D) or grad (2D).

    ``flux`` is Phi(s) with params as symbols (``params`` gives their values); for 2D it is the
    radial profile ``g(s^2) s`` of the vector flux ``g(|v|^2) v``.
    """

    name: str
    field: str
    dims: tuple[str, ...]
    order: int
    flux: sp.Expr
    params: dict[str, sp.Expr]
    param_symbols: dict[str, sp.Symbol]
    diffusivity: Optional[str]
    linear: bool
    factor: sp.Expr
    rhs: sp.Expr
    equation_text: str
    grid: tuple[sp.Expr, ...]
    size: Optional[tuple[int, ...]]
    boundary: Union[str, tuple[str, ...]]  # one kind, or one per space axis (x first)
    stencil: StencilChoice
    scheme: str
    settings: dict[str, Setting]
    source: Source
    positions: dict[str, Pos] = dc_field(default_factory=dict)
    learned: Optional["LearnedChoice"] = None  # a learned stencil bank (and diffusivity)
    #: the operator model (docs/theory.md §9-12): set for every version-2 form (sums of terms,
    #: data and reaction terms, presmoothing, tensors, colour, 3D); None for the scalar model above
    operator: Optional[_base.OperatorSpec] = None
    channels: int = 1
    inputs: tuple[str, ...] = ()

    @property
    def ndim(self) -> int:
        return len(self.dims)

    @property
    def flux_value(self) -> sp.Expr:
        """Phi(s) with every param replaced by its exact value."""
        return self.flux.xreplace({self.param_symbols[k]: v for k, v in self.params.items()})

    def setting(self, key: str):
        s = self.settings.get(key)
        return None if s is None else s.value

    def error(self, message: str, where: str, expected: Optional[str] = None) -> PdeError:
        """A PdeError at the statement or setting named ``where`` (e.g. ``"scheme"``, ``"tau"``)."""
        pos = self.settings[where].pos if where in self.settings else self.positions.get(where)
        return PdeError(message, pos, self.source, expected)


# ------------------------------------------------------------------ pass 1: the semantic check
@dataclass
class _Defs:
    """What the semantic pass collected, in source order."""

    pde: Optional[ast.PdeStmt] = None
    field: Optional[ast.FieldStmt] = None
    equation: Optional[ast.EquationStmt] = None
    scheme: Optional[ast.SchemeStmt] = None
    grid: Optional[ast.GridStmt] = None
    size: Optional[ast.SizeStmt] = None
    boundary: Optional[ast.BoundaryStmt] = None
    stencil: Optional[ast.StencilStmt] = None
    params: list[ast.ParamStmt] = dc_field(default_factory=list)
    functions: list[ast.FunctionStmt] = dc_field(default_factory=list)
    inputs: list[ast.InputStmt] = dc_field(default_factory=list)
    tensors: list[ast.TensorStmt] = dc_field(default_factory=list)


_SINGLE = {
    ast.PdeStmt: "pde", ast.FieldStmt: "field", ast.EquationStmt: "equation",
    ast.SchemeStmt: "scheme", ast.GridStmt: "grid", ast.SizeStmt: "size",
    ast.BoundaryStmt: "boundary", ast.StencilStmt: "stencil",
}
_REQUIRED = ("pde", "field", "equation", "scheme")
_EXAMPLE = {
    "pde": "pde heat", "field": "field u(x)", "equation": "equation dt(u) = dxx(u)",
    "scheme": "scheme explicit(tau = 0.25, steps = 100)",
}


def check_spec(spec: ast.Spec) -> ast.Spec:
    """The semantic pass: returns the spec unchanged, or raises at the first problem."""
    src = spec.source
    defs = _Defs()
    defined: dict[str, tuple[str, Pos]] = {}  # name -> (what, where)

    def define(ident: ast.Ident, what: str) -> None:
        _check_name(ident, src)
        if ident.text in defined:
            kind, where = defined[ident.text]
            raise PdeError(f"'{ident.text}' is already defined as a {kind} on line {where.line}",
                           ident.pos, src, "a new name")
        defined[ident.text] = (what, ident.pos)

    for st in spec.statements:
        if isinstance(st, ast.PdeStmt) and st.name.text.startswith("__"):  # docs/language.md: refused
            raise PdeError(f"names starting with '__' are not allowed ('{st.name.text}')", st.name.pos,
                           src, "a name of ASCII letters, digits and '_' not starting with '__'")
        key = _SINGLE.get(type(st))
        if key is not None:
            prev = getattr(defs, key)
            if prev is not None:
                raise PdeError(f"a second '{key}' statement (the first is on line {prev.pos.line})",
                               st.pos, src, f"exactly one '{key}' statement")
            setattr(defs, key, st)
        if isinstance(st, ast.ParamStmt):
            _check_expr(st.value, src, set(_names(defined, "param")), {}, allow_deriv=False)
            define(st.name, "param")
            defs.params.append(st)
        elif isinstance(st, ast.FunctionStmt):
            define(st.name, st.kind)
            _check_name(st.arg, src)
            if st.arg.text in defined:
                raise PdeError(f"the argument '{st.arg.text}' hides the {defined[st.arg.text][0]} "
                               f"of the same name", st.arg.pos, src, "a fresh argument name")
            funcs = {f.name.text: f for f in defs.functions}
            if isinstance(st.body, ast.LearnedBody):
                _check_learned_bindings(st.body.func, st.body.bindings, LEARNED_DIFFUSIVITY_KEYS,
                                        "diffusivity g(s2) = learned(knots = 16, L = 1)",
                                        set(_names(defined, "param")), src)
            else:
                _check_not_learned_call(st.body, src)
                _check_expr(st.body, src, set(_names(defined, "param")) | {st.arg.text}, funcs,
                            allow_deriv=False)
            defs.functions.append(st)
        elif isinstance(st, ast.FieldStmt):
            define(st.name, "field")
            _check_dims(st, src)
            if st.channels is not None:
                _check_expr(st.channels, src, set(_names(defined, "param")), {}, allow_deriv=False)
        elif isinstance(st, ast.InputStmt):
            define(st.name, "input")
            _check_input(st, defs, src)
            defs.inputs.append(st)
        elif isinstance(st, ast.TensorStmt):
            define(st.name, "tensor")
            _check_tensor(st, defs, defined, src)
            defs.tensors.append(st)
        elif isinstance(st, ast.EquationStmt):
            _check_equation(st, defs, defined, src)
    for key in _REQUIRED:
        if getattr(defs, key) is None:
            raise PdeError(f"missing '{key}' statement", None, src,
                           f"a line such as '{_EXAMPLE[key]}'")
    _check_settings(defs, defined, src)
    return spec


def _names(defined: dict[str, tuple[str, Pos]], what: str) -> list[str]:
    return [n for n, (k, _) in defined.items() if k == what]


def _check_name(ident: ast.Ident, src: Source) -> None:
    if ident.text.startswith("__"):
        raise PdeError(f"names starting with '__' are not allowed ('{ident.text}')", ident.pos, src,
                       "a name of ASCII letters, digits and '_' not starting with '__'")
    if is_reserved(ident.text):
        raise PdeError(f"'{ident.text}' is a reserved word", ident.pos, src,
                       "a name that is not a statement word, math function or derivative operator")


def _check_dims(st: Union[ast.FieldStmt, ast.InputStmt], src: Source) -> None:
    dims = tuple(d.text for d in st.dims)
    if dims not in (("x",), ("x", "y"), ("x", "y", "z")):
        bad = next((d for d, want in zip(st.dims, "xyz") if d.text != want), st.dims[-1])
        raise PdeError(f"space variables ({', '.join(dims)}) are not supported", bad.pos, src,
                       "field NAME(x), field NAME(x, y) or field NAME(x, y, z)")


def _check_input(st: ast.InputStmt, defs: "_Defs", src: Source) -> None:
    """``input f(x, y)``: after the field, with the field's space variables."""
    if defs.field is None:
        raise PdeError("the input comes before the 'field' statement", st.pos, src,
                       "'field u(x, y)' on an earlier line")
    want = tuple(d.text for d in defs.field.dims)
    if tuple(d.text for d in st.dims) != want:
        raise PdeError(f"the input '{st.name.text}' must have the field's space variables "
                       f"({', '.join(want)})", st.pos, src, f"input {st.name.text}({', '.join(want)})")


_TENSOR_EXAMPLES = ("tensor T = edge_enhancing(g, grad(gauss(u, sigma)))",
                    "tensor T = coherence_enhancing(gauss(u, sigma), rho, alpha, C)",
                    "tensor T = [[a, b], [b, c]]")


def _check_tensor(st: ast.TensorStmt, defs: "_Defs", defined, src: Source) -> None:
    """``tensor T = edge_enhancing(g, v) | coherence_enhancing(w, rho, alpha, C) | [[a, b], [b, c]]``
    after the field, in 2D; every expression over params and the field (derivatives allowed)."""
    expected = " or ".join(f"'{e}'" for e in _TENSOR_EXAMPLES)
    if defs.field is None:
        raise PdeError("the tensor comes before the 'field' statement", st.pos, src,
                       "'field u(x, y)' on an earlier line")
    if len(defs.field.dims) != 2:
        raise PdeError("diffusion tensors need a 2D field", st.pos, src, "field u(x, y)")
    names = set(_names(defined, "param")) | {defs.field.name.text}
    funcs = {f.name.text: f for f in defs.functions}
    v = st.value
    if isinstance(v, ast.Matrix):
        if len(v.rows) != 2 or any(len(r) != 2 for r in v.rows):
            raise PdeError("a diffusion tensor is a symmetric 2 x 2 matrix", v.pos, src, "[[a, b], [b, c]]")
        for row in v.rows:
            for e in row:
                _check_expr(e, src, names, funcs, allow_deriv=True, ndim=2)
        return
    if not (isinstance(v, ast.Call) and v.func in TENSOR_WORDS):
        raise PdeError("unknown tensor", getattr(v, "pos", st.pos), src, expected)
    if v.func == "edge_enhancing":
        if len(v.args) != 2 or not isinstance(v.args[0], ast.Name):
            raise PdeError("edge_enhancing takes a diffusivity's name and a vector", v.pos, src,
                           _TENSOR_EXAMPLES[0])
        g = v.args[0]
        if g.id not in funcs or funcs[g.id].kind != "diffusivity" or \
                isinstance(funcs[g.id].body, ast.LearnedBody):
            raise PdeError(f"'{g.id}' is not a diffusivity defined before", g.pos, src,
                           "a line 'diffusivity g(s2) = ...' before the tensor")
        _check_expr(v.args[1], src, names, funcs, allow_deriv=True, ndim=2)
        return
    if len(v.args) != 4:
        raise PdeError(f"coherence_enhancing takes 4 arguments, got {len(v.args)}", v.pos, src,
                       _TENSOR_EXAMPLES[1])
    _check_expr(v.args[0], src, names, funcs, allow_deriv=True, ndim=2)
    for a in v.args[1:]:
        _check_expr(a, src, set(_names(defined, "param")), {}, allow_deriv=False)


def _check_equation(st: ast.EquationStmt, defs: _Defs, defined, src: Source) -> None:
    if st.lhs_op.text != "dt":
        raise PdeError(f"the left side must be dt(FIELD), not {st.lhs_op.text}(...)", st.lhs_op.pos,
                       src, "equation dt(u) = ...")
    if defs.field is None:
        raise PdeError("the equation comes before the 'field' statement", st.pos, src,
                       "'field u(x)' on an earlier line")
    if st.lhs_field.text != defs.field.name.text:
        raise PdeError(f"dt({st.lhs_field.text}) is not the field '{defs.field.name.text}'",
                       st.lhs_field.pos, src, f"dt({defs.field.name.text})")
    funcs = {f.name.text: f for f in defs.functions}
    names = set(_names(defined, "param")) | set(_names(defined, "input")) | set(_names(defined, "tensor"))
    _check_expr(st.rhs, src, names | {defs.field.name.text}, funcs,
                allow_deriv=True, ndim=len(defs.field.dims))


def _check_expr(e: ast.Expr, src: Source, names: set[str], funcs: dict[str, ast.FunctionStmt],
                allow_deriv: bool, ndim: int = 1) -> None:
    """Names defined, calls known with the right number of arguments, derivatives where allowed."""
    if isinstance(e, ast.Num):
        return
    if isinstance(e, ast.Name):
        if e.id not in names:
            raise PdeError(f"undefined name '{e.id}'", e.pos, src, did_you_mean(e.id, names))
        return
    if isinstance(e, ast.BinOp):
        _check_expr(e.left, src, names, funcs, allow_deriv, ndim)
        _check_expr(e.right, src, names, funcs, allow_deriv, ndim)
        return
    if isinstance(e, ast.Neg):
        _check_expr(e.operand, src, names, funcs, allow_deriv, ndim)
        return
    if isinstance(e, ast.Matrix):
        raise PdeError("a matrix is allowed only as a tensor's value", e.pos, src,
                       "tensor T = [[a, b], [b, c]]")
    assert isinstance(e, ast.Call)
    f = e.func
    if f in MATH_FUNCTIONS:
        want = MATH_FUNCTIONS[f][0]
    elif f in funcs:
        want = 1
    elif f in TENSOR_WORDS:
        raise PdeError(f"'{f}(...)' defines a tensor", e.pos, src, _TENSOR_EXAMPLES[0])
    elif f == "gauss":
        if not allow_deriv:
            raise PdeError("gauss(...) outside the equation or a tensor", e.pos, src,
                           "gauss(u, sigma) inside a diffusivity's argument")
        if len(e.args) != 2:
            raise PdeError(f"'gauss' takes 2 arguments, got {len(e.args)}", e.pos, src, "gauss(u, sigma)")
        _check_expr(e.args[0], src, names, funcs, allow_deriv, ndim)
        _check_expr(e.args[1], src, names, funcs, False, ndim)
        return
    elif _DERIV_RE.match(f) or f in ("grad", "div", "laplace", "norm", "dt"):
        if f == "dt":
            raise PdeError("dt(...) may appear only on the left side", e.pos, src,
                           "space derivatives on the right side")
        if not allow_deriv:
            raise PdeError(f"derivative '{f}' outside the equation", e.pos, src,
                           "derivatives only in the 'equation' statement")
        if ndim == 1 and (f.startswith("dy") or f in ("grad", "div", "laplace", "norm")):
            raise PdeError(f"'{f}' needs a 2D field", e.pos, src,
                           "dx, dxx, ... for a field u(x); or declare field u(x, y)")
        if ndim < 3 and f.startswith("dz"):
            raise PdeError(f"'{f}' needs a 3D field", e.pos, src, "field u(x, y, z)")
        want = 1
    else:
        derivs = {"dx", "dxx"} | ({"dy", "dyy", "grad", "div", "laplace", "norm", "gauss"} if ndim >= 2
                                  else set()) | ({"dz", "dzz"} if ndim == 3 else set())
        known = set(MATH_FUNCTIONS) | set(funcs) | (derivs if allow_deriv else set())
        raise PdeError(f"unknown function '{f}'", e.pos, src, did_you_mean(f, known))
    if len(e.args) != want:
        raise PdeError(f"'{f}' takes {want} argument{'s' if want > 1 else ''}, got {len(e.args)}",
                       e.pos, src, f"{f}({', '.join(['x', 'y'][:want])})")
    for a in e.args:
        _check_expr(a, src, names, funcs, allow_deriv, ndim)


def _check_boundary(stmt: ast.BoundaryStmt, dims: tuple[ast.Ident, ...], src: Source,
                    params: set[str] = frozenset()) -> None:
    """``boundary KIND`` or ``boundary x: KIND, y: KIND``: known kinds, each axis a space
    variable of the field and given at most once (an axis left out is neumann); a value only
    as ``dirichlet(value = EXPR)``."""
    kinds = [stmt.kind] if stmt.kind is not None else [k for _, k in stmt.axes]
    for kind, b in zip(kinds, stmt.values):
        if b is None:
            continue
        if kind.text != "dirichlet":
            raise PdeError(f"a boundary value belongs to dirichlet, not {kind.text}", b.name.pos, src,
                           "boundary dirichlet(value = 1)")
        if b.name.text != "value":
            raise PdeError(f"'{b.name.text}' is not a setting of dirichlet(...)", b.name.pos, src,
                           "boundary dirichlet(value = 1)")
        _check_expr(b.value, src, set(params), {}, allow_deriv=False)
    if stmt.kind is not None:
        k = stmt.kind
        if k.text not in BOUNDARIES:
            raise PdeError(f"unknown boundary '{k.text}'", k.pos, src, did_you_mean(k.text, BOUNDARIES))
        return
    names = [d.text for d in dims]
    seen: set[str] = set()
    for axis, kind in stmt.axes:
        if axis.text not in names:
            raise PdeError(f"unknown axis '{axis.text}' in the boundary: the field's space variables "
                           f"are {', '.join(names)}", axis.pos, src, did_you_mean(axis.text, names))
        if axis.text in seen:
            raise PdeError(f"the boundary of axis '{axis.text}' is given twice", axis.pos, src,
                           "each axis at most once, e.g. 'boundary x: periodic, y: neumann'")
        seen.add(axis.text)
        if kind.text not in BOUNDARIES:
            raise PdeError(f"unknown boundary '{kind.text}' for axis '{axis.text}'", kind.pos, src,
                           did_you_mean(kind.text, BOUNDARIES))


def boundary_kinds(stmt: Optional[ast.BoundaryStmt], dims: tuple[str, ...]) -> Union[str, tuple[str, ...]]:
    """The model's boundary: one kind (``boundary KIND``, default neumann), or a kind per space
    axis in the field's order (``boundary x: periodic, y: neumann``; an axis left out is neumann)."""
    if stmt is None:
        return "neumann"
    if stmt.kind is not None:
        return stmt.kind.text
    given = {axis.text: kind.text for axis, kind in stmt.axes}
    kinds = tuple(given.get(d, "neumann") for d in dims)
    return kinds[0] if len(set(kinds)) == 1 else kinds


def dirichlet_value(stmt: Optional[ast.BoundaryStmt], src: Source, values: dict) -> Optional[sp.Expr]:
    """The value b of ``dirichlet(value = b)`` (u = b outside the domain), None when every
    Dirichlet side is homogeneous.  One value for the whole boundary: the network evolves
    u - b under the homogeneous problem (docs/theory.md §12), which needs a single b."""
    if stmt is None:
        return None
    kinds = [stmt.kind] if stmt.kind is not None else [k for _, k in stmt.axes]
    got = [(_constant(b.value, src, values, "the boundary value") if b is not None else sp.Integer(0), b)
           for kind, b in zip(kinds, stmt.values) if kind.text == "dirichlet"]
    distinct = {v for v, _ in got}
    if len(distinct) > 1:
        where = next(b for _, b in got if b is not None)
        raise PdeError("the Dirichlet sides have different values", where.value.pos, src,
                       "one value for every Dirichlet side (an unset side is 0)")
    value = next(iter(distinct), sp.Integer(0))
    if not value.is_real:
        where = next(b for _, b in got if b is not None)
        raise PdeError(f"the boundary value {value} is not a real number", where.value.pos, src, "a real number")
    return None if value == 0 else value


def _check_settings(defs: _Defs, defined, src: Source) -> None:
    ndim = len(defs.field.dims)
    params = set(_names(defined, "param"))
    if defs.boundary:
        _check_boundary(defs.boundary, defs.field.dims, src, params)
    learned = _check_learned_stencil(defs, params, src)
    named = defs.stencil and defs.stencil.kind and not learned and defs.stencil.bindings is None
    if named and defs.stencil.kind.text not in NAMED_STENCILS + (ANISOTROPIC,):
        k = defs.stencil.kind
        raise PdeError(f"unknown stencil '{k.text}'", k.pos, src,
                       did_you_mean(k.text, NAMED_STENCILS) + " or a weight list '[w0, ...] @ OFFSET'")
    for stmt, allowed in ((defs.grid, ("h",) if ndim == 1 else ("h", "hx", "hy", "hz")[:ndim + 1]),
                          (defs.size, ("N",) if ndim == 1 else ("NX", "NY", "NZ")[:ndim])):
        if stmt is None:
            continue
        seen: set[str] = set()
        for b in stmt.bindings:
            if b.name.text not in allowed:
                raise PdeError(f"unknown setting '{b.name.text}' for a {ndim}D field", b.name.pos,
                               src, did_you_mean(b.name.text, allowed))
            if b.name.text in seen:
                raise PdeError(f"'{b.name.text}' is given twice", b.name.pos, src, "each setting once")
            seen.add(b.name.text)
            _check_expr(b.value, src, params, {}, allow_deriv=False)
        if "h" in seen and len(seen) > 1:
            raise PdeError("give either h or hx and hy", stmt.pos, src, "grid h = 1 or grid hx = 1, hy = 1")
    if defs.size is not None and ndim >= 2 and len(defs.size.bindings) != ndim:
        want = ", ".join(f"N{a} = 64" for a in "XYZ"[:ndim])
        raise PdeError(f"a {ndim}D size needs {' and '.join('N' + a for a in 'XYZ'[:ndim])}",
                       defs.size.pos, src, f"size {want}")
    if defs.stencil and defs.stencil.kind is None:
        for w in defs.stencil.weights + (defs.stencil.offset,):
            _check_expr(w, src, params, {}, allow_deriv=False)
    sch = defs.scheme
    kind = sch.kind.text
    if kind not in SCHEME_KEYS:
        raise PdeError(f"unknown scheme '{kind}'", sch.kind.pos, src, did_you_mean(kind, SCHEME_KEYS))
    keys = SCHEME_KEYS[kind]
    given: set[str] = set()
    for b in sch.bindings:
        k = b.name.text
        if k not in keys:
            raise PdeError(f"'{k}' is not a setting of the {kind} scheme", b.name.pos, src,
                           did_you_mean(k, keys))
        if k in given:
            raise PdeError(f"'{k}' is given twice", b.name.pos, src, "each setting once")
        given.add(k)
        if _is_auto(b.value, k, kind, params):
            continue
        if isinstance(keys[k], tuple):
            if not (isinstance(b.value, ast.Name) and b.value.id in keys[k]):
                pos = getattr(b.value, "pos", b.name.pos)
                word = b.value.id if isinstance(b.value, ast.Name) else "an expression"
                raise PdeError(f"'{word}' is not a valid {k}", pos, src, did_you_mean(
                    b.value.id if isinstance(b.value, ast.Name) else "", keys[k]))
        else:
            _check_expr(b.value, src, params, {}, allow_deriv=False)
    if "time" in given and COUNT_KEY[kind] in given:
        b = next(b for b in sch.bindings if b.name.text == "time")
        raise PdeError(f"give either '{COUNT_KEY[kind]}' or 'time', not both", b.name.pos, src,
                       f"scheme {kind}(..., time = T) or scheme {kind}(..., {COUNT_KEY[kind]} = N)")
    if learned:
        _check_learned_scheme(defs, src)
        return
    for k in SCHEME_REQUIRED[kind]:
        if k not in given:
            example = ", ".join(f"{r} = ..." for r in SCHEME_REQUIRED[kind])
            raise PdeError(f"the {kind} scheme needs '{k}'", sch.pos, src, f"scheme {kind}({example})")


# ------------------------------------------------------------------ the learned forms
def _check_learned_bindings(func: ast.Ident, bindings: tuple[ast.Binding, ...],
                            keys: dict[str, tuple[str, object]], example: str, params: set[str],
                            src: Source) -> None:
    """``learned(key = value, ...)``: the word ``learned``, known keys, each once, values over
    params (their kinds are checked when the values are built)."""
    if func.text != LEARNED:
        raise PdeError(f"unknown learned form '{func.text}(...)'", func.pos, src,
                       did_you_mean(func.text, [LEARNED]) + f" (e.g. '{example}')")
    seen: set[str] = set()
    for b in bindings:
        if b.name.text not in keys:
            raise PdeError(f"'{b.name.text}' is not a setting of learned(...)", b.name.pos, src,
                           did_you_mean(b.name.text, keys))
        if b.name.text in seen:
            raise PdeError(f"'{b.name.text}' is given twice", b.name.pos, src, "each setting once")
        seen.add(b.name.text)
        _check_expr(b.value, src, params, {}, allow_deriv=False)


def _check_not_learned_call(e: ast.Expr, src: Source) -> None:
    """``learned(16, 1)`` (positional) is a call of an unknown function: say how to write it."""
    if isinstance(e, ast.Call) and e.func == LEARNED:
        raise PdeError("learned(...) takes settings NAME = VALUE", e.pos, src,
                       "diffusivity g(s2) = learned(knots = 16, L = 1)")


def _check_learned_stencil(defs: "_Defs", params: set[str], src: Source) -> bool:
    """Checks ``stencil learned(...)`` and the forms around it; True when the spec has one.
    A learned diffusivity without a learned bank, and settings in parentheses on another
    stencil, are refused here."""
    st = defs.stencil
    learned_g = [f for f in defs.functions if isinstance(f.body, ast.LearnedBody)]
    if st is not None and st.kind is not None and st.bindings is not None and \
            st.kind.text == ANISOTROPIC:
        _check_anisotropic_stencil(st, params, src)
        return False
    if st is not None and st.kind is not None and st.bindings is not None:
        if st.kind.text != LEARNED:
            raise PdeError(f"stencil '{st.kind.text}' takes no settings", st.kind.pos, src,
                           did_you_mean(st.kind.text, [LEARNED, ANISOTROPIC, *NAMED_STENCILS])
                           + " (settings only for 'stencil learned(size = 3, filters = 8)' and "
                           "'stencil anisotropic(delta = 0.5)')")
        _check_learned_bindings(st.kind, st.bindings, LEARNED_STENCIL_KEYS,
                                "stencil learned(size = 3, filters = 8)", params, src)
        if len(learned_g) > 1:
            raise PdeError("a second learned diffusivity", learned_g[1].pos, src,
                           "one learned diffusivity per spec")
        return True
    if st is not None and st.kind is not None and st.kind.text == LEARNED:
        raise PdeError("a learned stencil needs its settings", st.kind.pos, src,
                       "stencil learned(size = 3, filters = 8)")
    if learned_g:
        raise PdeError(f"the learned diffusivity '{learned_g[0].name.text}' needs a learned "
                       f"stencil bank", learned_g[0].body.pos, src,
                       "a line 'stencil learned(size = 3, filters = 8)' (and 'boundary dirichlet')")
    return False


ANISOTROPIC = "anisotropic"


def _check_anisotropic_stencil(st: ast.StencilStmt, params: set[str], src: Source) -> None:
    """``stencil anisotropic(delta = EXPR)``: the directional-splitting parameter only."""
    seen: set[str] = set()
    for b in st.bindings:
        if b.name.text != "delta":
            raise PdeError(f"'{b.name.text}' is not a setting of anisotropic(...)", b.name.pos, src,
                           "stencil anisotropic(delta = 0.5)")
        if b.name.text in seen:
            raise PdeError("'delta' is given twice", b.name.pos, src, "each setting once")
        seen.add(b.name.text)
        _check_expr(b.value, src, params, {}, allow_deriv=False)


def _check_learned_scheme(defs: "_Defs", src: Source) -> None:
    """A learned bank is the explicit scheme ``u <- u - tau W^T Phi(W u)`` with depth = steps and
    tau parametrised (docs/theory.md §13): no other scheme, tau absent or ``auto``, no ``time``;
    zero padding, so the boundary must be dirichlet on every axis (reflect or replicate padding
    would break the adjoint)."""
    sch = defs.scheme
    if sch.kind.text != "explicit":
        raise PdeError(f"a learned stencil bank needs the explicit scheme, not '{sch.kind.text}'",
                       sch.kind.pos, src, "scheme explicit(steps = N)")
    for b in sch.bindings:
        if b.name.text == "time":
            raise PdeError("a learned network has no stopping time (its step is learned)",
                           b.name.pos, src, "scheme explicit(steps = N)")
        if b.name.text == "tau" and not (isinstance(b.value, ast.Name) and b.value.id == AUTO):
            raise PdeError("the step of a learned bank is parametrised, tau = theta 2/(L B(W)) "
                           "with theta < 1, so that tau L B(W) < 2 for every parameter value",
                           getattr(b.value, "pos", b.name.pos), src, "tau = auto, or no tau")
    kinds = boundary_kinds(defs.boundary, tuple(d.text for d in defs.field.dims))
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    if any(k != "dirichlet" for k in kinds):
        where = defs.boundary.pos if defs.boundary is not None else defs.stencil.pos
        raise PdeError("a learned stencil bank uses zero padding: its transposed conv is the exact "
                       "adjoint only with 'boundary dirichlet' (reflect / replicate padding break "
                       "the adjoint, docs/theory.md §13)", where, src, "boundary dirichlet")


def _learned_choice(spec: ast.Spec, src: Source, values: dict[str, sp.Expr]
                    ) -> Optional[LearnedChoice]:
    """The checked values of the learned forms (None when the spec has no learned bank)."""
    st = next((s for s in spec.statements if isinstance(s, ast.StencilStmt)), None)
    if st is None or st.bindings is None or (st.kind is not None and st.kind.text == ANISOTROPIC):
        return None
    got = _learned_values(st.bindings, LEARNED_STENCIL_KEYS, src, values, "stencil learned")
    g = next((f for f in spec.statements
              if isinstance(f, ast.FunctionStmt) and isinstance(f.body, ast.LearnedBody)), None)
    if g is None:
        return LearnedChoice(got["size"], got["filters"], pos=st.pos)
    gv = _learned_values(g.body.bindings, LEARNED_DIFFUSIVITY_KEYS, src, values, "learned")
    return LearnedChoice(got["size"], got["filters"], g.name.text, gv["knots"], gv["L"],
                         gv["s_max"], st.pos)


def _learned_values(bindings: tuple[ast.Binding, ...], keys: dict[str, tuple[str, object]],
                    src: Source, values: dict[str, sp.Expr], what: str) -> dict[str, object]:
    out = {k: default for k, (_, default) in keys.items()}
    for b in bindings:
        k = b.name.text
        if keys[k][0] == "int":
            out[k] = _positive_int(b.value, src, values, f"{what} {k}", LEARNED_LIMITS[k])
        else:
            out[k] = _positive(b.value, src, values, f"{what} {k}")
    if "knots" in out and out["knots"] < 2:
        b = next(b for b in bindings if b.name.text == "knots")
        raise PdeError(f"knots must be at least 2, got {out['knots']}", b.value.pos, src,
                       "knots = 2, 3, ...")
    return out


# ------------------------------------------------------------- pass 2: AST -> sympy objects
class _Builder:
    """Constructs sympy expressions from AST nodes (no text is ever parsed by sympy)."""

    def __init__(self, src: Source, scope: dict[str, sp.Expr],
                 funcs: dict[str, tuple[sp.Symbol, sp.Expr]], field_sym: Optional[sp.Symbol] = None):
        self.src, self.scope, self.funcs, self.field_sym = src, scope, funcs, field_sym

    def __call__(self, e: ast.Expr) -> sp.Expr:
        if isinstance(e, ast.Num):
            return _number(e, self.src)
        if isinstance(e, ast.Name):
            return self.scope[e.id]
        v = self._build(e)
        if v.is_number and not v.is_Rational and _float_magnitude(v) > 10.0 ** MAX_DECIMAL_EXPONENT:
            raise PdeError("number too large", e.pos, self.src,
                           f"values between 1e-{MAX_DECIMAL_EXPONENT} and 1e{MAX_DECIMAL_EXPONENT}")
        return v

    def _build(self, e: ast.Expr) -> sp.Expr:
        if isinstance(e, ast.Neg):
            return -self(e.operand)
        if isinstance(e, ast.BinOp):
            a, b = self(e.left), self(e.right)
            if e.op == "+":
                return a + b
            if e.op == "-":
                return a - b
            if e.op == "*":
                return a * b
            if e.op == "/":
                if b == 0:
                    raise PdeError("division by zero", e.right.pos, self.src, "a nonzero divisor")
                return a / b
            return _power(a, b, e, self.src)
        return self._call(e)

    def _call(self, e: ast.Call) -> sp.Expr:
        args = [self(a) for a in e.args]
        f = e.func
        if f in MATH_FUNCTIONS:
            return MATH_FUNCTIONS[f][1](*args)
        if f in self.funcs:
            arg_sym, body = self.funcs[f]
            return body.xreplace({arg_sym: args[0]})
        if f == "gauss":
            return GAUSS(args[0], args[1])
        m = _DERIV_RE.match(f)
        if m:
            op = {"x": DX, "y": DY, "z": DZ}[m.group(1)[0]]
            return op(args[0], sp.Integer(len(m.group(1))))
        return {"grad": GRAD, "div": DIV, "laplace": LAPLACE, "norm": NORM}[f](args[0])


_CMATH = {sp.exp: cmath.exp, sp.log: cmath.log, sp.sin: cmath.sin, sp.cos: cmath.cos,
          sp.tanh: cmath.tanh, sp.atan: cmath.atan}


def _float_magnitude(v: sp.Expr) -> float:
    """|v| in complex floating point, inf when it overflows: a guard that never asks sympy for
    digits (``exp(exp(exp(exp(3))))`` would make sympy's evalf work with millions of them)."""
    def fl(x: sp.Expr) -> complex:
        if x.is_Rational or x.is_Float or isinstance(x, sp.NumberSymbol):
            return complex(float(x))
        if x is sp.I:
            return 1j
        args = [fl(a) for a in x.args]
        if x.is_Add:
            return sum(args, 0j)
        if x.is_Mul:
            return math.prod(args, start=1 + 0j)
        if x.is_Pow:
            return args[0] ** args[1] if args[0] != 0 else 0j
        if x.func in _CMATH:
            return _CMATH[x.func](args[0])
        if isinstance(x, sp.Abs):
            return complex(abs(args[0]))
        if isinstance(x, (sp.Min, sp.Max)):
            pick = min if isinstance(x, sp.Min) else max
            return complex(pick(a.real for a in args))
        return complex(math.nan)

    try:
        out = abs(fl(v))
    except OverflowError:
        return math.inf
    except (ValueError, ZeroDivisionError, TypeError):
        return math.nan
    return out


def _number(e: ast.Num, src: Source) -> sp.Rational:
    """A decimal literal as an exact rational: 0.1 is 1/10, so bounds come out exact."""
    mant, _, exp = e.text.lower().partition("e")
    if exp and abs(int(exp)) > MAX_DECIMAL_EXPONENT:
        raise PdeError(f"number {e.text} is out of range", e.pos, src,
                       f"a number between 1e-{MAX_DECIMAL_EXPONENT} and 1e{MAX_DECIMAL_EXPONENT}")
    if len(mant) > 60:
        raise PdeError("number has too many digits", e.pos, src, "at most 60 digits")
    # Digits and exponent are assembled here: no user text reaches a sympy string parser.
    whole, _, frac = mant.partition(".")
    digits = int((whole + frac) or "0")
    scale = len(frac) - (int(exp) if exp else 0)
    return sp.Rational(digits, 10 ** scale) if scale >= 0 else sp.Integer(digits * 10 ** -scale)


def _power(a: sp.Expr, b: sp.Expr, e: ast.BinOp, src: Source) -> sp.Expr:
    """a^b, refusing exponents that would make sympy build astronomically large numbers."""
    if b.is_Number and abs(b) > MAX_EXPONENT:
        raise PdeError(f"exponent {b} is too large", e.right.pos, src,
                       f"an exponent of magnitude at most {MAX_EXPONENT}")
    if a.is_Number and b.is_Number and a != 0 and abs(a) != 1:
        digits = float(b) * math.log10(abs(float(a))) if math.isfinite(float(a)) else math.inf
        if abs(digits) > MAX_DECIMAL_EXPONENT:
            raise PdeError("number too large", e.pos, src,
                           f"values between 1e-{MAX_DECIMAL_EXPONENT} and 1e{MAX_DECIMAL_EXPONENT}")
    if a == 0 and b.is_Number and b <= 0:
        raise PdeError("0 to a non-positive power", e.pos, src, "a nonzero base")
    return a ** b


def _constant(e: ast.Expr, src: Source, values: dict[str, sp.Expr], what: str) -> sp.Expr:
    """A real finite constant from an expression over params."""
    v = _Builder(src, dict(values), {})(e)
    if not v.is_number:
        raise PdeError(f"{what} must be a constant", e.pos, src, "numbers and params")
    fv = _evalf_bounded(v, e, src, what)
    if fv.imag != 0 or not math.isfinite(fv.real) or v.has(sp.zoo, sp.nan, sp.oo):
        raise PdeError(f"{what} is not a finite real number ({v})", e.pos, src, "a finite real value")
    if abs(fv.real) > 10.0 ** MAX_DECIMAL_EXPONENT:
        raise PdeError(f"{what} is too large", e.pos, src,
                       f"a value of magnitude at most 1e{MAX_DECIMAL_EXPONENT}")
    return v


def _evalf_bounded(v: sp.Expr, e: ast.Expr, src: Source, what: str) -> complex:
    """``v`` to 30 digits, within CONSTANT_SECONDS: towers such as exp(exp(exp(exp(exp(1)))))
    would make sympy work with millions of digits."""
    from .limits import SymbolicTimeout, time_limit

    try:
        with time_limit(CONSTANT_SECONDS):
            return complex(v.evalf(30))
    except SymbolicTimeout:
        raise PdeError(f"{what} is too large to evaluate", e.pos, src,
                       f"a value of magnitude at most 1e{MAX_DECIMAL_EXPONENT}") from None
    except (OverflowError, ValueError, TypeError):
        return complex(math.inf)


def _positive(e: ast.Expr, src: Source, values, what: str) -> sp.Expr:
    v = _constant(e, src, values, what)
    if not v > 0:
        raise PdeError(f"{what} must be positive, got {v}", e.pos, src, f"{what} > 0")
    if float(v) < sys.float_info.min:  # 0.0 or subnormal: the network would compute with ~0
        rounds = "rounds to 0" if float(v) == 0 else "is subnormal (no precision left)"
        raise PdeError(f"{what} = {str(sp.N(v, 3))} {rounds} in floating point", e.pos, src,
                       f"{what} >= {sys.float_info.min:.3g}")
    return v


def _positive_int(e: ast.Expr, src: Source, values, what: str, limit: int) -> int:
    v = _constant(e, src, values, what)
    if not (v.is_Integer or (v.is_Rational and v.q == 1)) or v <= 0:
        raise PdeError(f"{what} must be a positive integer, got {v}", e.pos, src,
                       f"{what} = 1, 2, 3, ...")
    if v > limit:
        raise PdeError(f"{what} = {v} is too large", e.pos, src, f"at most {limit}")
    return int(v)


def param_overrides(spec: ast.Spec, params: Mapping[str, object]) -> dict[str, sp.Expr]:
    """Checks names and converts values of ``params=`` / ``--param`` to exact numbers."""
    declared = [s.name.text for s in spec.statements if isinstance(s, ast.ParamStmt)]
    out = {}
    for name, value in params.items():
        if name not in declared:
            raise PdeError(f"'{name}' is not a param of this spec", None, spec.source,
                           did_you_mean(str(name), declared) if declared else
                           "no params: the spec declares none ('param NAME = VALUE')")
        try:
            out[name] = param_override(name, value)
        except PdeError as exc:
            raise exc.with_source(spec.source) from None
    return out


_DECIMAL_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def param_override(name: str, value: object, label: Optional[str] = None) -> sp.Expr:
    """A param value given from Python or the command line, as an exact number.

    A float is taken at its shortest decimal form (``0.08`` -> 2/25), so a sweep through
    ``params=`` builds the same network, bit for bit, as editing the number in the file.
    Strings must be decimal literals (``"0.08"``, ``"1e-3"``); nothing is evaluated.
    """
    import decimal
    import fractions
    import numbers

    def bad(why: str) -> PdeError:
        return PdeError(f"{label or f'param {name!r}'}: {why}", None, None,
                        f"a finite real number of magnitude at most 1e{MAX_DECIMAL_EXPONENT}")

    if isinstance(value, bool):
        raise bad(f"{value!r} is not a number")
    if isinstance(value, sp.Basic):
        if not (value.is_number and value.is_extended_real):
            raise bad(f"{value} is not a real number")
        out = value if value.is_Rational else sp.Rational(*decimal.Decimal(repr(float(value))).as_integer_ratio())
    elif isinstance(value, (int, fractions.Fraction)):
        out = sp.Rational(value.numerator, value.denominator)
    elif isinstance(value, (str, numbers.Real)):
        text = value.strip() if isinstance(value, str) else repr(float(value))
        if not _DECIMAL_RE.match(text):
            raise bad(f"{value!r} is not a decimal number")
        mant, _, exp = text.lower().partition("e")
        if exp and abs(int(exp)) > MAX_DECIMAL_EXPONENT:
            raise bad(f"{value!r} is out of range")
        out = sp.Rational(*decimal.Decimal(text).as_integer_ratio())
    else:
        raise bad(f"{type(value).__name__} is not a number")
    if out != 0 and not (10.0 ** -MAX_DECIMAL_EXPONENT <= abs(float(out)) <= 10.0 ** MAX_DECIMAL_EXPONENT):
        raise bad(f"{value!r} is out of range")
    return out


def build_model(spec: ast.Spec, params: Optional[Mapping[str, object]] = None) -> Model:
    """AST -> :class:`Model`: values, functions, the recognised diffusion form and settings.

    ``params`` replaces the values of ``param`` statements by name, exactly as if the file said
    so: ``{"lambda": 0.08}`` gives lambda = 2/25, as ``param lambda = 0.08`` does, and later
    params written in terms of it follow (see :func:`param_override`).
    """
    src = spec.source
    st = {type(s): s for s in spec.statements}
    values: dict[str, sp.Expr] = {}
    symbols: dict[str, sp.Symbol] = {}
    positions: dict[str, Pos] = {}
    overrides = param_overrides(spec, params or {})
    for p in (s for s in spec.statements if isinstance(s, ast.ParamStmt)):
        name = p.name.text
        values[name] = (overrides[name] if name in overrides
                        else _constant(p.value, src, values, f"param '{name}'"))
        symbols[name] = param_symbol(name)
    scope: dict[str, sp.Expr] = dict(symbols)
    funcs: dict[str, tuple[sp.Symbol, sp.Expr]] = {}
    kinds: dict[str, str] = {}
    for f in (s for s in spec.statements if isinstance(s, ast.FunctionStmt)):
        arg = sp.Symbol(f"{f.arg.text}'arg", real=True)
        body = (LEARNED_G(arg) if isinstance(f.body, ast.LearnedBody)
                else _Builder(src, {**scope, f.arg.text: arg}, funcs)(f.body))
        funcs[f.name.text], kinds[f.name.text] = (arg, body), f.kind
    fld: ast.FieldStmt = st[ast.FieldStmt]
    eq: ast.EquationStmt = st[ast.EquationStmt]
    u = sp.Symbol(f"{fld.name.text}'field", real=True)
    inputs = {i.name.text: sp.Symbol(f"{i.name.text}'input", real=True)
              for i in spec.statements if isinstance(i, ast.InputStmt)}
    tensor_syms = {t.name.text: sp.Symbol(f"{t.name.text}'tensor")
                   for t in spec.statements if isinstance(t, ast.TensorStmt)}
    field_scope = {**scope, fld.name.text: u}
    rhs = _Builder(src, {**field_scope, **inputs, **tensor_syms}, funcs, u)(eq.rhs)
    dims = tuple(d.text for d in fld.dims)
    positions["equation"] = eq.rhs.pos
    positions["field"] = fld.pos
    subs = {symbols[k]: v for k, v in values.items()}
    channels = 1 if fld.channels is None else \
        _positive_int(fld.channels, src, values, "channels", MAX_CHANNELS)

    grid = _grid(st.get(ast.GridStmt), src, values, len(dims))
    size = _size(st.get(ast.SizeStmt), src, values, len(dims))
    boundary = boundary_kinds(st.get(ast.BoundaryStmt), dims)
    b_value = dirichlet_value(st.get(ast.BoundaryStmt), src, values)
    learned = _learned_choice(spec, src, values)
    if learned is not None and b_value is not None:
        raise PdeError("a learned stencil bank needs the homogeneous boundary (dirichlet, value 0)",
                       st[ast.BoundaryStmt].pos, src, "boundary dirichlet")
    stencil = _stencil(st.get(ast.StencilStmt), src, values) if learned is None else \
        StencilChoice(LEARNED, pos=learned.pos)
    ctx = _base.Context(
        u=u, dims=dims, channels=channels, grid=grid,
        boundaries=(boundary,) * len(dims) if isinstance(boundary, str) else boundary,
        params=values, param_symbols=symbols, inputs=inputs,
        tensors={tensor_syms[t.name.text]: _tensor_def(t, src, field_scope, funcs)
                 for t in spec.statements if isinstance(t, ast.TensorStmt)},
        stencil=stencil, source=src, pos=eq.rhs.pos,
        settings={"delta": stencil.weights[0] if stencil.kind == ANISOTROPIC and stencil.weights
                  else None},
        dirichlet_value=b_value)
    form, operator = _recognise(rhs, u, subs, eq, src, ctx, learned is not None)
    flux = form.flux
    diffusivity = _diffusivity_name(eq.rhs, kinds)
    if learned is not None and learned.diffusivity is not None and not form.flux.has(LEARNED_G):
        raise PdeError(f"the learned diffusivity '{learned.diffusivity}' is not used in the "
                       f"equation", eq.rhs.pos, src, f"an equation that calls {learned.diffusivity}(...)")
    sch: ast.SchemeStmt = st[ast.SchemeStmt]
    settings = _settings(sch, src, values)
    positions["scheme"] = sch.pos
    for k, t in ((ast.GridStmt, "grid"), (ast.BoundaryStmt, "boundary"), (ast.StencilStmt, "stencil"),
                 (ast.SizeStmt, "size")):
        if k in st:
            positions[t] = st[k].pos
    return Model(
        name=st[ast.PdeStmt].name.text, field=fld.name.text, dims=dims, order=form.order,
        flux=flux, params=values, param_symbols=symbols, diffusivity=diffusivity,
        linear=form.linear, factor=form.factor, rhs=rhs, equation_text=unparse(eq.rhs),
        grid=grid, size=size, boundary=boundary, stencil=stencil, scheme=sch.kind.text,
        settings=settings, source=src, positions=positions, learned=learned,
        operator=operator, channels=channels, inputs=tuple(inputs),
    )


#: the operator model's recogniser (``Context``, right side) -> OperatorSpec, registered by
#: :mod:`pde2net.operators.registry` (analyse does not import the families: they import the
#: stages below them, which import analyse)
_OPERATOR_MODEL: list[Callable[[sp.Expr, "_base.Context"], "_base.OperatorSpec"]] = []


def register_operator_model(recognise: Callable[[sp.Expr, "_base.Context"], "_base.OperatorSpec"]) -> None:
    """Installs the operator model's recogniser (once)."""
    _OPERATOR_MODEL[:] = [recognise]


def _needs_operator_model(rhs: sp.Expr, ctx: "_base.Context") -> bool:
    """Version-2 forms (docs/language.md): anything the scalar model cannot express."""
    return (ctx.ndim == 3 or ctx.channels > 1 or bool(ctx.inputs) or bool(ctx.tensors)
            or ctx.dirichlet_value is not None
            or rhs.is_Add or rhs.has(GAUSS) or ctx.stencil.kind == ANISOTROPIC
            or any(a.func is LAPLACE and a.args[0] != ctx.u for a in rhs.atoms(sp.Function)))


def _recognise(rhs: sp.Expr, u: sp.Symbol, subs: dict, eq: ast.EquationStmt, src: Source,
               ctx: "_base.Context", learned: bool) -> tuple["_Form", Optional["_base.OperatorSpec"]]:
    """The scalar model's normal form, or (for version-2 forms) the operator model's spec.  A
    right side the scalar recogniser refuses is offered to the operator model; if that refuses
    too, the scalar model's message stands (it names the accepted forms)."""
    if not learned and _OPERATOR_MODEL and _needs_operator_model(rhs, ctx):
        return _Form(1, sp.nan, False, sp.Integer(1)), _OPERATOR_MODEL[0](rhs, ctx)
    try:
        form = (_recognise_1d if ctx.ndim == 1 else _recognise_2d)(rhs, u, subs, eq, src)
    except PdeError as scalar_error:
        if learned or not _OPERATOR_MODEL:
            raise
        try:
            return _Form(1, sp.nan, False, sp.Integer(1)), _OPERATOR_MODEL[0](rhs, ctx)
        except PdeError:
            raise scalar_error from None
    _check_degree(form.flux, eq, src)
    _check_real(form.flux.xreplace(subs), eq, src)
    return form, None


def _tensor_def(st: ast.TensorStmt, src: Source, scope: dict, funcs: dict) -> "_base.TensorDef":
    """A ``tensor`` statement as sympy values (checked by :func:`_check_tensor`)."""
    build = _Builder(src, scope, funcs)
    v = st.value
    if isinstance(v, ast.Matrix):
        return _base.TensorDef(st.name.text, "matrix", tuple(tuple(build(e) for e in row) for row in v.rows),
                               st.pos)
    if v.func == "edge_enhancing":
        arg, body = funcs[v.args[0].id]
        return _base.TensorDef(st.name.text, "edge_enhancing", (arg, body, build(v.args[1])), st.pos)
    return _base.TensorDef(st.name.text, "coherence_enhancing", tuple(build(a) for a in v.args), st.pos)


def _diffusivity_name(e: ast.Expr, kinds: dict[str, str]) -> Optional[str]:
    """The first user diffusivity/flux called in the equation, for reports."""
    if isinstance(e, ast.Call):
        if e.func in kinds:
            return e.func
        for a in e.args:
            n = _diffusivity_name(a, kinds)
            if n:
                return n
    elif isinstance(e, ast.BinOp):
        return _diffusivity_name(e.left, kinds) or _diffusivity_name(e.right, kinds)
    elif isinstance(e, ast.Neg):
        return _diffusivity_name(e.operand, kinds)
    return None


# ------------------------------------------------------------------------- recognition
ACCEPTED_FORMS = (
    "dt(u) = dx( g(dx(u)^2) * dx(u) ) | dt(u) = dx( phi(dx(u)) ) | dt(u) = dxx(u) | "
    "dt(u) = -dxx( g(dxx(u)^2) * dxx(u) ) | dt(u) = -dxxxx(u) | "
    "dt(u) = (-1)^(m+1) d^m( phi(d^m(u)) ) | "
    "dt(u) = div( g(norm(grad(u))^2) * grad(u) ) | dt(u) = laplace(u); "
    "a constant factor is absorbed into the flux (a negative one is backward diffusion)"
)


@dataclass(frozen=True)
class _Form:
    order: int
    flux: sp.Expr
    linear: bool
    factor: sp.Expr


def _refuse(what: str, eq: ast.EquationStmt, src: Source) -> PdeError:
    return PdeError(f"the equation is not generalised nonlinear diffusion: {what}", eq.rhs.pos, src,
                    ACCEPTED_FORMS)


def _split_factor(rhs: sp.Expr, u: sp.Symbol, eq, src) -> tuple[sp.Expr, sp.Expr]:
    if rhs.is_Add:
        terms = [show(t) for t in rhs.args]
        raise _refuse(f"it is a sum of {len(terms)} terms ({'; '.join(terms)}), not one divergence",
                      eq, src)
    if not rhs.has(u):
        raise _refuse(f"the right side {show(rhs)} does not involve the field", eq, src)
    return rhs.as_independent(u, as_Add=False)


def _check_sign(c: sp.Expr, m: int, values: dict, eq, src) -> None:
    """The factor c in u_t = c d^m(...) must be a real constant.  Its sign is not checked here:
    ``(-1)^(m+1) c`` is folded into the flux, and the normal form decides (a flux with
    Phi(s)/s < 0 is backward diffusion, which the stability pass reports as "not stable"), so
    ``-dxx(u)`` and ``dx(-dx(u))`` mean the same, as do ``dxx(-dxx(u))`` and ``-dxx(dxx(u))``."""
    k = ((-1) ** (m + 1) * c).xreplace(values)
    if not k.is_number or k.is_extended_real is False:
        raise _refuse(f"the factor {show(c)} is not a real constant", eq, src)


def _recognise_1d(rhs: sp.Expr, u: sp.Symbol, values: dict, eq: ast.EquationStmt,
                  src: Source) -> _Form:
    c, core = _split_factor(rhs, u, eq, src)
    if core.func is not DX:
        raise _refuse(f"{show(core)} is not a derivative dx...(...)", eq, src)
    inner, k = core.args[0], int(core.args[1])
    if inner == u:  # linear: dt(u) = c d^(2m) u
        if k % 2:
            raise _refuse(f"{show(core)} has odd order {k}: that is transport, not diffusion", eq, src)
        m = k // 2
        _check_sign(c, m, values, eq, src)
        return _Form(m, (-1) ** (m + 1) * c * S, True, (-1) ** (m + 1) * c)
    m = k
    phi = inner.xreplace({DX(u, sp.Integer(m)): S})
    stray = [a for a in phi.atoms(sp.Function) if a.func in (DX, DY)] + ([u] if phi.has(u) else [])
    if stray:
        raise _refuse(f"inside {'d' + 'x' * m}(...) the flux may depend on the field only through "
                      f"{'d' + 'x' * m}(u); found {show(stray[0])}", eq, src)
    if not phi.has(S):
        raise _refuse(f"the flux {show(inner)} does not depend on {'d' + 'x' * m}(u)", eq, src)
    _check_sign(c, m, values, eq, src)
    flux = (-1) ** (m + 1) * c * phi
    return _Form(m, flux, _is_linear(flux), (-1) ** (m + 1) * c)


def _recognise_2d(rhs: sp.Expr, u: sp.Symbol, values: dict, eq: ast.EquationStmt,
                  src: Source) -> _Form:
    c, core = _split_factor(rhs, u, eq, src)
    grad = GRAD(u)
    if core == LAPLACE(u) or core == DIV(grad):
        _check_sign(c, 1, values, eq, src)
        return _Form(1, c * S, True, c)
    if core.func is not DIV:
        raise _refuse(f"{show(core)} is not div(...) or laplace(u)", eq, src)
    inner = core.args[0]
    r = sp.Symbol("r'norm", nonnegative=True)
    # The diffusivity sees grad(u) only through its norm: name the norm first, then split.
    g, vec = inner.xreplace({NORM(grad): r}).as_independent(grad, as_Add=False)
    if vec != grad:
        raise _refuse(f"inside div(...) the flux must be g(norm(grad(u))^2) * grad(u); found {show(inner)}",
                      eq, src)
    if g.has(u) or any(a.func in (GRAD, DIV, NORM, LAPLACE, DX, DY) for a in g.atoms(sp.Function)):
        raise _refuse(f"the diffusivity {show(g)} may depend on the field only through norm(grad(u))",
                      eq, src)
    _check_sign(c, 1, values, eq, src)
    flux = c * g.xreplace({r: sp.Abs(S)}) * S
    return _Form(1, flux, _is_linear(flux), c)


def _is_linear(flux: sp.Expr) -> bool:
    # Poly expands: only for expressions whose expansion is small (see degree_bound)
    return degree_bound(flux) <= MAX_DEGREE and flux.is_polynomial(S) and sp.Poly(flux, S).degree() == 1


def degree_bound(e: sp.Expr, x: sp.Symbol = S) -> int:
    """An upper bound on the degree in x of the expanded expression, read off its structure
    without expanding (``((1 + s)^1000)^1000`` is degree 10^6: expanding it would never finish).
    Functions count as their argument's degree; a non-numeric exponent adds its own."""
    stack, memo = [e], {}
    while stack:  # iterative post-order: deep trees must not hit the recursion limit
        node = stack[-1]
        if node in memo:
            stack.pop()
            continue
        todo = [a for a in node.args if a not in memo]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        if node == x:
            memo[node] = 1
        elif not node.args or not node.has(x):
            memo[node] = 0
        elif node.is_Add:
            memo[node] = max(memo[a] for a in node.args)
        elif node.is_Mul:
            memo[node] = sum(memo[a] for a in node.args)
        elif node.is_Pow and node.exp.is_Number:
            memo[node] = memo[node.base] * math.ceil(abs(node.exp))
        else:
            memo[node] = sum(memo[a] for a in node.args)
    return memo[e]


def _check_real(flux: sp.Expr, eq: ast.EquationStmt, src: Source) -> None:
    """Refuses fluxes with non-real constants such as (-1)^0.5: Phi must be real."""
    for node in sp.preorder_traversal(flux):
        if node.is_number and node.is_extended_real is False:
            raise PdeError(f"the flux contains the non-real number {show(node)}", eq.rhs.pos, src,
                           "real constants (a negative base needs an integer exponent)")


def _check_degree(flux: sp.Expr, eq: ast.EquationStmt, src: Source) -> None:
    """Refuses fluxes whose symbolic analysis would expand astronomically large polynomials."""
    d = degree_bound(flux)
    if d > MAX_DEGREE:
        raise PdeError(f"the flux has degree up to {d} in its argument; symbolic analysis of such a "
                       f"polynomial would not finish", eq.rhs.pos, src,
                       f"a flux of degree at most {MAX_DEGREE} (after expanding powers)")


# ---------------------------------------------------------------------------- settings
def _grid(stmt: Optional[ast.GridStmt], src, values, ndim: int) -> tuple[sp.Expr, ...]:
    if stmt is None:
        return (sp.Integer(1),) * ndim
    got = {b.name.text: _positive(b.value, src, values, f"grid spacing {b.name.text}") for b in stmt.bindings}
    if ndim == 1:
        return (got["h"],)
    if "h" in got:
        return (got["h"],) * ndim
    keys = ("hx", "hy", "hz")[:ndim]
    if len(got) != ndim:
        raise PdeError(f"a {ndim}D grid needs {' and '.join(keys)} (or h)", stmt.pos, src,
                       "grid " + ", ".join(f"{k} = 1" for k in keys))
    return tuple(got[k] for k in keys)


def _size(stmt: Optional[ast.SizeStmt], src, values, ndim: int) -> Optional[tuple[int, ...]]:
    if stmt is None:
        return None
    got = {b.name.text: _positive_int(b.value, src, values, f"size {b.name.text}", MAX_POINTS)
           for b in stmt.bindings}
    size = (got["N"],) if ndim == 1 else tuple(got[k] for k in ("NX", "NY", "NZ")[:ndim])
    if math.prod(size) > MAX_POINTS:
        raise PdeError(f"grid of {math.prod(size)} points is too large", stmt.pos, src,
                       f"at most {MAX_POINTS} points")
    return size


def _stencil(stmt: Optional[ast.StencilStmt], src, values) -> StencilChoice:
    if stmt is None:
        return StencilChoice("forward")
    if stmt.kind is not None and stmt.kind.text == ANISOTROPIC:
        delta = tuple(_constant(b.value, src, values, "delta") for b in stmt.bindings or ())
        return StencilChoice(ANISOTROPIC, delta, pos=stmt.pos)
    if stmt.kind is not None:
        return StencilChoice(stmt.kind.text, pos=stmt.pos)
    weights = tuple(_constant(w, src, values, "stencil weight") for w in stmt.weights)
    off = _constant(stmt.offset, src, values, "stencil offset")
    if not (off.is_Integer and 0 <= off < len(weights)):
        raise PdeError(f"offset {off} is not an index into the {len(weights)} weights", stmt.offset.pos,
                       src, f"an integer from 0 to {len(weights) - 1}")
    if all(w == 0 for w in weights):
        raise PdeError("all stencil weights are zero", stmt.pos, src, "a nonzero difference stencil")
    return StencilChoice("weights", weights, int(off), stmt.pos)


def _is_auto(value: ast.Expr, key: str, kind: str, params) -> bool:
    """``tau = auto`` (the scheme's step-size key only; a param named ``auto`` takes precedence)."""
    return (key == STEP_KEY[kind] and isinstance(value, ast.Name) and value.id == AUTO
            and AUTO not in params)


def _settings(sch: ast.SchemeStmt, src, values) -> dict[str, Setting]:
    kind = sch.kind.text
    keys = SCHEME_KEYS[kind]
    out: dict[str, Setting] = {k: Setting(v, None) for k, v in SCHEME_DEFAULTS[kind].items()}
    for b in sch.bindings:
        k, want = b.name.text, keys[b.name.text]
        if _is_auto(b.value, k, kind, values):
            out[k] = Setting(AUTO, b.value.pos)
        elif isinstance(want, tuple):
            out[k] = Setting(b.value.id, b.value.pos)
        elif want == "int":
            limit = (MAX_STEPS if k in ("steps", "cycles", "iterations")
                     else MAX_CYCLE_LENGTH if k == "cycle_length" else 10_000)
            out[k] = Setting(_positive_int(b.value, src, values, k, limit), b.value.pos)
        else:
            out[k] = Setting(_positive(b.value, src, values, k), b.value.pos)
    return out


def compile_model(spec: ast.Spec) -> Model:
    """check_spec followed by build_model."""
    return build_model(check_spec(spec))


# ------------------------------------------------------------------ printing and the graph
def _display(expr: sp.Expr) -> sp.Expr:
    """Replaces internal symbols (``lambda'``, ``u'field``) by their user-facing names."""
    rep = {}
    for sym in expr.free_symbols:
        name = sym.name.split("'")[0]
        rep[sym] = sp.Symbol(name)
    return expr.xreplace(rep)


def show(expr: sp.Expr) -> str:
    """An expression in .pde syntax: ``dx(u, 2)`` is shown as ``dxx(u)``, powers with ``^``."""
    return _show(_display(expr))


_DERIVS = (DX, DY, GRAD, DIV, NORM, LAPLACE)


def _show(e: sp.Expr) -> str:
    if isinstance(e, sp.Function) and e.func in (DX, DY):
        return f"d{('x' if e.func is DX else 'y') * int(e.args[1])}({_show(e.args[0])})"
    if isinstance(e, sp.Function) and e.func in _DERIVS:
        return f"{e.func.__name__}({_show(e.args[0])})"
    # Derivatives inside arithmetic: print with placeholders, then put them back.
    atoms = sorted((a for a in e.atoms(sp.Function) if a.func in _DERIVS), key=sp.default_sort_key)
    place = {a: sp.Symbol(f"_d{i}_") for i, a in enumerate(atoms)}
    text = sp.sstr(e.xreplace(place)).replace("**", "^")
    for a, p in place.items():
        text = text.replace(p.name, _show(a))
    return text


def unparse(e: ast.Expr) -> str:
    """The AST printed back in .pde syntax (normalised spacing), for docstrings and reports."""
    prec = {"+": 1, "-": 1, "*": 2, "/": 2, "^": 4}

    def go(n: ast.Expr, parent: int = 0, right: bool = False) -> str:
        if isinstance(n, ast.Num):
            return n.text
        if isinstance(n, ast.Name):
            return n.id
        if isinstance(n, ast.Call):
            return f"{n.func}({', '.join(go(a) for a in n.args)})"
        if isinstance(n, ast.Neg):
            t = "-" + go(n.operand, 3)
            return f"({t})" if parent >= 3 else t
        p = prec[n.op]
        if n.op == "^":
            t = f"{go(n.left, 5)}^{go(n.right, 3)}"
        else:
            t = f"{go(n.left, p)} {n.op} {go(n.right, p + 1)}"
        return f"({t})" if p < parent else t

    return go(e)


def expression_dag(model: Model) -> tuple[dict[str, str], dict[str, dict[str, int]], str]:
    """The data of :func:`expression_graph` without networkx: node labels, each node's operands
    ``{child: index}`` (a repeated operand keeps its last index, as a DiGraph edge does), the root."""
    labels: dict[str, str] = {}
    succ: dict[str, dict[str, int]] = {}

    def label(e: sp.Expr) -> str:
        if isinstance(e, sp.Function) and e.func in (DX, DY):
            return f"d{'x' if e.func is DX else 'y'}^{int(e.args[1])}"
        if isinstance(e, sp.Symbol):
            return e.name.split("'")[0]
        if e.is_Number:
            return str(e)
        return type(e).__name__ if not isinstance(e, sp.Function) else e.func.__name__

    def visit(e: sp.Expr) -> str:
        node = sp.srepr(e) if len(e.args) < 30 else str(id(e))
        if node in labels:
            return node
        labels[node] = label(e)
        succ[node] = {}
        args = e.args[:1] if isinstance(e, sp.Function) and e.func in (DX, DY) else e.args
        for i, a in enumerate(args):
            succ[node][visit(a)] = i
        return node

    root = visit(model.rhs)
    return labels, succ, root


def expression_graph(model: Model) -> "nx.DiGraph":
    """The equation's right side as a DAG: nodes are operators, functions, symbols, numbers.

    Node attribute ``label`` is the operator (``dx^1``, ``Mul``, ``exp``, ``lambda``); edges go
    from an operator to its operands with attribute ``index``.  Shared subexpressions share a node.
    """
    import networkx as nx

    labels, succ, root = expression_dag(model)
    g = nx.DiGraph(name=model.name)
    for node, lbl in labels.items():
        g.add_node(node, label=lbl)
    for node, kids in succ.items():
        for kid, i in kids.items():
            g.add_edge(node, kid, index=i)
    g.graph["root"] = root
    return g


def graph_text(g: "nx.DiGraph") -> str:
    """The expression graph as an indented tree (shared nodes printed once, then referenced)."""
    return _tree_text(lambda n: g.nodes[n]["label"],
                      lambda n: sorted(g.successors(n), key=lambda k: g.edges[n, k]["index"]),
                      g.graph["root"])


def expression_text(model: Model) -> str:
    """``graph_text(expression_graph(model))``, without importing networkx (``pde2net check``)."""
    labels, succ, root = expression_dag(model)
    return _tree_text(labels.__getitem__, lambda n: sorted(succ[n], key=succ[n].__getitem__), root)


def _tree_text(label: Callable[[str], str], kids_of: Callable[[str], list], root: str) -> str:
    lines: list[str] = []
    seen: set[str] = set()

    def go(n: str, depth: int) -> None:
        lbl = label(n)
        kids = kids_of(n)
        if n in seen and kids:
            lines.append("  " * depth + f"{lbl} (shared)")
            return
        seen.add(n)
        lines.append("  " * depth + lbl)
        for k in kids:
            go(k, depth + 1)

    go(root, 0)
    return "\n".join(lines)


def python_name(name: str, taken: set[str]) -> str:
    """A safe Python identifier for a .pde name: keywords and builtins get a trailing '_'."""
    import builtins

    out = name
    while keyword.iskeyword(out) or hasattr(builtins, out) or out in taken or not out.isidentifier():
        out += "_"
    return out
