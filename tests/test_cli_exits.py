"""Every way the CLI can end: user errors exit 2 with one message naming the file or option (never a
traceback, never exit 3), a 'stable' verdict meeting NaN exits 1, and the exits that are not errors
(an unstable spec blowing up on both sides, the multigrid export) are reported as what they are."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from pde2net.cli import main
from pde2net.program import load

from conftest import EXAMPLES

HEAT = str(EXAMPLES / "heat.pde")
PM = str(EXAMPLES / "perona_malik.pde")
PM2 = str(EXAMPLES / "perona_malik_2d.pde")
SIXTH = str(EXAMPLES / "sixth_order.pde")  # periodic, central stencil of 5 points
STEP = str(EXAMPLES / "too_large_step.pde")
MG = str(EXAMPLES / "multigrid.pde")
F32_MAX = float(np.finfo(np.float32).max)


def _spec(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _heat_with(tmp_path, old: str, new: str, name: str = "spec.pde") -> str:
    return _spec(tmp_path, name, (EXAMPLES / "heat.pde").read_text().replace(old, new))


def _npy(tmp_path, name: str, array) -> str:
    p = tmp_path / name
    np.save(p, np.asarray(array))
    return str(p)


# (id, argv builder(tmp_path) -> list[str], words the message must contain)
USER_ERRORS = [
    # ---- the spec file
    ("missing file", lambda t: ["check", str(t / "nope.pde")], ["nope.pde", "No such file"]),
    ("spec is a directory", lambda t: ["check", str(t)], ["is a directory"]),
    ("spec /dev/zero", lambda t: ["check", "/dev/zero"], ["/dev/zero", "too large"]),
    ("syntax error", lambda t: ["check", _spec(t, "bad.pde", "pde x\nfield u(x\n")], ["bad.pde:2"]),
    ("undefined name", lambda t: ["check", _heat_with(t, "dxx(u)", "dxx(v)")], ["spec.pde:", "'v'"]),
    ("tau rounds to 0", lambda t: ["check", _heat_with(t, "tau = 0.5", "tau = 1e-200 * 1e-200")],
     ["tau = 1.00e-400 rounds to 0 in floating point"]),
    ("unknown function 2D lists 2D operators",
     lambda t: ["check", _spec(t, "f2.pde", (EXAMPLES / "perona_malik_2d.pde").read_text()
                               .replace("div(", "dvi("))], ["'dvi'", "div", "grad", "laplace", "dy"]),
    # ---- output paths
    ("run --output dir", lambda t: ["run", HEAT, "--output", str(t)], ["--output", "is a directory"]),
    ("run --output no dir", lambda t: ["run", HEAT, "--output", str(t / "no" / "o.npy")],
     ["--output", "does not exist"]),
    ("run --plot dir", lambda t: ["run", HEAT, "--plot", str(t)], ["--plot", "is a directory"]),
    ("compile -o dir", lambda t: ["compile", HEAT, "-o", str(t)], ["-o/--output", "is a directory"]),
    ("compile -o no dir", lambda t: ["compile", HEAT, "-o", str(t / "no" / "x.py")],
     ["-o/--output", "does not exist"]),
    ("export --onnx dir", lambda t: ["export", HEAT, "--onnx", str(t)], ["--onnx", "is a directory"]),
    ("export --torchscript no dir", lambda t: ["export", HEAT, "--torchscript", str(t / "no" / "m.pt")],
     ["--torchscript", "does not exist"]),
    ("graph -o no dir", lambda t: ["graph", HEAT, "-o", str(t / "no" / "g.dot")],
     ["-o/--output", "does not exist"]),
    ("graph -o bad suffix", lambda t: ["graph", HEAT, "-o", str(t / "g.xyz")], ["g.xyz"]),
    ("verify --counterexample dir", lambda t: ["verify", STEP, "--counterexample", str(t)],
     ["--counterexample", "is a directory"]),
    # ---- devices and dtypes
    ("--device foo", lambda t: ["run", HEAT, "--device", "foo"], ["--device", "'foo'"]),
    ("--device meta", lambda t: ["run", HEAT, "--device", "meta"], ["--device meta"]),
    ("--dtype float8", lambda t: ["run", HEAT, "--dtype", "float8"], ["--dtype", "float8"]),
    ("--backend foo", lambda t: ["run", HEAT, "--backend", "foo"], ["--backend", "foo"]),
    # ---- inputs
    ("empty batch", lambda t: ["run", HEAT, "--input", _npy(t, "e.npy", np.zeros((0, 256)))],
     ["e.npy", "empty"]),
    ("periodic input shorter than the stencil",
     lambda t: ["run", SIXTH, "--input", _npy(t, "p.npy", np.ones(3))], ["p.npy", "at least 5 points"]),
    ("neumann input shorter than the stencil",
     lambda t: ["run", HEAT, "--input", _npy(t, "s.npy", np.ones(1))], ["s.npy", "at least 2 points"]),
    ("--input /dev/null", lambda t: ["run", HEAT, "--input", "/dev/null"], ["/dev/null", "empty"]),
    ("--input directory", lambda t: ["run", HEAT, "--input", str(t)], ["is a directory"]),
    ("--input missing", lambda t: ["run", HEAT, "--input", str(t / "x.npy")], ["x.npy", "No such file"]),
    ("--input not npy", lambda t: ["run", HEAT, "--input", _spec(t, "t.npy", "hello")], ["t.npy"]),
    ("--input strings", lambda t: ["run", HEAT, "--input", _npy(t, "s.npy", ["a", "b"])],
     ["s.npy", "dtype"]),
    ("--input NaN", lambda t: ["run", HEAT, "--input", _npy(t, "n.npy", [0.0, np.nan, 1.0])],
     ["n.npy", "NaN"]),
    ("--input 4D for 1D spec", lambda t: ["run", HEAT, "--input", _npy(t, "d.npy", np.ones((2, 2, 2, 8)))],
     ["d.npy", "shape"]),
    ("--input image for 1D spec", lambda t: ["run", HEAT, "--input", str(t / "i.png")], ["i.png", "2D"]),
    ("1e40 in float32", lambda t: ["run", HEAT, "--input", _npy(t, "big.npy", np.full(16, 1e40))],
     ["big.npy", "float32", "1e+40", "3.40282e+38"]),
    ("7e4 in float16", lambda t: ["run", HEAT, "--dtype", "float16", "--input",
                                  _npy(t, "h.npy", np.full(16, 7e4))], ["h.npy", "float16", "65504"]),
    ("multigrid input length", lambda t: ["run", MG, "--input", _npy(t, "m.npy", np.ones(100))],
     ["m.npy", "2^k + 1"]),
    ("image not an image", lambda t: ["run", PM2, "--input", _spec(t, "bad.png", "not a png")],
     ["bad.png", "cannot read image"]),
    # ---- option values
    ("export multigrid --shape", lambda t: ["export", MG, "--shape", "1,100", "--onnx",
                                            str(t / "m.onnx")], ["--shape", "2^k + 1"]),
    ("--steps too many", lambda t: ["run", HEAT, "--steps", "1000001"], ["--steps", "1000000"]),
    ("--steps negative", lambda t: ["run", HEAT, "--steps", "-1"], ["--steps"]),
    ("--budget too long", lambda t: ["verify", HEAT, "--budget", "1e9"], ["--budget", "3600"]),
    ("--budget nan", lambda t: ["verify", HEAT, "--budget", "nan"], ["--budget"]),
    ("--seed negative", lambda t: ["verify", HEAT, "--seed", "-3"], ["--seed"]),
    ("--size 0", lambda t: ["verify", HEAT, "--size", "0"], ["--size"]),
    ("--size too small", lambda t: ["verify", HEAT, "--size", "1"], ["heat.pde", "at least 2"]),
    ("--size periodic below the stencil", lambda t: ["verify", SIXTH, "--size", "2"],
     ["sixth_order.pde", "at least 5"]),
    ("--size too large", lambda t: ["verify", HEAT, "--size", "100000"], ["heat.pde", "too large"]),
    ("export --shape 1,1", lambda t: ["export", HEAT, "--shape", "1,1", "--onnx", str(t / "a.onnx")],
     ["--shape", "at least 2"]),
    ("export --shape wrong rank", lambda t: ["export", HEAT, "--shape", "2,3,4", "--onnx",
                                             str(t / "a.onnx")], ["--shape", "1D"]),
    ("export --tolerance nan", lambda t: ["export", HEAT, "--tolerance", "nan", "--onnx",
                                          str(t / "a.onnx")], ["--tolerance", "nan"]),
    ("export --tolerance inf", lambda t: ["export", HEAT, "--tolerance", "inf", "--onnx",
                                          str(t / "a.onnx")], ["--tolerance"]),
    ("export bfloat16 onnx", lambda t: ["export", HEAT, "--dtype", "bfloat16", "--onnx",
                                        str(t / "a.onnx")], ["--dtype", "bfloat16", "--torchscript"]),
    ("export no format", lambda t: ["export", HEAT], ["--onnx", "--torchscript"]),
    ("no command", lambda t: [], ["COMMAND"]),
    ("unknown command", lambda t: ["frobnicate", HEAT], ["frobnicate"]),
]


def _exit_status(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse reports option errors by exiting 2
        return exc.code


@pytest.mark.parametrize("case", USER_ERRORS, ids=[c[0] for c in USER_ERRORS])
def test_user_error_exits_2_with_one_message(case, tmp_path, capsys):
    name, argv, words = case
    status = _exit_status(argv(tmp_path))
    cap = capsys.readouterr()
    text = cap.err + cap.out
    assert status == 2, text
    assert "Traceback" not in text and "internal error" not in text and "bug in pde2net" not in text
    for w in words:
        assert w in text, (w, text)


def test_no_output_file_left_by_a_refused_run(tmp_path, capsys):
    """Output paths are checked before any work: nothing is written next to the bad path."""
    assert main(["run", HEAT, "--output", str(tmp_path)]) == 2
    assert sorted(os.listdir(tmp_path)) == [] and not (tmp_path.parent / (tmp_path.name + ".npy")).exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_names_the_output(capsys):
    assert main(["compile", HEAT, "-o", "/dev/full"]) == 2
    err = capsys.readouterr().err
    assert "/dev/full" in err and "No space left" in err and "Traceback" not in err


def test_device_cuda_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["run", HEAT, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "CUDA" in err and "Traceback" not in err


def test_fifo_without_writer_does_not_hang(tmp_path, capsys):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "spec.pde"
    os.mkfifo(fifo)
    assert main(["check", str(fifo)]) == 2  # read as empty: no 'pde' statement
    assert "spec.pde" in capsys.readouterr().err
    fifo_in = tmp_path / "in.npy"
    os.mkfifo(fifo_in)
    assert main(["run", HEAT, "--input", str(fifo_in)]) == 2
    assert "in.npy" in capsys.readouterr().err


@pytest.mark.parametrize("argv,words", [
    (["run", HEAT, "--output", "/"], ["--output", "is a directory"]),
    (["check", "/dev/zero"], ["/dev/zero", "too large"]),
    (["run", HEAT, "--device", "meta"], ["--device meta"]),
    (["export", HEAT, "--tolerance", "nan", "--onnx", "x.onnx"], ["--tolerance"]),
])
def test_real_exit_status_in_a_subprocess(argv, words):
    r = subprocess.run([sys.executable, "-m", "pde2net.cli", *argv], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)})
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr


# ------------------------------------------------------------------------------ run
def test_run_summary_norms_in_float64(tmp_path, capsys):
    """The printed norms are the float64 norms of the input the network saw and of its output."""
    import torch

    u0 = np.random.default_rng(1).standard_normal((3, 64))
    out = tmp_path / "o.npy"
    assert main(["run", HEAT, "--input", _npy(tmp_path, "u.npy", u0), "--output", str(out),
                 "--dtype", "float16", "--steps", "5"]) == 0
    line = capsys.readouterr().out
    n0 = np.linalg.norm(torch.as_tensor(u0).to(torch.float16).double().numpy())
    n1 = np.linalg.norm(np.load(out).astype(np.float64))
    assert f"||u0|| = {n0:.6g}" in line and f"||uK|| = {n1:.6g}" in line and "float64" in line


def test_run_bfloat16_output_is_float32_holding_bfloat16_values(tmp_path, capsys):
    import torch

    u0 = np.linspace(-1, 1, 32)
    out = tmp_path / "o.npy"
    assert main(["run", HEAT, "--input", _npy(tmp_path, "u.npy", u0), "--output", str(out),
                 "--dtype", "bfloat16", "--steps", "3"]) == 0
    got = np.load(out)
    assert got.dtype == np.float32
    assert np.array_equal(torch.from_numpy(got).to(torch.bfloat16).float().numpy(), got)


def test_run_exits_1_when_the_output_is_not_finite(tmp_path, capsys):
    """An explicit step far above the bound overflows float32: exit 1 with a message, not exit 0."""
    spec = _heat_with(tmp_path, "tau = 0.5, steps = 200", "tau = 50, steps = 200")
    assert main(["run", spec, "--steps", "200"]) == 1
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "not stable" in err
    assert "not stable: not stable" not in err


def test_warning_does_not_double_the_verdict(tmp_path, capsys):
    """A 'cannot prove' reason already starts with the verdict: printed once."""
    from pde2net import cli

    class R:
        verdict, reason = "cannot prove", "cannot prove: no exact bound on ||D||^2 for this stencil"

    assert cli._verdict_reason(R) == R.reason
    R.verdict, R.reason = "not stable", "tau = 0.6 exceeds the bound"
    assert cli._verdict_reason(R) == "not stable: tau = 0.6 exceeds the bound"


# --------------------------------------------------------------------------- verify
class _NanNet:
    """Wraps a network; its output holds one NaN (a broken layer a 'stable' verdict must not hide)."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x, *args, **kwargs):
        out = self.net(x, *args, **kwargs).clone()
        out[..., 0] = float("nan")
        return out

    def __getattr__(self, name):
        return getattr(self.net, name)


