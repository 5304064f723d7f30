"""What a long stage shows a person: a live progress bar, one line per epoch, notes and warnings.

Everything goes to stderr, so `--json` output on stdout stays clean; a disabled Reporter prints nothing.
On a terminal, spinners and bars redraw in place. Elsewhere (a CI log, `nohup`, `| tee`) they cannot, and rich
prints nothing for them: there `status_line` and `progress_bar` print a line with the time elapsed whenever the
text or count changes, at most one every LOG_INTERVAL_S seconds per bar (EDGEKIT_LOG_INTERVAL sets another), so an
hour-long stage is never silent. The first line comes after that interval too, so a command that fails at once on
bad input still prints one line, its error.
"""

from __future__ import annotations

import contextlib
import os
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


def log_interval() -> float:
    """Seconds between logged progress lines: EDGEKIT_LOG_INTERVAL where set to a number >= 0, else LOG_INTERVAL_S.
    A command that ends (or fails on bad input) within it logs nothing: its error stays one line."""
    with contextlib.suppress(ValueError):
        value = float(os.environ.get("EDGEKIT_LOG_INTERVAL", ""))
        if value >= 0:
            return value
    return LOG_INTERVAL_S


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60:d}:{minutes % 60:02d}:{secs:02d}"


class _Throttled:
    """Prints a line when asked, at most one every `interval` seconds, the first `interval` seconds after the
    start; `force` prints at once."""

    def __init__(self, console: Console, interval: float, start: float | None = None) -> None:
        self.console, self.interval = console, interval
        self.start = time.monotonic() if start is None else start
        self.last: float | None = None
        self.lock = threading.Lock()

    def due(self, after: float) -> bool:
        return time.monotonic() - (self.last if self.last is not None else self.start) >= after

    def __call__(self, text: str, force: bool = False) -> bool:
        with self.lock:
            if not (force or self.due(self.interval)):
                return False
            self.last = time.monotonic()
            self.console.print(f"[{_elapsed(self.last - self.start)}] {text}", highlight=False, markup=False,
                               soft_wrap=True)
            return True


class StatusLine:
    """What `status_line` yields: `update(text)` shows the stage's new state."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self._show = show

    def update(self, text: str) -> None:
        self._show(text)


@contextlib.contextmanager
def status_line(console: Console, text: str, interval: float | None = None,
                heartbeat_s: float = HEARTBEAT_S) -> Iterator[StatusLine]:
    """A spinner with `text` on a terminal. Elsewhere the latest text as a logged line (see the module): once
    the stage has run `interval` seconds (default log_interval()), then on changes at most one per interval, and
    again after `heartbeat_s` without a line."""
    if console.is_terminal:
        with console.status(text) as spinner:
            yield StatusLine(lambda new: spinner.update(new))
        return
    interval = log_interval() if interval is None else interval
    log = _Throttled(console, interval)
    state = {"text": text, "shown": None}

    def show(new: str | None = None, tick: bool = False) -> None:
        if new is not None:
            state["text"] = new
        if state["text"] != state["shown"]:
            if log(state["text"]):
                state["shown"] = state["text"]
        elif tick and log.due(heartbeat_s):
            log(f"{state['text']} (still working)", force=True)

    stop = threading.Event()

    def ticks() -> None:
        while not stop.wait(max(0.05, min(1.0, interval / 2, heartbeat_s / 2))):
            show(tick=True)

    show()
    beat = threading.Thread(target=ticks, name="edgekit-log-ticks", daemon=True)
    beat.start()
    try:
        yield StatusLine(show)
    finally:
        stop.set()
        beat.join()


class LoggedProgress(Progress):
    """rich's Progress, which off a terminal also logs each task's count (see the module)."""

    def __init__(self, *columns: Any, console: Console, interval: float | None = None, **kwargs: Any) -> None:
        # off a terminal rich's live display prints only a blank line when it stops: the log lines replace it
        self._log_only = not console.is_terminal and not kwargs.get("disable", False)
        super().__init__(*columns, console=console, **{**kwargs, "disable": kwargs.get("disable", False)
                                                       or self._log_only})
        self._logs: dict[Any, _Throttled] = {}
        self._finished: set[Any] = set()
        self._start = time.monotonic()
        self._interval = log_interval() if interval is None else interval

    def _log(self, task_id: Any) -> None:
        if not self._log_only:
            return
        task = self._tasks.get(task_id)
        if task is None:
            return
        log = self._logs.setdefault(task_id, _Throttled(self.console, self._interval, self._start))
        count = f"{task.completed:g}/{task.total:g}" if task.total is not None else f"{task.completed:g}"
        extra = "  ".join(str(v) for v in task.fields.values() if v not in ("", None))
        finished = task.total is not None and task.completed >= task.total
        if finished and log.last is None:
            return  # done within the first interval: nothing was logged in progress, so no end line either
        if not (finished and task_id in self._finished):
            log(f"{task.description}: {count}" + (f"  {extra}" if extra else ""), force=finished)
        if finished:
            self._finished.add(task_id)

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
