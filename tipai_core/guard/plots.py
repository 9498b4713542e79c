"""Stage C and TSPO pictures: the reliability diagram and the learning curve, as PNG files.

Drawn with matplotlib's non-interactive Agg canvas. matplotlib belongs to the ``[train]`` extra and is
imported inside the functions, so the runtime (the nodes, the loop) never needs it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..records.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
COLOURS = ("#dc3c28", "#286edc", "#28a046", "#963cb4")


def _figure(width: int, height: int) -> Figure:
    """A figure of ``width`` × ``height`` pixels on the Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # no "Software" entry: the same curves give the same bytes whatever the matplotlib version
    return atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=DPI, metadata={"Software": None}))


def reliability_diagram(curves: dict[str, list[dict]], path: str | Path, size: int = 240) -> Path:
    """Predicted probability (x) against observed win rate (y) per bin, one colour per curve.

    ``curves`` maps a name to a ``fitting.reliability_table``; the grey diagonal is perfect calibration
    and each bin's marker area grows with its count.
    """
    fig = _figure(size, size)
    ax = fig.add_axes((0.16, 0.14, 0.8, 0.8))
    ax.plot([0, 1], [0, 1], color="#aaaaaa", linewidth=0.8)
    total = max(1, max((b["count"] for c in curves.values() for b in c), default=1))
    for i, (name, table) in enumerate(curves.items()):
        pts = [b for b in table if b["mean_p"] is not None]
        xs, ys = [b["mean_p"] for b in pts], [b["frac_win"] for b in pts]
        colour = COLOURS[i % len(COLOURS)]
        ax.plot(xs, ys, color=colour, linewidth=1.0, label=name)
        ax.scatter(
            xs, ys, s=[4 + 40 * math.sqrt(b["count"] / total) for b in pts], color=colour, marker="s", clip_on=False
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted Pr[true win]", fontsize=6)
    ax.set_ylabel("observed win rate", fontsize=6)
    ax.tick_params(labelsize=5)
    if curves:
        ax.legend(fontsize=5, loc="upper left", frameon=False)
    return _save(fig, path)


def learning_curve(curves: dict[str, list[float]], path: str | Path, width: int = 320, height: int = 200) -> Path:
    """One or more series over iterations, each scaled to its own min..max (its range in the legend)."""
    fig = _figure(width, height)
    ax = fig.add_axes((0.1, 0.16, 0.86, 0.78))
    for i, (name, ys) in enumerate(curves.items()):
        if len(ys) < 2:
            continue
        lo, hi = min(ys), max(ys)
        span = hi - lo if hi > lo else 1.0
        ax.plot(
            range(1, len(ys) + 1),
            [(v - lo) / span for v in ys],
            color=COLOURS[i % len(COLOURS)],
            linewidth=1.0,
            label=f"{name} ({lo:.3g}..{hi:.3g})",
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration", fontsize=6)
    ax.set_yticks([])
    ax.tick_params(labelsize=5)
    if ax.lines:
        ax.legend(fontsize=5, loc="best", frameon=False)
    return _save(fig, path)
