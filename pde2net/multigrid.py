"""Multigrid V-cycles for ``A u = f``, ``A = I + tau c D^T D`` (docs/theory.md §7), written once for NumPy
and torch.

The functions below touch arrays only through slicing, arithmetic and the small adapter ``ops``
(:class:`NumpyOps` here, ``TorchOps`` in :mod:`pde2net.layers` and in generated source), so the
stability report (NumPy, no torch), the live module and the emitted source run the same algorithm.
Rows are ``(B, n)``.

- Transfers, chosen by the grid: vertex-centred on ``n = 2^k + 1`` (full weighting
  ``R = [1/4, 1/2, 1/4]``, stride 2, zero padding; coarse nodes are the even fine nodes) and
  cell-centred on ``n = 2^k`` (``R = [1, 3, 3, 1] / 8``, stride 2, replicate padding, or circular
  for a periodic boundary).  Prolongation is ``P = 2 R^T`` (a transposed strided convolution).
- Level operators are banded: ``A[i, i + d - b] = bands[d, i]`` (indices mod n when periodic), a
  locally varying convolution whose interior is the Galerkin kernel.  The fine bands and every
  Galerkin ``R A P`` are read off by probing with comb vectors (period q >= 2b + 1, so each
  output entry sees exactly one column of the band): exact up to the float64 round-off of the
  composed convolutions.
- Smoother: damped Jacobi ``x <- x + omega (f - A x) / diag(A)``; coarsest level: exact inverse.
  ``diag(A)`` is the probed main band, the true diagonal also on a periodic grid shorter than the
  band (there the other diagonals that alias a column keep it once, see :func:`probe_bands`).
"""
from __future__ import annotations

from typing import Any, Callable


def _np():
    """NumPy, imported on first use (``pde2net check`` of a non-multigrid spec never needs it)."""
    import numpy

    return numpy


class NumpyOps:
    """The array primitives the multigrid code needs, for NumPy (float64 on the CPU)."""

    @staticmethod
    def cat(parts):
        return _np().concatenate(parts, axis=-1)

    @staticmethod
    def zeros(like, width):
        return _np().zeros(like.shape[:-1] + (width,), dtype=like.dtype)

    @staticmethod
    def arange(n, like):
        return _np().arange(n)

    @staticmethod
    def as_float(mask, like):
        return mask.astype(like.dtype)

    @staticmethod
    def eye(n, like):
        return _np().eye(n, dtype=like.dtype)

    @staticmethod
    def inv(a):
        return _np().linalg.inv(a)


def transfer_kind(n: int, periodic: bool) -> str:
    """``cell`` for n = 2^k, ``vertex`` for n = 2^k + 1 (not periodic); ValueError otherwise."""
    if n >= 1 and n & (n - 1) == 0:
        return "cell"
    if not periodic and n >= 3 and (n - 1) & (n - 2) == 0:
        return "vertex"
    want = "N = 2^k (cell-centred, circular)" if periodic else \
        "N = 2^k + 1 (vertex-centred) or N = 2^k (cell-centred)"
    raise ValueError(f"multigrid transfers need {want} grid points; got N = {n}")


def pad_ends(x, width: int, mode: str, ops):
    """Pads the last axis by ``width`` on both sides: zeros, replicate or circular."""
    if width == 0:
        return x
    if mode == "circular":
        return ops.cat([x[..., x.shape[-1] - width:], x, x[..., :width]])
    if mode == "replicate":
        return ops.cat([x[..., :1]] * width + [x] + [x[..., -1:]] * width)
    return ops.cat([ops.zeros(x, width), x, ops.zeros(x, width)])


def restrict(f, kind: str, mode: str, ops):
    """``R f``: a stride-2 convolution with [1/4, 1/2, 1/4] (vertex) or [1, 3, 3, 1]/8 (cell)."""
    if kind == "vertex":
        nc = (f.shape[-1] + 1) // 2
        fp = pad_ends(f, 1, "zeros", ops)
        return 0.25 * fp[..., 0:2 * nc:2] + 0.5 * fp[..., 1:2 * nc + 1:2] + 0.25 * fp[..., 2:2 * nc + 2:2]
    nc = f.shape[-1] // 2
    fp = pad_ends(f, 1, mode, ops)
    return (0.125 * fp[..., 0:2 * nc:2] + 0.375 * fp[..., 1:2 * nc + 1:2]
            + 0.375 * fp[..., 2:2 * nc + 2:2] + 0.125 * fp[..., 3:2 * nc + 3:2])


def prolong(e, kind: str, mode: str, ops):
    """``P e = 2 R^T e``: a stride-2 transposed convolution (linear interpolation)."""
    nc = e.shape[-1]
    if kind == "vertex":
        out = ops.zeros(e, 2 * nc - 1)
        out[..., 0::2] = e
        out[..., 1::2] = 0.5 * e[..., :-1] + 0.5 * e[..., 1:]
        return out
    ep = pad_ends(e, 1, mode, ops)
    out = ops.zeros(e, 2 * nc)
    out[..., 0::2] = 0.75 * ep[..., 1:nc + 1] + 0.25 * ep[..., 0:nc]
    out[..., 1::2] = 0.75 * ep[..., 1:nc + 1] + 0.25 * ep[..., 2:nc + 2]
    return out


def band_apply(bands, x, mode: str, ops):
    """``A x`` with ``A[i, i + d - b] = bands[d, i]`` (zero or circular extension of x)."""
    b = (bands.shape[0] - 1) // 2
    n = x.shape[-1]
    xp = pad_ends(x, b, "circular" if mode == "circular" else "zeros", ops)
    acc = bands[0] * xp[..., 0:n]
    for d in range(1, 2 * b + 1):
        acc = acc + bands[d] * xp[..., d:d + n]
    return acc


