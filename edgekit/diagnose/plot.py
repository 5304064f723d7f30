"""The report's picture: SQNR along the depth of the network, per file, the worst layers marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.core.figures import pyplot, save_png

MARKED = 3  # the worst layers, labelled


def depth_plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    """Own SQNR (ONNX) and accumulated SQNR (each format) by depth, with the worst `MARKED` layers (the first
    rows, which are ranked worst first) circled and named. Written to `path` whole or not at all."""
    plt = pyplot()
    ordered = sorted(rows, key=lambda row: row["depth"])
    fig, ax = plt.subplots(figsize=(10, 5), dpi=120)
    series = [("onnx", "alone", "own error (ONNX)")] + [
        (fmt, "accumulated", f"accumulated ({fmt})") for fmt in ("onnx", "tflite")]
    for fmt, kind, label in series:
        points = [(row["depth"], row[fmt][kind]["channel_sqnr_db"]) for row in ordered
                  if row.get(fmt) and row[fmt].get(kind) and row[fmt][kind]["channel_sqnr_db"] is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, linewidth=1.2,
                    label=label)
    for row in rows[:MARKED]:
        if row["score_db"] is None:
            continue
        ax.scatter([row["depth"]], [row["score_db"]], s=160, facecolors="none", edgecolors="red", linewidths=1.5,
                   zorder=3)
        ax.annotate(row["layer"], (row["depth"], row["score_db"]), textcoords="offset points", xytext=(6, -12),
                    fontsize=8, color="red")
    ax.set_xlabel("layer (in the file's order)")
    ax.set_ylabel("SQNR, dB (median over channels; higher is better)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
