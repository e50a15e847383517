"""pde2net verify: each check against an independent number (closed forms, dense NumPy references
written here or in tests/reference.py), and the consistency logic on planted bugs."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

import pde2net
from pde2net import cli, lower, verify
from reference import binomial_weights, dense_difference, explicit_dense

FAST = dict(seed=0, budget=0.2)


def spec(flux: str = "s / (1 + s^2 / lambda^2)", m: int = 1, tau: str = "0.25", steps: int = 20,
         boundary: str = "neumann", size: int = 64, scheme: str | None = None) -> str:
    d = "d" + "x" * m
    sign = "" if m % 2 else "-"
    sch = scheme or f"explicit(tau = {tau}, steps = {steps})"
    return (f"pde t\nparam lambda = 0.1\nfield u(x)\nflux phi(s) = {flux}\n"
            f"equation dt(u) = {sign}{d}( phi({d}(u)) )\nsize N = {size}\nboundary {boundary}\n"
            f"scheme {sch}\n")


def run_verify(text: str, **kw):
    prog = pde2net.compile_text(text)
    return prog, verify.verify(prog, **{**FAST, **kw})


# ------------------------------------------------------------------------- 2. the norm
def test_norm_is_the_closed_form_finite_n_value():
    """docs/theory.md §2: zero flux, forward difference: ||D||^2 = 4 cos^2(pi / 2N) / h^2."""
    n = 64
    _, r = run_verify(spec("s", tau="0.01", steps=2, size=n))
    assert r.norm["actual"] == pytest.approx(4 * math.cos(math.pi / (2 * n)) ** 2, rel=1e-12)
    assert r.norm["bound"] == 4.0 and r.norm["ok"]


@pytest.mark.parametrize("m, boundary", [(2, "neumann"), (3, "dirichlet"), (2, "periodic")])
def test_norm_matches_the_dense_reference(m, boundary):
    n = 48
    _, r = run_verify(spec("s", m=m, tau="0.001", steps=2, size=n, boundary=boundary))
    d = dense_difference(binomial_weights(m), 0, n, boundary, m=m)
    assert r.norm["actual"] == pytest.approx(np.linalg.norm(d, 2) ** 2, rel=1e-12)
    assert r.norm["bound"] == 4.0 ** m and r.norm["ok"]  # periodic m = 2 attains 16 up to round-off


@pytest.mark.parametrize("boundary", ["neumann", "periodic", "dirichlet"])
def test_sparse_assembly_equals_the_dense_reference_matrix(boundary):
    prog = pde2net.compile_text(spec("s", m=2, tau="0.01", boundary=boundary))
    ir = prog.arch.stencils[0]
    sparse = verify.stencil_entries(ir, 40).dense()
    want = dense_difference(binomial_weights(2), 0, 40, boundary, m=2)
    np.testing.assert_array_equal(sparse, want)


def test_lanczos_top_eigenvalue_matches_dense_svd():
    prog = pde2net.compile_text(spec("s", m=1, tau="0.01", boundary="periodic", size=300))
    ir = prog.arch.stencils[0]
    dense_op = verify.DenseOperator(ir.stencil.matrix(300, "periodic"), prog.arch.flux, (300,))
    sparse_op = verify.DenseOperator(verify.stencil_entries(ir, 300), prog.arch.flux, (300,))
    rng = np.random.default_rng(1)
    s_dense, v_dense, _ = verify.top_singular(dense_op, rng)
    s_lanczos, v, method = verify.top_singular(sparse_op, rng)
    assert "Lanczos" in method
    # periodic forward difference: the circulant's largest |1 - e^(i theta_k)|^2, theta_k = 2 pi k / N
    assert s_dense == pytest.approx(4.0, rel=1e-12)
    assert s_lanczos == pytest.approx(s_dense, rel=1e-10)
    d = dense_difference([-1, 1], 0, 300, "periodic")
    assert np.linalg.norm(d @ v) ** 2 == pytest.approx(s_dense, rel=1e-8)


def test_a_norm_above_the_bound_fails():
    prog = pde2net.compile_text(spec())
    claimed = dataclasses.replace(prog.stability, norm_D_sq=3.9)  # actual for N = 64 is 3.9976
    prog.__dict__["stability"] = claimed
    r = verify.verify(prog, **FAST)
    assert not r.norm["ok"] and r.exit_status == 1
    assert any("exceeds the bound" in f for f in r.failures)


# ------------------------------------------------------------------ 3. battery and growth
def test_stable_examples_show_no_growth(examples_dir):
    for name in ("perona_malik", "charbonnier", "heat"):
        prog = pde2net.load(examples_dir / f"{name}.pde")
        r = verify.verify(prog, size=64, **FAST)
        assert r.verdict == "stable" and r.consistent, r.failures
        assert r.growth <= 1 + r.tolerance
        assert r.counterexample is None and r.counterexample_growth is None


@pytest.mark.parametrize("factor, grows", [(1.0, False), (1.02, True)])
def test_linear_tightness_at_the_bound(factor, grows):
    """Heat equation, tau = factor * h^2/2 (the symbol bound): at the bound nothing grows; 2% above
    it the top singular vector grows by |1 - tau ||D_N||^2|| per step (computed here)."""
    n, steps = 64, 30
    tau = 0.5 * factor
    _, r = run_verify(spec("s", tau=repr(tau), steps=steps, size=n))
    sigma2 = (4 * math.cos(math.pi / (2 * n)) ** 2)
    if not grows:
        assert r.verdict == "stable" and r.counterexample is None and r.consistent
        return
    assert r.verdict == "not stable" and r.consistent
    expected = abs(1 - tau * sigma2) ** steps
    assert r.counterexample_growth >= expected * (1 - 1e-9)
    d = dense_difference([-1, 1], 0, n, "neumann")
    u0 = r.counterexample[None]
    uk = explicit_dense(u0, d, lambda s: s, tau, steps)
    assert np.linalg.norm(uk) / np.linalg.norm(u0) == pytest.approx(r.counterexample_growth, rel=1e-9)


def test_perona_malik_edge_growth_appears_at_small_amplitude():
    """docs/theory.md §1: at tau = (1 + d) bound, PM grows like the linear case, but only near s = 0."""
    _, r = run_verify(spec(tau="0.52", steps=30))
    assert r.verdict == "not stable" and r.counterexample_growth is not None
    top = next(f for f in r.battery if f["family"] == "top singular vector")
    assert top["growth"] > 1.0 and top["amplitude"] < 1e-2  # lambda = 0.1


def test_forward_backward_counterexample_grows_in_the_dense_reference(examples_dir):
    prog = pde2net.load(examples_dir / "forward_backward.pde")
    r = verify.verify(prog, size=64, **FAST)
    assert r.verdict == "not stable" and r.consistent and r.counterexample is not None
    d = dense_difference([-1, 1], 0, 64, "neumann")
    lam = 0.1  # the example's lambda
    phi = lambda s: s * (1 - s ** 2 / lam ** 2) / (1 + s ** 2 / lam ** 2)  # noqa: E731
    u0 = r.counterexample[None]
    uk = explicit_dense(u0, d, phi, float(prog.arch.scheme.tau), prog.arch.scheme.steps)
    assert np.linalg.norm(uk) / np.linalg.norm(u0) == pytest.approx(r.counterexample_growth, rel=1e-6)


def test_a_wrong_stable_verdict_is_reported_as_a_bug(capsys, tmp_path):
    """Plant the bug verify exists to catch: a 'stable' claim for tau = 1.2 x the bound."""
    prog = pde2net.compile_text(spec("s", tau="0.6", steps=20))
    lie = dataclasses.replace(prog.stability, verdict="stable", stable=True)
    prog.__dict__["stability"] = lie
    r = verify.verify(prog, **FAST)
    assert r.exit_status == 1 and any(f.startswith("BUG") for f in r.failures)
    assert "VERIFICATION FAILED" in verify.verify_text(r)
    assert r.counterexample_growth >= (0.6 * 4 * math.cos(math.pi / 128) ** 2 - 1) ** 20 * (1 - 1e-9)


def test_adversarial_search_climbs_from_the_battery_and_replays_in_the_reference():
    """Gradient ascent starts from the battery's most growing inputs, so it never ends below the
    battery's best; the input it reports grows by the reported factor in the dense reference."""
    prog = pde2net.compile_text(spec("s * (1 - s^2) / (1 + s^4)", tau="0.3", steps=10, size=32))
    r = verify.verify(prog, seed=3, budget=0.5)
    battery_best = max(f["growth"] for f in r.battery)
    assert r.adversarial["iterations"] > 1
    assert r.adversarial["growth"] >= battery_best * (1 - 1e-12)
    assert r.verdict == "not stable" and r.counterexample_growth == max(battery_best,
                                                                         r.adversarial["growth"])
    d = dense_difference([-1, 1], 0, 32, "neumann")
    u0 = r.counterexample[None]
    uk = explicit_dense(u0, d, lambda s: s * (1 - s ** 2) / (1 + s ** 4), 0.3, 10)
    assert np.linalg.norm(uk) / np.linalg.norm(u0) == pytest.approx(r.counterexample_growth, rel=1e-8)


