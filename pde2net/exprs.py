"""Sympy expressions -> a small op tree that NumPy, torch and the source printer all share.

The flux Phi reaches the network, the standalone source and the numeric cross-checks of the
stability pass through this one tree, so the three compute the same operations in the same
order (the live module and the emitted source agree bit for bit).  Nothing here evaluates text:
the tree is built from sympy objects and evaluated by walking it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import sympy as sp

UNARY = {
    sp.exp: "exp", sp.log: "log", sp.Abs: "abs", sp.tanh: "tanh", sp.sin: "sin",
    sp.cos: "cos", sp.atan: "atan",
}


class UnsupportedExpression(ValueError):
    """An expression node the emitters do not know (an internal limit, reported clearly)."""


@dataclass(frozen=True)
class Op:
    """``kind`` is one of const, var, add, mul, div, neg, pow, sqrt, rsqrt, min, max,
    where_zero or a unary function name; ``value`` holds a constant's float or a power's exponent,
    ``name`` a var.

    ``where_zero`` (``args = (at_zero, elsewhere)``, ``name`` = the variable x) is
    ``at_zero if x == 0 else elsewhere``: a removable singularity at x = 0 (such as
    ``Phi(s)/s`` of a flux written as a sum) defined by its limit.  ``elsewhere`` is evaluated
    at ``x`` where ``x != 0`` and at 1 where ``x == 0`` (the "double where"), so neither the value
    nor the gradient picks up the 0/0 of the masked branch.
    """

    kind: str
    args: tuple["Op", ...] = ()
    value: Any = None
    name: str = ""


def lower_expr(expr: sp.Expr, variables: Mapping[sp.Symbol, str],
               fields: Optional[frozenset[sp.Symbol]] = None,
               values: Optional[Mapping[sp.Symbol, float]] = None) -> Op:
    """Translates ``expr`` into an :class:`Op` tree; ``variables`` names its free symbols.

    ``fields``: the symbols that are arrays at run time (the others, params, are scalars).  When
    given, a denominator free of them is applied as a multiplication by its reciprocal,
    ``x * (1 / lambda^2)`` for ``x / lambda^2``: the reciprocal is one scalar operation per call
    instead of one division per grid point (a division costs several multiplications), at a
    difference of round-off only.  Every backend evaluates the same tree, so they still agree.

    ``values``: the params' values (by symbol).  When given, the reciprocal is kept only where it
    is safe for them (:func:`safe_reciprocal`); otherwise ``x / lambda^2`` stays a division (with
    lambda = 1e-160 the reciprocal is inf in float32 and ``x * inf`` is nan at x = 0).
    """
    if expr.is_Symbol:
        if expr not in variables:
            raise UnsupportedExpression(f"free symbol {expr} has no name")
        return Op("var", name=variables[expr])
    if expr.is_number:
        v = complex(sp.N(expr, 30))
        if v.imag != 0 or not math.isfinite(v.real):
            raise UnsupportedExpression(f"constant {expr} is not a finite real number")
        return Op("const", value=float(v.real))
    if expr.is_Add:
        return Op("add", tuple(lower_expr(a, variables, fields, values) for a in expr.args))
    if expr.is_Mul:
        return _lower_mul(expr, variables, fields, values)
    if expr.is_Pow:
        return _lower_pow(expr.base, expr.exp, variables, fields, values)
    if expr.func in UNARY:
        return Op(UNARY[expr.func], (lower_expr(expr.args[0], variables, fields, values),))
    if isinstance(expr, (sp.Min, sp.Max)):
        kind = "min" if isinstance(expr, sp.Min) else "max"
        args = [lower_expr(a, variables, fields, values) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = Op(kind, (out, a))
        return out
    raise UnsupportedExpression(f"cannot emit {type(expr).__name__}: {expr}")


def _lower_mul(expr: sp.Expr, variables, fields, values=None) -> Op:
    coeff, factors = expr.as_coeff_mul()
    num, den, scalar_den, scalar_syms = [], [], [], []
    for f in factors:
        if f.is_Pow and f.exp.is_Number and f.exp < 0:
            scalar = fields is not None and not (f.free_symbols & fields)
            (scalar_den if scalar else den).append(_lower_pow(f.base, -f.exp, variables, fields, values))
            if scalar:
                scalar_syms.append(f.base ** -f.exp)
        else:
            num.append(lower_expr(f, variables, fields, values))
    if scalar_den and values is not None and not safe_reciprocal(sp.Mul(*scalar_syms), values):
        den, scalar_den = scalar_den + den, []  # a plain division: exact for every value
    sign = -1 if coeff < 0 else 1
    if abs(coeff) != 1 or not num:
        num.insert(0, Op("const", value=float(abs(coeff))))
    if scalar_den:
        product = scalar_den[0] if len(scalar_den) == 1 else Op("mul", tuple(scalar_den))
        num.append(Op("div", (Op("const", value=1.0), product)))
    top = num[0] if len(num) == 1 else Op("mul", tuple(num))
    if den:
        top = Op("div", (top, den[0] if len(den) == 1 else Op("mul", tuple(den))))
    return Op("neg", (top,)) if sign < 0 else top


def _lower_pow(base: sp.Expr, exp: sp.Expr, variables, fields=None, values=None) -> Op:
    b = lower_expr(base, variables, fields, values)
    if exp == sp.Rational(1, 2):
        return Op("sqrt", (b,))
    if exp == sp.Rational(-1, 2):
        return Op("rsqrt", (b,))
    if exp == 1:
        return b
    if exp == -1:
        return Op("div", (Op("const", value=1.0), b))
    if exp.is_Integer:
        return Op("pow", (b,), value=int(exp))
    if exp.is_number:
        return Op("pow", (b,), value=float(exp))
    return Op("pow", (b, lower_expr(exp, variables, fields, values)))


# float32's normal range: the narrowest exponent range a network runs in.  bfloat16 shares it;
# float16 (normal range 6.1e-5 .. 65504) is not covered: its squared gradients overflow long
# before a param's reciprocal matters, so no rewrite could make it safe.
FLOAT32_TINY, FLOAT32_MAX = 2.0 ** -126, (2.0 - 2.0 ** -23) * 2.0 ** 127


def safe_reciprocal(den: sp.Expr, values: Mapping[sp.Symbol, float]) -> bool:
    """Whether ``x / den`` may be applied as ``x * (1 / den)`` for the params' ``values``: both
    ``den`` and ``1 / den``, evaluated exactly (30 digits, no float range), are finite normal
    float32 numbers, so neither the reciprocal nor its product with a field under- or overflows
    where the division would not (up to one rounding)."""
    try:
        d = sp.N(den.xreplace({k: sp.Float(v, 30) for k, v in values.items()}), 30)
    except (TypeError, ValueError, ArithmeticError):
        return False
    if not d.is_number or d.is_zero or not d.is_finite or d.is_real is not True:
        return False
    return all(FLOAT32_TINY <= abs(x) <= FLOAT32_MAX for x in (d, 1 / d))


def ieee_scalar(kind: str, *args: float) -> float:
    """``kind`` of Python floats with IEEE 754 results (inf, nan) where Python raises.

    The op trees compute math of params alone with Python floats, where ``1.0 / 0.0``,
    ``1e200 ** 2``, ``math.log(0.0)`` or ``math.exp(1000.0)`` raise, while the same operation on
    a tensor gives inf or nan.  The standalone source prints this very function (it needs only
    ``math``), so the live module and the source agree bit for bit.
    """
    import math
    inf = float("inf")
    try:
        if kind == "div":
            return args[0] / args[1]
        if kind == "pow":
            out = args[0] ** args[1]
            return out if isinstance(out, (int, float)) else float("nan")  # complex: not real
        if kind in ("min", "max"):
            if args[0] != args[0] or args[1] != args[1]:
                return float("nan")
            return min(args) if kind == "min" else max(args)
        if kind == "abs":
            return abs(args[0])
        if kind == "rsqrt":
            return 1.0 / math.sqrt(args[0])
        if kind == "log" and args[0] == 0:
            return -inf
        return getattr(math, kind)(*args)
    except ZeroDivisionError:  # x / 0, 0 ** -k, 1 / sqrt(0)
        x = 1.0 if kind in ("pow", "rsqrt") else args[0]
        if x != x or x == 0:
            return float("nan")
        neg = (x < 0) != (math.copysign(1.0, args[1]) < 0) if kind == "div" else False
        return -inf if neg else inf
    except OverflowError:  # exp, pow: the magnitude overflows
        x = args[0]
        odd = kind == "pow" and float(args[1]).is_integer() and int(args[1]) % 2 == 1
        return -inf if odd and x < 0 else inf
    except ValueError:  # a domain error: sqrt(-1), log(-1), sin(inf)
        return float("nan")


def is_number(x: Any) -> bool:
    """A Python (or NumPy scalar) real, not an array or tensor: a param's value."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def variables(op: Op) -> set[str]:
    """The names of the ``var`` nodes of the tree (the argument and the params it uses)."""
    if op.kind == "var":
        return {op.name}
    out: set[str] = set()
    for a in op.args:
        out |= variables(a)
    return out


