"""Stability rules for FED, FSI, implicit and multigrid (docs/theory.md §3-§7); registered in
:data:`pde2net.stability._RULES`.  NumPy and sympy only: ``pde2net check`` never imports torch.

Each verdict rests on one statement of docs/theory.md, named in ``statement``:

- FED / FSI (3, 4): with ``0 <= Phi(s)/s <= L`` and ``tau <= 2 / (L ||D||^2)`` a cycle is stable
  when the diffusivity is frozen for the cycle (or the flux is linear): the frozen cycle is the
  cycle polynomial of a symmetric matrix with spectrum in [0, L ||D||^2], bounded by 1 there.
  Re-evaluating the diffusivity every step is NOT proven stable (counterexamples exist).
- implicit (5): the lagged-diffusivity step is stable for every tau when g >= 0; with a fixed
  number of iterations, CG from 0 never increases the norm (proof), damped Jacobi from 0 with
  two-point rows (m = 1) and omega <= 1 neither (max and 1-norm bounds, interpolated); otherwise
  no proof.  Jacobi converges for ``omega < 2/K`` (K-point rows).
- fixed point (6): ``v <- u - tau D^T Phi(D v)`` converges for ``tau < 1 / (Lip ||D||^2)``;
  no norm bound for a fixed number of iterations is proven.
- multigrid (7): the exact linear implicit step is stable for every tau (proof); the V-cycle
  convergence factor is computed for the given N (observed), so a fixed number of cycles is
  reported as "cannot prove", guarantee "observed".
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import sympy as sp

from . import multigrid as mg
from .analyse import Model
from .lower import FED, FSI, Architecture, Implicit, Multigrid, jacobi_width
from .stability import (FluxFacts, StabilityReport, _base, _flux_hypotheses, _fmt, _le, float_down,
                        flux_facts, lipschitz, norm_bound, positive_number, register_rule)
from .stencils import apply_adjoint_numpy, apply_numpy

if TYPE_CHECKING:  # NumPy is loaded only for the multigrid factor (check starts faster)
    import numpy as np

MULTIGRID_MAX_N = 65537  # the factor is computed by power iteration in NumPy; beyond this, skipped


def _exact_tau_bound(facts: FluxFacts, nb: sp.Expr) -> sp.Expr:
    b = 2 / (facts.L * nb)
    return sp.nsimplify(b) if b.is_Float else b


def _flux_failure(facts: FluxFacts, nb: Optional[sp.Expr]) -> Optional[tuple[bool, str, str]]:
    """(stable, verdict, reason) when the flux or D rules out every proof, else None."""
    if facts.status == "negative":
        return (False, "not stable", f"backward diffusion (negative diffusivity: {facts.detail}); "
                f"the proof needs Phi(s)/s >= 0, and with a sign change a ramp grows for every tau > 0 "
                f"(docs/theory.md §1)")
    if facts.status == "unbounded":
        return (False, "not stable", f"unbounded diffusivity: {facts.detail}, so no step size "
                "satisfies tau <= 2/(L ||D||^2)")
    if facts.status == "unknown":
        return (False, "cannot prove", f"cannot prove: {facts.detail}")
    if not positive_number(nb):
        return (False, "cannot prove", "cannot prove: no exact bound on ||D||^2 for this stencil")
    return None


class _Builder:
    """Collects the pieces of a report and builds it."""

    def __init__(self, model: Model, arch: Architecture, statement: str, tau: sp.Expr,
                 nb: Optional[sp.Expr], facts: FluxFacts) -> None:
        self.base = _base(model, arch, facts, nb)
        self.tau, self.statement = tau, statement
        self.hyps = _flux_hypotheses(facts)
        self.extra: dict[str, Any] = {}
        self.exact = {"tau": str(tau), "L": _fmt(facts.L), "norm_D_sq": _fmt(nb)}

    def __call__(self, stable: bool, verdict: str, reason: str, tau_max: Optional[sp.Expr] = None,
                 guarantee: str = "none", unconditional: bool = False,
                 bound_expr: Optional[str] = None) -> StabilityReport:
        if tau_max is not None:
            self.exact["tau_max"] = str(tau_max)
        base = dict(self.base)
        if bound_expr is not None:
            base["bound_expr"] = bound_expr
        return StabilityReport(
            **base, tau=float(self.tau), tau_max=None if tau_max is None else float_down(tau_max),
            stable=stable, reason=reason, verdict=verdict, guarantee=guarantee,
            statement=self.statement, unconditional=unconditional, hypotheses=self.hyps,
            extra=self.extra, exact=self.exact)


# --------------------------------------------------------------------------------- FED / FSI
def _cycle_scheme(model: Model, arch: Architecture, tau: sp.Expr, n: int, cycles: int, update: str,
                  name: str, statement: str) -> tuple[_Builder, Optional[StabilityReport]]:
    facts = flux_facts(model.flux_value)
    nb = norm_bound(arch)
    out = _Builder(model, arch, statement, tau, nb, facts)
    cycle_time = tau * (n * n + n) / 3
    out.extra.update({
        "steps": cycles,  # the outer loop of the network (what ``run --steps`` sets) counts cycles
        "cycle_length": n, "cycles": cycles, "update": update,
        "cycle_stopping_time": float(cycle_time), "stopping_time": float(cycles * cycle_time),
        "stopping_time_formula": "tau (n^2 + n) / 3 per cycle",
    })
    out.exact["cycle_stopping_time"] = str(sp.nsimplify(cycle_time))
    fail = _flux_failure(facts, nb)
    if fail is not None:
        return out, out(*fail)
    if facts.L == 0:
        return out, out(True, "stable", "Phi = 0: every step is the identity", None, "proof", True)
    bound = _exact_tau_bound(facts, nb)
    out.hyps.append({"name": "tau <= 2/(L ||D||^2)", "holds": None,
                     "detail": f"{'tau_max' if name == 'FED' else 'tau'} = {tau}, bound = {bound}"})
    ok = _le(tau, bound)
    out.hyps[-1]["holds"] = ok
    if ok is None:
        return out, out(False, "cannot prove", "cannot prove: tau is within 1e-45 of the bound", bound)
    if not ok:
        return out, out(False, "not stable",
                        f"tau = {float(tau):.6g} exceeds 2/(L ||D||^2) = {float(bound):.6g}; outside that "
                        f"interval the {name} cycle polynomial explodes (docs/theory.md §3)", bound)
    linear = model.linear
    out.hyps.append({"name": "frozen per cycle", "holds": linear or update == "cycle",
                     "detail": "linear flux (nothing to freeze)" if linear else f"update = {update}"})
    if not linear and update == "step":
        return out, out(False, "cannot prove",
                        f"not proven stable: the diffusivity is re-evaluated every step (update = step); "
                        f"{name} is proven stable only with the diffusivity frozen per cycle, and "
                        f"per-step updates can grow (docs/theory.md §3, §4). Use update = cycle.", bound)
    how = "linear flux" if linear else "diffusivity frozen per cycle"
    return out, out(True, "stable",
                    f"0 <= Phi(s)/s <= L = {facts.L}, tau = {float(tau):.6g} <= 2/(L ||D||^2) = "
                    f"{float(bound):.6g} and {how}: each cycle's polynomial is bounded by 1 on the "
                    f"spectrum, ||u|| never grows from cycle to cycle", bound, "proof")


def _fed(model: Model, arch: Architecture) -> StabilityReport:
    sch: FED = arch.scheme
    out, rep = _cycle_scheme(model, arch, sch.tau_max, sch.cycle_length, sch.cycles, sch.update,
                             "FED", "docs/theory.md §3: FED cycles with the diffusivity frozen per cycle")
    rep.extra["step_sizes"] = [float(t) for t in sch.taus]
    rep.extra["step_order"] = "Leja"
    rep.extra["largest_step"] = max(rep.extra["step_sizes"])
    return rep


def _fsi(model: Model, arch: Architecture) -> StabilityReport:
    sch: FSI = arch.scheme
    out, rep = _cycle_scheme(model, arch, sch.tau, sch.cycle_length, sch.cycles, sch.update, "FSI",
                             "docs/theory.md §4: FSI cycles with the diffusivity frozen per cycle")
    rep.extra["alphas"] = [str(a) for a in sch.alphas]
    rep.extra["step_sizes"] = [float(sch.tau)] * sch.cycle_length  # every FSI step uses tau
    rep.extra["largest_step"] = float(sch.tau)
    return rep


# ---------------------------------------------------------------------------------- implicit
def _implicit(model: Model, arch: Architecture) -> StabilityReport:
    sch: Implicit = arch.scheme
    facts = flux_facts(model.flux_value)
    nb = norm_bound(arch)
    if sch.solver == "fixed_point":
        return _fixed_point(model, arch, sch, facts, nb)
    out = _Builder(model, arch, "docs/theory.md §5: semi-implicit (lagged diffusivity) steps", sch.tau, nb, facts)
    k = jacobi_width(model)
    out.extra.update({"steps": sch.steps, "stopping_time": float(sch.tau * sch.steps),
                      "solver": sch.solver, "iterations": sch.iterations, "start": "x0 = 0"})
    if sch.solver == "jacobi":
        limit = sp.Integer(2) / k
        converges = bool(sch.omega < limit or (k == 2 and sch.omega <= 1))
        out.extra.update({"omega": float(sch.omega), "jacobi_omega_limit": float(limit),
                          "jacobi_condition": f"omega < 2/K = {limit} (K = {k} nonzero weights per row"
                          f"{'; omega = 1 also converges for K = 2: strict diagonal dominance' if k == 2 else ''})",
                          "jacobi_converges": converges})
    fail = _flux_failure(facts, nb)
    if fail is not None:  # CG needs no tau bound, but a missing ||D|| bound is a sign of trouble
        return out(*fail)
    unc = "unconditional"
    if sch.solver == "cg":
        out.statement = "docs/theory.md §5: CG from x0 = 0 never increases the norm"
        return out(True, "stable", f"g = Phi(s)/s in [0, {facts.L}] so I + tau D^T G D is symmetric "
                   f"positive definite; CG from x0 = 0 never increases the 2-norm, for every tau and any "
                   f"number of iterations (docs/theory.md §5)", None, "proof", True, unc)
    two_point = model.order == 1 and k == 2
    if two_point and sch.omega <= 1:
        out.statement = "docs/theory.md §5: Jacobi from x0 = 0 with m = 1 cannot increase the norm"
        return out(True, "stable", f"m = 1 with two-point rows: I + tau D^T G D is an M-matrix with "
                   f"nonnegative row sums, so damped Jacobi (omega = {sch.omega} <= 1) from x0 = 0 keeps "
                   f"||x||_inf and ||x||_1, hence ||x||_2, below ||u^k|| for every tau (docs/theory.md §5)",
                   None, "proof", True, unc)
    conv = "converges" if out.extra["jacobi_converges"] else "is not proven to converge"
    return out(False, "cannot prove",
               f"cannot prove: the exact lagged-diffusivity step is stable for every tau (docs/theory.md §5), "
               f"and damped Jacobi with omega = {sch.omega} {conv} (omega < 2/{k}), but a fixed number "
               f"of Jacobi iterations has no proven norm bound for m = {model.order}; use solver = cg",
               None, "none", True, unc)


def _fixed_point(model: Model, arch: Architecture, sch: Implicit, facts: FluxFacts,
                 nb: Optional[sp.Expr]) -> StabilityReport:
    out = _Builder(model, arch, "docs/theory.md §6: fixed-point iteration for the fully implicit step",
                   sch.tau, nb, facts)
    lip = lipschitz(model.flux_value)
    out.extra.update({"steps": sch.steps, "stopping_time": float(sch.tau * sch.steps),
                      "solver": "fixed_point", "iterations": sch.iterations, "start": "v0 = u^k",
                      "lipschitz": None if lip is None else float(lip),
                      "fixed_point_condition": "tau < 1/(Lip ||D||^2)"})
    out.exact["lipschitz"] = _fmt(lip)
    if lip is None or not positive_number(nb):
        why = "sup |Phi'(s)| could not be derived" if lip is None else "no exact bound on ||D||^2"
        out.extra["fixed_point_limit"] = None
        return out(False, "cannot prove", f"cannot prove: {why}, so the fixed-point iteration's "
                   f"convergence limit 1/(Lip ||D||^2) is unknown (docs/theory.md §6)", None, "none",
                   bound_expr="1/(Lip*||D||^2)")
    limit = 1 / (lip * nb)
    limit = sp.nsimplify(limit) if limit.is_Float else limit
    out.extra["fixed_point_limit"] = float(limit)
    out.extra["fixed_point_converges"] = bool(sp.N(limit - sch.tau, 50) > 0)  # strict: tau < limit
    conv = ("converges (contraction factor tau Lip ||D||^2 = "
            f"{float(sch.tau * lip * nb):.4g} < 1)" if out.extra["fixed_point_converges"]
            else f"is not guaranteed to converge (tau >= 1/(Lip ||D||^2) = {float(limit):.6g}; beyond "
                 f"it a nonmonotone flux can have several solutions)")
    return out(False, "cannot prove",
               f"cannot prove: with Lip = sup |Phi'| = {lip} the iteration {conv} (docs/theory.md §6), but no "
               f"norm bound for a fixed number of iterations is proven", limit, "none",
               bound_expr="1/(Lip*||D||^2)")


# --------------------------------------------------------------------------------- multigrid
def _multigrid(model: Model, arch: Architecture) -> StabilityReport:
    sch: Multigrid = arch.scheme
    facts = flux_facts(model.flux_value)
    nb = norm_bound(arch)
    out = _Builder(model, arch, "docs/theory.md §7: multigrid V-cycles for the linear implicit step",
                   sch.tau, nb, facts)
    st = arch.stencils[0]
    periodic = st.boundary == "periodic"
    if model.size is not None:
        n, where = model.size[0], "the size statement"
    else:
        n, where = (256 if periodic else 257), "default (no size statement)"
    out.extra.update({"steps": sch.steps, "stopping_time": float(sch.tau * sch.steps),
                      "levels": sch.levels, "pre": sch.pre, "post": sch.post, "cycles": sch.cycles,
                      "smoother": f"damped Jacobi, omega = {sch.omega}",
                      "multigrid_N": n, "multigrid_N_from": where,
                      "coarse_kernels": [[str(w) for w in k] for k in sch.coarse_kernels]})
    factor, note = multigrid_factor(arch, n)
    out.extra["convergence_factor"] = factor
    out.extra["convergence_factor_note"] = note
    fail = _flux_failure(facts, nb)
    if fail is not None and facts.status != "ok":
        return out(*fail)
    got = f"{factor:.3g} per V({sch.pre},{sch.post})-cycle for N = {n}" if factor is not None else note
    return out(False, "cannot prove",
               f"cannot prove: the exact step (I + tau c D^T D) u^(k+1) = u^k is stable for every tau "
               f"(docs/theory.md §5), but the network runs {sch.cycles} V-cycle(s) per step; their convergence "
               f"factor is observed, not proven: {got} (docs/theory.md §7)", None, "observed", True, "unconditional")


def multigrid_factor(arch: Architecture, n: int) -> tuple[Optional[float], str]:
    """The V-cycle convergence factor for n points (NumPy power iteration), or None and why."""
    sch: Multigrid = arch.scheme
    st = arch.stencils[0]
    periodic = st.boundary == "periodic"
    if n > MULTIGRID_MAX_N:
        return None, f"N = {n} is above {MULTIGRID_MAX_N}: the factor is not computed by check"
    try:
        kind = mg.transfer_kind(n, periodic)
    except ValueError as exc:
        return None, str(exc)
    scale = float(sch.tau * sch.coefficient)

    def apply(x: np.ndarray) -> np.ndarray:
        return x + scale * apply_adjoint_numpy(st.stencil, apply_numpy(st.stencil, x, st.boundary),
                                               st.boundary)

    try:
        rho = mg.convergence_factor(apply, n, st.stencil.size - 1, periodic, sch.levels, sch.pre,
                                    sch.post, float(sch.omega))
    except ValueError as exc:
        return None, str(exc)
    return rho, f"{kind}-centred transfers, power iteration on the error (40 V-cycles)"


RULES = {FED: _fed, FSI: _fsi, Implicit: _implicit, Multigrid: _multigrid}
for _scheme, _rule in RULES.items():
    register_rule(_scheme, _rule)


# ------------------------------------------------------------------- text for `pde2net check`
def bound_note(report: StabilityReport) -> str:
    """What the ``tau_max`` line of the text report means for this scheme."""
    if report.scheme == "implicit" and report.extra.get("solver") == "fixed_point":
        return f"fixed-point convergence limit, tau < 1/(Lip ||D||^2) = {report.bound_expr}"
    if report.unconditional and report.tau_max is None:
        return "unconditional: no step-size restriction"
    return f"= 2/(L ||D||^2) = {report.bound_expr}"


def scheme_facts(report: StabilityReport) -> list[str]:
    """The scheme-specific lines of the text report (empty for the explicit scheme)."""
    x = report.extra
    if report.scheme in ("fed", "fsi"):
        lines = [f"  cycle stopping time  {x['cycle_stopping_time']:.10g}   (tau (n^2 + n)/3, n = "
                 f"{x['cycle_length']})",
                 f"  total time           {x['stopping_time']:.10g}   ({x['cycles']} cycle(s))",
                 f"  diffusivity          {'frozen per cycle' if x['update'] == 'cycle' else 'per step'}"]
        if report.scheme == "fed":
            lines.append(f"  step sizes           {len(x['step_sizes'])} in Leja order, largest "
                         f"{x['largest_step']:.6g}")
        return lines
    if report.scheme == "implicit":
        lines = [f"  solver               {x['solver']}, {x['iterations']} iterations per step from "
                 f"{x['start']}, {x['steps']} step(s), total time {x['stopping_time']:.10g}"]
        if x["solver"] == "jacobi":
            lines.append(f"  Jacobi damping       omega = {x['omega']:.6g}; converges for {x['jacobi_condition']}: "
                         f"{'yes' if x['jacobi_converges'] else 'NO'}")
        if x["solver"] == "fixed_point":
            lip = "unknown" if x["lipschitz"] is None else f"{x['lipschitz']:.10g}"
            lim = "unknown" if x["fixed_point_limit"] is None else f"{x['fixed_point_limit']:.10g}"
            lines.append(f"  Lip = sup |Phi'|     {lip}")
            lines.append(f"  fixed-point limit    {lim}   (tau < 1/(Lip ||D||^2): "
                         f"{'yes' if x.get('fixed_point_converges') else 'NO'})")
        return lines
    if report.scheme == "multigrid":
        rho = "not computed" if x["convergence_factor"] is None else f"{x['convergence_factor']:.4g}"
        return [f"  V-cycles             V({x['pre']},{x['post']}) x {x['cycles']} per step, {x['steps']} "
                f"step(s), {x['smoother']}",
                f"  convergence factor   {rho} per V-cycle for N = {x['multigrid_N']} "
                f"({x['multigrid_N_from']}; {x['convergence_factor_note']})"]
    return []
