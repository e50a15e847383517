"""Stage 8: the command line, ``pde2net check | compile | run | verify | export | graph``.

Exit status: 0 success, 1 a check that failed (``check --strict`` on a spec not proven stable,
``verify`` finding a "stable" verdict contradicted -- growth or a NaN / inf output -- or a
reference disagreeing, ``export`` above its tolerance, ``run`` whose output holds NaN or inf),
2 bad input (one message naming the file or option, with file:line:col and a caret where there is
a position, never a traceback): unreadable or oversized files, output paths that cannot be
written, devices this build lacks, inputs the run's dtype cannot hold, option values out of
range; 3 internal error.  Output paths are checked before any work is done.  ``check`` never
imports torch.
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
MAX_BUDGET = 3600.0  # seconds of adversarial search: an hour is more than any spec needs
DTYPES = ("float32", "float64", "float16", "bfloat16")

EPILOG = """examples:
  pde2net check examples/perona_malik.pde
  pde2net check examples/perona_malik.pde --json
  pde2net compile examples/perona_malik.pde -o pm.py
  pde2net run examples/perona_malik.pde --input examples/data/signal.npy --output out.npy
  pde2net run examples/perona_malik_2d.pde --input examples/data/photo.png --param lambda=8 --output out.png
  pde2net verify examples/perona_malik.pde
"""


# ----------------------------------------------------------------------- spec options
def _param_arg(text: str) -> tuple[str, str]:
    """``--param NAME=VALUE``: the name and the value's text (converted exactly when compiling)."""
    name, eq, value = text.partition("=")
    if not eq or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _load(args: argparse.Namespace) -> Program:
    """The spec with ``--param`` values and ``--time`` applied, as editing the file would."""
    params: dict[str, str] = {}
    for name, value in getattr(args, "param", None) or []:
        if name in params:
            raise PdeError(f"--param {name} is given twice", None, Source("", "--param"),
                           "each param once")
        params[name] = value
    return load(args.file, params=params or None, time=getattr(args, "time", None))


def _add_spec_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("--param", action="append", type=_param_arg, metavar="NAME=VALUE",
                   help="replace a param's value (repeatable), e.g. --param lambda=0.08")
    c.add_argument("--time", metavar="T", help="stopping time in place of the scheme's step count "
                   "(steps = ceil(T / tau), tau shrunk to T / steps)")


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


def operator_check_text(prog: Program) -> str:
    """The human-readable report of an operator model: its terms, each term's proven bound,
    the reaction part, the hypotheses and the verdict (docs/theory.md §9-12)."""
    m, a, r = prog.model, prog.arch, prog.stability
    spec = a.operator
    ctx = spec.context
    shape = f"{m.ndim}D" + (f", {ctx.channels} channels" if ctx.channels > 1 else "")
    lines = [
        f"{m.name}: operator model u_t = -sum_i D_i^T G_i(u) D_i u + r(u) ({shape})",
        f"  equation   dt({m.field}) = {m.equation_text}",
    ]
    for t, b in zip(spec.terms, r.extra.get("term_bounds", [])):
        lines.append(f"  term       {t.describe()}")
        lines.append(f"             lambda_max <= {b if b is not None else 'none (no proven bound)'}")
    if not spec.reaction.empty:
        lines.append(f"  reaction   r = {spec.reaction.text}")
    lines += [
        f"  boundary   {', '.join(f'{d}: {k}' for d, k in zip(m.dims, ctx.boundaries))}",
        f"  scheme     {m.scheme}: " + ", ".join(f"{k} = {v.value}" for k, v in m.settings.items()),
        "",
        "stability",
        f"  lambda_max(A) <=     {r.exact.get('lambda_max_bound', 'none')}",
        f"  tau_max              {_num(r.tau_max)}" + (f"   (exact: {r.exact['tau_max']})" if "tau_max" in r.exact else ""),
        f"  tau                  {_num(r.tau)}",
    ]
    for h in r.hypotheses:
        mark = {True: "yes", False: "NO", None: "unknown"}[h["holds"]]
        lines.append(f"  {h['name']:<22} {mark:<8} {h['detail']}")
    lines += ["", f"verdict: {r.verdict.upper()} ({r.guarantee}; {r.statement})", f"  {r.reason}"]
    return "\n".join(lines)


