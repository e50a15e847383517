"""Stage 1: text -> :class:`Spec`, a dataclass AST with source positions.

The grammar (``grammar/pde.lark``, shipped inside the package) is LALR(1).  Syntax errors are
mapped to the closest of a table of malformed examples (lark's ``match_examples``) so that the
message says what was expected in words; the transformer only builds nodes and never raises,
because meaning is checked by a separate pass (:mod:`pde2net.analyse`).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import lark

from .errors import PdeError, Pos, Source, describe_char, open_bounded

MAX_SOURCE_BYTES = 100_000
MAX_NESTING = 60
MAX_DEPTH = 200  # operations in one expression's deepest chain (parse tree levels)


# --------------------------------------------------------------------------------------- AST
@dataclass(frozen=True)
class Num:
    text: str
    pos: Pos


@dataclass(frozen=True)
class Name:
    id: str
    pos: Pos


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / ^
    left: "Expr"
    right: "Expr"
    pos: Pos


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    pos: Pos


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple["Expr", ...]
    pos: Pos


@dataclass(frozen=True)
class Matrix:
    """``[[a, b], [b, c]]``: rows of expressions (an explicit diffusion tensor)."""

    rows: tuple[tuple["Expr", ...], ...]
    pos: Pos


Expr = Union[Num, Name, BinOp, Neg, Call, Matrix]


@dataclass(frozen=True)
class Ident:
    text: str
    pos: Pos


@dataclass(frozen=True)
class Binding:
    name: Ident
    value: Expr


@dataclass(frozen=True)
class PdeStmt:
    name: Ident
    pos: Pos


@dataclass(frozen=True)
class ParamStmt:
    name: Ident
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class FieldStmt:
    name: Ident
    dims: tuple[Ident, ...]
    pos: Pos
    channels: Optional[Expr] = None  # 'field u(x, y) channels 3'


@dataclass(frozen=True)
class InputStmt:
    """``input f(x, y)``: a fixed second field (the data of a fidelity term)."""

    name: Ident
    dims: tuple[Ident, ...]
    pos: Pos


@dataclass(frozen=True)
class TensorStmt:
    """``tensor T = edge_enhancing(...) | coherence_enhancing(...) | [[a, b], [b, c]]``."""

    name: Ident
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class LearnedBody:
    """The right side ``learned(knots = N, L = EXPR)`` of a learned diffusivity (``func`` as
    written, checked to be ``learned`` by the semantic pass)."""

    func: Ident
    bindings: tuple["Binding", ...]
    pos: Pos


@dataclass(frozen=True)
class FunctionStmt:
    kind: str  # "diffusivity" (a function of s^2) or "flux" (a function of s)
    name: Ident
    arg: Ident
    body: Union[Expr, LearnedBody]
    pos: Pos


@dataclass(frozen=True)
class EquationStmt:
    lhs_op: Ident
    lhs_field: Ident
    rhs: Expr
    pos: Pos


@dataclass(frozen=True)
class GridStmt:
    bindings: tuple[Binding, ...]
    pos: Pos


@dataclass(frozen=True)
class SizeStmt:
    bindings: tuple[Binding, ...]
    pos: Pos


@dataclass(frozen=True)
class BoundaryStmt:
    kind: Optional[Ident]  # one kind for every axis, or None when given per axis
    pos: Pos
    axes: tuple[tuple[Ident, Ident], ...] = ()  # (axis, kind) per 'x: periodic' item, as written
    #: 'dirichlet(value = EXPR)': the binding for the one kind, or one per axis item (None if absent)
    values: tuple[Optional["Binding"], ...] = ()


@dataclass(frozen=True)
class StencilStmt:
    kind: Optional[Ident]  # forward / backward / central, or None for a weight list
    weights: tuple[Expr, ...]
    offset: Optional[Expr]
    pos: Pos
    # 'stencil NAME(key = value, ...)' (e.g. learned(size = 3, filters = 8)); None when written
    # without parentheses
    bindings: Optional[tuple["Binding", ...]] = None


@dataclass(frozen=True)
class SchemeStmt:
    kind: Ident
    bindings: tuple[Binding, ...]
    pos: Pos


Statement = Union[
    PdeStmt, ParamStmt, FieldStmt, FunctionStmt, EquationStmt, GridStmt, SizeStmt,
    BoundaryStmt, StencilStmt, SchemeStmt, InputStmt, TensorStmt,
]


@dataclass(frozen=True)
class Spec:
    """A parsed ``.pde`` file: its statements in source order, and the source for messages."""

    statements: tuple[Statement, ...]
    source: Source


# ---------------------------------------------------------------------------------- grammar
def grammar_text() -> str:
    """The grammar shipped with the package (``pde2net/grammar/pde.lark`` once installed)."""
    try:
        return resources.files("pde2net.grammar").joinpath("pde.lark").read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        # Running from a source tree that was never installed.
        return (Path(__file__).resolve().parent.parent / "grammar" / "pde.lark").read_text("utf-8")


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    cache = _table_cache_path()
    return lark.Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                     **({"cache": cache} if cache else {}))


def _table_cache_path() -> Optional[str]:
    """A private file for lark's LALR tables (building them costs ~0.2 s per process).

    lark's cache is a pickle, so it is kept only in a directory that belongs to this user and
    that nobody else can write (never the shared temp directory); lark stores a hash of the
    grammar, its options and versions in the file and rebuilds on any mismatch.
    ``PDE2NET_NO_CACHE=1`` turns it off.
    """
    if os.environ.get("PDE2NET_NO_CACHE") or not hasattr(os, "getuid"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "pde2net")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.stat(folder)
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o022 or not os.access(folder, os.W_OK):
        return None
    return os.path.join(folder, f"pde-grammar-lark-{lark.__version__}.cache")


def _pos(meta_or_tok) -> Pos:
    if isinstance(meta_or_tok, lark.Token):
        end = meta_or_tok.end_column if meta_or_tok.end_line == meta_or_tok.line else None
        return Pos(meta_or_tok.line, meta_or_tok.column, end)
    end = meta_or_tok.end_column if meta_or_tok.end_line == meta_or_tok.line else None
    return Pos(meta_or_tok.line, meta_or_tok.column, end)


def _ident(tok: lark.Token) -> Ident:
    return Ident(str(tok), _pos(tok))


@lark.v_args(meta=True)
class _ToAst(lark.Transformer):
    """Builds AST nodes only; every check of meaning happens in the semantic pass."""

    def start(self, meta, items):
        return tuple(items)

    # statements
    def pde_stmt(self, meta, c):
        return PdeStmt(_ident(c[0]), _pos(meta))

    def param_stmt(self, meta, c):
        return ParamStmt(_ident(c[0]), c[1], _pos(meta))

    def field_stmt(self, meta, c):
        channels = c[-1]  # the optional 'channels EXPR' (None when absent)
        names = [t for t in c[:-2] if t is not None]
        return FieldStmt(_ident(names[0]), tuple(_ident(t) for t in names[1:]), _pos(meta), channels)

    def input_stmt(self, meta, c):
        return InputStmt(_ident(c[0]), tuple(_ident(t) for t in c[1:]), _pos(meta))

    def tensor_stmt(self, meta, c):
        return TensorStmt(_ident(c[0]), c[1], _pos(meta))

    def diffusivity_stmt(self, meta, c):
        return FunctionStmt("diffusivity", _ident(c[0]), _ident(c[1]), c[2], _pos(meta))

    def diffusivity_learned(self, meta, c):
        body = LearnedBody(_ident(c[2]), tuple(c[3:]), _pos(c[2]))
        return FunctionStmt("diffusivity", _ident(c[0]), _ident(c[1]), body, _pos(meta))

    def flux_stmt(self, meta, c):
        return FunctionStmt("flux", _ident(c[0]), _ident(c[1]), c[2], _pos(meta))

    def equation_stmt(self, meta, c):
        return EquationStmt(_ident(c[0]), _ident(c[1]), c[2], _pos(meta))

    def grid_stmt(self, meta, c):
        return GridStmt(tuple(c), _pos(meta))

    def size_stmt(self, meta, c):
        return SizeStmt(tuple(c), _pos(meta))

    def boundary_all(self, meta, c):
        return BoundaryStmt(_ident(c[0]), _pos(meta), values=(c[1],))

    def boundary_axes(self, meta, c):
        return BoundaryStmt(None, _pos(meta), tuple((a, k) for a, k, _ in c),
                            tuple(v for _, _, v in c))

    def axis_boundary(self, meta, c):
        return (_ident(c[0]), _ident(c[1]), c[2])

    def boundary_value(self, meta, c):
        return c[0]

    def stencil_named(self, meta, c):
        return StencilStmt(_ident(c[0]), (), None, _pos(meta))

    def stencil_call(self, meta, c):
        bindings = tuple(b for b in c[1:] if b is not None)
        return StencilStmt(_ident(c[0]), (), None, _pos(meta), bindings)

    def stencil_weights(self, meta, c):
        return StencilStmt(None, tuple(c[:-1]), c[-1], _pos(meta))

    def scheme_stmt(self, meta, c):
        bindings = tuple(b for b in c[1:] if b is not None)
        return SchemeStmt(_ident(c[0]), bindings, _pos(meta))

    def binding(self, meta, c):
        return Binding(_ident(c[0]), c[1])

    # expressions
    def number(self, meta, c):
        return Num(str(c[0]), _pos(c[0]))

    def name(self, meta, c):
        return Name(str(c[0]), _pos(c[0]))

    def call(self, meta, c):
        args = tuple(a for a in c[1:] if a is not None)
        return Call(str(c[0]), args, _pos(c[0]))

    def _bin(op):  # noqa: N805 - a factory used at class creation
        def build(self, meta, c):
            return BinOp(op, c[0], c[1], _pos(meta))
        return build

    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")

    def pow(self, meta, c):
        return BinOp("^", c[0], c[2], _pos(meta))

    def neg(self, meta, c):
        return Neg(c[0], _pos(meta))

    def matrix(self, meta, c):
        return Matrix(tuple(c), _pos(meta))

    def row(self, meta, c):
        return tuple(c)


# ----------------------------------------------------------------------- syntax error table
# (what the user meant to write, [malformed examples]); match_examples picks the closest.
_SYNTAX_EXAMPLES: dict[str, list[str]] = {
    "a statement: pde, param, field, diffusivity, flux, equation, grid, size, boundary, stencil or scheme": [
        # the LALR state at a statement's start differs for the first, second and later lines
        "foo", "x = 1", "pde heat\nfoo bar", "pde heat\npde heat\nfoo", "pde heat\npde heat\npde heat\nfoo",
        "3", "pde heat\n3", "pde heat\npde heat\n3", "pde heat\npde heat\npde heat\n(",
    ],
    "a name after the statement word (e.g. 'pde heat', 'param k = 1')": [
        "pde", "pde 3", "param = 1", "param 3 = 1", "boundary", "field", "scheme",
    ],
    "'=' and a value (e.g. 'param k = 0.5')": [
        "param k", "param k 1", "param k := 1", "grid h", "diffusivity g(s2)",
    ],
    "an expression: a number, a name, a call or '(' (e.g. '1 / (1 + s2)')": [
        "param k =", "param k = *", "param k = 1 +", "param k = (", "param k = 1 * / 2",
        "equation dt(u) =", "param k = )",
    ],
    "a closing ')'": ["param k = (1", "param k = (1 + 2", "param k = f(1", "equation dt(u) = dx(dx(u)"],
    "an operator or the end of the line (one statement a line)": [
        "param k = 1 2", "param k = 1 k", "pde heat heat", "param k = 2 (1)", "boundary neumann x",
    ],
    "per-axis boundary kinds 'AXIS: KIND', e.g. 'boundary x: periodic, y: neumann'": [
        "boundary x:", "boundary x: periodic,", "boundary x: periodic y: neumann",
        "boundary x periodic, y: neumann", "boundary x: periodic, y", "boundary x: 1",
    ],
    "'(' and the space variables, e.g. 'field u(x)' or 'field u(x, y)'": [
        "field u", "field u x", "field u()", "field u(x,)", "field u(1)",
    ],
    "the argument in parentheses, e.g. 'diffusivity g(s2) = 1 / (1 + s2)'": [
        "diffusivity g = 1", "diffusivity g() = 1", "flux phi = s", "diffusivity g(s2, t) = 1",
    ],
    "the left side dt(FIELD), e.g. 'equation dt(u) = dxx(u)'": [
        "equation = 1", "equation dt = 1", "equation dt() = 1", "equation u = 1", "equation dt(u)",
    ],
    "a binding NAME = VALUE, e.g. 'grid h = 1' or 'size N = 256'": [
        "grid 1", "grid = 1", "size 256", "grid h = 1,", "size N = 1, 2",
    ],
    "'forward', 'backward', 'central' or a weight list '[w0, w1, ...] @ OFFSET'": [
        "stencil", "stencil 1", "stencil [1, -1]", "stencil [1, -1] 0", "stencil [] @ 0",
        "stencil [1, -1 @ 0", "stencil (1, -1) @ 0",
    ],
    "the scheme's settings in parentheses, e.g. 'scheme explicit(tau = 0.25, steps = 100)'": [
        "scheme explicit", "scheme explicit tau = 1", "scheme explicit(tau)", "scheme explicit(tau = 1",
        "scheme explicit(tau = 1,)", "scheme explicit(1)", "scheme explicit(tau = 1 steps = 2)",
    ],
    # last: the binding states they share with the scheme's examples keep the scheme's label
    "settings NAME = VALUE in parentheses, e.g. 'stencil learned(size = 3, filters = 8)'": [
        "stencil learned(3)", "stencil learned(size)", "stencil learned(size = 3",
        "stencil learned(size = 3,)", "stencil learned(size = 3 filters = 8)",
    ],
    "a learned diffusivity's settings, e.g. 'diffusivity g(s2) = learned(knots = 16, L = 1)'": [
        "diffusivity g(s2) = learned(knots = 16", "diffusivity g(s2) = learned(knots = 16,)",
        "diffusivity g(s2) = learned(knots = 16 L = 1)",
    ],
}


@functools.lru_cache(maxsize=1)
def _example_states() -> dict[int, list[tuple[str, str]]]:
    """LALR state id -> [(token type, label)] for the malformed examples.

    lark's own ``match_examples`` compares whole parser stacks, so an example written on line 1
    would not match the same mistake on line 9; the state id alone identifies the situation.
    """
    table: dict[int, list[tuple[str, str]]] = {}
    for label, examples in _SYNTAX_EXAMPLES.items():
        for ex in examples:
            try:
                _parser().parse(ex)
            except lark.exceptions.UnexpectedToken as e:
                table.setdefault(e.state.position, []).append((e.token.type, label))
            except lark.exceptions.UnexpectedInput:
                continue
    return table


def _match_example(err: lark.exceptions.UnexpectedInput) -> Optional[str]:
    if not isinstance(err, lark.exceptions.UnexpectedToken) or err.state is None:
        return None
    candidates = _example_states().get(err.state.position, [])
    ttype = "$END" if err.token.type == "_NL" else err.token.type
    for tok, label in candidates:
        if tok == ttype or (tok == "$END" and err.token.type == "_NL"):
            return label
    return candidates[0][1] if candidates else None


def _syntax_error(err: lark.exceptions.UnexpectedInput, source: Source) -> PdeError:
    pos = Pos(err.line, err.column) if getattr(err, "line", -1) and err.line > 0 else None
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        ch = source.text[err.pos_in_stream] if err.pos_in_stream < len(source.text) else ""
        if ch and not ch.isascii():
            return PdeError(
                f"non-ASCII character {describe_char(ch)}",
                pos, source, "ASCII letters, digits and '_' in names; ASCII operators",
            )
        return PdeError(
            f"unexpected character {describe_char(ch)}", pos, source,
            "a name, a number, an operator (+ - * / ^ **), '(', ')', ',', '=', '[', ']', '@' or '#'",
        )
    label = _match_example(err)
    if isinstance(err, lark.exceptions.UnexpectedEOF) or (
        isinstance(err, lark.exceptions.UnexpectedToken) and err.token.type == "$END"
    ):
        lines = source.text.splitlines() or [""]
        pos = Pos(len(lines), len(lines[-1]) + 1)
        msg = "unexpected end of file"
    else:
        tok = err.token
        shown = "end of line" if tok.type == "_NL" else f"'{tok}'"
        msg = f"unexpected {shown}"
        if tok.type != "_NL":
            pos = Pos(tok.line, tok.column, tok.end_column if tok.end_line == tok.line else None)
    return PdeError(msg, pos, source, label or _expected_from(err))


def _expected_from(err: lark.exceptions.UnexpectedInput) -> str:
    names = {
        "NAME": "a name", "NUMBER": "a number", "LPAR": "'('", "RPAR": "')'", "EQUAL": "'='",
        "COMMA": "','", "_NL": "end of line", "LSQB": "'['", "RSQB": "']'", "AT": "'@'",
        "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'", "SLASH": "'/'", "POW": "'^'",
    }
    exp = sorted(getattr(err, "expected", None) or getattr(err, "accepts", None) or [])
    words = [names.get(e, e.lower()) for e in exp if not e.startswith("__")]
    return "one of " + ", ".join(words) if words else "a valid statement"


def _check_nesting(text: str, source: Source) -> None:
    """Refuses absurd nesting up front: the LALR parser is iterative, but later stages recurse."""
    depth = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        for col, ch in enumerate(line.split("#", 1)[0], 1):
            if ch in "([":
                depth += 1
                if depth > MAX_NESTING:
                    raise PdeError(
                        f"expression nested more than {MAX_NESTING} levels deep",
                        Pos(lineno, col), source, "a simpler expression",
                    )
            elif ch in ")]":
                depth = max(depth - 1, 0)
        depth = 0  # parentheses never span lines


def _check_depth(tree: lark.Tree, source: Source) -> None:
    """Refuses expressions more than MAX_DEPTH operations deep (``1 + 1 + ... + 1`` is as deep as
    it is long): the transformer and the later stages recurse, the LALR parser does not."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            pos = None if getattr(meta, "empty", True) else Pos(meta.line, meta.column)
            raise PdeError(f"expression more than {MAX_DEPTH} operations deep", pos, source,
                           "a shorter expression (split it into several params)")
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, lark.Tree))


