"""Do stable networks learn?  Greyscale denoising with stable filter-bank ResNets (pde2net.nn)
against a standard ResNet.  Not a test: trains small networks and prints tables.

    python benchmarks/bench_learning.py            # the real run (long)
    python benchmarks/bench_learning.py --quick    # a 1-2 minute smoke run on 2 CPU cores

Data: scikit-image's BUNDLED sample images (files shipped inside the package, read from its data
folder; nothing is downloaded): training patches from TRAIN_IMAGES, PSNR/SSIM on TEST_IMAGES.
Without scikit-image, synthetic piecewise-smooth images (and no SSIM).  Gaussian noise
sigma = 15/255 and 25/255, one training per sigma, model and seed.

Models (C = 1 channel, 3 x 3 filters), same optimiser (Adam), schedule (cosine), steps, batches:
- resnet:          D blocks u + conv2(relu(conv1(u))), conv1: 1 -> K, conv2: K -> 1 (with biases);
- stable-pm:       StableBlock(activation="pm") with depth and filters chosen to match the
                   resnet's trainable-parameter count (2 D blocks: a stable block has one bank);
- stable-learned:  the same with learned activations (one shared LearnedDiffusivity per block);
- *-eqdepth:       the stable networks at the resnet's depth D and width K (fewer parameters).
Then the per-block maximum gain ||block(u)|| / ||u|| found by gradient ascent on u at fixed
amplitudes (the resnet's biases make its gain unbounded as ||u|| -> 0; stable blocks: <= 1).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pde2net.nn import StableResNet  # noqa: E402

TRAIN_IMAGES = ["astronaut", "chelsea", "coffee", "rocket", "brick", "grass", "gravel", "page"]
TEST_IMAGES = ["camera", "coins", "moon", "text"]
SIGMAS = (15.0 / 255.0, 25.0 / 255.0)


# ---------------------------------------------------------------------------- data
def bundled_image(name: str) -> np.ndarray:
    """A scikit-image sample image read from the package's own data folder (no download),
    greyscale float64 in [0, 1]."""
    import skimage.data
    from skimage import color, io
    folder = os.path.dirname(skimage.data.__file__)
    files = [f for f in os.listdir(folder) if os.path.splitext(f)[0] == name]
    if not files:
        raise FileNotFoundError(f"{name} is not bundled with scikit-image (it would be downloaded)")
    img = io.imread(os.path.join(folder, files[0]))
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    img = img.astype(np.float64)
    return img / 255.0 if img.max() > 1.0 else img


def synthetic_image(seed: int, n: int = 256) -> np.ndarray:
    """Piecewise-smooth: random smooth background plus constant discs and rectangles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n] / n
    img = 0.3 + 0.2 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y))
    for _ in range(12):
        cx, cy, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.05, 0.2)]
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r if rng.random() < 0.5 else \
            (abs(x - cx) < r) & (abs(y - cy) < r * rng.uniform(0.3, 1))
        img[mask] = rng.uniform(0, 1)
    return np.clip(img, 0, 1)


def load_images() -> tuple[list[np.ndarray], list[np.ndarray], str]:
    try:
        train = [bundled_image(n) for n in TRAIN_IMAGES]
        test = [bundled_image(n) for n in TEST_IMAGES]
        return train, test, "scikit-image bundled: train " + ", ".join(TRAIN_IMAGES) + \
            "; test " + ", ".join(TEST_IMAGES)
    except ImportError:
        return ([synthetic_image(s) for s in range(8)], [synthetic_image(100 + s) for s in range(4)],
                "synthetic piecewise-smooth (scikit-image not installed)")


