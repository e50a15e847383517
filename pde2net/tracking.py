"""Watching a run: the network applied block by block, with callbacks (trackers) in between.

A *block* is one outer step of the scheme: one time step (explicit, implicit, multigrid) or one
cycle (FED, FSI).  :func:`run` applies ``net(u, steps=k)`` in chunks and calls ``on_step(k, t, u)``
every ``every`` blocks, with ``k`` the blocks done and ``t = k * time_per_block`` the evolution
time; the blocks and their order are those of ``net(u)``, so the result is the same tensor.
A callback that returns ``True`` stops the run early (py-pde's trackers work the same way).

:class:`Progress` reports progress: a tqdm bar on a terminal, otherwise one line at most every
``interval`` seconds (log files and CI see it too, at a low rate).
"""
from __future__ import annotations

import inspect
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO

if TYPE_CHECKING:  # torch is imported by whoever builds the network
    import torch

    from .lower import Architecture

#: ``on_step(k, t, u) -> Optional[bool]``; True stops the run
Callback = Callable[[int, float, "torch.Tensor"], Optional[bool]]


def time_per_block(arch: "Architecture") -> float:
    """The evolution time one block advances, from the IR: tau (explicit, implicit, multigrid) or
    the cycle's stopping time ``sum tau_i = tau (n^2 + n) / 3`` (FED, FSI; docs/theory.md §3, §4)."""
    sch = arch.scheme
    cycle = getattr(sch, "cycle_time", None)
    return float(cycle if cycle is not None else getattr(sch, "tau", 0) or 0)


def takes_data(net: Any) -> bool:
    """Whether the network takes an input field f as its second argument (operator model)."""
    try:
        return "f" in inspect.signature(net.forward).parameters
    except (TypeError, ValueError):
        return False


def chunkable(net: Any) -> bool:
    """Whether ``net.forward`` takes ``steps`` (each block independent of its index)."""
    try:  # a plain function (the network with its data field bound) is its own forward
        return "steps" in inspect.signature(getattr(net, "forward", net)).parameters
    except (TypeError, ValueError):
        return False


def run(net: Any, u0: "torch.Tensor", steps: int, per_block: float, every: int = 1,
        on_step: Optional[Callback] = None, data: Optional["torch.Tensor"] = None
        ) -> tuple["torch.Tensor", int]:
    """``steps`` blocks of ``net`` from ``u0``; ``on_step`` after every ``every`` blocks (and after
    the last).  Returns the state and the number of blocks done (fewer if a callback stopped).

    ``data``: the input field f of a network with a data term (an operator network's second
    argument); it stays fixed across chunks (default: u0, the initial value)."""
    if data is not None and not takes_data(net):
        raise ValueError("this network has no input field f (no data term)")
    call = _with_data(net, u0 if data is None else data) if takes_data(net) else net
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if on_step is not None and on_step(0, 0.0, u0):
        return u0, 0
    if not chunkable(call):  # one call; the callback sees the end only
        u = call(u0)
        if on_step is not None:
            on_step(steps, steps * per_block, u)
        return u, steps
    u, done = u0, 0
    while done < steps:
        k = min(every, steps - done)
        u = call(u, steps=k)
        done += k
        if on_step is not None and on_step(done, done * per_block, u):
            break
    return u, done


def _with_data(net: Any, fixed: "torch.Tensor") -> Callable:
    """The network with its input field f held fixed across chunks."""
    def call(u, steps=None):
        return net(u, fixed, steps=steps)
    return call


class Progress:
    """Progress of ``total`` blocks: tqdm on a terminal, else a line per ``interval`` seconds."""

    def __init__(self, total: int, stream: Optional[TextIO] = None, interval: float = 10.0,
                 label: str = "step") -> None:
        stream = sys.stderr if stream is None else stream  # at call time: tests and tools swap it
        self.total, self.stream, self.interval, self.label = total, stream, interval, label
        self.done, self.start, self.last = 0, time.monotonic(), time.monotonic()
        self.bar = _tqdm(total, stream, label) if _isatty(stream) else None

    def update(self, k: int) -> None:
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
            return
        now = time.monotonic()
        if now - self.last >= self.interval and self.done < self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"progress: {self.done}/{self.total} {self.label}s ({100 * self.done / self.total:.0f}%), "
                  f"{rate:.3g} {self.label}s/s, about {left:.0f} s left", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _tqdm(total: int, stream: TextIO, label: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit=label, file=stream, leave=True)
