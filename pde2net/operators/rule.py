"""The operator model's stability report (docs/theory.md §1, §3-5, §9-12).

Every family gives a proven bound ``lambda_max(D_i^T G_i D_i) <= lam_i`` over every frozen G it
can produce; the sum has ``lambda_max(A) <= lam = sum_i lam_i`` (the terms are positive
semidefinite, and lambda_max is subadditive on symmetric matrices).  Then:

- explicit: ``tau <= 2 / lam`` gives ``||u^(k+1)|| <= ||u^k||`` (§1 with A in place of D^T G D);
  with a reaction part, the reaction family's bound and statement (§11);
- FED / FSI with weights frozen per cycle: the cycle is stable when ``tau_max <= 2 / lam`` (§3, §4);
- implicit CG: ``(I + tau (A + c)) u^(k+1) = u^k + tau b(f)`` is unconditionally stable for
  A positive semidefinite and c >= 0 (§5), up to CG's rounding (kappa eps, §14).

A verdict "stable" needs every term's bound proven, the diffusivities real and finite, and their
op trees finite in float32 and float64; otherwise the report says why not.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import sympy as sp

from ..analyse import Model
from ..lower import FED, FSI, RADIAL_VAR, Architecture, Explicit, Implicit
from ..stability import CG_ROUNDING_LIMIT, StabilityReport, _le, float_check, float_down
from .base import REACTION_FAMILY, Bound, ReactionBound, cite


def analyse(model: Model, arch: Architecture) -> StabilityReport:
    """The report of an operator-model network."""
    spec = arch.operator
    ctx = spec.context
    bounds = [t.bound(ctx) for t in spec.terms]
    report = _Report(model, arch, bounds)
    failed = [b for b in bounds if b.failure or b.value is None or not b.proven]
    if any(b.failure == "negative" for b in failed):
        why = "; ".join(b.reason for b in failed if b.failure == "negative")
        return report.done(False, "not stable", f"backward diffusion: {why}")
    if any(b.failure == "unbounded" for b in failed):
        why = "; ".join(b.reason for b in failed if b.failure == "unbounded")
        return report.done(False, "not stable", f"unbounded diffusivity: {why}; no step size is proven")
    if failed:
        why = "; ".join(b.reason for b in failed)
        return report.done(False, "cannot prove", f"cannot prove: {why}")
    lam = sp.Add(*[b.value for b in bounds])
    report.lam = lam
    float_failure = _float_failures(spec)
    verdict = _scheme_verdict(report, lam, ctx)
    if float_failure and verdict.verdict == "stable":
        verdict.verdict, verdict.stable, verdict.guarantee = "cannot prove", False, "none"
        verdict.reason = f"cannot prove: {float_failure} (the bound holds only where the network is finite)"
    return verdict


class _Report:
    """Collects the report's common fields; :meth:`done` makes the StabilityReport."""

    def __init__(self, model: Model, arch: Architecture, bounds: list[Bound]) -> None:
        self.model, self.arch, self.bounds = model, arch, bounds
        self.lam: Optional[sp.Expr] = None
        self.hypotheses: list[dict[str, Any]] = [dict(h) for b in bounds for h in b.hypotheses]
        for spec_term, b in zip(arch.operator.terms, bounds):
            self.hypotheses.append({"name": f"lambda_max <= {b.value}" if b.value is not None
                                    else "a proven bound on lambda_max",
                                    "holds": b.proven and b.value is not None,
                                    "detail": f"{spec_term.describe()}: {b.reason} ({b.section})"})
        self.statement = "; ".join(sorted({b.section for b in bounds}))
        self.extra: dict[str, Any] = {
            "terms": [t.describe() for t in arch.operator.terms],
            "term_bounds": [None if b.value is None else str(b.value) for b in bounds],
            "reaction": arch.operator.reaction.text or None,
            "channels": arch.operator.context.channels,
        }
        sch = arch.scheme
        self.tau = getattr(sch, "tau", None) if not isinstance(sch, FED) else sch.tau_max
        self.exact: dict[str, str] = {"tau": str(self.tau)}

    def done(self, stable: bool, verdict: str, reason: str, tau_max: Optional[sp.Expr] = None,
             guarantee: str = "none", unconditional: bool = False,
             statement: Optional[str] = None) -> StabilityReport:
        # the scheme's statement first, then the sections the terms' bounds rest on
        parts = [p for p in (statement or "").split("; ") if p] + self.statement.split("; ")
        statement = "; ".join(dict.fromkeys(p for p in parts if p))
        if tau_max is not None:
            self.exact["tau_max"] = str(tau_max)
        if self.lam is not None:
            self.exact["lambda_max_bound"] = str(self.lam)
            self.extra["lambda_max_bound"] = float(self.lam)
        m, a = self.model, self.arch
        return StabilityReport(
            name=m.name, scheme=m.scheme, order=1, L=None,
            norm_D_sq=None, tau=float(self.tau), tau_max=None if tau_max is None else float_down(tau_max),
            stable=stable, reason=reason, bound_expr="tau <= 2 / lambda_max(A), lambda_max(A) <= "
            + " + ".join(str(b.value) for b in self.bounds if b.value is not None),
            verdict=verdict, guarantee=guarantee,
            statement=statement, unconditional=unconditional,
            flux="; ".join(t.describe() for t in a.operator.terms),
            stencil="operator model", boundary=", ".join(a.operator.context.boundaries),
            h=[float(h) for h in m.grid], hypotheses=self.hypotheses, extra=self.extra, exact=self.exact)