def _nan_program(monkeypatch, path: str):
    prog = load(path)
    module = prog.module
    monkeypatch.setattr(type(prog), "module", lambda self, *a, **k: _NanNet(module(*a, **k)))
    return prog


def test_verify_exits_1_on_nan_under_a_stable_verdict(monkeypatch, capsys):
    from pde2net import verify

    prog = _nan_program(monkeypatch, HEAT)
    assert prog.stability.verdict == "stable"
    r = verify.verify(prog, size=32, budget=0.2)
    assert r.exit_status == 1
    assert any("NaN" in f for f in r.failures)
    assert all(f["nonfinite"] == f["inputs"] for f in r.battery)
    assert r.adversarial["nonfinite"] and r.reference["nonfinite"] == r.reference["compared"] > 0
    assert not r.reference["ok"]
    monkeypatch.setattr("pde2net.cli.load", lambda p, **options: prog)
    assert main(["verify", HEAT, "--size", "32", "--budget", "0.2"]) == 1
    assert "VERIFICATION FAILED" in capsys.readouterr().err


def test_compare_reference_never_skips_a_nan_from_a_stable_network(monkeypatch):
    from pde2net import verify

    prog = _nan_program(monkeypatch, HEAT)
    import torch

    net = prog.module(dtype=torch.float64)
    op = verify.dense_operator(prog.arch, (32,))
    inputs = np.random.default_rng(0).standard_normal((3, 32))
    stable = verify.compare_reference(net, prog.arch, op, inputs, stable=True)
    assert not stable["ok"] and stable["nonfinite"] == 3 and math.isinf(stable["max_rel_diff"])
    unstable = verify.compare_reference(net, prog.arch, op, inputs, stable=False)
    assert unstable["ok"] and unstable["compared"] == 0  # only overflow: no disagreement claimed


