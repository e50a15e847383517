"""``pde2net run --plot FILE`` / ``--movie FILE``: pictures of the evolution (matplotlib, the
optional ``plot`` extra; movies also need imageio, the ``movie`` extra).

1D: the space-time image u(x, t) (time downwards), the signal at a few times, and the norm with
the maximum and minimum against time.  2D: frames at several times on one grey scale, the
difference image (output - input), and the norm against time, with the maximum and minimum for
second-order diffusion (m = 1), where the max-min principle can hold (docs/theory.md §1).
Uses the non-interactive Agg backend, so it works without a display.  Imports matplotlib only
when called.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import PdeError, Source

MOVIE_SUFFIXES = (".gif", ".mp4")


def _pyplot(path: str, what: str = "--plot"):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PdeError(f"{what} needs matplotlib", None, Source("", path),
                       "pip install 'pde2net[plot]'") from None
    return plt


def frame_picks(count: int, most: int) -> list[int]:
    """At most ``most`` indices spread evenly over ``range(count)``, first and last included."""
    return sorted(set(np.linspace(0, count - 1, min(most, count)).round().astype(int).tolist()))


def _norm_panel(ax, times: Sequence[float], states: Sequence[np.ndarray], order: int) -> None:
    """||u(t)||_2, and max/min for m = 1, against t."""
    t = np.asarray(times, dtype=float)
    norms = [float(np.linalg.norm(np.asarray(s, dtype=np.float64))) for s in states]
    ax.plot(t, norms, "k-", lw=1.4, label="||u||_2")
    ax.set_xlabel("t")
    ax.set_title("norm" + (", max and min" if order == 1 else "") + " against time")
    if order == 1:
        twin = ax.twinx()
        twin.plot(t, [float(np.max(s)) for s in states], "r--", lw=1, label="max u")
        twin.plot(t, [float(np.min(s)) for s in states], "b--", lw=1, label="min u")
        twin.legend(fontsize=8, loc="lower right")
    ax.legend(fontsize=8, loc="upper right")


def plot_evolution(path: str, times: Sequence[float], states: Sequence[np.ndarray], ndim: int,
                   title: str = "", order: int = 1) -> None:
    """Writes the figure; ``states[k]`` is the (first) signal or image at time ``times[k]``."""
    plt = _pyplot(path)
    st = [np.asarray(s, dtype=float) for s in states]
    if ndim == 1:
        fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(15, 4))
        grid = np.stack(st)
        im = ax0.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest",
                        extent=(-0.5, grid.shape[1] - 0.5, times[-1], times[0]))
        ax0.set_xlabel("x (grid index)")
        ax0.set_ylabel("t")
        ax0.set_title("space-time u(x, t)")
        fig.colorbar(im, ax=ax0)
        for k in frame_picks(len(st), 5):
            ax1.plot(st[k], label=f"t = {times[k]:.4g}", lw=1.2 if k else 0.8)
        ax1.set_xlabel("x (grid index)")
        ax1.set_title("u at a few times")
        ax1.legend(fontsize=8)
        _norm_panel(ax2, times, st, order)
    else:
        picks = frame_picks(len(st), 4)
        lo = float(min(s.min() for s in st))
        hi = float(max(s.max() for s in st))
        fig, axes = plt.subplots(1, len(picks) + 2, figsize=(3.2 * (len(picks) + 2), 3.6),
                                 layout="constrained")
        for ax, k in zip(axes, picks):
            im = ax.imshow(st[k], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(f"t = {times[k]:.4g}")
            ax.set_axis_off()
        fig.colorbar(im, ax=list(axes[:len(picks)]), shrink=0.7)
        diff = st[-1] - st[0]
        r = float(np.max(np.abs(diff))) or 1.0
        dax = axes[len(picks)]
        dim = dax.imshow(diff, cmap="RdBu_r", vmin=-r, vmax=r, interpolation="nearest")
        dax.set_title("output - input")
        dax.set_axis_off()
        fig.colorbar(dim, ax=dax, shrink=0.7)
        _norm_panel(axes[-1], times, st, order)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_movie(path: str, times: Sequence[float], states: Sequence[np.ndarray], ndim: int,
                title: str = "", fps: int = 10) -> int:
    """Writes an animated GIF or an MP4 of the states (imageio; MP4 through imageio-ffmpeg) and
    returns the number of frames.  One grey scale (2D) or one y range (1D) for every frame."""
    suffix = Path(path).suffix.lower()
    if suffix not in MOVIE_SUFFIXES:
        raise PdeError(f"--movie {path}: unknown movie format {suffix or '(none)'}", None, None,
                       "a file name ending in .gif or .mp4")
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise PdeError("--movie needs imageio", None, Source("", path),
                       "pip install 'pde2net[movie]'") from None
    plt = _pyplot(path, "--movie")
    st = [np.asarray(s, dtype=float) for s in states]
    lo, hi = float(min(s.min() for s in st)), float(max(s.max() for s in st))
    frames = [_render_frame(plt, s, t, ndim, lo, hi, title) for s, t in zip(st, times)]
    try:
        if suffix == ".gif":
            imageio.mimwrite(path, frames, duration=1000 / fps, loop=0)
        else:
            imageio.mimwrite(path, frames, fps=fps, macro_block_size=1)
    except (ImportError, ValueError, RuntimeError) as exc:
        raise PdeError(f"--movie {path}: cannot write {suffix} ({exc})", None, None,
                       "pip install 'pde2net[movie]' (imageio, imageio-ffmpeg for .mp4), or a .gif") from None
    return len(frames)


def _render_frame(plt, state: np.ndarray, t: float, ndim: int, lo: float, hi: float,
                  title: str) -> np.ndarray:
    """One frame as an RGB array (H, W, 3) uint8."""
    fig, ax = plt.subplots(figsize=(5, 4), dpi=80)
    if ndim == 1:
        ax.plot(state, lw=1)
        pad = 0.05 * (hi - lo or 1.0)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("x (grid index)")
    else:
        ax.imshow(state, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_axis_off()
    ax.set_title(f"{title + ': ' if title else ''}t = {t:.4g}", fontsize=9)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb
