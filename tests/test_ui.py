"""Progress that shows where no terminal redraws it: a CI log, `nohup`, `| tee`."""

import io
import re
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

from edgekit.core.ui import progress_bar, status_line

STAMP = r"\[\d+:\d\d:\d\d\] "


def _log_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200), out


def test_a_status_off_a_terminal_logs_each_new_state_with_the_time():
    console, out = _log_console()
    with status_line(console, "calibrating", interval=0) as status:
        status.update("calibrating: model 1/2")
        status.update("calibrating: model 1/2")  # unchanged: not repeated
        status.update("calibrating: model 2/2")
    lines = out.getvalue().splitlines()
    assert [re.sub(STAMP, "", line) for line in lines] == [
        "calibrating", "calibrating: model 1/2", "calibrating: model 2/2"]
    assert all(re.match(STAMP, line) for line in lines)


def test_a_status_off_a_terminal_logs_nothing_within_its_first_interval():
    """A command refused at once on bad input prints one line, its error: no progress line comes before it."""
    console, out = _log_console()
    with status_line(console, "exporting", interval=3600) as status:
        for i in range(100):
            status.update(f"layer {i}")
    assert out.getvalue() == ""


def test_a_status_that_stalls_is_logged_again_so_a_log_is_never_quiet_for_long():
    console, out = _log_console()
    with status_line(console, "int8 export tflite", interval=0.05, heartbeat_s=0.2):
        time.sleep(0.7)  # one long conversion: no update
    lines = [re.sub(STAMP, "", line) for line in out.getvalue().splitlines()]
    assert lines[0] == "int8 export tflite"
    assert 2 <= len(lines) <= 4 and set(lines[1:]) == {"int8 export tflite (still working)"}, lines


def test_a_progress_bar_off_a_terminal_logs_its_count_and_its_end():
    console, out = _log_console()
    with progress_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console,
                      transient=True, interval=0.2) as bar:
        task = bar.add_task("evaluating", total=3, item="")
        for item in ("a", "b", "c"):
            time.sleep(0.15)
            bar.update(task, item=item)
            bar.advance(task)
        bar.advance(task, 0)  # an update after the end is not a second end line
    lines = [re.sub(STAMP, "", line) for line in out.getvalue().splitlines()]
    # at most one line per interval (the updates take 0.45 s, or longer on a loaded machine), and the end once
    assert 2 <= len(lines) <= 6 and lines[-1] == "evaluating: 3/3  c" and lines.count(lines[-1]) == 1, lines


def test_a_progress_bar_done_within_its_first_interval_logs_nothing():
    console, out = _log_console()
    with progress_bar(TextColumn("{task.description}"), console=console, transient=True, interval=3600) as bar:
        task = bar.add_task("evaluating", total=2)
        bar.advance(task, 2)
    assert out.getvalue() == ""


def test_a_progress_bar_on_a_terminal_logs_nothing_of_its_own():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    with progress_bar(TextColumn("{task.description}"), console=console, transient=True, interval=0) as bar:
        task = bar.add_task("evaluating", total=2)
        bar.advance(task)
    assert "evaluating: 1/2" not in out.getvalue()


def test_export_in_a_log_shows_its_stages(edgekit_cli, tmp_path):
    done = edgekit_cli("export", "mobilenet_v1", "--width", "0.25", "--resolution", "32", "--format", "onnx",
                       "--out", str(tmp_path / "a"), env={"EDGEKIT_LOG_INTERVAL": "0"})
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\[0:00:\d\d\] exporting$", done.stderr, re.M), done.stderr
