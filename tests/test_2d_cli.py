"""`pde2net run` on images: .npy (H, W) / (B, H, W), grayscale PNG in and out, --plot."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pde2net
from pde2net.cli import main
from reference import dense_gradient_2d, explicit_dense_2d

SPEC = """pde pm_img
param lambda = 0.2
field u(x, y)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )
grid h = 1
size NX = 12, NY = 9
boundary neumann
scheme explicit(tau = 0.2, steps = 6)
"""


def g(s2):
    return 1.0 / (1.0 + s2 / 0.04)


@pytest.fixture
def spec_file(tmp_path):
    p = tmp_path / "img.pde"
    p.write_text(SPEC)
    return p


@pytest.mark.parametrize("shape", [(9, 12), (3, 9, 12)])
def test_run_npy_matches_dense_reference(spec_file, tmp_path, shape, capsys):
    u = np.random.default_rng(0).standard_normal(shape)
    np.save(tmp_path / "in.npy", u)
    out = tmp_path / "out.npy"
    assert main(["run", str(spec_file), "--input", str(tmp_path / "in.npy"), "--output", str(out),
                 "--dtype", "float64"]) == 0
    got = np.load(out)
    assert got.shape == shape
    gx, gy = dense_gradient_2d([-1.0, 1.0], 0, (9, 12), "neumann")
    ref = explicit_dense_2d(u.reshape(-1, 9, 12), gx, gy, g, 0.2, 6).reshape(shape)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert "6 steps" in capsys.readouterr().out


def test_run_default_image_uses_size(spec_file, tmp_path):
    out = tmp_path / "out.npy"
    assert main(["run", str(spec_file), "--output", str(out)]) == 0
    assert np.load(out).shape == (9, 12)  # (NY, NX): x is the last axis


def test_png_round_trip(spec_file, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(9, 12)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    assert main(["run", str(spec_file), "--input", str(tmp_path / "in.png"), "--output",
                 str(tmp_path / "out.png"), "--dtype", "float64"]) == 0
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "L" and im.size == (12, 9)
        got = np.asarray(im)
    gx, gy = dense_gradient_2d([-1.0, 1.0], 0, (9, 12), "neumann")
    # values are kept as they are (0..255, not rescaled) and written back at 8 bits, rounded
    ref = explicit_dense_2d(pixels[None].astype(np.float64), gx, gy, g, 0.2, 6)[0]
    expect = np.clip(np.rint(ref), 0, 255).astype(np.uint8)
    assert np.array_equal(got, expect)


def test_plot_writes_png(spec_file, tmp_path):
    pytest.importorskip("matplotlib")
    Image = pytest.importorskip("PIL.Image")
    assert main(["run", str(spec_file), "--plot", str(tmp_path / "p2d.png")]) == 0
    with Image.open(tmp_path / "p2d.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_plot_1d(tmp_path, examples_dir):
    pytest.importorskip("matplotlib")
    assert main(["run", str(examples_dir / "perona_malik.pde"), "--steps", "20",
                 "--plot", str(tmp_path / "st.png"), "--output", str(tmp_path / "o.npy")]) == 0
    assert (tmp_path / "st.png").stat().st_size > 1000
    # the chunked run used for the plot computes exactly what the network computes in one call
    prog = pde2net.load(examples_dir / "perona_malik.pde")
    from pde2net.cli import bundled_signal

    ref = prog.module(steps=20)(torch.tensor(bundled_signal(256)[0], dtype=torch.float32)).numpy()
    assert np.array_equal(np.load(tmp_path / "o.npy"), ref)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 3, 4)), np.zeros(12), np.zeros((1, 12))])
def test_bad_image_shapes_exit_2(spec_file, tmp_path, bad, capsys):
    np.save(tmp_path / "bad.npy", bad)
    assert main(["run", str(spec_file), "--input", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert "bad.npy" in err and "Traceback" not in err


def test_image_input_needs_2d_spec(tmp_path, examples_dir, capsys):
    pytest.importorskip("PIL")
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["run", str(examples_dir / "perona_malik.pde"), "--input", str(tmp_path / "x.png")]) == 2
    assert "2D spec" in capsys.readouterr().err


def test_png_output_refuses_a_batch(spec_file, tmp_path, capsys):
    pytest.importorskip("PIL")
    np.save(tmp_path / "in.npy", np.zeros((2, 9, 12)))
    assert main(["run", str(spec_file), "--input", str(tmp_path / "in.npy"), "--output",
                 str(tmp_path / "o.png")]) == 2
    assert "one image" in capsys.readouterr().err


class _Terminal:
    """A stand-in for a terminal stderr (isatty() is True), collecting what is written."""

    def __init__(self):
        self.parts = []

    def write(self, s):
        self.parts.append(s)
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(examples_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tqdm")
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    out = tmp_path / "a.npy"
    assert main(["run", str(examples_dir / "perona_malik.pde"), "--steps", "400", "--output", str(out)]) == 0
    text = "".join(term.parts)
    assert "400/400" in text and "step" in text
    monkeypatch.undo()
    assert main(["run", str(examples_dir / "perona_malik.pde"), "--steps", "400",
                 "--output", str(tmp_path / "b.npy")]) == 0
    assert "400/400" not in capsys.readouterr().err  # piped: no bar
    # the chunked run computes exactly what one call computes
    assert np.array_equal(np.load(out), np.load(tmp_path / "b.npy"))


def test_compile_2d_fed_writes_a_module_equal_to_the_live_one(tmp_path, capsys):
    import importlib.util

    p = tmp_path / "fed.pde"
    p.write_text(SPEC.replace("scheme explicit(tau = 0.2, steps = 6)",
                              "scheme fed(tau_max = 0.2, cycles = 1, cycle_length = 4)"))
    out = tmp_path / "fed_net.py"
    assert main(["compile", str(p), "-o", str(out)]) == 0
    assert "class PmImg" in capsys.readouterr().err
    modspec = importlib.util.spec_from_file_location("fed_net", out)
    mod = importlib.util.module_from_spec(modspec)
    modspec.loader.exec_module(mod)
    u = torch.randn(2, 9, 12, dtype=torch.float64)
    prog = pde2net.load(p)
    assert torch.equal(mod.PmImg()(u), prog.module(dtype=torch.float64)(u))
    # the live module runs it too
    assert main(["run", str(p), "--output", str(tmp_path / "o.npy")]) == 0


def test_compile_2d_multigrid_is_refused_cleanly(tmp_path, capsys):
    """There is no 2D multigrid network (live or generated): refused at the scheme, exit 2."""
    p = tmp_path / "mg.pde"
    p.write_text(SPEC.replace("diffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n", "")
                 .replace("div( g(norm(grad(u))^2) * grad(u) )", "laplace(u)")
                 .replace("explicit(tau = 0.2, steps = 6)", "multigrid(tau = 1, steps = 1)"))
    assert main(["compile", str(p)]) == 2
    err = capsys.readouterr().err
    assert "mg.pde:8:1" in err and "1D fields only" in err and "Traceback" not in err
