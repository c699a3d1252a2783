"""PNG figures of the sweep report; matplotlib is imported on first use, without pyplot."""

from __future__ import annotations

import math
from pathlib import Path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_heatmap(
    path: str | Path, rows: list[str], cols: list[str], values: list[list[float]], title: str
) -> Path:
    """Rows x columns of accuracies in percent (NaN = not evaluated), each value annotated."""
    fig = _figure(1.6 + 1.1 * len(cols), 1.2 + 0.45 * len(rows))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not math.isnan(v):
                color = "black" if v > 60 else "white"
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(title)
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_eps_curves(
    path: str | Path, curves: dict[str, list[tuple[float, float]]], title: str
) -> Path:
    """Accuracy (percent) against eps, one line per label; points are sorted by eps."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for label, points in sorted(curves.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("eps")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.savefig(path, dpi=120)
    return Path(path)
