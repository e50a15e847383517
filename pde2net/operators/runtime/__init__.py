"""Pure-torch runtime of the operator networks: every file imports only ``math``, ``torch`` and
its siblings, and is inlined verbatim in the standalone source (:mod:`pde2net.operators.source`),
so the live module and the emitted source run the same code."""
