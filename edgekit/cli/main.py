"""The `edgekit` application: the verbs, registered in the order `edgekit --help` lists them, and the entry point."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from edgekit import __version__
from edgekit.cli import bench, check, export, guidelines, int8, latency, models, pipeline, train
from edgekit.cli.common import err_console, reflow_help, show_flags_as_flags
from edgekit.core.errors import DEBUG

app = typer.Typer(
    name="edgekit",
    help="Efficient CNNs from a recipe to a verified INT8 model, measured on the device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    epilog="Exit codes: 0 success, 1 a check failed, 2 bad input or environment (one line says what to fix), "
           "3 an internal error (a bug: rerun with --debug), 4 a check was inconclusive (a latency figure too noisy to "
           "judge against its limit), 130 interrupted (earlier results are kept).",
)


def _version(value: bool) -> None:
    if value:
        print(f"edgekit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", envvar="EDGEKIT_DEBUG", help="Show the Python traceback of an unexpected error.")] = False,
) -> None:
    DEBUG.enabled = debug


app.command()(models.models)
app.command()(models.profile)
app.command()(models.weights)
app.command()(train.train)
app.command("eval")(train.eval_cmd)
app.command()(export.export)
app.command("inspect")(export.inspect_cmd)
app.add_typer(int8.int8_app, name="int8")
app.command("run")(pipeline.run_cmd)
app.command()(pipeline.sweep)
app.command()(pipeline.recipes)
app.command()(bench.bench)
app.add_typer(bench.devices_app, name="devices")
app.command()(check.check)
app.command()(check.report)
app.add_typer(latency.latency_app, name="latency")
app.command()(guidelines.guidelines)
reflow_help(app)
show_flags_as_flags()


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (a CI job cancelled, `kill`) stops a command the way Ctrl-C does: results saved, temp files removed."""
    raise KeyboardInterrupt


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's exception base: newer typer vendors click (typer.TyperException), older typer uses click itself."""
    found: list[type[Exception]] = [typer.TyperException] if hasattr(typer, "TyperException") else []
    with contextlib.suppress(ImportError):
        import click

        found.append(click.ClickException)
    return tuple(found)


def _stop_with_parent() -> None:
    """Under `edgekit sweep` (EDGEKIT_PARENT_PID set): ask Linux for SIGTERM when the parent dies."""
    parent = os.environ.pop("EDGEKIT_PARENT_PID", None)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):  # the parent died before the request took effect
        raise SystemExit(130)


def main() -> None:
    """The console script: click's usage errors also become one line (a box per error reads as a crash)."""
    signal.signal(signal.SIGTERM, _terminated)
    _stop_with_parent()
    try:
        code = app(standalone_mode=False)
    except _usage_errors() as exc:  # click's exceptions: usage errors, and no arguments at all
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stderr.write(exc.format_message() + "\n")
        else:
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "edgekit"
            message = exc.format_message().rstrip(".")
            err_console.print(f"[bold red]error:[/] {escape(message)}. See `{where} --help`.",
                              highlight=False, soft_wrap=True)
        code = getattr(exc, "exit_code", 2)
    except typer.Abort:
        code = 130
    sys.exit(code or 0)
