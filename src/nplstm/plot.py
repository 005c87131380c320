"""Figures of what an LSTM does over time (matplotlib, an optional extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["plot_trace", "PANELS"]

PANELS = (
    ("x", "input x"),
    ("h", "hidden state h"),
    ("c", "cell state c"),
    ("f", "forget gate f"),
    ("i", "input gate i"),
    ("g", "candidate g"),
    ("o", "output gate o"),
)


def plot_trace(
    x: np.ndarray,
    trace: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    title: str = "nplstm",
    width_px: int = 1000,
    height_px: int = 1200,
    dpi: int = 100,
) -> Path:
    """Draw inputs, h, c and the four gates of one sequence as heatmaps over time.

    ``x`` is (T, I); ``trace`` maps "h", "c", "f", "i", "g", "o" to (T, ·)
    arrays, as :meth:`nplstm.LSTM.trace` returns for one sequence.  Each
    heatmap has time across and the unit (or input feature) index down.

    Returns
    -------
    Path
        ``path`` itself: the PNG (``width_px`` × ``height_px``) is written
        there whatever its suffix, never to a name with ``.png`` appended.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = {"x": np.asarray(x).reshape(len(x), -1), **{k: np.asarray(v).reshape(len(v), -1) for k, v in trace.items()}}
    fig, axes = plt.subplots(
        len(PANELS), 1, figsize=(width_px / dpi, height_px / dpi), dpi=dpi, sharex=True, layout="constrained"
    )
    for ax, (key, label) in zip(axes, PANELS):
        values = data[key].T  # units down, time across
        if key == "x" and values.shape[0] <= 8:  # a few input features read better as lines
            for k, row in enumerate(values):
                ax.plot(row, lw=1, label=f"x[{k}]")
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
            ax.legend(fontsize=6, loc="upper right")
            continue
        if key in ("f", "i", "o"):
            kwargs = {"vmin": 0.0, "vmax": 1.0, "cmap": "viridis"}
        else:
            finite = np.abs(values[np.isfinite(values)])  # NaN/inf (run with --allow-nonfinite) must not set the scale
            bound = float(finite.max()) if finite.size else 1.0
            kwargs = {"vmin": -bound or -1.0, "vmax": bound or 1.0, "cmap": "RdBu_r"}
        image = ax.imshow(values, aspect="auto", interpolation="nearest", **kwargs)
        index = "feature" if key == "x" else "unit"
        ax.set_ylabel(f"{label}\n({index} index)", rotation=0, ha="right", va="center", fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01)
    axes[0].set_title(title)
    axes[-1].set_xlabel("time step")
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return Path(path)
