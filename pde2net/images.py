"""Images and arrays in and out without silent loss: PNG (pypng), TIFF (tifffile), ``.npy``.

What is read is kept: the samples become float64 with their VALUES unchanged (an 8-bit image
has values 0..255, a 16-bit one 0..65535, a float TIFF its own floats) and the stored type,
bit depth and channels are remembered, so that :func:`describe` can state the range and
:func:`write_picture` can write the result back in the same form.  Pillow is not used for PNG:
it reads a 16-bit RGB PNG as 8-bit.

Layout follows the language reference: channels first, ``(C, H, W)``, x the last axis; a grey
image is ``(H, W)``.  Writing integers (PNG, integer TIFF) rounds to the nearest integer and
clips to the type's range; every such change is reported in the returned text, never silent.
Floats are written to TIFF and ``.npy`` as they are (lossless).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import PdeError

PNG_SUFFIXES = (".png",)
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = PNG_SUFFIXES + TIFF_SUFFIXES
MODES = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}
MAX_IMAGE_BYTES = 1 << 30


@dataclass(frozen=True)
class Picture:
    """An image as read: float64 samples ``(H, W)`` or ``(C, H, W)``, and how they were stored."""

    data: np.ndarray
    sample: str  # numpy dtype name of the stored samples: uint8, uint16, float32, ...
    bits: int  # bits per sample (1, 2, 4, 8, 16, 32, 64)
    fmt: str  # "PNG" or "TIFF"

    @property
    def channels(self) -> int:
        return 1 if self.data.ndim == 2 else self.data.shape[0]

    @property
    def mode(self) -> str:
        return MODES.get(self.channels, f"{self.channels}-channel")

    @property
    def integer(self) -> bool:
        return not self.sample.startswith("float")

    def value_range(self) -> tuple[float, float]:
        """The type's range for integers (``0 .. 2^bits - 1``), the data's own for floats."""
        if self.integer:
            info = np.iinfo(self.sample)
            return (float(info.min), float(min(info.max, 2 ** self.bits - 1)))
        return (float(np.min(self.data)), float(np.max(self.data)))


def describe(p: Picture) -> str:
    """One line: format, depth, channels, size and the range kept, e.g. ``16-bit RGB PNG ...``."""
    h, w = p.data.shape[-2:]
    lo, hi = p.value_range()
    kind = f"{p.bits}-bit" if p.integer else p.sample
    return (f"{kind} {p.mode} {p.fmt}, {w} x {h}, values {lo:g}..{hi:g} kept as they are "
            f"(not rescaled)")


def _check_regular(path: str) -> None:
    """Refuses what is not a regular file (a FIFO would block, /dev/zero never ends)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PdeError(f"cannot read {path}: {exc.strerror}", None, None, "an existing image file") from None
    if not stat.S_ISREG(st.st_mode):
        raise PdeError(f"{path} is not a regular file", None, None, "a PNG or TIFF file")
    if st.st_size > MAX_IMAGE_BYTES:
        raise PdeError(f"{path} is {st.st_size} bytes, more than the limit of {MAX_IMAGE_BYTES}",
                       None, None, "a smaller image")


def read_picture(path: str) -> Picture:
    """Reads a PNG or TIFF image losslessly (see the module docstring)."""
    suffix = Path(path).suffix.lower()
    _check_regular(path)
    if suffix in PNG_SUFFIXES:
        return _read_png(path)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path)
    raise PdeError(f"{path}: unknown image format {suffix or '(no suffix)'}", None, None,
                   "a .png, .tif/.tiff or .npy file")