def _scheme_verdict(r: _Report, lam: sp.Expr, ctx) -> StabilityReport:
    sch = r.arch.scheme
    reaction = r.arch.operator.reaction
    if isinstance(sch, Implicit):
        return _implicit(r, lam, ctx)
    if not reaction.empty:
        rb: ReactionBound = REACTION_FAMILY[0].bound(reaction, lam, ctx, terms=r.arch.operator.terms)
        r.hypotheses.extend(dict(h) for h in rb.hypotheses)
        if getattr(rb, "forcing", None) is not None:  # ||u^n|| <= max(||u^0||, ||g||): verify's claim
            r.extra["bounded_by_forcing"] = [float(x) for x in rb.forcing]
        if getattr(rb, "region", None) is not None:  # the claim verify checks (docs/theory.md §11)
            r.extra["invariant_region"] = [float(x) for x in rb.region]
            if _le(r.tau, rb.tau_max) is not True:  # the region may be left; no norm statement
                return r.done(False, "cannot prove", f"cannot prove: tau = {float(r.tau):.6g} exceeds "
                              f"the invariant-region bound {float(rb.tau_max):.6g} ({rb.reason}), and a "
                              f"nonlinear reaction has no norm bound ({rb.section})", rb.tau_max,
                              statement=rb.section)
            # "stable" promises every input; the region covers inputs with values in [a, b] only
            r.extra["invariant_region_proven"] = True
            return r.done(False, "cannot prove",
                          f"cannot prove a bound for every input: a nonlinear reaction has no norm "
                          f"bound; proven for inputs with values in [{rb.region[0]}, {rb.region[1]}]: "
                          f"{rb.statement} ({rb.section})", rb.tau_max, statement=rb.section)
        if rb.tau_max is None:
            verdict = "not stable" if rb.failure == "negative" else "cannot prove"
            return r.done(False, verdict, rb.reason, statement=rb.section)
        return _explicit_like(r, rb.tau_max, f"{rb.statement} ({rb.section})", rb.section,
                              "tau <= " + str(rb.tau_max))
    tau_max = 2 / lam
    statement = cite(1) if isinstance(sch, Explicit) else cite(3) if isinstance(sch, FED) else cite(4)
    if isinstance(sch, (FED, FSI)) and sch.update != "cycle":
        return r.done(False, "cannot prove", f"cannot prove: with update = step the weights change "
                      f"within a cycle, and the {r.model.scheme.upper()} guarantee needs one frozen "
                      f"operator per cycle ({statement})", tau_max, "none")
    what = ("||u^(k+1)|| <= ||u^k|| for every input" if isinstance(sch, Explicit) else
            "each cycle's frozen operator has spectrum in [0, 2/tau] and the cycle is non-expansive")
    b = ctx.dirichlet_value
    if b is not None:
        what += (f", for v = u - b with the boundary value b = {b} (the network evolves v under the "
                 f"homogeneous Dirichlet problem, {cite(12)}): ||u^(k+1) - b|| <= ||u^k - b||")
    return _explicit_like(r, tau_max, what + f" ({statement})", statement, "tau <= 2 / lambda_max(A)")


