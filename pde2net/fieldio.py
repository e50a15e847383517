"""Reading and writing the fields ``pde2net run`` works on, without silent loss.

- ``.npy``: an array whose layout is given (``--layout BHW``, ``HWC``, ``N``, ...) or inferred
  only when unambiguous (:func:`pde2net.images.arrange`); the result is written back in the
  same layout and dtype.
- ``.png`` / ``.tif`` / ``.tiff`` (2D specs): read losslessly with their values kept (8-bit:
  0..255, 16-bit: 0..65535, float TIFF: its floats; :mod:`pde2net.images`), written back at the
  input's bit depth with any rounding reported.  A colour image for a scalar spec is diffused
  channel by channel, and the run says so; it is never made grey.

Bad files raise :class:`~pde2net.errors.PdeError` naming the file and what was expected.
Imports NumPy only (pypng / tifffile for images), never torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from .errors import PdeError, Source, open_bounded
from .images import IMAGE_SUFFIXES, Picture, arrange, describe, read_picture, write_picture

if TYPE_CHECKING:
    from .program import Program

DEFAULT_IMAGE = (64, 64)
OUTPUT_SUFFIXES = (".npy",) + IMAGE_SUFFIXES
# Largest input file read: 50 million float64 values (the compiler's grid limit) and a header.
MAX_INPUT_BYTES = 50_000_000 * 8 + (1 << 16)


@dataclass(frozen=True)
class FieldData:
    """A run's input: ``data`` as ``(B, C, *space)`` float64, the layout it was stored in, and
    the picture it came from (for writing the result back in the same form)."""

    data: np.ndarray
    layout: str
    picture: Optional[Picture] = None

    @property
    def channels(self) -> int:
        return self.data.shape[1]

    def batch(self) -> np.ndarray:
        """``(B * C, *space)``: every channel of every sample as one field of a scalar spec."""
        return self.data.reshape(-1, *self.data.shape[2:])

    def for_spec(self, channels: int, where: str) -> np.ndarray:
        """The network's input: ``(B, C, *space)`` for a spec with ``channels`` > 1 (the file
        must hold exactly that many channels), else :meth:`batch`."""
        if channels == 1:
            return self.batch()
        if self.channels != channels:
            raise PdeError(f"the spec's field has {channels} channels, the input {self.channels}",
                           None, Source("", where), f"an input with {channels} channels (e.g. an RGB "
                           f"image, or --layout with C for an .npy array)")
        return self.data

    def notes(self, channels: int = 1) -> list[str]:
        """What the user is told about the input: the image's range, the channels."""
        out = [f"read {describe(self.picture)}"] if self.picture is not None else []
        if self.channels > 1 and channels == self.channels:
            out.append(f"{self.channels} channels, diffused jointly (the spec's field has "
                       f"{channels} channels)")
        elif self.channels > 1:
            out.append(f"{self.channels} channels, each diffused separately: the spec's field is scalar "
                       f"(a joint colour diffusivity needs a colour spec; see docs/language.md)")
        return out


