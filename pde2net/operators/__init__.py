"""The operator model ``u_t = -sum_i D_i^T G_i(u) D_i u + r(u)`` (docs/theory.md §9-12).

:mod:`.base` states the protocol every family implements; each family is one module here
(its IR, bound, emitters and dense reference) plus a runtime file in :mod:`.runtime` (pure torch,
inlined in the emitted source), registered in :mod:`.registry`.  This package's ``__init__``
imports nothing, so that the stages below (analyse) can use :mod:`.base` without loading the
families.
"""
