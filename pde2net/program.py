"""The pipeline, readable in one function: :func:`compile_spec`.

    text --parse--> Spec (AST) --analyse--> Model (sympy) --lower--> Architecture (IR)
         --layers--> nn.Module      --codegen--> source      --stability--> StabilityReport

Every stage's value is kept on the :class:`Program` so tests and tools can look at each.  The
stability report (symbolic, ~0.5 s) is computed on first use; building the module does not need it.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

from . import analyse, codegen, lower, parse, scheme_stability, stability, stepping  # noqa: F401
# scheme_stability registers the rules of FED, FSI, implicit and multigrid with stability;
# operators.registry registers the operator model's families with analyse
from .operators import registry  # noqa: F401
from .errors import PdeError

if TYPE_CHECKING:  # torch is imported only when a module is built, networkx for .graph
    import networkx as nx
    import torch

    from . import tracking


@dataclass(frozen=True)
class Program:
    """A compiled spec: every intermediate value, the network and its guarantee."""

    spec: parse.Spec
    model: analyse.Model
    arch: lower.Architecture

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def learned(self) -> bool:
        """Does the spec have a learned stencil bank (``stencil learned(...)``)?"""
        return isinstance(self.arch.scheme, lower.LearnedBank)

    @property
    def operator(self) -> bool:
        """Is the spec a version-2 operator model (docs/theory.md §9-12)?"""
        return self.arch.operator is not None

    @cached_property
    def stability(self) -> stability.StabilityReport:
        """The derived stability report (same content as ``pde2net check --json``).  A learned
        bank's is its certificate's form (:func:`pde2net.stability.analyse_learned`): it holds
        for every parameter value, and the network clamps Phi(s)/s into [0, L], so the float
        checks of the fixed schemes' op trees do not apply."""
        if self.learned:
            return stability.analyse_learned(self.model, self.arch)
        if self.operator:
            from .operators import rule

            return rule.analyse(self.model, self.arch)
        return stability.analyse(self.model, self.arch)

    @cached_property
    def graph(self) -> "nx.DiGraph":
        """The equation's expression graph (operators, functions, symbols)."""
        return analyse.expression_graph(self.model)

    def module(self, backend: str = "fused", steps: Optional[int] = None,
               dtype: Optional["torch.dtype"] = None, device: Any = None,
               compile: bool = False, trainable: bool = False, shared: bool = True) -> "torch.nn.Module":
        """The network as a live ``torch.nn.Module`` (built from the IR, no generated text run).

        ``backend``: ``"fused"`` (shifted views, default) or ``"conv"`` (the paper's literal
        conv / transposed-conv pair).  ``steps`` overrides the scheme's number of time steps.
        ``trainable=True`` (explicit scheme): stencil weights, time step and diffusivity params
        become ``nn.Parameter``s under a parametrisation that keeps the network stable for every
        parameter value (:mod:`pde2net.trainable`); ``shared=False`` gives each block its own.
        The class docstring states the PDE, the network and the derived bound (computed on
        first access to ``__doc__``).

        A spec with ``stencil learned(...)`` gives a :class:`pde2net.nn.StableResNet` (depth =
        steps, each block its own bank, tau and diffusivity; ``backend`` and ``shared`` do not
        apply) at its initial values (torch's global RNG), with
        ``net.certificate()`` and ``net.verify()``; without ``trainable=True`` its parameters
        are frozen (``requires_grad = False``), an untrained network.
        """
        arch = self.arch if steps is None else self.arch.with_steps(_positive_steps(steps))
        if self.learned:
            from . import codegen_learned  # torch is heavy: only here

            net = codegen_learned.build_module(arch, self.model, self.stability, trainable)
            if dtype is not None or device is not None:
                net = net.to(device=device, dtype=dtype)
            return _compile_whole(net) if compile else net
        if self.operator:
            return self._operator_module(arch, backend, dtype, device, compile, trainable)
        doc = LazyDoc(lambda: codegen.docstring(arch, self.stability))
        if trainable:
            from . import trainable as tr  # torch is heavy: only here

            net = tr.build_trainable(arch, self.model, shared, doc)
        else:
            from . import schemes  # torch is heavy: only here

            net = schemes.build_module(arch, backend, doc)
            net.stability_report = lambda: self.stability  # re-checks a new net.tau (lazily)
        if dtype is not None or device is not None:
            net = net.to(device=device, dtype=dtype)
        if compile:
            net = compile_steps(net)
        return net

    def _operator_module(self, arch, backend, dtype, device, compile, trainable):
        """The operator model's network (:mod:`pde2net.operators.live`): the runtime classes that
        the standalone source inlines, so the two agree bit for bit."""
        if trainable:
            raise ValueError("trainable=True is built for the scalar diffusion model; the operator "
                             "model's networks (sums, reactions, tensors, colour, 3D) are fixed")
        if backend not in ("fused", "conv"):
            raise ValueError(f"backend must be 'fused' or 'conv', got {backend!r}")
        from .operators import live

        net = live.build_module(arch)
        if dtype is not None or device is not None:
            net = net.to(device=device, dtype=dtype)
        if compile:
            import torch

            net.block = torch.compile(net.block, dynamic=False)
        return net

    def run(self, u0: Any, steps: Optional[int] = None, *, every: int = 1,
            on_step: Optional["tracking.Callback"] = None, net: Optional["torch.nn.Module"] = None,
            f: Any = None, **module_options: Any) -> "torch.Tensor":
        """Evolves ``u0`` through the network block by block (a block is one time step, or one
        FED/FSI cycle), calling ``on_step(k, t, u)`` after every ``every`` blocks: ``k`` blocks
        done, ``t`` the evolution time.  A callback returning ``True`` stops early (snapshots,
        progress, early stopping).  The result equals ``net(u0)`` bit for bit when nothing stops.

        ``net``: a module built before (else ``self.module(**module_options)``); ``steps``
        defaults to the scheme's number of blocks.  ``f``: the input field of a data term
        (``input f(x, y)``; default u0).  Gradients are not tracked.
        """
        import torch

        from . import tracking

        if net is None:
            net = self.module(**module_options)
        if self.learned and (on_step is not None or steps is not None):
            raise ValueError("a learned bank's network runs whole: no steps or on_step")
        if not isinstance(u0, torch.Tensor):  # the dtype asked for, else torch's default
            u0 = torch.as_tensor(u0, dtype=module_options.get("dtype") or torch.get_default_dtype())
        total = self.arch.scheme.steps if steps is None else _positive_steps(steps)
        if self.learned:
            with torch.no_grad():
                return net(u0)
        with torch.no_grad():
            data = None if f is None else torch.as_tensor(f, dtype=u0.dtype)
            u, _ = tracking.run(net, u0, total, tracking.time_per_block(self.arch), every, on_step,
                                data)
        return u

    def with_params(self, params: Mapping[str, Any]) -> "Program":
        """The same spec compiled with other param values (a sweep: one call per value)."""
        return compile_spec(self.spec, params)

    def source(self, net: Optional["torch.nn.Module"] = None) -> str:
        """The standalone Python source that ``pde2net compile`` writes.  For a learned bank,
        the source of the trained network ``net`` (default: a freshly initialised one), every
        learned value printed exactly; ``net`` is refused for other specs (their source has no
        learned values)."""
        if self.learned:
            from . import codegen_learned

            if net is None:
                net = self.module(trainable=True)
            return codegen_learned.emit_source(self.arch, self.stability, net)
        if self.operator and net is None:
            from .operators import source

            return source.emit_source(self.arch, self.stability)
        if net is not None:
            raise self.model.error("trained weights apply to a spec with a learned stencil bank "
                                   "('stencil learned(size = 3, filters = 8)')", "stencil",
                                   "pde2net compile FILE without --weights")
        try:
            return codegen.emit_source(self.arch, self.stability)
        except NotImplementedError as exc:  # a missing emitter is a limit of this version: say where
            raise self.model.error(f"cannot emit standalone source: {exc}", "scheme",
                                   "a scheme with a source emitter (every scheme but 2D multigrid), "
                                   "or the live module (pde2net run / prog.module())") from None