# ------------------------------------------------------------------------------ evaluation
def _numpy_lib() -> dict[str, Callable]:
    import numpy as np

    return {
        "exp": np.exp, "log": np.log, "abs": np.abs, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
        "atan": np.arctan, "sqrt": np.sqrt, "rsqrt": lambda x: 1.0 / np.sqrt(x),
        "min": np.minimum, "max": np.maximum,
        "is_zero": lambda x: x == 0, "where": np.where,
        "ones_where": lambda mask, x: np.where(mask, np.ones_like(x), x),
    }


def _torch_lib() -> dict[str, Callable]:
    import torch

    def bound(kind):
        def f(a, b):
            if isinstance(b, float):
                return torch.clamp(a, max=b) if kind == "min" else torch.clamp(a, min=b)
            if isinstance(a, float):
                return f(b, a)
            return torch.minimum(a, b) if kind == "min" else torch.maximum(a, b)
        return f

    return {
        "exp": torch.exp, "log": torch.log, "abs": torch.abs, "tanh": torch.tanh, "sin": torch.sin,
        "cos": torch.cos, "atan": torch.atan, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
        "min": bound("min"), "max": bound("max"),
        "is_zero": lambda x: x == 0, "where": torch.where,
        "ones_where": lambda mask, x: torch.where(mask, 1.0, x),
    }


