"""Stable learned filter banks (pde2net.nn) against dense NumPy float64 references written here
from the mathematics (docs/theory.md §1, §13): the bank as a matrix of shift matrices, its true
norm by eigvalsh, its symbol on fine frequency grids, and the fluxes by their formulas."""
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from pde2net import nn as pn

CASES = [(1, 1), (1, 3), (2, 1), (2, 3)]  # (dim, channels)
ACTIVATIONS = ["pm", "charbonnier", "linear", "relu", "leaky_relu", "tanh", "silu", "learned"]


# ---------------------------------------------------------------------------- references
def shift(n: int, size: int, tap: int) -> np.ndarray:
    """(n + 2p - size + 1) x n matrix: output o reads input o + tap - p (zero outside), p = size//2."""
    p = size // 2
    n_out = n + 2 * p - size + 1
    S = np.zeros((n_out, n))
    for o in range(n_out):
        i = o + tap - p
        if 0 <= i < n:
            S[o, i] = 1.0
    return S


def dense(w: np.ndarray, n: int) -> np.ndarray:
    """The bank (K, C, *kernel) on an n (1D) or n x n (2D) grid with zero padding, as a block
    matrix [A_kc] with A_kc = sum over taps w[k, c, tap] (shift matrices; kron in 2D)."""
    K, C, size = w.shape[0], w.shape[1], w.shape[2]
    blocks = [[None] * C for _ in range(K)]
    for k in range(K):
        for c in range(C):
            if w.ndim == 3:
                blocks[k][c] = sum(w[k, c, t] * shift(n, size, t) for t in range(size))
            else:
                blocks[k][c] = sum(w[k, c, a, b] * np.kron(shift(n, size, a), shift(n, size, b))
                                   for a in range(size) for b in range(size))
    return np.block(blocks)


def true_norm_sq(w: np.ndarray, n: int) -> float:
    A = dense(w, n)
    return float(np.linalg.eigvalsh(A.T @ A)[-1])


def symbol_sup(w: np.ndarray, M: int) -> float:
    """max over the M^d grid of ||What(theta)||_2^2, What[k, c] = sum_t w[k, c, t] e^{-i theta.t}."""
    size = w.shape[2]
    th = 2 * np.pi * np.arange(M) / M
    E = np.exp(-1j * np.outer(th, np.arange(size)))          # (M, size)
    if w.ndim == 3:
        what = np.einsum("mt,kct->mkc", E, w)
    else:
        what = np.einsum("mt,nu,kctu->mnkc", E, E, w).reshape(M * M, w.shape[0], w.shape[1])
    return float((np.linalg.svd(what, compute_uv=False)[:, 0] ** 2).max())


def flux(name: str, s: np.ndarray, act) -> np.ndarray:
    """The fluxes by their textbook formulas (contrast 1, leaky slope from the module)."""
    if name == "pm":
        return s / (1 + s ** 2)
    if name == "charbonnier":
        return s / np.sqrt(1 + s ** 2)
    if name == "linear":
        return s
    if name == "relu":
        return np.maximum(s, 0)
    if name == "leaky_relu":
        return np.where(s > 0, s, act.negative_slope * s)
    if name == "tanh":
        return np.tanh(s)
    if name == "silu":
        with np.errstate(over="ignore"):
            return s / (1 + np.exp(-s))
    assert name == "learned"
    # g = L sigmoid(a), a = normalised Gaussian interpolation of the knot values at clip(s)
    c = np.linspace(0, act.s_max, act.knots)
    h = act.s_max / (act.knots - 1)
    values = act.values.detach().double().numpy()
    out = np.empty_like(s)
    for k in range(s.shape[1]):
        v = values[0 if act.filters == 1 else k]
        t = np.clip(s[:, k], -act.s_max, act.s_max)
        psi = [np.exp(-(t - c[i]) ** 2 / (2 * h * h)) + np.exp(-(t + c[i]) ** 2 / (2 * h * h))
               for i in range(act.knots)]
        a = sum(v[i] * psi[i] for i in range(act.knots)) / sum(psi)
        out[:, k] = s[:, k] * act.L / (1 + np.exp(-a))
    return out