def test_growth_tolerance_is_round_off_scale():
    assert verify.growth_tolerance(1.0) == verify.GROWTH_FLOOR
    eps = np.finfo(np.float64).eps
    assert verify.growth_tolerance(1e8) == pytest.approx(64 * eps * 1e8)


# ----------------------------------------------------------------------- 4. the reference
def test_reference_disagreement_fails(monkeypatch):
    """A reference that steps with 1.001 tau must be told apart from the network."""
    good = verify.REFERENCES[lower.Explicit]

    def skewed(arch, op, u0):
        u = np.array(u0)
        for _ in range(arch.scheme.steps):
            u = op.explicit_step(u, 1.001 * float(arch.scheme.tau))
        return u

    monkeypatch.setitem(verify.REFERENCES, lower.Explicit,
                        verify.SchemeReference(skewed, good.work, good.rtol))
    _, r = run_verify(spec())
    assert not r.reference["ok"] and r.exit_status == 1


def test_missing_reference_is_a_failure(monkeypatch):
    monkeypatch.delitem(verify.REFERENCES, lower.Explicit)
    _, r = run_verify(spec())
    assert not r.reference["available"] and r.exit_status == 1


def test_fed_reference_equals_the_cycle_polynomial():
    """Linear FED on the top eigenvector v of D^T D (eigenvalue mu): one cycle multiplies it by
    prod_i (1 - tau_i mu) with tau_i = tau_max / (2 cos^2(pi (2i+1) / (4n+2))) (docs/theory.md §3)."""
    n_cycle, n = 6, 32
    prog = pde2net.compile_text(spec("s", size=n, scheme=f"fed(tau_max = 0.5, cycle_length = {n_cycle})"))
    op = verify.dense_operator(prog.arch, (n,))
    d = dense_difference([-1, 1], 0, n, "neumann")
    mu, vecs = np.linalg.eigh(d.T @ d)
    v = vecs[:, -1]
    taus = [0.5 / (2 * math.cos(math.pi * (2 * i + 1) / (4 * n_cycle + 2)) ** 2) for i in range(n_cycle)]
    factor = np.prod([1 - t * mu[-1] for t in taus])
    out = verify.REFERENCES[lower.FED].run(prog.arch, op, v[None])[0]
    np.testing.assert_allclose(out, factor * v, atol=1e-12)


