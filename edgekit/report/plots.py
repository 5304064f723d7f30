"""Accuracy against latency and against MACs: one curve per family, the Pareto front marked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgekit.core.figures import pyplot, save_png
from edgekit.report.collect import Row


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x, higher y), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def scatter_plot(rows: list[Row], x_of: Callable[[Row], float | None], y_of: Callable[[Row], float | None],
                 x_label: str, y_label: str, title: str, path: Path, log_x: bool = False) -> int:
    """Draw the plot to `path` (whole or not at all); returns how many artifacts it shows."""
    plt = pyplot()
    points = [(row, x_of(row), y_of(row)) for row in rows]
    points = [(row, x, y) for row, x, y in points if x is not None and y is not None]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    families = sorted({row.family for row, _, _ in points})
    for family in families:
        mine = sorted(((x, y * 100, row) for row, x, y in points if row.family == family), key=lambda p: p[:2])
        ax.plot([p[0] for p in mine], [p[1] for p in mine], marker="o", linewidth=1.5, label=family)
        for x, y, row in mine:
            ax.annotate(f"{row.width:g}x/{row.resolution}", (x, y), textcoords="offset points", xytext=(5, -11),
                        fontsize=7, color="0.3")
    front = pareto_front([(x, y) for _, x, y in points])
    if front:
        fx = [points[i][1] for i in front]
        fy = [points[i][2] * 100 for i in front]
        ax.step(fx, fy, where="post", color="black", linestyle="--", linewidth=1, alpha=0.6)
        ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="black", linewidths=1.2, zorder=3,
                   label="Pareto front")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.08, y=0.08)  # room for the point labels at the edges
    if points:
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no artifact has both figures", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    save_png(fig, path)
    return len(points)