def check_text(prog: Program) -> str:
    """The human-readable report: structure, network, bound, verdict."""
    from .codegen import describe_network
    from .scheme_stability import bound_note, scheme_facts

    if prog.operator:
        return operator_check_text(prog)
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
    prog = _load(args)
    report = prog.stability
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        from .codegen_learned import check_text as learned_check_text

        print(learned_check_text(prog) if prog.learned else check_text(prog))
    return EXIT_FAILED if args.strict and not report.stable else EXIT_OK


# ------------------------------------------------------------------------------- compile
def cmd_compile(args: argparse.Namespace) -> int:
    _output_path(args.output, "-o/--output")
    prog = _load(args)
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


def _run_input(args: argparse.Namespace, prog: Program):
    """The run's input as :class:`~pde2net.fieldio.FieldData`: the file, or the bundled test
    signal / image of the spec's size."""
    import numpy as np

    from .fieldio import (DEFAULT_IMAGE, FieldData, read_field, test_colour_image, test_image,
                          test_volume)

    if args.input:
        return read_field(args.input, prog, args.layout)
    if args.layout:
        raise PdeError("--layout describes an --input file, and none was given", None,
                       Source("", "--layout"), "--input FILE.npy --layout ...")
    channels = prog.model.channels
    if len(prog.arch.dims) == 3:
        vol = test_volume(tuple(reversed(prog.arch.size)) if prog.arch.size else (16, 16, 16))
        return FieldData(np.repeat(vol[None, None], channels, axis=1), "DHW" if channels == 1 else "CDHW")
    if len(prog.arch.dims) == 2 and channels > 1:
        img = test_colour_image(tuple(reversed(prog.arch.size)) if prog.arch.size else DEFAULT_IMAGE,
                                channels)
        return FieldData(img[None], "CHW")
    if len(prog.arch.dims) == 2:
        img = test_image(tuple(reversed(prog.arch.size)) if prog.arch.size else DEFAULT_IMAGE)
        return FieldData(img[None, None], "HW")
    n = prog.arch.size[0] if prog.arch.size else DEFAULT_SIZE
    return FieldData(np.asarray(bundled_signal(n)[0])[None, None], "N")


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from .fieldio import check_output_suffix, write_field

    if args.steps is not None and args.time is not None:
        raise PdeError("give either --steps or --time, not both", None, Source("", "--time"),
                       "--steps N (time steps) or --time T (stopping time)")
    for path, option in ((args.output, "--output"), (args.plot, "--plot"), (args.movie, "--movie")):
        _output_path(path, option)
    if args.output:
        check_output_suffix(args.output)
    if args.movie:
        from .plot import MOVIE_SUFFIXES

        if Path(args.movie).suffix.lower() not in MOVIE_SUFFIXES:
            raise PdeError(f"--movie {args.movie}: unknown movie format", None, Source("", args.movie),
                           "a file name ending in .gif or .mp4")
    prog = _load(args)
    args.input, named = _input_options(args.input or [], prog)
    report = prog.stability
    if not report.stable and not report.extra.get("invariant_region_proven"):
        # (a proven invariant region is checked against the data below: a notice if it leaves it)
        print(f"warning: {_verdict_reason(report)}", file=sys.stderr)
    field = _run_input(args, prog)
    for note in field.notes(prog.model.channels):
        print(f"note: {note}", file=sys.stderr)
    import torch

    dtype = _torch_dtype(args.dtype)
    device = _device(args.device)
    data = field.for_spec(prog.model.channels, args.input or "the bundled test input")
    _check_representable(data, dtype, args.input or "the bundled test input")
    net = prog.module(backend=args.backend, steps=args.steps, dtype=dtype)
    u0 = torch.as_tensor(data, dtype=torch.float64).to(device=device, dtype=dtype)
    net = net.to(device)
    inputs = _input_fields(named, prog, field, u0, dtype)
    for what, values in [(args.input or "the bundled test input", data)] + [
            (f"--input {k}", v.detach().cpu().double().numpy()) for k, v in zip(named, inputs)]:
        outside = _region_notice(report, values, what)
        if outside:
            print(f"warning: {outside}", file=sys.stderr)
    if args.backend == "fused" and device.type == "cpu":
        from .fastpath import accelerate

        accelerate(net)  # the whole time loop in one C++ kernel where it applies (no torch.compile)
    scale = _scale_notice(prog, net, u0, args.input or "the bundled test input")
    if scale:
        print(f"notice: {scale}", file=sys.stderr)
    steps = getattr(net, "steps", None) if args.steps is None else args.steps
    t0 = time.perf_counter()
    with torch.no_grad():
        try:
            u, times, states = _evolve(net, u0, steps, prog, want_states=bool(args.plot or args.movie),
                                       data=inputs)
        except PdeError as err:  # the input's grid does not fit the network (multigrid transfers)
            raise err.with_source(Source("", args.input or "the bundled test input")) from None
    elapsed = time.perf_counter() - t0
    out64 = u.detach().cpu().to(torch.float64).numpy()
    # NumPy has no bfloat16: that output is written as float32, which holds every bfloat16 exactly
    out = out64.astype(np.float32) if dtype == torch.bfloat16 else u.detach().cpu().numpy()
    out = out.reshape(field.data.shape)
    title = f"{prog.name}: {prog.model.scheme}, {steps} steps"
    wrote = write_field(args.output, out, field) if args.output else None
    if args.plot:
        from .plot import plot_evolution

        plot_evolution(args.plot, times, states, min(len(prog.arch.dims), 2), title, prog.arch.order)
    if args.movie:
        from .plot import write_movie

        write_movie(args.movie, times, states, min(len(prog.arch.dims), 2), title)
    n0 = float(np.linalg.norm(u0.detach().cpu().to(torch.float64).numpy()))
    n1 = float(np.linalg.norm(out64))
    print(f"{prog.name}: {steps} steps on shape {tuple(out.shape[2:])} x {out.shape[0] * out.shape[1]} "
          f"({args.dtype}, {args.backend}) in {elapsed:.3f} s; ||u0|| = {n0:.6g}, ||uK|| = {n1:.6g} "
          f"(norms in float64)")
    print(f"wrote {wrote}" if wrote else
          "the result was not saved (no --output): pass --output out.npy (or .png / .tif for an image)")
    for path, what in ((args.plot, "plotted"), (args.movie, "movie")):
        if path:
            print(f"{what} {path}")
    bad = int(out64.size - np.count_nonzero(np.isfinite(out64)))
    if bad:
        print(f"pde2net run: the output has {bad} NaN or infinite values of {out64.size} ({args.dtype}; "
              f"{_verdict_reason(report)}): the evolution blew up or overflowed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _input_options(values: Sequence[str], prog: Program) -> tuple[Optional[str], dict[str, str]]:
    """``--input`` values: ``FILE`` (the initial value) or ``NAME=FILE`` (the spec's input field
    NAME; the field's own name means the initial value).  Returns the initial value's path and
    the input fields' paths by name.  An unknown NAME is bad input, with a "did you mean"."""
    import re
    from difflib import get_close_matches

    from .parse import FieldStmt, InputStmt

    declared = [st.name.text for st in prog.spec.statements if isinstance(st, InputStmt)]
    fields = [st.name.text for st in prog.spec.statements if isinstance(st, FieldStmt)]
    initial: list[str] = []
    named: dict[str, str] = {}
    for value in values:
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.+)", value, flags=re.S)
        if m is None:
            initial.append(value)
            continue
        name, path = m.groups()
        if name in fields:
            initial.append(path)
        elif name in declared:
            if name in named:
                raise PdeError(f"--input {name}= is given twice", None, Source("", value),
                               f"one --input {name}=FILE")
            named[name] = path
        else:
            choices = declared + fields
            close = get_close_matches(name, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            what = f"its input fields are {', '.join(declared)}" if declared else "it declares no input field"
            raise PdeError(f"--input {value}: the spec has no input {name!r} ({what}){hint}", None,
                           Source("", value), "--input FILE (the initial value) or --input NAME=FILE "
                           f"with NAME one of: {', '.join(choices)}")
    if len(initial) > 1:
        raise PdeError(f"--input gives {len(initial)} initial values ({', '.join(initial)})", None,
                       Source("", initial[1]), "one --input FILE; NAME=FILE for an input field")
    return (initial[0] if initial else None), named


def _region_notice(report, values, what: str) -> Optional[str]:
    """When the verdict claims an invariant region [a, b] (a nonlinear reaction, docs/theory.md
    §11) and the run's data leave it: the claim does not cover this run."""
    import numpy as np

    region = report.extra.get("invariant_region") if report.extra.get("invariant_region_proven") else None
    if region is None or not np.size(values):
        return None
    lo, hi = float(np.min(values)), float(np.max(values))
    a, b = region
    if a <= lo and hi <= b:
        return None
    return (f"{what} has values in [{lo:.6g}, {hi:.6g}], outside the invariant region [{a:.6g}, {b:.6g}] "
            f"that the stability claim covers: nothing is claimed for this run")


def _input_fields(named: dict[str, str], prog: Program, field, u0, dtype) -> list:
    """The data field the network reads (the input of its data term), shaped like ``u0``: the
    file given with ``--input NAME=FILE``; empty when none is given (the network then uses the
    initial value, docs/language.md) or the network reads no input field."""
    import torch

    from .fieldio import read_field

    operator = getattr(prog.arch, "operator", None)
    used = operator.reaction.input if operator is not None else None
    for name in named:
        if name != used:
            print(f"note: --input {name}=... is not read: the equation has no data term in {name}",
                  file=sys.stderr)
    out = []
    if used in named:
        name, path = used, named[used]
        got = read_field(path, prog)
        if got.data.shape != field.data.shape:
            raise PdeError(f"--input {name}={path} has shape {got.data.shape} (batch, channels, space), "
                           f"the initial value {field.data.shape}", None, Source("", path),
                           "the same batch, channels and grid as the initial value")
        data = got.for_spec(prog.model.channels, path)
        _check_representable(data, dtype, path)
        out.append(torch.as_tensor(data, dtype=torch.float64).to(device=u0.device, dtype=dtype))
    return out


def _scale_notice(prog: Program, net, u0, where: str) -> Optional[str]:
    """A notice when the data's scale makes the diffusivity's contrast meaningless: at almost
    every edge the frozen diffusivity is below 1% of its bound L (lambda = 0.05 on data in
    0..255 stops the diffusion), so the run barely changes the data."""
    import torch

    op, L = getattr(net, "op", None), prog.stability.L
    if op is None or not L or prog.model.linear or not prog.arch.flux.params:
        return None
    try:
        with torch.no_grad():
            du, g = op.D(u0), op.diffusivity(u0)
    except Exception:  # noqa: BLE001 - a notice must never stop a run
        return None
    if du.dim() == g.dim() + 1 or (len(prog.arch.dims) == 2 and du.shape[-3] != g.shape[-3]):
        du = du.abs().amax(dim=-3, keepdim=True)  # 2D: the gradient's channels at one point
    edges = du.abs() > 0
    if not bool(edges.any()) or g.shape != du.shape:
        return None
    low = float((g[edges] < 0.01 * L).double().mean())
    if low < 0.9:
        return None
    lo, hi = float(u0.min()), float(u0.max())
    params = ", ".join(f"{k} = {v:g}" for k, v in prog.arch.flux.params.items())
    return (f"the diffusivity is below 1% of its maximum at {100 * low:.0f}% of the edges of {where} "
            f"(values {lo:g}..{hi:g}; {params}): the contrast parameter does not fit the data's "
            f"scale, so the run barely changes it. Rescale the data or set e.g. --param "
            f"{next(iter(prog.arch.flux.params))}=...")


def _verdict_reason(report) -> str:
    """``verdict: reason`` without repeating the verdict when the reason already starts with it."""
    reason = report.reason
    if reason.lower().startswith(report.verdict.lower() + ":"):
        return reason
    return f"{report.verdict}: {reason}"


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
            "bfloat16": torch.bfloat16}[name]