def randomise(block: pn.StableBlock, rng: np.random.Generator) -> None:
    with torch.no_grad():
        block.weight.copy_(torch.tensor(rng.standard_normal(block.weight.shape)))
        block.log_gain.copy_(torch.tensor(rng.uniform(-1, 1, block.log_gain.shape)))
        block.rho.fill_(float(rng.uniform(-3, 8)))
        act = block.activation
        if isinstance(act, pn.LearnedDiffusivity):
            act.values.copy_(torch.tensor(rng.standard_normal(act.values.shape) * 3))


def weights_of(block: pn.StableBlock) -> np.ndarray:
    with torch.no_grad():
        return block.effective_weight().double().numpy()


def grid(dim: int) -> int:
    return 8 if dim == 2 else 16


# ---------------------------------------------------------------------------- certificate
RAW_WEIGHTS = ["zero", "tiny", "huge", "mixed", "random", "one_tap"]


def raw_weight(kind: str, shape, rng) -> np.ndarray:
    r = rng.standard_normal(shape)
    return {"zero": np.zeros(shape), "tiny": 1e-30 * r, "huge": 1e30 * r,
            "mixed": np.where(rng.random(shape) < 0.5, 1e30, 1e-30) * np.sign(r),
            "random": r, "one_tap": np.where(np.arange(r.size).reshape(shape) == 0, 1e30, 0.0)}[kind]


@pytest.mark.parametrize("dim,channels", CASES)
@pytest.mark.parametrize("kind", RAW_WEIGHTS)
@pytest.mark.parametrize("theta_raw", [-1e4, 0.0, 1e4])
def test_certificate_holds_with_true_norm_for_extreme_parameters(dim, channels, kind, theta_raw):
    rng = np.random.default_rng(10 * dim + channels + 100 * RAW_WEIGHTS.index(kind))
    block = pn.StableBlock(channels=channels, filters=3, size=3, dim=dim, activation="learned")
    with torch.no_grad():
        block.weight.copy_(torch.tensor(raw_weight(kind, block.weight.shape, rng)))
        block.rho.fill_(theta_raw)
        block.log_gain.copy_(torch.tensor(rng.choice([-1e4, 0.0, 3.0, 1e4], size=3)))
    with torch.no_grad():
        tau = float(block.tau())
    assert math.isfinite(tau) and tau >= 0    # theta_raw = -1e4: tau = 0, the identity
    nsq = true_norm_sq(weights_of(block), grid(dim))
    assert tau * block.L * nsq < 2.0
    cert = block.certificate()
    assert cert.holds and cert.tau_L_B < 2.0
    assert nsq <= cert.B_printed * (1 + 1e-9) + 1e-300
    u = torch.tensor(rng.standard_normal((2, channels) + (grid(dim),) * dim), dtype=torch.float32)
    with torch.no_grad():
        out = block(u)
    assert torch.isfinite(out).all()
    assert float(out.norm()) <= float(u.norm()) * (1 + 1e-5)


@pytest.mark.parametrize("dim,channels", CASES)
@pytest.mark.parametrize("size", [3, 5])
def test_bounds_exceed_the_fine_frequency_sup(dim, channels, size):
    rng = np.random.default_rng(7 + size + 10 * dim + channels)
    for _ in range(3):
        w = rng.standard_normal((4, channels) + (size,) * dim)
        fine = symbol_sup(w, 1024 if dim == 1 else 96)
        wt = torch.tensor(w)
        gm, gm_star = pn.bound_grid(wt, 64)
        for b in (float(pn.bound_b1(wt)), float(pn.bound_b2(wt)), float(gm_star)):
            assert b >= fine * (1 - 1e-12)
        # the norm of the finite section never exceeds the sup of the symbol
        assert true_norm_sq(w, 10 if dim == 1 else 6) <= fine * (1 + 1e-9)


def test_plain_grid_max_is_not_a_bound():
    rng = np.random.default_rng(3)
    below = 0
    for _ in range(10):
        w = rng.standard_normal((4, 1, 3, 3))
        fine = symbol_sup(w, 160)                       # a lower bound of the true sup
        gm, gm_star = pn.bound_grid(torch.tensor(w), 9)
        below += float(gm) < fine * (1 - 1e-6)
        assert float(gm_star) >= fine
    assert below >= 1


