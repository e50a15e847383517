"""GPU benchmark: correctness first, then us/step and the fraction of the one-pass memory floor.

    python benchmarks/bench_gpu.py                 # about 1-2 minutes on an H100
    python benchmarks/bench_gpu.py --out table.md  # also write the table (markdown)

1. Correctness on the GPU: 10 steps of each row on a small input, float32 and float64, against a
   float64 NumPy reference written in bench_cpu.py (not pde2net code).
2. Copy bandwidth measured in the same run: ``dst.copy_(src)`` on 512 MiB, bytes read + written.
3. Per row, microseconds per step (CUDA events, median of 5 samples) and the fraction of the
   one-pass floor: an explicit step must read u and write u once, 8 bytes per point in float32,
   so floor = 8 * points / bandwidth and fraction = floor / time (1.0 is the best possible).
   Rows: pde2net conv (the literal conv / transposed conv), fused eager, fused compiled, and the
   hand-written shift form compiled, for 1D 256 x 65536 and 2D 8 x 2048 x 2048 (when the 2D
   operator exists).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import pde2net  # noqa: E402
from bench_cpu import reference_1d, reference_2d, spec_numbers, torch_step_1d, torch_step_2d  # noqa: E402

EXAMPLE = {"1D": ROOT / "examples" / "perona_malik.pde", "2D": ROOT / "examples" / "perona_malik_2d.pde"}
SHAPE = {"1D": (256, 65536), "2D": (8, 2048, 2048)}
SMALL = {"1D": (8, 4096), "2D": (2, 256, 192)}


def seconds(fn, device: torch.device) -> float:
    """Wall time of fn() on the device (CUDA events; perf_counter for the CPU smoke run)."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / 1e3


def copy_bandwidth(device: torch.device, mib: int = 512) -> float:
    """Bytes per second of a device-to-device copy (read + write), median of 20."""
    src = torch.empty(mib * 2 ** 20 // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    times = [seconds(lambda: dst.copy_(src), device) for _ in range(25)]
    return 2 * src.numel() * 4 / statistics.median(times[5:])


def rows_for(dim: str, steps: int, device: torch.device):
    """(name, callable(u, k)) for each row; every row is a fresh module (its own compiled step)."""
    prog = pde2net.load(EXAMPLE[dim])
    lam, tau = spec_numbers(prog)
    hand = torch.compile(torch_step_1d(lam, tau) if dim == "1D" else torch_step_2d(lam, tau))

    def repeat(step):
        def run(u, k):
            for _ in range(k):
                u = step(u)
            return u
        return run

    out = []
    for name, kw in (("pde2net conv (literal)", dict(backend="conv")), ("pde2net fused, eager", {}),
                     ("pde2net fused, compiled", dict(compile=True))):
        net = prog.module(steps=steps, device=device, **kw)
        out.append((name, lambda u, k, net=net: net(u, steps=k)))
    out.append(("hand-written shifts, compiled", repeat(hand)))
    return out, (lam, tau)


def correctness(dim: str, device: torch.device) -> list[str]:
    lines = []
    rng = np.random.default_rng(0)
    shape = SMALL[dim]
    x0 = rng.standard_normal(shape) * 0.3 if dim == "1D" else \
        np.cumsum(np.cumsum(rng.standard_normal(shape), axis=-1), axis=-2) * 0.01
    rows, (lam, tau) = rows_for(dim, 10, device)
    ref = (reference_1d if dim == "1D" else reference_2d)(x0, lam, tau, 10)
    scale = float(np.max(np.abs(ref)))
    for dtype, tol in ((torch.float32, 1e-4), (torch.float64, 1e-11)):
        for name, run in rows:
            with torch.no_grad():
                got = run(torch.tensor(x0, dtype=dtype, device=device), 10).double().cpu().numpy()
            err = float(np.max(np.abs(got - ref))) / scale
            status = "ok" if err <= tol else "FAILED"
            lines.append(f"| {dim} | {str(dtype)[6:]} | {name} | {err:.1e} | {status} |")
    return lines


def timing(dim: str, device: torch.device, bandwidth: float) -> list[str]:
    shape = SHAPE[dim]
    points = int(np.prod(shape))
    floor_us = 8 * points / bandwidth * 1e6
    u0 = torch.randn(shape, device=device) * 0.1
    rows, _ = rows_for(dim, 1, device)
    lines = []
    for name, run in rows:
        k = 10 if "conv" in name else 50
        with torch.no_grad():
            setup = seconds(lambda: run(u0, 2), device)  # warm-up, compilation
            samples = [seconds(lambda: run(u0, k), device) * 1e6 / k for _ in range(5)]
        med = statistics.median(samples)
        lines.append(f"| {dim} {' x '.join(map(str, shape))} | {name} | {med:.1f} | "
                     f"{min(samples):.1f} - {max(samples):.1f} | {floor_us / med:.2f} | {setup:.1f} |")
        print(lines[-1], flush=True)
    return lines


def has_2d() -> bool:
    try:
        pde2net.load(EXAMPLE["2D"]).module(steps=1)
        return True
    except Exception as exc:  # noqa: BLE001 - the 2D operator may not exist yet
        print(f"(2D skipped: {type(exc).__name__}: {exc})")
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="write the tables (markdown) to this file")
    p.add_argument("--smoke", action="store_true", help="CPU dry run on small shapes (checks the script)")
    args = p.parse_args(argv)
    if args.smoke:
        SHAPE.update({"1D": (4, 8192), "2D": (1, 128, 256)})
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run with --smoke for a CPU dry run)")
        return 0
    else:
        device = torch.device("cuda")
    t_start = time.perf_counter()
    dims = ["1D"] + (["2D"] if has_2d() else [])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    head = [f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}"]
    print(head[0], flush=True)
    check = ["| dim | dtype | row | max rel. error vs float64 reference (10 steps) | |", "|---|---|---|---:|---|"]
    for dim in dims:
        check += correctness(dim, device)
    print("\n".join(check), flush=True)
    bw = copy_bandwidth(device, 512 if device.type == "cuda" else 64)
    head.append(f"copy bandwidth (read + write): {bw / 1e12:.2f} TB/s; one-pass floor = 8 bytes/point")
    print(head[-1], flush=True)
    table = ["| problem (float32) | row | us / step (median) | min - max | fraction of floor | setup s |",
             "|---|---|---:|---:|---:|---:|"]
    for dim in dims:
        table += timing(dim, device, bw)
    text = "\n".join(head + ["", "correctness", ""] + check + ["", "speed", ""] + table
                     + ["", f"total wall time {time.perf_counter() - t_start:.0f} s"])
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    failed = any("FAILED" in line for line in check)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
