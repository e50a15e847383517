"""Learned stencil banks in the language: ``stencil learned(size = K, filters = F)`` and
``diffusivity g(s2) = learned(knots = N, L = EXPR)`` compile to a stable filter-bank network
(docs/theory.md §13).  References are written here from the mathematics: the bank as a dense
float64 matrix of shift matrices (zero padding), its true norm by eigvalsh, the block as
``u - tau A^T Phi(A u)`` with Phi from its formula."""
import json
import math

import numpy as np
import pytest
import torch

from pde2net import nn as pn
from pde2net.cli import main
from pde2net.errors import PdeError
from pde2net.program import compile_text

LEARNED_2D = """pde learned_pm
field u(x, y)
diffusivity g(s2) = learned(knots = 12, L = 2)
equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )
boundary dirichlet
stencil learned(size = 3, filters = 4)
scheme explicit(steps = 3)
"""

LEARNED_1D = """pde learned_1d
field u(x)
diffusivity g(s2) = learned(knots = 8, L = 1, s_max = 2)
equation dt(u) = 3 * dx( g(dx(u)^2) * dx(u) )
boundary dirichlet
stencil learned(size = 5, filters = 3)
scheme explicit(tau = auto, steps = 2)
"""

FIXED_PM_1D = """pde fixed_pm
param lambda = 0.5
field u(x)
diffusivity g(s2) = 1 / (1 + s2 / lambda^2)
equation dt(u) = dx( g(dx(u)^2) * dx(u) )
boundary dirichlet
stencil learned(size = 3, filters = 5)
scheme explicit(steps = 2)
"""


# ---------------------------------------------------------------------------- references
def shift(n: int, size: int, tap: int) -> np.ndarray:
    """n x n: output o reads input o + tap - size//2, zero outside (odd sizes)."""
    S = np.zeros((n, n))
    for o in range(n):
        i = o + tap - size // 2
        if 0 <= i < n:
            S[o, i] = 1.0
    return S


def dense(w: np.ndarray, n: int) -> np.ndarray:
    """The single-channel bank (K, 1, *kernel) on n or n x n points: rows (k, output point)."""
    size = w.shape[2]
    rows = []
    for k in range(w.shape[0]):
        if w.ndim == 3:
            rows.append(sum(w[k, 0, t] * shift(n, size, t) for t in range(size)))
        else:
            rows.append(sum(w[k, 0, a, b] * np.kron(shift(n, size, a), shift(n, size, b))
                            for a in range(size) for b in range(size)))
    return np.vstack(rows)


def effective(block: pn.StableBlock) -> np.ndarray:
    with torch.no_grad():
        return block.effective_weight().double().numpy()


def tau_of(block: pn.StableBlock) -> float:
    with torch.no_grad():
        return float(block.tau().double())


def train_a_little(net: torch.nn.Module, shape: tuple[int, ...], seed: int = 0, steps: int = 5) -> None:
    """A few Adam steps toward a smoothed target, so the values differ from the initial ones."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(steps):
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        ((net(x) - 0.5 * x) ** 2).mean().backward()
        opt.step()


# ---------------------------------------------------------------------------- compiling
@pytest.mark.parametrize("text,dim,filters,size,depth", [
    (LEARNED_2D, 2, 4, 3, 3), (LEARNED_1D, 1, 3, 5, 2), (FIXED_PM_1D, 1, 5, 3, 2)])
def test_spellings_compile_to_a_stable_resnet(text, dim, filters, size, depth):
    prog = compile_text(text)
    assert prog.learned
    net = prog.module(trainable=True)
    assert isinstance(net, pn.StableResNet) and net.depth == depth and not net.shared
    for i in range(depth):
        b = net.block(i)
        assert (b.dim, b.filters, b.size, b.channels) == (dim, filters, size, 1)
    assert all(p.requires_grad for p in net.parameters())
    r = prog.stability
    assert r.verdict == "stable" and r.stable and r.guarantee == "proof"


def test_learned_diffusivity_settings_and_factor_give_L():
    """g = L sigmoid(a) in [0, L]; the equation's factor 3 multiplies the bound: L = 3 * 1."""
    net = compile_text(LEARNED_1D).module(trainable=True)
    act = net.block(0).activation
    assert isinstance(act, pn.LearnedDiffusivity)
    assert (act.knots, act.s_max, act.L) == (8, 2.0, 3.0)
    act2 = compile_text(LEARNED_2D).module(trainable=True).block(1).activation
    assert (act2.knots, act2.L) == (12, 2.0)
    # each block has its own diffusivity
    assert net.block(0).activation is not net.block(1).activation


