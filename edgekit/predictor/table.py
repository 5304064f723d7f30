"""A device's latency table: measured units, a fallback for unmeasured ones, and a whole-model correction.

Prediction is nn-Meter's idea at block granularity: a model's latency is the sum of its units' latencies, each
looked up by signature in the table (measured on the device) or, for a unit never measured, estimated in two steps:

1. a least-squares fit over the measured units of its kind (over all units where a kind has few) on what its
   layers do: the MACs of each kind of convolution, the elements they write, activation and weight bytes, layers;
2. times the fit's error on the measured units of that kind nearest to it (a weighted geometric mean over
   NEIGHBOURS of them), which carries what a linear fit cannot: that a kernel runs faster per MAC at some channel
   counts than at others. Nearest means on the same kernel path, of the same template (the same block at
   another width or resolution), then of similar size.

A unit timed alone is not the unit inside a model: alone, its weights stay in cache between runs, and its input
and output pay the runtime's layout conversions at the graph edges (ONNX Runtime's NCHWc reorders). So where the
runtime profiles per node (ONNX Runtime), a unit's time is its share of the calibration models that hold it,
run whole (`context.py`); elsewhere it is its time alone. Calibration also fits, on the models it timed whole,

    model_ms = a * sum(unit_ms) + b * weight_MB + c * activation_MB + d * units

so the table's figure for a model is this corrected sum (with units in context, a is near 1 and the rest near 0).
The coefficients are stored with the table.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.errors import EdgekitError
from edgekit.core.files import edgekit_home
from edgekit.predictor.units import KERNEL_FEATURES, OP_FEATURES, Unit
from edgekit.runtime.formats import for_runtime

# 2: unit records carry their per-layer-kind work ("ops"); 3: and their kernel features; 4: signatures leave out
# dropout rates, units carry their template and their time in context, models the signatures of their units
TABLE_VERSION = 4
CLOCKS = ("wall", "cpu")  # what a table's units and models were timed by: bench's default, or --stable
CORRECTION_TERMS = ("sum_units_ms", "weight_mb", "activation_mb", "units")
MIN_FIT = 12  # measured units of a kind needed before the kind gets a fit of its own (the fit has 10 terms)
NEIGHBOURS = 3  # measured units of the kind whose fit error an estimate carries
# How far apart two units are for a difference in kernel features, in the log-size units of `_position`: a
# mismatch in channel alignment (8 against 16) weighs as much as a 250x difference in size, so an estimate takes
# its correction from units on the same kernel path wherever the table has them.
ALIGNMENT_WEIGHT = 8.0
GROUP_WIDTH_WEIGHT = 2.0
# ... and a unit of another template (another block design, stride or grouping) as much as a 50x difference in
# size: the same block at the calibrated widths brackets the one at a width between them.
TEMPLATE_WEIGHT = 4.0


def table_path(device: str, runtime: str, threads: int, precision: str = "fp32") -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in device)
    return edgekit_home() / "predictors" / f"{safe}-{runtime}-{precision}-t{threads}.json"


def _activation_mb(d: dict[str, Any]) -> float:
    return 4 * (math.prod(d["input_shape"]) + math.prod(d["output_shape"])) / 1e6


def _weight_mb(d: dict[str, Any]) -> float:
    return 4 * d["params"] / 1e6


def unit_features(unit: Unit | dict[str, Any]) -> list[float]:
    """What a unit's cost is regressed on: MACs of each kind of layer, the elements those layers write, activation
    bytes in and out, weight bytes, the number of layers, and a constant."""
    d = unit.to_dict() if isinstance(unit, Unit) else unit
    ops = d["ops"]
    return [*(ops[k] / 1e6 for k in OP_FEATURES if k.startswith("macs_")), 4 * ops["layer_outputs"] / 1e6,
            _activation_mb(d), _weight_mb(d), float(ops["layers"]), 1.0]


def _position(d: dict[str, Any]) -> np.ndarray:
    """Where a unit sits among the units of its kind: log sizes, so that neighbours are units of similar scale,
    and its kernel features, so that they run the same kernels."""
    ops = d["ops"]
    sizes = np.log1p(np.array([d["macs"], math.prod(d["input_shape"]), math.prod(d["output_shape"]), d["params"],
                               ops["macs_depthwise"], ops["layers"]], dtype=np.float64))
    kernels = [ALIGNMENT_WEIGHT * math.log2(ops["alignment"]), GROUP_WIDTH_WEIGHT * math.log1p(ops["group_width"])]
    return np.concatenate([sizes, kernels])


def model_features(units: list[Unit | dict[str, Any]], sum_units_ms: float) -> list[float]:
    dicts = [u.to_dict() if isinstance(u, Unit) else u for u in units]
    return [sum_units_ms, sum(map(_weight_mb, dicts)), sum(map(_activation_mb, dicts)), float(len(units))]


class _Estimator:
    """Estimates for units the table never measured: a fit per kind, times its error on the nearest measured units."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_kind.setdefault(record["kind"], []).append(record)
        self.kernels = {_kernel_key(r) for r in records}
        self.everything = _lstsq(records)
        self.fits = {kind: _lstsq(rows) for kind, rows in by_kind.items() if len(rows) >= MIN_FIT}
        self.residuals = {kind: (np.array([_position(r) for r in rows]),
                                 np.array([math.log(r["ms"] / self._fitted(r)) if r["ms"] > 0 else 0.0
                                           for r in rows]),
                                 np.array([r.get("template", "") for r in rows]))
                          for kind, rows in by_kind.items()}

    def _fitted(self, d: dict[str, Any]) -> float:
        coef = self.fits.get(d["kind"], self.everything)
        return max(float(np.dot(unit_features(d), coef)), 1e-4)

    def measured_kernels(self, unit: Unit) -> bool:
        """Whether the table measured a unit of this kind on the same kernel path (alignment, group width)."""
        return _kernel_key(unit.to_dict()) in self.kernels

    def __call__(self, unit: Unit) -> tuple[float, str]:
        d = unit.to_dict()
        fitted = self._fitted(d)
        source = f"fit: {d['kind']}" if d["kind"] in self.fits else "fit: all kinds"
        if d["kind"] not in self.residuals:
            return fitted, source
        positions, log_errors, templates = self.residuals[d["kind"]]
        distance = (np.linalg.norm(positions - _position(d), axis=1)
                    + TEMPLATE_WEIGHT * (templates != d.get("template", "")))
        nearest = np.argsort(distance)[:NEIGHBOURS]
        weights = 1.0 / (distance[nearest] + 0.05)
        return fitted * math.exp(float(np.dot(weights, log_errors[nearest]) / weights.sum())), source


