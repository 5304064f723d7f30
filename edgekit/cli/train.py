"""`edgekit train` (a recipe, resumable) and `edgekit eval` (a checkpoint, ONNX or TFLite model on its data)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.table import Table

from edgekit.cli.common import (
    RECIPE_HELP,
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
    interrupted,
    key_value_table,
    print_json,
    user_errors,
)
from edgekit.core.ui import progress_bar
from edgekit.recipe import load_recipe, with_overrides

TRAIN_THREADS_HELP = ("Torch threads (default: the cores other processes leave free, re-checked every few seconds, "
                      "so a busy machine does not stall training).")


@user_errors
def train(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help=RECIPE_HELP)],
    epochs: Annotated[int | None, typer.Option(min=1, help="Override train.epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Override train.batch_size (per process).")] = None,
    limit_batches: Annotated[
        int | None, typer.Option(min=1, help="Stop each epoch after N batches (smoke runs).")] = None,
    data: Annotated[
        str | None, typer.Option(help="Override data.source: fashion-mnist, digits, imagefolder:PATH.")] = None,
    weights: Annotated[str | None, typer.Option(
        help="Start from these weights (a torchvision-style state_dict or an edgekit checkpoint); overrides "
             "model.weights. A classifier for another class count is re-initialised.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/RECIPE_NAME).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last epoch.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help=TRAIN_THREADS_HELP)] = None,
    deterministic: Annotated[bool | None, typer.Option(
        "--deterministic", help="The same weights whatever else the machine runs: a fixed thread count (--threads, "
                                "else every core this process may use) and deterministic kernels. Slower beside "
                                "other work. Default: the recipe's train.deterministic.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train a recipe: live progress, best checkpoint by validation accuracy, resumable.

    Writes RUN/best.pt, RUN/last.pt (resume point), RUN/metrics.jsonl (one line per epoch) and
    RUN/summary.json. Runs unchanged under `torchrun --nproc_per_node N` (DistributedDataParallel).
    """
    from edgekit.core.ui import Reporter
    from edgekit.training.loop import train_recipe

    recipe = with_overrides(load_recipe(recipe_path), epochs, batch_size, limit_batches, data, weights)
    out = out or Path("runs") / recipe.name
    try:
        result = train_recipe(recipe, out, resume=resume, reporter=Reporter(enabled=True, console=err_console),
                              threads=threads, deterministic=deterministic)
    except KeyboardInterrupt:
        given = {"--epochs": epochs, "--batch-size": batch_size, "--limit-batches": limit_batches, "--data": data,
                 "--weights": weights, "--threads": threads}
        again = "".join(f" {flag} {shlex.quote(str(value))}" for flag, value in given.items() if value is not None)
        again += " --deterministic" if deterministic else ""
        interrupted(out, f"edgekit train {shlex.quote(str(recipe_path))}{again} --resume --out "
                         f"{shlex.quote(str(out))}")
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return
    if as_json:
        print_json(result.to_dict())
        return
    rows = [
        ("model", f"{result.spec.name} width {result.spec.width:g}, {result.spec.resolution}px, "
                  f"{result.spec.in_channels} channel(s), {result.params:,} params"),
        ("data", recipe.data.source + "".join(
            f", {split} {how}" for split, how in result.data_loader.items()) if result.data_loader else ""),
        *([("weights", f"{result.weights['path']} (classifier {result.weights['classifier']})")]
          if result.weights else []),
        ("epochs", f"{result.epochs}" + (f" (resumed after {result.resumed_from})" if result.resumed_from else "")),
        ("best val top-1", f"{result.best_top1:.2%} (epoch {result.best_epoch})"),
        ("final val top-1", f"{result.final_top1:.2%}"),
        ("time", f"{result.seconds:,.0f} s, {result.images_per_second:,.0f} img/s, "
                 f"{'/'.join(map(str, result.threads.get('used', []))) or '?'} thread(s)"),
        ("checkpoint", str(result.best_checkpoint)),
    ]
    key_value_table(f"trained {recipe.name}", rows)


@user_errors
def eval_cmd(
    target: Annotated[
        Path, typer.Argument(metavar="MODEL", help="An edgekit checkpoint (.pt), .onnx or .tflite file.")],
    data: Annotated[str | None, typer.Option(
        help="fashion-mnist, digits or imagefolder:PATH (default: the data the model was trained on).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 256,
    threads: Annotated[int | None, typer.Option(min=1, help=(
        "Threads. A checkpoint (torch): default the cores other processes leave free, re-checked as it goes, as "
        "training does. ONNX Runtime / TFLite: default 1."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (top-1, top-5, per-class, confusion).")] = False,
    preprocess: PreprocessFile = None,
    resize: PreResize = None,
    crop_ratio: PreCropRatio = None,
    mean: PreMean = None,
    std: PreStd = None,
    input_range: PreInputRange = None,
    layout: PreLayout = None,
    labels: PreLabels = None,
) -> None:
    """Top-1, top-5, per-class accuracy and confusion matrix of a checkpoint, ONNX or TFLite model.

    All three formats see exactly the preprocessing recorded with the model. A file made elsewhere (Keras, a plain
    torch.onnx.export), without a manifest, takes its preprocessing from --preprocess FILE.yaml or the flags:
    edgekit eval model.tflite --data imagefolder:photos --mean 0.5 --std 0.5 --labels labels.txt
    """
    from edgekit.evaluation import evaluate_file

    given = given_preprocess(preprocess, resize, crop_ratio, mean, std, input_range, layout, labels)

    with progress_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err_console,
                  transient=True, disable=as_json) as progress:
        task = progress.add_task("evaluating", total=None)
        result, runner, label, split = evaluate_file(
            target, data, batch_size, threads, progress=lambda n: progress.advance(task, n),
            on_loading=lambda what: progress.update(task, description=f"loading {what}, then evaluating"),
            given=given)
    if as_json:
        print_json({"model": str(target), "runtime": runner, "data": label, **result.to_dict()})
        return
    console.print(f"[bold]{target}[/] ({runner}) on {split}: {result.count:,} images  "
                  f"top-1 [bold]{result.top1:.2%}[/]  top-5 {result.top5:.2%}", highlight=False)
    table = Table(title="per class (rows: true class, columns: predicted)")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for i in range(len(result.classes)):
        table.add_column(str(i), justify="right")
    for i, (name, acc) in enumerate(result.per_class.items()):
        table.add_row(f"{i} {name}", f"{acc:.1%}", *(str(n) for n in result.confusion[i]))
    console.print(table)