def is_image_path(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_field(path: str, prog: "Program", layout: Optional[str] = None) -> FieldData:
    """The input of ``run``: an .npy array or (2D) an image, checked against the spec."""
    where = Source("", path)
    ndim = len(prog.arch.dims)
    picture = None
    if is_image_path(path):
        if ndim != 2:
            raise PdeError("an image input needs a 2D spec", None, where,
                           "field u(x, y) in the spec, or an .npy signal of shape (N,) or (B, N)")
        try:
            picture = read_picture(path)
        except PdeError as err:
            raise PdeError(f"cannot read image: {err.message}", None, where, err.expected) from None
        data, layout = picture.data, "HW" if picture.channels == 1 else "CHW"
    else:
        data = _read_npy(path, where)
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu":
        raise PdeError(f"the input must hold a real numeric array, got dtype {data.dtype}", None, where)
    if data.size and not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise PdeError(f"the input contains {bad} NaN or infinite values", None, where, "finite values")
    if data.size == 0:
        raise PdeError(f"the input is empty (shape {data.shape})", None, where,
                       "at least one signal or image with grid points")
    try:
        arranged, used = arrange(data, layout, ndim, path)
    except PdeError as err:
        raise err.with_source(where) from None
    need = input_min_points(prog)
    if min(arranged.shape[2:]) < need:
        raise PdeError(f"the input has {min(arranged.shape[2:])} points along an axis", None, where,
                       f"at least {need} points along each axis for this stencil")
    return FieldData(arranged.astype(np.float64), used, picture)


def _read_npy(path: str, where: Source) -> np.ndarray:
    try:
        with open_bounded(path, MAX_INPUT_BYTES, "input file") as f:
            return np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        why = "the file is empty" if isinstance(exc, EOFError) else str(exc)
        raise PdeError(f"cannot read input: {why}", None, where,
                       "an .npy file written by numpy.save") from None


def input_min_points(prog: "Program") -> int:
    """The fewest grid points per axis a run input may have: the stencil's width K for a valid
    convolution (neumann) and for circular padding (periodic: a period shorter than the stencil
    would wrap the stencil onto itself), the network's own minimum otherwise."""
    from .lower import min_points

    arch = prog.arch
    if arch.operator is not None:  # forward differences of two points on every axis
        return 2
    width = max(st.stencil.size for st in arch.stencils)
    periodic = arch.stencils[0].boundary == "periodic"
    return max(min_points(arch), width if periodic else 1)


def check_output_suffix(path: str, option: str = "--output") -> None:
    """Refuses an output name whose suffix says another format than the one written."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise PdeError(f"{option} {path}: cannot write {suffix or 'a file without a suffix'}", None,
                       Source("", path), f"a file name ending in {', '.join(OUTPUT_SUFFIXES)}")


def write_field(path: str, data: np.ndarray, like: Optional[FieldData] = None) -> str:
    """The output of ``run`` (``data``: ``(B, C, *space)``): an image when the suffix says so
    (at the input picture's depth), else ``.npy`` in the input's layout, under exactly this name.
    Returns what was written, in words."""
    check_output_suffix(path)
    layout = like.layout if like is not None else None
    if is_image_path(path):
        if data.shape[0] != 1:
            raise PdeError(f"an image file holds one image, the result is a batch of {data.shape[0]}",
                           None, Source("", path), "a .npy output for a batch, or a single image input")
        image = data[0, 0] if data.shape[1] == 1 else data[0]
        note = write_picture(path, image, like.picture if like is not None else None)
        return f"{path}: {note}"
    out = restore_layout(data, layout) if layout else data.reshape(-1, *data.shape[2:]).squeeze(0)
    with open(path, "wb") as f:  # exactly this name (np.save on a name would append .npy)
        np.save(f, out)
    return f"{path} ({out.dtype} array of shape {out.shape}" + (f", layout {layout})" if layout else ")")


def restore_layout(data: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of :func:`~pde2net.images.arrange`: ``(B, C, *space)`` back to ``layout``."""
    canonical = "BC" + layout.replace("B", "").replace("C", "")
    x = data
    if "C" not in layout:
        x = x[:, 0]
        canonical = canonical.replace("C", "")
    if "B" not in layout:
        x = x[0]
        canonical = canonical.replace("B", "")
    return np.transpose(x, [canonical.index(ch) for ch in layout])


def test_image(shape: tuple[int, int] = DEFAULT_IMAGE, seed: int = 0) -> np.ndarray:
    """The bundled 2D test image, shape (H, W): a bright disc and a square on a dark ramp in
    [0.1, 0.9] plus 5% seeded Gaussian noise (edges to keep, noise to remove)."""
    H, W = shape
    y, x = np.mgrid[0:H, 0:W] / np.array([max(H - 1, 1), max(W - 1, 1)])[:, None, None]
    img = 0.1 + 0.2 * x
    img = np.where((x - 0.35) ** 2 + (y - 0.4) ** 2 < 0.2 ** 2, 0.8, img)
    img = np.where((abs(x - 0.72) < 0.15) & (abs(y - 0.7) < 0.15), 0.55, img)
    return img + 0.05 * np.random.default_rng(seed).standard_normal(img.shape)


def test_volume(shape: tuple[int, int, int] = (16, 16, 16), seed: int = 0) -> np.ndarray:
    """The bundled 3D test volume, shape (D, H, W): a bright ball on a dark ramp in [0.1, 0.9]
    plus 5% seeded Gaussian noise."""
    D, H, W = shape
    z, y, x = np.mgrid[0:D, 0:H, 0:W] / np.array([max(n - 1, 1) for n in shape])[:, None, None, None]
    vol = 0.1 + 0.2 * x
    vol = np.where((x - 0.5) ** 2 + (y - 0.45) ** 2 + (z - 0.55) ** 2 < 0.3 ** 2, 0.8, vol)
    return vol + 0.05 * np.random.default_rng(seed).standard_normal(vol.shape)


def test_colour_image(shape: tuple[int, int] = DEFAULT_IMAGE, channels: int = 3, seed: int = 0) -> np.ndarray:
    """The bundled colour test image, shape (C, H, W): the grey test image tinted per channel
    (channel c scaled by 1 - 0.25 c / C), each channel with its own noise."""
    base = test_image(shape, seed)
    rng = np.random.default_rng(seed + 1)
    return np.stack([base * (1 - 0.25 * c / channels) + 0.03 * rng.standard_normal(base.shape)
                     for c in range(channels)])