LIBS: dict[str, Callable[[], dict[str, Callable]]] = {"numpy": _numpy_lib, "torch": _torch_lib}


def evaluate(op: Op, env: Mapping[str, Any], lib: Mapping[str, Callable]) -> Any:
    """Evaluates the tree with the functions of ``lib`` (see :data:`LIBS`).

    A node whose arguments are all Python numbers (params and constants: the value is the same
    at every grid point) is computed once with :func:`ieee_scalar` (``math``; torch functions
    take tensors only), as the standalone source prints it.
    """
    k = op.kind
    if k == "const":
        return op.value
    if k == "var":
        return env[op.name]
    if k == "where_zero":
        return _where_zero(op, env, lib)
    args = [evaluate(a, env, lib) for a in op.args]
    if k == "add":
        out = args[0]
        for a in args[1:]:
            out = out + a
        return out
    if k == "mul":
        out = args[0]
        for a in args[1:]:
            out = out * a
        return out
    if k == "neg":
        return -args[0]
    if k == "pow" and len(args) == 1:
        args.append(op.value)
    if all(is_number(a) for a in args):
        return ieee_scalar(k, *args)
    if k == "div":
        return args[0] / args[1]
    if k == "pow":
        return args[0] ** args[1]
    return lib[k](*args)


def _where_zero(op: Op, env: Mapping[str, Any], lib: Mapping[str, Callable]) -> Any:
    """``at_zero`` where the variable is 0, else ``elsewhere`` evaluated at a safe argument."""
    at_zero, elsewhere = op.args
    x = env[op.name]
    if is_number(x):
        return evaluate(at_zero if x == 0 else elsewhere, env, lib)
    mask = lib["is_zero"](x)
    safe = {**env, op.name: lib["ones_where"](mask, x)}
    return lib["where"](mask, evaluate(at_zero, env, lib), evaluate(elsewhere, safe, lib))


# --------------------------------------------------------------------- scalar (no NumPy)
_SCALAR_UNARY: dict[str, Callable[[float], float]] = {
    "exp": math.exp, "log": math.log, "abs": abs, "tanh": math.tanh, "sin": math.sin, "cos": math.cos,
    "atan": math.atan, "sqrt": math.sqrt, "rsqrt": lambda x: 1.0 / math.sqrt(x),
}


