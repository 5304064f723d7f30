"""How well the latency predictor predicts: registered models at several widths and resolutions, each timed whole
on the device and predicted from its latency table; prints every model and the error distribution.

    edgekit latency calibrate --device local            # once: the table
    python tools/predictor_error.py --device local [--out predictor_error.json]
    python tools/predictor_error.py --device local --measured predictor_error.json   # rescore, no timing
    python tools/predictor_error.py --device local --calibrate   # a fresh table, timed in the same run as the models
    python tools/predictor_error.py --calibrate --stable --again 40 --formats fp32-onnxruntime,int8-tflite

A machine's speed drifts between runs (a shared VM's by 10-30%, a phone's with its temperature), and a prediction
cannot be better than the device agrees with itself. The script therefore prints that agreement: the calibration
models timed again now against their times in the table. --calibrate removes the drift between the two runs: it
builds a fresh table (the default grid, saved as the device's table) in the same interleaved run that times the
models, so the figures measure the predictor, not the machine's mood.

--formats scores each format in turn (FP32 ONNX Runtime, FP32 TFLite, the INT8 TFLite file edgekit's export makes)
and ends with one line per format: how well the device agreed with itself (--again) and the predictor's share
within 10%.

Points that were calibration models are reported apart from new ones: for a new point the units are looked up or,
at widths and resolutions the table never saw, estimated from the measured units of their kind.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

from edgekit.benchmark.host import BenchOptions, stable_options
from edgekit.core.errors import EdgekitError
from edgekit.core.files import output_lock
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.models import ModelSpec, build, get_entry, list_models, resolve_spec
from edgekit.predictor.calibrate import (
    CALIBRATION_NAMES,
    CALIBRATION_RESOLUTIONS,
    CALIBRATION_WIDTHS,
    LARGEST,
    calibrate,
    calibration_grid,
    point_key,
)
from edgekit.predictor.measure import time_on_device
from edgekit.predictor.search import named_models
from edgekit.predictor.table import LatencyTable, load_table, table_path
from edgekit.predictor.units import cut_spec
from edgekit.runtime.harness import clock_for

AGAIN = " again"


def distribution(errors: list[float]) -> dict[str, float]:
    absolute = sorted(abs(e) for e in errors)
    if not absolute:
        return {}
    return {"models": len(absolute), "within_5pct": sum(a <= 5 for a in absolute) / len(absolute),
            "within_10pct": sum(a <= 10 for a in absolute) / len(absolute),
            "within_20pct": sum(a <= 20 for a in absolute) / len(absolute),
            "median_abs_pct": statistics.median(absolute), "p90_abs_pct": absolute[int(0.9 * (len(absolute) - 1))],
            "max_abs_pct": absolute[-1], "mean_pct": statistics.fmean(errors)}


def _specs(args: argparse.Namespace) -> list[ModelSpec]:
    names = args.names.split(",") if args.names else [
        n for n in list_models() if not get_entry(n).design_space and n not in LARGEST]
    return [resolve_spec(n, width=float(w), resolution=int(r)) for n in names
            for w in args.width.split(",") for r in args.resolution.split(",")]


def _spec_of(key: str) -> ModelSpec:
    """The spec behind a point_key ("NAME wWIDTH rRESOLUTION")."""
    name, width, resolution = key.split()
    return resolve_spec(name, width=float(width[1:]), resolution=int(resolution[1:]))


def _time_whole(specs: list[ModelSpec], profile: DeviceProfile, args: argparse.Namespace) -> tuple[dict, dict]:
    """Each spec timed whole on the device: point_key -> p50 ms, and the device's description."""
    models = _built(specs, args.again)
    print(f"\rtiming {len(specs)} models on {profile.name} ({args.precision} {args.runtime}, {args.threads} "
          "thread(s))",
          file=sys.stderr)
    timed = time_on_device([], models, profile, _options(args), args.runtime,
                           progress=_progress, cache=args.cache, precision=args.precision)
    print(file=sys.stderr)
    return timed.models_ms, timed.info


def _calibrate_and_time(specs: list[ModelSpec], profile: DeviceProfile,
                        args: argparse.Namespace) -> tuple[LatencyTable, dict, dict]:
    """A fresh table of the default calibration grid and the specs timed whole, all in one interleaved run."""
    models = _built(specs, args.again)
    specs_grid, probes = calibration_grid(args.calib, CALIBRATION_WIDTHS, CALIBRATION_RESOLUTIONS)
    done = calibrate(specs_grid + probes, profile,
                     _options(args), args.runtime, args.threads,
                     progress=_progress, cache=args.cache, fresh=True, also_time=models, precision=args.precision)
    print(file=sys.stderr)
    path = table_path(profile.name, args.runtime, args.threads, args.precision)
    with output_lock(path):
        done.table.save(path)
    print(f"table saved: {path}", file=sys.stderr)
    return done.table, done.also_timed_ms, done.table.info