def _check_representable(data, dtype, what: str) -> None:
    """Refuses an input whose values overflow the run's dtype (1e40 in float32 would become inf,
    then NaN, silently): the largest magnitude must be at most the dtype's largest finite value."""
    import numpy as np
    import torch

    if not data.size:
        return
    top = float(np.max(np.abs(data)))
    biggest = float(torch.finfo(dtype).max)
    if top > biggest:
        name = str(dtype).replace("torch.", "")
        raise PdeError(f"the input's largest magnitude {top:.6g} overflows {name} "
                       f"(largest finite {name}: {biggest:.6g})", None, Source("", what),
                       f"values of magnitude at most {biggest:.6g}, or --dtype float64")


def _device(text: str):
    """``--device``: a torch device that exists in this build and holds data."""
    import torch

    where = Source("", "--device")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise PdeError(f"--device {text!r} is not a torch device", None, where,
                       "cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise PdeError("--device meta holds no data: a run needs real values", None, where,
                       "cpu, cuda, cuda:N or mps")
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        why = "this PyTorch build has no CUDA support or no GPU is visible" if dev.type == "cuda" \
            else f"no {dev.type} device is available in this PyTorch build"
        raise PdeError(f"--device {text}: {why}", None, where, "--device cpu")
    count = getattr(backend, "device_count", None)
    if dev.index is not None and count is not None and dev.index >= count():
        raise PdeError(f"--device {text}: only {count()} {dev.type} device(s) visible", None, where,
                       f"{dev.type}:0 ... {dev.type}:{count() - 1}")
    return dev


