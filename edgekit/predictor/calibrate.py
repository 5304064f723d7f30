"""`edgekit latency calibrate`: time the units of a grid of registered models, and the models whole."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgekit.core.errors import EdgekitError
from edgekit.models import ModelSpec, build, get_entry, list_models, resolve_spec
from edgekit.predictor.context import context_times, unit_shares
from edgekit.predictor.measure import time_on_device
from edgekit.predictor.table import LatencyTable, add_units, load_table, new_table
from edgekit.predictor.units import Unit, cut, cut_spec

# Every named network, at two widths and two resolutions: a unit at another width or resolution is then estimated
# from the same block of the same network on either side of it. Calibrating one network per family left the
# others' blocks to be estimated from another network's channel counts, and runtimes pick kernels by channel
# counts (see KERNEL_FEATURES in units.py): that was the predictor's largest error (docs/predictor.md). The
# largest EfficientNets take minutes each to time and add no block design the others lack.
LARGEST = ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
CALIBRATION_NAMES = tuple(n for n in list_models() if not get_entry(n).design_space and n not in LARGEST)
CALIBRATION_WIDTHS = (0.5, 1.0)
CALIBRATION_RESOLUTIONS = (128, 224)


def grid(names: tuple[str, ...], widths: tuple[float, ...], resolutions: tuple[int, ...],
         num_classes: int = 1000) -> list[ModelSpec]:
    for name in names:
        get_entry(name)  # an unknown name fails here, with the registry's suggestion
    return [resolve_spec(n, width=w, resolution=r, num_classes=num_classes)
            for n, w, r in itertools.product(names, widths, resolutions)]


def calibration_grid(names: tuple[str, ...], widths: tuple[float, ...],
                     resolutions: tuple[int, ...]) -> tuple[list[ModelSpec], list[ModelSpec]]:
    """The models a calibration times: the grid, and its kernel probes for the widths a search ranks."""
    from edgekit.predictor.search import SEARCH_WIDTHS

    specs = grid(names, widths, resolutions)
    return specs, kernel_probes(specs, SEARCH_WIDTHS)


def kernel_probes(specs: list[ModelSpec], widths: tuple[float, ...]) -> list[ModelSpec]:
    """Models to time beside a grid so that its tables know every group width the `widths` between its own run.

    A grouped convolution runs one small matrix product per group, and its speed per MAC swings 2-4x with the
    channels per group (tools/grouped_conv_speed.py); no fit over the grid's group widths tells what another one
    costs. ShuffleNetV1 at width 0.75 runs 15, 60, 120 and 240 channels per group, none of which widths 0.5 and 1.0
    run. So each network of the grid is cut at every width in `widths` that lies within the grid's widths but is not
    one of them, and where that width runs a group width (of a kind of unit) the grid does not, the network is timed
    at that width too, at the geometric middle of the grid's resolutions (168 px for 128 and 224): probed below
    the grid's resolutions (96 px), the estimates missed more the further their resolution lay from the probe
    (docs/predictor.md). Channel alignments need no probe: the grid's widths bracket them, and its neighbours
    carry them. Channels per group do not depend on the resolution: the grid is cut at one."""
    if not specs:
        return []
    grid_widths = {s.width for s in specs}
    between = [w for w in widths if min(grid_widths) < w < max(grid_widths) and w not in grid_widths]
    low, high = min(s.resolution for s in specs), max(s.resolution for s in specs)
    resolution = round(math.sqrt(low * high) / 8) * 8
    seen = {(u.kind, u.ops["group_width"]) for s in specs if s.resolution == low for u in cut_spec(s)}
    probes = []
    for name in dict.fromkeys(s.name for s in specs):
        template = next(s for s in specs if s.name == name)
        for width in between:
            probe = resolve_spec(name, width=width, resolution=resolution, num_classes=template.num_classes,
                                 in_channels=template.in_channels, **template.options)
            if any(u.ops["group_width"] and (u.kind, u.ops["group_width"]) not in seen for u in cut_spec(probe)):
                probes.append(probe)
    return probes


def point_key(spec: ModelSpec) -> str:
    return f"{spec.name} w{spec.width:g} r{spec.resolution}"


@dataclass
class Calibration:
    table: LatencyTable
    warnings: list[str]
    also_timed_ms: dict[str, float]  # the `also_time` models, whole, timed in the same run


def calibrate(specs: list[ModelSpec], profile: Any, options: Any, runtime: str, threads: int,
              progress: Callable[[str], None] | None = None, cache: Path | None = None,
              fresh: bool = False, also_time: dict[str, torch.nn.Module] | None = None,
              precision: str = "fp32") -> Calibration:
    """Time every distinct unit of `specs` and each spec whole, as FP32 files of `runtime` or (`precision`
    int8) full-integer TFLite; merge into the device's table and refit.

    Units and models already in the table are not measured again, so an extended calibration only pays for
    what is new; `fresh` starts a new table instead. A table is extended only by the clock it was timed by
    (--stable or not): figures of the two clocks differ and would not add up. `cache` keeps the exported files
    for a rerun. `also_time` (point_key -> model) are timed whole in the same interleaved run and not added to
    the table: models to score the table on without the drift between two runs.
    """
    from edgekit.runtime.harness import clock_for

    if not specs:
        raise EdgekitError("nothing to calibrate: give at least one family, width and resolution.")
    table = None
    if not fresh:
        with contextlib.suppress(EdgekitError):
            table = load_table(profile.name, runtime, threads, precision)
    clock = clock_for(options.clock, threads)
    if table is not None and table.clock != clock:
        timed_by = {"cpu": "the thread's CPU time (--stable)", "wall": "the wall clock (without --stable)"}
        raise EdgekitError(f"the {precision} latency table for {profile.name} ({runtime}, {threads} thread(s)) was "
                           f"timed by {timed_by[table.clock]}, and this calibration would time by "
                           f"{timed_by[clock]}: extend it the way it was made, or start a new one with --fresh.")
    models: dict[str, torch.nn.Module] = {}
    cuts: dict[str, list[Unit]] = {}
    for spec in specs:
        key = point_key(spec)
        if progress:
            progress(f"cutting {key} into units")
        torch.manual_seed(0)
        model = build(spec).eval()
        cuts[key] = cut(model, spec.input_shape)
        if table is None or not any(m["key"] == key for m in table.models):
            models[key] = model
    known = set(table.units) if table else set()
    todo = [u for units in cuts.values() for u in units if u.signature not in known]
    if not todo and not models and not also_time:
        assert table is not None
        return Calibration(table, [], {})
    # With a per-node profile (ONNX Runtime) a unit's time is its share of the models that hold it, and timing
    # it alone would only be thrown away; units no profile covers are timed alone after all.
    profiled = runtime == "onnxruntime"
    timed = time_on_device([] if profiled else todo, {**(also_time or {}), **models}, profile, options, runtime,
                           progress, cache, profile_models=models if profiled else (), precision=precision)
    if table is None:
        table = new_table(profile.name, runtime, threads, timed.info, precision, clock)
    for key in models:
        units = cuts[key]
        record = {"key": key, "spec": models[key].spec.to_dict(), "measured_ms": timed.models_ms[key],
                  "units": [u.signature for u in units]}
        if key in timed.nodes:
            record["unit_shares"], record["unprofiled_share"] = unit_shares(timed.nodes[key], [u.name for u in units])
        table.models.append(record)
    alone, in_context = timed.units_ms, context_times(table.models)
    uncovered = [u for u in todo if u.signature not in in_context]
    if profiled and uncovered:
        alone = time_on_device(uncovered, {}, profile, options, runtime, progress, cache,
                               precision=precision).units_ms
    add_units(table, todo, alone, in_context)
    table.info = timed.info
    table.refit()
    return Calibration(table, timed.warnings, {key: timed.models_ms[key] for key in also_time or {}})


def calibrate_device(profile: Any, options: Any, runtime: str, threads: int, names: tuple[str, ...] | None = None,
                     widths: tuple[float, ...] | None = None, resolutions: tuple[int, ...] | None = None,
                     progress: Callable[[str], None] | None = None, precision: str = "fp32",
                     fresh: bool = False) -> dict[str, Any]:
    """Calibrate the device's table for one runtime, thread count and precision on a grid (default: every named
    network at CALIBRATION_WIDTHS x CALIBRATION_RESOLUTIONS) and its kernel probes for the search's widths, save
    it, and say how well it fits its calibration models. `fresh` replaces the table instead of extending it."""
    import dataclasses

    from edgekit.core.files import output_lock
    from edgekit.predictor.search import check_grid, named_models
    from edgekit.predictor.table import table_path

    widths = widths or CALIBRATION_WIDTHS
    resolutions = resolutions or CALIBRATION_RESOLUTIONS
    check_grid(widths, resolutions)
    specs, probes = calibration_grid(tuple(named_models(list(names))) if names else CALIBRATION_NAMES, widths,
                                     resolutions)
    options = dataclasses.replace(options, threads=(threads,))
    path = table_path(profile.name, runtime, threads, precision)
    path.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(path):
        done = calibrate(specs + probes, profile, options, runtime, threads, progress=progress, fresh=fresh,
                         precision=precision)
        table = done.table
        table.save(path)
    fitted = [{"model": m["key"], "measured_ms": m["measured_ms"],
               "predicted_ms": table.predict_record(m), "sum_units_ms": m["sum_units_ms"]} for m in table.models]
    in_context = sum(1 for r in table.units.values() if r.get("in_context"))
    return {"table": str(path), "device": profile.name, "runtime": runtime, "threads": threads,
            "precision": precision, "clock": table.clock, "units": len(table.units), "units_in_context": in_context,
            "models": fitted, "kernel_probes": [point_key(p) for p in probes], "correction": table.correction,
            "warnings": done.warnings}