def scalar_function(op: Op, var: str) -> Callable[[float], float]:
    """The tree as a function float -> float of the one variable ``var``, for dense numeric
    samples where NumPy is not loaded (``pde2net check`` starts faster without it).

    Where Python raises and NumPy would give inf or nan (division by zero, overflow, a domain
    error, a complex power) the result is nan: callers discard non-finite samples.
    """
    f = _scalar(op, var)

    def safe(t: float) -> float:
        try:
            y = f(t)
        except (ArithmeticError, ValueError):
            return math.nan
        return float(y) if isinstance(y, (float, int)) else math.nan

    return safe


def _scalar(op: Op, var: str) -> Callable[[float], Any]:
    k = op.kind
    if k == "const":
        v = op.value
        return lambda t: v
    if k == "var":
        if op.name != var:
            raise UnsupportedExpression(f"free variable {op.name} (expected only {var})")
        return lambda t: t
    fs = [_scalar(a, var) for a in op.args]
    if k == "where_zero":
        if op.name != var:
            raise UnsupportedExpression(f"free variable {op.name} (expected only {var})")
        at_zero, elsewhere = fs
        return lambda t: at_zero(t) if t == 0 else elsewhere(t)
    if k in ("add", "mul"):
        join = _scalar_add if k == "add" else _scalar_mul
        out = fs[0]
        for g in fs[1:]:  # left-associated, as evaluate()
            out = join(out, g)
        return out
    if k == "div":
        a, b = fs
        return lambda t: a(t) / b(t)
    if k == "neg":
        a = fs[0]
        return lambda t: -a(t)
    if k == "pow":
        a = fs[0]
        if len(fs) == 1:
            e = op.value
            return lambda t: a(t) ** e
        b = fs[1]
        return lambda t: a(t) ** b(t)
    if k in ("min", "max"):
        a, b = fs
        pick = min if k == "min" else max
        return lambda t: _nan_or(pick, a(t), b(t))
    fn = _SCALAR_UNARY[k]
    a = fs[0]
    return lambda t: fn(a(t))


def _scalar_add(a: Callable, b: Callable) -> Callable[[float], Any]:
    return lambda t: a(t) + b(t)


def _scalar_mul(a: Callable, b: Callable) -> Callable[[float], Any]:
    return lambda t: a(t) * b(t)


def _nan_or(pick: Callable, x: float, y: float) -> float:
    """``np.minimum``/``np.maximum`` semantics: nan if either argument is nan."""
    return math.nan if x != x or y != y else pick(x, y)


# ----------------------------------------------------------------------------- source text
_PREC = {"add": 1, "neg": 2, "mul": 3, "div": 3, "pow": 5}


SCALAR_HELPER = "ieee_scalar"  # the name the source gives :func:`ieee_scalar`


def scalar_helper_source() -> str:
    """The text of :func:`ieee_scalar`, for the standalone source (needs only ``math``)."""
    import inspect

    return inspect.getsource(ieee_scalar)


def to_source(op: Op, names: Mapping[str, str], module: str = "torch",
              scalars: frozenset[str] = frozenset(),
              values: Optional[Mapping[str, float]] = None) -> str:
    """Python source computing the tree; ``names`` maps var names to Python identifiers.

    ``scalars`` are vars that are plain floats at run time (params), so ``min``/``max`` against
    them print as ``clamp``.  Evaluation order matches :func:`evaluate` (left-assoc sums and
    products), so the printed source and the live module agree bit for bit.

    A subtree of params alone is computed with Python floats, as :func:`evaluate` does: with
    ``math`` (``math.sqrt(k)``) where the params' ``values`` make that exact Python raise-free,
    otherwise (or when ``values`` is None) with :data:`SCALAR_HELPER` (the printed
    :func:`ieee_scalar`).  The caller imports ``math`` / prints the helper when the text uses them.
    """
    return _src(op, _Names(names, scalars, values), module, 0)


