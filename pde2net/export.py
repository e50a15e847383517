"""``pde2net export``: the live network as ``torch.export`` (``.pt2``), ONNX or TorchScript, checked
against the live module.

Every export traces the module on an example input (the batch and grid sizes stay dynamic), then
the saved file is loaded back and run on a second input of another shape; the relative difference
``max |y - y_live| / max |y_live|`` is reported (float32).  ``.pt2`` (:func:`export_pt2`) is the
first format: torch.export is what PyTorch maintains (TorchScript is deprecated upstream and kept
while it works).  ``.pt2`` and TorchScript hold the whole network (the loop over time steps
unrolled).  ONNX holds ONE time step (the network's ``block``: one step, or one FED/FSI cycle)
when the network has one, to be applied ``steps`` times by the caller (:data:`ONNX_RUNNER`):
unrolled, 50 steps were 10,626 nodes and 500 steps took minutes to export.  ONNX needs the
optional ``onnx`` extra (onnx; onnxruntime for the check).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Optional

import torch

if TYPE_CHECKING:
    from .program import Program

DEFAULT_1D, DEFAULT_2D = (1, 256), (1, 64, 64)


@dataclass(frozen=True)
class ExportCheck:
    path: str
    kind: str
    rel_error: Optional[float]  # None: could not be checked (onnxruntime missing)
    checked_shape: tuple[int, ...]
    fixed_grid: bool = False  # the grid axes are fixed to the traced size (multigrid)
    repeat: int = 1  # the file holds one step: apply it this many times for the whole network
    nodes: Optional[int] = None  # ONNX: the number of nodes of the graph


#: how to run an ONNX file that holds one step (printed by ``pde2net export``)
ONNX_RUNNER = """import onnxruntime as ort
sess = ort.InferenceSession("{path}")
for _ in range({steps}):
    u = sess.run(None, {{"u": u}})[0]"""


class OneStep(torch.nn.Module):
    """One time step of a network (``net(u, steps=1)``: one block, same input shapes), exported in
    place of the unrolled loop; :func:`one_step` says whether a network has one."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.net(u, steps=1)


def one_step(net: torch.nn.Module) -> Optional[torch.nn.Module]:
    """``OneStep(net)`` for a frozen network (every block the same), else None (a trainable
    network with a parameter set per block, or a network without ``steps``)."""
    from .layers import DiffusionNet

    return OneStep(net) if isinstance(net, DiffusionNet) and net.steps > 1 else None


def example_shape(prog: "Program", shape: Optional[tuple[int, ...]] = None) -> tuple[int, ...]:
    """The tracing input's shape: given, else (1, N) / (1, NY, NX) from the spec's size."""
    if shape:
        return tuple(shape)
    size = prog.arch.size
    if prog.arch.operator is not None:  # (1, [C,] *space), x last
        space = tuple(reversed(size)) if size else (16,) * len(prog.arch.dims)
        channels = prog.arch.operator.context.channels
        return (1,) + ((channels,) if channels > 1 else ()) + space
    if len(prog.arch.dims) == 2:
        return (1, size[1], size[0]) if size else DEFAULT_2D
    return (1, size[0]) if size else DEFAULT_1D


def fixed_grid(net: torch.nn.Module) -> bool:
    """Whether the network's layers depend on the grid size: a multigrid network builds its grid
    hierarchy (number of levels, vertex- or cell-centred transfers, Galerkin coarse operators) for
    the input's length, so an export traced on N points computes that hierarchy only; its grid axis
    stays fixed and only the batch axis is dynamic."""
    return callable(getattr(net, "hierarchy", None))


