"""Stage 8: the command line, ``pde2net check | compile | run | verify | export | graph``.

Exit status: 0 success, 1 a check that failed (``check --strict`` on a spec not proven stable,
``verify`` finding a "stable" verdict contradicted or a reference disagreeing, ``export`` above
its tolerance), 2 bad input (one message with file:line:col and a caret, never a traceback),
3 internal error.  ``check`` never imports torch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import __version__
from .analyse import expression_text
from .errors import PdeError, Source
from .program import Program, load

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
DEFAULT_SIZE = 256

EPILOG = """examples:
  pde2net check examples/perona_malik.pde
  pde2net check examples/perona_malik.pde --json
  pde2net compile examples/perona_malik.pde -o pm.py
  pde2net run examples/perona_malik.pde --input signal.npy --output out.npy --dtype float64
  pde2net verify examples/perona_malik.pde
"""


# --------------------------------------------------------------------------------- check
_BOUNDARY_MEANING = {"neumann": "zero flux, valid convolution", "periodic": "circular padding",
                     "dirichlet": "u = 0 outside on every side, full convolution"}


def _boundary_words(a) -> str:
    """The boundary of each axis, what it means, and the shape of D u."""
    from .lower import boundary_text

    grow = {"neumann": lambda k: f"-{k - 1}" if k > 1 else "", "periodic": lambda k: "",
            "dirichlet": lambda k: f"+{k - 1}" if k > 1 else ""}
    if len(a.stencils) == 1:
        st = a.stencils[0]
        return (f"{st.boundary} boundary ({_BOUNDARY_MEANING[st.boundary]}, "
                f"N -> N{grow[st.boundary](st.stencil.size)})")
    kinds = [st.boundary for st in a.stencils]
    meaning = _BOUNDARY_MEANING[kinds[0]] if len(set(kinds)) == 1 else \
        "; ".join(f"{'xyz'[i]}: {_BOUNDARY_MEANING[k]}" for i, k in enumerate(kinds))
    # both gradient channels on one grid of flux points: the nodes, plus K - 1 ghosts along a
    # dirichlet axis (zero rows where a neumann stencil leaves the grid)
    shape = ", ".join(f"{n}{'+%d' % (st.stencil.size - 1) if st.boundary == 'dirichlet' else ''}"
                      for n, st in zip(("H", "W"), reversed(a.stencils)))
    return f"{boundary_text(a.stencils)} boundary ({meaning}, (H, W) -> (2, {shape}))"


def check_text(prog: Program) -> str:
    """The human-readable report: structure, network, bound, verdict."""
    from .codegen import describe_network
    from .scheme_stability import bound_note, scheme_facts

    m, a, r = prog.model, prog.arch, prog.stability
    st = a.stencils[0]
    lines = [
        f"{m.name}: generalised nonlinear diffusion of order 2m = {2 * m.order} ({m.ndim}D)",
        f"  equation   dt({m.field}) = {m.equation_text}",
        f"  flux       Phi(s) = {a.flux.text}"
        + (f"   (from diffusivity {m.diffusivity})" if m.diffusivity else ""),
        f"  stencil    D = {st.stencil.describe()} ({m.stencil.kind}, accuracy O(h^{st.stencil.accuracy})), "
        f"{_boundary_words(a)}",
        f"  scheme     {m.scheme}: " + ", ".join(f"{k} = {v.value}" for k, v in m.settings.items()),
        f"  network    {describe_network(a)}",
        "",
        "expression graph (right-hand side)",
        "  " + expression_text(prog.model).replace("\n", "\n  "),  # no networkx import
        "",
        "stability",
        f"  L = sup Phi(s)/s     {_num(r.L)}",
        f"  ||D||^2 <=           {_num(r.norm_D_sq)}   (symbol bound, exact: {r.exact.get('norm_D_sq')})",
        f"  tau_max              {_num(r.tau_max)}   ({bound_note(r)})",
        f"  tau                  {_num(r.tau)}",
    ]
    for h in r.hypotheses:
        mark = {True: "yes", False: "NO", None: "unknown"}[h["holds"]]
        lines.append(f"  {h['name']:<22} {mark:<8} {h['detail']}")
    lines += scheme_facts(r)  # FED/FSI cycle times, solver conditions, multigrid factor
    lines += ["", f"verdict: {r.verdict.upper()} ({r.guarantee}; {r.statement})", f"  {r.reason}"]
    return "\n".join(lines)


def _num(x) -> str:
    return "none" if x is None else f"{x:.10g}"


def cmd_check(args: argparse.Namespace) -> int:
    prog = load(args.file)
    report = prog.stability
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from .codegen_learned import check_text as learned_check_text

        print(learned_check_text(prog) if prog.learned else check_text(prog))
    return EXIT_FAILED if args.strict and not report.stable else EXIT_OK


# ------------------------------------------------------------------------------- compile
def cmd_compile(args: argparse.Namespace) -> int:
    prog = load(args.file)
    if getattr(args, "weights", None):
        from .codegen_learned import load_weights

        src = prog.source(load_weights(prog, args.weights))
    else:
        src = prog.source()
    if args.output:
        Path(args.output).write_text(src, encoding="utf-8")
        print(f"wrote {args.output}: class {prog.arch.class_name} ({prog.stability.verdict})",
              file=sys.stderr)
    else:
        sys.stdout.write(src)
    return EXIT_OK


# ----------------------------------------------------------------------------------- run
def bundled_signal(n: int, batch: int = 1, seed: int = 0):
    """The bundled test signal: piecewise constant with 8 seeded jumps plus 5% Gaussian noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.empty((batch, n))
    for b in range(batch):
        edges = np.sort(rng.choice(np.arange(1, n), size=min(8, n - 1), replace=False))
        levels = rng.uniform(-1.0, 1.0, size=edges.size + 1)
        out[b] = np.repeat(levels, np.diff(np.concatenate([[0], edges, [n]])))
    return out + 0.05 * rng.standard_normal(out.shape)