class LazyDoc:
    """A class ``__doc__`` computed on first access (the stability report costs ~0.5 s of
    symbolic work; building a module should not).  CPython calls a descriptor stored as a
    heap type's ``__doc__`` both for ``cls.__doc__`` and ``instance.__doc__``."""

    def __init__(self, make) -> None:
        self._make, self._text = make, None

    def __get__(self, obj, owner=None) -> str:
        if self._text is None:
            self._text = self._make()
        return self._text

    def __bool__(self) -> bool:
        return True


def compile_steps(net: "torch.nn.Module") -> "torch.nn.Module":
    """``torch.compile`` one time step (``net.block``), not the whole network.

    Compiling ``forward`` would unroll the loop over the steps (compile time growing with
    ``steps``); one step is one expression that inductor fuses into a single kernel, reused by
    every iteration.  The exact scales (``tau``) are first rounded to floats by one eager block
    on a small input, so the compiled trace contains floats only.  Networks without ``block``
    are compiled whole.

    The step is guarded (see :func:`_step_guards`) on the input, every tensor (parameters,
    buffers), the global torch state and the network's own attributes (``net.tau``), but not on
    the frozen IR inside it nor on library functions: those guards (about 200) cost more per
    call than a small step.  Replacing a submodule or hook of a compiled network is not seen.
    """
    import torch

    if not callable(getattr(net, "block", None)):
        return torch.compile(net)
    _warn_if_blocks_exceed_recompile_limit(net)
    eager = net.block
    _prime_scales(net, eager)
    _install_fastpath(net)
    net.block = _CompiledStep(net, eager, lambda: torch.compile(_own_code(eager),
                                                                options={"guard_filter_fn": _step_guards}))
    return net


