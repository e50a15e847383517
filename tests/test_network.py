"""The emitted explicit network equals an independent dense NumPy float64 implementation."""
import numpy as np
import pytest
import torch

import pde2net
from reference import binomial_weights, charbonnier, dense_difference, explicit_dense, linear, perona_malik

BOUNDARIES = ["neumann", "periodic", "dirichlet"]
DX = {1: "dx", 2: "dxx", 3: "dxxx"}


def spec(m: int, flux: str, boundary: str, stencil: str, tau: float, steps: int, h: float = 1.0) -> str:
    d = DX[m]
    sign = "" if m % 2 == 1 else "-"
    body = {"linear": f"{d}(u)", "pm": f"g({d}(u)^2) * {d}(u)", "ch": f"g({d}(u)^2) * {d}(u)"}[flux]
    g = {"linear": "", "pm": "diffusivity g(s2) = 1 / (1 + s2 / lambda^2)",
         "ch": "diffusivity g(s2) = 1 / sqrt(1 + s2 / lambda^2)"}[flux]
    return f"""pde t
param lambda = 0.7
field u(x)
{g}
equation dt(u) = {sign}{d}( {body} )
grid h = {h}
boundary {boundary}
stencil {stencil}
scheme explicit(tau = {tau}, steps = {steps})
"""


def reference_stencil(kind: str, m: int):
    """(weights, offset) written out independently of pde2net."""
    if kind == "forward":
        return binomial_weights(m), 0
    if kind == "backward":
        return binomial_weights(m), m
    if kind == "central":
        table = {1: ([-0.5, 0.0, 0.5], 1), 2: ([1.0, -2.0, 1.0], 1), 3: ([-0.5, 1.0, 0.0, -1.0, 0.5], 2)}
        return table[m]
    raise ValueError(kind)


PHI = {"linear": linear(), "pm": perona_malik(0.7), "ch": charbonnier(0.7)}


def run_both(text: str, u0: np.ndarray, d: np.ndarray, phi, tau: float, steps: int, backend: str):
    net = pde2net.compile_text(text).module(backend=backend)
    got = net(torch.tensor(u0, dtype=torch.float64)).numpy()
    want = explicit_dense(u0, d, phi, tau, steps)
    return got, want


@pytest.mark.parametrize("backend", ["fused", "conv"])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kind", ["forward", "backward", "central"])
@pytest.mark.parametrize("m,flux", [(1, "pm"), (1, "linear"), (2, "pm"), (2, "linear"), (3, "ch")])
def test_explicit_network_matches_dense(m, flux, kind, boundary, backend):
    rng = np.random.default_rng(m * 7 + len(kind))
    n, h = 23, 0.8
    tau = 0.9 * 2 / 4 ** m * h ** (2 * m)  # inside every bound used here
    steps = 12
    w, off = reference_stencil(kind, m)
    d = dense_difference(w, off, n, boundary, h=h, m=m)
    u0 = rng.standard_normal((3, n))
    got, want = run_both(spec(m, flux, boundary, kind, tau, steps, h), u0, d, PHI[flux], tau, steps, backend)
    assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_weight_list_stencil_matches_dense(boundary):
    """A 4th-order accurate second difference given as a weight list, m = 1 would not fit: m = 2."""
    rng = np.random.default_rng(1)
    w = [-1 / 12, 4 / 3, -5 / 2, 4 / 3, -1 / 12]
    text = spec(2, "pm", boundary, "[-1/12, 4/3, -5/2, 4/3, -1/12] @ 2", 0.05, 9).replace("grid h = 1.0", "grid h = 1")
    n = 30
    d = dense_difference(w, 2, n, boundary)
    u0 = rng.standard_normal((2, n))
    got, want = run_both(text, u0, d, PHI["pm"], 0.05, 9, "fused")
    assert np.linalg.norm(got - want) <= 1e-12 * np.linalg.norm(want)


def test_input_shapes_and_dtypes():
    prog = pde2net.compile_text(spec(1, "pm", "neumann", "forward", 0.25, 5))
    net = prog.module()
    u = torch.randn(4, 40, dtype=torch.float64)
    ref = net(u)
    assert torch.equal(net(u.unsqueeze(1)).squeeze(1), ref)
    assert torch.equal(net(u[0]), ref[0])
    out32 = net(u.float())
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), ref, rtol=0, atol=1e-5)
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.ones(3, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="one channel"):
        net(torch.ones(3, 2, 10))


def test_steps_override_and_weight_sharing():
    prog = pde2net.compile_text(spec(1, "linear", "periodic", "forward", 0.3, 7))
    u = torch.randn(2, 16, dtype=torch.float64)
    net = prog.module()
    assert torch.equal(prog.module(steps=3)(u), net(u, steps=3))
    # The blocks share one stencil: the conv backend holds exactly one weight tensor of K taps.
    conv = prog.module(backend="conv")
    weights = [b for name, b in conv.named_buffers() if name.endswith("weight")]
    assert len(weights) == 1 and weights[0].numel() == 2


def test_module_shows_the_math():
    net = pde2net.load("examples/perona_malik.pde").module()
    assert type(net).__name__ == "PeronaMalik"
    assert "Phi(s) = s/(1 + s^2/lambda^2)" in repr(net)
    assert "dt(u) = dx(g(dx(u)^2) * dx(u))" in type(net).__doc__