@dataclass(frozen=True)
class _Names:
    names: Mapping[str, str]
    scalars: frozenset[str]
    values: Optional[Mapping[str, float]] = None

    def __getitem__(self, k: str) -> str:
        return self.names[k]

    def with_name(self, var: str, text: str) -> "_Names":
        return _Names({**self.names, var: text}, self.scalars, self.values)

    def is_scalar(self, op: Op) -> bool:
        if op.kind == "var":
            return op.name in self.scalars
        if op.kind == "where_zero":
            return False
        return op.kind == "const" or all(self.is_scalar(a) for a in op.args)

    def plain_ok(self, op: Op) -> bool:
        """Whether plain Python (operators, ``math``) computes this scalar node without raising
        for the params' values, i.e. gives the bits of :func:`ieee_scalar`."""
        if self.values is None:
            return False
        args = [evaluate(a, self.values, {}) for a in op.args]
        if op.kind == "pow" and len(args) == 1:
            args.append(op.value)
        if op.kind in ("min", "max"):
            return not any(a != a for a in args)
        return _strict(op.kind, args)


def _strict(kind: str, args: list) -> bool:
    try:
        if kind == "div":
            out = args[0] / args[1]
        elif kind == "pow":
            out = args[0] ** args[1]
        elif kind == "rsqrt":
            out = 1.0 / math.sqrt(args[0])
        elif kind == "abs":
            out = abs(args[0])
        else:
            out = getattr(math, kind)(*args)
    except (ArithmeticError, ValueError):
        return False
    return isinstance(out, (int, float))


def _scalar_src(op: Op, names: _Names, mod: str) -> Optional[str]:
    """A node of params alone with a function, division or power, printed for Python floats
    (None: an operator node that :func:`_src` prints as usual)."""
    k = op.kind
    args = [_src(a, names, mod, 0) for a in op.args]
    if k == "pow" and len(op.args) == 1:
        args.append(repr(op.value))
    if not names.plain_ok(op):
        return f"{SCALAR_HELPER}({k!r}, {', '.join(args)})"
    if k in ("div", "pow"):
        return None
    if k in ("min", "max", "abs"):
        return f"{k}({', '.join(args)})"
    if k == "rsqrt":
        return f"(1.0 / math.sqrt({args[0]}))"
    return f"math.{k}({', '.join(args)})"


def _src(op: Op, names: _Names, mod: str, parent: int) -> str:
    k = op.kind
    if k == "const":
        text = repr(op.value)
        return f"({text})" if op.value < 0 or text in ("inf", "nan") else text
    if k == "var":
        return names[op.name]
    if k not in ("add", "mul", "neg") and names.is_scalar(op):
        text = _scalar_src(op, names, mod)
        if text is not None:
            return text
    if k == "where_zero":
        x = names[op.name]
        safe = names.with_name(op.name, f"{mod}.where({x} == 0, 1.0, {x})")
        return (f"{mod}.where({x} == 0, {_src(op.args[0], names, mod, 0)}, "
                f"{_src(op.args[1], safe, mod, 0)})")
    p = _PREC.get(k, 9)
    if k == "add":
        text = " + ".join(_src(a, names, mod, p if i == 0 else p + 1) for i, a in enumerate(op.args))
    elif k == "mul":
        text = " * ".join(_src(a, names, mod, p if i == 0 else p + 1) for i, a in enumerate(op.args))
    elif k == "div":
        text = f"{_src(op.args[0], names, mod, p)} / {_src(op.args[1], names, mod, p + 1)}"
    elif k == "neg":
        text = f"-{_src(op.args[0], names, mod, p + 1)}"
    elif k == "pow":
        exp = repr(op.value) if len(op.args) == 1 else _src(op.args[1], names, mod, p)
        exp = f"({exp})" if exp.startswith("-") else exp
        text = f"{_src(op.args[0], names, mod, p + 1)} ** {exp}"
    elif k in ("min", "max"):
        a, b = op.args
        if names.is_scalar(b) or names.is_scalar(a):
            x, c = (a, b) if names.is_scalar(b) else (b, a)
            key = "max" if k == "min" else "min"
            return f"{mod}.clamp({_src(x, names, mod, 0)}, {key}={_src(c, names, mod, 0)})"
        fn = "minimum" if k == "min" else "maximum"
        return f"{mod}.{fn}({_src(a, names, mod, 0)}, {_src(b, names, mod, 0)})"
    else:
        fn = {"atan": "atan" if mod == "torch" else "arctan"}.get(k, k)
        return f"{mod}.{fn}({', '.join(_src(a, names, mod, 0) for a in op.args)})"
    return f"({text})" if p < parent else text