def test_implicit_cg_reference_converges_to_the_exact_solve():
    n = 24
    prog = pde2net.compile_text(spec("s", size=n, scheme="implicit(tau = 5, steps = 2, solver = cg, "
                                                          "iterations = 60)"))
    op = verify.dense_operator(prog.arch, (n,))
    d = dense_difference([-1, 1], 0, n, "neumann")
    a = np.eye(n) + 5.0 * d.T @ d
    u0 = np.random.default_rng(0).standard_normal((1, n))
    want = np.linalg.solve(a, np.linalg.solve(a, u0[0]))
    out, slack = verify.REFERENCES[lower.Implicit].run(prog.arch, op, u0)
    np.testing.assert_allclose(out[0], want, rtol=1e-10, atol=1e-12)
    # the slack is twice the residual bound on the distance from the exact solves (A >= I)
    assert 0 <= slack[0] <= 2 * 2 * np.linalg.norm(u0) * 1e-10 / np.linalg.norm(u0) + 1e-12


@pytest.mark.parametrize("example", ["fed", "fsi", "implicit", "multigrid", "perona_malik_2d"])
def test_every_scheme_example_is_consistent(examples_dir, example):
    prog = pde2net.load(examples_dir / f"{example}.pde")
    size = {"multigrid": 65, "perona_malik_2d": 24}.get(example, 64)
    r = verify.verify(prog, size=size, **FAST)
    assert r.reference["available"] and r.reference["ok"], r.reference
    assert r.consistent, r.failures
    if r.verdict == "stable":
        assert r.growth <= 1 + r.tolerance