def centre_crop(img: np.ndarray, n: int) -> np.ndarray:
    if n <= 0:
        return img
    h, w = img.shape
    n = min(n, h, w)
    return img[(h - n) // 2:(h - n) // 2 + n, (w - n) // 2:(w - n) // 2 + n]


def patches(images: list[np.ndarray], batch: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    out = np.empty((batch, 1, size, size), dtype=np.float32)
    for b in range(batch):
        img = images[rng.integers(len(images))]
        i, j = rng.integers(0, img.shape[0] - size + 1), rng.integers(0, img.shape[1] - size + 1)
        out[b, 0] = img[i:i + size, j:j + size]
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------- models
class ConvReluBlock(nn.Module):
    """The standard residual block ``u + conv2(relu(conv1(u)))`` on the image channel."""

    def __init__(self, filters: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters, 3, padding=1)
        self.conv2 = nn.Conv2d(filters, 1, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # starts as the identity, as the stable blocks nearly do
        nn.init.zeros_(self.conv2.bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.conv2(torch.relu(self.conv1(u)))


class PlainResNet(nn.Module):
    def __init__(self, depth: int, filters: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ConvReluBlock(filters) for _ in range(depth)])

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            u = b(u)
        return u


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


@dataclass
class Spec:
    name: str
    kind: str           # resnet | pm | learned
    depth: int
    filters: int


STABLE_OPTIONS = {"pm": {"activation": "pm", "contrast": 0.1},
                  "learned": {"activation": "learned", "knots": 16, "s_max": 1.0}}


def build(spec: Spec, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if spec.kind == "resnet":
        return PlainResNet(spec.depth, spec.filters)
    return StableResNet(spec.depth, channels=1, filters=spec.filters, size=3, dim=2, seed=seed,
                        **STABLE_OPTIONS[spec.kind])


def matching_filters(kind: str, depth: int, target: int) -> int:
    """The number of filters whose stable network of ``depth`` has the count closest to target
    (the count grows with the filters: stop at the first one past the target)."""
    best, best_gap = 1, math.inf
    for k in range(1, 1024):
        gap = n_params(build(Spec("", kind, depth, k), 0)) - target
        if abs(gap) < best_gap:
            best, best_gap = k, abs(gap)
        if gap > 0:
            break
    return best


def specs(depth: int, filters: int) -> list[Spec]:
    target = n_params(PlainResNet(depth, filters))
    out = [Spec("resnet", "resnet", depth, filters)]
    for kind in ("pm", "learned"):
        out.append(Spec(f"stable-{kind}", kind, 2 * depth, matching_filters(kind, 2 * depth, target)))
    for kind in ("pm", "learned"):
        out.append(Spec(f"stable-{kind}-eqdepth", kind, depth, filters))
    return out


# ---------------------------------------------------------------------------- training, metrics
def train(model: nn.Module, images: list[np.ndarray], sigma: float, args, seed: int) -> float:
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    loss = torch.tensor(0.0)
    for _ in range(args.steps):
        clean = patches(images, args.batch, args.patch, rng)
        noisy = (clean + sigma * torch.randn(clean.shape, generator=gen)).to(args.device)
        clean = clean.to(args.device)
        opt.zero_grad()
        loss = ((model(noisy) - clean) ** 2).mean()
        loss.backward()
        opt.step()
        sched.step()
    return float(loss.detach())


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return 10.0 * math.log10(1.0 / float(((x - ref) ** 2).mean()))


def ssim(x: np.ndarray, ref: np.ndarray) -> float:
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        return float("nan")
    return float(structural_similarity(x, ref, data_range=1.0))


@torch.no_grad()
def evaluate(model: nn.Module, tests: list[np.ndarray], sigma: float, device: str = "cpu"
             ) -> tuple[float, float]:
    ps, ss = [], []
    for i, clean in enumerate(tests):
        noise = np.random.default_rng(1000 + i).standard_normal(clean.shape) * sigma
        x = torch.tensor(clean + noise, dtype=torch.float32, device=device)[None, None]
        out = model(x)[0, 0].double().cpu().numpy()
        out = np.clip(out, 0.0, 1.0)
        ps.append(psnr(out, clean))
        ss.append(ssim(out, clean))
    return float(np.mean(ps)), float(np.mean(ss))


def blocks_of(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, StableResNet):
        return [model.block(i) for i in range(model.depth)]
    return list(model.blocks)


def adversarial_gain(block: nn.Module, size: int, amplitudes: tuple[float, ...], steps: int,
                     seed: int, device: str = "cpu") -> float:
    """max over amplitudes a (RMS of u) of the gain ||block(u)|| / ||u|| found by Adam ascent
    on the direction of u (u = a sqrt(n) v / ||v||)."""
    for p in block.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    n = size * size
    for a in amplitudes:
        v = torch.randn((1, 1, size, size), generator=gen).to(device).requires_grad_(True)
        opt = torch.optim.Adam([v], lr=0.05)
        for _ in range(steps):
            u = a * math.sqrt(n) * v / v.norm()
            gain = block(u).norm() / u.norm()
            best = max(best, float(gain.detach()))
            opt.zero_grad()
            (-torch.log(gain)).backward()
            opt.step()
    for p in block.parameters():
        p.requires_grad_(True)
    return best


# ---------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: python benchmarks/bench_learning.py --quick")
    ap.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run")
    ap.add_argument("--depth", type=int, default=None, help="resnet depth D (stable: 2D at equal params)")
    ap.add_argument("--filters", type=int, default=None, help="resnet width K")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--patch", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--crop", type=int, default=None, help="centre crop of test images (0: full)")
    ap.add_argument("--knots", type=int, default=None, help="knots of the learned activations")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: best on a shared machine)")
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    args = ap.parse_args()
    quick = dict(depth=2, filters=6, steps=40, batch=8, patch=32, seeds=2, crop=64, knots=8)
    full = dict(depth=6, filters=16, steps=3000, batch=32, patch=48, seeds=3, crop=0, knots=16)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    STABLE_OPTIONS["learned"]["knots"] = args.knots

    train_imgs, test_imgs, source = load_images()
    test_imgs = [centre_crop(t, args.crop) for t in test_imgs]
    print(f"{'QUICK SMOKE RUN' if args.quick else 'run'}: data {source}")
    print(f"depth {args.depth}, filters {args.filters}, steps {args.steps}, batch {args.batch} x "
          f"{args.patch}^2, Adam lr {args.lr} cosine, seeds {args.seeds}, test crop {args.crop or 'full'}, "
          f"learned knots {args.knots}, device {args.device}")
    t0 = time.time()
    rows = []
    for spec in specs(args.depth, args.filters):
        for sigma in SIGMAS:
            ps, ss, gains, losses = [], [], [], []
            for seed in range(args.seeds):
                model = build(spec, seed).to(args.device)
                losses.append(train(model, train_imgs, sigma, args, seed))
                p, s = evaluate(model, test_imgs, sigma, args.device)
                ps.append(p)
                ss.append(s)
                ascent = 15 if args.quick else 100
                gains.append(max(adversarial_gain(b, 16, (1e-3, 1e-1, 1.0), ascent, seed, args.device)
                                 for b in blocks_of(model)))
            rows.append((spec, sigma, n_params(build(spec, 0)), ps, ss, gains))
            print(f"  trained {spec.name:24s} sigma {sigma * 255:.0f}/255  ({time.time() - t0:.0f} s)",
                  flush=True)
    noisy = {sigma: np.mean([psnr(np.clip(t + np.random.default_rng(1000 + i).standard_normal(t.shape)
                                          * sigma, 0, 1), t) for i, t in enumerate(test_imgs)])
             for sigma in SIGMAS}
    print()
    print(f"{'model':24s} {'depth':>5s} {'K':>4s} {'params':>6s} {'sigma':>6s} "
          f"{'PSNR mean +- std':>18s} {'SSIM mean +- std':>18s} {'max block gain':>15s}")
    for spec, sigma, npar, ps, ss, gains in rows:
        print(f"{spec.name:24s} {spec.depth:5d} {spec.filters:4d} {npar:6d} {sigma * 255:4.0f}/255 "
              f"{np.mean(ps):9.2f} +- {np.std(ps):5.2f} {np.mean(ss):9.4f} +- {np.std(ss):6.4f} "
              f"{max(gains):15.4g}")
    for sigma in SIGMAS:
        print(f"noisy input, sigma {sigma * 255:.0f}/255: PSNR {noisy[sigma]:.2f}")
    print(f"total {time.time() - t0:.0f} s; gain: max over blocks, seeds and RMS amplitudes "
          f"1e-3, 0.1, 1 of ||block(u)||/||u|| by gradient ascent on u (16 x 16)")


if __name__ == "__main__":
    main()
