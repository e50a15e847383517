"""Reading and writing the fields ``pde2net run`` works on: 1D signals and 2D images.

- ``.npy``: 1D specs take ``(N,)`` or ``(B, N)``, 2D specs ``(H, W)`` or ``(B, H, W)`` (x is the
  last axis, so W = NX and H = NY);
- ``.png`` (and other formats Pillow reads): grayscale images for 2D specs, read as values in
  [0, 1] and written back clipped to [0, 1] and rounded to 8 bits (the optional ``images`` extra).

Bad files raise :class:`~pde2net.errors.PdeError` naming the file and what was expected.
Imports NumPy only (Pillow when an image file is used), never torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import PdeError, Source, open_bounded

if TYPE_CHECKING:
    from .program import Program

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm")
DEFAULT_IMAGE = (64, 64)
# Largest input file read: 50 million float64 values (the compiler's grid limit) and a header.
MAX_INPUT_BYTES = 50_000_000 * 8 + (1 << 16)


def is_image_path(path: str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _pillow(path: str):
    try:
        from PIL import Image
    except ImportError:
        raise PdeError("reading or writing images needs Pillow", None, Source("", path),
                       "pip install 'pde2net[images]' (or use .npy files)") from None
    return Image


def read_image(path: str) -> np.ndarray:
    """A grayscale image as float64 values in [0, 1], shape (H, W)."""
    Image = _pillow(path)
    try:
        with open_bounded(path, MAX_INPUT_BYTES, "image file") as f, Image.open(f) as im:
            mode = im.mode
            gray = im.convert("I;16" if mode in ("I;16", "I") else "L")
            data = np.asarray(gray, dtype=np.float64)
    except (OSError, ValueError) as exc:
        why = "not an image format Pillow recognises" if "cannot identify" in str(exc) else str(exc)
        raise PdeError(f"cannot read image: {why}", None, Source("", path)) from None
    return data / (65535.0 if mode in ("I;16", "I") else 255.0)


def write_image(path: str, data: np.ndarray) -> None:
    """Writes (H, W) values in [0, 1] as an 8-bit grayscale image (values outside are clipped)."""
    Image = _pillow(path)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise PdeError(f"an image file holds one image, the result has shape {data.shape}", None,
                       Source("", path), "a .npy output for a batch, or a single (H, W) input")
    pixels = np.rint(np.clip(np.asarray(data, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    Image.fromarray(pixels).save(path)  # uint8 (H, W): mode "L"


def read_field(path: str, prog: "Program") -> np.ndarray:
    """The input of ``run``: an .npy array or (2D) an image, checked against the spec."""
    where = Source("", path)
    ndim = len(prog.arch.dims)
    if is_image_path(path):
        if ndim != 2:
            raise PdeError("an image input needs a 2D spec", None, where,
                           "field u(x, y) in the spec, or an .npy signal of shape (N,) or (B, N)")
        data = read_image(path)
    else:
        try:
            with open_bounded(path, MAX_INPUT_BYTES, "input file") as f:
                data = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            why = "the file is empty" if isinstance(exc, EOFError) else str(exc)
            raise PdeError(f"cannot read input: {why}", None, where,
                           "an .npy file written by numpy.save") from None
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu":
        raise PdeError(f"the input must hold a real numeric array, got dtype {data.dtype}", None, where)
    shapes = ((1, 2), "an array of shape (N,) or (B, N)") if ndim == 1 else \
        ((2, 3), "an array of shape (H, W) or (B, H, W)")
    if data.ndim not in shapes[0]:
        raise PdeError(f"the input has shape {data.shape}", None, where, shapes[1])
    if data.size and not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise PdeError(f"the input contains {bad} NaN or infinite values", None, where, "finite values")
    if data.size == 0:
        raise PdeError(f"the input is empty (shape {data.shape})", None, where,
                       "at least one signal or image with grid points")
    need = input_min_points(prog)
    if min(data.shape[-ndim:]) < need:
        raise PdeError(f"the input has {min(data.shape[-ndim:])} points along an axis", None, where,
                       f"at least {need} points along each axis for this stencil")
    return data


def input_min_points(prog: "Program") -> int:
    """The fewest grid points per axis a run input may have: the stencil's width K for a valid
    convolution (neumann) and for circular padding (periodic: a period shorter than the stencil
    would wrap the stencil onto itself), the network's own minimum otherwise."""
    from .lower import min_points

    arch = prog.arch
    width = max(st.stencil.size for st in arch.stencils)
    periodic = arch.stencils[0].boundary == "periodic"
    return max(min_points(arch), width if periodic else 1)


def write_field(path: str, data: np.ndarray) -> None:
    """The output of ``run``: an image when the suffix says so, else .npy."""
    if is_image_path(path):
        write_image(path, data)
    else:
        np.save(path, data)


def test_image(shape: tuple[int, int] = DEFAULT_IMAGE, seed: int = 0) -> np.ndarray:
    """The bundled 2D test image, shape (H, W): a bright disc and a square on a dark ramp in
    [0.1, 0.9] plus 5% seeded Gaussian noise (edges to keep, noise to remove)."""
    H, W = shape
    y, x = np.mgrid[0:H, 0:W] / np.array([max(H - 1, 1), max(W - 1, 1)])[:, None, None]
    img = 0.1 + 0.2 * x
    img = np.where((x - 0.35) ** 2 + (y - 0.4) ** 2 < 0.2 ** 2, 0.8, img)
    img = np.where((abs(x - 0.72) < 0.15) & (abs(y - 0.7) < 0.15), 0.55, img)
    return img + 0.05 * np.random.default_rng(seed).standard_normal(img.shape)