def test_growth_of_nan_is_infinite():
    from pde2net.verify import _growth

    u0 = np.ones((2, 4))
    uk = np.array([[np.nan, 0, 0, 0], [1, 1, 1, 1]])
    assert _growth(u0, uk).tolist() == [math.inf, 1.0]


TV = (EXAMPLES / "fed.pde").read_text()


def test_tv_both_blow_up_is_consistent_not_a_disagreement(capsys, tmp_path):
    """Regularisation-free TV, g(s2) = 1/sqrt(s2), is not judged stable; where the network and the
    dense reference both blow up, verify says so and does not report a disagreement."""
    text = "\n".join("diffusivity g(s2) = 1/sqrt(s2)" if line.startswith("diffusivity") else line
                     for line in TV.splitlines())
    spec = _spec(tmp_path, "tv.pde", text)
    prog = load(spec)
    assert prog.stability.verdict != "stable"
    status = main(["verify", spec, "--budget", "0.2"])
    cap = capsys.readouterr()
    assert status == 0, cap.err
    assert "disagrees" not in cap.err + cap.out and "VERIFICATION FAILED" not in cap.err
    assert "both blow up" in cap.out
    # independently: the network's outputs on verify's reference inputs do blow up
    import torch

    from pde2net import verify

    rng = np.random.default_rng(0)
    op = verify.dense_operator(prog.arch, (256,))
    _, top, _ = verify.top_singular(op, rng)
    inputs = verify._reference_inputs(op, top, np.random.default_rng(1))
    with torch.no_grad():
        out = prog.module(dtype=torch.float64)(torch.as_tensor(inputs)).numpy()
    norms = np.linalg.norm(out, axis=1)
    blown = ~np.isfinite(out).all(axis=1) | (norms > 1e4 * np.linalg.norm(inputs, axis=1))
    assert blown.any()