def grid_axes(net: torch.nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The input's grid axes: every axis after the batch, except an operator network's channel
    axis (its last ``ndim`` axes are the grid; a channel axis before them has a fixed size)."""
    ndim = getattr(net, "ndim", None)
    if isinstance(ndim, int) and isinstance(getattr(net, "channels", None), int):
        return tuple(range(len(shape) - ndim, len(shape)))
    return tuple(range(1, len(shape)))


def _second_shape(shape: tuple[int, ...], grid_dynamic: bool = True,
                  grid: Optional[tuple[int, ...]] = None) -> tuple[int, ...]:
    """Another shape (batch + 1, each grid axis + 3 where dynamic) to check the dynamic axes."""
    grid = tuple(range(1, len(shape))) if grid is None else grid
    return (shape[0] + 1,) + tuple(n + 3 if grid_dynamic and i in grid else n
                                   for i, n in enumerate(shape) if i > 0)


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |y - ref| / max |ref|`` in float64; inf when either holds a NaN or an infinity, so a
    non-finite output never passes a tolerance."""
    y, ref = y.detach().to(torch.float64), ref.detach().to(torch.float64)
    if not (bool(torch.isfinite(y).all()) and bool(torch.isfinite(ref).all())):
        return float("inf")
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    diff = float((y - ref).abs().max()) if ref.numel() else 0.0
    return diff / (scale if scale > 0 else 1.0)


def _inputs(net: torch.nn.Module, shape: tuple[int, ...], seed: int = 0,
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The tracing input and the checking input (another shape along the dynamic axes)."""
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(shape, generator=gen).to(dtype)
    check = torch.randn(_second_shape(shape, not fixed_grid(net), grid_axes(net, shape)),
                        generator=gen).to(dtype)
    return example, check


@contextmanager
def _hierarchy_as_constants(net: torch.nn.Module, example: torch.Tensor) -> Iterator[None]:
    """While tracing a fixed-grid network, its hierarchy for the example's size is built once and
    handed out as constants: under tracing the grid size is a tensor, so the network's own cache
    (keyed on the integer size) would miss and the trace would record the construction itself,
    the coarsest level's matrix inverse included, which ONNX cannot express."""
    if not fixed_grid(net):
        yield
        return
    with torch.no_grad():
        levels = net.hierarchy(int(example.shape[-1]), example)
    net.hierarchy = lambda n, like: levels  # an instance attribute, removed below
    try:
        yield
    finally:
        del net.hierarchy


def export_torchscript(net: torch.nn.Module, path: str, shape: tuple[int, ...],
                       dtype: torch.dtype = torch.float32) -> ExportCheck:
    """Traces ``net`` (in ``dtype``) to TorchScript, saves it, loads it back and compares on a new
    shape."""
    net = net.to(dtype)
    example, check = _inputs(net, shape, dtype=dtype)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _hierarchy_as_constants(net, example):
            traced = torch.jit.trace(net, example, check_trace=False)
        traced.save(path)
        loaded = torch.jit.load(path)
        err = relative_error(loaded(check), net(check))
    return ExportCheck(path, "torchscript", err, tuple(check.shape), fixed_grid(net))


def export_pt2(net: torch.nn.Module, path: str, shape: tuple[int, ...],
               dtype: torch.dtype = torch.float32) -> ExportCheck:
    """``torch.export`` of ``net`` (in ``dtype``) with dynamic batch and grid axes (the batch axis
    only for a fixed-grid network), saved with ``torch.export.save``, loaded back and compared on
    a new shape.  Load it with ``torch.export.load(path).module()``."""
    from torch.export import Dim

    net = net.to(dtype)
    # traced on a batch of at least 2: torch.export specialises an axis of size 1 to 1
    example, check = _inputs(net, (max(2, shape[0]),) + tuple(shape[1:]), dtype=dtype)
    axes = range(1) if fixed_grid(net) else (0,) + grid_axes(net, shape)
    dims = ({i: Dim.AUTO for i in axes},)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _hierarchy_as_constants(net, example):
            program = torch.export.export(net, (example,), dynamic_shapes=dims)
        torch.export.save(program, path)
        loaded = torch.export.load(path).module()
        err = relative_error(loaded(check), net(check))
    return ExportCheck(path, "torch.export", err, tuple(check.shape), fixed_grid(net))


def onnx_nodes(path: str) -> Optional[int]:
    """The number of nodes of an ONNX file's main graph (None without the onnx package)."""
    try:
        import onnx
    except ImportError:
        return None
    return len(onnx.load(path).graph.node)


def export_onnx(net: torch.nn.Module, path: str, shape: tuple[int, ...],
                dtype: torch.dtype = torch.float32, whole: bool = False) -> ExportCheck:
    """Exports ``net`` (in ``dtype``) to ONNX with dynamic batch and grid axes (the batch axis only
    for a fixed-grid network); checks it with onnxruntime.  bfloat16 is refused (ValueError):
    onnxruntime's CPU provider has no bfloat16 kernels, so such a file could not be checked.

    The file holds one time step when the network has one (:func:`one_step`; ``whole=True``: the
    unrolled network): its size and export time do not grow with the number of steps, and the
    check applies it ``net.steps`` times in onnxruntime (``ExportCheck.repeat``)."""
    step = None if whole else one_step(net)
    repeat = net.steps if step is not None else 1
    traced = step if step is not None else net
    if dtype == torch.bfloat16:
        raise ValueError("ONNX export in bfloat16 cannot be checked (onnxruntime's CPU provider has no "
                         "bfloat16 kernels)")
    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError:
        raise ImportError("ONNX export needs the 'onnx' package: pip install 'pde2net[onnx]'") from None
    net = net.to(dtype)
    example, check = _inputs(net, shape, dtype=dtype)
    grid = () if fixed_grid(net) else grid_axes(net, shape)
    names = ("n",) if len(grid) == 1 else ("h", "w") if len(grid) == 2 else ("d", "h", "w")
    axes = {0: "batch", **dict(zip(grid, names))}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the TorchScript-based exporter: fast (under a second) for these small graphs
            with _hierarchy_as_constants(net, example):
                torch.onnx.export(traced, (example,), path, input_names=["u"], output_names=["out"],
                                  dynamic_axes={"u": axes, "out": axes}, dynamo=False)
        except Exception:  # noqa: BLE001 - fall back to the torch.export-based exporter
            from torch.export import Dim

            dims = {i: Dim(f"{name}") for i, name in axes.items()}
            with _hierarchy_as_constants(net, example):
                torch.onnx.export(traced, (example,), path, input_names=["u"], output_names=["out"],
                                  dynamic_shapes=(dims,), dynamo=True)
        ref = net(check)
    nodes = onnx_nodes(path)
    try:
        import onnxruntime as ort
    except ImportError:
        return ExportCheck(path, "onnx", None, tuple(check.shape), fixed_grid(net), repeat, nodes)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = check.numpy()
    for _ in range(repeat):
        out = sess.run(None, {sess.get_inputs()[0].name: out})[0]
    return ExportCheck(path, "onnx", relative_error(torch.from_numpy(out), ref), tuple(check.shape),
                       fixed_grid(net), repeat, nodes)