def probe_bands(apply: "Callable", n: int, b: int, periodic: bool, ops, like):
    """The bands of the linear map ``apply`` (half-bandwidth b) from one batch of comb vectors."""
    q = 1
    while q < 2 * b + 1:
        q *= 2
    q = min(q, n)
    idx = ops.arange(n, like)
    combs = ops.as_float((idx[None, :] % q) == ops.arange(q, like)[:, None], like)
    y = apply(combs)
    rows = []
    for d in range(2 * b + 1):
        j = idx + (d - b)
        if periodic:
            # n < 2b + 1: diagonals d, e with (d - e) mod n = 0 land on one column, and each probed
            # entry is the whole column's: only the one nearest the main diagonal (then the lower)
            # keeps it, so band_apply counts every column once (inline: the source copies this)
            nearest = min((abs(e - b), e) for e in range(2 * b + 1) if (e - d) % n == 0)[1]
            valid = ops.as_float(j == j, like) * float(nearest == d)
        else:
            valid = ops.as_float((j >= 0) & (j < n), like)
        col = (j % n) % q
        rows.append((y[col, idx] * valid)[None, :])
    return ops.cat([r.T for r in rows]).T


def coarse_width(b: int, kind: str) -> int:
    """Half-bandwidth of ``R A P`` for A of half-bandwidth b."""
    return (b + (2 if kind == "vertex" else 3)) // 2


def max_levels(n: int, b: int, periodic: bool) -> int:
    """How many grids (the fine one included) the transfers allow for n points."""
    kind, levels = transfer_kind(n, periodic), 1
    while True:
        if kind == "vertex" and n <= 3 or kind == "cell" and n <= 2:
            return levels
        nc = (n + 1) // 2 if kind == "vertex" else n // 2
        bc = coarse_width(b, kind)
        if periodic and nc < 2 * bc + 1:
            return levels
        n, b, levels = nc, bc, levels + 1


def build_hierarchy(apply_fine: "Callable", n: int, b: int, periodic: bool, levels: int, ops, like
                    ) -> "list[dict[str, Any]]":
    """The grids: for each level its size, bands, diagonal and transfers; the last also its inverse.

    ``levels = 0`` takes as many as the grid allows; more than that is a ValueError.
    """
    most = max_levels(n, b, periodic)
    if levels > most:
        raise ValueError(f"multigrid with {levels} levels needs a finer grid; N = {n} allows at most {most}")
    count = most if levels == 0 else levels
    kind = transfer_kind(n, periodic)
    mode = "circular" if periodic else "replicate"
    out: list[dict[str, Any]] = []
    apply = apply_fine
    for level in range(count):
        bands = probe_bands(apply, n, b, periodic, ops, like)
        out.append({"n": n, "b": b, "bands": bands, "diag": bands[b], "kind": kind, "mode": mode})
        if level + 1 == count:
            break
        fine = out[-1]

        def apply(x, fine=fine):  # the Galerkin operator R A P, composed from convolutions
            return restrict(band_apply(fine["bands"], prolong(x, fine["kind"], fine["mode"], ops),
                                       "circular" if periodic else "zeros", ops),
                            fine["kind"], fine["mode"], ops)

        b = coarse_width(b, kind)
        n = (n + 1) // 2 if kind == "vertex" else n // 2
    last = out[-1]
    dense = band_apply(last["bands"], ops.eye(last["n"], like), "circular" if periodic else "zeros", ops).T
    last["inverse"] = ops.inv(dense)
    return out


def vcycle(levels: list, level: int, x, f, pre: int, post: int, omega: float, periodic: bool, ops):
    """One V(pre, post)-cycle for ``A_level x = f`` from x: smooth, restrict the residual, solve
    the coarse correction recursively, prolong it back (the skip carries x), smooth."""
    lv = levels[level]
    mode = "circular" if periodic else "zeros"
    if level + 1 == len(levels):
        return f @ lv["inverse"].T
    for _ in range(pre):
        x = x + omega * (f - band_apply(lv["bands"], x, mode, ops)) / lv["diag"]
    r = f - band_apply(lv["bands"], x, mode, ops)
    # an adapter may realise the transfers as strided (transposed) convolutions
    down, up = getattr(ops, "restrict", restrict), getattr(ops, "prolong", prolong)
    rc = down(r, lv["kind"], lv["mode"], ops)
    ec = vcycle(levels, level + 1, ops.zeros(rc, rc.shape[-1]), rc, pre, post, omega, periodic, ops)
    x = x + up(ec, lv["kind"], lv["mode"], ops)
    for _ in range(post):
        x = x + omega * (f - band_apply(lv["bands"], x, mode, ops)) / lv["diag"]
    return x


def convergence_factor(apply_fine: "Callable", n: int, b: int, periodic: bool, levels: int, pre: int,
                       post: int, omega: float, iterations: int = 40, seed: int = 0) -> float:
    """The asymptotic error reduction per V-cycle (power iteration on the error, f = 0), NumPy."""
    np = _np()
    like = np.zeros((1, n))
    hier = build_hierarchy(apply_fine, n, b, periodic, levels, NumpyOps, like)
    e = np.random.default_rng(seed).standard_normal((1, n))
    zero = np.zeros((1, n))
    rate = 0.0
    for _ in range(iterations):
        e0 = float(np.linalg.norm(e))
        if e0 == 0.0 or not np.isfinite(e0):
            break
        e = e / e0
        e = vcycle(hier, 0, e, zero, pre, post, omega, periodic, NumpyOps)
        rate = float(np.linalg.norm(e))
    return rate
