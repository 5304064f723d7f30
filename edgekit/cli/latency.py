"""`edgekit latency calibrate | predict | search`: a device's latency table, a model's predicted latency from it,
and the models that fit a latency budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgekit.cli.bench import MIN_SECONDS_HELP, RUNS_HELP, WARMUP_SECONDS_HELP, bench_options
from edgekit.cli.common import (
    JSON_HELP,
    Runtime,
    console,
    err_console,
    parse_list,
    parse_options,
    print_json,
    progress,
    user_errors,
    warn,
)
from edgekit.core.ui import status_line

latency_app = typer.Typer(
    help="Latency without running the model: calibrate a device's latency table once, then predict any model at any "
         "width and resolution, or search for the models that fit a budget.", no_args_is_help=True)

TABLE_DEVICE_HELP = "Device profile name (its latency table must exist: `edgekit latency calibrate`)."
RUNTIME_HELP = ("onnxruntime or tflite: the runtime the table is for; auto, as on every verb, the runtime of the "
                "file timed: here ONNX Runtime for FP32 models, TFLite with --int8.")
INT8_HELP = ("The INT8 table: full-integer TFLite (XNNPACK, ReLU6 fused), the INT8 file `edgekit export --int8` "
             "makes for a device (made by `edgekit latency calibrate --int8`).")


@latency_app.command()
@user_errors
def calibrate(
    device: Annotated[str, typer.Option("--device", "-d", help="Device profile name.")] = "local",
    family: Annotated[str | None, typer.Option(
        help="Families or model names to calibrate on, e.g. MobileNetV2,shufflenet_v2_x1_0 (default: every named "
             "network but EfficientNet-B5-B7).")] = None,
    width: Annotated[str | None, typer.Option(help="Width multipliers (default 0.5,1.0).")] = None,
    resolution: Annotated[str | None, typer.Option(help="Input resolutions (default 128,224).")] = None,
    runtime: Annotated[Runtime, typer.Option(help=RUNTIME_HELP)] = Runtime.auto,
    threads: Annotated[int, typer.Option(min=1, help="The thread count (a table is per thread count).")] = 1,
    warmup_seconds: Annotated[float | None, typer.Option(help=WARMUP_SECONDS_HELP)] = None,
    runs: Annotated[int | None, typer.Option(help=RUNS_HELP)] = None,
    min_seconds: Annotated[float | None, typer.Option(help=MIN_SECONDS_HELP)] = None,
    int8: Annotated[bool, typer.Option(
        "--int8", help="Time the blocks and models as full-integer INT8 TFLite (XNNPACK, ReLU6 fused), the file "
                       "a device runs after `edgekit export --int8`: a table of its own.")] = False,
    stable: Annotated[bool, typer.Option(
        "--stable", help="Time as `edgekit bench --stable` does: the thread's CPU time at 1 thread, 400 runs in 80 "
                         "rounds (figures that repeat on a busy machine; longer).")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start a new table instead of extending the device's.")
                     ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Time the blocks of a grid of models, and the models whole, on a device; store its latency table.

    A one-time job per device, runtime, thread count and precision (FP32, or INT8 TFLite with --int8); run again
    with other families or sizes to extend the table: only what is new is measured. A table is extended only by
    the clock it was made with (--stable or not). The default grid takes tens of minutes on a laptop CPU,
    and hours with --int8 (every block is quantized and converted): calibrate the families you will search.
    """
    from edgekit.devices.profiles import load_profile
    from edgekit.predictor.calibrate import calibrate_device
    from edgekit.predictor.table import one_setting

    profile = load_profile(device)
    options = bench_options(runtime, str(threads), warmup_seconds=warmup_seconds, runs=runs, min_seconds=min_seconds,
                            stable=stable)
    runtime_name, n_threads, precision = one_setting([profile], options.runtime, options.threads, "calibration",
                                                     int8)
    with status_line(err_console, f"calibrating {profile.name}") as status:
        result = calibrate_device(
            profile, options, runtime_name, n_threads, parse_list(family, "--family", str, "MobileNetV2"),
            parse_list(width, "--width", float, "0.5,1.0", what="widths"),
            parse_list(resolution, "--resolution", int, "128,224", what="resolutions"), progress=status.update,
            precision=precision, fresh=fresh)
    if as_json:
        print_json(result)
        return
    out = Table(title=f"latency predictor for {result['device']} ({setting_label(result)}): calibration models")
    for col in ("model", "measured ms", "sum of units ms", "predicted ms", "error"):
        out.add_column(col, justify="left" if col == "model" else "right")
    for row in result["models"]:
        error = 100 * (row["predicted_ms"] / row["measured_ms"] - 1)
        out.add_row(row["model"], f"{row['measured_ms']:.3f}", f"{row['sum_units_ms']:.3f}",
                    f"{row['predicted_ms']:.3f}", f"{error:+.1f}%")
    console.print(out)
    terms = ", ".join(f"{k} {v:+.4g}" for k, v in result["correction"].items())
    in_context = result["units_in_context"]
    context = (f"{in_context} timed in context (their share of a profiled calibration model)" if in_context else
               "timed alone (this runtime gives no per-node profile)")
    console.print(f"{result['units']} units measured, {context}; correction: {terms}", highlight=False)
    if result["kernel_probes"]:
        console.print(f"kernel probes (widths between the grid's that run channels per group it does not): "
                      f"{', '.join(result['kernel_probes'])}", highlight=False)
    console.print(f"wrote {result['table']}", highlight=False)
    for warning in result["warnings"]:
        warn(warning)