def _options(args: argparse.Namespace) -> BenchOptions:
    options = BenchOptions(threads=(args.threads,))
    return stable_options(options) if args.stable else options


def _progress(what: str) -> None:
    print(f"\r{what:60s}", end="", file=sys.stderr)


def _built(specs: list[ModelSpec], again: int = 0) -> dict:
    """The specs' models by point_key, and the first `again` of them a second time (key + AGAIN): exported and
    loaded apart, they show how far the device disagrees with itself within one run."""
    models = {}
    for i, spec in enumerate(specs):
        print(f"\rbuilding {i + 1}/{len(specs)}", end="", file=sys.stderr)
        torch.manual_seed(0)
        models[point_key(spec)] = build(spec).eval()
    for key in list(models)[::max(1, len(models) // again)][:again] if again else []:
        models[key + AGAIN] = models[key]
    return models


FORMATS = {"fp32-onnxruntime": ("onnxruntime", "fp32"), "fp32-tflite": ("tflite", "fp32"),
           "int8-tflite": ("tflite", "int8")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="local")
    parser.add_argument("--formats", default="fp32-onnxruntime",
                        help=f"comma-separated, each scored in turn: {', '.join(FORMATS)} (int8-tflite: the "
                             "full-integer file edgekit's INT8 export makes)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--names", help="comma-separated model names (default: every named model but B5-B7)")
    parser.add_argument("--width", default="0.5,0.75,1.0")
    parser.add_argument("--resolution", default="128,160,224")
    parser.add_argument("--calib-names", help="with --calibrate: the calibration grid's models (default: the "
                                              "default grid's, every named model but B5-B7)")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here (FORMAT in the name is replaced "
                                                 "by each format)")
    parser.add_argument("--cache", type=Path, help="keep the exported models here, for a faster rerun")
    parser.add_argument("--stable", action="store_true",
                        help="measure as edgekit bench --stable does (docs/bench.md)")
    parser.add_argument("--calibrate", action="store_true",
                        help="calibrate a fresh table in the same device run (saved as the device's table)")
    parser.add_argument("--again", type=int, default=0, metavar="N",
                        help="time N of the models twice in the run, as separate files: the device against itself")
    parser.add_argument("--measured", type=Path,
                        help="an earlier --out file: score the table against its measured times, timing nothing")
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        print(f"error: --formats {args.formats}: choose from {', '.join(FORMATS)}.", file=sys.stderr)
        return 2
    for flag, path in (("--out", args.out), ("--measured", args.measured)):
        if path is not None and len(formats) > 1 and "FORMAT" not in str(path):
            print(f"error: {flag} {path} with {len(formats)} formats: put FORMAT in the file name (one file per "
                  "format, e.g. error-FORMAT.json).", file=sys.stderr)
            return 2
    try:
        args.calib = tuple(named_models(args.calib_names.split(","))) if args.calib_names else CALIBRATION_NAMES
    except EdgekitError as exc:
        print(f"error: --calib-names: {exc}", file=sys.stderr)
        return 2
    results = {}
    for fmt in formats:
        args.runtime, args.precision = FORMATS[fmt]
        if len(formats) > 1:
            print(f"\n=== {fmt} ===", file=sys.stderr)
        summary = score(args, fmt)
        if summary is None:
            return 2
        results[fmt] = summary
    print(f"\n{'format':18s} {'device vs itself <=5%':>22s} {'new points <=10%':>17s} {'all points <=10%':>17s}")
    for fmt, summary in results.items():
        itself, new, every = (summary.get(k) for k in ("device vs itself, one run", "new points", "all"))
        print(f"{fmt:18s} {_share(itself, 'within_5pct'):>22s} {_share(new, 'within_10pct'):>17s} "
              f"{_share(every, 'within_10pct'):>17s}")
    return 0


def _share(d: dict | None, key: str) -> str:
    return f"{d[key]:.0%} of {d['models']}" if d else "-"


def score(args: argparse.Namespace, fmt: str) -> dict | None:
    """Time (or read) the models, predict them from the table of one format, print the rows and the summary."""
    try:
        profile = load_profile(args.device)
        table = None if args.calibrate else load_table(profile.name, args.runtime, args.threads, args.precision)
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if table is not None and not args.measured and table.clock != clock_for(_options(args).clock, args.threads):
        print(f"error: the {fmt} table was timed by the {table.clock} clock: "
              f"{'add' if table.clock == 'cpu' else 'drop'} --stable to time the models the same way.",
              file=sys.stderr)
        return None
    if args.calibrate:
        specs = _specs(args)
        table, measured_ms, info = _calibrate_and_time(specs, profile, args)
    elif args.measured:
        measured_file = Path(str(args.measured).replace("FORMAT", fmt))
        try:
            earlier = json.loads(measured_file.read_text())
            measured_ms = {r["model"]: r["measured_ms"] for r in earlier["rows"]}
            measured_ms |= {key + AGAIN: ms for key, ms in earlier.get("timed_twice_ms", {}).items()}
            info = earlier["info"]
            timed_on = (earlier["device"], earlier.get("runtime", args.runtime), earlier.get("threads", args.threads),
                        earlier.get("precision", "fp32"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error: {measured_file} is not a predictor_error.py --out file ({type(exc).__name__}): "
                  "write one with --out.", file=sys.stderr)
            return None
        if earlier.get("clock", "wall") != table.clock:
            print(f"error: {measured_file} was timed by the {earlier.get('clock', 'wall')} clock and the {fmt} "
                  f"table by the {table.clock} clock: calibrate the table the same way (--stable or not).",
                  file=sys.stderr)
            return None
        if timed_on != (profile.name, args.runtime, args.threads, args.precision):
            print(f"error: {measured_file} was timed on {timed_on[0]} ({timed_on[3]} {timed_on[1]}, {timed_on[2]} "
                  "thread(s)): give the same --device, --formats and --threads.", file=sys.stderr)
            return None
        specs = [_spec_of(key) for key in measured_ms]
    else:
        specs = _specs(args)
        measured_ms, info = _time_whole(specs, profile, args)
    twice = {key[: -len(AGAIN)]: ms for key, ms in measured_ms.items() if key.endswith(AGAIN)}
    measured_ms = {key: ms for key, ms in measured_ms.items() if not key.endswith(AGAIN)}
    then = {m["key"]: m["measured_ms"] for m in table.models}
    calibrated = set(then)
    rows = []
    for spec in specs:
        key = point_key(spec)
        prediction = table.predict(cut_spec(spec))
        measured = measured_ms[key]
        rows.append({"model": key, "calibration_point": key in calibrated, "measured_ms": measured,
                     "predicted_ms": prediction.ms, "sum_units_ms": prediction.sum_units_ms,
                     "measured_fraction": prediction.measured_fraction,
                     "error_pct": 100 * (prediction.ms / measured - 1),
                     "sum_error_pct": 100 * (prediction.sum_units_ms / measured - 1)})
    print(f"{'model':42s} {'measured':>9s} {'predicted':>9s} {'error':>7s} {'plain sum':>9s} {'measured units':>14s}")
    for r in sorted(rows, key=lambda r: r["error_pct"]):
        print(f"{r['model'] + (' *' if r['calibration_point'] else ''):42s} {r['measured_ms']:9.3f} "
              f"{r['predicted_ms']:9.3f} {r['error_pct']:+6.1f}% {r['sum_error_pct']:+8.1f}% "
              f"{r['measured_fraction']:13.0%}")
    print("* a calibration model (its units and its whole time are in the table)")
    summary = {
        "all": distribution([r["error_pct"] for r in rows]),
        "new points": distribution([r["error_pct"] for r in rows if not r["calibration_point"]]),
        "calibration points": distribution([r["error_pct"] for r in rows if r["calibration_point"]]),
        "plain sum of units, all": distribution([r["sum_error_pct"] for r in rows]),
        # where the error comes from: units timed on the device, or units the per-kind fit estimates
        "units >=90% measured": distribution([r["error_pct"] for r in rows if r["measured_fraction"] >= 0.9]),
        "units <10% measured": distribution([r["error_pct"] for r in rows if r["measured_fraction"] < 0.1]),
        # the floor: the calibration models timed now against their own times in the table (0 with --calibrate)
        # the floor within one run: a model timed twice, from two files loaded apart (--again)
        "device vs itself, one run": distribution([100 * (twice[key] / measured_ms[key] - 1) for key in twice]),
        "device vs itself": distribution([100 * (r["measured_ms"] / then[r["model"]] - 1) for r in rows
                                          if r["model"] in then]),
    }
    print(f"\n{'set':28s} {'models':>6s} {'<=5%':>6s} {'<=10%':>6s} {'<=20%':>6s} {'median':>7s} {'p90':>6s} "
          f"{'max':>6s} {'bias':>6s}")
    for label, d in summary.items():
        if d:
            print(f"{label:28s} {d['models']:6d} {d['within_5pct']:6.0%} {d['within_10pct']:6.0%} "
                  f"{d['within_20pct']:6.0%} {d['median_abs_pct']:6.1f}% {d['p90_abs_pct']:5.1f}% "
                  f"{d['max_abs_pct']:5.1f}% {d['mean_pct']:+5.1f}%")
    print(f"\ndevice: {profile.name}, {info.get('cpu_model') or '?'}, {info.get('arch', '?')}; {fmt} table of "
          f"{table.created} with {len(table.units)} units and {len(table.models)} calibration models, timed by "
          f"the {'thread CPU time' if table.clock == 'cpu' else 'wall clock'}")
    if args.out:
        Path(str(args.out).replace("FORMAT", fmt)).write_text(json.dumps(
            {"device": profile.name, "runtime": args.runtime, "precision": args.precision, "threads": args.threads,
             "clock": table.clock, "info": info, "summary": summary, "rows": rows, "timed_twice_ms": twice},
            indent=2))
    return summary


if __name__ == "__main__":
    sys.exit(main())