def _kernel_key(d: dict[str, Any]) -> tuple[Any, ...]:
    return d["kind"], *(d["ops"][k] for k in KERNEL_FEATURES)


@dataclass
class UnitPrediction:
    unit: Unit
    ms: float
    source: str  # "measured", "fit: KIND" or "fit: all kinds"
    kernels_measured: bool = True  # False: no unit of its kind on its kernel path was measured (a weak estimate)


@dataclass
class Prediction:
    units: list[UnitPrediction]
    sum_units_ms: float
    ms: float  # the corrected whole-model figure

    @property
    def measured_fraction(self) -> float:
        """Share of the summed time that comes from units measured on the device (the rest is fitted)."""
        measured = sum(u.ms for u in self.units if u.source == "measured")
        return measured / self.sum_units_ms if self.sum_units_ms else 0.0


@dataclass
class LatencyTable:
    device: str
    runtime: str
    threads: int
    precision: str
    info: dict[str, Any]
    units: dict[str, dict[str, Any]]  # signature -> unit record with "ms"
    models: list[dict[str, Any]] = field(default_factory=list)  # calibration models: spec, measured, sum
    correction: dict[str, float] = field(default_factory=dict)
    created: str = ""
    version: int = TABLE_VERSION
    # how its units and models were timed: "wall" (the wall clock, bench's default) or "cpu" (the thread's CPU
    # time, bench --stable); tables from before this was recorded were timed by the wall clock
    clock: str = "wall"

    # --- fitting ------------------------------------------------------------------------------------------------

    def _estimator(self) -> _Estimator:
        key = (len(self.units), sum(r["ms"] for r in self.units.values()))
        cached = self.__dict__.get("_estimator_cache")
        if cached is None or cached[0] != key:
            cached = (key, _Estimator(list(self.units.values())))
            self.__dict__["_estimator_cache"] = cached  # not a dataclass field: never saved
        return cached[1]

    def refit(self) -> None:
        """Each unit's time from the calibration models it sits in (where they were profiled; timed alone
        elsewhere), each model's sum of units from those, and the correction on the sums."""
        from edgekit.predictor.context import context_times

        in_context = context_times(self.models)
        for signature, record in self.units.items():
            record.setdefault("alone_ms", record["ms"])
            record["ms"] = in_context.get(signature, record["alone_ms"] or record["ms"])
            record["in_context"] = signature in in_context
        for model in self.models:
            records = [self.units[sig] for sig in model["units"]]
            model["sum_units_ms"] = sum(r["ms"] for r in records)
            model["features"] = model_features(records, model["sum_units_ms"])
        self.fit_correction()

    def fit_correction(self) -> None:
        """Fit the whole-model correction on the calibration models (a plain sum where there are too few)."""
        rows = [m for m in self.models if m.get("measured_ms")]
        if len(rows) < 2 * len(CORRECTION_TERMS):
            self.correction = {"sum_units_ms": 1.0, "weight_mb": 0.0, "activation_mb": 0.0, "units": 0.0}
            return
        a = np.array([m["features"] for m in rows])
        y = np.array([m["measured_ms"] for m in rows])
        coef = np.linalg.lstsq(a / y[:, None], np.ones_like(y), rcond=None)[0]  # minimise relative error
        self.correction = dict(zip(CORRECTION_TERMS, map(float, coef), strict=True))

    def without(self, signatures: set[str]) -> LatencyTable:
        """A copy that never measured these units (to score its estimates against their measured times)."""
        return replace(self, units={k: v for k, v in self.units.items() if k not in signatures})

    # --- predicting ---------------------------------------------------------------------------------------------

    def predict(self, units: list[Unit]) -> Prediction:
        if not self.units:
            raise EdgekitError(f"the latency table for {self.device} is empty: calibrate it again "
                               f"(edgekit latency calibrate --device {self.device}).")
        estimate = self._estimator()
        rows = []
        for unit in units:
            record = self.units.get(unit.signature)
            if record is not None:
                rows.append(UnitPrediction(unit, record["ms"], "measured"))
                continue
            rows.append(UnitPrediction(unit, *estimate(unit), estimate.measured_kernels(unit)))
        total = sum(r.ms for r in rows)
        return Prediction(rows, total, self.corrected(model_features([r.unit for r in rows], total)))

    def corrected(self, features: list[float]) -> float:
        """The whole-model figure from a model's features (the plain sum before any correction is fitted)."""
        if not self.correction:
            return features[0]
        return max(sum(self.correction.get(k, 0.0) * v for k, v in zip(CORRECTION_TERMS, features, strict=True)),
                   0.0)

    def predict_record(self, record: dict[str, Any]) -> float:
        """The prediction for a calibration model, from the features stored with it."""
        return self.corrected(record["features"])

    # --- storage ------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, origin: str) -> LatencyTable:
        fix = "calibrate it again (edgekit latency calibrate)"
        if isinstance(data, dict) and data.get("version") in range(1, TABLE_VERSION):
            # older tables keyed units by signatures that counted dropout rates: nothing can be looked up in them
            raise EdgekitError(f"{origin} was made by an older edgekit (table version {data['version']}): {fix}.")
        if not isinstance(data, dict) or data.get("version") != TABLE_VERSION:
            raise EdgekitError(f"{origin} is not an edgekit latency table of version {TABLE_VERSION}: {fix}.")
        try:
            # tables from before the clock was recorded were timed by the wall clock
            fields = {k: data[k] for k in cls.__dataclass_fields__ if k != "clock"}
            table = cls(**fields, clock=data.get("clock", "wall"))
            if table.clock not in CLOCKS:
                raise ValueError(f"clock {table.clock!r} is not one of {', '.join(CLOCKS)}")
            for record in table.units.values():
                if not (isinstance(record["ms"], (int, float)) and np.isfinite(record["ms"]) and record["ms"] >= 0):
                    raise ValueError("a unit time is not a finite number")
                unit_features(record)
                _position(record)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EdgekitError(f"{origin} is damaged ({type(exc).__name__}: {exc}): {fix}.") from None
        return table

    def save(self, path: Path) -> None:
        from edgekit.core.files import write_json_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_dict())