def parse(text: str, filename: str = "<string>") -> Spec:
    """Parses the text of a ``.pde`` file into a :class:`Spec` (syntax only)."""
    source = Source(text, filename)
    if len(text.encode("utf-8", "replace")) > MAX_SOURCE_BYTES:
        raise PdeError(
            f"file too large ({len(text)} characters)", None, source,
            f"a spec under {MAX_SOURCE_BYTES} bytes",
        )
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise PdeError("NUL byte in the file", Pos(line, 1), source, "a text file")
    _check_nesting(text, source)
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as err:
        raise _syntax_error(err, source) from None
    _check_depth(tree, source)
    statements = _ToAst().transform(tree)
    return Spec(statements, source)


def read_spec(path: Union[str, Path]) -> Spec:
    """Reads and parses a file; unreadable files are reported as :class:`PdeError` too."""
    path = Path(path)
    with open_bounded(str(path), MAX_SOURCE_BYTES, "spec file") as f:  # /dev/zero, FIFOs: bounded
        try:
            raw = f.read(MAX_SOURCE_BYTES + 1)
        except OSError as exc:
            raise PdeError(f"cannot read {path}: {exc.strerror or exc}", None,
                           Source("", str(path))) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PdeError(
            "the file is not valid UTF-8 text", Pos(line, 1),
            Source(raw.decode("utf-8", "replace"), str(path)), "a UTF-8 text file",
        ) from None
    return parse(text, str(path))
