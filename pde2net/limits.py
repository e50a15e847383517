"""Time limits for symbolic work: the bottom of the package's import graph (imports nothing of
pde2net), so that analyse, stencils and stability can all bound sympy without importing each other.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

SYMBOLIC_SECONDS = 20.0
RETRY_SECONDS = 0.05  # how soon an expired limit fires again if its exception was swallowed


class SymbolicTimeout(Exception):
    """Symbolic work ran past its time limit."""


@contextmanager
def time_limit(seconds: Optional[float]) -> Iterator[None]:
    """Bounds symbolic work with SIGALRM (main thread only; elsewhere it runs unbounded)."""
    if seconds is None or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return
    # Nested limits: an enclosing one that fires first stays in charge; otherwise it is re-armed
    # with what is left of it when this one ends (one ITIMER_REAL serves both).
    outer = signal.getitimer(signal.ITIMER_REAL)[0]
    if outer and outer <= seconds:
        yield
        return

    # A signal handler's exception can be swallowed where it lands (a gc callback, a __del__):
    # so the expiry is also remembered, the alarm repeats until the work notices, and the block
    # raises on exit. A limit may end late, but never goes unreported.
    expired = False

    def _raise(signum, frame):
        nonlocal expired
        expired = True
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
        raise SymbolicTimeout()

    start = time.monotonic()
    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))
    if expired:
        raise SymbolicTimeout()
