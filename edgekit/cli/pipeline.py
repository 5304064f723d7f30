"""The pipelines: `edgekit run` (one recipe: train, export, check) and `edgekit sweep` (a grid of them, measured and
reported)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.table import Table

from edgekit.cli.common import (
    JSON_HELP,
    RECIPE_HELP,
    console,
    deprecated,
    err_console,
    interrupted,
    parse_list,
    print_json,
    user_errors,
)
from edgekit.cli.train import TRAIN_THREADS_HELP
from edgekit.core.ui import progress_bar
from edgekit.recipe import load_recipe, with_overrides


@user_errors
def run_cmd(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help=RECIPE_HELP)],
    epochs: Annotated[int | None, typer.Option(min=1, help="Override train.epochs.")] = None,
    limit_batches: Annotated[
        int | None, typer.Option(min=1, help="Stop each epoch after N batches (smoke runs).")] = None,
    device: Annotated[str | None, typer.Option(
        "--device", "-d", help="Devices to measure latency on, e.g. rpi4,local (default: the recipe's devices; "
                               "'none' skips the bench stage).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help=TRAIN_THREADS_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/RECIPE_NAME).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """The whole pipeline: train -> export ONNX/TFLite, FP32 and INT8 -> parity -> accuracy check -> latency on
    the recipe's devices -> latency budgets -> report.

    Each stage is skipped when its output is up to date, so running it again is cheap; an interrupted run continues
    where it stopped. Exits 1 when a budget is missed or a device cannot be measured, 4 when a latency figure is too
    noisy to judge against its budget (the report is saved first).
    """
    from edgekit.core.ui import Reporter
    from edgekit.pipeline.run import CheckFailed, run_recipe

    recipe = with_overrides(load_recipe(recipe_path), epochs, None, limit_batches)
    devices = None if device is None else [] if device == "none" else list(
        parse_list(device, "--device", str, "rpi4,local") or ())
    out = out or Path("runs") / recipe.name
    failed = None
    try:
        report = run_recipe(recipe, out, reporter=Reporter(enabled=True, console=err_console), threads=threads,
                            devices=devices)
    except KeyboardInterrupt:
        interrupted(out, f"edgekit run {recipe_path}")
    except CheckFailed as exc:
        if exc.report is None:
            raise
        report, failed = exc.report, exc
    if as_json:
        print_json(report.to_dict())
    else:
        _print_run(recipe.name, report)
    if failed is not None:
        err_console.print(f"[bold red]error:[/] {escape(str(failed))}", highlight=False, soft_wrap=True)
        raise typer.Exit(failed.exit_code)


def _print_run(name: str, report: Any) -> None:
    from edgekit.pipeline.run import speedup_caveat

    table = Table(title=f"edgekit run {name} -> {report.out}")
    for col in ("stage", "status", "time", "result"):
        table.add_column(col, justify="right" if col == "time" else "left")
    for stage in report.stages:
        table.add_row(stage.name, stage.status, f"{stage.seconds:,.0f}s" if stage.seconds else "", stage.detail)
    console.print(table)
    accuracy = Table(title="validation top-1 by format")
    for col in ("format", "top-1", "drop (pp)"):
        accuracy.add_column(col, justify="left" if col == "format" else "right")
    for fmt, top1 in report.accuracy.items():
        drop = report.check["drop_pp"].get(fmt)
        accuracy.add_row(fmt, f"{top1:.2%}", "" if drop is None else f"{drop:+.2f}")
    console.print(accuracy)
    if report.latency:
        speedups = {(s["device"], s["runtime"], s["threads"], s["format"]): s["speedup"] for s in report.speedup}
        latency = Table(title="latency (ms) by device, format and threads")
        for col in ("device", "format", "runtime", "threads", "p50", "p90", "INT8 speed-up"):
            latency.add_column(col, justify="left" if col in ("device", "format", "runtime") else "right")
        for r in report.latency:
            up = speedups.get((r["device"], r["runtime"], r["threads"], r["format"]))
            latency.add_row(r["device"], r["format"], r["runtime"], str(r["threads"]), f"{r['p50_ms']:.2f}",
                            "-" if r["p90_ms"] is None else f"{r['p90_ms']:.2f}", "" if up is None else f"{up:.2f}x")
        console.print(latency)
        caveat = speedup_caveat(report.speedup)
        if caveat:
            console.print(caveat, highlight=False)


@user_errors
def sweep(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="The recipe every point starts from.")],
    width: Annotated[str, typer.Option(help="Width multipliers, comma-separated, e.g. 0.35,0.5,0.75,1.0.")],
    resolution: Annotated[str, typer.Option(help="Input resolutions, comma-separated, e.g. 96,128,160.")],
    device: Annotated[str, typer.Option(
        "--device", "-d", help="Device profile(s) to measure latency on, comma-separated; 'none' to skip.")
    ] = "local",
    bench_threads: Annotated[str, typer.Option(
        "--bench-threads", help="Thread counts the latency runs use, e.g. 1,4.")] = "1",
    threads: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --bench-threads.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Override train.epochs at every point.")] = None,
    limit_batches: Annotated[int | None, typer.Option(min=1, help="Stop each epoch after N batches (smoke runs).")
                             ] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Points trained at once; the cores are split between them.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Sweep directory (default sweeps/RECIPE_NAME).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the points and the report as JSON.")] = False,
) -> None:
    """Run the whole pipeline at every width x resolution, measure latency, and end with `edgekit report`.

    Each point is `edgekit run` on its own recipe (OUT/recipes/NAME.yaml), so finished stages are skipped
    when the sweep runs again: an interrupted sweep continues where it stopped. Latency is measured one point
    at a time after training. Exit 1 when a point failed or missed its accuracy budget.
    """
    from edgekit.benchmark.host import BenchOptions
    from edgekit.devices.profiles import load_profile
    from edgekit.pipeline.sweep import sweep as run_sweep
    from edgekit.recipe import load_recipe
    from edgekit.report.collect import INT8_PREFERENCE

    widths = parse_list(width, "--width", float, "0.5,1.0")
    resolutions = parse_list(resolution, "--resolution", int, "96,128")
    recipe = load_recipe(recipe_path)
    names = () if device == "none" else parse_list(device, "--device", str, "rpi4,local")
    profiles = [load_profile(name) for name in names]
    if threads is not None:
        deprecated("edgekit sweep --threads", "--bench-threads")
        bench_threads = threads
    options = BenchOptions(threads=parse_list(bench_threads, "--bench-threads", int, "1,2", lo=1, hi=1024))
    total = len(widths or ()) * len(resolutions or ())

    with progress_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err_console,
                  transient=True) as progress:
        task = progress.add_task(f"sweep: training {total} points, {jobs} at a time", total=total)

        def done(point: Any) -> None:
            progress.advance(task)
            progress.console.print(f"{point.name}: {point.status}{': ' + point.detail if point.detail else ''}",
                                   highlight=False)

        tasks: dict[str, Any] = {}

        def benched(profile: Any, todo: int) -> None:
            if profile.name not in tasks:
                tasks[profile.name] = progress.add_task(f"sweep: latency on {profile.name}", total=todo)
            else:
                progress.advance(tasks[profile.name])

        try:
            result = run_sweep(recipe, list(widths or ()), list(resolutions or ()), out=out, devices=profiles,
                               bench=options, epochs=epochs, limit_batches=limit_batches, jobs=jobs,
                               on_trained=done, on_bench=benched)
        except KeyboardInterrupt:
            err_console.print(f"interrupted: run the same `edgekit sweep` again to continue "
                              f"({(out or Path('sweeps') / recipe.name).resolve()}).")
            raise typer.Exit(130) from None
    points, out = result.points, result.out
    if result.interrupted:
        err_console.print(f"interrupted: run the same `edgekit sweep` again to continue ({out}).")
        raise typer.Exit(130)
    if as_json:
        print_json(result.to_dict())
    else:
        table = Table(title=f"edgekit sweep {recipe.name} -> {out}")
        for col in ("point", "width", "res", "status", "top-1 torch", "top-1 INT8", "detail"):
            table.add_column(col, justify="right" if col in ("width", "res") or col.startswith("top") else "left")
        for p in points:
            int8 = next((p.accuracy[k] for k in INT8_PREFERENCE if k in p.accuracy), None)
            table.add_row(p.name, f"{p.width:g}", str(p.resolution), p.status,
                          f"{p.accuracy['torch']:.2%}" if "torch" in p.accuracy else "",
                          "" if int8 is None else f"{int8:.2%}", p.detail)
        console.print(table)
        if result.report:
            console.print(f"report: {out / 'report' / 'report.md'} (and .html, PNG plots)", highlight=False)
    bad = result.failed
    if bad:
        err_console.print(f"[bold red]error:[/] {len(bad)} of {len(points)} points did not pass: "
                          f"{', '.join(p.name for p in bad[:4])}{' ...' if len(bad) > 4 else ''}", highlight=False)
        raise typer.Exit(1)


@user_errors
def recipes(as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False) -> None:
    """The recipes that ship with edgekit: run one by name (`edgekit run mobilenet_v2_fashion`), or copy its file
    and edit it."""
    from edgekit import builtin

    rows = []
    for name in builtin.recipe_names():
        recipe = load_recipe(name)
        m = recipe.model
        rows.append({"name": name, "model": m.name, "width": m.width, "resolution": m.resolution,
                     "data": recipe.data.source, "epochs": recipe.train.epochs,
                     "file": str(builtin.builtin_recipe(name))})
    if as_json:
        print_json(rows)
        return
    table = Table(title="built-in recipes")
    for col in ("name", "model", "width", "res", "data", "epochs"):
        table.add_column(col, justify="right" if col in ("width", "res", "epochs") else "left")
    for r in rows:
        table.add_row(r["name"], r["model"], f"{r['width']:g}", str(r["resolution"]), r["data"], str(r["epochs"]))
    console.print(table)
    console.print(f"files in {builtin.RECIPES.resolve()}", highlight=False)