def _install_fastpath(net: "torch.nn.Module") -> None:
    """The whole explicit time loop in one generated C++ kernel on the CPU (:mod:`pde2net.fastpath`)
    when the network is one it runs and it agrees with the eager block on a probe; calls that need
    gradients, and every other network, keep the compiled step below.  The reason it was not
    installed is kept as ``net.fastpath_skipped`` (a compiler missing, another stencil, ...)."""
    like = next(iter(net.buffers()), None)
    if like is not None and like.device.type != "cpu":
        net.fastpath_skipped = "not on the CPU"
        return
    try:
        from . import fastpath

        why = fastpath.accelerate(net)
    except ImportError as exc:  # noqa: PERF203 - an optional speed-up: never fail the build
        why = str(exc)
    if why is not None:
        net.fastpath_skipped = why


def _warn_if_blocks_exceed_recompile_limit(net: "torch.nn.Module") -> None:
    """A trainable network with a parameter set per block (``shared=False``) calls its step with
    the block index, which dynamo specialises on: past its recompile limit the remaining blocks
    run eagerly.  Say so when the network is built, not deep in a training run."""
    import warnings

    import torch

    if getattr(net, "shared", True) is not False:  # before torch._dynamo: importing it takes seconds
        return
    limit = getattr(torch._dynamo.config, "recompile_limit", 8)
    if getattr(net, "steps", 0) > limit:
        warnings.warn(f"compile=True compiles the first {limit} of the {net.steps} blocks of this "
                      f"trainable network (one graph per block, dynamo's recompile limit); the "
                      f"others run eagerly. shared=True compiles one step for all blocks.",
                      UserWarning, stacklevel=3)


class _CompiledStep:
    """The compiled ``block``; when ``net.tau`` has been replaced since the last call, one eager
    step first rounds the new weights (the compiled step then recompiles on tau's identity and
    traces floats, not sympy arithmetic).  ``torch.compile`` itself runs on the first call
    (importing dynamo takes seconds; a network whose C++ kernel serves every call never pays it)."""

    def __init__(self, net: "torch.nn.Module", eager, make: Callable[[], Any]) -> None:
        self.net, self.eager, self._make, self._compiled = net, eager, make, None
        self.tau = getattr(net, "tau", None)

    @property
    def compiled(self):
        if self._compiled is None:
            self._compiled = self._make()
        return self._compiled

    def __call__(self, u: "torch.Tensor", *args: Any) -> "torch.Tensor":
        tau = getattr(self.net, "tau", None)
        if tau is not self.tau:
            _prime_scales(self.net, self.eager)
            self.tau = tau
        return self.compiled(u, *args)


