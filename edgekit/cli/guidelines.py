"""`edgekit guidelines`: ShuffleNetV2's four speed guidelines (G1-G4), measured on a device."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli.bench import (
    DEVICE_HELP,
    MIN_SECONDS_HELP,
    RUNS_HELP,
    WARMUP_SECONDS_HELP,
    bench_options,
    device_profiles,
)
from edgekit.cli.common import JSON_HELP, Runtime, console, err_console, parse_list, print_json, user_errors, warn
from edgekit.core.ui import status_line


@user_errors
def guidelines(
    device: Annotated[str, typer.Option("--device", "-d", help=DEVICE_HELP)] = "local",
    only: Annotated[str | None, typer.Option(help="These experiments only, e.g. G1,G3 (default: all four).")] = None,
    size: Annotated[str | None, typer.Option(help="Input sizes, e.g. 56,28 (the default).")] = None,
    channel_scale: Annotated[float, typer.Option(
        help="Scale the paper's channel counts (0.5 for a quick run).")] = 1.0,
    runtime: Annotated[Runtime, typer.Option(help="onnxruntime or tflite: the format the models are exported to "
                                                  "and run by; auto, as on every verb, the runtime of the file "
                                                  "timed: here ONNX Runtime (FP32 files).")] = Runtime.auto,
    threads: Annotated[int, typer.Option(min=1, help="The thread count the models run with.")] = 1,
    warmup_seconds: Annotated[float | None, typer.Option(help=WARMUP_SECONDS_HELP)] = None,
    runs: Annotated[int | None, typer.Option(help=RUNS_HELP)] = None,
    min_seconds: Annotated[float | None, typer.Option(help=MIN_SECONDS_HELP)] = None,
    out: Annotated[Path | None, typer.Option(
        help="Where guidelines.json and guidelines.png go (default guidelines-DEVICE).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """ShuffleNetV2's speed guidelines on a device: G1 equal channel widths, G2 group convolutions, G3 network
    fragmentation, G4 elementwise ops, each built at equal FLOPs and timed; tables in images/s, slow-downs and a PNG.
    """
    from edgekit.benchmark.guidelines import SIZES, run_guidelines

    options = bench_options(runtime, str(threads), warmup_seconds=warmup_seconds, runs=runs, min_seconds=min_seconds)
    with status_line(err_console, "guidelines") as status:
        done = run_guidelines(device_profiles(device), options,
                              parse_list(only, "--only", str.strip, "G1,G3", what="experiments"),
                              parse_list(size, "--size", int, "56,28", default=SIZES, what="sizes") or SIZES,
                              channel_scale, out, progress=status.update)
    if as_json:
        print_json(done.result)
        return
    _print_guidelines(done.cases, done.slowdown, done.title)
    console.print(f"wrote {' and '.join(str(p) for p in done.written)}", highlight=False)
    for warning in done.warnings:
        warn(warning)


def _print_guidelines(cases: list[Any], loss: dict[str, float], title: str) -> None:
    from edgekit.benchmark.guidelines import EXPERIMENTS

    console.print(f"[bold]{title}[/]: images per second (slow-down against the first row of each size)",
                  highlight=False)
    for exp in EXPERIMENTS:
        mine = [c for c in cases if c.experiment == exp.key]
        if not mine:
            continue
        channels = sorted({c.channels for c in mine})
        table = Table(title=f"{exp.key}: {exp.title}")
        table.add_column("input")
        table.add_column("variant")
        for c in channels:
            table.add_column(f"c={c}", justify="right")
        for size in sorted({c.size for c in mine}, reverse=True):
            for variant in exp.variants:
                row = {c.channels: c for c in mine if c.size == size and c.variant == variant.label}
                if not row:
                    continue
                cells = []
                for ch in channels:
                    case = row.get(ch)
                    ips = case.images_per_second if case else None
                    cells.append("-" if ips is None else f"{ips:,.1f} ({loss.get(case.file, 0.0):+.0f}%)")
                table.add_row(f"{size}x{size}", variant.label, *cells)
        console.print(table)
