"""The command line: check, compile, run; bad input gives one message and exit status 2."""
import json
import subprocess
import sys

import numpy as np
import pytest

from pde2net.cli import main, bundled_signal

PM = "examples/perona_malik.pde"


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pde2net.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_check_text_and_json(capsys):
    assert main(["check", PM]) == 0
    out = capsys.readouterr().out
    assert "verdict: STABLE" in out and "tau_max" in out and "dx^1" in out
    assert main(["check", PM, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("name", "scheme", "order", "L", "norm_D_sq", "tau", "tau_max", "stable", "reason", "bound_expr"):
        assert key in report
    assert report["tau_max"] == 0.5 and report["L"] == 1.0 and report["stable"] is True


def test_check_strict_exit_status(capsys):
    assert main(["check", "examples/too_large_step.pde"]) == 0
    assert main(["check", "examples/too_large_step.pde", "--strict"]) == 1
    capsys.readouterr()
    assert main(["check", "examples/forward_backward.pde", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stable"] is False and "negative diffusivity" in report["reason"]


def test_compile_writes_a_module(tmp_path):
    out = tmp_path / "pm.py"
    assert main(["compile", PM, "-o", str(out)]) == 0
    assert "class PeronaMalik(torch.nn.Module)" in out.read_text()


@pytest.mark.parametrize("shape", [(64,), (3, 64)])
def test_run_keeps_the_shape_and_matches_the_module(shape, tmp_path):
    import torch

    import pde2net

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    np.save(tmp_path / "in.npy", x)
    assert main(["run", PM, "--input", str(tmp_path / "in.npy"), "--output", str(tmp_path / "out.npy"),
                 "--dtype", "float64", "--steps", "7"]) == 0
    y = np.load(tmp_path / "out.npy")
    assert y.shape == shape and y.dtype == np.float64
    want = pde2net.load(PM).module(steps=7)(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(y, want)


def test_run_without_input_uses_the_bundled_signal(tmp_path, capsys):
    assert main(["run", PM, "--output", str(tmp_path / "o.npy")]) == 0
    y = np.load(tmp_path / "o.npy")
    assert y.shape == (256,) and y.dtype == np.float32  # size N = 256 in the spec
    # A stable diffusion never increases the Euclidean norm of the test signal.
    assert np.linalg.norm(y) <= np.linalg.norm(bundled_signal(256)[0]) * (1 + 1e-6)


BAD_INPUTS = [
    (np.array([1.0, np.nan, 2.0, 3.0]), "NaN or infinite"),
    (np.zeros((2, 2, 2, 8)), "shape"),  # no 1D layout has four axes
    (np.array(["a", "b"]), "numeric"),
    (np.zeros(1), "at least 2 points"),
]


@pytest.mark.parametrize("data,fragment", BAD_INPUTS)
def test_run_rejects_bad_inputs(data, fragment, tmp_path):
    np.save(tmp_path / "bad.npy", data)
    r = run_cli("run", PM, "--input", str(tmp_path / "bad.npy"))
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr


def test_bad_spec_gives_position_caret_and_status_2(tmp_path):
    bad = tmp_path / "bad.pde"
    bad.write_text("pde t\nfield u(x)\nequation dt(u) = dx(gg(dx(u)))\nscheme explicit(tau = 1)\n")
    for cmd in ("check", "compile", "run"):
        r = run_cli(cmd, str(bad))
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith(f"{bad}:3:21: error: unknown function 'gg'")
        assert r.stderr.splitlines()[2].index("^") == 4 + 20
        assert "Traceback" not in r.stderr and r.stdout == ""


def test_missing_file_and_usage_errors(tmp_path):
    r = run_cli("check", str(tmp_path / "nope.pde"))
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("run", PM, "--steps", "-3")
    assert r.returncode == 2 and "non-negative integer" in r.stderr
    r = run_cli("--help")
    assert r.returncode == 0 and "pde2net check examples/perona_malik.pde" in r.stdout


def test_console_script_runs_from_another_folder(tmp_path):
    import shutil

    exe = shutil.which("pde2net")
    if exe is None:
        pytest.skip("console script not on PATH")
    r = subprocess.run([exe, "check", str((__import__("pathlib").Path(PM)).resolve()), "--json"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["stable"] is True