def _read_input(path: str, prog: Program):
    """The run input: .npy (1D: (N,) / (B, N); 2D: (H, W) / (B, H, W)) or a grayscale image (2D)."""
    from .fieldio import read_field

    return read_field(path, prog)


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    prog = load(args.file)
    report = prog.stability
    if not report.stable:
        print(f"warning: {report.verdict}: {report.reason}", file=sys.stderr)
    if args.input:
        data = _read_input(args.input, prog)
    elif len(prog.arch.dims) == 2:
        from .fieldio import DEFAULT_IMAGE, test_image

        data = test_image(tuple(reversed(prog.arch.size)) if prog.arch.size else DEFAULT_IMAGE)
    else:
        n = prog.arch.size[0] if prog.arch.size else DEFAULT_SIZE
        data = bundled_signal(n)[0]
    import torch

    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    net = prog.module(backend=args.backend, steps=args.steps)
    u0 = torch.as_tensor(np.asarray(data, dtype=np.float64), dtype=dtype, device=args.device)
    steps = getattr(net, "steps", None) if args.steps is None else args.steps
    t0 = time.perf_counter()
    with torch.no_grad():
        u, times, states = _evolve(net, u0, steps, prog, want_states=bool(args.plot))
    elapsed = time.perf_counter() - t0
    out = u.detach().cpu().numpy()
    if args.output:
        from .fieldio import write_field

        write_field(args.output, out)
    if args.plot:
        from .plot import plot_evolution

        plot_evolution(args.plot, times, states, len(prog.arch.dims),
                       f"{prog.name}: {prog.model.scheme}, {steps} steps")
    n0, n1 = float(np.linalg.norm(data)), float(np.linalg.norm(out.astype(np.float64)))
    print(f"{prog.name}: {steps} steps on shape {tuple(out.shape)} ({args.dtype}, {args.backend}) "
          f"in {elapsed:.3f} s; ||u0|| = {n0:.6g}, ||uK|| = {n1:.6g}"
          + (f"; wrote {args.output}" if args.output else "")
          + (f"; plotted {args.plot}" if args.plot else ""))
    return EXIT_OK