def test_counterexample_hint_after_the_file_exists(tmp_path, capsys):
    out = tmp_path / "grow"  # no suffix: written under exactly this name
    assert main(["verify", STEP, "--budget", "0.2", "--counterexample", str(out)]) == 0
    cap = capsys.readouterr()
    assert out.exists() and f"saved to {out}" in cap.out and "save it with" not in cap.out
    assert f"wrote {out}" in cap.err
    u = np.load(out)
    assert u.shape == (256,) and np.isfinite(u).all()


# --------------------------------------------------------------------------- export
def test_multigrid_export_round_trip(tmp_path, capsys):
    """The bundled multigrid spec exports to both formats; each file, loaded independently, computes
    what the live module computes (float32, 1e-6) on the traced grid with another batch size."""
    import onnxruntime as ort
    import torch

    spec = str(EXAMPLES / "multigrid.pde")
    onnx_path, ts_path = tmp_path / "m.onnx", tmp_path / "m.pt"
    assert main(["export", spec, "--steps", "1", "--onnx", str(onnx_path),
                 "--torchscript", str(ts_path)]) == 0
    assert "grid size fixed" in capsys.readouterr().out
    net = load(spec).module(steps=1).eval()
    x = torch.as_tensor(np.random.default_rng(3).standard_normal((3, 257)), dtype=torch.float32)
    with torch.no_grad():
        want = net(x).numpy()
        got_ts = torch.jit.load(str(ts_path))(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got_onnx = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    scale = np.abs(want).max()
    assert np.abs(got_ts - want).max() <= 1e-6 * scale
    assert np.abs(got_onnx - want).max() <= 1e-6 * scale


def test_export_relative_error_of_nan_is_infinite():
    import torch

    from pde2net.export import relative_error

    ref = torch.ones(4)
    assert math.isinf(relative_error(torch.tensor([1.0, float("nan"), 1.0, 1.0]), ref))
    assert relative_error(ref * 1.5, ref) == pytest.approx(0.5)


def test_export_float16(tmp_path, capsys):
    assert main(["export", HEAT, "--steps", "3", "--dtype", "float16", "--torchscript",
                 str(tmp_path / "h.pt")]) == 0
    assert "float16" in capsys.readouterr().out

