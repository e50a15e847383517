"""The figures and tables of docs/tutorial.md, made from the bundled 2D Perona-Malik example.

    PYTHONPATH=. python docs/make_figures.py [OUT_DIR]        (default: docs/figures/)

Writes into OUT_DIR the files listed in :data:`OUTPUTS`: PNG figures (matplotlib) and markdown
tables (PSNR in dB against the clean image). The test image is synthetic and needs no download:
piecewise constant shapes on a ramp, a thin line and a smooth bump, plus seeded Gaussian noise.
Everything runs in float64 on the CPU in a few seconds, except the training (float32).
``tests/test_docs.py`` runs this script and checks the tables printed in the tutorial against it.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import torch

import pde2net

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "perona_malik_2d.pde"
OUTPUTS = ("denoise.png", "evolution.png", "schemes.png", "schemes_table.md", "sweep_table.md",
           "training.png", "training_table.md")
SHAPE = (64, 96)   # (NY, NX): the example's size
SIGMA = 0.1        # noise standard deviation (image values in [0, 1])

# The same stopping time T = 10 for each scheme (tau * steps, or cycles x the FED cycle length).
SCHEMES = {
    "explicit": "scheme explicit(tau = 0.2, steps = 50)",
    "fed": "scheme fed(tau_max = 5/24, cycle_length = 8, cycles = 2)",
    "implicit": "scheme implicit(tau = 2, steps = 5, solver = cg, iterations = 30)",
}
SWEEP_LAMBDAS = ("0.02", "0.05", "0.1", "0.2")
SWEEP_TIMES = (2.5, 5.0, 10.0)
SWEEP_TAU = 0.25   # the bound h^2 / (4 L) for L = 1, h = 1


def clean_image(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """The noise-free test image, values in [0.1, 0.9]: a ramp, a disc, a square, a thin line
    and a smooth Gaussian bump (edges to keep, shading that diffusion should not flatten)."""
    H, W = shape
    y, x = np.mgrid[0:H, 0:W] / np.array([H - 1, W - 1])[:, None, None]
    img = 0.1 + 0.2 * x + 0.15 * np.exp(-((x - 0.2) ** 2 + (y - 0.8) ** 2) / 0.02)
    img = np.where(((x - 0.35) * (W - 1) / (H - 1)) ** 2 + (y - 0.4) ** 2 < 0.25 ** 2, 0.8, img)
    img = np.where((abs(x - 0.75) < 0.13) & (abs(y - 0.65) < 0.2), 0.55, img)
    img = np.where(abs(y - 0.15) < 0.025, 0.9, img)
    return img


def noisy_image(clean: np.ndarray, seed: int = 0) -> np.ndarray:
    """``clean`` plus seeded Gaussian noise of standard deviation SIGMA."""
    return clean + SIGMA * np.random.default_rng(seed).standard_normal(clean.shape)


def psnr(u: np.ndarray, ref: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for the peak value 1: ``10 log10(1 / mean((u - ref)^2))``."""
    return float(10.0 * np.log10(1.0 / np.mean((u - ref) ** 2)))


def spec_text(lam: str = "0.05", scheme: str | None = None) -> str:
    """The example's text with ``param lambda`` and (optionally) the ``scheme`` line replaced."""
    text = EXAMPLE.read_text()
    text = re.sub(r"(?m)^param lambda = .*$", f"param lambda = {lam}", text)
    if scheme is not None:
        text = re.sub(r"(?m)^scheme .*$", scheme, text)
    return text


def run(text: str, image: np.ndarray, steps: int | None = None) -> np.ndarray:
    """Compiles ``text`` and runs its network on one image in float64."""
    net = pde2net.compile_text(text).module(dtype=torch.float64, steps=steps)
    with torch.no_grad():
        return net(torch.from_numpy(image)[None]).numpy()[0]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _show(ax, img: np.ndarray, title: str) -> None:
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def denoise_figure(out: Path, clean, noisy) -> None:
    """Clean, noisy, and the example's output (explicit scheme, T = 10)."""
    plt = _pyplot()
    result = run(spec_text(), noisy)
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.4))
    _show(axes[0], clean, "clean")
    _show(axes[1], noisy, f"noisy, PSNR {psnr(noisy, clean):.2f} dB")
    _show(axes[2], result, f"Perona-Malik T = 10, PSNR {psnr(result, clean):.2f} dB")
    fig.tight_layout()
    fig.savefig(out / "denoise.png", dpi=100)
    plt.close(fig)


def evolution_figure(out: Path, noisy) -> None:
    """The image at several times, and ``||u^k - mean||`` over the steps (never increasing)."""
    plt = _pyplot()
    net = pde2net.compile_text(spec_text()).module(dtype=torch.float64, steps=1)
    u = torch.from_numpy(noisy)[None]
    shots, norms = {0: noisy}, [float((u - u.mean()).norm())]
    with torch.no_grad():
        for k in range(1, 51):
            u = net(u)
            norms.append(float((u - u.mean()).norm()))
            if k in (5, 10, 25, 50):
                shots[k] = u[0].numpy()
    fig, axes = plt.subplots(1, len(shots) + 1, figsize=(13, 2.2))
    for ax, (k, img) in zip(axes, shots.items()):
        _show(ax, img, f"t = {0.2 * k:g} ({k} blocks)")
    axes[-1].plot(norms)
    axes[-1].set_xlabel("block k", fontsize=8)
    axes[-1].set_title("||u^k - mean||", fontsize=9)
    axes[-1].tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "evolution.png", dpi=100)
    plt.close(fig)


