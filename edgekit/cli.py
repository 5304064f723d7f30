"""The `edgekit` command line. Thin: parse, call the stage, print."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from edgekit import __version__
from edgekit.core.errors import DEBUG, INTERNAL_ERROR, EdgekitError, classify_error, first_line
from edgekit.recipe import DEFAULT_QAT_LR

app = typer.Typer(
    name="edgekit",
    help="Efficient CNNs from a recipe to a verified INT8 model, measured on the device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    epilog="Exit codes: 0 success, 1 a check failed, 2 bad input or environment (one line says what to fix), "
           "3 an internal error (a bug: rerun with --debug), 130 interrupted (earlier results are kept).",
)
# Tables are wide: when the output is a file or pipe, don't squeeze them into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
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


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`["groups=8", "activation=relu6"]` -> `{"groups": 8, "activation": "relu6"}` (values read as YAML scalars)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EdgekitError(f"option {pair!r} is not KEY=VALUE: write e.g. --option groups=8.")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M"


def _progress(items: list[str], label: str, enabled: bool = True) -> Iterator[str]:
    """Yield items with a transient progress bar on stderr (hidden when stderr is not a terminal)."""
    if not enabled:
        yield from items
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[item]}"),
        console=err_console, transient=True,
    ) as progress:
        task = progress.add_task(label, total=len(items), item="")
        for item in items:
            progress.update(task, item=item)
            yield item
            progress.advance(task)


@app.command()
@_user_errors
def models(
    family: Annotated[str | None, typer.Option(help="Only this family, e.g. MobileNetV3 (case-insensitive).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the registered models with their default resolution, params and MACs."""
    from edgekit.models import get_entry, list_models
    from edgekit.models.complexity import profile_spec

    names = list_models()
    if family is not None:
        names = [n for n in names if get_entry(n).family.lower() == family.lower()]
        if not names:
            families = sorted({get_entry(n).family for n in list_models()})
            raise EdgekitError(f"no family {family!r}: choose one of {', '.join(families)}.")
    rows = []
    for name in _progress(names, "profiling models", enabled=not as_json):
        entry = get_entry(name)
        prof = profile_spec(name)
        rows.append(dict(
            name=name, family=entry.family, resolution=prof.input_shape[-1], params=prof.params, macs=prof.macs,
            description=entry.description, options=entry.options,
        ))
    if as_json:
        _print_json(rows)
        return
    table = Table(title="edgekit models (MACs at the default resolution, 1000 classes)")
    for col, kw in (("name", {}), ("family", {}), ("res", {"justify": "right"}), ("params", {"justify": "right"}),
                    ("MACs", {"justify": "right"}), ("notes", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for r in rows:
        table.add_row(r["name"], r["family"], str(r["resolution"]), f"{r['params']:,}", _millions(r["macs"]),
                      r["description"])
    console.print(table)
    console.print("Any model takes --width W and --resolution R (or --res-mult RHO); see `edgekit profile --help`.")


@app.command()
@_user_errors
def profile(
    name: Annotated[str, typer.Argument(help="Model name, e.g. mobilenet_v2 (see `edgekit models`).")],
    width: Annotated[float, typer.Option(help="Width multiplier (channels x W, rounded as the family does).")] = 1.0,
    resolution: Annotated[
        int | None, typer.Option(help="Input height and width in pixels (default: the model's).")
    ] = None,
    res_mult: Annotated[
        float | None, typer.Option("--res-mult", help="Resolution multiplier rho of the default resolution.")
    ] = None,
    num_classes: Annotated[int, typer.Option(help="Classifier outputs.")] = 1000,
    in_channels: Annotated[int, typer.Option(help="Input channels (1 for grayscale).")] = 3,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Family option KEY=VALUE, repeatable, e.g. -o groups=8."),
    ] = None,
    all_ops: Annotated[
        bool, typer.Option("--all-ops", help="One row per operator instead of fusing conv+BN+activation.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (params, macs, layers, ...).")] = False,
) -> None:
    """Layer-by-layer params, MACs and activation memory of a model."""
    from edgekit.models.complexity import profile_spec

    prof = profile_spec(
        name, width=width, resolution=resolution, res_mult=res_mult, num_classes=num_classes,
        in_channels=in_channels, fuse=not all_ops, **parse_options(option or []),
    )
    if as_json:
        _print_json(prof.to_dict())
        return
    spec = prof.spec or {}
    table = Table(
        title=f"{name}  width {spec.get('width', width):g}  input {'x'.join(map(str, prof.input_shape))}",
        caption="MACs: conv + linear multiply-accumulates (FLOPs = 2 x MACs). Elementwise: other arithmetic ops. "
        "Memory: each layer's output activations.",
    )
    for col in ("layer", "op", "in CxHxW", "out CxHxW", "kernel", "params (K)", "MACs (M)", "elementwise (K)",
                "fp32 KB", "int8 KB"):
        justify = "left" if col in ("layer", "op", "kernel") else "right"
        table.add_column(col, justify=justify, overflow="fold")
    for layer in prof.layers:
        table.add_row(
            layer.name, layer.op, "x".join(map(str, layer.input_shape)), "x".join(map(str, layer.output_shape)),
            layer.detail, f"{layer.params / 1e3:,.1f}" if layer.params else "",
            f"{layer.macs / 1e6:,.2f}" if layer.macs else "",
            f"{layer.elementwise_ops / 1e3:,.1f}" if layer.elementwise_ops else "",
            f"{layer.activation_bytes_fp32 / 1024:,.1f}", f"{layer.activation_bytes_int8 / 1024:,.1f}",
        )
    console.print(table)
    summary = Table(title="totals", show_header=False)
    summary.add_column(justify="left")
    summary.add_column(justify="right")
    summary.add_row("params", f"{prof.params:,}")
    summary.add_row("MACs", f"{prof.macs:,} ({_millions(prof.macs)}, {prof.flops / 1e9:.2f} GFLOPs)")
    summary.add_row("elementwise ops", f"{prof.elementwise_ops:,}")
    act_mib = prof.activation_bytes_fp32 / 2**20
    summary.add_row("activation memory (all outputs)", f"{act_mib:,.2f} MiB fp32 / {act_mib / 4:,.2f} MiB int8")
    summary.add_row("largest layer in+out (fp32)", f"{prof.peak_layer_bytes_fp32 / 2**20:,.2f} MiB")
    summary.add_row("weights", f"{prof.params * 4 / 2**20:,.2f} MiB fp32 / {prof.params / 2**20:,.2f} MiB int8")
    console.print(summary)


def _spec_from_cli(name: str, width: float, resolution: int | None, res_mult: float | None, num_classes: int,
                   in_channels: int, option: list[str] | None) -> Any:
    from edgekit.models import resolve_spec

    return resolve_spec(name, width=width, resolution=resolution, res_mult=res_mult, num_classes=num_classes,
                        in_channels=in_channels, **parse_options(option or []))


def _trained_or_spec(target: str, width: float | None, resolution: int | None, res_mult: float | None,
                     num_classes: int, in_channels: int, option: list[str] | None, weights: Path | None) -> Any:
    """`edgekit export` takes a model name or an edgekit checkpoint; returns (spec, weights, TrainedModel | None)."""
    from edgekit.checkpoint import is_checkpoint_path, read_trained

    if is_checkpoint_path(target):
        if weights is not None:
            raise EdgekitError(f"{target} is a checkpoint already: drop --weights, or give a model name instead.")
        trained = read_trained(Path(target))
        given = {"width": width, "resolution": resolution, "res_mult": res_mult, "option": option}
        clash = [f"--{k.replace('_', '-')}" for k, v in given.items() if v not in (None, [])]
        if clash:
            raise EdgekitError(
                f"{', '.join(clash)} cannot change a trained checkpoint's model: export it as trained, "
                "or train a recipe with the new settings."
            )
        return trained.spec, trained.path, trained
    width = 1.0 if width is None else width
    spec = _spec_from_cli(target, width, resolution, res_mult, num_classes, in_channels, option)
    if weights is not None and weights.is_file():
        try:
            trained = read_trained(weights)
        except EdgekitError:
            return spec, weights, None  # a plain state_dict: load_weights checks it strictly
        if trained.spec.name != spec.name:
            raise EdgekitError(
                f"{weights} holds a {trained.spec.name}, not a {spec.name}: export it with `edgekit export {weights}`."
            )
        return trained.spec, weights, trained
    return spec, weights, None


@app.command()
@_user_errors
def export(
    target: Annotated[str, typer.Argument(
        metavar="MODEL|CHECKPOINT",
        help="A model name (see `edgekit models`) or an edgekit checkpoint such as runs/NAME/best.pt.")],
    width: Annotated[float | None, typer.Option(help="Width multiplier (default 1.0).")] = None,
    resolution: Annotated[int | None, typer.Option(help="Input height and width in pixels.")] = None,
    res_mult: Annotated[float | None, typer.Option("--res-mult", help="Resolution multiplier rho.")] = None,
    num_classes: Annotated[int, typer.Option(help="Classifier outputs.")] = 1000,
    in_channels: Annotated[int, typer.Option(help="Input channels (1 for grayscale).")] = 3,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Family option KEY=VALUE.")] = None,
    weights: Annotated[
        Path | None, typer.Option(help="An edgekit checkpoint or a torchvision state_dict (loaded strictly).")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="Comma-separated: onnx, tflite.")] = "onnx,tflite",
    nhwc: Annotated[
        bool, typer.Option("--nhwc", help="TFLite takes channels-last input (no layout TRANSPOSE).")
    ] = False,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch", help="ONNX input with a dynamic batch axis.")
    ] = False,
    eval_data: Annotated[str | None, typer.Option(
        "--eval", help="Also measure top-1 of every format on this data's validation split "
        "(fashion-mnist, digits, imagefolder:PATH; 'auto' = the checkpoint's own data).")] = None,
    int8: Annotated[bool, typer.Option(
        "--int8", help="Also write full-integer model_int8.onnx and model_int8.tflite (post-training, or "
        "quantization-aware with --qat-epochs).")] = False,
    calib: Annotated[str | None, typer.Option(
        help="Calibration data (its training split; default: the checkpoint's own data).")] = None,
    calib_size: Annotated[int, typer.Option(min=1, help="Calibration images, drawn with a fixed seed.")] = 512,
    calib_method: Annotated[str, typer.Option(
        help="Activation ranges: minmax, percentile (99.99th) or mse (histogram L2 search).")] = "minmax",
    per_tensor: Annotated[bool, typer.Option(
        "--per-tensor", help="One weight scale per tensor instead of per channel (to see why per-channel "
        "matters).")] = False,
    equalize: Annotated[bool, typer.Option(
        "--equalize", help="Cross-layer equalization before calibration: rescale convolution pairs joined by a "
        "ReLU (or nothing) so that per-tensor weight scales fit every channel. Exact; ReLU6 pairs are left alone.")
    ] = False,
    int8_io: Annotated[bool, typer.Option(
        "--int8-io", help="INT8 TFLite takes and returns int8 tensors (scale and zero point in the manifest).")
    ] = False,
    qat_epochs: Annotated[int, typer.Option(
        "--qat-epochs", help="Quantization-aware: fine-tune the fake-quantized model this many epochs on the "
        "training data before export (0 = post-training only).")] = 0,
    qat_lr: Annotated[float, typer.Option(
        "--qat-lr", help="Quantization-aware learning rate (SGD, cosine decay).")] = DEFAULT_QAT_LR,
    max_drop: Annotated[float | None, typer.Option(
        "--max-drop", help="Accuracy-aware: keep the most sensitive layers in float until the INT8 top-1 drop "
        "on --eval data is at most this many percentage points.")] = None,
    out: Annotated[Path | None, typer.Option(help="Artifact directory (default out/NAME-wW-rR).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing artifact directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Export a model to ONNX and TFLite (FP32, and INT8 with --int8), check numerical parity, write an
    artifact directory.

    With an edgekit checkpoint, parity runs on real validation images, the preprocessing is recorded and
    --int8 calibrates on the checkpoint's training data.
    """
    from edgekit.data import DataSource, load_split, preprocess_for
    from edgekit.export import export_model
    from edgekit.export.int8 import Int8Options
    from edgekit.quantize.qat import schedule_for

    spec, weights, trained = _trained_or_spec(target, width, resolution, res_mult, num_classes, in_channels,
                                              option, weights)
    formats = [f.strip().lower() for f in format.split(",") if f.strip()]
    if weights is None:
        err_console.print("[yellow]warning:[/] no --weights: exporting random weights, for plumbing only.")
    data = preprocess = None
    if trained is not None or eval_data not in (None, "auto"):
        if eval_data in (None, "auto"):
            if trained is None:
                raise EdgekitError("--eval auto needs an edgekit checkpoint: name the data, e.g. --eval digits.")
            source_text = trained.data
        else:
            source_text = eval_data
        source = DataSource.parse(source_text)
        preprocess = trained.preprocess if trained else preprocess_for(source, spec.resolution, spec.in_channels)
        with err_console.status(f"loading {source.label}"):
            data = load_split(source, "val", spec.resolution, spec.in_channels)
    int8_options = calibration = None
    if int8:
        schedule = None
        if qat_epochs and max_drop is not None:
            raise EdgekitError("--max-drop and --qat-epochs are two ways to the same end: choose one.")
        if qat_epochs:
            if calib is None and trained is None:
                raise EdgekitError("--qat-epochs fine-tunes on training data: give --weights CKPT from "
                                   "`edgekit train`, or name the data with --calib.")
            source = DataSource.parse(calib if calib is not None else trained.data)
            schedule = schedule_for(qat_epochs, qat_lr, spec, source, trained)
            schedule.check()
        if max_drop is not None and (max_drop < 0 or eval_data is None):
            raise EdgekitError("--max-drop takes a budget >= 0 in percentage points and evaluation data: "
                               "add --eval auto (a checkpoint's own data) or --eval DATA.")
        int8_options = Int8Options(calib_size=calib_size, method=calib_method, per_channel=not per_tensor,
                                   equalize=equalize, int8_io=int8_io, qat=schedule, max_drop=max_drop)
        int8_options.settings()  # a bad --calib-method fails before any work
        calibration, preprocess = _calibration_data(calib, trained, spec, preprocess)
    elif calib is not None or int8_io or per_tensor or equalize or qat_epochs or max_drop is not None:
        raise EdgekitError("--calib, --per-tensor, --equalize, --int8-io, --qat-epochs and --max-drop apply to "
                           "INT8 export: add --int8.")
    with err_console.status("exporting") as status:
        result = export_model(
            spec, weights=weights, formats=formats, nhwc=nhwc, out=out, force=force, dynamic_batch=dynamic_batch,
            on_stage=lambda stage: status.update(f"{stage} ..."), preprocess=preprocess, data=data,
            evaluate_accuracy=eval_data is not None, int8=int8_options, calibration_data=calibration,
        )
    manifest = result.manifest
    for fmt, report in manifest["ops"].items():
        for warning in report["warnings"]:
            err_console.print(f"[yellow]warning:[/] {fmt} graph: {warning}", highlight=False)
    if as_json:
        _print_json({"directory": str(result.directory), **manifest})
        return
    accuracy = manifest.get("accuracy") or {}
    table = Table(title=f"exported {spec.name} -> {result.directory}")
    columns = ["format", "file", "size", "params", "MACs", "max rel diff", "cosine", "top-1 agree"]
    columns += ["val top-1"] if accuracy else []
    for col in (*columns, "ops", "time"):
        table.add_column(col, justify="left" if col in ("format", "file", "ops") else "right")
    if accuracy:
        table.caption = f"val top-1 on {accuracy['images']:,} images of {accuracy['data']}; torch " \
                        f"{accuracy['top1']['torch']:.2%}"
    for fmt, record in manifest["files"].items():
        if fmt not in manifest["parity"]["results"]:
            continue
        parity = manifest["parity"]["results"][fmt]
        ops = ", ".join(f"{op} {n}" for op, n in manifest["ops"][fmt]["histogram"].items())
        row = [
            fmt, record["file"], f"{record['bytes'] / 2**20:.2f} MiB", f"{manifest['complexity']['params']:,}",
            _millions(manifest["complexity"]["macs"]), f"{parity['max_rel_diff']:.1e}",
            f"{parity['min_cosine']:.6f}", f"{parity['top1_agreement']:.0%}",
        ]
        row += [f"{accuracy['top1'][fmt]:.2%}"] if accuracy else []
        table.add_row(*row, ops, f"{result.timings.get(f'export {fmt}', 0):.1f}s")
    console.print(table)
    if manifest.get("int8"):
        _print_int8(manifest, result.timings)


def _print_int8(manifest: dict[str, Any], timings: dict[str, float]) -> None:
    section = manifest["int8"]
    for warning in section["warnings"]:
        err_console.print(f"[yellow]warning:[/] int8: {warning}", highlight=False)
    calibration = section["calibration"]
    qat = section.get("qat")
    tuned = f", then {qat['epochs']} quantization-aware epoch(s) in {qat['seconds']:.0f} s" if qat else ""
    table = Table(title=f"INT8 ({section['scheme']['weights']} weights, {calibration['method']} calibration on "
                        f"{calibration['images']:,} images of {calibration.get('data') or 'noise'}{tuned})")
    accuracy = section.get("accuracy")
    columns = ["format", "file", "size", "vs torch int8 (cosine)", "full integer", "ops"]
    columns[4:4] = ["val top-1", "drop"] if accuracy else []
    for col in (*columns, "time"):
        table.add_column(col, justify="left" if col in ("format", "file", "ops") else "right")
    results = section["parity"]["results"]
    for fmt in ("onnx", "tflite"):
        record = manifest["files"].get(f"{fmt}_int8")
        if record is None:
            continue
        graph = section["graph"][fmt]
        histogram = graph["onnxruntime_fused"] if fmt == "onnx" else graph["histogram"]
        full = graph.get("full_integer")
        row = [f"{fmt} int8", record["file"], f"{record['bytes'] / 2**20:.2f} MiB",
               f"{results[f'{fmt}_int8_vs_torch_int8']['min_cosine']:.4f}"]
        if accuracy:
            row += [f"{accuracy['top1'][f'{fmt}_int8']:.2%}", f"{accuracy['drop_pp'][f'{fmt}_int8']:+.2f} pp"]
        row += ["yes" if full else ("n/a" if full is None else "no"),
                ", ".join(f"{op} {n}" for op, n in histogram.items()),
                f"{timings.get(f'int8 export {fmt}', 0):.1f}s"]
        table.add_row(*row)
    if accuracy:
        table.caption = (f"FP32 torch {accuracy['top1']['torch_fp32']:.2%} on {accuracy['images']:,} images; "
                         f"ONNX/TFLite top-1 agreement {accuracy.get('onnx_tflite_top1_agreement', 1.0):.2%}; "
                         "ONNX ops as ONNX Runtime runs them")
    console.print(table)
    aware = section.get("accuracy_aware")
    if aware:
        layers = aware["float_layers"]
        chosen = [layer["module"] for layer in layers if layer["why"].startswith("chosen")]
        console.print(
            f"accuracy-aware (--max-drop {aware['budget_pp']:g} pp): "
            + (f"{len(chosen)} layer(s) kept in float ({', '.join(chosen)}); {len(layers)} run in float with "
               f"their producers, {aware['float_macs_share']:.1%} of MACs. See "
               "manifest.json int8.accuracy_aware." if layers else "full INT8 is within budget, no layer in float."),
            highlight=False)


def _calibration_data(calib: str | None, trained: Any, spec: Any, preprocess: Any) -> tuple[Any, Any]:
    """The training split of --calib (or the checkpoint's data), and the preprocessing to apply to it."""
    from edgekit.data import DataSource, load_split, preprocess_for, require_same_classes

    if calib is None and trained is None:
        err_console.print("[yellow]warning:[/] --int8 without a checkpoint or --calib: calibrating on random "
                          "noise, for plumbing only.")
        return None, preprocess
    source = DataSource.parse(calib if calib is not None else trained.data)
    if preprocess is None:
        preprocess = trained.preprocess if trained else preprocess_for(source, spec.resolution, spec.in_channels)
    with err_console.status(f"loading calibration data {source.label}"):
        data = load_split(source, "train", spec.resolution, spec.in_channels)
    require_same_classes("the model", trained.classes if trained else spec.num_classes, data,
                         "calibrate on the data the model was trained for")
    return data, preprocess


RECIPE_HELP = "A recipe YAML, e.g. recipes/mobilenet_v2_fashion.yaml."


def _load_recipe_with(path: Path, epochs: int | None, batch_size: int | None, limit_batches: int | None,
                      data: str | None) -> Any:
    from edgekit.recipe import load_recipe

    recipe = load_recipe(path)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("limit_batches", limit_batches)):
        if value is not None:
            if value < 1:
                raise EdgekitError(f"--{key.replace('_', '-')} must be at least 1, got {value}.")
            setattr(recipe.train, key, value)
    if data is not None:
        recipe.data.source = data
    return recipe


@app.command()
@_user_errors
def train(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help=RECIPE_HELP)],
    epochs: Annotated[int | None, typer.Option(min=1, help="Override train.epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Override train.batch_size (per process).")] = None,
    limit_batches: Annotated[
        int | None, typer.Option(min=1, help="Stop each epoch after N batches (smoke runs).")] = None,
    data: Annotated[
        str | None, typer.Option(help="Override data.source: fashion-mnist, digits, imagefolder:PATH.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/RECIPE_NAME).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last epoch.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Train a recipe: live progress, best checkpoint by validation accuracy, resumable.

    Writes RUN/best.pt, RUN/last.pt (resume point), RUN/metrics.jsonl (one line per epoch) and
    RUN/summary.json. Runs unchanged under `torchrun --nproc_per_node N` (DistributedDataParallel).
    """
    from edgekit.core.ui import Reporter
    from edgekit.train import train as train_recipe

    recipe = _load_recipe_with(recipe_path, epochs, batch_size, limit_batches, data)
    out = out or Path("runs") / recipe.name
    try:
        result = train_recipe(recipe, out, resume=resume, reporter=Reporter(enabled=True, console=err_console))
    except KeyboardInterrupt:
        _interrupted(out, f"edgekit train {recipe_path} --resume --out {out}")
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return
    if as_json:
        _print_json(result.to_dict())
        return
    rows = [
        ("model", f"{result.spec.name} width {result.spec.width:g}, {result.spec.resolution}px, "
                  f"{result.spec.in_channels} channel(s), {result.params:,} params"),
        ("data", recipe.data.source),
        ("epochs", f"{result.epochs}" + (f" (resumed after {result.resumed_from})" if result.resumed_from else "")),
        ("best val top-1", f"{result.best_top1:.2%} (epoch {result.best_epoch})"),
        ("final val top-1", f"{result.final_top1:.2%}"),
        ("time", f"{result.seconds:,.0f} s, {result.images_per_second:,.0f} img/s"),
        ("checkpoint", str(result.best_checkpoint)),
    ]
    _key_value_table(f"trained {recipe.name}", rows)


def _interrupted(out: Path, command: str) -> None:
    from edgekit.checkpoint import load_checkpoint

    last = out / "last.pt"
    where = ""
    if last.exists():
        with contextlib.suppress(EdgekitError):
            where = f" after epoch {load_checkpoint(last)['epoch']}"
    err_console.print(f"interrupted: the run is saved{where}; continue it with `{command}`", highlight=False)
    raise typer.Exit(130)


def _key_value_table(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@app.command("eval")
@_user_errors
def eval_cmd(
    target: Annotated[
        Path, typer.Argument(metavar="MODEL", help="An edgekit checkpoint (.pt), .onnx or .tflite file.")],
    data: Annotated[str | None, typer.Option(
        help="fashion-mnist, digits or imagefolder:PATH (default: the data the model was trained on).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 256,
    threads: Annotated[int, typer.Option(min=1, help="Runtime threads for ONNX Runtime / TFLite.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (top-1, top-5, per-class, confusion).")] = False,
) -> None:
    """Top-1, top-5, per-class accuracy and confusion matrix of a checkpoint, ONNX or TFLite model.

    All three formats see exactly the preprocessing recorded with the model.
    """
    from edgekit.data import DataSource, load_split, require_same_classes
    from edgekit.evaluate import evaluate
    from edgekit.runtime.open import open_model

    opened = open_model(target, threads=threads)
    label = data or opened.data
    if label is None:
        raise EdgekitError(f"{target} records no dataset: pass --data.")
    source = DataSource.parse(label)
    spec = opened.spec
    with err_console.status(f"loading {source.label}"):
        dataset = load_split(source, "val", spec.resolution, spec.in_channels)
    require_same_classes(target, opened.classes or None, dataset, "evaluate on the data the model was trained for")
    with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), console=err_console,
                  transient=True, disable=as_json) as progress:
        task = progress.add_task("eval", total=len(dataset))
        result = evaluate(opened.runner, dataset, opened.preprocess, batch_size,
                          progress=lambda n: progress.advance(task, n))
    if as_json:
        _print_json({"model": str(target), "runtime": opened.runner.name, "data": source.label, **result.to_dict()})
        return
    console.print(f"[bold]{target}[/] ({opened.runner.name}) on {dataset.name}: {result.count:,} images  "
                  f"top-1 [bold]{result.top1:.2%}[/]  top-5 {result.top5:.2%}", highlight=False)
    table = Table(title="per class (rows: true class, columns: predicted)")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for i in range(len(result.classes)):
        table.add_column(str(i), justify="right")
    for i, (name, acc) in enumerate(result.per_class.items()):
        table.add_row(f"{i} {name}", f"{acc:.1%}", *(str(n) for n in result.confusion[i]))
    console.print(table)


@app.command("run")
@_user_errors
def run_cmd(
    recipe_path: Annotated[Path, typer.Argument(metavar="RECIPE", help=RECIPE_HELP)],
    epochs: Annotated[int | None, typer.Option(min=1, help="Override train.epochs.")] = None,
    limit_batches: Annotated[
        int | None, typer.Option(min=1, help="Stop each epoch after N batches (smoke runs).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/RECIPE_NAME).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """The whole pipeline: train -> export ONNX/TFLite -> parity -> accuracy check -> report.

    Each stage is skipped when its output is up to date, so running it again is cheap; an interrupted
    run continues where it stopped. Exits 1 when an accuracy check fails.
    """
    from edgekit.core.ui import Reporter
    from edgekit.pipeline.run import run_recipe

    recipe = _load_recipe_with(recipe_path, epochs, None, limit_batches, None)
    out = out or Path("runs") / recipe.name
    try:
        report = run_recipe(recipe, out, reporter=Reporter(enabled=True, console=err_console))
    except KeyboardInterrupt:
        _interrupted(out, f"edgekit run {recipe_path}")
    if as_json:
        _print_json(report.to_dict())
        return
    table = Table(title=f"edgekit run {recipe.name} -> {report.out}")
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


@app.command("inspect")
@_user_errors
def inspect_cmd(
    file: Annotated[Path, typer.Argument(
        metavar="FILE|DIR", help="An .onnx or .tflite file; with --verify, an artifact or run directory.")],
    verify: Annotated[bool, typer.Option(
        "--verify", help="Check every file the manifest lists against its recorded size and sha256; "
                         "exit 1 when one changed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Inputs, outputs (shapes, dtypes, quantization), op histogram and size of a model file."""
    from edgekit.inspect import inspect_file

    if verify:
        _verify_artifact(file, as_json)
        return
    info = inspect_file(file)
    if as_json:
        _print_json(info)
        return
    console.print(f"[bold]{info['file']}[/]  {info['format']}  {info['bytes'] / 2**20:.2f} MiB")
    io_table = Table(title="inputs and outputs")
    for col in ("kind", "name", "shape", "dtype", "quantization"):
        io_table.add_column(col)
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            q = t.get("quantization")
            io_table.add_row(kind[:-1], t["name"], "x".join(map(str, t["shape"])), t["dtype"],
                             f"scale {q['scale']:.6g}, zero point {q['zero_point']}" if q else "")
    console.print(io_table)
    ops = Table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in info["ops"].items():
        ops.add_row(op, str(n))
    console.print(ops)


def _verify_artifact(path: Path, as_json: bool) -> None:
    from edgekit.artifact import changed_files, locate_artifact, read_manifest

    directory = locate_artifact(path)
    manifest = read_manifest(directory)
    problems = dict(changed_files(directory, manifest))
    rows = [{"file": r["file"], "bytes": r["bytes"], "sha256": r["sha256"], "ok": r["file"] not in problems,
             "problem": problems.get(r["file"])} for r in manifest["files"].values()]
    if as_json:
        _print_json({"artifact": str(directory), "ok": not problems, "files": rows})
    else:
        table = Table(title=f"{directory}: files against manifest.json")
        for col in ("file", "bytes", "sha256", "status"):
            table.add_column(col, justify="right" if col == "bytes" else "left")
        for row in rows:
            status = "[green]ok[/]" if row["ok"] else f"[red]{escape(row['problem'])}[/]"
            table.add_row(row["file"], f"{row['bytes']:,}", row["sha256"][:16], status)
        console.print(table)
    if problems:
        err_console.print(f"[bold red]verify failed:[/] {len(problems)} of {len(rows)} files changed since export; "
                          "export the model again.", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _thread_counts(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        counts = tuple(int(t) for t in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise EdgekitError(f"--threads {text!r} is not a list of thread counts: write e.g. --threads 1,2,4.")
    return counts


@app.command()
@_user_errors
def bench(
    target: Annotated[Path | None, typer.Argument(
        help="An artifact directory (all its .tflite/.onnx files), or one file; none with --guidelines.")] = None,
    device: Annotated[str, typer.Option(
        "--device", "-d", help="Device profile name(s), comma-separated (run concurrently), or a profile .yaml; "
                               "`edgekit devices` lists them.")] = "local",
    runtime: Annotated[str, typer.Option(help="tflite, onnxruntime, or auto (each file's own).")] = "auto",
    threads: Annotated[str | None, typer.Option(help="Thread counts, e.g. 1,2,4 (default: the profile's).")] = None,
    warmup: Annotated[int, typer.Option(help="Warm-up runs at least (and at least --warmup-seconds).")] = 1,
    warmup_seconds: Annotated[float, typer.Option(help="Warm-up time at least, per configuration.")] = 1.0,
    runs: Annotated[int, typer.Option(help="Timed runs at least (and at least --min-seconds).")] = 50,
    min_seconds: Annotated[float, typer.Option(help="Timed seconds at least, per configuration.")] = 1.0,
    cores: Annotated[str | None, typer.Option(
        help="Hex CPU mask to pin to, e.g. f0 for the big cores of a 4+4 phone (default: the profile's).")] = None,
    op_profile: Annotated[bool, typer.Option(
        "--op-profile", help="Per-operator times (ONNX Runtime's profiler; benchmark_model's op profiling).")] = False,
    guidelines: Annotated[bool, typer.Option(
        "--guidelines", help="Run ShuffleNetV2's four speed-guideline experiments (G1-G4) on the device instead: "
                             "tables in images/s, slow-downs and a PNG.")] = False,
    only: Annotated[str | None, typer.Option(help="With --guidelines: these experiments only, e.g. G1,G3.")] = None,
    sizes: Annotated[str | None, typer.Option(help="With --guidelines: input sizes (default 56,28).")] = None,
    channel_scale: Annotated[float, typer.Option(
        help="With --guidelines: scale the paper's channel counts (0.5 for a quick run).")] = 1.0,
    out: Annotated[Path | None, typer.Option(
        help="With --guidelines: where the models, guidelines.json and guidelines.png go "
             "(default guidelines-DEVICE).")] = None,
    calibrate_predictor: Annotated[bool, typer.Option(
        "--calibrate-predictor", help="Time the blocks of a grid of models (and the models whole) on the "
                                      "device; store its latency table for `edgekit predict` and `search`.")] = False,
    families: Annotated[str | None, typer.Option(
        help="With --calibrate-predictor: families or model names to calibrate on (default: one per family).")] = None,
    widths: Annotated[str | None, typer.Option(
        help="With --calibrate-predictor: width multipliers (default 0.5,1.0).")] = None,
    resolutions: Annotated[str | None, typer.Option(
        help="With --calibrate-predictor: input resolutions (default 128,224).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Latency on a device, measured like TFLite's benchmark_model: load, first run, warm-up, then steady state.

    Configurations (files x thread counts) run interleaved in rounds, so drift hits all alike. The figures are
    appended to the artifact's manifest.json. Exit code 1 when a device could not be benchmarked.

    `--guidelines` measures ShuffleNetV2's speed guidelines instead; `--calibrate-predictor` builds the device's
    latency table (a one-time job: about 17 minutes on a 2-core x86 for the default grid; rerun to extend it).
    """
    from edgekit.bench.host import BenchOptions
    from edgekit.bench.host import bench as run_bench
    from edgekit.devices.profiles import load_profile, parse_cores

    if runtime not in ("auto", "tflite", "onnxruntime"):
        raise EdgekitError(f"--runtime {runtime!r}: use tflite, onnxruntime or auto.")
    if runs < 1 or warmup < 0 or min_seconds < 0 or warmup_seconds < 0:
        raise EdgekitError("a run count or time is out of range: give --runs >= 1, and --warmup, --warmup-seconds, "
                           "--min-seconds >= 0.")
    profiles = [load_profile(name.strip()) for name in device.split(",") if name.strip()]
    if not profiles:
        raise EdgekitError("--device is empty: name a device (e.g. --device local).")
    options = BenchOptions(runtime=runtime, threads=_thread_counts(threads), warmup_runs=warmup,
                           warmup_seconds=warmup_seconds, runs=runs, min_seconds=min_seconds,
                           cores=parse_cores(cores), op_profile=op_profile)
    calibration_given = families is not None or widths is not None or resolutions is not None
    if guidelines and calibrate_predictor:
        raise EdgekitError("--guidelines and --calibrate-predictor are separate jobs: run one, then the other.")
    if (only or sizes or channel_scale != 1.0 or out) and not guidelines:
        raise EdgekitError("--only, --sizes, --channel-scale and --out apply to --guidelines: add it, or drop them.")
    if calibration_given and not calibrate_predictor:
        raise EdgekitError("--families, --widths and --resolutions apply to --calibrate-predictor: add it, or drop "
                           "them.")
    if (guidelines or calibrate_predictor) and target is not None:
        raise EdgekitError("--guidelines and --calibrate-predictor build their own models: drop the target.")
    if guidelines:
        from edgekit.cli_design import bench_guidelines

        bench_guidelines(profiles, options, only, sizes, channel_scale, out, as_json)
        return
    if calibrate_predictor:
        from edgekit.cli_design import calibrate_predictor as calibrate

        calibrate(profiles, options, families, widths, resolutions, as_json)
        return
    if target is None:
        raise EdgekitError("no target: give an artifact directory or a model file, --guidelines or "
                           "--calibrate-predictor.")
    with err_console.status(f"benchmarking on {', '.join(p.name for p in profiles)}", spinner="dots") as status:
        def done(outcome: Any, profile: Any) -> None:
            status.update(f"{profile.name}: {'failed' if isinstance(outcome, EdgekitError) else 'done'}")

        runs_done, failures = run_bench(target, profiles, options, on_done=done)
    if as_json:
        _print_json({"runs": [vars(r) for r in runs_done],
                     "failures": [{"device": p.name, "error": str(e)} for p, e in failures]})
    else:
        _print_bench(runs_done)
    for profile, error in failures:
        err_console.print(f"[bold red]error:[/] {profile.name}: {error}", highlight=False, soft_wrap=True)
    if failures:
        raise typer.Exit(1)


def _print_bench(runs: list[Any]) -> None:
    table = Table(title="latency (ms)")
    for col in ("device", "file", "runtime", "threads", "load", "first", "mean", "std", "min", "p50", "p90",
                "p99", "max", "runs", "RSS MB", "XNNPACK"):
        table.add_column(col, justify="left" if col in ("device", "file", "runtime") else "right")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for run in runs:
        for r in run.results:
            s, d = r["steady"], r.get("delegation", {})
            xnn = f"{d['delegated']}/{d['nodes']}" if "nodes" in d else "-"
            rss = r.get("rss_load_mb", r.get("memory_overall_mb"))
            table.add_row(run.device, r["file"], f"{r['runtime']} {r.get('runtime_version') or ''}".strip(),
                          str(r["threads"]), ms(r.get("load_ms")), ms(r.get("first_ms")), ms(s["mean_ms"]),
                          ms(s["std_ms"]), ms(s["min_ms"]), ms(s["p50_ms"]), ms(s["p90_ms"]), ms(s["p99_ms"]),
                          ms(s["max_ms"]), str(s["count"]), "-" if rss is None else f"{rss:.1f}", xnn)
    console.print(table)
    for run in runs:
        where = run.info.get("cpu_model") or run.info.get("model") or "?"
        console.print(f"{run.device}: {where}, {run.info.get('arch', '?')}, {run.info.get('cores', '?')} cores, "
                      f"runner peak RSS {run.info.get('peak_rss_mb', 0):.0f} MB", highlight=False)
        for warning in run.warnings:
            console.print(f"[yellow]warning:[/] {run.device}: {warning}", highlight=False)
        for r in run.results:
            for warning in r.get("warnings", []):
                console.print(f"[yellow]warning:[/] {run.device} {r['file']} x{r['threads']}: {warning}",
                              highlight=False)
            if r.get("op_profile"):
                ops = ", ".join(f"{op} {t:.3f}" for op, t in list(r["op_profile"]["by_op_type_ms"].items())[:6])
                console.print(f"{run.device} {r['file']} x{r['threads']} ms per op type: {ops}", highlight=False)


@app.command()
@_user_errors
def predict(
    name: Annotated[str, typer.Argument(help="Model name, e.g. mobilenet_v2 (see `edgekit models`).")],
    width: Annotated[float, typer.Option(help="Width multiplier.")] = 1.0,
    resolution: Annotated[int | None, typer.Option(help="Input size in pixels (default: the model's).")] = None,
    res_mult: Annotated[float | None, typer.Option("--res-mult", help="Resolution multiplier.")] = None,
    num_classes: Annotated[int, typer.Option(help="Classifier outputs.")] = 1000,
    in_channels: Annotated[int, typer.Option(help="Input channels (1 for grayscale).")] = 3,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Family option KEY=VALUE.")] = None,
    device: Annotated[str, typer.Option("--device", "-d", help="Device profile name (its table must exist).")]
    = "local",
    runtime: Annotated[str, typer.Option(help="onnxruntime or tflite: the runtime the table was made for.")]
    = "onnxruntime",
    threads: Annotated[int, typer.Option(min=1, help="Thread count the table was made for.")] = 1,
    measure: Annotated[bool, typer.Option(
        "--measure", help="Also export the model and time it on the device now, to show the error.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Predicted latency of a model on a device, from the device's latency table (no model is run).

    The model is cut into its blocks; each is looked up in the table made by `edgekit bench
    --calibrate-predictor`, or estimated from measured blocks of its kind. Shown beside the measured latency when
    the model was timed at calibration, or with --measure.
    """
    from edgekit.cli_design import predict as run_predict
    from edgekit.devices.profiles import load_profile

    spec = _spec_from_cli(name, width, resolution, res_mult, num_classes, in_channels, option)
    run_predict(spec, [load_profile(device)], runtime, threads, measure, as_json)


@app.command()
@_user_errors
def search(
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="Latency budget in milliseconds.")],
    device: Annotated[str, typer.Option("--device", "-d", help="Device profile name (its table must exist).")]
    = "local",
    families: Annotated[str | None, typer.Option(
        help="Families or model names, comma-separated, e.g. MobileNetV2,ShuffleNetV2 (default: all).")] = None,
    widths: Annotated[str | None, typer.Option(help="Width multipliers (default 0.5,0.75,1.0).")] = None,
    resolutions: Annotated[str | None, typer.Option(help="Resolutions (default 128,160,192,224).")] = None,
    metric: Annotated[str, typer.Option(
        help="accuracy (trained results where found, else MACs) or macs.")] = "accuracy",
    results: Annotated[str | None, typer.Option(
        help="Directories searched for trained artifacts (default runs,sweeps).")] = None,
    recipe: Annotated[Path | None, typer.Option(
        help="Base recipe for the winner's training recipe (its data, training and input channels).")] = None,
    num_classes: Annotated[int, typer.Option(help="Classifier outputs (a recipe's own win).")] = 1000,
    in_channels: Annotated[int, typer.Option(help="Input channels (a recipe's own win).")] = 3,
    top: Annotated[int, typer.Option(min=1, help="How many candidates to list.")] = 10,
    runtime: Annotated[str, typer.Option(help="onnxruntime or tflite: the runtime the table was made for.")]
    = "onnxruntime",
    threads: Annotated[int, typer.Option(min=1, help="Thread count the table was made for.")] = 1,
    out: Annotated[Path | None, typer.Option(
        help="Where search.json and the winner's recipe go (default search-DEVICE).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Models that fit a latency budget on a device: family x width x resolution, predicted, filtered, ranked.

    Ranked by the top-1 of trained results found under --results (from `edgekit run` and `edgekit sweep`), else by
    MACs as a proxy, which the output states. Writes the winner's recipe and prints the `edgekit run` command that
    trains it. Exit code 1 when nothing fits.
    """
    from edgekit.cli_design import search as run_search
    from edgekit.devices.profiles import load_profile

    run_search([load_profile(device)], runtime, threads, latency_ms, families, widths, resolutions, metric, results,
               recipe, num_classes, in_channels, top, out, as_json)


devices_app = typer.Typer(help="Device profiles: list them, or check one (`edgekit devices check NAME`).",
                          invoke_without_command=True, no_args_is_help=False)
app.add_typer(devices_app, name="devices")


@devices_app.callback()
@_user_errors
def devices_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the device profiles edgekit can find (devices/*.yaml, your edgekit directory, $EDGEKIT_DEVICES)."""
    if ctx.invoked_subcommand is not None:
        return
    from edgekit.devices.profiles import LOCAL, find_profiles, read_profile, search_path

    profiles = {"local": LOCAL} | {name: read_profile(path) for name, path in find_profiles().items()}
    rows = [{"name": name, "transport": p.transport, "arch": p.arch, "threads": list(p.threads), "cores": p.cores,
             "description": p.description, "file": str(p.source) if p.source else None}
            for name, p in profiles.items()]
    if as_json:
        _print_json(rows)
        return
    table = Table(title="devices")
    for col in ("name", "transport", "arch", "threads", "cores", "description"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["name"], row["transport"], row["arch"] or "-", ",".join(map(str, row["threads"])),
                      row["cores"] or "-", row["description"])
    console.print(table)
    console.print("looked in: " + ", ".join(str(d) for d in search_path()), highlight=False)


@devices_app.command("check")
@_user_errors
def devices_check(
    name: Annotated[str, typer.Argument(help="A device profile name (or a profile .yaml).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Reach a device and probe it: arch, CPU, cores, Python, runtimes, governor, free space. Exit 1 if unusable."""
    from edgekit.devices.doctor import check_device
    from edgekit.devices.profiles import load_profile

    profile = load_profile(name)
    checks, info = check_device(profile)
    failed = [c for c in checks if not c.ok and c.required]
    if as_json:
        _print_json({"device": profile.name, "ok": not failed, "checks": [c.to_dict() for c in checks],
                     "info": info})
    else:
        table = Table(title=f"{profile.name} ({profile.transport})")
        for col in ("check", "status", "detail", "fix"):
            table.add_column(col)
        for c in checks:
            status = "[green]ok[/]" if c.ok else ("[red]missing[/]" if c.required else "[yellow]advice[/]")
            table.add_row(c.name, status, c.detail, c.fix)
        console.print(table)
    if failed:
        raise typer.Exit(1)


# The CI-facing verbs live in their own module; importing it registers them on `app`.
from edgekit import cli_gate  # noqa: E402, F401


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


if __name__ == "__main__":
    main()
