"""Figures for ``dreamfix experiment``. Each function writes one PNG and returns its path.

Figures are drawn on a bare ``Figure`` with the Agg canvas (imported inside the functions), never through
pyplot: no global state, so the service's threads and headless hosts can plot, and importing this module
does not need matplotlib (the ``experiments`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ANNOTATE_MAX_CELLS = 144  # annotate heatmap cells up to 12 x 12; beyond that the numbers are unreadable


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", bbox_inches="tight")  # keep a legend placed outside the axes
    return out


def heatmap(
    matrix: Sequence[Sequence[float]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    title: str,
    cbar_label: str,
) -> Path:
    """A labelled matrix (e.g. the R matrix: rows = after night i, columns = task j), values in small cells."""
    rows = [[float(v) for v in row] for row in matrix]
    if not rows or len(rows) != len(row_labels):
        raise ValueError(f"matrix has {len(rows)} rows but {len(row_labels)} row labels")
    for i, row in enumerate(rows):
        if len(row) != len(col_labels):
            raise ValueError(f"matrix row {i} has {len(row)} columns but {len(col_labels)} column labels")
    n_rows, n_cols = len(rows), len(col_labels)
    fig = _figure(max(4.0, 1.0 + 0.7 * n_cols), max(3.0, 1.2 + 0.5 * n_rows))
    ax = fig.add_subplot()
    image = ax.imshow(rows, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n_cols), labels=list(col_labels), rotation=45, ha="right")
    ax.set_yticks(range(n_rows), labels=list(row_labels))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=cbar_label)
    if n_rows * n_cols <= ANNOTATE_MAX_CELLS:
        finite = [v for row in rows for v in row if math.isfinite(v)]
        mid = (min(finite) + max(finite)) / 2 if finite else 0.0
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                color = "black" if v > mid else "white"  # viridis: dark low end, light high end
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color=color)
    return _save(fig, path)


def learning_curves(
    curves: Mapping[str, Sequence[Sequence[float]]],
    task_names: Sequence[str],
    path: str | Path,
    title: str,
) -> Path:
    """One subplot per method, one line per task: task j's score after each night i (``R[i][j]``), so
    forgetting shows as a line going down after the night that learned it (marked with a dot)."""
    if not curves:
        raise ValueError("no curves to plot")
    T = len(task_names)
    for method, R in curves.items():
        if len(R) != T or any(len(row) != T for row in R):
            raise ValueError(f"{method}: R must be {T} x {T} to match {T} task names")
    fig = _figure(4.0 * len(curves), 3.6)
    axes = fig.subplots(1, len(curves), sharey=True, squeeze=False)[0]
    nights = list(range(1, T + 1))
    for ax, (method, R) in zip(axes, curves.items(), strict=True):
        for j, task in enumerate(task_names):
            (line,) = ax.plot(nights, [float(R[i][j]) for i in range(T)], marker=".", label=task)
            ax.plot([j + 1], [float(R[j][j])], "o", color=line.get_color(), markersize=7)
        ax.set_title(method)
        ax.set_xlabel("after night (task learned)")
        ax.set_xticks(nights)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score")
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return _save(fig, path)


def tradeoff(
    points: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Cost vs. benefit (e.g. adapter bytes vs. pass rate), log-x because sizes span orders of magnitude.
    Points are numbered on the plot and named in the legend (labels of nearby points would overlap)."""
    if not points:
        raise ValueError("no points to plot")
    xs: list[float] = []
    ys: list[float] = []
    labels: list[str] = []
    for k, p in enumerate(points):
        missing = {"label", "bytes", "score"} - set(p)
        if missing:
            raise ValueError(f"point {k} lacks {sorted(missing)}")
        if not float(p["bytes"]) > 0:
            raise ValueError(f"point {k} ({p['label']}): bytes must be > 0 on a log axis, got {p['bytes']}")
        xs.append(float(p["bytes"]))
        ys.append(float(p["score"]))
        labels.append(str(p["label"]))
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    for n, (x, y, label) in enumerate(zip(xs, ys, labels, strict=True), start=1):
        ax.scatter([x], [y], label=f"{n}: {label}")
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def bars(groups: Mapping[str, Mapping[str, float]], path: str | Path, title: str, ylabel: str) -> Path:
    """Grouped bars: one group per outer key (e.g. family), one bar per inner key (e.g. strategy). Every
    group must name the same series, so a missing number is an error rather than a silently absent bar."""
    if not groups:
        raise ValueError("no groups to plot")
    names = list(groups)
    series = list(groups[names[0]])
    if not series:
        raise ValueError(f"group {names[0]!r} has no values")
    for g in names[1:]:
        if set(groups[g]) != set(series):
            raise ValueError(f"group {g!r} has series {sorted(groups[g])}, expected {sorted(series)}")
    width = 0.8 / len(series)
    fig = _figure(max(5.0, 1.0 + 0.35 * len(names) * len(series)), 4.2)
    ax = fig.add_subplot()
    for k, s in enumerate(series):
        offsets = [g + (k - (len(series) - 1) / 2) * width for g in range(len(names))]
        ax.bar(offsets, [float(groups[g][s]) for g in names], width=width, label=s)
    ax.set_xticks(range(len(names)), labels=names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
