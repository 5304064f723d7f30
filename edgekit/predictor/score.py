"""How well a device's latency table predicts whole models: models at several widths and resolutions, each timed
whole on the device and predicted from the table; every row and the distribution of the errors.

A machine's speed drifts between runs (a shared VM's by 10-30%, a phone's with its temperature), and a prediction
cannot be better than the device agrees with itself, so the score carries that agreement too: the calibration
models timed now against their times in the table, and (`again`) models timed twice within one run. `calibrate`
removes the drift between the two runs: it builds a fresh table (the default grid, saved as the device's table) in
the same interleaved run that times the models, so the figures measure the predictor, not the machine's mood.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.models import ModelSpec, resolve_spec

# What a score is for: a table's runtime and precision, named as the predictor's user thinks of the file.
SCORE_FORMATS = {"fp32-onnxruntime": ("onnxruntime", "fp32"), "fp32-tflite": ("tflite", "fp32"),
                 "int8-tflite": ("tflite", "int8")}
SCORE_WIDTHS = (0.5, 0.75, 1.0)
SCORE_RESOLUTIONS = (128, 160, 224)
AGAIN = " again"  # a model timed a second time, from a file exported and loaded apart


@dataclass
class ScoreRow:
    model: str  # point_key: "NAME wWIDTH rRESOLUTION"
    calibration_point: bool  # its units and its whole time are in the table
    measured_ms: float
    predicted_ms: float
    sum_units_ms: float
    measured_fraction: float  # the share of the prediction from units timed on the device (the rest is fitted)
    error_pct: float
    sum_error_pct: float


@dataclass
class Score:
    device: str
    format: str  # a key of SCORE_FORMATS
    runtime: str
    precision: str
    threads: int
    clock: str
    info: dict[str, Any]
    table: dict[str, Any]  # created, units, calibration models
    rows: list[ScoreRow]
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    timed_twice_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distribution(errors: list[float]) -> dict[str, float]:
    """Shares within 5/10/20%, median, p90, max of the absolute errors (in %), and their signed mean (the bias)."""
    absolute = sorted(abs(e) for e in errors)
    if not absolute:
        return {}
    return {"models": len(absolute), "within_5pct": sum(a <= 5 for a in absolute) / len(absolute),
            "within_10pct": sum(a <= 10 for a in absolute) / len(absolute),
            "within_20pct": sum(a <= 20 for a in absolute) / len(absolute),
            "median_abs_pct": statistics.median(absolute), "p90_abs_pct": absolute[int(0.9 * (len(absolute) - 1))],
            "max_abs_pct": absolute[-1], "mean_pct": statistics.fmean(errors)}


def score_setting(fmt: str) -> tuple[str, str]:
    """(runtime, precision) of a score format; an unknown one is refused with the choices."""
    if fmt not in SCORE_FORMATS:
        raise EdgekitError(f"--formats {fmt}: choose from {', '.join(SCORE_FORMATS)}.")
    return SCORE_FORMATS[fmt]


def score_formats(text: str, out: Path | None = None, measured: Path | None = None) -> list[str]:
    """The formats of a comma-separated list, each checked; with several, a file flag must name FORMAT."""
    chosen = [f.strip() for f in text.split(",") if f.strip()]
    if not chosen:
        raise EdgekitError(f"--formats {text!r}: give one or more of {', '.join(SCORE_FORMATS)}.")
    for fmt in chosen:
        score_setting(fmt)
    for flag, path in (("--out", out), ("--measured", measured)):
        if path is not None and len(chosen) > 1 and "FORMAT" not in str(path):
            raise EdgekitError(f"{flag} {path} with {len(chosen)} formats: put FORMAT in the file name (one file "
                               "per format, e.g. score-FORMAT.json).")
    return chosen


def score_specs(names: list[str] | None, widths: tuple[float, ...], resolutions: tuple[int, ...]) -> list[ModelSpec]:
    """The models to score: every named model but EfficientNet-B5-B7 unless `names`, at each width and resolution."""
    from edgekit.predictor.calibrate import CALIBRATION_NAMES
    from edgekit.predictor.search import named_models

    chosen = named_models(names) if names else list(CALIBRATION_NAMES)
    return [resolve_spec(n, width=w, resolution=r) for n in chosen for w in widths for r in resolutions]


@dataclass
class Measured:
    """Whole-model times read back from an earlier score (`--out`), to score a table again without timing."""
    models_ms: dict[str, float]
    info: dict[str, Any]
    clock: str
    setting: tuple[str, str, int, str]  # device, runtime, threads, precision


def read_measured(path: Path) -> Measured:
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        models_ms = {r["model"]: float(r["measured_ms"]) for r in earlier["rows"]}
        models_ms |= {key + AGAIN: float(ms) for key, ms in earlier.get("timed_twice_ms", {}).items()}
        return Measured(models_ms, dict(earlier["info"]), earlier.get("clock", "wall"),
                        (earlier["device"], earlier["runtime"], int(earlier["threads"]), earlier["precision"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EdgekitError(f"{path} is not a score written by `edgekit latency score --out` "
                           f"({type(exc).__name__}): write one with --out.") from None


def spec_of_key(key: str) -> ModelSpec:
    """The spec behind a point_key ("NAME wWIDTH rRESOLUTION")."""
    name, width, resolution = key.split()
    return resolve_spec(name, width=float(width[1:]), resolution=int(resolution[1:]))


def _built(specs: list[ModelSpec], again: int, progress: Callable[[str], None] | None) -> dict[str, Any]:
    """The specs' models by point_key, and `again` of them a second time (key + AGAIN), spread over the list."""
    import torch

    from edgekit.models import build
    from edgekit.predictor.calibrate import point_key

    models = {}
    for i, spec in enumerate(specs):
        if progress:
            progress(f"building {i + 1}/{len(specs)}")
        torch.manual_seed(0)
        models[point_key(spec)] = build(spec).eval()
    for key in list(models)[::max(1, len(models) // again)][:again] if again else []:
        models[key + AGAIN] = models[key]
    return models


def score_predictor(profile: Any, fmt: str, threads: int, specs: list[ModelSpec], options: Any, *,
                    calibrate: bool = False, calibration_names: tuple[str, ...] | None = None,
                    measured: Path | None = None, again: int = 0, cache: Path | None = None,
                    progress: Callable[[str], None] | None = None) -> Score:
    """Time `specs` whole on `profile` (or read their times from `measured`), predict each from the device's table
    of `fmt`, and score the predictions. `calibrate` builds a fresh table of `calibration_names` (the default grid)
    in the same run; `again` times that many models twice, as separate files."""
    from edgekit.core.files import output_lock
    from edgekit.predictor.calibrate import (
        CALIBRATION_NAMES,
        CALIBRATION_RESOLUTIONS,
        CALIBRATION_WIDTHS,
        calibration_grid,
        point_key,
    )
    from edgekit.predictor.calibrate import calibrate as run_calibration
    from edgekit.predictor.measure import time_on_device
    from edgekit.predictor.table import load_table, table_path
    from edgekit.predictor.units import cut_spec
    from edgekit.runtime.harness import clock_for

    runtime, precision = score_setting(fmt)
    if calibrate and measured is not None:
        raise EdgekitError("--calibrate with --measured: --measured scores a table without timing anything; "
                           "give one of them.")
    if again < 0:
        raise EdgekitError(f"--again {again}: give how many models to time twice (0 or more).")
    earlier = read_measured(measured) if measured is not None else None
    clock = clock_for(options.clock, threads)
    table = None if calibrate else load_table(profile.name, runtime, threads, precision)
    if table is not None and measured is None and table.clock != clock:
        raise EdgekitError(f"the {fmt} table was timed by the {table.clock} clock: "
                           f"{'add' if table.clock == 'cpu' else 'drop'} --stable to time the models the same way.")
    if earlier is not None:
        assert table is not None
        if earlier.clock != table.clock:
            raise EdgekitError(f"{measured} was timed by the {earlier.clock} clock and the {fmt} table by the "
                               f"{table.clock} clock: calibrate the table the same way (--stable or not).")
        if earlier.setting != (profile.name, runtime, threads, precision):
            device, was_runtime, was_threads, was_precision = earlier.setting
            raise EdgekitError(f"{measured} was timed on {device} ({was_precision} {was_runtime}, {was_threads} "
                               "thread(s)): give the same --device, --formats and --threads.")
        measured_ms, info = earlier.models_ms, earlier.info
        specs = [spec_of_key(key) for key in measured_ms if not key.endswith(AGAIN)]
    elif calibrate:
        grid, probes = calibration_grid(calibration_names or CALIBRATION_NAMES, CALIBRATION_WIDTHS,
                                        CALIBRATION_RESOLUTIONS)
        done = run_calibration(grid + probes, profile, options, runtime, threads, progress=progress, cache=cache,
                               fresh=True, also_time=_built(specs, again, progress), precision=precision)
        table, measured_ms, info = done.table, done.also_timed_ms, done.table.info
        path = table_path(profile.name, runtime, threads, precision)
        with output_lock(path):
            table.save(path)
    else:
        if not specs:
            raise EdgekitError("nothing to score: give at least one model, width and resolution.")
        timed = time_on_device([], _built(specs, again, progress), profile, options, runtime, progress=progress,
                               cache=cache, precision=precision)
        measured_ms, info = timed.models_ms, timed.info
    assert table is not None
    twice = {key[: -len(AGAIN)]: ms for key, ms in measured_ms.items() if key.endswith(AGAIN)}
    whole = {key: ms for key, ms in measured_ms.items() if not key.endswith(AGAIN)}
    then = {m["key"]: m["measured_ms"] for m in table.models}
    rows = []
    for spec in specs:
        key = point_key(spec)
        prediction = table.predict(cut_spec(spec))
        ms = whole[key]
        rows.append(ScoreRow(key, key in then, ms, prediction.ms, prediction.sum_units_ms,
                             prediction.measured_fraction, 100 * (prediction.ms / ms - 1),
                             100 * (prediction.sum_units_ms / ms - 1)))
    rows.sort(key=lambda r: r.error_pct)
    summary = {
        "all": distribution([r.error_pct for r in rows]),
        "new points": distribution([r.error_pct for r in rows if not r.calibration_point]),
        "calibration points": distribution([r.error_pct for r in rows if r.calibration_point]),
        "plain sum of units, all": distribution([r.sum_error_pct for r in rows]),
        # where the error comes from: units timed on the device, or units the per-kind fit estimates
        "units >=90% measured": distribution([r.error_pct for r in rows if r.measured_fraction >= 0.9]),
        "units <10% measured": distribution([r.error_pct for r in rows if r.measured_fraction < 0.1]),
        # the floor within one run: a model timed twice, from two files loaded apart (`again`)
        "device vs itself, one run": distribution([100 * (twice[key] / whole[key] - 1) for key in twice]),
        # the floor between runs: the calibration models timed now against their times in the table
        "device vs itself": distribution([100 * (r.measured_ms / then[r.model] - 1) for r in rows
                                          if r.model in then]),
    }
    return Score(profile.name, fmt, runtime, precision, threads, table.clock, info,
                 {"created": table.created, "units": len(table.units), "calibration_models": len(table.models)},
                 rows, {label: d for label, d in summary.items() if d}, twice)


def write_score(score: Score, path: Path) -> None:
    from edgekit.core.files import write_json_atomic

    write_json_atomic(path, score.to_dict())
