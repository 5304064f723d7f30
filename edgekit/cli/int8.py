"""`edgekit int8 report`: where an artifact's INT8 files lose accuracy, layer by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.table import Table

from edgekit.cli.common import JSON_HELP, console, err_console, parse_list, print_json, user_errors
from edgekit.core.ui import progress_bar

int8_app = typer.Typer(
    help="INT8 diagnosis: which layers of an exported INT8 model lose accuracy, and why.", no_args_is_help=True)


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _figures(row: dict[str, Any], fmt: str, kind: str, key: str) -> float | None:
    section = (row.get(fmt) or {}).get(kind) or {}
    return section.get(key)


@int8_app.command()
@user_errors
def report(
    artifact: Annotated[Path, typer.Argument(
        metavar="ARTIFACT_DIR", help="An artifact directory with INT8 files (edgekit export --int8) or a run "
                                     "directory.")],
    data: Annotated[str | None, typer.Option(
        help="Images to measure on: a folder of images, imagefolder:DIR, digits or fashion-mnist (default: the data "
             "the artifact was calibrated on). Labels are not needed.")] = None,
    images: Annotated[int, typer.Option(help="Images drawn (seeded) from the data.")] = 100,
    format: Annotated[str | None, typer.Option(
        "--format", help="Comma-separated: onnx, tflite (default: every INT8 file with its FP32 twin).")] = None,
    layer: Annotated[str | None, typer.Option(
        help="Show this layer only, by the module path the report names it with.")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Also draw SQNR along depth, per file, the worst layers circled, into this PNG.")] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows shown, worst first (--json gives every layer).")] = 15,
    device: Annotated[str | None, typer.Option(
        "--device", "-d", help="Compute the TFLite files' layers on this device profile's kernels (ssh, adb, local) "
                               "instead of here; compare with the report without it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Per-layer error of the INT8 files against their FP32 twins, worst layer first.

    Runs both files on their own runtimes with the quantized tensors kept: for every quantized layer, its SQNR
    (dB; the median over its channels, which a few wide channels cannot hide), cosine and share of clipped values,
    both of the layer alone (ONNX: every layer fed the FP32 file's inputs) and accumulated up to it, with the
    spread of its weights across output channels and the range its output can represent. Layers are named by
    their PyTorch module path. Reads the files only: nothing is written but the --plot picture.
    """
    from edgekit.benchmark.kept_tensors import int8_report_on

    formats = parse_list(format, "--format", str, "onnx,tflite", what="formats")
    with progress_bar(TextColumn("comparing {task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=err_console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def advance(fmt: str, done: int, total: int) -> None:
            if fmt not in tasks:
                tasks[fmt] = bar.add_task(f"{fmt} layers", total=total)
            bar.update(tasks[fmt], completed=done)

        result = int8_report_on(device, artifact, data=data, images=images, formats=formats, layer=layer, plot=plot,
                                progress=advance)
    if as_json:
        print_json(result.to_dict())
        return
    rows = result.rows()
    formats_done = list(result.layers)
    table = Table(title=f"INT8 layers of {result.artifact.name}, worst first ({result.images} images of "
                        f"{result.data}; SQNR in dB, median over channels)")
    columns = ["#", "layer", "op", "alone SQNR"] + [f"{fmt} accum. SQNR" for fmt in formats_done] + [
        "cosine", "clipped", "weight spread", "output range", "hint"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("layer", "op", "hint") else "right",
                         overflow="fold")
    for rank, row in enumerate(rows[:top], 1):
        main = formats_done[0]
        span = row["activation_range"]
        clipped = _figures(row, "onnx", "alone", "clipped") or _figures(row, main, "accumulated", "clipped") or 0
        table.add_row(
            str(rank), row["layer"], row["op"], _db(_figures(row, "onnx", "alone", "channel_sqnr_db")),
            *[_db(_figures(row, fmt, "accumulated", "channel_sqnr_db")) for fmt in formats_done],
            f"{_figures(row, main, 'accumulated', 'cosine') or 0:.4f}",
            f"{100 * clipped:.2f}%",
            "-" if row["weight_spread"] is None else f"{row['weight_spread']:.1f}x",
            "-" if span is None else f"{span[0]:.3g}..{span[1]:.3g}", row["hint"])
    console.print(table)
    shown = min(top, len(rows))
    console.print(f"{shown} of {len(rows)} layers shown (--top N, --json for all). Kernels: "
                  + "; ".join(f"{fmt}: {kernels}" for fmt, kernels in result.kernels.items()), highlight=False)
    if plot is not None:
        console.print(f"wrote {plot}", highlight=False)
    missed = {fmt: n for fmt, n in result.unmatched.items() if n}
    if missed:
        console.print("quantized tensors without an FP32 twin (not reported): "
                      + ", ".join(f"{fmt} {n}" for fmt, n in missed.items()), highlight=False)