def test_grid_too_coarse_is_refused():
    with pytest.raises(ValueError, match="too coarse"):
        pn.bound_grid(torch.randn(2, 1, 3, 3), 8)
    with pytest.raises(ValueError, match="too coarse"):
        pn.bound_grid(torch.randn(2, 1, 7, 7), 12)


# ---------------------------------------------------------------------------- dense agreement
@pytest.mark.parametrize("dim,channels", CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_block_matches_dense_numpy_reference(dim, channels, activation):
    rng = np.random.default_rng(11)
    block = pn.StableBlock(channels=channels, filters=3, size=3, dim=dim, activation=activation,
                           shared_activation=False).double()
    randomise(block, rng)
    n = grid(dim)
    u = rng.standard_normal((2, channels) + (n,) * dim) * 2.0
    A = dense(weights_of(block), n)
    with torch.no_grad():
        tau = float(block.tau())
    flat = u.reshape(2, -1)
    s = (flat @ A.T).reshape(2, 3, -1)
    ref = (flat - tau * flux(activation, s, block.activation).reshape(2, -1) @ A).reshape(u.shape)
    got = block(torch.tensor(u)).detach().numpy()
    assert np.abs(got - ref).max() <= 1e-12 * np.abs(u).max()
    # tau is the parametrisation's: theta 2 / (L B2), B2 from the autocorrelations written here
    w = weights_of(block)
    r = np.zeros((channels, channels))
    for c in range(channels):
        for c2 in range(channels):
            r[c, c2] = np.abs(sum(_correlate(w[k, c], w[k, c2]) for k in range(3))).sum()
    b2 = r.sum(1).max()
    theta = pn.THETA_MAX / (1 + math.exp(-float(block.rho.detach())))
    assert tau == pytest.approx(2 * theta / (block.L * b2), rel=1e-12)


def _correlate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full cross-correlation sum_x a(x) b(x + lag) for all lags (1D or 2D), by loops."""
    size = a.shape[0]
    lags = range(-(size - 1), size)
    if a.ndim == 1:
        return np.array([sum(a[x] * b[x + i] for x in range(size) if 0 <= x + i < size) for i in lags])
    return np.array([[sum(a[x, y] * b[x + i, y + j] for x in range(size) for y in range(size)
                          if 0 <= x + i < size and 0 <= y + j < size) for j in lags] for i in lags])


@pytest.mark.parametrize("dim,channels", CASES)
def test_transpose_is_the_exact_adjoint(dim, channels):
    rng = np.random.default_rng(5)
    block = pn.StableBlock(channels=channels, filters=4, size=3, dim=dim).double()
    randomise(block, rng)
    n = grid(dim)
    u = torch.tensor(rng.standard_normal((1, channels) + (n,) * dim))
    z = torch.tensor(rng.standard_normal((1, 4) + (n,) * dim))
    with torch.no_grad():
        lhs = float((block.W(u) * z).sum())
        rhs = float((u * block.Wt(z)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dim,channels", CASES)
def test_resnet_matches_composition_of_dense_blocks(dim, channels):
    rng = np.random.default_rng(2)
    net = pn.StableResNet(3, channels=channels, filters=2, dim=dim, activation="pm", seed=0).double()
    for b in net.blocks:
        randomise(b, rng)
    n = grid(dim)
    u = rng.standard_normal((2, channels) + (n,) * dim)
    ref = u
    for b in net.blocks:
        A = dense(weights_of(b), n)
        flat = ref.reshape(2, -1)
        ref = (flat - float(b.tau().detach()) * flux("pm", flat @ A.T, None) @ A).reshape(u.shape)
    got = net(torch.tensor(u)).detach().numpy()
    assert np.abs(got - ref).max() <= 1e-12 * np.abs(u).max()
    assert np.linalg.norm(got) <= np.linalg.norm(u)
    assert net.certificate(dense_grid=(n,) * dim).holds


def test_shared_resnet_has_one_parameter_set():
    own = pn.StableResNet(4, filters=3, dim=2)
    shared = pn.StableResNet(4, shared=True, filters=3, dim=2)
    n_own = sum(p.numel() for p in own.parameters())
    n_shared = sum(p.numel() for p in shared.parameters())
    assert n_own == 4 * n_shared == 4 * (3 * 9 + 3 + 1)


# ---------------------------------------------------------------------------- no growth
@pytest.mark.parametrize("dim,channels", CASES)
@pytest.mark.parametrize("activation", ["pm", "linear", "learned", "tanh", "relu"])
def test_top_singular_vector_never_grows(dim, channels, activation):
    rng = np.random.default_rng(13)
    block = pn.StableBlock(channels=channels, filters=3, size=3, dim=dim, activation=activation,
                           bound="grid").double()
    randomise(block, rng)
    with torch.no_grad():
        block.rho.fill_(50.0)          # theta at its maximum
    n = grid(dim)
    A = dense(weights_of(block), n)
    evals, evecs = np.linalg.eigh(A.T @ A)
    top = evecs[:, -1].reshape((1, channels) + (n,) * dim)
    for amp in (1e-8, 1e-4, 1e-2, 1.0):
        u = torch.tensor(amp * top)
        with torch.no_grad():
            assert float(block(u).norm()) <= float(u.norm()) * (1 + 1e-12)
    # the check can fail: the same step with tau 10% past 2 / (L ||W||^2) grows (linear Phi)
    if activation == "linear":
        tau = 1.1 * 2 / (block.L * evals[-1])
        v = top.reshape(-1) * 1e-4
        assert np.linalg.norm(v - tau * A.T @ (A @ v)) > 1.1 * np.linalg.norm(v)


# ---------------------------------------------------------------------------- activations
@pytest.mark.parametrize("filters", [1, 4])
def test_learned_activation_stays_in_range(filters):
    rng = np.random.default_rng(17)
    s = np.concatenate([np.linspace(-40, 40, 8000), [-1e6, 1e6, -1e30, 1e30]])   # no s = 0
    for scale in (1.0, 10.0, 1e4, 1e30):
        act = pn.LearnedDiffusivity(knots=16, L=2.5, filters=filters).double()
        with torch.no_grad():
            act.values.copy_(torch.tensor(rng.standard_normal(act.values.shape) * scale))
        x = np.broadcast_to(s, (1, filters, s.size)).copy() if filters > 1 else s
        phi = act(torch.tensor(x)).detach().numpy()
        assert np.isfinite(phi).all()
        ratio = phi / x                 # rounding of (s g) / s: a few ulps over g
        assert ratio.min() >= 0 and ratio.max() <= 2.5 * (1 + 1e-15)
        g = act.g(torch.tensor(x)).detach().numpy()
        assert g.min() >= 0 and g.max() <= 2.5
        with torch.no_grad():
            zero = act(torch.zeros(1, filters, 1, dtype=torch.float64) if filters > 1
                       else torch.zeros(1, dtype=torch.float64))
        assert float(zero.abs().max()) == 0
        assert act.verify()["ok"]
    cert = act.certificate()
    assert cert["L"] == 2.5 and "docs/theory.md §13" in cert["statement"]


def test_learned_activation_fits_perona_malik_flux():
    torch.manual_seed(0)
    act = pn.LearnedDiffusivity(knots=24, L=1.0, s_max=5.0)
    s = torch.linspace(0, 5, 401)
    target = s / (1 + s ** 2)
    opt = torch.optim.Adam(act.parameters(), lr=0.2)
    for _ in range(300):
        opt.zero_grad()
        loss = ((act(s) - target) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err = float((act(s) - target).abs().max())
        assert err < 1e-2
        # nonmonotone: the fitted flux falls after its maximum near s = 1, as PM's does
        assert float(act(torch.tensor(1.0))) > float(act(torch.tensor(4.0))) + 0.2


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_fixed_activations_satisfy_the_hypothesis(name):
    act = pn.make_activation(name).double()
    s = np.concatenate([np.linspace(-50, 50, 10001), [-1e6, 1e6]])
    s = s[s != 0]
    phi = act(torch.tensor(s)).detach().numpy()
    np.testing.assert_allclose(phi, flux(name, s[None, None], act)[0, 0] if name == "learned"
                               else flux(name, s, act), rtol=1e-12, atol=1e-300)
    ratio = phi / s
    assert ratio.min() >= 0 and ratio.max() <= act.L * (1 + 1e-15)
    assert float(act(torch.zeros(1, dtype=torch.float64))) == 0.0


def test_bad_activations_are_refused():
    with pytest.raises(ValueError, match="softplus.*log 2"):
        pn.StableBlock(activation="softplus")
    with pytest.raises(ValueError, match="did you mean 'tanh'"):
        pn.StableBlock(activation="tahn")
    with pytest.raises(ValueError, match="negative_slope"):
        pn.StableBlock(activation="leaky_relu", negative_slope=1.5)
    with pytest.raises(ValueError, match="no option"):
        pn.StableBlock(activation="relu", contrast=2.0)


# ---------------------------------------------------------------------------- gradients, verify
@pytest.mark.parametrize("fast_mode", [True, pytest.param(False, marks=pytest.mark.slow)])
@pytest.mark.parametrize("dim,channels", CASES)
@pytest.mark.parametrize("activation", ["pm", "learned"])
def test_gradcheck_float64(dim, channels, activation, fast_mode):
    rng = np.random.default_rng(19)
    block = pn.StableBlock(channels=channels, filters=2, size=3, dim=dim, activation=activation,
                           shared_activation=False, **({"knots": 6} if activation == "learned" else {})
                           ).double()
    randomise(block, rng)
    names = [n for n, _ in block.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in block.named_parameters())
    n = 5 if dim == 1 else 4
    u = torch.tensor(rng.standard_normal((1, channels) + (n,) * dim), requires_grad=True)

    def f(u, *ps):
        return functional_call(block, dict(zip(names, ps)), (u,))

    assert torch.autograd.gradcheck(f, (u, *params), eps=1e-6, atol=1e-7, fast_mode=fast_mode)


@pytest.mark.parametrize("dim,channels", CASES)
def test_verify_and_certificate_of_trained_like_blocks(dim, channels):
    net = pn.StableResNet(2, channels=channels, filters=3, dim=dim, activation="learned",
                          shared_activation=False, seed=1)
    rng = np.random.default_rng(23)
    for b in net.blocks:
        randomise(b, rng)
    report = net.verify()
    assert report["ok"], report
    cert = net.certificate(dense_grid=(6,) * dim)
    assert cert.holds and "docs/theory.md §13" in cert.statement
    for b in cert.blocks:
        assert b.dense_norm_sq <= b.B_printed * (1 + 1e-9) and b.tau_L_dense < 2


class _TooLargeStep(pn.StableBlock):
    """A block whose step ignores the bound: 3 theta 2 / (L B) (for the negative control)."""

    def tau(self, w=None):
        return 3.0 * super().tau(w)


@pytest.mark.parametrize("dim", [1, 2])
def test_verify_detects_a_step_past_the_bound(dim):
    block = _TooLargeStep(channels=1, filters=2, dim=dim, activation="linear", bound="grid")
    with torch.no_grad():
        block.rho.fill_(50.0)
    report = block.verify()
    assert not report["ok"] and report["max_gain_top"] > 1.1 and report["tau_L_dense"] > 2
    assert not block.certificate().holds


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_certificate_many_random_banks(seed):
    rng = np.random.default_rng(100 + seed)
    dim, channels = CASES[seed % 4]
    size = int(rng.choice([1, 2, 3, 4, 5]))
    block = pn.StableBlock(channels=channels, filters=int(rng.integers(1, 6)), size=size, dim=dim,
                           activation=str(rng.choice(ACTIVATIONS)), bound=str(rng.choice(pn.BOUNDS)))
    randomise(block, rng)
    with torch.no_grad():
        block.rho.fill_(float(rng.uniform(0, 1e4)))
    w = weights_of(block)
    nsq = true_norm_sq(w, 10 if dim == 2 else 24)
    fine = symbol_sup(w, 2048 if dim == 1 else 128)
    assert nsq <= fine * (1 + 1e-9)
    cert = block.certificate()
    for b in (cert.B1, cert.B2, cert.Gm_star):
        assert b >= fine * (1 - 1e-9)
    assert cert.tau * block.L * nsq < 2
    assert block.verify(size=6 if dim == 2 else 12)["ok"]
