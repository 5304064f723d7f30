"""Matplotlib for edgekit's pictures: the file backend, and a PNG written whole or not at all.

matplotlib is the `report` extra: these import it on first use, so callers check the extra first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.core.files import atomic_file


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path, dpi: int | None = None) -> None:
    """Write `fig` to `path` (an earlier file there stays until the new one is whole) and close it, whatever
    happens."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path, binary=True) as f:
            fig.savefig(f, format="png", **({"dpi": dpi} if dpi else {}))
    finally:
        plt.close(fig)