@latency_app.command()
@user_errors
def predict(
    name: Annotated[str, typer.Argument(help="Model name, e.g. mobilenet_v2 (see `edgekit models`).")],
    width: Annotated[float, typer.Option(help="Width multiplier.")] = 1.0,
    resolution: Annotated[int | None, typer.Option(help="Input size in pixels (default: the model's).")] = None,
    res_mult: Annotated[float | None, typer.Option("--res-mult", help="Resolution multiplier.")] = None,
    num_classes: Annotated[int, typer.Option(help="Classifier outputs.")] = 1000,
    in_channels: Annotated[int, typer.Option(help="Input channels (1 for grayscale).")] = 3,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Family option KEY=VALUE.")] = None,
    device: Annotated[str, typer.Option("--device", "-d", help=TABLE_DEVICE_HELP)] = "local",
    runtime: Annotated[Runtime, typer.Option(help=RUNTIME_HELP)] = Runtime.auto,
    threads: Annotated[int, typer.Option(min=1, help="Thread count the table was made for.")] = 1,
    measure: Annotated[bool, typer.Option(
        "--measure", help="Also export the model and time it on the device now, to show the error.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help=INT8_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Predicted latency of a model on a device, from the device's latency table (no model is run).

    The model is cut into its blocks; each is looked up in the table made by `edgekit latency calibrate`, or
    estimated from measured blocks of its kind. Shown beside the measured latency when the model was timed at
    calibration, or with --measure.
    """
    from edgekit.devices.profiles import load_profile
    from edgekit.models import resolve_spec
    from edgekit.predictor.predict import predict_latency

    spec = resolve_spec(name, width=width, resolution=resolution, res_mult=res_mult, num_classes=num_classes,
                        in_channels=in_channels, **parse_options(option or []))
    profile = load_profile(device)
    with status_line(err_console, f"predicting {spec.name}" + (f", measuring on {device}" if measure else "")):
        result = predict_latency(spec, profile, runtime.value, threads, measure, int8)
    if as_json:
        print_json(result)
        return
    title = f"{spec.name} w{spec.width:g} r{spec.resolution} on {result['device']} ({setting_label(result)})"
    out = Table(title=title, caption="ms: the unit timed on the device (measured) or estimated from measured units "
                                     "of its kind (fit); the total adds the whole-model correction.")
    for col in ("unit", "kind", "in", "out", "MACs (M)", "ms", "source"):
        out.add_column(col, justify="right" if col in ("MACs (M)", "ms") else "left")
    for u in result["units"]:
        out.add_row(u["name"], u["kind"], "x".join(map(str, u["input_shape"])), "x".join(map(str, u["output_shape"])),
                    f"{u['macs'] / 1e6:,.2f}", f"{u['ms']:.3f}", u["source"])
    console.print(out)
    console.print(f"predicted latency: [bold]{result['predicted_ms']:.2f} ms[/] (sum of units "
                  f"{result['sum_units_ms']:.2f} ms, {result['measured_fraction']:.0%} of it from units measured on "
                  f"{result['device']})", highlight=False)
    if result["measured_ms"] is not None:
        console.print(f"measured latency: {result['measured_ms']:.2f} ms, {result['measured_how']}; prediction "
                      f"error {result['error_pct']:+.1f}%", highlight=False)
    for warning in result["warnings"]:
        warn(warning)


@latency_app.command()
@user_errors
def search(
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="Latency budget in milliseconds.")],
    device: Annotated[str, typer.Option("--device", "-d", help=TABLE_DEVICE_HELP)] = "local",
    family: Annotated[str | None, typer.Option(
        help="Families or model names, comma-separated, e.g. MobileNetV2,ShuffleNetV2 (default: all).")] = None,
    width: Annotated[str | None, typer.Option(help="Width multipliers (default 0.5,0.75,1.0).")] = None,
    resolution: Annotated[str | None, typer.Option(help="Resolutions (default 128,160,192,224).")] = None,
    metric: Annotated[str, typer.Option(
        help="accuracy (trained results where found, else MACs) or macs.")] = "accuracy",
    results: Annotated[str | None, typer.Option(
        help="Directories searched for trained artifacts, comma-separated (default runs,sweeps).")] = None,
    recipe: Annotated[Path | None, typer.Option(
        help="Base recipe for the winner's training recipe (its data, training and input channels).")] = None,
    num_classes: Annotated[int, typer.Option(help="Classifier outputs (a recipe's own win).")] = 1000,
    in_channels: Annotated[int, typer.Option(help="Input channels (a recipe's own win).")] = 3,
    top: Annotated[int, typer.Option(min=1, help="How many candidates to list.")] = 10,
    runtime: Annotated[Runtime, typer.Option(help=RUNTIME_HELP)] = Runtime.auto,
    threads: Annotated[int, typer.Option(min=1, help="Thread count the table was made for.")] = 1,
    out: Annotated[Path | None, typer.Option(
        help="Where search.json and the winner's recipe go (default search-DEVICE).")] = None,
    int8: Annotated[bool | None, typer.Option(
        "--int8/--fp32", help="Predict the INT8 TFLite file (--int8) or the FP32 model (--fp32). Default: the format "
                              "--recipe deploys (INT8 TFLite unless it turns that off, or --runtime onnxruntime is "
                              "given), FP32 without a recipe.",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Models that fit a latency budget on a device: family x width x resolution, predicted, filtered, ranked.

    Ranked by the top-1 of trained results found under --results (from `edgekit run` and `edgekit sweep`), else by
    MACs as a proxy, which the output states. Writes the winner's recipe and prints the `edgekit run` command that
    trains it. Exit code 1 when nothing fits.
    """
    from edgekit.devices.profiles import load_profile
    from edgekit.predictor.search import SEARCH_RESOLUTIONS, SEARCH_WIDTHS, search_models

    families = parse_list(family, "--family", str, "MobileNetV2,ShuffleNetV2")
    found = search_models(
        load_profile(device), latency_ms, runtime.value, threads,
        list(families) if families else None,
        parse_list(width, "--width", float, "0.5,1.0", default=SEARCH_WIDTHS, what="widths") or SEARCH_WIDTHS,
        parse_list(resolution, "--resolution", int, "128,224", default=SEARCH_RESOLUTIONS, what="resolutions")
        or SEARCH_RESOLUTIONS, metric,
        [Path(r) for r in parse_list(results, "--results", str, "runs,sweeps") or ()] if results else None,
        recipe, num_classes, in_channels, out,
        progress=lambda labels: progress(labels, "predicting", enabled=not as_json), int8=int8)
    result, kept = found.result, found.kept
    if as_json:
        print_json({**result, "candidates": result["candidates"][:top]})
        return
    if not kept:
        err_console.print(f"[yellow]no candidate is predicted within {latency_ms:g} ms[/] on {result['device']}: the "
                          f"fastest is about {found.fastest_ms:.1f} ms; raise --latency-ms or add smaller --width or "
                          "--resolution values.", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    view = Table(title=f"{len(kept)} of {result['predicted']} candidates within {latency_ms:g} ms on "
                       f"{result['device']} ({setting_label(result)}), ranked by {result['ranked_by']}")
    for col in ("#", "model", "family", "width", "res", "MACs (M)", "params (M)", "predicted ms", "top-1"):
        view.add_column(col, justify="left" if col in ("model", "family") else "right")
    for i, c in enumerate(kept[:top], start=1):
        view.add_row(str(i), c.spec.name, c.spec.family, f"{c.spec.width:g}", str(c.spec.resolution),
                     f"{c.macs / 1e6:,.1f}", f"{c.params / 1e6:,.2f}", f"{c.predicted_ms:.2f}",
                     "-" if c.top1 is None else f"{c.top1:.2%}")
    console.print(view)
    console.print(f"train the winner: [bold]{result['train_winner']}[/]", highlight=False)
    console.print(f"wrote {found.written}", highlight=False)


@latency_app.command()
@user_errors
def score(
    device: Annotated[str, typer.Option("--device", "-d", help=TABLE_DEVICE_HELP)] = "local",
    formats: Annotated[str, typer.Option(
        help="The tables to score, comma-separated, each in turn: fp32-onnxruntime, fp32-tflite, int8-tflite (the "
             "full-integer file `edgekit export --int8` makes).")] = "fp32-onnxruntime",
    threads: Annotated[int, typer.Option(min=1, help="Thread count the table was made for.")] = 1,
    family: Annotated[str | None, typer.Option(
        help="Families or model names to time and predict (default: every named network but "
             "EfficientNet-B5-B7).")] = None,
    width: Annotated[str | None, typer.Option(help="Width multipliers (default 0.5,0.75,1.0).")] = None,
    resolution: Annotated[str | None, typer.Option(help="Resolutions (default 128,160,224).")] = None,
    calibrate: Annotated[bool, typer.Option(
        "--calibrate", help="Calibrate a fresh table (the default grid, saved as the device's table) in the same "
                            "run that times the models: the score then measures the predictor, not the drift "
                            "between two runs.")] = False,
    calib_family: Annotated[str | None, typer.Option(
        help="With --calibrate: the families of the fresh table's grid (default: the default grid's).")] = None,
    stable: Annotated[bool, typer.Option("--stable", help="Time as `edgekit bench --stable` does.")] = False,
    again: Annotated[int, typer.Option(
        min=0, metavar="N", help="Time N of the models twice in the run, as separate files: the device against "
                                 "itself.")] = 0,
    measured: Annotated[Path | None, typer.Option(
        help="An earlier --out file: score the table against its times, timing nothing (FORMAT in the name is "
             "replaced by each format).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write every figure as JSON here (FORMAT in the name is replaced by each format).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Keep the exported models here, for a faster rerun.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """How well the latency table predicts: models timed whole on the device against their predictions.

    Prints every model's measured and predicted time, the error distribution (all points, points the table never
    saw, by how much of the prediction was measured), and how far the device agreed with itself: a prediction
    cannot be better than that. The figures of docs/predictor.md come from this verb.
    """
    from edgekit.devices.profiles import load_profile
    from edgekit.predictor.score import (
        SCORE_RESOLUTIONS,
        SCORE_WIDTHS,
        score_formats,
        score_predictor,
        score_specs,
        write_score,
    )
    from edgekit.predictor.search import named_models

    chosen = score_formats(formats, out=out, measured=measured)
    profile = load_profile(device)
    families = parse_list(family, "--family", str, "MobileNetV2,ShuffleNetV2")
    calib_families = parse_list(calib_family, "--calib-family", str, "MobileNetV2")
    specs = score_specs(
        list(families) if families else None,
        parse_list(width, "--width", float, "0.5,1.0", default=SCORE_WIDTHS, what="widths") or SCORE_WIDTHS,
        parse_list(resolution, "--resolution", int, "128,224", default=SCORE_RESOLUTIONS, what="resolutions")
        or SCORE_RESOLUTIONS)
    options = bench_options(Runtime.auto, str(threads), stable=stable)
    scores = []
    for fmt in chosen:
        with status_line(err_console, f"scoring the {fmt} table of {profile.name}") as status:
            result = score_predictor(
                profile, fmt, threads, specs, options, calibrate=calibrate,
                calibration_names=tuple(named_models(list(calib_families))) if calib_families else None,
                measured=Path(str(measured).replace("FORMAT", fmt)) if measured else None, again=again,
                cache=cache, progress=status.update)
        if out is not None:
            write_score(result, Path(str(out).replace("FORMAT", fmt)))
        scores.append(result)
        if not as_json:
            _print_score(result)
    if as_json:
        print_json([s.to_dict() for s in scores])
        return
    if len(scores) > 1:
        view = Table(title="per format")
        for col in ("format", "device vs itself <=5%", "new points <=10%", "all points <=10%"):
            view.add_column(col, justify="left" if col == "format" else "right")
        for s in scores:
            view.add_row(s.format, _share(s.summary.get("device vs itself, one run"), "within_5pct"),
                         _share(s.summary.get("new points"), "within_10pct"),
                         _share(s.summary.get("all"), "within_10pct"))
        console.print(view)


def _share(d: dict | None, key: str) -> str:
    return f"{d[key]:.0%} of {d['models']}" if d else "-"


def _print_score(result: Any) -> None:
    rows = Table(title=f"predicted against measured on {result.device} ({result.precision.upper()} {result.runtime}, "
                       f"{result.threads} thread(s))",
                 caption="* a calibration model (its units and its whole time are in the table); plain sum: the "
                         "units' times added without the whole-model correction")
    for col in ("model", "measured ms", "predicted ms", "error", "plain sum", "measured units"):
        rows.add_column(col, justify="left" if col == "model" else "right")
    for r in result.rows:
        rows.add_row(r.model + (" *" if r.calibration_point else ""), f"{r.measured_ms:.3f}", f"{r.predicted_ms:.3f}",
                     f"{r.error_pct:+.1f}%", f"{r.sum_error_pct:+.1f}%", f"{r.measured_fraction:.0%}")
    console.print(rows)
    summary = Table(title="error distribution")
    for col in ("set", "models", "<=5%", "<=10%", "<=20%", "median", "p90", "max", "bias"):
        summary.add_column(col, justify="left" if col == "set" else "right")
    for label, d in result.summary.items():
        summary.add_row(label, str(d["models"]), f"{d['within_5pct']:.0%}", f"{d['within_10pct']:.0%}",
                        f"{d['within_20pct']:.0%}", f"{d['median_abs_pct']:.1f}%", f"{d['p90_abs_pct']:.1f}%",
                        f"{d['max_abs_pct']:.1f}%", f"{d['mean_pct']:+.1f}%")
    console.print(summary)
    clock = "thread CPU time" if result.clock == "cpu" else "wall clock"
    console.print(f"device: {result.device}, {result.info.get('cpu_model') or '?'}, {result.info.get('arch', '?')}; "
                  f"table of {result.table['created']} with {result.table['units']} units and "
                  f"{result.table['calibration_models']} calibration models, timed by the {clock}", highlight=False)


def setting_label(result: dict) -> str:
    """What a table is for, as a title says it: "INT8 tflite, 1 thread(s)"."""
    return f"{result['precision'].upper()} {result['runtime']}, {result['threads']} thread(s)"
