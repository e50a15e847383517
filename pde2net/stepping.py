"""Stage 2b: :class:`~pde2net.analyse.Model` -> Model with its time stepping resolved.

Two scheme settings are resolved here, before lowering, because the network's step sizes
depend on them:

- ``tau = auto`` (``tau_max = auto`` for FED): the largest step the derived bound proves,
  ``tau = 2 / (L ||D||^2)`` for the explicit, FED and FSI schemes (docs/theory.md §1, §3, §4),
  with L and the exact symbol bound on ``||D||^2`` derived exactly as the stability report
  derives them.  At that step the report's verdict is "stable" (the bound holds with equality).
  The implicit and multigrid schemes are stable for every tau (or, for the fixed point, only
  under a strict inequality), so they have no largest proven step: ``auto`` is refused there.
- ``time = T``: the stopping time.  The number of outer steps is ``ceil(T / tau)`` (cycles of
  length ``tau (n^2 + n) / 3`` for FED and FSI), and the step is then shrunk to ``T / steps``
  so the network stops exactly at T.  A shrunk step only makes the bound hold with more room.

Pure: the model comes back as a new value; nothing else changes.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import sympy as sp

from .analyse import AUTO, COUNT_KEY, MAX_STEPS, STEP_KEY, Model, Setting, param_override
from .errors import PdeError
from .lower import lower_stencils
from .operators.base import REACTION_FAMILY
from .stability import flux_facts


def resolve(model: Model, time: Optional[object] = None) -> Model:
    """The model with ``auto`` step sizes and ``time`` replaced by exact steps and counts.

    ``time`` (``--time`` / ``load(..., time=T)``) replaces the file's step count or time."""
    settings = dict(model.settings)
    key = STEP_KEY[model.scheme]
    if time is not None:
        settings["time"] = Setting(_positive_time(model, time), None)
    if model.setting(key) == AUTO:
        settings[key] = Setting(auto_step(model), settings[key].pos)
    if "time" in settings:
        settings.update(_steps_for_time(model, settings))
        del settings["time"]
    return replace(model, settings=settings)


def _positive_time(model: Model, value: object) -> sp.Expr:
    """An exact positive stopping time from a number or a decimal string."""
    try:
        t = param_override("time", value, label="time")
    except PdeError as exc:
        raise exc.with_source(model.source) from None
    if not t > 0:
        raise PdeError(f"time must be positive, got {value!r}", None, model.source, "time > 0")
    return t


def auto_step(model: Model) -> sp.Expr:
    """``2 / (L ||D||^2)``, exactly: the largest step the explicit-type bound proves."""
    key = STEP_KEY[model.scheme]
    if model.scheme not in ("explicit", "fed", "fsi"):
        raise model.error(f"{key} = auto: the {model.scheme} scheme has no largest proven step "
                          f"(it is stable for every {key}, or converges only for {key} strictly "
                          f"below a limit)", key, f"an explicit value, e.g. {key} = 1")
    if model.operator is not None:
        return _operator_auto_step(model, key)
    facts = flux_facts(model.flux_value)
    if facts.status != "ok":
        raise model.error(f"{key} = auto: no step size is proven stable for this flux "
                          f"({facts.status}: {facts.detail or 'Phi(s)/s has no finite bound L'})",
                          key, "a flux with 0 <= Phi(s)/s <= L < oo, or an explicit step size")
    if facts.L == 0:
        raise model.error(f"{key} = auto: Phi = 0, so every step size is stable and none is largest",
                          key, f"an explicit value, e.g. {key} = 1")
    nb = _norm_bound(model)
    if nb is None:
        raise model.error(f"{key} = auto: no exact bound on ||D||^2 for this stencil", key,
                          "a named stencil, or an explicit step size")
    bound = 2 / (facts.L * nb)
    return sp.nsimplify(bound) if bound.is_Float else bound


def _operator_auto_step(model: Model, key: str) -> sp.Expr:
    """``2 / lambda`` with ``lambda = sum`` of the terms' proven bounds on lambda_max (or the
    reaction family's bound, docs/theory.md §11): what the operator model's report proves."""
    spec = model.operator
    bounds = [t.bound(spec.context) for t in spec.terms]
    bad = [b for b in bounds if b.value is None or not b.proven or b.failure]
    if bad:
        raise model.error(f"{key} = auto: no step size is proven stable ({bad[0].reason})", key,
                          "terms whose weights are proven in [0, L], or an explicit step size")
    lam = sp.Add(*[b.value for b in bounds])
    if spec.reaction.empty:
        bound = 2 / lam
    else:
        rb = REACTION_FAMILY[0].bound(spec.reaction, lam, spec.context)
        if rb.tau_max is None:
            raise model.error(f"{key} = auto: no step size is proven stable ({rb.reason})", key,
                              "an explicit step size")
        bound = rb.tau_max
    return sp.nsimplify(bound) if bound.is_Float else bound


def _norm_bound(model: Model) -> Optional[sp.Expr]:
    """``||D||^2 <= sum over axes of the exact symbol bound`` (as the stability report)."""
    parts = [ir.stencil.symbol_sq_max() for ir in lower_stencils(model)]
    if any(p is None for p in parts):
        return None
    return sum(parts)


def _steps_for_time(model: Model, settings: dict[str, Setting]) -> dict[str, Setting]:
    """``{count key: ceil(T / cycle time), step key: shrunk step}`` for the stopping time T."""
    total = settings["time"].value
    key, count_key, pos = STEP_KEY[model.scheme], COUNT_KEY[model.scheme], settings["time"].pos
    tau = settings[key].value
    per_step = tau
    if model.scheme in ("fed", "fsi"):
        n = int(settings["cycle_length"].value)
        per_step = tau * (n * n + n) / 3  # the stopping time of one cycle
    count = int(sp.ceiling(total / per_step))
    if count > MAX_STEPS:
        raise model.error(f"time = {total} needs {count} {count_key} of {float(per_step):.6g}, more "
                          f"than the limit of {MAX_STEPS}", "time",
                          f"a shorter time or a larger {key}")
    shrunk = sp.nsimplify(tau * total / (count * per_step))
    return {count_key: Setting(count, pos), key: Setting(shrunk, settings[key].pos)}