def _step_guards(entries: list) -> list[bool]:
    """Which of dynamo's guards on a compiled step to keep: every tensor guard (the input,
    parameters, buffers), torch's global state (grad mode, default device, ...), and the
    network's direct attributes (``self.tau``: its identity keys the rounded weights, so a new
    tau recompiles).  Dropped: guards on globals (module functions) and on the frozen data below
    the network (stencil IR, op trees, weight caches), which no public API changes."""
    keep = []
    for e in entries:
        below_net = e.name.startswith("self") and (e.name.count(".") > 1 or "[" in e.name)
        keep.append(e.guard_type == "TENSOR_MATCH" or not (e.is_global or below_net))
    return keep


_CODE_IDS = itertools.count()


def _own_code(method):
    """The bound method with a private copy of its code object, under a name of its own.

    Dynamo keeps its compiled graphs, and a limit of 8 recompilations, per code object; every
    generated network is a new class, so networks sharing ``DiffusionNet.block``'s code would
    each recompile it and, from the ninth network in a process on, silently run eagerly.  Its
    shape profile (automatic dynamic shapes) is kept per (file, line, name): with the shared name,
    a network first called on another shape than the previous network compiled a shape-generic,
    about twice slower kernel (measured: 2D after 1D, 5.1 against 2.6 ns per point-step).
    """
    import types

    if not isinstance(method, types.MethodType):
        return method
    fn = method.__func__
    code = fn.__code__.replace(co_name=f"{fn.__code__.co_name}_{next(_CODE_IDS)}")
    own = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    own.__qualname__, own.__doc__ = fn.__qualname__, fn.__doc__
    return types.MethodType(own, method.__self__)


def _prime_scales(net: "torch.nn.Module", block) -> None:
    """One eager ``block`` on zeros of the spec's size (an optimisation only: failures are ignored)."""
    import torch

    arch = getattr(net, "arch", None)
    if arch is None:
        return
    like = next(iter(net.buffers()), None)
    if like is None:
        like = next(iter(net.parameters()), None)
    n = max(arch.size[0] if arch.size else 16, getattr(net, "min_points", 1))
    shape = (1, n) if len(arch.dims) == 1 else (1, n, arch.size[1] if arch.size and len(arch.size) > 1 else n)
    u = torch.zeros(shape, dtype=like.dtype if like is not None and like.is_floating_point() else None,
                    device=like.device if like is not None else None)
    try:
        with torch.no_grad():
            block(u)
    except Exception:  # noqa: BLE001 - e.g. a multigrid hierarchy that wants another size
        pass


def _compile_whole(net: "torch.nn.Module") -> "torch.nn.Module":
    import torch

    return torch.compile(net)


def _positive_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    return steps


Params = Optional[Mapping[str, Any]]


def compile_spec(spec: parse.Spec, params: Params = None, time: Any = None) -> Program:
    """Spec -> Program: the semantic check, the sympy model, the network IR.

    ``params`` overrides ``param`` values by name (``{"lambda": 0.08}``), exactly as editing the
    file would; an unknown name raises :class:`PdeError` with the valid names.  ``time``: the
    stopping time, in place of the scheme's step count (``steps = ceil(T / tau)``, tau shrunk to
    ``T / steps``; see :mod:`pde2net.stepping`).
    """
    model = analyse.build_model(analyse.check_spec(spec), params)  # AST -> sympy, form recognised
    if model.learned is None:  # a learned bank's step is parametrised, not resolved
        model = stepping.resolve(model, time)                       # tau = auto, time = T
    elif time is not None:
        raise PdeError("a stopping time does not apply to a learned filter bank: its step is "
                       "learned", None, spec.source, "the scheme's steps (the number of blocks)")
    arch = lower.lower(model)                                       # sympy -> layers (frozen IR)
    return Program(spec, model, arch)


def compile_text(text: str, filename: str = "<string>", params: Params = None,
                 time: Any = None) -> Program:
    """Compiles the text of a ``.pde`` file; bad input raises :class:`PdeError`."""
    return compile_spec(parse.parse(text, filename), params, time)


def load(path: Union[str, Path], params: Params = None, time: Any = None) -> Program:
    """Reads and compiles a ``.pde`` file (``params``, ``time``: see :func:`compile_spec`)."""
    return compile_spec(parse.read_spec(path), params, time)


__all__ = ["Program", "compile_spec", "compile_text", "load", "PdeError"]