def _output_path(path: Optional[str], option: str) -> None:
    """Refuses, before any work is done, an output path that cannot be written as a file."""
    if not path:
        return
    where = Source("", path)
    p = Path(path)
    if p.is_dir():
        raise PdeError(f"{option} {path} is a directory", None, where, f"a file name for {option}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise PdeError(f"{option} {path}: the directory {parent} does not exist", None, where,
                       "an existing directory (create it first)")
    if not parent.is_dir():
        raise PdeError(f"{option} {path}: {parent} is not a directory", None, where,
                       "a path inside an existing directory")


def _evolve(net, u0, steps, prog: Program, want_states: bool = False, data: Sequence = ()):
    """Runs the network; a network whose ``forward`` takes ``steps`` (time steps / cycles, each
    block independent of its index) runs in chunks so that progress (:class:`tracking.Progress`:
    a tqdm bar on a terminal, else a line at most every 10 s) and the plotted states can be shown
    -- the same blocks in the same order, so the result is identical.  Returns the output, the
    times and the states (first signal / image of the batch) for ``--plot`` / ``--movie``.
    ``data``: the data field f (a one-element list, or empty for the default f = u0), held
    fixed across the chunks."""
    from . import tracking

    f = data[0] if data else None  # the data field; None: the network's default, u0

    def first(u):
        x = u.detach().cpu().double().numpy()
        x = x.reshape(-1, *x.shape[-len(prog.arch.dims):])[0]
        return x[x.shape[0] // 2] if x.ndim == 3 else x  # a volume: its middle slice

    per_block = tracking.time_per_block(prog.arch)
    if not (isinstance(steps, int) and steps > 0 and tracking.chunkable(net)):
        u = net(u0, f) if f is not None else net(u0)
        return u, [0.0, per_block * (steps or 0)], [first(u0), first(u)]
    progress = tracking.Progress(steps)
    times, states = [0.0], [first(u0)]

    def on_step(k: int, t: float, u) -> None:
        progress.update(k - progress.done)
        if want_states and k:
            times.append(t)
            states.append(first(u))

    # Chunks are for the plotted states and for progress; a multi-step kernel (pde2net.fastpath)
    # is fastest in long calls, so without states short runs are one call and long ones 20 chunks.
    chunk = max(1, steps // 100) if want_states else (steps if steps <= 200 else max(1, steps // 20))
    u, done = tracking.run(net, u0, steps, per_block, chunk, on_step, data=f)
    progress.close()
    if not want_states:
        times, states = [0.0, done * per_block], [first(u0), first(u)]
    return u, times, states


# -------------------------------------------------------------------------------- verify
def cmd_verify(args: argparse.Namespace) -> int:
    """Checks every claim of the report numerically (pde2net.verify); 0 consistent, 1 failed."""
    from . import verify

    _output_path(args.counterexample, "--counterexample")
    prog = _load(args)
    if prog.learned:
        return _verify_learned(prog, args)
    report = verify.verify(prog, size=args.size, seed=args.seed, budget=args.budget)
    saved = None
    if args.counterexample and report.counterexample is not None:
        import numpy as np

        with open(args.counterexample, "wb") as f:  # exactly this name (np.save would add .npy)
            np.save(f, report.counterexample)
        saved = args.counterexample
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(verify.verify_text(report, saved_to=saved))
    if saved:  # only now that the file exists
        print(f"wrote {saved}: an input of shape {report.counterexample.shape} that grows by "
              f"{verify.growth_text(report.counterexample_growth)}", file=sys.stderr)
    elif args.counterexample:
        print(f"no growing input found within the budget; {args.counterexample} not written",
              file=sys.stderr)
    if not report.consistent:
        print("pde2net verify: VERIFICATION FAILED: " + "; ".join(report.failures), file=sys.stderr)
    return report.exit_status


def _verify_learned(prog: Program, args: argparse.Namespace) -> int:
    """A learned filter bank at its initial parameters: the network's own check against its dense
    NumPy reference (``StableResNet.verify``: the certificate with the dense norm, no growth on the
    top singular vector and stress inputs); exit 1 if it fails.  A trained network is checked in
    Python with ``net.verify()``."""
    if args.counterexample:
        raise PdeError("--counterexample: a learned bank's check searches no counterexample", None,
                       Source("", "--counterexample"), "pde2net verify FILE (without --counterexample)")
    result = prog.module(trainable=True).verify(size=args.size, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"{prog.name}: learned filter bank at its initial parameters: "
              f"{'CONSISTENT' if result['ok'] else 'FAILED'} (the certificate of docs/theory.md §13, "
              f"checked against a dense NumPy float64 reference; a trained network: net.verify())")
    return EXIT_OK if result["ok"] else EXIT_FAILED


def _nonneg_float(text: str) -> float:
    """A finite number >= 0 (nan, which would make every comparison pass, is refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 <= v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite non-negative number, got {text}")
    return v


def _budget(text: str) -> float:
    v = _nonneg_float(text)
    if v > MAX_BUDGET:
        raise argparse.ArgumentTypeError(f"at most {MAX_BUDGET:g} seconds, got {text}")
    return v


def _steps(text: str) -> int:
    from .analyse import MAX_STEPS

    v = _nonneg_int(text)
    if v > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_STEPS} steps, got {v}")
    return v


def _positive_int(text: str) -> int:
    v = _nonneg_int(text)
    if v == 0:
        raise argparse.ArgumentTypeError("expected a positive integer, got 0")
    return v


# -------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    """Writes TorchScript and/or ONNX and checks each against the live module (float32)."""
    if not (args.pt2 or args.onnx or args.torchscript):
        print("pde2net export: give --pt2 FILE, --onnx FILE and/or --torchscript FILE", file=sys.stderr)
        return EXIT_BAD_INPUT
    _output_path(args.pt2, "--pt2")
    _output_path(args.onnx, "--onnx")
    _output_path(args.torchscript, "--torchscript")
    if args.onnx and args.dtype == "bfloat16":
        raise PdeError("--onnx with --dtype bfloat16: onnxruntime has no bfloat16 kernels on the CPU, "
                       "so the exported file could not be checked", None, Source("", "--dtype"),
                       "--dtype float16 (or float32) for ONNX, or --torchscript for bfloat16")
    prog = _load(args)
    from . import export
    from .fieldio import input_min_points

    ndim = len(prog.arch.dims)
    shape = export.example_shape(prog, _shape_arg(args.shape, ndim, input_min_points(prog)))
    dtype = _torch_dtype(args.dtype)
    net = prog.module(backend=args.backend, steps=args.steps)
    net.eval()
    _fits(net, shape, dtype, "--shape" if args.shape else args.file)
    done = []
    if args.pt2:
        done.append(export.export_pt2(net, args.pt2, shape, dtype))
    if args.torchscript:
        done.append(export.export_torchscript(net, args.torchscript, shape, dtype))
    if args.onnx:
        try:
            done.append(export.export_onnx(net, args.onnx, shape, dtype))
        except ImportError as exc:
            print(f"pde2net export: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    worst = 0.0
    for c in done:
        err = "not checked (pip install onnxruntime)" if c.rel_error is None else \
            f"max relative difference {c.rel_error:.2e} on shape {c.checked_shape}"
        grid = " (grid size fixed: the multigrid hierarchy is built for it)" if c.fixed_grid else ""
        print(f"wrote {c.path} ({c.kind}, {args.dtype}, traced on shape {shape}{grid}): {err} "
              "against the live module")
        if c.repeat > 1:
            print(f"  exported one step (block, {c.nodes} nodes); apply it {c.repeat} times for the "
                  f"whole network:\n" + export.ONNX_RUNNER.format(path=c.path, steps=c.repeat))
        if c.rel_error is not None:
            worst = max(worst, c.rel_error)
    tolerance = args.tolerance
    if tolerance is None:
        tolerance = 1e-2 if args.dtype in ("float16", "bfloat16") else 1e-5
    if not worst <= tolerance:
        print(f"pde2net export: the exported network differs from the live module by {worst:.3g} "
              f"> --tolerance {tolerance:g}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _fits(net, shape: tuple[int, ...], dtype, where: str) -> None:
    """Runs the network once on zeros of the tracing shape, so that a grid the network cannot take
    (multigrid transfers) is reported as bad input before the exporters wrap it in their errors."""
    import torch

    try:
        with torch.no_grad():
            net.to(dtype)(torch.zeros(shape, dtype=dtype))
    except PdeError as err:
        raise err.with_source(Source("", where)) from None


def _shape_arg(text: Optional[str], ndim: int, need: int = 1) -> Optional[tuple[int, ...]]:
    """``--shape B,N`` (1D) or ``B,H,W`` (2D), each grid axis at least ``need`` points."""
    if not text:
        return None
    where = Source("", "--shape")
    try:
        shape = tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != ndim + 1 or min(shape) < 1:
        raise PdeError(f"--shape {text!r} does not fit a {ndim}D spec", None, where,
                       "B,N for a 1D spec" if ndim == 1 else "B,H,W for a 2D spec")
    if min(shape[1:]) < need:
        raise PdeError(f"--shape {text!r} has {min(shape[1:])} grid points along an axis", None,
                       where, f"at least {need} points along each axis for this stencil")
    return shape


# --------------------------------------------------------------------------------- graph
def cmd_graph(args: argparse.Namespace) -> int:
    """The architecture as a networkx graph of layers with shapes (.dot, .graphml, .json)."""
    from .netgraph import architecture_graph, to_dot, write_graph

    _output_path(args.output, "-o/--output")
    prog = _load(args)
    if prog.learned:
        raise PdeError("graph: the layer graph of a learned filter bank is not drawn yet", None,
                       Source("", args.file), "print(prog.module(trainable=True)) for its layers")
    if prog.operator:
        raise PdeError("graph: the layer graph of an operator model (sums, reactions, tensors, "
                       "colour, 3D) is not drawn yet", None, Source("", args.file),
                       "print(prog.module()) for its layers, or pde2net check for its terms")
    g = architecture_graph(prog.arch)
    if not args.output:
        sys.stdout.write(to_dot(g))
        return EXIT_OK
    try:
        kind = write_graph(g, args.output)
    except ValueError as exc:
        print(f"pde2net graph: -o {args.output}: {exc}", file=sys.stderr)
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
    _add_spec_options(c)
    c.add_argument("--json", action="store_true", help="one JSON object (see README for the keys)")
    c.add_argument("--strict", action="store_true", help="exit 1 unless the verdict is 'stable'")
    c.set_defaults(func=cmd_check)

    c = sub.add_parser("compile", help="write the network as standalone Python source",
                       description="Emit a standalone module that imports only torch.",
                       epilog="example: pde2net compile examples/perona_malik.pde -o pm.py")
    c.add_argument("file")
    _add_spec_options(c)
    c.add_argument("-o", "--output", help="output .py file (default: standard output)")
    c.add_argument("--weights", help="a learned bank's trained state_dict (torch.save of "
                   "prog.module(trainable=True).state_dict()): emit the trained network")
    c.set_defaults(func=cmd_compile)

    c = sub.add_parser("run", help="run the network on a signal or an image",
                       description="Run the network on an .npy signal of shape (N,) or (B, N) (2D specs: "
                       "an .npy of shape (H, W) or (B, H, W), or a grayscale image such as a PNG), "
                       "or on the bundled test signal / image of the spec's size.",
                       epilog="examples:\n  pde2net run examples/perona_malik.pde --input "
                       "examples/data/signal.npy --output out.npy\n  pde2net run examples/perona_malik_2d.pde "
                       "--input examples/data/photo.png --param lambda=8 --output out.png --plot evolution.png "
                       "--movie evolution.gif", formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("file")
    _add_spec_options(c)
    c.add_argument("--input", action="append", metavar="FILE | NAME=FILE",
                   help=".npy array ((N,) or (B, N); 2D: (H, W), (B, H, W), ... see "
                   "--layout) or, for 2D, a PNG or TIFF image (values kept as they are, e.g. 0..255; "
                   "colour: each channel diffused separately); default: bundled test signal / image. "
                   "NAME=FILE (repeatable) gives the spec's input field NAME (e.g. the data f of a "
                   "term alpha * (f - u)); default: the initial value")
    c.add_argument("--layout", help="axes of the --input .npy: letters B (batch), C (channels), N "
                   "(1D) or H, W (2D), e.g. BHW, HWC, CHW; needed when the shape is ambiguous")
    c.add_argument("--output", help=".npy file for the result (the input's layout and dtype), or for "
                   "2D a .png / .tif image (the input image's bit depth; rounding reported)")
    c.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="the network's dtype (default float32); the summary's norms are float64")
    c.add_argument("--steps", type=_steps, help="number of time steps (default: the scheme's)")
    c.add_argument("--backend", choices=("fused", "conv"), default="fused")
    c.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    c.add_argument("--plot", metavar="PNG", help="write a picture of the evolution (1D: space-time "
                   "image; 2D: frames, the difference image, the norm against time; needs matplotlib)")
    c.add_argument("--movie", metavar="OUT.gif", help="write the evolution as an animated .gif or .mp4 "
                   "(the 'movie' extra)")
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
    _add_spec_options(c)
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    c.add_argument("--budget", type=_budget, default=1.0,
                   help=f"seconds of adversarial search (default 1, at most {MAX_BUDGET:g})")
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
    _add_spec_options(c)
    c.add_argument("--pt2", metavar="FILE.pt2", help="write torch.export's program here (the first format)")
    c.add_argument("--onnx", metavar="FILE.onnx", help="write ONNX (one time step) here")
    c.add_argument("--torchscript", metavar="FILE.pt", help="write TorchScript here")
    c.add_argument("--shape", help="tracing input shape, B,N (1D) or B,H,W (2D); default from the spec's size")
    c.add_argument("--steps", type=_steps, help="number of time steps (default: the scheme's)")
    c.add_argument("--backend", choices=("fused", "conv"), default="fused")
    c.add_argument("--dtype", choices=DTYPES, default="float32",
                   help="the exported network's dtype (default float32)")
    c.add_argument("--tolerance", type=_nonneg_float, default=None,
                   help="relative tolerance (default: 1e-5 for float32/float64, 1e-2 for float16/bfloat16)")
    c.set_defaults(func=cmd_export)

    c = sub.add_parser("graph", help="write the architecture as a graph of layers",
                       description="The network as a networkx graph: layers (conv, activation, "
                       "transposed conv, add, skip, restriction, prolongation) with shapes. Format "
                       "from the suffix: .dot, .graphml or .json; DOT on standard output without -o.",
                       epilog="example: pde2net graph examples/perona_malik.pde -o net.dot")
    c.add_argument("file")
    _add_spec_options(c)
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


def _named_files(args: argparse.Namespace, exc: OSError) -> str:
    """The file an OSError is about: its own name, else the files the command line named."""
    if exc.filename:
        return str(exc.filename)
    names = [str(getattr(args, k)) for k in ("output", "plot", "counterexample", "onnx", "torchscript",
                                             "input", "file") if getattr(args, k, None)]
    return "one of " + ", ".join(names) if len(names) > 1 else (names[0] if names else "a file")


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
    except OSError as exc:  # the file system refused a file the user named (full disk, permissions)
        if os.environ.get("PDE2NET_DEBUG"):
            raise
        print(f"pde2net: cannot read or write {_named_files(args, exc)}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - users see one line; developers set PDE2NET_DEBUG
        if os.environ.get("PDE2NET_DEBUG"):
            raise
        print(f"pde2net: internal error: {type(exc).__name__}: {exc}\n"
              f"(this is a bug in pde2net; rerun with PDE2NET_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
