"""The run directory: its files, one trainer at a time, resuming, and metrics.jsonl kept in step with the
checkpoints.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from edgekit.checkpoint import load_checkpoint
from edgekit.core.errors import EdgekitError
from edgekit.core.files import clean_stale, output_lock, write_text_atomic
from edgekit.core.ui import Reporter
from edgekit.recipe import Recipe

LAST, BEST, METRICS, SUMMARY = "last.pt", "best.pt", "metrics.jsonl", "summary.json"


def resume_point(out: Path, recipe: Recipe, resume: bool, reporter: Reporter) -> tuple[int, dict[str, Any] | None]:
    """The epoch to continue after and the `last.pt` to continue from (0 and None for a new run).

    A run directory that already holds a run needs --resume, and then the same recipe."""
    last_path = out / LAST
    if not last_path.exists():
        if resume:
            reporter.note(f"nothing to resume in {out}: starting a new run")
        return 0, None
    saved = load_checkpoint(last_path)
    if not resume:
        raise EdgekitError(
            f"{out} already holds a training run (epoch {saved['epoch']}/{saved['epochs']}): "
            "pass --resume to continue it, or --out DIR to train elsewhere."
        )
    if saved.get("recipe_hash") != recipe.training_hash():
        raise EdgekitError(
            f"{out} was trained from a different recipe (model, data or train settings changed): "
            "use --out DIR for the new recipe, or restore the old one to resume."
        )
    start_epoch = int(saved["epoch"])
    if start_epoch >= recipe.train.epochs:
        reporter.note(f"{out} is already trained for all {recipe.train.epochs} epochs: nothing to resume")
    return start_epoch, saved


def open_run_dir(out: Path, held: contextlib.ExitStack, saved: dict[str, Any] | None, start_epoch: int) -> None:
    """Lock the run directory (one trainer per directory), clear a killed run's temporaries and cut the metrics
    back to the epoch resumed from. Rank 0 only."""
    held.enter_context(output_lock(out))  # a second trainer fails at once
    if saved is None and (out / LAST).exists():
        raise EdgekitError(f"{out} got a training run while this one loaded its data: pass --resume to "
                           "continue it, or --out DIR to train elsewhere.")
    out.mkdir(parents=True, exist_ok=True)
    clean_stale(out)  # temporary files a killed run left
    trim_metrics(out / METRICS, start_epoch, (saved or {}).get("state", {}).get("metrics"))


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def trim_metrics(path: Path, last_epoch: int, last_row: dict[str, Any] | None = None) -> None:
    """Make the metrics end at the checkpoint we resume from: a kill can land between the checkpoint and the
    metrics line, so drop lines past it and restore its own line (kept in the checkpoint) when it is missing."""
    rows = [r for r in read_metrics(path) if r.get("epoch", 0) <= last_epoch]
    if last_row is not None and not any(r.get("epoch") == last_epoch for r in rows):
        rows.append(last_row)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