def test_fixed_flux_is_the_perona_malik_formula():
    act = compile_text(FIXED_PM_1D).module(trainable=True).block(0).activation
    s = np.concatenate([np.linspace(-20, 20, 4001), [-1e6, 1e6, 0.0]])
    ref = s / (1 + s ** 2 / 0.25)
    got = act(torch.tensor(s)).numpy()
    assert np.abs(got - ref).max() <= 1e-15 * np.maximum(np.abs(s), 1).max()
    assert act.L == 1.0
    nz = s != 0
    assert (got[nz] / s[nz] >= 0).all() and (got[nz] / s[nz] <= 1.0).all()


def test_module_without_trainable_is_frozen_at_initial_values():
    torch.manual_seed(3)
    net = compile_text(LEARNED_2D).module()
    assert isinstance(net, pn.StableResNet)
    assert not any(p.requires_grad for p in net.parameters())


def test_block_matches_dense_reference_and_layouts():
    """The spec's network equals u - tau A^T Phi(A u) per block (dense, Phi = PM formula), on the
    language's layouts (N,), (B, N), (B, 1, N)."""
    torch.manual_seed(1)
    net = compile_text(FIXED_PM_1D).module(trainable=True, dtype=torch.float64)
    train_a_little(net, (4, 1, 16))
    n = 16
    u = np.random.default_rng(0).standard_normal((2, n)) * 3
    ref = u.copy()
    for i in range(net.depth):
        b = net.block(i)
        A = dense(effective(b), n)
        s = ref @ A.T
        ref = ref - tau_of(b) * (s / (1 + s ** 2 / 0.25)) @ A
    with torch.no_grad():
        for x in (torch.tensor(u), torch.tensor(u)[:, None, :]):
            got = net(x).reshape(2, n).numpy()
            assert np.abs(got - ref).max() <= 1e-12 * np.abs(u).max()
        one = net(torch.tensor(u[0])).numpy()
    assert np.abs(one - ref[0]).max() <= 1e-12 * np.abs(u).max()


# ---------------------------------------------------------------------------- certificate
def randomise(net: pn.StableResNet, rng: np.random.Generator, kind: str) -> None:
    with torch.no_grad():
        for b in net.blocks:
            r = rng.standard_normal(b.weight.shape)
            raw = {"random": r, "huge": 1e30 * r, "tiny": 1e-30 * r, "zero": 0 * r,
                   "one_tap": np.where(np.arange(r.size).reshape(r.shape) == 0, 1e30, 0.0)}[kind]
            b.weight.copy_(torch.tensor(raw))
            b.log_gain.copy_(torch.tensor(rng.choice([-1e4, 0.0, 3.0, 1e4], size=b.filters)))
            b.rho.fill_(float(rng.choice([-1e4, 0.0, 8.0, 1e4])))
            act = b.activation
            if isinstance(act, pn.LearnedDiffusivity):
                act.values.copy_(torch.tensor(rng.standard_normal(act.values.shape) * 1e3))


@pytest.mark.parametrize("text", [LEARNED_2D, LEARNED_1D, FIXED_PM_1D])
@pytest.mark.parametrize("kind", ["random", "huge", "tiny", "zero", "one_tap"])
def test_certificate_holds_with_the_true_norm(text, kind):
    """tau L ||sum_k W_k^T W_k|| < 2 for random and extreme raw parameters, the norm computed
    densely here; the dense top singular vector at small amplitude never grows."""
    prog = compile_text(text)
    net = prog.module(trainable=True, dtype=torch.float64)
    rng = np.random.default_rng(len(text) + len(kind))
    randomise(net, rng, kind)
    L = prog.stability.L if not isinstance(net.block(0).activation, pn.LearnedDiffusivity) \
        else net.block(0).activation.L
    n = 7 if net.block(0).dim == 2 else 16
    for b in net.blocks:
        A = dense(effective(b), n)
        nsq = float(np.linalg.eigvalsh(A.T @ A)[-1])
        tau = tau_of(b)
        assert math.isfinite(tau) and tau >= 0
        assert tau * L * nsq < 2.0
        cert = b.certificate()
        assert cert.holds and nsq <= cert.B2 * (1 + 1e-9) + 1e-300
        top = np.linalg.eigh(A.T @ A)[1][:, -1].reshape(1, 1, *([n] * b.dim))
        for amp in (1e-6, 1e-2, 1.0):
            x = torch.tensor(amp * top)
            with torch.no_grad():
                assert float(b(x).norm()) <= float(x.norm()) * (1 + 1e-12)
    assert net.certificate().holds


