"""Device-aware design on the command line: `bench --guidelines`, `bench --calibrate-predictor`, `predict`, `search`."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgekit.cli import _print_json, _progress, console, err_console
from edgekit.core.errors import EdgekitError


def _parse_sizes(text: str | None) -> tuple[int, ...]:
    from edgekit.bench.guidelines import SIZES

    return parse_list(text, "--sizes", int, SIZES, 8, 512, what="sizes")


def _parse_only(text: str | None) -> tuple[str, ...] | None:
    from edgekit.bench.guidelines import EXPERIMENTS

    if text is None:
        return None
    keys = tuple(k.strip().upper() for k in text.split(",") if k.strip())
    known = [e.key for e in EXPERIMENTS]
    if not keys or any(k not in known for k in keys):
        raise EdgekitError(f"--only {text!r}: choose from {', '.join(known)}, e.g. --only G1,G3.")
    return keys


def bench_guidelines(profiles: list[Any], options: Any, only: str | None, sizes: str | None, channel_scale: float,
                     out: Path | None, as_json: bool) -> None:
    from edgekit.bench.guidelines import measure, plot, slowdowns, write_models
    from edgekit.core.files import output_lock, write_json_atomic

    if len(profiles) != 1:
        raise EdgekitError("--guidelines measures one device at a time: give one --device.")
    if not 0.05 <= channel_scale <= 4:
        raise EdgekitError(f"--channel-scale {channel_scale:g} is out of range: give a value from 0.05 to 4.")
    experiments, size_list = _parse_only(only), _parse_sizes(sizes)
    threads = options.threads or (1,)
    if len(threads) != 1:
        raise EdgekitError("--guidelines compares variants at one thread count: give one --threads value.")
    options = dataclasses.replace(options, threads=threads)
    fmt = "tflite" if options.runtime == "tflite" else "onnx"
    profile = profiles[0]
    out = out or Path(f"guidelines-{profile.name}")
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".models.", dir=out) as models_dir, err_console.status(
                "exporting the guideline models") as status:
            models = Path(models_dir)
            cases = write_models(models, fmt, size_list, channel_scale, experiments,
                                 progress=lambda what: status.update(f"exporting {what}"))
            status.update(f"timing {len(cases)} models on {profile.name} ({fmt}, {threads[0]} thread(s))")
            device = measure(cases, models, profile, options)
        loss = slowdowns(cases)
        result = {"device": device, "format": fmt, "threads": threads[0],
                  "cases": [{**c.to_dict(), "slowdown_pct": loss.get(c.file)} for c in cases]}
        write_json_atomic(out / "guidelines.json", result)
        title = f"ShuffleNetV2 guidelines on {profile.name} ({device['info'].get('arch', '?')}, {fmt}, " \
                f"{threads[0]} thread(s))"
        plot(cases, out / "guidelines.png", title)
    if as_json:
        _print_json(result)
        return
    _print_guidelines(cases, loss, title)
    console.print(f"wrote {out / 'guidelines.json'} and {out / 'guidelines.png'}", highlight=False)
    if device["warnings"]:
        for warning in device["warnings"]:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _print_guidelines(cases: list[Any], loss: dict[str, float], title: str) -> None:
    from edgekit.bench.guidelines import EXPERIMENTS

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



# --- the latency predictor: bench --calibrate-predictor, predict, search ------------------------------------------

def parse_list(text: str | None, option: str, kind: type, default: tuple[Any, ...], lo: float,
               hi: float, what: str = "values") -> tuple[Any, ...]:
    """A comma-separated option (`--widths 0.5,1.0`), each value within [lo, hi]; `default` when not given."""
    if text is None:
        return default
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(not lo <= v <= hi for v in values):
        example = ",".join(str(v) for v in default)
        raise EdgekitError(f"{option} {text!r} is not a list of {what} from {lo:g} to {hi:g}: write e.g. "
                           f"{option} {example}.")
    return values


def _one_setting(profiles: list[Any], runtime: str, threads: tuple[int, ...] | None, verb: str) -> tuple[str, int]:
    if len(profiles) != 1:
        raise EdgekitError(f"{verb} works on one device at a time: give one --device.")
    if threads is not None and len(threads) != 1:
        raise EdgekitError(f"{verb} uses one thread count: give one --threads value (a table is per thread count).")
    runtime = "onnxruntime" if runtime == "auto" else runtime
    if runtime not in ("onnxruntime", "tflite"):
        raise EdgekitError(f"--runtime {runtime!r}: use onnxruntime or tflite.")
    return runtime, (threads or (1,))[0]


def calibrate_predictor(profiles: list[Any], options: Any, families: str | None, widths: str | None,
                        resolutions: str | None, as_json: bool) -> None:
    from edgekit.core.files import output_lock
    from edgekit.predictor.calibrate import CALIBRATION_NAMES, CALIBRATION_RESOLUTIONS, CALIBRATION_WIDTHS, calibrate
    from edgekit.predictor.calibrate import grid as calibration_grid
    from edgekit.predictor.search import named_models
    from edgekit.predictor.table import table_path

    runtime, threads = _one_setting(profiles, options.runtime, options.threads, "--calibrate-predictor")
    options = dataclasses.replace(options, threads=(threads,))
    names = tuple(named_models(families.split(","))) if families else CALIBRATION_NAMES
    specs = calibration_grid(names, parse_list(widths, "--widths", float, CALIBRATION_WIDTHS, 0.1, 4.0),
                             parse_list(resolutions, "--resolutions", int, CALIBRATION_RESOLUTIONS, 32, 1024))
    profile = profiles[0]
    path = table_path(profile.name, runtime, threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(path), err_console.status(f"calibrating {profile.name}") as status:
        done = calibrate(specs, profile, options, runtime, threads, progress=status.update)
        table, warnings = done.table, done.warnings
        table.save(path)
    fitted = [{"model": m["key"], "measured_ms": m["measured_ms"],
               "predicted_ms": table.predict_record(m), "sum_units_ms": m["sum_units_ms"]} for m in table.models]
    in_context = sum(1 for r in table.units.values() if r.get("in_context"))
    result = {"table": str(path), "device": profile.name, "runtime": runtime, "threads": threads,
              "units": len(table.units), "units_in_context": in_context, "models": fitted,
              "correction": table.correction, "warnings": warnings}
    if as_json:
        _print_json(result)
        return
    out = Table(title=f"latency predictor for {profile.name} ({runtime}, {threads} thread(s)): calibration models")
    for col in ("model", "measured ms", "sum of units ms", "predicted ms", "error"):
        out.add_column(col, justify="left" if col == "model" else "right")
    for row in fitted:
        error = 100 * (row["predicted_ms"] / row["measured_ms"] - 1)
        out.add_row(row["model"], f"{row['measured_ms']:.3f}", f"{row['sum_units_ms']:.3f}",
                    f"{row['predicted_ms']:.3f}", f"{error:+.1f}%")
    console.print(out)
    terms = ", ".join(f"{k} {v:+.4g}" for k, v in table.correction.items())
    context = (f"{in_context} timed in context (their share of a profiled calibration model)" if in_context else
               "timed alone (this runtime gives no per-node profile)")
    console.print(f"{len(table.units)} units measured, {context}; correction: {terms}", highlight=False)
    console.print(f"wrote {path}", highlight=False)
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def predict(spec: Any, profiles: list[Any], runtime: str, threads: int | None, measure: bool,
            as_json: bool) -> None:
    from edgekit.predictor.calibrate import point_key
    from edgekit.predictor.table import load_table
    from edgekit.predictor.units import cut_spec

    runtime, n_threads = _one_setting(profiles, runtime, None if threads is None else (threads,), "predict")
    profile = profiles[0]
    table = load_table(profile.name, runtime, n_threads)
    prediction = table.predict(cut_spec(spec))
    measured, measured_how = None, None
    calibrated = next((m for m in table.models if m["key"] == point_key(spec)
                       and m["spec"]["num_classes"] == spec.num_classes
                       and m["spec"]["in_channels"] == spec.in_channels), None)
    if measure:
        measured, measured_how = _measure_now(spec, profile, runtime, n_threads), "measured now"
    elif calibrated:
        measured, measured_how = calibrated["measured_ms"], f"measured at calibration ({table.created})"
    measured_kinds = {record["kind"] for record in table.units.values()}
    unknown = sorted({u.unit.kind for u in prediction.units if u.unit.kind not in measured_kinds})
    warnings = [f"{', '.join(unknown)} never measured on {profile.name}: estimated from other kinds of block; "
                f"calibrate with --families {spec.name} for a figure you can trust."] if unknown else []
    new_paths = sorted({_kernel_path(u.unit) for u in prediction.units
                        if not u.kernels_measured and u.unit.kind not in unknown})
    if new_paths:
        warnings.append(f"{'; '.join(new_paths)}: never measured on {profile.name} on these kernel paths (a "
                        f"runtime picks its kernel by channel alignment and channels per group), so their estimate "
                        f"can be off by tens of percent; calibrate with --families {spec.name} for a figure you "
                        "can trust.")
    result = {"spec": spec.to_dict(), "device": profile.name, "runtime": runtime, "threads": n_threads,
              "warnings": warnings, "predicted_ms": prediction.ms, "sum_units_ms": prediction.sum_units_ms,
              "measured_fraction": prediction.measured_fraction, "measured_ms": measured,
              "measured_how": measured_how,
              "error_pct": None if measured is None else 100 * (prediction.ms / measured - 1),
              "units": [{**u.unit.to_dict(), "ms": u.ms, "source": u.source} for u in prediction.units]}
    if as_json:
        _print_json(result)
        return
    title = f"{spec.name} w{spec.width:g} r{spec.resolution} on {profile.name} ({runtime}, {n_threads} thread(s))"
    out = Table(title=title, caption="ms: the unit timed alone on the device (measured) or estimated from "
                                     "measured units of its kind (fit); the total adds the whole-model correction.")
    for col in ("unit", "kind", "in", "out", "MACs (M)", "ms", "source"):
        out.add_column(col, justify="right" if col in ("MACs (M)", "ms") else "left")
    for u in prediction.units:
        out.add_row(u.unit.name, u.unit.kind, "x".join(map(str, u.unit.input_shape)),
                    "x".join(map(str, u.unit.output_shape)), f"{u.unit.macs / 1e6:,.2f}", f"{u.ms:.3f}", u.source)
    console.print(out)
    console.print(f"predicted latency: [bold]{prediction.ms:.2f} ms[/] (sum of units {prediction.sum_units_ms:.2f} "
                  f"ms, {prediction.measured_fraction:.0%} of it from units measured on {profile.name})",
                  highlight=False)
    if measured is not None:
        console.print(f"measured latency: {measured:.2f} ms, {measured_how}; prediction error "
                      f"{result['error_pct']:+.1f}%", highlight=False)
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _kernel_path(unit: Any) -> str:
    group = f", {unit.ops['group_width']} channels per group" if unit.ops["group_width"] else ""
    return f"{unit.kind} ({unit.ops['alignment']}-aligned channels{group})"


def _measure_now(spec: Any, profile: Any, runtime: str, threads: int) -> float:
    from edgekit.bench.host import BenchOptions
    from edgekit.models import build
    from edgekit.predictor.measure import time_on_device

    with err_console.status(f"measuring {spec.name} on {profile.name}"):
        model = build(spec).eval()
        timed = time_on_device([], {"model": model}, profile, BenchOptions(threads=(threads,)), runtime)
    return timed.models_ms["model"]


def search(profiles: list[Any], runtime: str, threads: int | None, latency_ms: float, families: str | None,
           widths: str | None, resolutions: str | None, metric: str, results: str | None, recipe: Path | None,
           num_classes: int, in_channels: int, top: int, out: Path | None, as_json: bool) -> None:
    from edgekit.core.files import output_lock, write_json_atomic
    from edgekit.predictor.search import (
        SEARCH_RESOLUTIONS,
        SEARCH_WIDTHS,
        candidates,
        known_accuracy,
        named_models,
        predict_candidate,
        winner_recipe,
        within_budget,
    )
    from edgekit.predictor.table import load_table
    from edgekit.recipe import load_recipe

    if metric not in ("accuracy", "macs"):
        raise EdgekitError(f"--metric {metric!r}: use accuracy or macs.")
    if not latency_ms > 0:
        raise EdgekitError(f"--latency-ms {latency_ms:g} is not a budget: give a time in milliseconds above 0.")
    runtime, n_threads = _one_setting(profiles, runtime, None if threads is None else (threads,), "search")
    profile = profiles[0]
    base = load_recipe(recipe) if recipe is not None else None
    if base is not None:
        in_channels = base.model.in_channels or in_channels
        num_classes = base.model.num_classes or num_classes
    names = named_models(families.split(",") if families else None)
    specs = candidates(names, parse_list(widths, "--widths", float, SEARCH_WIDTHS, 0.1, 4.0),
                       parse_list(resolutions, "--resolutions", int, SEARCH_RESOLUTIONS, 32, 1024), num_classes,
                       in_channels)
    table = load_table(profile.name, runtime, n_threads)
    roots = [Path(r.strip()) for r in (results or "runs,sweeps").split(",") if r.strip()]
    accuracy = known_accuracy(roots) if metric == "accuracy" else {}
    by_label = {f"{s.name} w{s.width:g} r{s.resolution}": s for s in specs}
    predicted = [predict_candidate(table, by_label[label], accuracy)
                 for label in _progress(list(by_label), "predicting", enabled=not as_json)]
    kept, total = within_budget(predicted, latency_ms, metric), len(predicted)
    ranked_by = ("top-1 of trained results, then MACs (a proxy) for untrained candidates"
                 if metric == "accuracy" and any(c.top1 is not None for c in kept) else "MACs (a proxy for accuracy)")
    out = out or Path(f"search-{profile.name}")
    command = None
    if kept:
        with output_lock(out):
            path = winner_recipe(kept[0], base, out)
        command = f"edgekit run {path}"
    result = {"device": profile.name, "runtime": runtime, "threads": n_threads, "budget_ms": latency_ms,
              "predicted": total, "within_budget": len(kept), "ranked_by": ranked_by,
              "table": table.created, "candidates": [c.to_dict() for c in kept], "train_winner": command}
    if kept:
        write_json_atomic(out / "search.json", result)
    if as_json:
        _print_json({**result, "candidates": result["candidates"][:top]})
        return
    if not kept:
        cheapest = min(c.predicted_ms for c in predicted)
        err_console.print(f"[yellow]no candidate is predicted within {latency_ms:g} ms[/] on {profile.name}: the "
                          f"fastest is about {cheapest:.1f} ms; raise --latency-ms or add smaller --widths or "
                          "--resolutions.", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    view = Table(title=f"{len(kept)} of {total} candidates within {latency_ms:g} ms on {profile.name} "
                       f"({runtime}, {n_threads} thread(s)), ranked by {ranked_by}")
    for col in ("#", "model", "family", "width", "res", "MACs (M)", "params (M)", "predicted ms", "top-1"):
        view.add_column(col, justify="left" if col in ("model", "family") else "right")
    for i, c in enumerate(kept[:top], start=1):
        view.add_row(str(i), c.spec.name, c.spec.family, f"{c.spec.width:g}", str(c.spec.resolution),
                     f"{c.macs / 1e6:,.1f}", f"{c.params / 1e6:,.2f}", f"{c.predicted_ms:.2f}",
                     "-" if c.top1 is None else f"{c.top1:.2%}")
    console.print(view)
    console.print(f"train the winner: [bold]{command}[/]", highlight=False)
    console.print(f"wrote {out / 'search.json'}", highlight=False)
