"""``pde2net run --plot FILE``: a picture of the evolution (matplotlib, the optional ``plot`` extra).

1D: the space-time image u(x, t) (time downwards) beside the signal at a few times.
2D: the input and the output image side by side.  Uses the non-interactive Agg backend, so it
works without a display.  Imports matplotlib only when called.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import PdeError, Source


def _pyplot(path: str):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PdeError("--plot needs matplotlib", None, Source("", path),
                       "pip install 'pde2net[plot]'") from None
    return plt


def plot_evolution(path: str, times: Sequence[float], states: Sequence[np.ndarray], ndim: int,
                   title: str = "") -> None:
    """Writes the figure; ``states[k]`` is the (first) signal or image at time ``times[k]``."""
    plt = _pyplot(path)
    if ndim == 1:
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
        st = np.stack([np.asarray(s, dtype=float) for s in states])
        im = ax0.imshow(st, aspect="auto", cmap="viridis", interpolation="nearest",
                        extent=(-0.5, st.shape[1] - 0.5, times[-1], times[0]))
        ax0.set_xlabel("x (grid index)")
        ax0.set_ylabel("t")
        ax0.set_title("space-time u(x, t)")
        fig.colorbar(im, ax=ax0)
        picks = sorted(set(np.linspace(0, len(states) - 1, min(5, len(states))).round().astype(int)))
        for k in picks:
            ax1.plot(st[k], label=f"t = {times[k]:.4g}", lw=1.2 if k else 0.8)
        ax1.set_xlabel("x (grid index)")
        ax1.set_title("u at a few times")
        ax1.legend(fontsize=8)
    else:
        first, last = np.asarray(states[0], dtype=float), np.asarray(states[-1], dtype=float)
        lo, hi = float(min(first.min(), last.min())), float(max(first.max(), last.max()))
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
        for ax, img, name in zip(axes, (first, last), (f"input (t = {times[0]:.4g})",
                                                       f"output (t = {times[-1]:.4g})")):
            im = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(name)
            ax.set_axis_off()
        fig.colorbar(im, ax=list(axes), shrink=0.8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
