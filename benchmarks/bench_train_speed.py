"""Training speed per iteration: pde2net's stable filter-bank networks against hand-written
PyTorch.  Not a test: prints a side-by-side table.

    python benchmarks/bench_train_speed.py                # 8 x 64 x 64 patches, CPU, 1 thread
    python benchmarks/bench_train_speed.py --device cuda --threads 4

One iteration = forward + backward + Adam step on a batch of 8 x 1 x 64 x 64 patches, float32.
For each configuration (depth D, filters K, 3 x 3, activation):

- pde2net:      pde2net.nn.StableResNet(D, filters=K, activation=...) (the parametrised weights
                W = gain V/||V||, tau = theta 2/(L B2(W)) recomputed every iteration: the price of
                the certificate);
- spec:         the network of a .pde spec with ``stencil learned(size = 3, filters = K)`` (same
                class, the language's input layout), learned activations only;
- hand-written: the same blocks written directly, ``u - tau * conv_transpose2d(phi(conv2d(u, W)),
                W)`` with W and tau plain leaf parameters initialised to the SAME effective values
                (outputs agree to round-off: printed), and the same activation code;
- resnet:       the standard block ``u + conv2(relu(conv1(u)))`` (biases) of the same depth and
                width, for scale.

Timings: median of ``--iters`` iterations after ``--warmup``; ratio = pde2net / hand-written.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pde2net.nn import LearnedDiffusivity, StableResNet  # noqa: E402


class HandBlock(nn.Module):
    """``u - tau W^T phi(W u)`` with W and tau as plain parameters (no parametrisation)."""

    def __init__(self, weight: torch.Tensor, tau: float, activation: nn.Module) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.tau = nn.Parameter(torch.tensor(float(tau)))
        self.activation = activation

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        s = F.conv2d(u, self.weight, padding=1)
        return u - self.tau * F.conv_transpose2d(self.activation(s), self.weight, padding=1)


class PM(nn.Module):
    def __init__(self, contrast: float) -> None:
        super().__init__()
        self.contrast = contrast

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s / (1.0 + (s / self.contrast) ** 2)


def hand_written(net: StableResNet) -> nn.Module:
    """The hand-written twin of ``net`` with its current effective weights, taus and (copied)
    activations."""
    import copy

    blocks = []
    with torch.no_grad():
        for i in range(net.depth):
            b = net.block(i)
            act = copy.deepcopy(b.activation)
            if not isinstance(act, LearnedDiffusivity):
                act = PM(b.activation.contrast)
            blocks.append(HandBlock(b.effective_weight(), float(b.tau()), act))
    return nn.Sequential(*blocks)


class ConvReluBlock(nn.Module):
    def __init__(self, filters: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters, 3, padding=1)
        self.conv2 = nn.Conv2d(filters, 1, 3, padding=1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.conv2(torch.relu(self.conv1(u)))


def spec_network(depth: int, filters: int) -> nn.Module:
    from pde2net.program import compile_text

    text = (f"pde speed\nfield u(x, y)\ndiffusivity g(s2) = learned(knots = 16, L = 1)\n"
            f"equation dt(u) = div( g(norm(grad(u))^2) * grad(u) )\nboundary dirichlet\n"
            f"stencil learned(size = 3, filters = {filters})\nscheme explicit(steps = {depth})\n")
    return compile_text(text).module(trainable=True)


def time_training(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iters: int, warmup: int,
                  device: str) -> float:
    """Median seconds of one forward + backward + Adam step."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + iters):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((args.batch, 1, args.size, args.size), generator=gen).to(dev)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen).to(dev)).clamp(0, 1)
    configs = [(depth, filters, act) for depth, filters in ((2, 8), (6, 8), (6, 16))
               for act in ("pm", "learned")]
    print(f"training step (forward + backward + Adam), batch {args.batch} x 1 x {args.size} x "
          f"{args.size}, float32, device {dev}, {args.threads} thread(s); median of {args.iters}")
    print(f"{'depth':>5s} {'K':>3s} {'activation':>10s} {'pde2net ms':>11s} {'spec ms':>8s} "
          f"{'hand ms':>8s} {'ratio':>6s} {'resnet ms':>10s} {'max |diff|':>10s}")
    for depth, filters, act in configs:
        opts = {"activation": act, "contrast": 0.1} if act == "pm" else \
            {"activation": "learned", "knots": 16, "s_max": 1.0}
        net = StableResNet(depth, channels=1, filters=filters, size=3, dim=2, seed=0, **opts).to(dev)
        hand = hand_written(net).to(dev)
        with torch.no_grad():
            diff = float((net(x) - hand(x)).abs().max())
        t_net = time_training(net, x, y, args.iters, args.warmup, dev)
        t_hand = time_training(hand, x, y, args.iters, args.warmup, dev)
        t_spec = (time_training(spec_network(depth, filters).to(dev), x, y, args.iters,
                                args.warmup, dev) if act == "learned" else float("nan"))
        resnet = nn.Sequential(*[ConvReluBlock(filters) for _ in range(depth)]).to(dev)
        t_res = time_training(resnet, x, y, args.iters, args.warmup, dev)
        print(f"{depth:5d} {filters:3d} {act:>10s} {1e3 * t_net:11.2f} {1e3 * t_spec:8.2f} "
              f"{1e3 * t_hand:8.2f} {t_net / t_hand:6.2f} {1e3 * t_res:10.2f} {diff:10.2e}",
              flush=True)
    print("ratio = pde2net / hand-written (same blocks, same weights, no parametrisation); "
          "spec: the .pde network with a learned diffusivity")


if __name__ == "__main__":
    main()
