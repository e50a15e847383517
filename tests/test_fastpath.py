"""The CPU fast path of ``compile=True`` (pde2net.fastpath): the generated C++ kernel against a
dense float64 NumPy reference written here from the mathematics, against the eager module, and
its fallbacks.  Speed lives in benchmarks/bench_cpu.py, not here.

The dense reference: u <- u - tau D^T Phi(D u) with D assembled entry by entry from the boundary
rule (docs/theory.md §12 for dirichlet: zero ghost values on every side, so the 1D forward D is
(N+1) x N and the 2D gradient lives on the (H+1) x (W+1) flux points), Phi(s) = s g(s^2) in 1D and
Phi(v) = g(|v|^2) v in 2D with g(s2) = 1 / (1 + s2 / lambda^2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import pde2net
from pde2net import fastpath

from reference import dense_difference

ROOT = Path(__file__).resolve().parent.parent
LAM, TAU_1D, TAU_2D = 0.3, 0.25, 0.2
BOUNDARIES = ("neumann", "periodic", "dirichlet")


def spec(ndim: int, boundary: str, scheme: str | None = None, extra: str = "") -> str:
    if ndim == 1:
        return (f"pde pm\nparam lambda = {LAM}\nfield u(x)\ndiffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n"
                f"equation dt(u) = dx( g(dx(u)^2) * dx(u) )\ngrid h = 1\nsize N = 16\n{extra}"
                f"boundary {boundary}\nscheme {scheme or f'explicit(tau = {TAU_1D}, steps = 5)'}\n")
    return (f"pde pm2\nparam lambda = {LAM}\nfield u(x, y)\ndiffusivity g(s2) = 1 / (1 + s2 / lambda^2)\n"
            f"equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )\ngrid h = 1\nsize NX = 12, NY = 9\n"
            f"{extra}boundary {boundary}\nscheme {scheme or f'explicit(tau = {TAU_2D}, steps = 5)'}\n")


def g(s2: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + s2 / LAM ** 2)


# ----------------------------------------------------------------------- dense reference
def forward_1d(n: int, boundary: str) -> np.ndarray:
    """The 1D forward difference (D u)_i = u_(i+1) - u_i for each boundary rule."""
    if boundary == "dirichlet":  # flux points -1 .. n-1, u_-1 = u_n = 0
        d = np.zeros((n + 1, n))
        for i in range(-1, n):
            if i >= 0:
                d[i + 1, i] -= 1.0
            if i + 1 < n:
                d[i + 1, i + 1] += 1.0
        return d
    return dense_difference([-1.0, 1.0], 0, n, boundary)  # neumann: (n-1) x n; periodic: circulant


def gradient_2d(h: int, w: int, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """Dx, Dy on a common grid of flux points (so g(vx^2 + vy^2) pairs the same point)."""
    if boundary == "dirichlet":
        emb = lambda n: np.eye(n + 1, n, k=-1)  # (n+1) x n: the ghost row -1 is zero  # noqa: E731
        return np.kron(emb(h), forward_1d(w, boundary)), np.kron(forward_1d(h, boundary), emb(w))
    if boundary == "neumann":  # zero rows where the difference would leave the grid
        sq = lambda n: np.vstack([forward_1d(n, boundary), np.zeros((1, n))])  # noqa: E731
    else:
        sq = lambda n: forward_1d(n, boundary)  # noqa: E731
    return np.kron(np.eye(h), sq(w)), np.kron(sq(h), np.eye(w))


def dense_steps(u0: np.ndarray, boundary: str, steps: int) -> np.ndarray:
    """float64, one row (1D) or one image (2D) at a time."""
    u = np.array(u0, dtype=np.float64)
    if u.ndim == 2:  # 1D batch (B, N)
        d = forward_1d(u.shape[-1], boundary)
        for _ in range(steps):
            v = u @ d.T
            u = u - TAU_1D * ((v * g(v * v)) @ d)
        return u
    b, h, w = u.shape
    dx, dy = gradient_2d(h, w, boundary)
    x = u.reshape(b, h * w)
    for _ in range(steps):
        vx, vy = x @ dx.T, x @ dy.T
        gg = g(vx * vx + vy * vy)
        x = x - TAU_2D * ((gg * vx) @ dx + (gg * vy) @ dy)
    return x.reshape(b, h, w)


def sample(ndim: int, batch: int = 3, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 16) if ndim == 1 else (batch, 9, 12)
    return torch.rand(shape, generator=gen, dtype=torch.float64).to(dtype)


def kernel(ndim: int, boundary: str) -> fastpath.Kernel:
    return fastpath.Kernel(fastpath.kernel_plan(pde2net.compile_text(spec(ndim, boundary)).arch))


def tol(dtype) -> dict:
    return {"rtol": 0, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 0, "atol": 2e-5}


# --------------------------------------------------------------------------------- kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("ndim", [1, 2])
def test_kernel_matches_dense_reference(ndim, boundary, dtype):
    u = sample(ndim, dtype=dtype)
    got = kernel(ndim, boundary)(u, 7)
    want = dense_steps(u.double().numpy(), boundary, 7)
    assert got.dtype == dtype and got.shape == u.shape
    np.testing.assert_allclose(got.double().numpy(), want, **tol(dtype))
    # the torch formulation of the same ghost cells (the path gradients can take)
    plan = fastpath.kernel_plan(pde2net.compile_text(spec(ndim, boundary)).arch)
    np.testing.assert_allclose(fastpath.reference_step(plan, u.double(), 7).numpy(), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_multistep_calls_and_thread_tiles_2d(boundary, threads):
    """Images split among threads (batch 2) or rows of each step shared (batch 3 on 2 threads, 9
    rows: the tile edge at row 4 of an odd height); 7 steps in one call = 3 + 4 = 1 + 6, and equal the reference."""
    k = kernel(2, boundary)
    k.split_min = 0  # share the rows of small images too (the default keeps them whole)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for batch in (2, 3):
            u = sample(2, batch=batch, seed=batch)
            whole = k(u, 7)
            assert torch.equal(whole, k(k(u, 3), 4)) and torch.equal(whole, k(k(u, 1), 6))
            np.testing.assert_allclose(whole.numpy(), dense_steps(u.numpy(), boundary, 7), rtol=0, atol=1e-12)
            assert torch.equal(k(u, 0), u)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_multistep_calls_1d(boundary):
    k = kernel(1, boundary)
    u = sample(1, batch=5)
    whole = k(u, 11)
    assert torch.equal(whole, k(k(u, 4), 7))
    np.testing.assert_allclose(whole.numpy(), dense_steps(u.numpy(), boundary, 11), rtol=0, atol=1e-12)


def test_other_fluxes_follow_the_op_tree():
    """Charbonnier (a square root) and linear diffusion (g constant: no field variable in g)."""
    text = (ROOT / "examples" / "charbonnier.pde").read_text()
    plan = fastpath.kernel_plan(pde2net.compile_text(text).arch)
    u = torch.rand(2, 40, dtype=torch.float64)
    lam = plan["params"]["lambda"]
    d = forward_1d(40, "periodic")
    x = u.numpy()
    for _ in range(6):
        v = x @ d.T
        x = x - 0.4 * ((v / np.sqrt(1 + v * v / lam ** 2)) @ d)
    np.testing.assert_allclose(fastpath.Kernel(plan)(u, 6).numpy(), x, rtol=0, atol=1e-12)
    heat = pde2net.compile_text(spec(2, "periodic").replace("1 / (1 + s2 / lambda^2)", "1"))
    uh = sample(2)
    dx, dy = gradient_2d(9, 12, "periodic")
    want = uh.numpy().reshape(3, -1)
    for _ in range(3):
        want = want - TAU_2D * ((want @ dx.T) @ dx + (want @ dy.T) @ dy)
    got = fastpath.Kernel(fastpath.kernel_plan(heat.arch))(uh, 3)
    np.testing.assert_allclose(got.numpy().reshape(3, -1), want, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------- the module
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_compiled_module_runs_the_kernel_and_agrees(ndim, boundary, dtype):
    prog = pde2net.compile_text(spec(ndim, boundary))
    net = prog.module(compile=True, dtype=dtype)
    assert isinstance(net.forward, fastpath.FastForward), getattr(net, "fastpath_skipped", None)
    assert isinstance(net, torch.nn.Module)
    u = sample(ndim, dtype=dtype)
    with torch.no_grad():
        got = net(u)
        eager = prog.module(dtype=dtype)(u)
    np.testing.assert_allclose(got.double().numpy(), eager.double().numpy(), **tol(dtype))
    np.testing.assert_allclose(got.double().numpy(), dense_steps(u.double().numpy(), boundary, 5), **tol(dtype))
    single = u[0]  # (N,) or (H, W): the module's shapes
    with torch.no_grad():
        assert net(single, steps=2).shape == single.shape
        assert torch.equal(prog.run(u, net=net, every=2), got)  # run in chunks: the same tensor


@pytest.mark.parametrize("ndim", [1, 2])
def test_dirichlet_kernel_only_where_eager_agrees(ndim):
    """The kernel's dirichlet is zero ghosts on every side; it is installed only when the eager
    module computes the same (probe), so compile=True never changes what the network computes."""
    prog = pde2net.compile_text(spec(ndim, "dirichlet"))
    u = sample(ndim)
    with torch.no_grad():
        eager = prog.module()(u).numpy()
    eager_is_ghost = np.allclose(eager, dense_steps(u.numpy(), "dirichlet", 5), rtol=0, atol=1e-10)
    net = prog.module(compile=True)
    assert isinstance(net.forward, fastpath.FastForward) == eager_is_ghost
    if not eager_is_ghost:
        assert "disagree" in net.fastpath_skipped


@pytest.mark.parametrize("example", ["fed.pde", "fourth_order.pde"])
def test_unsupported_networks_keep_the_compiled_step(example):
    """Another scheme or a three-point stencil: no kernel, forward is the class's own (today's
    compiled path: the compiled block in the Python loop), with the reason recorded."""
    prog = pde2net.load(ROOT / "examples" / example)
    net = prog.module(compile=True)
    assert "forward" not in vars(net) and net.fastpath_skipped
    with pytest.raises(fastpath.Unsupported):
        fastpath.kernel_plan(prog.arch)


def test_trainable_network_is_not_accelerated():
    prog = pde2net.compile_text(spec(1, "neumann"))
    net = prog.module(trainable=True)
    assert fastpath.accelerate(net) is not None and "forward" not in vars(net)


# ---------------------------------------------------------------------------- gradients
def directional_fd(u0: np.ndarray, boundary: str, steps: int, weight: np.ndarray, direction: np.ndarray) -> float:
    """d/de sum(weight * F(u0 + e direction)) at e = 0 by central differences on the dense reference."""
    e = 1e-6
    plus = dense_steps(u0 + e * direction, boundary, steps)
    minus = dense_steps(u0 - e * direction, boundary, steps)
    return float((weight * (plus - minus)).sum() / (2 * e))


def check_gradient(ndim: int, boundary: str, grad: torch.Tensor, u: torch.Tensor, steps: int) -> None:
    gen = np.random.default_rng(1)
    weight = np.cos(np.arange(u.numel())).reshape(u.shape)
    direction = gen.standard_normal(u.shape)
    want = directional_fd(u.detach().double().numpy(), boundary, steps, weight, direction)
    assert float((grad.double().numpy() * direction).sum()) == pytest.approx(want, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("ndim", [1, 2])
def test_reference_step_gradient(ndim, boundary):
    """The torch ghost-cell step is differentiable and its gradient is the dense reference's."""
    plan = fastpath.kernel_plan(pde2net.compile_text(spec(ndim, boundary)).arch)
    u = sample(ndim).requires_grad_(True)
    weight = torch.cos(torch.arange(u.numel(), dtype=torch.float64)).reshape(u.shape)
    (fastpath.reference_step(plan, u, 3) * weight).sum().backward()
    check_gradient(ndim, boundary, u.grad, u, 3)