def _lstsq(records: list[dict[str, Any]]) -> np.ndarray:
    """Least squares of time on the unit features, relative error weighted (small units matter as much)."""
    a = np.array([unit_features(r) for r in records])
    y = np.array([r["ms"] for r in records])
    w = 1.0 / np.maximum(y, 1e-3)
    return np.linalg.lstsq(a * w[:, None], y * w, rcond=None)[0]


def load_table(device: str, runtime: str, threads: int, precision: str = "fp32") -> LatencyTable:
    path = table_path(device, runtime, threads, precision)
    if not path.is_file():
        how = "--int8" if precision == "int8" else f"--runtime {runtime}"
        raise EdgekitError(f"no latency table for {device} ({runtime}, {precision}, {threads} thread(s)): "
                           f"calibrate one with edgekit latency calibrate --device {device} {how} "
                           f"--threads {threads}.")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise EdgekitError(f"{path} cannot be read ({type(exc).__name__}): calibrate again "
                           "(edgekit latency calibrate).") from None
    return LatencyTable.from_dict(data, str(path))


def new_table(device: str, runtime: str, threads: int, info: dict[str, Any], precision: str = "fp32",
              clock: str = "wall") -> LatencyTable:
    return LatencyTable(device, runtime, threads, precision, info, {},
                        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), clock=clock)


