"""``pde2net verify`` for the operator model: the claim checked against dense NumPy float64.

1. the claim: the stability report (:mod:`.rule`);
2. the operator: at every battery input u, the dense frozen matrix ``A(u) = sum_i D_i^T G_i(u) D_i``
   (each family's :meth:`~.base.Term.dense`) is symmetric, positive semidefinite, and its largest
   eigenvalue is at most the proven bound lambda (docs/theory.md §9-12);
3. the battery: shapes at amplitudes from 1e-6 to 1e3 through the network; growth of
   ``||u_K|| / ||u_0||`` beyond round-off under a "stable" verdict is a failure (with a data term
   the default input f = u_0 makes the claim ``||u_K|| <= max(||u_0||, ||f||) = ||u_0||``);
4. gradient ascent on the growth through the network (:func:`pde2net.verify.adversarial_search`);
5. the network against a dense float64 implementation of the scheme built from the same dense
   matrices (explicit, FED, FSI, CG) on a few inputs, for at most :data:`REFERENCE_STEPS` steps.
"""
from __future__ import annotations

import math
import time
from typing import Any, Optional

import numpy as np

from .. import exprs, verify
from ..lower import FED, FSI, Explicit, Implicit
from .live import scheme_arguments

#: steps (cycles) of the reference comparison: the dense matrices are rebuilt every step
REFERENCE_STEPS = 8
#: default grid per axis (the dense matrices are n x n)
DEFAULT_SIZE = {1: 64, 2: 16, 3: 8}
#: relative tolerance of the reference comparison (float64 round-off over a few steps)
REFERENCE_RTOL = 1e-10


def field_shape(prog, size: Optional[int]) -> tuple[int, ...]:
    """``(C, *space)`` with x last: ``size`` per axis, else the spec's size, else the default."""
    ctx = prog.arch.operator.context
    if size is not None:
        space = (size,) * ctx.ndim
    elif prog.arch.size:
        space = tuple(reversed(prog.arch.size))
    else:
        space = (DEFAULT_SIZE[ctx.ndim],) * ctx.ndim
    shape = (ctx.channels,) + space
    if math.prod(shape) > 4096:
        raise verify._grid_error(prog, f"a field of {math.prod(shape)} values is too large for the "
                                       f"operator model's dense checks", "size" if size is None else None,
                                 "at most 4096 values (C x NX x NY x NZ; use --size)")
    return shape


