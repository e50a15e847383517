"""Denoising scikit-image's ``camera`` with the bundled models: PSNR before and after.

    python benchmarks/camera_psnr.py            (needs the bench extra: scikit-image)

The photograph (512 x 512, scaled to [0, 1]) gets Gaussian noise of standard deviation
``--sigma`` (default 0.1, about 25/255; seed 0).  Each model is the bundled example file with its
params overridden (``pde2net.load(path, params=..., time=T)``: the same as ``pde2net run FILE
--param k=v --time T``) and run for every stopping time of a short sweep; the table shows the
PSNR at each time, and the best one per model.  The best time is chosen against the clean image,
so it is an oracle stopping time: the numbers compare the models, they are not a blind denoiser.
Every model uses the explicit scheme at the largest proven step (``tau = auto``).
"""
from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

import pde2net

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: (name, example file, params at data in [0, 1], extra time settings)
MODELS = (
    ("Perona-Malik", "perona_malik_2d.pde", {"lambda": "0.05"}),
    ("Catte (PM + gauss, sigma 1)", "catte.pde", {"lambda": "0.05", "sigma": "1"}),
    ("EED (sigma 1)", "eed.pde", {"lambda": "0.05", "sigma": "1"}),
    ("TV + data term", "tv_denoise.pde", {"eps": "0.01", "alpha": "0.1"}),
)
TIMES = (2, 5, 10, 20, 40)


def psnr(u: np.ndarray, clean: np.ndarray) -> float:
    """``10 log10(1 / mse)`` for images in [0, 1]."""
    return 10.0 * math.log10(1.0 / float(np.mean((u - clean) ** 2)))


def camera(sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    clean = data.camera().astype(np.float64) / 255.0
    noisy = clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)
    return clean, noisy


def run(path: Path, params: dict, T: float, noisy: np.ndarray) -> tuple[np.ndarray, str, float]:
    text = re.sub(r"\btau = [0-9.]+", "tau = auto", path.read_text())
    prog = pde2net.compile_text(text, str(path), params=params, time=T)
    net = prog.module(dtype=torch.float32)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = net(torch.as_tensor(noisy, dtype=torch.float32)).double().numpy()
    return out, prog.stability.verdict, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clean, noisy = camera(args.sigma)
    print(f"camera 512 x 512, noise sigma {args.sigma:g} (seed 0): noisy PSNR {psnr(noisy, clean):.2f} dB\n")
    print("| model | params | " + " | ".join(f"T = {t}" for t in TIMES) + " | best | verdict |")
    print("|---|---|" + "---:|" * len(TIMES) + "---:|---|")
    for name, file, params in MODELS:
        scores, verdict = [], ""
        for T in TIMES:
            out, verdict, _ = run(EXAMPLES / file, params, T, noisy)
            scores.append(psnr(out, clean))
        best = int(np.argmax(scores))
        ptxt = ", ".join(f"{k} = {v}" for k, v in params.items())
        print(f"| {name} | {ptxt} | " + " | ".join(f"{s:.2f}" for s in scores)
              + f" | {scores[best]:.2f} (T = {TIMES[best]}) | {verdict} |")


if __name__ == "__main__":
    main()
