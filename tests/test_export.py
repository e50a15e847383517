"""`pde2net export`: TorchScript and ONNX files that compute what the live module computes
(float32, 1e-5 relative), on an input of another shape than the one traced."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pde2net
from pde2net.cli import main
from pde2net.export import export_onnx, export_torchscript, relative_error
from reference import dense_difference, dense_gradient_2d, explicit_dense, explicit_dense_2d, perona_malik

SPEC_1D = """pde pm
param lambda = 0.5
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
boundary {boundary}
scheme {scheme}
"""
SPEC_2D = """pde pm2
param lambda = 0.5
field u(x, y)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )
boundary {boundary}
scheme explicit(tau = 0.2, steps = 4)
"""
SCHEMES = ["explicit(tau = 0.3, steps = 5)", "fed(tau_max = 0.5, cycles = 1, cycle_length = 4)",
           "fsi(tau = 0.5, cycles = 1, cycle_length = 4)", "implicit(tau = 2, steps = 1, iterations = 6)"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_torchscript_matches_live_module(tmp_path, scheme):
    net = pde2net.compile_text(SPEC_1D.format(boundary="neumann", scheme=scheme)).module()
    check = export_torchscript(net, str(tmp_path / "net.pt"), (1, 40))
    assert check.rel_error is not None and check.rel_error <= 1e-5
    loaded = torch.jit.load(str(tmp_path / "net.pt"))
    u = torch.randn(3, 57)
    assert relative_error(loaded(u), net(u)) <= 1e-5


def test_torchscript_explicit_matches_dense_reference(tmp_path):
    net = pde2net.compile_text(SPEC_1D.format(boundary="periodic", scheme=SCHEMES[0])).module(dtype=torch.float64)
    export_torchscript(net, str(tmp_path / "net.pt"), (1, 30))
    u = np.random.default_rng(0).standard_normal((2, 45))
    got = torch.jit.load(str(tmp_path / "net.pt"))(torch.tensor(u)).numpy()
    ref = explicit_dense(u, dense_difference([-1, 1], 0, 45, "periodic"), perona_malik(0.5), 0.3, 5)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
def test_onnx_matches_live_module_1d_and_2d(tmp_path, boundary):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    for spec, shape in ((SPEC_1D.format(boundary=boundary, scheme=SCHEMES[0]), (1, 32)),
                        (SPEC_2D.format(boundary=boundary), (1, 10, 12))):
        net = pde2net.compile_text(spec).module()
        path = str(tmp_path / "net.onnx")
        check = export_onnx(net, path, shape)
        assert check.rel_error is not None and check.rel_error <= 1e-5
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        u = np.random.default_rng(1).standard_normal((2,) + tuple(n + 5 for n in shape[1:])).astype(np.float32)
        out = u
        for _ in range(check.repeat):  # the file holds one step (issue 12): applied steps times
            out = sess.run(None, {sess.get_inputs()[0].name: out})[0]
        assert out.shape == u.shape and check.repeat == net.steps
        # and against the dense float64 reference (float32 rounding only)
        if len(shape) == 2:
            d = dense_difference([-1, 1], 0, u.shape[1], boundary)
            ref = explicit_dense(u.astype(np.float64), d, perona_malik(0.5), 0.3, 5)
        else:
            gx, gy = dense_gradient_2d([-1, 1], 0, u.shape[1:], boundary)
            ref = explicit_dense_2d(u.astype(np.float64), gx, gy, lambda s2: 1 / (1 + s2 / 0.25), 0.2, 4)
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_trainable_network_exports(tmp_path):
    net = pde2net.compile_text(SPEC_1D.format(boundary="neumann", scheme=SCHEMES[0])).module(trainable=True)
    with torch.no_grad():
        net.blocks[0].weights[0].copy_(torch.tensor([-0.7, 1.3]))
    check = export_torchscript(net, str(tmp_path / "t.pt"), (2, 20))
    assert check.rel_error <= 1e-5


def test_cli_export(tmp_path, examples_dir, capsys):
    args = ["export", str(examples_dir / "perona_malik.pde"), "--steps", "3", "--shape", "2,50",
            "--torchscript", str(tmp_path / "pm.pt")]
    try:
        import onnx  # noqa: F401
        args += ["--onnx", str(tmp_path / "pm.onnx")]
    except ImportError:
        pass
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pm.pt" in out and "max relative difference" in out
    assert (tmp_path / "pm.pt").stat().st_size > 0
    assert main(["export", str(examples_dir / "perona_malik.pde")]) == 2
    assert main(["export", str(examples_dir / "perona_malik.pde"), "--shape", "2,3,4",
                 "--torchscript", str(tmp_path / "x.pt")]) == 2
    assert "does not fit a 1D spec" in capsys.readouterr().err
