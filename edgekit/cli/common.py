"""What every verb shares: the consoles, one-line errors, JSON output, progress, and the one list parser."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.table import Table

from edgekit.core.errors import DEBUG, INTERNAL_ERROR, EdgekitError, classify_error, first_line
from edgekit.core.ui import progress_bar
from edgekit.preprocess import GivenPreprocess
from edgekit.runtime import formats

# Tables are wide: when the output is a file or pipe, don't squeeze them into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

RECIPE_HELP = ("A recipe YAML file, or a built-in recipe's name (`edgekit recipes` lists them), e.g. "
               "mobilenet_v2_fashion.")
JSON_HELP = "Print JSON instead of tables."


# A runtime to run model files with (`auto`: each file's own), from the one format table.
Runtime = Enum("Runtime", {name: name for name in ("auto", *formats.RUNTIMES)}, type=str)


def user_errors(func: F) -> F:
    """Every failure ends as one line on stderr and an exit code, never a traceback (unless --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _refuse_non_finite(kwargs)
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            error = exc if isinstance(exc, EdgekitError) else classify_error(exc)
            if error is None and DEBUG.enabled:
                raise
            message = str(error) if error else (
                f"unexpected {type(exc).__name__}: {first_line(exc)}. This is a bug in edgekit: rerun with "
                "`edgekit --debug ...` for the traceback and report it.")
            err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code if error else INTERNAL_ERROR) from None

    return wrapper  # type: ignore[return-value]


def _refuse_non_finite(options: dict[str, Any]) -> None:
    """No option anywhere means NaN or infinity; click would pass them through as floats."""
    for name, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise EdgekitError(f"--{name.replace('_', '-')} {value} is not a finite number: give a real value.")


def parse_list(text: str | None, option: str, kind: Callable[[str], T], example: str,
               default: tuple[T, ...] | None = None, lo: float | None = None, hi: float | None = None,
               choices: tuple[str, ...] | None = None, what: str = "values") -> tuple[T, ...] | None:
    """A comma-separated option (`--width 0.5,1.0`): `default` when not given, else every value read with `kind`,
    within [lo, hi] or among `choices` when those are given. The one list syntax of every verb."""
    if text is None:
        return default
    try:
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    bad = not values
    if lo is not None and hi is not None:
        bad = bad or any(not lo <= v <= hi for v in values)  # type: ignore[operator]
    if choices is not None:
        bad = bad or any(v not in choices for v in values)
    if bad:
        where = (f" from {lo:g} to {hi:g}" if lo is not None and hi is not None else
                 f" among {', '.join(choices)}" if choices else "")
        raise EdgekitError(f"{option} {text!r} is not a list of {what}{where}: write e.g. {option} {example}.")
    return values


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`["groups=8", "activation=relu6"]` -> `{"groups": 8, "activation": "relu6"}` (values read as YAML scalars)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EdgekitError(f"option {pair!r} is not KEY=VALUE: write e.g. --option groups=8.")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, str):  # YAML 1.1 reads 1e9 and nan as strings: they are numbers here
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        options[key.strip()] = parsed
    return options


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M"


def progress(items: list[str], label: str, enabled: bool = True) -> Iterator[str]:
    """Yield items with a transient progress bar on stderr (hidden when stderr is not a terminal)."""
    if not enabled:
        yield from items
        return
    with progress_bar(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[item]}"),
        console=err_console, transient=True,
    ) as bar:
        task = bar.add_task(label, total=len(items), item="")
        for item in items:
            bar.update(task, item=item)
            yield item
            bar.advance(task)


