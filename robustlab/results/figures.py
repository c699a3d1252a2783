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
    path: str | Path,
    rows: list[str],
    cols: list[str],
    values: list[list[float]],
    title: str,
    spreads: list[list[float | None]] | None = None,
) -> Path:
    """Rows x columns of accuracies in percent (NaN = not evaluated), each value annotated; with
    ``spreads`` (standard deviations over seeds, None where one seed) as ``mean ± sd``."""
    fig = _figure(1.6 + 1.1 * len(cols), 1.2 + 0.45 * len(rows))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not math.isnan(v):
                color = "black" if v > 60 else "white"
                sd = spreads[i][j] if spreads else None
                text = f"{v:.1f}" if sd is None else f"{v:.1f}\n± {sd:.1f}"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(title)
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_eps_curves(
    path: str | Path, curves: dict[str, list[tuple[float, float, float, float]]], title: str
) -> Path:
    """Accuracy (percent) against eps, one line per label; points (eps, value, low, high) are
    sorted by eps, and a band spans low to high where they differ (min and max over seeds)."""
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    for label, points in sorted(curves.items()):
        xs, ys, lows, highs = zip(*sorted(points))
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        if lows != highs:
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("eps")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.savefig(path, dpi=120)
    return Path(path)
