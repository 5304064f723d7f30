"""The CI-facing commands: `edgekit check`, `edgekit report` and `edgekit sweep` (registered on edgekit.cli's app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from edgekit.cli import _print_json, _user_errors, app, console, err_console
from edgekit.core.errors import EdgekitError


@app.command()
@_user_errors
def check(
    artifacts: Annotated[list[Path], typer.Argument(
        metavar="ARTIFACT_DIR...", help="Artifact directories (edgekit export --int8) or run directories.")],
    data: Annotated[str | None, typer.Option(
        help="fashion-mnist, digits or imagefolder:PATH (default: the data recorded in the manifest).")] = None,
    samples: Annotated[int | None, typer.Option(
        help="Evaluate a fixed, seeded subset of N validation images (fast, repeatable CI runs).")] = None,
    max_drop: Annotated[float, typer.Option(
        help="Largest allowed INT8 accuracy drop against the FP32 reference, in percentage points.")] = 1.0,
    relative: Annotated[bool, typer.Option(
        "--relative", help="Read --max-drop as percent of the reference's accuracy instead.")] = False,
    reference: Annotated[str, typer.Option(
        help="FP32 reference: auto (the exported checkpoint if unchanged, else the FP32 ONNX, else TFLite), "
             "torch, onnx or tflite.")] = "auto",
    baseline: Annotated[Path | None, typer.Option(
        help="JSON of reference figures per model: fail on a regression, or an unexplained improvement, "
             "beyond --tolerance.")] = None,
    tolerance: Annotated[float, typer.Option(help="Accuracy tolerance against the baseline, pp.")] = 0.2,
    latency_tolerance: Annotated[float, typer.Option(
        help="Latency tolerance against the baseline's figures, percent slower.")] = 10.0,
    max_latency_ratio: Annotated[float | None, typer.Option(
        help="Largest INT8/FP32 p50 latency ratio on one device, runtime and thread count (from edgekit bench).")
    ] = None,
    update_baseline: Annotated[bool, typer.Option(
        "--update-baseline", help="Write the measured figures into --baseline (deliberately: review the diff).")
    ] = False,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML: one test case per model x format x metric.")
                     ] = None,
    markdown: Annotated[Path | None, typer.Option(
        help="Write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY when set).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Gate CI on INT8 accuracy: evaluate the FP32 reference and every INT8 file on the same data.

    Exit 0 when every check passes, 1 when one fails, 2 on bad input (nothing is written then).
    The result is also recorded in each artifact's manifest.json under `check`.
    """
    from edgekit.check.baseline import load_baseline
    from edgekit.check.gate import CheckOptions
    from edgekit.check.gate import check as run_check
    from edgekit.check.outputs import append_step_summary, junit_xml
    from edgekit.check.outputs import markdown as markdown_text
    from edgekit.core.files import write_output

    if reference not in ("auto", "torch", "onnx", "tflite"):
        raise EdgekitError(f"--reference {reference!r}: use auto, torch, onnx or tflite.")
    if samples is not None and samples < 1:
        raise EdgekitError(f"--samples {samples}: give a positive number of images.")
    if max_drop < 0 or tolerance < 0 or latency_tolerance < 0 or (max_latency_ratio is not None
                                                                   and max_latency_ratio <= 0):
        raise EdgekitError("a limit is negative: give --max-drop, --tolerance and --latency-tolerance >= 0, "
                           "and --max-latency-ratio above 0.")
    if update_baseline and baseline is None:
        raise EdgekitError("--update-baseline needs --baseline FILE: the file to write.")
    options = CheckOptions(
        data=data, samples=samples, max_drop=max_drop, relative=relative, reference=reference,
        baseline=load_baseline(baseline, create=update_baseline) if baseline else None, tolerance=tolerance,
        latency_tolerance=latency_tolerance, max_latency_ratio=max_latency_ratio, update_baseline=update_baseline)

    with Progress(TextColumn("evaluating {task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def advance(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        results = run_check(artifacts, options, progress=advance)

    summary = markdown_text(results)
    if junit:
        write_output(junit, junit_xml(results))
    if markdown:
        write_output(markdown, summary)
    try:
        append_step_summary(summary)
    except OSError as exc:
        err_console.print(f"[yellow]warning:[/] cannot append to $GITHUB_STEP_SUMMARY ({exc.strerror}).")
    failed = [(r, c) for r in results for c in r.cases if not c.passed]
    if as_json:
        _print_json({"passed": not failed, "results": [r.to_dict() for r in results]})
    else:
        _print_check(results)
        if update_baseline:
            console.print(f"baseline written: {baseline}", highlight=False)
    if failed:
        what = "; ".join(f"{r.model} {c.name} {c.value:g} (limit {c.limit})" for r, c in failed[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        err_console.print(f"[bold red]check failed:[/] {what}{more}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _print_check(results: list[Any]) -> None:
    for r in results:
        top1 = ", ".join(f"{fmt} {v:.2%}" for fmt, v in r.top1.items())
        table = Table(title=f"{r.model}: {r.data}, {r.images:,} images; top-1 {top1}", title_justify="left")
        for col in ("", "format", "metric", "value", "limit", "detail"):
            table.add_column(col, justify="right" if col == "value" else "left")
        for c in r.cases:
            table.add_row("[green]pass[/]" if c.passed else "[red]FAIL[/]", c.format, c.metric, f"{c.value:g}",
                          c.limit, c.detail)
        console.print(table)



@app.command()
@_user_errors
def report(
    artifacts: Annotated[list[Path], typer.Argument(
        metavar="ARTIFACT_DIR...", help="Artifact directories (edgekit export) or run directories (edgekit run).")],
    out: Annotated[Path, typer.Option(help="Where report.md, report.html, report.json and the PNGs go.")
                   ] = Path("report"),
    latency: Annotated[str | None, typer.Option(
        help="Which latency to plot, as DEVICE/RUNTIME/THREADSt, e.g. local/tflite/1t (default: the most "
             "measured).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report's rows as JSON.")] = False,
) -> None:
    """One table across artifacts (size, params, MACs, FP32/INT8 accuracy, latency per device) and two plots.

    accuracy_vs_macs.png and accuracy_vs_latency.png draw one curve per family and mark the Pareto front:
    the models no other model beats on both accuracy and cost. Figures come from the manifests (edgekit
    export --eval or edgekit check for accuracy, edgekit bench for latency); nothing is re-measured.
    """
    from edgekit.report.render import write_report

    result = write_report(artifacts, out, latency)
    if as_json:
        _print_json({"rows": [r.to_dict() for r in result.rows], "written": [str(p) for p in result.written]})
        return
    table = Table(title=f"edgekit report ({len(result.rows)} artifacts)")
    for col in result.header:
        table.add_column(col, justify="left" if col in ("model", "family") else "right")
    for row in result.cells:
        table.add_row(*row)
    console.print(table)
    if not result.settings:
        console.print("no latency recorded: run `edgekit bench DIR` on the artifacts for the latency plot.")
    console.print(f"wrote {', '.join(str(p) for p in result.written)}", highlight=False, soft_wrap=True)


def _numbers(text: str, option: str, kind: type) -> list[Any]:
    try:
        values = [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values:
        raise EdgekitError(f"{option} {text!r} is not a comma-separated list: write e.g. {option} "
                           f"{'0.5,1.0' if kind is float else '96,128'}.")
    return values


@app.command()
@_user_errors
def sweep(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help="The recipe every point starts from.")],
    width: Annotated[str, typer.Option(help="Width multipliers, comma-separated, e.g. 0.35,0.5,0.75,1.0.")],
    resolution: Annotated[str, typer.Option(help="Input resolutions, comma-separated, e.g. 96,128,160.")],
    device: Annotated[str, typer.Option(
        "--device", "-d", help="Device profile(s) to measure latency on, comma-separated; 'none' to skip.")
    ] = "local",
    threads: Annotated[str, typer.Option(help="Thread counts for the latency runs.")] = "1",
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
    from edgekit.bench.host import BenchOptions
    from edgekit.bench.host import bench as run_bench
    from edgekit.cli import _load_recipe_with, _thread_counts
    from edgekit.devices.profiles import load_profile
    from edgekit.pipeline.sweep import needs_bench, plan_points, run_points
    from edgekit.report.render import write_report

    widths = _numbers(width, "--width", float)
    resolutions = _numbers(resolution, "--resolution", int)
    if any(not 0 < w <= 4 for w in widths):
        raise EdgekitError(f"--width {width}: every width must be in (0, 4].")
    if jobs < 1:
        raise EdgekitError(f"--jobs {jobs}: give at least 1.")
    recipe = _load_recipe_with(recipe_path, None, None, None, None)
    out = (out or Path("sweeps") / recipe.name).resolve()
    points = plan_points(recipe, widths, resolutions, out, epochs, limit_batches)
    profiles = [] if device == "none" else [load_profile(d.strip()) for d in device.split(",") if d.strip()]
    options = BenchOptions(threads=_thread_counts(threads))

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err_console,
                  transient=True) as progress:
        task = progress.add_task(f"sweep: training {len(points)} points, {jobs} at a time", total=len(points))

        def done(point: Any) -> None:
            progress.advance(task)
            progress.console.print(f"{point.name}: {point.status}{': ' + point.detail if point.detail else ''}",
                                   highlight=False)

        try:
            run_points(points, jobs, on_done=done)
        except KeyboardInterrupt:
            err_console.print(f"interrupted: run the same `edgekit sweep` again to continue ({out}).")
            raise typer.Exit(130) from None
        finished = [p for p in points if p.status in ("passed", "check failed")]
        for profile in profiles:
            todo = [p for p in finished if needs_bench(p, profile.name)]
            bench_task = progress.add_task(f"sweep: latency on {profile.name}", total=len(todo))
            for point in todo:
                _, failures = run_bench(point.out / "export", [profile], options)
                for _, error in failures:
                    point.status, point.detail = "failed", f"bench on {profile.name}: {error}"
                progress.advance(bench_task)
    if any(p.status == "interrupted" for p in points):
        err_console.print(f"interrupted: run the same `edgekit sweep` again to continue ({out}).")
        raise typer.Exit(130)
    result = write_report([p.out for p in finished], out / "report") if finished else None
    if as_json:
        _print_json({"points": [{"name": p.name, "width": p.width, "resolution": p.resolution, "status": p.status,
                                 "detail": p.detail, "accuracy": p.accuracy, "seconds": p.seconds,
                                 "out": str(p.out)} for p in points],
                     "report": [str(p) for p in result.written] if result else []})
    else:
        table = Table(title=f"edgekit sweep {recipe.name} -> {out}")
        for col in ("point", "width", "res", "status", "top-1 torch", "top-1 INT8", "detail"):
            table.add_column(col, justify="right" if col in ("width", "res") or col.startswith("top") else "left")
        for p in points:
            int8 = p.accuracy.get("tflite_int8", p.accuracy.get("onnx_int8"))
            table.add_row(p.name, f"{p.width:g}", str(p.resolution), p.status,
                          f"{p.accuracy['torch']:.2%}" if "torch" in p.accuracy else "",
                          "" if int8 is None else f"{int8:.2%}", p.detail)
        console.print(table)
        if result:
            console.print(f"report: {out / 'report' / 'report.md'} (and .html, PNG plots)", highlight=False)
    bad = [p for p in points if p.status != "passed"]
    if bad:
        err_console.print(f"[bold red]error:[/] {len(bad)} of {len(points)} points did not pass: "
                          f"{', '.join(p.name for p in bad[:4])}{' ...' if len(bad) > 4 else ''}", highlight=False)
        raise typer.Exit(1)