def add_units(table: LatencyTable, units: Iterable[Unit], alone: dict[str, float],
              in_context: dict[str, float]) -> None:
    """New units, with their time alone where they were timed alone (else None) and in context where a profiled
    model holds them; `refit` picks which the table uses."""
    for unit in units:
        if unit.signature in alone or unit.signature in in_context:
            ms = in_context.get(unit.signature, alone.get(unit.signature))
            table.units[unit.signature] = {**unit.to_dict(), "ms": ms, "alone_ms": alone.get(unit.signature)}




# A latency table is for one format as deployed: FP32 models in either runtime, or the INT8 file edgekit's export
# makes for a device, full-integer TFLite (XNNPACK).
PRECISIONS = ("fp32", "int8")
INT8_RUNTIME = "tflite"


def one_setting(profiles: list[Any], runtime: str, threads: tuple[int, ...] | None, job: str,
                int8: bool = False) -> tuple[str, int, str]:
    """A latency table is per device, runtime, thread count and precision: the one of each a job works on,
    as (runtime, threads, precision)."""
    if len(profiles) != 1:
        raise EdgekitError(f"{job} works on one device at a time: give one --device.")
    if threads is not None and len(threads) != 1:
        raise EdgekitError(f"{job} uses one thread count: give one --threads value (a table is per thread count).")
    if int8:
        if runtime not in ("auto", INT8_RUNTIME):
            raise EdgekitError(f"--int8 with --runtime {runtime}: INT8 latency tables are for full-integer TFLite "
                               "(XNNPACK), the INT8 file a device runs; leave out --runtime.")
        runtime = INT8_RUNTIME
    runtime = "onnxruntime" if runtime == "auto" else runtime
    for_runtime(runtime)  # an unknown runtime is refused there
    return runtime, (threads or (1,))[0], "int8" if int8 else "fp32"
