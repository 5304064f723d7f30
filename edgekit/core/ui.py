"""What a long stage shows a person: a live progress bar, one line per epoch, notes and warnings.

Everything goes to stderr, so `--json` output on stdout stays clean; a disabled Reporter prints nothing.
On a terminal, spinners and bars redraw in place. Elsewhere (a CI log, `nohup`, `| tee`) they cannot, and rich
prints nothing for them: there `status_line` and `progress_bar` print a line with the time elapsed whenever the
text or count changes, at most one every LOG_INTERVAL_S seconds per bar, so an hour-long stage is never silent.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
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

LOG_INTERVAL_S = 15.0
# A stage that reports nothing new for this long (one big conversion) is logged again, so that a log is never
# quiet for a minute and CI systems that stop silent jobs leave it running.
HEARTBEAT_S = 50.0


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60:d}:{minutes % 60:02d}:{secs:02d}"


class _Throttled:
    """Prints a line when asked, at most one every `interval` seconds (the first at once)."""

    def __init__(self, console: Console, interval: float) -> None:
        self.console, self.interval = console, interval
        self.start = time.monotonic()
        self.last: float | None = None

    def __call__(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or self.last is None or now - self.last >= self.interval:
            self.last = now
            self.console.print(f"[{_elapsed(now - self.start)}] {text}", highlight=False, markup=False,
                               soft_wrap=True)


class StatusLine:
    """What `status_line` yields: `update(text)` shows the stage's new state."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self._show = show

    def update(self, text: str) -> None:
        self._show(text)


@contextlib.contextmanager
def status_line(console: Console, text: str, interval: float = LOG_INTERVAL_S,
                heartbeat_s: float = HEARTBEAT_S) -> Iterator[StatusLine]:
    """A spinner with `text` on a terminal; elsewhere a logged line now and on updates (see the module), and the
    current one again after `heartbeat_s` without a line."""
    if console.is_terminal:
        with console.status(text) as spinner:
            yield StatusLine(lambda new: spinner.update(new))
        return
    log = _Throttled(console, interval)
    log(text, force=True)
    shown = [text]

    def show(new: str) -> None:
        if new != shown[0]:
            shown[0] = new
            log(new)

    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(min(heartbeat_s, interval) if interval > 0 else heartbeat_s):
            if log.last is not None and time.monotonic() - log.last >= heartbeat_s:
                log(f"{shown[0]} (still working)", force=True)

    beat = threading.Thread(target=heartbeat, name="edgekit-heartbeat", daemon=True)
    beat.start()
    try:
        yield StatusLine(show)
    finally:
        stop.set()
        beat.join()


class LoggedProgress(Progress):
    """rich's Progress, which off a terminal also logs each task's count (see the module)."""

    def __init__(self, *columns: Any, console: Console, interval: float = LOG_INTERVAL_S, **kwargs: Any) -> None:
        # off a terminal rich's live display prints only a blank line when it stops: the log lines replace it
        self._log_only = not console.is_terminal and not kwargs.get("disable", False)
        super().__init__(*columns, console=console, **{**kwargs, "disable": kwargs.get("disable", False)
                                                       or self._log_only})
        self._logs: dict[Any, _Throttled] = {}
        self._interval = interval

    def _log(self, task_id: Any) -> None:
        if not self._log_only:
            return
        task = self._tasks.get(task_id)
        if task is None:
            return
        log = self._logs.setdefault(task_id, _Throttled(self.console, self._interval))
        count = f"{task.completed:g}/{task.total:g}" if task.total is not None else f"{task.completed:g}"
        extra = "  ".join(str(v) for k, v in task.fields.items() if v not in ("", None))
        log(f"{task.description}: {count}" + (f"  {extra}" if extra else ""),
            force=task.total is not None and task.completed >= task.total)

    def update(self, task_id: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: Any, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)


def progress_bar(*columns: Any, console: Console, **kwargs: Any) -> LoggedProgress:
    """A rich Progress with these columns that also shows in logs: every bar of edgekit's verbs is made here."""
    return LoggedProgress(*columns, console=console, **kwargs)


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
        with status_line(self.console, text):
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
        with progress_bar(*columns, console=self.console, transient=True) as progress:
            yield EpochBar(progress, self.console, epochs, steps)
