"""Images and arrays without silent loss (pde2net.images): lossless round trips of 16-bit RGB PNG
and float TIFF, the value range kept, every rounding reported, ambiguous array layouts refused.

References: the arrays written here with the libraries directly (pypng, tifffile), compared
sample for sample.
"""
from __future__ import annotations

import numpy as np
import pytest

import pde2net
from pde2net.images import arrange, describe, read_picture, write_picture

png = pytest.importorskip("png")
tifffile = pytest.importorskip("tifffile")

RNG = np.random.default_rng(7)


def _write_png(path, hwc: np.ndarray, bits: int) -> None:
    h, w = hwc.shape[:2]
    planes = 1 if hwc.ndim == 2 else hwc.shape[-1]
    png.Writer(w, h, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=bits).write(
        open(path, "wb"), hwc.reshape(h, w * planes))


@pytest.mark.parametrize("planes,bits", [(3, 16), (1, 16), (1, 8), (4, 8), (2, 16), (4, 16)])
def test_png_round_trip_is_lossless(tmp_path, planes, bits):
    shape = (9, 13) if planes == 1 else (9, 13, planes)
    src = RNG.integers(0, 2 ** bits, size=shape, dtype=np.uint16 if bits == 16 else np.uint8)
    _write_png(tmp_path / "in.png", src, bits)
    pic = read_picture(str(tmp_path / "in.png"))
    chw = src if planes == 1 else np.moveaxis(src, -1, 0)
    assert pic.bits == bits and np.array_equal(pic.data, chw.astype(np.float64))
    assert f"{bits}-bit" in describe(pic) and f"values 0..{2 ** bits - 1:g}" in describe(pic)
    note = write_picture(str(tmp_path / "out.png"), pic.data, like=pic)
    assert note.endswith("(lossless)")
    back = png.Reader(filename=str(tmp_path / "out.png")).asDirect()
    assert back[3]["bitdepth"] == bits and back[3]["planes"] == planes
    assert np.array_equal(np.vstack([np.asarray(r) for r in back[2]]).reshape(src.shape), src)


def test_one_bit_png_reads_zero_and_one(tmp_path):
    src = RNG.integers(0, 2, size=(5, 16), dtype=np.uint8)
    _write_png(tmp_path / "b.png", src, 1)
    pic = read_picture(str(tmp_path / "b.png"))
    assert pic.bits == 1 and np.array_equal(pic.data, src) and pic.value_range() == (0.0, 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.uint8])
@pytest.mark.parametrize("colour", [False, True])
def test_tiff_round_trip_is_lossless(tmp_path, dtype, colour):
    shape = (7, 11, 3) if colour else (7, 11)
    if np.issubdtype(dtype, np.floating):
        src = RNG.random(shape).astype(dtype)  # values in [0, 1]: once read as all zeros
    else:
        src = RNG.integers(0, np.iinfo(dtype).max, size=shape).astype(dtype)
    tifffile.imwrite(tmp_path / "in.tif", src, photometric="rgb" if colour else "minisblack")
    pic = read_picture(str(tmp_path / "in.tif"))
    chw = np.moveaxis(src, -1, 0) if colour else src
    assert np.array_equal(pic.data, chw.astype(np.float64)) and pic.sample == np.dtype(dtype).name
    assert write_picture(str(tmp_path / "out.tif"), pic.data, like=pic).endswith("(lossless)")
    back = tifffile.imread(tmp_path / "out.tif")
    assert back.dtype == dtype and np.array_equal(back, src)


def test_writing_floats_to_png_reports_rounding_and_clipping(tmp_path):
    data = np.array([[0.2, 254.6, 300.0], [-4.0, 10.0, 11.0]])
    note = write_picture(str(tmp_path / "o.png"), data,
                         like=read_picture(_grey8(tmp_path / "like.png")))
    assert "rounded to uint8 (largest change 45)" in note and "2 values clipped to 0..255" in note
    back = np.vstack([np.asarray(r) for r in png.Reader(filename=str(tmp_path / "o.png")).asDirect()[2]])
    assert np.array_equal(back, np.clip(np.rint(data), 0, 255))


def _grey8(path) -> str:
    _write_png(path, np.zeros((2, 3), dtype=np.uint8), 8)
    return str(path)


def test_non_finite_results_are_not_written_as_integers(tmp_path):
    with pytest.raises(pde2net.PdeError, match="non-finite"):
        write_picture(str(tmp_path / "o.png"), np.array([[1.0, np.nan]]))


@pytest.mark.parametrize("make,match", [
    (lambda p: p.write_text("not an image"), "not a readable PNG"),
    (lambda p: None, "cannot read"),
])
def test_bad_files_are_clear_errors(tmp_path, make, match):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(pde2net.PdeError, match=match):
        read_picture(str(path))


def test_special_files_are_refused():
    with pytest.raises(pde2net.PdeError, match="not a regular file"):
        read_picture("/dev/null")


@pytest.mark.parametrize("shape,layout,ndim,out,read", [
    ((64, 64), None, 2, (1, 1, 64, 64), "HW"),
    ((3, 64, 64), None, 2, (3, 1, 64, 64), "BHW"),  # batch and channel readings run alike
    ((32, 32, 3), "HWC", 2, (1, 3, 32, 32), "HWC"),
    ((2, 8, 8, 3), None, 2, (2, 3, 8, 8), "BHWC"),
    ((2, 3, 8, 8), None, 2, (2, 3, 8, 8), "BCHW"),
    ((4, 6), None, 1, (4, 1, 6), "BN"),
    ((5, 6, 7), None, 3, (1, 1, 5, 6, 7), "DHW"),
])
def test_layouts(shape, layout, ndim, out, read):
    a = RNG.random(shape)
    got, used = arrange(a, layout, ndim)
    assert got.shape == out and used == read
    # the same samples, moved: (B, C, ...) back to the file's axis order
    axes = [ch for ch in "BC" + {1: "N", 2: "HW", 3: "DHW"}[ndim] if ch in read]
    squeezed = got.reshape([got.shape["BC".index(c)] if c in "BC" else n
                            for c, n in zip("BC", got.shape[:2]) if c in read] + list(got.shape[2:]))
    assert np.array_equal(np.transpose(squeezed, np.argsort([read.index(c) for c in axes])), a)


@pytest.mark.parametrize("shape,layout,match", [
    ((32, 32, 3), None, "ambiguous: it could be HWC or BHW"),
    ((32, 32, 3), "HWX", "does not describe"),
    ((32, 32), "BHW", "does not describe"),
    ((2, 2, 2, 2, 2), None, "not a 2D field"),
])
def test_ambiguous_or_wrong_layouts_are_refused(shape, layout, match):
    with pytest.raises(pde2net.PdeError, match=match):
        arrange(np.zeros(shape), layout, 2)