def compare_schemes(out: Path, clean, noisy) -> None:
    """Explicit, FED and implicit at the same stopping time T = 10: outputs and a table."""
    plt = _pyplot()
    results, rows = {}, []
    for name, line in SCHEMES.items():
        prog = pde2net.compile_text(spec_text(scheme=line))
        results[name] = run(spec_text(scheme=line), noisy)
        rep = prog.stability
        rows.append([name, f"`{line.removeprefix('scheme ')}`", rep.verdict,
                     f"{psnr(results[name], clean):.2f}"])
    ref = results["explicit"]
    for row, name in zip(rows, SCHEMES):
        row.append(f"{np.abs(results[name] - ref).max():.3f}")
    table = markdown_table(["scheme", "settings (T = 10)", "verdict", "PSNR (dB)",
                            "max abs difference to explicit"], rows)
    (out / "schemes_table.md").write_text(table)
    fig, axes = plt.subplots(1, len(results), figsize=(9, 2.4))
    for ax, (name, img) in zip(axes, results.items()):
        _show(ax, img, f"{name}, PSNR {psnr(img, clean):.2f} dB")
    fig.tight_layout()
    fig.savefig(out / "schemes.png", dpi=100)
    plt.close(fig)


def parameter_sweep(out: Path, clean, noisy) -> None:
    """PSNR over lambda x T (explicit scheme at tau = 0.25): one spec, a param value per lambda
    through ``with_params`` (the same network as editing the file, bit for bit)."""
    rows = []
    base = pde2net.compile_text(spec_text(SWEEP_LAMBDAS[0], f"scheme explicit(tau = {SWEEP_TAU}, steps = 1)"))
    for lam in SWEEP_LAMBDAS:
        net = base.with_params({"lambda": lam}).module(dtype=torch.float64)
        u, done, row = torch.from_numpy(noisy)[None], 0, [lam]
        with torch.no_grad():
            for T in SWEEP_TIMES:   # continue the same evolution up to each stopping time
                for _ in range(round(T / SWEEP_TAU) - done):
                    u = net(u)
                done = round(T / SWEEP_TAU)
                row.append(f"{psnr(u[0].numpy(), clean):.2f}")
        rows.append(row)
    header = ["lambda"] + [f"T = {T:g}" for T in SWEEP_TIMES]
    (out / "sweep_table.md").write_text(markdown_table(header, rows))


def train(out: Path, clean, iterations: int = 30) -> None:
    """Trains ``module(trainable=True)`` (stencil, step, lambda) to denoise, 10 blocks, float32;
    PSNR on a held-out noise realisation before and after, and the loss curve."""
    plt = _pyplot()
    torch.manual_seed(0)
    prog = pde2net.compile_text(spec_text(scheme="scheme explicit(tau = 0.2, steps = 10)"))
    net = prog.module(trainable=True)
    target = torch.tensor(clean, dtype=torch.float32)
    batch = torch.tensor(np.stack([noisy_image(clean, seed) for seed in (1, 2)]),
                         dtype=torch.float32)
    test = noisy_image(clean, seed=100)

    def test_psnr() -> float:
        with torch.no_grad():
            return psnr(net(torch.tensor(test, dtype=torch.float32)[None])[0].double().numpy(), clean)

    before, cert0 = test_psnr(), net.certificate()[0]
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    losses = []
    for _ in range(iterations):
        opt.zero_grad()
        loss = ((net(batch) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after, cert = test_psnr(), net.certificate()[0]
    rows = [[label, f"{p:.2f}", f"{c['tau']:.4f}", f"{c['B']:.3f}", f"{c['theta']:.3f}",
             f"{c['params']['lambda']:.4f}"]
            for label, p, c in (("before training", before, cert0),
                                (f"after {iterations} Adam steps", after, cert))]
    table = markdown_table(["network (10 blocks)", "PSNR (dB)", "tau", "B(w)",
                            "theta = tau L B(w) / 2", "lambda"], rows)
    (out / "training_table.md").write_text(table)
    fig, ax = plt.subplots(figsize=(4, 2.6))
    ax.semilogy(losses)
    ax.set_xlabel("Adam step")
    ax.set_ylabel("mean squared error")
    fig.tight_layout()
    fig.savefig(out / "training.png", dpi=100)
    plt.close(fig)


def main(out_dir: str | Path = Path(__file__).resolve().parent / "figures") -> list[Path]:
    """Writes every file of :data:`OUTPUTS` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = clean_image()
    noisy = noisy_image(clean)
    denoise_figure(out, clean, noisy)
    evolution_figure(out, noisy)
    compare_schemes(out, clean, noisy)
    parameter_sweep(out, clean, noisy)
    train(out, clean)
    return [out / name for name in OUTPUTS]


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))  # small tensors: threads cost more
    for path in main(*sys.argv[1:2]):
        print(path)