def _module_gradient(ndim: int, boundary: str, dtype) -> None:
    prog = pde2net.compile_text(spec(ndim, boundary, f"explicit(tau = {TAU_1D if ndim == 1 else TAU_2D}, steps = 3)"))
    net = prog.module(compile=True, dtype=dtype)
    assert isinstance(net.forward, fastpath.FastForward)
    u = sample(ndim, dtype=dtype).requires_grad_(True)
    weight = torch.cos(torch.arange(u.numel(), dtype=torch.float64)).reshape(u.shape).to(dtype)
    (net(u) * weight).sum().backward()
    ue = u.detach().clone().requires_grad_(True)
    (prog.module(steps=3, dtype=dtype)(ue) * weight).sum().backward()
    np.testing.assert_allclose(u.grad.double().numpy(), ue.grad.double().numpy(), **tol(dtype))
    if dtype == torch.float64:
        check_gradient(ndim, boundary, u.grad, u, 3)


def test_module_gradient_1d():
    """With a gradient wanted the network runs its compiled block (one torch.compile here)."""
    _module_gradient(1, "neumann", torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_module_gradient_every_case(ndim, boundary, dtype):
    _module_gradient(ndim, boundary, dtype)


def test_kernel_build_is_cached(tmp_path, monkeypatch):
    """The build lands in the per-user cache directory and a second build of the same source
    compiles nothing."""
    monkeypatch.setenv("PDE2NET_CACHE", str(tmp_path))
    src = fastpath.kernel_source(fastpath.kernel_plan(pde2net.compile_text(spec(1, "neumann")).arch))
    src += "\n// cache test\n"
    _, first = fastpath.build(src)
    _, second = fastpath.build(src)
    assert first > 0 and second == 0 and list((tmp_path / "fastpath").glob("k*.so"))


def test_kernel_follows_a_new_tau():
    prog = pde2net.compile_text(spec(1, "periodic"))
    net = prog.module(compile=True)
    assert isinstance(net.forward, fastpath.FastForward)
    net.tau = 0.1
    u = sample(1)
    with torch.no_grad():
        got = net(u, steps=3).numpy()
    d = forward_1d(16, "periodic")
    x = u.numpy()
    for _ in range(3):
        v = x @ d.T
        x = x - 0.1 * ((v * g(v * v)) @ d)
    np.testing.assert_allclose(got, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_1d_chunk_edges(boundary):
    """A row longer than the kernel's chunk of 512 points and not a multiple of it (1100 = 512 +
    512 + 76): the flux at each chunk edge is computed twice and must not change the result."""
    k = kernel(1, boundary)
    u = torch.rand(2, 1100, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(k(u, 3).numpy(), dense_steps(u.numpy(), boundary, 3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("ndim", [1, 2])
def test_cli_run_uses_the_kernel(ndim, tmp_path, monkeypatch):
    """``pde2net run`` on the CPU runs the kernel (checked by spying on it) and writes the dense
    reference's result."""
    from pde2net import cli

    calls = []
    real = fastpath.Kernel.__call__
    monkeypatch.setattr(fastpath.Kernel, "__call__", lambda self, u, steps: calls.append(steps) or real(self, u, steps))
    (tmp_path / "pm.pde").write_text(spec(ndim, "periodic"))
    u = sample(ndim, batch=2).numpy()
    np.save(tmp_path / "u.npy", u)
    assert cli.main(["run", str(tmp_path / "pm.pde"), "--input", str(tmp_path / "u.npy"),
                     "--output", str(tmp_path / "out.npy"), "--dtype", "float64"]) == 0
    assert 5 in calls
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), dense_steps(u, "periodic", 5), rtol=0, atol=1e-12)


def test_without_a_compiler_the_network_keeps_the_compiled_step(tmp_path, monkeypatch):
    monkeypatch.setattr(fastpath, "_LOADED", {})
    monkeypatch.setenv("PDE2NET_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++
    net = pde2net.compile_text(spec(1, "neumann")).module(compile=True)
    assert "forward" not in vars(net) and net.fastpath_skipped


def test_a_shared_cache_directory_is_refused(tmp_path, monkeypatch):
    """Kernels are loaded into the process: a cache others can write to is never used."""
    import os

    shared = tmp_path / "shared"
    (shared / "fastpath").mkdir(parents=True)
    os.chmod(shared / "fastpath", 0o777)
    monkeypatch.setenv("PDE2NET_CACHE", str(shared))
    with pytest.raises(fastpath.Unsupported, match="not private"):
        fastpath.cache_dir()
    monkeypatch.setenv("PDE2NET_CACHE", str(tmp_path / "mine"))
    assert (fastpath.cache_dir().stat().st_mode & 0o777) == 0o700
