"""Start-up benchmark: spec text -> module per example, and ``pde2net check`` in a fresh process.

    python benchmarks/bench_compile.py            # every example, 7 fresh processes per check row
    python benchmarks/bench_compile.py --runs 3   # quicker

Targets (issue 5): text -> module under 0.3 s after imports, for every example; ``pde2net check``
under 1 s of wall time in a fresh process.  The check rows are timed in alternation with two
baselines -- an empty interpreter and one that only imports sympy and lark (the floor any check
has to pay, with and without sympy's first Add, which imports sympy.tensor; an explicit spec's
check does not load NumPy) -- so a busy machine shows up in the baselines too.  Run it with
pde2net's bytecode compiled (``python -m compileall pde2net``, as pip does on install): with
PYTHONDONTWRITEBYTECODE set and stale .pyc files every process recompiles the package (~60 ms).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def text_to_module(runs: int) -> list[str]:
    """Per example: first (cold caches) and median of later runs of compile_text + module()."""
    import torch  # noqa: F401 - "after imports": torch and the layers are loaded first

    import pde2net
    from pde2net import layers  # noqa: F401

    lines = ["| example | text -> module, first (s) | later runs, median (s) | check's report (s) | note |",
             "|---|---:|---:|---:|---|"]
    for path in sorted((ROOT / "examples").glob("*.pde")):
        text = path.read_text()
        times, note, report = [], "", float("nan")
        try:
            for _ in range(runs):
                t0 = time.perf_counter()
                prog = pde2net.compile_text(text, str(path))
                prog.module()
                times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            prog.stability  # what `check` adds on top (symbolic; cached per flux)
            report = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - a spec meant to be refused, or work in progress
            note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
        first = f"{times[0]:.3f}" if times else "-"
        later = f"{statistics.median(times[1:]):.3f}" if len(times) > 1 else "-"
        lines.append(f"| {path.name} | {first} | {later} | {report:.3f} | {note} |")
    return lines


def fresh_processes(runs: int) -> list[str]:
    exe = sys.executable
    check = [exe, "-m", "pde2net.cli", "check"]
    rows = {
        "python -c pass": [exe, "-c", "pass"],
        "python -c 'import sympy, lark' (floor)": [exe, "-c", "import sympy, lark"],
        # sympy imports sympy.tensor (~0.05-0.15 s) on the first Add of any process: part of the floor
        "same + first sympy Add": [exe, "-c", "import sympy, lark; sympy.Symbol('x') + 1"],
        "python -c 'import numpy' (not loaded by check)": [exe, "-c", "import numpy"],
        "pde2net check perona_malik.pde": check + [str(ROOT / "examples" / "perona_malik.pde")],
        "pde2net check --json perona_malik.pde": check + ["--json", str(ROOT / "examples" / "perona_malik.pde")],
        "pde2net check fourth_order.pde": check + [str(ROOT / "examples" / "fourth_order.pde")],
    }
    samples: dict[str, list[float]] = {k: [] for k in rows}
    env = dict(os.environ)
    for i in range(runs + 1):  # the first round warms the page cache and is not counted
        for name, cmd in rows.items():
            t0 = time.perf_counter()
            res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True)
            dt = time.perf_counter() - t0
            if res.returncode not in (0, 1):
                raise SystemExit(f"{name} failed: {res.stderr.decode()[-400:]}")
            if i:
                samples[name].append(dt)
    floor = statistics.median(samples["python -c 'import sympy, lark' (floor)"])
    lines = ["| command (fresh process) | wall s, median | min - max | minus floor |", "|---|---:|---:|---:|"]
    for name, s in samples.items():
        med = statistics.median(s)
        lines.append(f"| {name} | {med:.3f} | {min(s):.3f} - {max(s):.3f} | {med - floor:+.3f} |")
    return lines


def _bytecode_fresh() -> bool:
    """Is there a .pyc newer than its source for every module of the package?"""
    import importlib.util

    for src in (ROOT / "pde2net").glob("*.py"):
        pyc = Path(importlib.util.cache_from_source(str(src)))
        if not pyc.exists() or pyc.stat().st_mtime < src.stat().st_mtime:
            return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--write", action="store_true", help="update the table in benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    pyc = _bytecode_fresh()
    lines = [f"load average before {os.getloadavg()[0]:.2f}; PYTHONDONTWRITEBYTECODE="
             f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; pde2net bytecode up to date: {pyc}", ""]
    lines += fresh_processes(args.runs)
    print("\n".join(lines), flush=True)
    from pde2net import parse

    t0 = time.perf_counter()
    parse._parser()  # the LALR tables, built once per process (like an import)
    lines += ["", f"parser construction, once per process: {time.perf_counter() - t0:.3f} s", ""]
    lines += text_to_module(max(2, args.runs // 2))
    lines += ["", f"load average after: {os.getloadavg()[0]:.2f}"]
    print("\n".join(lines[-20:]))
    if args.write:
        from bench_cpu import write_results

        write_results("\n".join(lines), "bench_compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
