"""What a long stage shows a person: a live progress bar, one line per epoch, notes and warnings.

Everything goes to stderr, so `--json` output on stdout stays clean; a disabled Reporter prints nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class EpochBar:
    def __init__(self, progress: Progress | None, console: Console | None, epochs: int, steps: int) -> None:
        self.progress, self.console, self.epochs, self.steps = progress, console, epochs, steps
        self.task: Any = None

    def start_epoch(self, epoch: int) -> None:
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=self.steps, stats="")

    def step(self, loss: float, accuracy: float, images_per_second: float) -> None:
        if self.progress is None:
            return
        stats = f"loss {loss:.3f}  acc {accuracy:6.2%}  {images_per_second:,.0f} img/s"
        self.progress.update(self.task, advance=1, stats=stats)

    def end_epoch(self, row: dict[str, Any], chosen_top1: float, weights: str, improved: bool) -> None:
        if self.console is None:
            return
        ema = f"  ema {row['ema_top1']:.2%}" if row.get("ema_top1") is not None else ""
        mark = "  [green]best[/]" if improved else ""
        self.console.print(
            f"epoch {row['epoch']:>3}/{self.epochs}  loss {row['loss']:.4f}  train {row['train_top1']:.2%}  "
            f"val {row['val_top1']:.2%}{ema}  {row['images_per_second']:,.0f} img/s  {row['seconds']:.0f}s{mark}",
            highlight=False,
        )


class Reporter:
    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)

    def note(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)

    def warn(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[yellow]warning:[/] {text}", highlight=False)

    @contextlib.contextmanager
    def status(self, text: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self.console.status(text):
            yield

    def header(self, spec: Any, params: int, prep: Any, world: int, start_epoch: int, epochs: int) -> None:
        where = f"{world} processes" if world > 1 else "1 process"
        resumed = f", resuming after epoch {start_epoch}" if start_epoch else ""
        self.note(
            f"training {spec.name} width {spec.width:g} at {spec.resolution}px ({params:,} params) on "
            f"{prep.source.label}: {len(prep.train):,} train / {len(prep.val):,} val images, {where}{resumed}"
        )

    @contextlib.contextmanager
    def progress(self, epochs: int, steps: int) -> Iterator[EpochBar]:
        if not self.enabled:
            yield EpochBar(None, None, epochs, steps)
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            yield EpochBar(progress, self.console, epochs, steps)