def dense_A(spec, u: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``sum_i D_i^T G_i(u) D_i`` as a dense float64 matrix (n x n, n = u.size)."""
    ctx = spec.context
    return sum(t.dense(ctx, u, f) for t in spec.terms)


def reaction_numpy(spec, u: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``r(u, f) = -decay u + data (f - u) + constant + nonlinear(u)`` in float64."""
    r = spec.reaction
    if r.empty:
        return np.zeros_like(u)
    ctx = spec.context
    out = (-float(ctx.value(r.decay))) * u + float(ctx.value(r.data)) * (f - u) + float(ctx.value(r.constant))
    if r.nonlinear is not None:
        op = exprs.lower_expr(ctx.value(r.nonlinear), {ctx.u: "u"})
        out = out + exprs.evaluate(op, {"u": u}, exprs.LIBS["numpy"]())
    return out


def reference_run(prog, u0: np.ndarray, steps: int) -> np.ndarray:
    """The scheme on one field ``u0`` (shape (C, *space)), f = u0, in dense float64."""
    arch = prog.arch
    spec = arch.operator
    sch = arch.scheme
    _, kw = scheme_arguments(arch)
    u, f = u0.astype(np.float64), u0.astype(np.float64)
    shape = u.shape

    def A(v):
        return dense_A(spec, v.reshape(shape), f)

    vec = u.reshape(-1)
    for _ in range(steps):
        if isinstance(sch, Explicit):
            vec = vec - kw["tau"] * (A(vec) @ vec - reaction_numpy(spec, vec.reshape(shape), f).reshape(-1))
        elif isinstance(sch, FED):
            M = A(vec)
            for t in kw["taus"]:
                vec = vec - t * ((M if kw["frozen"] else A(vec)) @ vec)
        elif isinstance(sch, FSI):
            M = A(vec)
            prev = cur = vec
            for a, b in kw["alphas"]:
                step = cur - kw["tau"] * ((M if kw["frozen"] else A(cur)) @ cur)
                prev, cur = cur, a * step + b * prev
            vec = cur
        else:
            assert isinstance(sch, Implicit)
            M = np.eye(vec.size) * (1 + kw["tau"] * kw["c"]) + kw["tau"] * A(vec)
            b = vec + kw["tau"] * reaction_numpy(spec, np.zeros(shape), f).reshape(-1)
            vec = verify._cg(lambda x: x @ M.T, b[None], kw["iterations"])[0]
    return vec.reshape(shape)


def battery(shape: tuple[int, ...], rng: np.random.Generator) -> list[tuple[str, float, np.ndarray]]:
    """(family, amplitude, u0) scaled so that max |u0 difference| equals the amplitude."""
    idx = np.indices(shape[1:]).astype(np.float64)
    x = idx[-1]
    chan = np.ones(shape[0])[(slice(None),) + (None,) * (len(shape) - 1)]
    shapes = {
        "random": rng.standard_normal(shape),
        "step": chan * ((x >= shape[-1] // 2) - 0.5),
        "alternating": chan * (-1.0) ** idx.sum(axis=0),
        "spike": np.where(np.arange(math.prod(shape)).reshape(shape) == math.prod(shape) // 2, 1.0, 0.0),
        "ramp": chan * (idx.sum(axis=0) - idx.sum(axis=0).mean()),
    }
    out = []
    for fam, u in shapes.items():
        scale = float(np.max(np.abs(np.diff(u, axis=-1)))) if shape[-1] > 1 else 1.0
        scale = scale or float(np.max(np.abs(u))) or 1.0
        for a in verify.AMPLITUDES[::3]:
            out.append((fam, a, u * (a / scale)))
    return out


def verify_operator(prog, size: Optional[int], seed: int, budget: float) -> "verify.VerificationReport":
    """Checks 1-5 of the module docstring."""
    import torch

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    shape = field_shape(prog, size)
    report = prog.stability
    spec = prog.arch.operator
    failures: list[str] = []
    notes: list[str] = []
    stable = report.verdict == "stable"
    lam = report.extra.get("lambda_max_bound")
    if report.extra.get("invariant_region") is not None:
        return _verify_region(prog, shape, rng, seed, budget, t0)
    cases = battery(shape, rng)
    norm = _operator_check(spec, cases[::4], lam, failures)
    net = prog.module(dtype=torch.float64)
    net_shape = shape if shape[0] > 1 else shape[1:]
    u0 = np.stack([c[2] for c in cases])
    with torch.no_grad():
        uk = net(torch.as_tensor(u0.reshape((len(cases),) + net_shape))).numpy().reshape(len(cases), -1)
    grow = verify._growth(u0.reshape(len(cases), -1), uk)
    nonfinite = verify._nonfinite_rows(uk)
    families: dict[str, dict[str, Any]] = {}
    for (fam, amp, _), g, nf in zip(cases, grow, nonfinite):
        best = families.setdefault(fam, {"family": fam, "growth": -math.inf, "amplitude": amp,
                                         "inputs": 0, "nonfinite": 0})
        best["inputs"] += 1
        best["nonfinite"] += int(nf)
        if g > best["growth"]:
            best["growth"], best["amplitude"] = float(g), amp
    tol = verify.growth_tolerance(float(sum(1 for _ in range(prog.arch.scheme.steps))) * 4.0)
    starts = u0[np.argsort(-grow)[:8]].reshape(8, -1)
    adv = verify.adversarial_search(net, starts, net_shape, budget, seed, prog.arch.scheme.steps)
    adv_input = adv.pop("input")
    comparison = _compare(prog, shape, rng)
    if not comparison["ok"]:
        failures.append(f"the network disagrees with the dense reference: relative difference "
                        f"{comparison['max_rel_diff']:.3g} > {comparison['tolerance']:g}")
    i_best = int(np.argmax(grow))
    best_g, best_u = float(grow[i_best]), u0[i_best]
    if adv["growth"] is not None and adv["growth"] > best_g:
        best_g, best_u = adv["growth"], adv_input
    grows = not best_g <= 1.0 + tol
    if stable and (nonfinite.any() or adv.get("nonfinite")):
        failures.append("BUG: the verdict is 'stable' but the network's output holds NaN or infinite "
                        "values; please report it")
    elif stable and grows:
        failures.append(f"BUG: the verdict is 'stable' but an input grows by {best_g:.17g} "
                        f"(> 1 + {tol:.2g}); please report it with the counterexample")
    if not stable and not grows:
        notes.append(f"no growing input found within the budget ({budget:g} s); that proves nothing")
    return verify.VerificationReport(
        name=prog.name, scheme=prog.model.scheme, grid=shape[1:][::-1], seed=seed, budget=budget,
        verdict=report.verdict, stable=report.stable, symbolic=report.to_dict(), norm=norm,
        battery=list(families.values()), adversarial=adv, reference=comparison, growth=best_g,
        tolerance=tol, counterexample_growth=best_g if grows else None, failures=failures,
        notes=notes, seconds=time.perf_counter() - t0,
        counterexample=np.asarray(best_u).reshape(net_shape) if grows else None)


def _verify_region(prog, shape, rng, seed: int, budget: float, t0: float) -> "verify.VerificationReport":
    """An invariant-region claim (docs/theory.md §11: values of u^0 and f in [a, b] stay in [a, b];
    a nonlinear reaction has no norm bound): the battery's shapes mapped onto [a, b] and its two
    ends go through the network (f = u^0); "growth" is 1 + the largest excursion of an output
    outside [a, b], relative to b - a.  Checks 2 and 4 as for a norm bound."""
    import torch

    a, b = prog.stability.extra["invariant_region"]
    report, spec = prog.stability, prog.arch.operator
    failures: list[str] = []
    cases = []
    for fam, amp, u in battery(shape, rng):
        lo, hi = float(u.min()), float(u.max())
        cases.append((fam, amp, np.full(shape, (a + b) / 2) if hi == lo else a + (b - a) * (u - lo) / (hi - lo)))
    cases += [("ends", 0.0, np.full(shape, a)), ("ends", 0.0, np.full(shape, b))]
    norm = _operator_check(spec, cases[::4], report.extra.get("lambda_max_bound"), failures)
    net = prog.module(dtype=torch.float64)
    net_shape = shape if shape[0] > 1 else shape[1:]
    u0 = np.stack([c[2] for c in cases])
    with torch.no_grad():
        uk = net(torch.as_tensor(u0.reshape((len(cases),) + net_shape))).numpy().reshape(len(cases), -1)
    with np.errstate(invalid="ignore"):
        out = np.maximum(uk.max(axis=1) - b, a - uk.min(axis=1))
    finite = np.all(np.isfinite(uk), axis=1)
    grow = np.where(finite, 1.0 + np.maximum(out, 0.0) / (b - a), np.inf)
    families: dict[str, dict[str, Any]] = {}
    for (fam, amp, _), g, ok in zip(cases, grow, finite):
        best = families.setdefault(fam, {"family": fam, "growth": -math.inf, "amplitude": amp,
                                         "inputs": 0, "nonfinite": 0})
        best["inputs"] += 1
        best["nonfinite"] += int(not ok)
        if g > best["growth"]:
            best["growth"], best["amplitude"] = float(g), amp
    tol = 1e-10
    comparison = _compare(prog, shape, rng, [rng.uniform(a, b, shape) for _ in range(3)])
    if not comparison["ok"]:
        failures.append(f"the network disagrees with the dense reference: relative difference "
                        f"{comparison['max_rel_diff']:.3g} > {comparison['tolerance']:g}")
    i_best = int(np.argmax(grow))
    best_g = float(grow[i_best])
    grows = not best_g <= 1.0 + tol
    if report.verdict == "stable" and grows:
        failures.append(f"BUG: the verdict claims the invariant region [{a:.17g}, {b:.17g}] but an input "
                        f"with values in it leaves it (growth {best_g:.17g}); please report it")
    notes = [f"the claim is the invariant region [{a:.10g}, {b:.10g}]: every input has its values in "
             f"it, and 'growth' is 1 + the largest excursion of the output outside it / (b - a)"]
    return verify.VerificationReport(
        name=prog.name, scheme=prog.model.scheme, grid=shape[1:][::-1], seed=seed, budget=budget,
        verdict=report.verdict, stable=report.stable, symbolic=report.to_dict(), norm=norm,
        battery=list(families.values()),
        adversarial={"skipped": "the claim is an invariant region, not a norm bound", "growth": None},
        reference=comparison, growth=best_g, tolerance=tol,
        counterexample_growth=best_g if grows else None, failures=failures, notes=notes,
        seconds=time.perf_counter() - t0,
        counterexample=np.asarray(u0[i_best]).reshape(net_shape) if grows else None)


def _operator_check(spec, cases, lam: Optional[float], failures: list[str]) -> dict[str, Any]:
    """Check 2: symmetric, positive semidefinite, lambda_max <= the bound, at the given inputs."""
    worst, worst_min, asym = 0.0, math.inf, 0.0
    for _, _, u in cases:
        A = dense_A(spec, u, u)
        scale = max(float(np.abs(A).max()), 1e-300)
        asym = max(asym, float(np.abs(A - A.T).max()) / scale)
        ev = np.linalg.eigvalsh((A + A.T) / 2)
        worst, worst_min = max(worst, float(ev[-1])), min(worst_min, float(ev[0]) / scale)
    ok = asym <= 1e-12 and worst_min >= -1e-10 and (lam is None or worst <= lam * (1 + 1e-12))
    if asym > 1e-12:
        failures.append(f"the frozen operator A(u) is not symmetric (relative asymmetry {asym:.3g})")
    if worst_min < -1e-10:
        failures.append(f"the frozen operator A(u) is indefinite (lambda_min / max|A| = {worst_min:.3g})")
    if lam is not None and worst > lam * (1 + 1e-12):
        failures.append(f"lambda_max(A(u)) = {worst:.17g} exceeds the proven bound {lam:.17g}")
    return {"actual": worst, "bound": lam, "method": f"dense eigvalsh of A(u) at {len(cases)} inputs",
            "ok": ok, "lambda_min_relative": worst_min, "asymmetry": asym}


def _compare(prog, shape, rng, inputs: Optional[list] = None) -> dict[str, Any]:
    """Check 5 on three inputs (``inputs``: instead of the default ones), at most
    REFERENCE_STEPS steps."""
    import torch

    steps = min(prog.arch.scheme.steps, REFERENCE_STEPS)
    net = prog.module(dtype=torch.float64, steps=steps)
    net_shape = shape if shape[0] > 1 else shape[1:]
    if inputs is None:
        inputs = [rng.standard_normal(shape), 1e-3 * rng.standard_normal(shape),
                  np.cumsum(rng.standard_normal(shape), axis=-1)]
    worst = 0.0
    for u in inputs:
        want = reference_run(prog, u, steps)
        with torch.no_grad():
            got = net(torch.as_tensor(u.reshape(net_shape))).numpy().reshape(shape)
        if not np.all(np.isfinite(want)):  # the scheme itself blows up (a cubic reaction on a
            # large input): the network must blow up too, and there is nothing else to compare
            worst = max(worst, 0.0 if not np.all(np.isfinite(got)) else math.inf)
            continue
        scale = max(np.linalg.norm(u), np.linalg.norm(want), 1e-300)
        with np.errstate(all="ignore"):
            d = float(np.linalg.norm(got - want) / scale)
        worst = max(worst, d if math.isfinite(d) else math.inf)
    return {"available": True, "ok": worst <= REFERENCE_RTOL, "max_rel_diff": worst,
            "tolerance": REFERENCE_RTOL, "compared": len(inputs),
            "detail": f"dense NumPy float64 ({steps} step(s), every term's dense matrix)"}


def _register() -> None:
    verify.register_operator_verifier(verify_operator)


_register()
