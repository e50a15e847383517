"""Parameters and physical time without editing text: ``params=``, ``tau = auto``, ``time = T``.

References: the edited text itself (a sweep through ``params=`` must build the same network bit
for bit), the closed-form bounds of the theory guide (h^2/(2L), h^4/(8L), h^2/(4L) in 2D), and a
dense NumPy float64 explicit scheme (tests/reference.py).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pde2net
from reference import dense_difference, explicit_dense, perona_malik

PM = """pde pm
param lambda = 0.1
param twice = 2 * lambda
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / twice^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
grid h = {h}
boundary neumann
scheme {scheme}
"""

PM_2D = """pde pm2
param lambda = 0.1
field u(x, y)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )
grid hx = {hx}, hy = {hy}
scheme explicit(tau = auto, steps = 3)
"""


def pm(scheme: str = "explicit(tau = 0.25, steps = 20)", h: str = "1") -> str:
    return PM.format(scheme=scheme, h=h)


def _signal(n: int = 64, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(np.cumsum(rng.standard_normal((3, n)), axis=-1), dtype=torch.float64)


# ------------------------------------------------------------------------------ params=
@pytest.mark.parametrize("value", [0.08, 0.05, 1e-3, 3, "0.125", 2.5e-7])
def test_params_sweep_equals_edited_text_bit_for_bit(value):
    edited = pde2net.compile_text(pm().replace("lambda = 0.1", f"lambda = {value}"))
    swept = pde2net.compile_text(pm(), params={"lambda": value})
    assert swept.model.params == edited.model.params  # exact numbers, later params follow
    u = _signal()
    for dtype in (torch.float32, torch.float64):
        a = edited.module(dtype=dtype)(u.to(dtype))
        b = swept.module(dtype=dtype)(u.to(dtype))
        assert torch.equal(a, b)
    assert swept.source() == edited.source()
    assert swept.stability.to_dict() == edited.stability.to_dict()


def test_with_params_recompiles_from_the_same_spec():
    prog = pde2net.compile_text(pm())
    other = prog.with_params({"lambda": 0.5})
    assert other.model.params["twice"] == 1 and prog.model.params["twice"] == pytest.approx(0.2)


def test_unknown_param_is_an_error_with_did_you_mean():
    with pytest.raises(pde2net.PdeError) as err:
        pde2net.compile_text(pm(), "pm.pde", params={"lamda": 0.1})
    text = str(err.value)
    assert "'lamda' is not a param" in text and "did you mean 'lambda'" in text and "pm.pde" in text


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc", "1e400", True, None, "2*3", 1e-320])
def test_bad_param_values_are_errors(value):
    with pytest.raises(pde2net.PdeError, match="param 'lambda'"):
        pde2net.compile_text(pm(), params={"lambda": value})


# ----------------------------------------------------------------------------- tau = auto
@pytest.mark.parametrize("h", ["1", "0.5", "0.3"])
def test_tau_auto_is_the_closed_form_bound_1d(h):
    """Perona-Malik has L = 1 and the forward difference ||D||^2 <= 4/h^2: tau = h^2/2."""
    prog = pde2net.compile_text(pm("explicit(tau = auto, steps = 5)", h))
    hf = float(prog.model.grid[0])
    assert float(prog.model.setting("tau")) == pytest.approx(hf * hf / 2, rel=1e-15)
    assert prog.stability.verdict == "stable"
    # the dense linearised step at that tau is non-expansive, and at 1.02 tau it is not
    d = dense_difference([-1, 1], 0, 40, "neumann", h=hf)
    tau = float(prog.model.setting("tau"))
    lam = np.linalg.eigvalsh(d.T @ d).max()
    assert abs(1 - tau * lam) <= 1 + 1e-12
    assert abs(1 - 1.02 * tau * (4 / hf ** 2)) > 1


def test_tau_auto_fourth_order_is_h4_over_8():
    text = pm("explicit(tau = auto, steps = 5)", "0.5").replace(
        "dx( g(dx(u)^2) * dx(u) )", "-dxxxx(u)")
    prog = pde2net.compile_text(text)
    assert float(prog.model.setting("tau")) == pytest.approx(0.5 ** 4 / 8, rel=1e-15)
    assert prog.stability.verdict == "stable"


def test_tau_auto_2d_is_two_over_l_sum_of_axis_bounds():
    prog = pde2net.compile_text(PM_2D.format(hx="1", hy="0.5"))
    assert float(prog.model.setting("tau")) == pytest.approx(2 / (4 / 1 + 4 / 0.25), rel=1e-15)
    assert prog.stability.verdict == "stable"


@pytest.mark.parametrize("scheme,key", [("fed(tau_max = auto, cycle_length = 5)", "tau_max"),
                                        ("fsi(tau = auto, cycle_length = 5)", "tau")])
def test_tau_auto_fed_fsi(scheme, key):
    prog = pde2net.compile_text(pm(scheme))
    assert float(prog.model.setting(key)) == pytest.approx(0.5, rel=1e-15)
    assert prog.stability.verdict == "stable"


@pytest.mark.parametrize("flux,what", [
    ("(1 - s2 / lambda^2) / (1 + s2 / lambda^2)", "negative"),  # forward-backward
    ("1 / sqrt(s2)", "unbounded"),  # total variation
])
def test_tau_auto_without_a_bound_is_a_clear_error(flux, what):
    text = pm("explicit(tau = auto, steps = 5)").replace("1 / (1 + s2 / twice^2)", flux)
    with pytest.raises(pde2net.PdeError, match="tau = auto") as err:
        pde2net.compile_text(text, "fb.pde")
    assert what in str(err.value) and "fb.pde:" in str(err.value)


def test_tau_auto_is_refused_for_unconditional_schemes():
    with pytest.raises(pde2net.PdeError, match="no largest proven step"):
        pde2net.compile_text(pm("implicit(tau = auto, steps = 2)"))


def test_a_param_named_auto_takes_precedence():
    text = pm("explicit(tau = auto, steps = 5)").replace("param lambda = 0.1", "param lambda = 0.1\nparam auto = 0.125")
    assert pde2net.compile_text(text).model.setting("tau") == pytest.approx(0.125)


# --------------------------------------------------------------------------------- time = T
@pytest.mark.parametrize("tau,time", [("0.25", "10"), ("0.3", "2"), ("auto", "7.3")])
def test_time_sets_steps_and_shrinks_tau_to_stop_exactly(tau, time):
    prog = pde2net.compile_text(pm(f"explicit(tau = {tau}, time = {time})"))
    t_stop = float(time)
    given = 0.5 if tau == "auto" else float(tau)
    steps = prog.model.setting("steps")
    assert steps == math.ceil(t_stop / given - 1e-12)
    tau_used = prog.model.setting("tau")
    assert tau_used * steps == pytest.approx(t_stop, rel=1e-15) and float(tau_used) <= given
    # the network integrates to T: equal to the dense explicit scheme with tau = T / steps
    u = _signal()
    d = dense_difference([-1, 1], 0, u.shape[-1], "neumann")
    ref = explicit_dense(u.numpy(), d, perona_malik(0.2), float(tau_used), steps)
    out = prog.module(dtype=torch.float64)(u).numpy()
    assert np.max(np.abs(out - ref)) <= 1e-12 * np.max(np.abs(ref))
    assert prog.stability.to_dict()["stopping_time"] == pytest.approx(t_stop, rel=1e-12)


def test_time_for_fed_counts_cycles():
    prog = pde2net.compile_text(pm("fed(tau_max = 0.5, cycle_length = 4, time = 100)"))
    cycles = prog.model.setting("cycles")
    per_cycle = 0.5 * (16 + 4) / 3
    assert cycles == math.ceil(100 / per_cycle)
    assert float(prog.model.setting("tau_max")) * (16 + 4) / 3 * cycles == pytest.approx(100, rel=1e-14)


def test_steps_and_time_together_is_an_error():
    with pytest.raises(pde2net.PdeError, match="either 'steps' or 'time'"):
        pde2net.compile_text(pm("explicit(tau = 0.25, steps = 3, time = 1)"))