def test_2d_operator_matches_kronecker_products():
    """grad_h on H x W: [I (x) Dx; Dy (x) I] with zero rows where the forward difference leaves the
    grid (neumann), so ||grad_h||^2 = 4 cos^2(pi/2W) + 4 cos^2(pi/2H) (separable spectrum)."""
    text = ("pde t\nfield u(x, y)\nequation dt(u) = laplace(u)\nsize NX = 12, NY = 9\n"
            "scheme explicit(tau = 0.2, steps = 3)\n")
    prog = pde2net.compile_text(text)
    op = verify.dense_operator(prog.arch, (9, 12))
    mat = op.matrix
    dx = dense_difference([-1, 1], 0, 12, "neumann")
    dy = dense_difference([-1, 1], 0, 9, "neumann")
    gram = np.kron(np.eye(9), dx.T @ dx) + np.kron(dy.T @ dy, np.eye(12))
    np.testing.assert_allclose(mat.T @ mat, gram, atol=1e-14)
    s2, _, _ = verify.top_singular(op, np.random.default_rng(0))
    want = 4 * math.cos(math.pi / 24) ** 2 + 4 * math.cos(math.pi / 18) ** 2
    assert s2 == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------------------ the CLI
def test_cli_verify_stable_example_exits_0(examples_dir, capsys):
    rc = cli.main(["verify", str(examples_dir / "perona_malik.pde"), "--size", "64", "--budget", "0.2"])
    out = capsys.readouterr().out
    assert rc == 0 and "result: CONSISTENT" in out and "verdict STABLE" in out


def test_cli_verify_json_and_counterexample(examples_dir, capsys, tmp_path):
    out_npy = tmp_path / "grow.npy"
    rc = cli.main(["verify", str(examples_dir / "too_large_step.pde"), "--json", "--size", "64",
                   "--budget", "0.2", "--seed", "5", "--counterexample", str(out_npy)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "not stable" and data["consistent"] and data["growth_found"]
    u0 = np.load(out_npy)
    assert u0.shape == (64,)
    prog = pde2net.load(examples_dir / "too_large_step.pde")
    d = dense_difference([-1, 1], 0, 64, "neumann")
    lam = float(prog.arch.flux.params["lambda"])
    uk = explicit_dense(u0[None], d, lambda s: s / (1 + s ** 2 / lam ** 2),
                        float(prog.arch.scheme.tau), prog.arch.scheme.steps)
    assert np.linalg.norm(uk) / np.linalg.norm(u0) == pytest.approx(data["counterexample_growth"],
                                                                     rel=1e-9)


def test_cli_verify_no_counterexample_writes_nothing(examples_dir, capsys, tmp_path):
    out_npy = tmp_path / "none.npy"
    rc = cli.main(["verify", str(examples_dir / "heat.pde"), "--size", "32", "--budget", "0",
                   "--counterexample", str(out_npy)])
    assert rc == 0 and not out_npy.exists()
    assert "no growing input found" in capsys.readouterr().err


def test_cli_verify_exit_1_on_a_planted_bug(monkeypatch, capsys, tmp_path):
    path = tmp_path / "lie.pde"
    path.write_text(spec("s", tau="0.6", steps=20))
    real = pde2net.program.Program.stability

    def lying(self):
        return dataclasses.replace(real.func(self), verdict="stable", stable=True)

    monkeypatch.setattr(pde2net.program.Program, "stability", property(lying))
    rc = cli.main(["verify", str(path), "--budget", "0"])
    cap = capsys.readouterr()
    assert rc == 1 and "BUG" in cap.out and "VERIFICATION FAILED" in cap.err


@pytest.mark.parametrize("argv, needle", [
    (["--size", "1"], "at least 2 points"),
    (["--size", "100000000"], "too large to verify"),
])
def test_cli_verify_bad_sizes_exit_2(tmp_path, capsys, argv, needle):
    path = tmp_path / "a.pde"
    path.write_text(spec())
    rc = cli.main(["verify", str(path), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err


def test_cli_verify_bad_input_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.pde"
    path.write_text("pde x\nfield u(x)\nequation dt(u) = dxx(u\n")
    assert cli.main(["verify", str(path)]) == 2
    assert f"{path}:3:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["verify", str(path), "--budget", "-1"])
    assert exc.value.code == 2
