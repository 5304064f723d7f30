"""`edgekit check` (the CI gate: INT8 accuracy, baseline, latency) and `edgekit report` (a table and plots across
artifacts)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.table import Table

from edgekit.cli.common import (
    JSON_HELP,
    PreCropRatio,
    PreInputRange,
    PreLabels,
    PreLayout,
    PreMean,
    PreprocessFile,
    PreResize,
    PreStd,
    console,
    err_console,
    given_preprocess,
    print_json,
    user_errors,
    warn,
)
from edgekit.core.ui import progress_bar
from edgekit.gate.rules import NOISY_FIX, verdict


class Reference(str, Enum):
    auto = "auto"
    torch = "torch"
    onnx = "onnx"
    tflite = "tflite"


@user_errors
def check(
    artifacts: Annotated[list[Path] | None, typer.Argument(
        metavar="ARTIFACT_DIR...", help="Artifact directories (edgekit export --int8) or run directories.")] = None,
    data: Annotated[str | None, typer.Option(
        help="fashion-mnist, digits or imagefolder:PATH (default: the data recorded in the manifest).")] = None,
    samples: Annotated[int | None, typer.Option(
        help="Evaluate a fixed, seeded subset of N validation images (fast, repeatable CI runs).")] = None,
    max_drop: Annotated[float, typer.Option(
        help="Largest allowed INT8 accuracy drop against the FP32 reference, in percentage points.")] = 1.0,
    relative: Annotated[bool, typer.Option(
        "--relative", help="Read --max-drop as percent of the reference's accuracy instead.")] = False,
    reference: Annotated[Reference, typer.Option(
        help="FP32 reference: auto (the exported checkpoint if unchanged, else the FP32 ONNX, else TFLite), "
             "torch, onnx or tflite.")] = Reference.auto,
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
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    pair: Annotated[tuple[Path, Path] | None, typer.Option(
        metavar="FP32 INT8", help="Instead of artifacts: two model files, the FP32 reference then the INT8 file, "
        "with a manifest or made elsewhere (then give --preprocess or its flags, and --data).")] = None,
    preprocess: PreprocessFile = None,
    resize: PreResize = None,
    crop_ratio: PreCropRatio = None,
    mean: PreMean = None,
    std: PreStd = None,
    input_range: PreInputRange = None,
    layout: PreLayout = None,
    labels: PreLabels = None,
) -> None:
    """Gate CI on INT8 accuracy: evaluate the FP32 reference and every INT8 file on the same data.

    Exit 0 when every check passes, 1 when one fails, 2 on bad input (nothing is written then), 4 when none
    fails but a latency figure was too noisy to judge against its limit (inconclusive: rerun edgekit bench).
    The result is also recorded in each artifact's manifest.json under `check`.
    """
    from edgekit.core.files import check_writable, write_output
    from edgekit.gate.baseline import load_baseline
    from edgekit.gate.checks import CheckOptions, record_results, run_checks
    from edgekit.gate.outputs import append_step_summary, junit_xml
    from edgekit.gate.outputs import markdown as markdown_text

    given = given_preprocess(preprocess, resize, crop_ratio, mean, std, input_range, layout, labels)
    for given_path, option in ((junit, "--junit"), (markdown, "--markdown"),
                          (baseline if update_baseline else None, "--baseline")):
        if given_path is not None:
            check_writable(given_path, option)
    options = CheckOptions(
        data=data, samples=samples, max_drop=max_drop, relative=relative, reference=reference.value,
        baseline=load_baseline(baseline, create=update_baseline) if baseline else None, tolerance=tolerance,
        latency_tolerance=latency_tolerance, max_latency_ratio=max_latency_ratio, update_baseline=update_baseline)

    with progress_bar(TextColumn("evaluating {task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, transient=True) as progress:
        tasks: dict[str, Any] = {}

        def advance(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done)

        results = run_checks(artifacts or [], options, pair, given, progress=advance, record=False)

    summary = markdown_text(results)
    if junit:
        write_output(junit, junit_xml(results))
    if markdown:
        write_output(markdown, summary)
    if not pair:  # two files have no manifest to record in
        record_results(results)  # last: a failed output leaves the manifests as they were
    try:
        append_step_summary(summary)
    except OSError as exc:
        warn(f"cannot append to $GITHUB_STEP_SUMMARY ({exc.strerror}).")
    outcome = verdict([c for r in results for c in r.cases])
    if as_json:
        print_json({"passed": outcome.name == "passed", "inconclusive": outcome.name == "inconclusive",
                    "results": [r.to_dict() for r in results]})
    else:
        _print_check(results)
        if update_baseline:
            console.print(f"baseline written: {baseline}", highlight=False)
    if outcome.failed:
        err_console.print(f"[bold red]check failed:[/] {outcome.line()}", highlight=False, soft_wrap=True)
    elif outcome.inconclusive:
        err_console.print(f"[bold yellow]check inconclusive:[/] {outcome.line()}: {NOISY_FIX}", highlight=False,
                          soft_wrap=True)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def _print_check(results: list[Any]) -> None:
    for r in results:
        top1 = ", ".join(f"{fmt} {v:.2%}" for fmt, v in r.top1.items())
        table = Table(title=f"{r.model}: {r.data}, {r.images:,} images; top-1 {top1}", title_justify="left")
        for col in ("", "format", "metric", "value", "limit", "detail"):
            table.add_column(col, justify="right" if col == "value" else "left")
        for c in r.cases:
            mark = "[green]pass[/]" if c.passed else "[yellow]inconclusive[/]" if c.inconclusive else "[red]FAIL[/]"
            table.add_row(mark, c.format, c.metric, f"{c.value:g}", c.limit, c.detail)
        console.print(table)



@user_errors
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
        print_json({"rows": [r.to_dict() for r in result.rows], "written": [str(p) for p in result.written],
                    "notes": result.notes})
        return
    table = Table(title=f"edgekit report ({len(result.rows)} artifacts)")
    for col in result.header:
        table.add_column(col, justify="left" if col in ("model", "family") else "right")
    for row in result.cells:
        table.add_row(*row)
    console.print(table)
    if not result.settings:
        console.print("no latency recorded: run `edgekit bench DIR` on the artifacts for the latency plot.")
    for note in result.notes:
        console.print(note, highlight=False)
    console.print(f"wrote {', '.join(str(p) for p in result.written)}", highlight=False, soft_wrap=True)
