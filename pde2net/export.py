"""``pde2net export``: the live network as TorchScript or ONNX, checked against the live module.

Both exports trace the module on an example input (the loops over time steps and iterations are
unrolled; the batch and grid sizes stay dynamic), then the saved file is loaded back and run on a
second input of another shape; the relative difference ``max |y - y_live| / max |y_live|`` is
reported (float32).  ONNX needs the optional ``onnx`` extra (onnx; onnxruntime for the check).
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


def example_shape(prog: "Program", shape: Optional[tuple[int, ...]] = None) -> tuple[int, ...]:
    """The tracing input's shape: given, else (1, N) / (1, NY, NX) from the spec's size."""
    if shape:
        return tuple(shape)
    size = prog.arch.size
    if len(prog.arch.dims) == 2:
        return (1, size[1], size[0]) if size else DEFAULT_2D
    return (1, size[0]) if size else DEFAULT_1D


def fixed_grid(net: torch.nn.Module) -> bool:
    """Whether the network's layers depend on the grid size: a multigrid network builds its grid
    hierarchy (number of levels, vertex- or cell-centred transfers, Galerkin coarse operators) for
    the input's length, so an export traced on N points computes that hierarchy only; its grid axis
    stays fixed and only the batch axis is dynamic."""
    return callable(getattr(net, "hierarchy", None))


def _second_shape(shape: tuple[int, ...], grid_dynamic: bool = True) -> tuple[int, ...]:
    """Another shape (batch + 1, each grid axis + 3 where dynamic) to check the dynamic axes."""
    return (shape[0] + 1,) + tuple(n + 3 if grid_dynamic else n for n in shape[1:])


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
    check = torch.randn(_second_shape(shape, not fixed_grid(net)), generator=gen).to(dtype)
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


def export_onnx(net: torch.nn.Module, path: str, shape: tuple[int, ...],
                dtype: torch.dtype = torch.float32) -> ExportCheck:
    """Exports ``net`` (in ``dtype``) to ONNX with dynamic batch and grid axes (the batch axis only
    for a fixed-grid network); checks it with onnxruntime.  bfloat16 is refused (ValueError):
    onnxruntime's CPU provider has no bfloat16 kernels, so such a file could not be checked."""
    if dtype == torch.bfloat16:
        raise ValueError("ONNX export in bfloat16 cannot be checked (onnxruntime's CPU provider has no "
                         "bfloat16 kernels)")
    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError:
        raise ImportError("ONNX export needs the 'onnx' package: pip install 'pde2net[onnx]'") from None
    net = net.to(dtype)
    example, check = _inputs(net, shape, dtype=dtype)
    names = ["batch", "n"] if len(shape) == 2 else ["batch", "h", "w"]
    axes = {i: name for i, name in enumerate(names[:1] if fixed_grid(net) else names)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the TorchScript-based exporter: fast (under a second) for these small graphs
            with _hierarchy_as_constants(net, example):
                torch.onnx.export(net, (example,), path, input_names=["u"], output_names=["out"],
                                  dynamic_axes={"u": axes, "out": axes}, dynamo=False)
        except Exception:  # noqa: BLE001 - fall back to the torch.export-based exporter
            from torch.export import Dim

            dims = {i: Dim(f"{name}") for i, name in axes.items()}
            with _hierarchy_as_constants(net, example):
                torch.onnx.export(net, (example,), path, input_names=["u"], output_names=["out"],
                                  dynamic_shapes=(dims,), dynamo=True)
        ref = net(check)
    try:
        import onnxruntime as ort
    except ImportError:
        return ExportCheck(path, "onnx", None, tuple(check.shape), fixed_grid(net))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: check.numpy()})[0]
    return ExportCheck(path, "onnx", relative_error(torch.from_numpy(out), ref), tuple(check.shape),
                       fixed_grid(net))