def _evolve(net, u0, steps, prog: Program, want_states: bool = False):
    """Runs the network; a network whose ``forward`` takes ``steps`` (time steps / cycles, each
    block independent of its index) runs in chunks so that a progress bar (tqdm, only when stderr
    is a terminal) and the plotted states can be shown -- the same blocks in the same order, so
    the result is identical.  Returns the output, the times and the states (first signal / image
    of the batch) for ``--plot``."""
    import inspect

    def first(u):
        x = u.detach().cpu().double().numpy()
        return x.reshape(-1, *x.shape[-len(prog.arch.dims):])[0]

    per_block = _time_per_block(prog)
    chunkable = (isinstance(steps, int) and steps > 0
                 and "steps" in inspect.signature(net.forward).parameters)
    bar = _progress_bar(steps) if chunkable else None
    if not chunkable or (bar is None and not want_states):
        u = net(u0)
        return u, [0.0, per_block * (steps or 0)], [first(u0), first(u)]
    chunk = max(1, steps // (100 if want_states else 200))
    u, done, times, states = u0, 0, [0.0], [first(u0)]
    while done < steps:
        k = min(chunk, steps - done)
        u = net(u, steps=k)
        done += k
        if want_states:
            times.append(done * per_block)
            states.append(first(u))
        if bar is not None:
            bar.update(k)
    if bar is not None:
        bar.close()
    if not want_states:
        times, states = [0.0, done * per_block], [first(u0), first(u)]
    return u, times, states


def _time_per_block(prog: Program) -> float:
    """The evolution time one outer block (time step or cycle) advances: the report's stopping
    time over the scheme's number of blocks (0 when the report has none)."""
    total = prog.stability.extra.get("stopping_time")
    blocks = getattr(prog.arch.scheme, "steps", None)
    try:
        return float(total) / blocks if total is not None and blocks else 0.0
    except (TypeError, ValueError):
        return 0.0


def _progress_bar(total: int):
    """A tqdm bar on a terminal; None when stderr is piped or tqdm is not installed."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", file=sys.stderr, leave=True)


# -------------------------------------------------------------------------------- verify
def cmd_verify(args: argparse.Namespace) -> int:
    """Checks every claim of the report numerically (pde2net.verify); 0 consistent, 1 failed."""
    from . import verify

    prog = load(args.file)
    report = verify.verify(prog, size=args.size, seed=args.seed, budget=args.budget)
    if args.counterexample:
        if report.counterexample is not None:
            import numpy as np

            np.save(args.counterexample, report.counterexample)
            print(f"wrote {args.counterexample}: an input of shape {report.counterexample.shape} that "
                  f"grows by {report.counterexample_growth:.6g}", file=sys.stderr)
        else:
            print(f"no growing input found within the budget; {args.counterexample} not written",
                  file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(verify.verify_text(report))
    if not report.consistent:
        print("pde2net verify: VERIFICATION FAILED: " + "; ".join(report.failures), file=sys.stderr)
    return report.exit_status


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (v >= 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text}")
    return v


def _positive_int(text: str) -> int:
    v = _nonneg_int(text)
    if v == 0:
        raise argparse.ArgumentTypeError("expected a positive integer, got 0")
    return v


# -------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    """Writes TorchScript and/or ONNX and checks each against the live module (float32)."""
    if not (args.onnx or args.torchscript):
        print("pde2net export: give --onnx FILE and/or --torchscript FILE", file=sys.stderr)
        return EXIT_BAD_INPUT
    prog = load(args.file)
    from . import export

    shape = export.example_shape(prog, _shape_arg(args.shape, len(prog.arch.dims), args.file))
    net = prog.module(backend=args.backend, steps=args.steps)
    net.eval()
    done = []
    if args.torchscript:
        done.append(export.export_torchscript(net, args.torchscript, shape))
    if args.onnx:
        try:
            done.append(export.export_onnx(net, args.onnx, shape))
        except ImportError as exc:
            print(f"pde2net export: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    worst = 0.0
    for c in done:
        err = "not checked (pip install onnxruntime)" if c.rel_error is None else \
            f"max relative difference {c.rel_error:.2e} on shape {c.checked_shape}"
        print(f"wrote {c.path} ({c.kind}, traced on shape {shape}): {err} against the live module")
        worst = max(worst, c.rel_error or 0.0)
    return EXIT_FAILED if worst > args.tolerance else EXIT_OK


def _shape_arg(text: Optional[str], ndim: int, path: str) -> Optional[tuple[int, ...]]:
    """``--shape B,N`` (1D) or ``B,H,W`` (2D)."""
    if not text:
        return None
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != ndim + 1 or min(shape) < 1:
        raise PdeError(f"--shape {text!r} does not fit a {ndim}D spec", None, Source("", path),
                       "B,N for a 1D spec" if ndim == 1 else "B,H,W for a 2D spec")
    return shape


# --------------------------------------------------------------------------------- graph
def cmd_graph(args: argparse.Namespace) -> int:
    """The architecture as a networkx graph of layers with shapes (.dot, .graphml, .json)."""
    from .netgraph import architecture_graph, to_dot, write_graph

    prog = load(args.file)
    g = architecture_graph(prog.arch)
    if not args.output:
        sys.stdout.write(to_dot(g))
        return EXIT_OK
    try:
        kind = write_graph(g, args.output)
    except ValueError as exc:
        print(f"pde2net graph: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {args.output} ({kind[1:]}): {g.number_of_nodes()} layers, {g.number_of_edges()} edges",
          file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pde2net", description="Compile nonlinear diffusion PDE schemes (.pde files) into "
        "PyTorch networks with a derived stability bound.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"pde2net {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("check", help="print the structure, network, bound and verdict",
                       description="Analyse a spec: structure, network, derived bound, verdict.",
                       epilog="example: pde2net check examples/perona_malik.pde --json")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="one JSON object (see README for the keys)")
    c.add_argument("--strict", action="store_true", help="exit 1 unless the verdict is 'stable'")
    c.set_defaults(func=cmd_check)

    c = sub.add_parser("compile", help="write the network as standalone Python source",
                       description="Emit a standalone module that imports only torch.",
                       epilog="example: pde2net compile examples/perona_malik.pde -o pm.py")
    c.add_argument("file")
    c.add_argument("-o", "--output", help="output .py file (default: standard output)")
    c.add_argument("--weights", help="a learned bank's trained state_dict (torch.save of "
                   "prog.module(trainable=True).state_dict()): emit the trained network")
    c.set_defaults(func=cmd_compile)

    c = sub.add_parser("run", help="run the network on a signal or an image",
                       description="Run the network on an .npy signal of shape (N,) or (B, N) (2D specs: "
                       "an .npy of shape (H, W) or (B, H, W), or a grayscale image such as a PNG), "
                       "or on the bundled test signal / image of the spec's size.",
                       epilog="examples:\n  pde2net run examples/perona_malik.pde --input s.npy --output out.npy\n"
                       "  pde2net run examples/perona_malik_2d.pde --input photo.png --output out.png "
                       "--plot evolution.png", formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("file")
    c.add_argument("--input", help=".npy array ((N,) or (B, N); 2D: (H, W) or (B, H, W)) or, for 2D, a "
                   "grayscale image read as values in [0, 1]; default: bundled test signal / image")
    c.add_argument("--output", help=".npy file for the result (same shape as the input), or for 2D "
                   "an image file (values clipped to [0, 1])")
    c.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    c.add_argument("--steps", type=_nonneg_int, help="number of time steps (default: the scheme's)")
    c.add_argument("--backend", choices=("fused", "conv"), default="fused")
    c.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    c.add_argument("--plot", metavar="PNG", help="write a picture of the evolution (1D: space-time "
                   "image; 2D: input and output side by side; needs matplotlib)")
    c.set_defaults(func=cmd_run)

    c = sub.add_parser("verify", help="check the stability claim numerically (float64)",
                       description="Check every claim of the report for the spec's size: the "
                       "operator norm for this N, a stress battery and an adversarial search "
                       "through the network, agreement with a dense NumPy reference. Exit status "
                       "0 consistent, 1 a 'stable' verdict meets growth or the reference "
                       "disagrees, 2 bad input.",
                       epilog="example: pde2net verify examples/too_large_step.pde "
                       "--counterexample grow.npy")
    c.add_argument("file")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    c.add_argument("--budget", type=_nonneg_float, default=1.0,
                   help="seconds of adversarial search (default 1)")
    c.add_argument("--size", type=_positive_int, help="grid points per axis (default: the spec's size)")
    c.add_argument("--counterexample", metavar="OUT.npy",
                   help="save the growing input found (if any) as .npy")
    c.set_defaults(func=cmd_verify)

    c = sub.add_parser("export", help="export the network as ONNX and/or TorchScript",
                       description="Trace the live network and write ONNX (needs the 'onnx' extra) "
                       "and/or TorchScript; each file is loaded back and compared with the live "
                       "module on an input of another shape (float32). Exit 1 if the relative "
                       "difference exceeds --tolerance.",
                       epilog="example: pde2net export examples/perona_malik.pde --onnx pm.onnx "
                       "--torchscript pm.pt")
    c.add_argument("file")
    c.add_argument("--onnx", metavar="FILE.onnx", help="write ONNX here")
    c.add_argument("--torchscript", metavar="FILE.pt", help="write TorchScript here")
    c.add_argument("--shape", help="tracing input shape, B,N (1D) or B,H,W (2D); default from the spec's size")
    c.add_argument("--steps", type=_nonneg_int, help="number of time steps (default: the scheme's)")
    c.add_argument("--backend", choices=("fused", "conv"), default="fused")
    c.add_argument("--tolerance", type=float, default=1e-5, help="relative tolerance (default 1e-5)")
    c.set_defaults(func=cmd_export)

    c = sub.add_parser("graph", help="write the architecture as a graph of layers",
                       description="The network as a networkx graph: layers (conv, activation, "
                       "transposed conv, add, skip, restriction, prolongation) with shapes. Format "
                       "from the suffix: .dot, .graphml or .json; DOT on standard output without -o.",
                       epilog="example: pde2net graph examples/perona_malik.pde -o net.dot")
    c.add_argument("file")
    c.add_argument("-o", "--output", help="output file (.dot, .graphml, .json)")
    c.set_defaults(func=cmd_graph)
    return p


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``pde2net`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except PdeError as err:
        print(err.format(), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - users see one line; developers set PDE2NET_DEBUG
        if os.environ.get("PDE2NET_DEBUG"):
            raise
        print(f"pde2net: internal error: {type(exc).__name__}: {exc}\n"
              f"(this is a bug in pde2net; rerun with PDE2NET_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
