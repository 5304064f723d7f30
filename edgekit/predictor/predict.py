"""One model's predicted latency on a device, with what the table could not vouch for said as warnings."""

from __future__ import annotations

from typing import Any

from edgekit.models import ModelSpec, build
from edgekit.predictor.calibrate import point_key
from edgekit.predictor.table import LatencyTable, load_table, one_setting
from edgekit.predictor.units import Unit, cut_spec


def kernel_path(unit: Unit) -> str:
    group = f", {unit.ops['group_width']} channels per group" if unit.ops["group_width"] else ""
    return f"{unit.kind} ({unit.ops['alignment']}-aligned channels{group})"


def measure_now(spec: ModelSpec, profile: Any, table: LatencyTable) -> float:
    """Export the model as the table's format and time it on the device now, by the table's clock (ms)."""
    from edgekit.benchmark.host import BenchOptions, stable_options
    from edgekit.predictor.measure import time_on_device

    model = build(spec).eval()
    options = BenchOptions(threads=(table.threads,))
    if table.clock == "cpu":
        options = stable_options(options)
    timed = time_on_device([], {"model": model}, profile, options, table.runtime, precision=table.precision)
    return timed.models_ms["model"]


def predict_latency(spec: ModelSpec, profile: Any, runtime: str = "onnxruntime", threads: int = 1,
                    measure: bool = False, int8: bool = False) -> dict[str, Any]:
    """The prediction from the device's table (FP32, or with `int8` the full-integer TFLite one), its units, the
    measured latency where known (timed at calibration, or now with `measure`), and warnings for kinds of block
    and kernel paths the table never measured."""
    runtime, threads, precision = one_setting([profile], runtime, (threads,), "predict", int8)
    table = load_table(profile.name, runtime, threads, precision)
    prediction = table.predict(cut_spec(spec))
    measured, measured_how = None, None
    calibrated = next((m for m in table.models if m["key"] == point_key(spec)
                       and m["spec"]["num_classes"] == spec.num_classes
                       and m["spec"]["in_channels"] == spec.in_channels), None)
    if measure:
        measured, measured_how = measure_now(spec, profile, table), "measured now"
    elif calibrated:
        measured, measured_how = calibrated["measured_ms"], f"measured at calibration ({table.created})"
    measured_kinds = {record["kind"] for record in table.units.values()}
    unknown = sorted({u.unit.kind for u in prediction.units if u.unit.kind not in measured_kinds})
    warnings = [f"{', '.join(unknown)} never measured on {profile.name}: estimated from other kinds of block; "
                f"calibrate with --family {spec.name} for a figure you can trust."] if unknown else []
    new_paths = sorted({kernel_path(u.unit) for u in prediction.units
                        if not u.kernels_measured and u.unit.kind not in unknown})
    if new_paths:
        warnings.append(f"{'; '.join(new_paths)}: never measured on {profile.name} on these kernel paths (a "
                        f"runtime picks its kernel by channel alignment and channels per group), so their estimate "
                        f"can be off by tens of percent; calibrate with --family {spec.name} for a figure you "
                        "can trust.")
    return {"spec": spec.to_dict(), "device": profile.name, "runtime": runtime, "threads": threads,
            "precision": precision,
            "warnings": warnings, "predicted_ms": prediction.ms, "sum_units_ms": prediction.sum_units_ms,
            "measured_fraction": prediction.measured_fraction, "measured_ms": measured,
            "measured_how": measured_how,
            "error_pct": None if measured is None else 100 * (prediction.ms / measured - 1),
            "units": [{**u.unit.to_dict(), "ms": u.ms, "source": u.source} for u in prediction.units]}