# ---------------------------------------------------------------------------- check
def test_check_prints_the_certificate_form(tmp_path, capsys):
    f = tmp_path / "l.pde"
    f.write_text(LEARNED_2D)
    assert main(["check", str(f)]) == 0
    out = capsys.readouterr().out
    assert "tau L B(W) < 2 with B = B2(W)" in out and "for every parameter value" in out
    assert "docs/theory.md §13" in out and "verdict: STABLE (proof" in out
    assert main(["check", str(f), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "stable" and d["stable"] is True and d["guarantee"] == "proof"
    assert d["tau_max"] is None and d["tau"] is None and d["L"] == 2.0
    assert "tau L B(W) < 2" in d["certificate"] and d["training_bound"] == "B2"
    assert d["filters"] == 4 and d["filter_size"] == 3 and d["steps"] == 3


def test_check_fixed_flux_without_bound_is_not_stable():
    text = FIXED_PM_1D.replace("1 / (1 + s2 / lambda^2)", "-1 / (1 + s2)")
    prog = compile_text(text)
    assert prog.stability.verdict == "not stable" and not prog.stability.stable
    with pytest.raises(PdeError, match="cannot build a certified learned bank"):
        prog.module(trainable=True)


# ---------------------------------------------------------------------------- source
def _load_source(src: str, cls: str) -> torch.nn.Module:
    ns: dict = {}
    exec(compile(src, "<generated>", "exec"), ns)  # noqa: S102 - the generated module under test
    return ns[cls]()


@pytest.mark.parametrize("text,shape", [(LEARNED_2D, (3, 1, 10, 9)), (LEARNED_1D, (3, 1, 20)),
                                        (FIXED_PM_1D, (3, 1, 20))])
def test_emitted_source_reproduces_the_trained_network(text, shape):
    torch.manual_seed(0)
    prog = compile_text(text)
    net = prog.module(trainable=True, dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train_a_little(net, shape)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    src = prog.source(net)
    assert "import pde2net" not in src and "from pde2net" not in src
    w = net.block(0).effective_weight().detach().double().flatten()
    assert repr(float(w[0])) in src  # printed exactly
    mod = _load_source(src, prog.arch.class_name)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 4
    with torch.no_grad():
        ref, got = net(x), mod(x)
        assert float((got - ref).abs().max()) <= 1e-12 * float(x.abs().max())
        assert float(mod(x[:, 0]).sub(ref[:, 0]).abs().max()) <= 1e-12 * float(x.abs().max())


def test_compile_with_weights(tmp_path, capsys):
    f = tmp_path / "l.pde"
    f.write_text(LEARNED_1D)
    torch.manual_seed(2)
    prog = compile_text(LEARNED_1D)
    net = prog.module(trainable=True, dtype=torch.float64)
    train_a_little(net, (2, 1, 12))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "net.py"
    assert main(["compile", str(f), "--weights", str(tmp_path / "w.pt"), "-o", str(out)]) == 0
    mod = _load_source(out.read_text(), prog.arch.class_name)
    x = torch.randn(2, 12, dtype=torch.float64)
    with torch.no_grad():
        assert float((mod(x) - net(x)).abs().max()) <= 1e-12 * float(x.abs().max())
    # weights of another spec: exit 2 with a message, no traceback
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
    assert main(["compile", str(f), "--weights", str(tmp_path / "bad.pt")]) == 2
    assert "do not fit" in capsys.readouterr().err


# ---------------------------------------------------------------------------- bad input
BAD = [
    ("stencil learned(size = 3, filters = 4)", "stencil learned(size = 0, filters = 4)",
     "size must be a positive integer", None),
    ("stencil learned(size = 3, filters = 4)", "stencil learned(sise = 3, filters = 4)",
     "'sise' is not a setting", "size"),
    ("stencil learned(size = 3, filters = 4)", "stencil learned(size = 2.5)",
     "must be a positive integer", None),
    ("stencil learned(size = 3, filters = 4)", "stencil learned(size = 3, filters = 99999)",
     "too large", None),
    ("stencil learned(size = 3, filters = 4)", "stencil lerned(size = 3)", "takes no settings",
     "learned"),
    ("stencil learned(size = 3, filters = 4)", "stencil learned", "needs its settings", None),
    ("stencil learned(size = 3, filters = 4)", "stencil learned(size = 3, size = 5)",
     "given twice", None),
    ("learned(knots = 12, L = 2)", "learned(knots = 1, L = 2)", "at least 2", None),
    ("learned(knots = 12, L = 2)", "learned(knots = 12, L = 0)", "must be positive", None),
    ("learned(knots = 12, L = 2)", "learned(knotz = 12)", "'knotz' is not a setting", "knots"),
    ("learned(knots = 12, L = 2)", "lerned(knots = 12)", "unknown learned form", "learned"),
    ("learned(knots = 12, L = 2)", "learned(12, 2)", "takes settings NAME = VALUE", None),
    ("boundary dirichlet", "boundary neumann", "zero padding", "dirichlet"),
    ("boundary dirichlet", "boundary x: dirichlet, y: periodic", "zero padding", None),
    ("scheme explicit(steps = 3)", "scheme explicit(tau = 0.1, steps = 3)", "parametrised", None),
    ("scheme explicit(steps = 3)", "scheme explicit(time = 1)", "no stopping time", None),
    ("scheme explicit(steps = 3)", "scheme fed(tau_max = 0.1, cycle_length = 3)",
     "needs the explicit scheme", None),
    ("stencil learned(size = 3, filters = 4)", "stencil central", "needs a learned stencil bank",
     None),
]


@pytest.mark.parametrize("old,new,message,hint", BAD)
def test_bad_spellings_are_pde_errors_with_positions(old, new, message, hint):
    assert old in LEARNED_2D
    text = LEARNED_2D.replace(old, new)
    with pytest.raises(PdeError) as info:
        compile_text(text, "bad.pde")
    err = info.value
    text_out = err.format()
    assert message in text_out, text_out
    assert err.pos is not None and err.pos.line >= 1 and err.pos.col >= 1, text_out
    line = text.splitlines()[err.pos.line - 1]
    assert line.strip() and "bad.pde:" in text_out
    if hint:
        assert f"did you mean '{hint}'" in text_out or hint in (err.expected or ""), text_out


def test_unused_learned_diffusivity_is_refused():
    text = LEARNED_2D.replace("div( g(norm(grad(u))^2) * grad(u) )", "laplace(u)")
    with pytest.raises(PdeError, match="not used in the equation"):
        compile_text(text)


def test_learned_diffusivity_with_negative_factor_is_refused():
    text = LEARNED_1D.replace("3 * dx(", "-3 * dx(")
    with pytest.raises(PdeError, match="c > 0") as info:
        compile_text(text)
    assert info.value.pos is not None


def test_weights_on_a_fixed_spec_are_refused():
    prog = compile_text(LEARNED_2D.replace("diffusivity g(s2) = learned(knots = 12, L = 2)\n", "")
                        .replace("div( g(norm(grad(u))^2) * grad(u) )", "laplace(u)"))
    assert prog.learned and prog.stability.L == 1.0  # a linear flux on a learned bank
    heat = compile_text("pde heat\nfield u(x)\nequation dt(u) = dxx(u)\n"
                        "scheme explicit(tau = 0.25, steps = 2)\n")
    with pytest.raises(PdeError, match="learned stencil bank"):
        heat.source(prog.module(trainable=True))


@pytest.mark.parametrize("text", [LEARNED_2D, FIXED_PM_1D])
def test_spec_network_verify_passes_after_training(text):
    torch.manual_seed(4)
    prog = compile_text(text)
    net = prog.module(trainable=True, dtype=torch.float64)
    train_a_little(net, (2, 1, 8, 8) if "u(x, y)" in text else (2, 1, 16))
    report = net.verify()
    assert report["ok"], report


def test_cli_verify_checks_the_bank_and_graph_refuses_clearly(tmp_path, capsys):
    """``pde2net verify`` on a learned spec runs the network's own dense check (exit 0, the
    certificate holds at the initial parameters); ``graph`` refuses with exit 2, no traceback."""
    from pde2net.cli import main

    path = tmp_path / "bank.pde"
    path.write_text(LEARNED_1D)
    assert main(["verify", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["graph", str(path)]) == 2
    err = capsys.readouterr().err
    assert "learned filter bank" in err and "Traceback" not in err