def _explicit_like(r: _Report, tau_max: sp.Expr, claim: str, statement: str, rule: str) -> StabilityReport:
    tau = r.tau
    ok = _le(tau, tau_max)
    r.hypotheses.append({"name": rule, "holds": ok, "detail": f"tau = {tau}, bound = {tau_max}"})
    if ok is None:
        return r.done(False, "cannot prove", "cannot prove: tau is within 1e-45 of the bound", tau_max)
    if not ok:
        return r.done(False, "not stable", f"tau = {_close(tau, tau_max)} exceeds the bound {tau_max} "
                      f"({rule}, lambda_max(A) <= {r.lam}); above it small inputs along the top "
                      f"eigenvector grow ({statement})", tau_max)
    return r.done(True, "stable", f"every term's weights are proven in range, lambda_max(A) <= {r.lam}, "
                  f"and tau = {float(tau):.6g} <= {float(tau_max):.6g}: {claim}", tau_max, "proof",
                  statement=statement)


def _close(tau: sp.Expr, bound: sp.Expr) -> str:
    """tau for a message: 6 digits, or every digit when 6 would print it equal to the bound."""
    short = f"{float(tau):.6g}"
    return short if short != f"{float(bound):.6g}" else f"{tau} (= {float(tau)!r})"


def _implicit(r: _Report, lam: sp.Expr, ctx) -> StabilityReport:
    sch: Implicit = r.arch.scheme
    reaction = r.arch.operator.reaction
    c = sp.Integer(0)
    implicit_claim = None
    if not reaction.empty:
        fam = REACTION_FAMILY[0]
        implicit_claim = fam.implicit(reaction, ctx) if hasattr(fam, "implicit") else None
        if implicit_claim is not None and implicit_claim.failure:  # a source: constants grow
            return r.done(False, "not stable" if implicit_claim.failure == "negative" else "cannot prove",
                          implicit_claim.reason, statement=implicit_claim.section)
        if implicit_claim is not None and implicit_claim.forcing is not None:
            r.extra["bounded_by_forcing"] = [float(x) for x in implicit_claim.forcing]
        c = fam.linear_coefficient(reaction, ctx)
        if c is None or not (sp.Integer(0) + c).is_number or not c >= 0:
            return r.done(False, "not stable" if c is not None else "cannot prove",
                          f"the implicit step needs r(u, f) = -c u + b(f) with c >= 0; here c = {c} "
                          f"({cite(11)})", statement=cite(11))
    kappa = 1 + sch.tau * (lam + c)
    r.extra["solver"], r.extra["iterations"] = "cg", sch.iterations
    for dtype, eps in (("float32", 2.0 ** -23), ("float64", 2.0 ** -52)):
        holds = float(kappa) * eps <= CG_ROUNDING_LIMIT
        r.hypotheses.append({"name": f"CG rounding in {dtype}", "holds": holds,
                             "detail": f"kappa eps = {float(kappa) * eps:.3g} <= {CG_ROUNDING_LIMIT} "
                                       f"({cite(14)})"})
        if not holds:
            return r.done(False, "cannot prove", f"cannot prove: the CG solve's condition number "
                          f"{float(kappa):.3g} is too large for {dtype} ({cite(14)})", statement=cite(5))
    claim = ("||u^(k+1)|| <= ||u^k||" if reaction.empty else implicit_claim.statement
             if implicit_claim is not None else
             "||u^(k+1)|| <= max(||u^k||, ||f||) when the data weight is at most c")
    if ctx.dirichlet_value is not None:
        claim = (f"||u^(k+1) - b|| <= ||u^k - b|| with the boundary value b = {ctx.dirichlet_value} "
                 f"({cite(12)})")
    return r.done(True, "stable", f"A(u^k) is positive semidefinite (each term's weights in range) and "
                  f"c = {c} >= 0: the lagged-weight implicit step is unconditionally stable, {claim} "
                  f"({cite(5)})", None, "proof", True, statement=cite(5))


def _float_failures(spec) -> str:
    """Why a diffusivity's op tree is not finite in float32/float64 (empty if it is)."""
    for t in spec.terms:
        for i, d in enumerate(getattr(t, "diffusivities", ())):
            for dtype in ("float32", "float64"):
                fc = float_check([(f"g(s2) of {t.describe()}", d.op, RADIAL_VAR)], d.params, dtype,
                                 float(d.L) if d.L is not None and math.isfinite(float(d.L)) else 1.0)
                if not fc.ok:
                    return fc.detail
    return ""
