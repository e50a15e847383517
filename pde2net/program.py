"""The pipeline, readable in one function: :func:`compile_spec`.

    text --parse--> Spec (AST) --analyse--> Model (sympy) --lower--> Architecture (IR)
         --layers--> nn.Module      --codegen--> source      --stability--> StabilityReport

Every stage's value is kept on the :class:`Program` so tests and tools can look at each.  The
stability report (symbolic, ~0.5 s) is computed on first use; building the module does not need it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import networkx as nx

from . import analyse, codegen, lower, parse, stability
from .errors import PdeError

if TYPE_CHECKING:  # torch is imported only when a module is built
    import torch


@dataclass(frozen=True)
class Program:
    """A compiled spec: every intermediate value, the network and its guarantee."""

    spec: parse.Spec
    model: analyse.Model
    arch: lower.Architecture

    @property
    def name(self) -> str:
        return self.model.name

    @cached_property
    def stability(self) -> stability.StabilityReport:
        """The derived stability report (same content as ``pde2net check --json``)."""
        return stability.analyse(self.model, self.arch)

    @cached_property
    def graph(self) -> nx.DiGraph:
        """The equation's expression graph (operators, functions, symbols)."""
        return analyse.expression_graph(self.model)

    def module(self, backend: str = "fused", steps: Optional[int] = None,
               dtype: Optional["torch.dtype"] = None, device: Any = None,
               compile: bool = False) -> "torch.nn.Module":
        """The network as a live ``torch.nn.Module`` (built from the IR, no generated text run).

        ``backend``: ``"fused"`` (shifted views, default) or ``"conv"`` (the paper's literal
        conv / transposed-conv pair).  ``steps`` overrides the scheme's number of time steps.
        """
        from . import layers  # torch is heavy: only here

        arch = self.arch if steps is None else self.arch.with_steps(_positive_steps(steps))
        net = layers.build_module(arch, backend, codegen.docstring(arch, None))
        if dtype is not None or device is not None:
            net = net.to(device=device, dtype=dtype)
        if compile:
            import torch

            net = torch.compile(net)
        return net

    def source(self) -> str:
        """The standalone Python source that ``pde2net compile`` writes."""
        return codegen.emit_source(self.arch, self.stability)


def _positive_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    return steps


def compile_spec(spec: parse.Spec) -> Program:
    """Spec -> Program: the semantic check, the sympy model, the network IR."""
    model = analyse.build_model(analyse.check_spec(spec))  # AST -> sympy, form recognised
    arch = lower.lower(model)                                # sympy -> layers (frozen IR)
    return Program(spec, model, arch)


def compile_text(text: str, filename: str = "<string>") -> Program:
    """Compiles the text of a ``.pde`` file; bad input raises :class:`PdeError`."""
    return compile_spec(parse.parse(text, filename))


def load(path: Union[str, Path]) -> Program:
    """Reads and compiles a ``.pde`` file."""
    return compile_spec(parse.read_spec(path))


__all__ = ["Program", "compile_spec", "compile_text", "load", "PdeError"]
