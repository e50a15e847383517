"""Freezing a trained network back into a ``.pde`` spec: ``pde2net.freeze(net, prog) -> str``.

A trainable network (``prog.module(trainable=True)``) learns its stencil weights W, its time step
tau and its diffusivity params.  :func:`freeze` writes them into the spec it came from, as text:

- ``stencil [w0, w1, ...] @ o``: the effective weights ``W = net.effective_weights(k)`` (what the
  network's D uses, the 1/h^m scaling included) times h^m, written as the shortest decimal for which
  the compiler's ``w_j / h^m`` rounds to W again, bit for bit (else exactly, as a decimal or p/q).  The
  compiler accepts only a consistent order-m difference (``sum_j w_j (j - o)^q = m! [q = m]``
  for q <= m); a learned stencil that is not one is refused when the text is compiled (a
  PdeError at the stencil line, with the moment that fails);
- ``scheme explicit(tau = ..., steps = N)``: the learned tau (as the network computed it);
- ``param NAME = ...`` for every learned param.

Compiling the text re-derives the stability bound from these numbers (``docs/theory.md §1``):
the proof travels with the file, it is not copied from the training run.  Every other
statement (the grid included) is kept as written.  Only shared parameter sets (``shared=True``) and, in 2D, equal
weights along both axes can be written as one spec.
"""
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sympy as sp

from . import parse

if TYPE_CHECKING:
    import torch

    from .program import Program


def freeze(net: "torch.nn.Module", prog: "Program", block: int = 0) -> str:
    """The spec text of ``prog`` with the learned stencil, tau and params of ``net`` (parameter
    set ``block``) written in; compile it with :func:`pde2net.compile_text` to get the frozen
    network and its re-checked verdict."""
    values = _learned_values(net, block)
    weights = values["weights"]
    if any(w != weights[0] for w in weights[1:]):
        raise ValueError("freeze: the learned stencils differ between the axes; a spec has one "
                         "stencil for every axis")
    st = prog.arch.stencils[0].stencil
    hm = sp.nsimplify(st.h) ** st.order
    stencil = f"stencil [{', '.join(_weight_text(w, hm) for w in weights[0])}] @ {st.offset}"
    steps = prog.arch.scheme.steps
    replacements = {
        parse.StencilStmt: stencil,
        parse.SchemeStmt: f"scheme explicit(tau = {_num(values['tau'])}, steps = {steps})",
    }
    lines = prog.spec.source.text.splitlines()
    seen: set = set()
    for stmt in prog.spec.statements:
        new = replacements.get(type(stmt))
        if isinstance(stmt, parse.ParamStmt) and stmt.name.text in values["learned"]:
            new = f"param {stmt.name.text} = {_num(values['learned'][stmt.name.text])}"
        if new is not None:
            lines[stmt.pos.line - 1] = new
            seen.add(type(stmt))
    scheme_line = next(s.pos.line for s in prog.spec.statements if isinstance(s, parse.SchemeStmt))
    for kind in (parse.StencilStmt,):  # a statement the spec did not have
        if kind not in seen:
            lines.insert(scheme_line - 1, replacements[kind])
    header = "# frozen from a trained network by pde2net.freeze: learned stencil, tau and params"
    return "\n".join([header, *lines]) + "\n"


def _learned_values(net: "torch.nn.Module", block: int) -> dict[str, Any]:
    """The effective weights (per axis), tau and learned params of one parameter set, as floats."""
    certificate = getattr(net, "certificate", None)
    if not callable(certificate):
        raise TypeError("freeze: expected a trainable network, prog.module(trainable=True)")
    if getattr(net, "shared", True) is False and len(net.blocks) > 1:
        raise ValueError("freeze: a network with a parameter set per block (shared=False) is not "
                         "one spec; freeze one block with block=k")
    cert = certificate()[block]
    learned = {n: cert["params"][n] for n in getattr(net, "learnable", ())}
    return {"weights": cert["weights"], "tau": cert["tau"], "learned": learned}


def _weight_text(w: float, hm: "sp.Expr") -> str:
    """A weight to write so that the compiler's ``text / h^m``, rounded once, is the float ``w``:
    the shortest decimal of ``w h^m`` when it does (always for h = 1), else ``w h^m`` exactly."""
    short = repr(float(sp.Rational(w) * hm))
    if float(sp.Rational(short) / hm) == w:
        return short
    return _exact(sp.Rational(w) * hm)


def _exact(x: "sp.Rational") -> str:
    """An exact rational as a decimal when it has a finite one (denominator 2^a 5^b), else p/q."""
    q = int(x.q)
    while q % 2 == 0:
        q //= 2
    while q % 5 == 0:
        q //= 5
    if q != 1:
        return f"{x.p}/{x.q}"
    digits = 0
    while (x * 10 ** digits).q != 1:
        digits += 1
    text = str(Decimal(int(x.p)) / Decimal(int(x.q))) if digits == 0 else \
        format(Decimal(int(x * 10 ** digits)).scaleb(-digits), "f")
    return text


def _num(x: float) -> str:
    """A float as the shortest decimal that reads back as the same float."""
    return repr(float(x))