def _channels_first(a: np.ndarray) -> np.ndarray:
    """``(H, W, C) -> (C, H, W)``; ``(H, W)`` and ``(H, W, 1)`` -> ``(H, W)``."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return np.moveaxis(a, -1, 0) if a.ndim == 3 else a


def _read_png(path: str) -> Picture:
    try:
        import png
    except ImportError:
        raise PdeError("reading PNG needs pypng", None, None, "pip install 'pde2net[images]'") from None
    try:
        width, height, rows, info = png.Reader(filename=path).asDirect()
        planes, bits = info["planes"], info["bitdepth"]
        flat = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    except (png.Error, ValueError, OSError) as exc:
        raise PdeError(f"{path} is not a readable PNG ({exc})", None, None, "a PNG file") from None
    samples = flat.reshape(height, width, planes)
    sample = "uint8" if bits <= 8 else "uint16"
    return Picture(_channels_first(samples.astype(np.float64)), sample, bits, "PNG")


def _read_tiff(path: str) -> Picture:
    try:
        import tifffile
    except ImportError:
        raise PdeError("reading TIFF needs tifffile", None, None, "pip install 'pde2net[images]'") from None
    try:
        with tifffile.TiffFile(path) as tf:
            a = tf.asarray()
            page = tf.pages[0]
            photometric = getattr(page.photometric, "name", str(page.photometric))
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds for a bad file
        raise PdeError(f"{path} is not a readable TIFF ({type(exc).__name__}: {exc})", None, None,
                       "a TIFF file") from None
    if a.ndim == 3 and photometric not in ("RGB", "MINISBLACK") or a.ndim > 3 or a.ndim < 2:
        raise PdeError(f"{path}: a TIFF of shape {a.shape} ({photometric}) is not a single image",
                       None, None, "a grey (H, W) or colour (H, W, C) TIFF; volumes as .npy")
    if a.ndim == 3 and photometric == "MINISBLACK" and a.shape[-1] not in (1, 2, 3, 4):
        raise PdeError(f"{path}: a TIFF stack of {a.shape[0]} pages is not a single image", None, None,
                       "one image per file; volumes as .npy (D, H, W)")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise PdeError(f"{path}: TIFF samples of type {a.dtype} are not supported", None, None,
                       "integer or floating-point samples")
    bits = a.dtype.itemsize * 8
    return Picture(_channels_first(a.astype(np.float64)), a.dtype.name, bits, "TIFF")


def write_picture(path: str, data: np.ndarray, like: Optional[Picture] = None) -> str:
    """Writes ``data`` (``(H, W)`` or ``(C, H, W)``) as PNG or TIFF; returns what was written,
    including any rounding or clipping, in words.

    PNG keeps ``like``'s bit depth (8 or 16; 16 without ``like``).  TIFF keeps ``like``'s sample
    type, floats as they are (float32 unless the data is float64 without ``like``).
    """
    suffix = Path(path).suffix.lower()
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] not in (1, 2, 3, 4) or data.ndim not in (2, 3):
        raise PdeError(f"cannot write an array of shape {data.shape} as an image ({path})", None, None,
                       "(H, W) or (C, H, W) with C = 1..4; other shapes as .npy")
    if suffix in PNG_SUFFIXES:
        bits = like.bits if like is not None and like.integer and like.bits in (8, 16) else 16
        return _write_png(path, data, 8 if bits <= 8 else 16)
    if suffix in TIFF_SUFFIXES:
        sample = like.sample if like is not None else (
            "float64" if data.dtype == np.float64 else "float32")
        return _write_tiff(path, data, np.dtype(sample))
    raise PdeError(f"{path}: cannot write images of type {suffix or '(no suffix)'}", None, None,
                   "a .png, .tif/.tiff or .npy output path")


def quantise(data: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, str]:
    """Round to the nearest integer and clip to the type's range; a note on what changed."""
    info = np.iinfo(dtype)
    x = np.asarray(data, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        raise PdeError(f"the result has {int((~finite).sum())} non-finite values: cannot write it as "
                       f"{dtype.name} samples", None, None, "a finite result, or a .npy output")
    rounded = np.rint(x)
    clipped = int(((rounded < info.min) | (rounded > info.max)).sum())
    out = np.clip(rounded, info.min, info.max).astype(dtype)
    err = float(np.max(np.abs(out - x))) if x.size else 0.0
    notes = []
    if err > 0:
        notes.append(f"rounded to {dtype.name} (largest change {err:.3g})")
    if clipped:
        notes.append(f"{clipped} values clipped to {info.min}..{info.max}")
    return out, "; ".join(notes)


def _write_png(path: str, data: np.ndarray, bits: int) -> str:
    try:
        import png
    except ImportError:
        raise PdeError("writing PNG needs pypng", None, None, "pip install 'pde2net[images]'") from None
    samples, note = quantise(data, np.dtype(np.uint8 if bits == 8 else np.uint16))
    hwc = samples if samples.ndim == 2 else np.moveaxis(samples, 0, -1)
    planes = 1 if hwc.ndim == 2 else hwc.shape[-1]
    h, w = hwc.shape[:2]
    writer = png.Writer(w, h, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=bits)
    with open(path, "wb") as fh:
        writer.write(fh, hwc.reshape(h, w * planes))
    return f"{bits}-bit {MODES[planes]} PNG" + (f" ({note})" if note else " (lossless)")


def _write_tiff(path: str, data: np.ndarray, dtype: np.dtype) -> str:
    import tifffile

    if np.issubdtype(dtype, np.integer):
        samples, note = quantise(data, dtype)
    else:
        samples = np.asarray(data).astype(dtype)
        back = samples.astype(np.float64)
        note = "" if np.array_equal(back, np.asarray(data, dtype=np.float64)) else f"stored as {dtype.name}"
    hwc = samples if samples.ndim == 2 else np.moveaxis(samples, 0, -1)
    photometric = "rgb" if hwc.ndim == 3 and hwc.shape[-1] in (3, 4) else "minisblack"
    extra = {"extrasamples": ["unassalpha"]} if hwc.ndim == 3 and hwc.shape[-1] == 4 else {}
    tifffile.imwrite(path, hwc, photometric=photometric, **extra)
    planes = 1 if hwc.ndim == 2 else hwc.shape[-1]
    return f"{dtype.name} {MODES[planes]} TIFF" + (f" ({note})" if note else " (lossless)")


# ------------------------------------------------------------------------------ array layouts
#: the space letters of a field of each dimension (x is always the last axis)
SPACE_LETTERS = {1: "N", 2: "HW", 3: "DHW"}


def _layout_candidates(ndim: int, space: str) -> list[str]:
    """Every layout of ``ndim`` letters: optional B, optional C (before or after the space axes)."""
    out = []
    for batch in ("", "B"):
        for chan_first in (True, False):
            for chan in ("", "C"):
                lay = batch + (chan + space if chan_first else space + chan)
                if len(lay) == ndim and lay not in out:
                    out.append(lay)
    return out


def _fits(shape: tuple[int, ...], layout: str) -> bool:
    return all(n in (1, 2, 3, 4) for n, ch in zip(shape, layout) if ch == "C")


def arrange(a: np.ndarray, layout: Optional[str], ndim: int, source: str = "the input"
            ) -> tuple[np.ndarray, str]:
    """``a`` as ``(B, C, *space)`` and the layout read (``BHW``, ``HWC``, ``N``, ...).

    Without ``layout`` the layout is inferred only when every layout that fits puts the space
    axes in the same place: ``(32, 32, 3)`` for a 2D field is either 32 images of 32 x 3 or one
    RGB image, so it is refused with the choices.  A batch axis and a channel axis in the same
    place (``(3, 64, 64)``: BHW or CHW) run the same way for a scalar field, as a batch.
    """
    space = SPACE_LETTERS[ndim]
    if layout is not None:
        layout = layout.upper()
        if sorted(layout) != sorted(set(layout)) or set(layout) - set("BC" + space) or \
                not set(space) <= set(layout) or len(layout) != a.ndim:
            raise PdeError(f"layout '{layout}' does not describe {source} of shape {a.shape}", None, None,
                           f"{a.ndim} letters from B (batch), C (channels) and {space}, e.g. "
                           f"{', '.join(_layout_candidates(a.ndim, space)) or 'B' + space}")
        chosen = layout
    else:
        fits = [lay for lay in _layout_candidates(a.ndim, space) if _fits(a.shape, lay)]
        if not fits:
            raise PdeError(f"{source} has shape {a.shape}, which is not a {ndim}D field", None, None,
                           f"a layout among {', '.join(_layout_candidates(ndim, space) + _layout_candidates(ndim + 1, space))}")
        spots = {tuple(i for i, ch in enumerate(lay) if ch in space) for lay in fits}
        if len(spots) > 1:
            raise PdeError(f"the layout of {source} (shape {a.shape}) is ambiguous: it could be "
                           f"{' or '.join(fits)}", None, None, f"--layout {fits[0]} or --layout {fits[-1]}")
        chosen = min(fits, key=lambda lay: ("C" in lay, lay))  # a batch reading before a channel one
    order = [chosen.index(ch) for ch in ("B" + "C" + space) if ch in chosen]
    out = np.transpose(a, order)
    if "B" not in chosen:
        out = out[None]
    if "C" not in chosen:
        out = out[:, None]
    return out, chosen