def key_value_table(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def deprecated(old: str, new: str) -> None:
    """An old spelling still works for one release, with this warning (CHANGELOG.md lists every rename)."""
    warn(f"{old} is deprecated: use {new} (the old spelling goes in the next release; see CHANGELOG.md).")


def interrupted(out: Path, command: str) -> None:
    """Ctrl-C or SIGTERM during training: say where the run stopped and the command that continues it."""
    from edgekit.checkpoint import load_checkpoint

    last = out / "last.pt"
    where = ""
    if last.exists():
        with contextlib.suppress(EdgekitError):
            where = f" after epoch {load_checkpoint(last)['epoch']}"
    err_console.print(f"interrupted: the run is saved{where}; continue it with `{command}`", highlight=False,
                      soft_wrap=True)  # one line: the command is copied as printed
    raise typer.Exit(130)


def reflow_help(app: typer.Typer) -> None:
    """Let the terminal wrap every command's description: typer keeps a docstring's single line breaks after its
    first paragraph, so text wrapped at 120 columns in the source came out ragged in an 80-column terminal. A
    paragraph of list items (lines starting with '- ' or '* ') or indented lines keeps its breaks."""
    import inspect

    for info in app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if text:
            info.help = "\n\n".join(p if _keeps_breaks(p) else " ".join(p.split("\n"))
                                    for p in inspect.cleandoc(text).split("\n\n"))
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)


def show_flags_as_flags() -> None:
    """`--json`, `--int8`, `--help`: typer 0.2x shows every option's type in --help, a flag's as <bool>, which reads
    as if the flag took a value (`--json true` is refused). A flag's type column is left empty instead."""
    option = getattr(typer.core, "TyperOption", None)
    show = getattr(option, "display_type_rich", None)
    if show is None or getattr(show, "edgekit", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) and not getattr(self, "count", False) else show(self, ctx)

    display_type_rich.edgekit = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


def _keeps_breaks(paragraph: str) -> bool:
    return paragraph.startswith("\b") or any(line.lstrip().startswith(("- ", "* ")) or line.startswith(" ")
                                             for line in paragraph.split("\n")[1:])


# Preprocessing for model files made elsewhere (no manifest): a YAML file and flags over it (`GivenPreprocess`).
_PRE = "Preprocessing (model files made elsewhere)"
PreprocessFile = Annotated[Path | None, typer.Option(
    "--preprocess", rich_help_panel=_PRE, metavar="FILE.yaml",
    help="A YAML file of resolution, resize, crop_ratio, mean, std, input_range, layout, labels: the "
         "preprocessing of an .onnx or .tflite file without a manifest (docs/eval.md). Flags below override it.")]
PreResize = Annotated[str | None, typer.Option(
    "--resize", rich_help_panel=_PRE, help="shorter-side (then a center crop; the default) or squash.")]
PreCropRatio = Annotated[float | None, typer.Option(
    "--crop-ratio", rich_help_panel=_PRE, help="The center crop's share, e.g. 0.875 (default 1).")]
PreMean = Annotated[str | None, typer.Option(
    "--mean", rich_help_panel=_PRE, help="Per-channel mean in input-range units, e.g. 0.485,0.456,0.406.")]
PreStd = Annotated[str | None, typer.Option(
    "--std", rich_help_panel=_PRE, help="Per-channel std in input-range units, e.g. 0.229,0.224,0.225.")]
PreInputRange = Annotated[str | None, typer.Option(
    "--input-range", rich_help_panel=_PRE, help="Pixel range before mean/std: 0,1 (default), 0,255 or -1,1.")]
PreLayout = Annotated[str | None, typer.Option(
    "--layout", rich_help_panel=_PRE, help="nchw or nhwc (default: read from the file's input shape).")]
PreLabels = Annotated[Path | None, typer.Option(
    "--labels", rich_help_panel=_PRE, help="Class names, one per line, line k naming output k.")]


def given_preprocess(preprocess: Path | None, resize: str | None = None, crop_ratio: float | None = None,
                     mean: str | None = None, std: str | None = None, input_range: str | None = None,
                     layout: str | None = None, labels: Path | None = None) -> GivenPreprocess | None:
    """The preprocessing options' one parse; None when none was given (the model's own record applies)."""
    flags = {"resize": resize, "crop_ratio": crop_ratio, "mean": mean, "std": std, "input_range": input_range,
             "layout": layout, "labels": str(labels) if labels is not None else None}
    if preprocess is None and all(v is None for v in flags.values()):
        return None
    return GivenPreprocess.load(preprocess, flags)
