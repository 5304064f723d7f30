"""`edgekit bench --calibrate-predictor`: time the units of a grid of registered models, and the models whole."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgekit.errors import EdgekitError
from edgekit.models import ModelSpec, build, get_entry, resolve_spec
from edgekit.predictor.context import unit_shares
from edgekit.predictor.measure import time_on_device
from edgekit.predictor.table import LatencyTable, add_units, load_table, new_table
from edgekit.predictor.units import Unit, cut

# One representative per family, and for RegNet one network per group width the zoo uses (X: 8, 16, 24, 48;
# Y: 8, 16, 24): runtimes pick their grouped-convolution kernel by channels per group, and no fit over other group
# widths predicts which (see KERNEL_FEATURES in units.py). Widths and resolutions span what users deploy.
CALIBRATION_NAMES = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v1",
                     "shufflenet_v2_x1_0", "efficientnet_b0", "efficientnet_lite0", "regnet_x_200mf",
                     "regnet_x_400mf", "regnet_x_600mf", "regnet_x_3_2gf", "regnet_y_400mf", "regnet_y_600mf",
                     "regnet_y_1_6gf")
CALIBRATION_WIDTHS = (0.5, 1.0)
CALIBRATION_RESOLUTIONS = (128, 224)


def grid(names: tuple[str, ...], widths: tuple[float, ...], resolutions: tuple[int, ...],
         num_classes: int = 1000) -> list[ModelSpec]:
    for name in names:
        get_entry(name)  # an unknown name fails here, with the registry's suggestion
    return [resolve_spec(n, width=w, resolution=r, num_classes=num_classes)
            for n, w, r in itertools.product(names, widths, resolutions)]


def point_key(spec: ModelSpec) -> str:
    return f"{spec.name} w{spec.width:g} r{spec.resolution}"


@dataclass
class Calibration:
    table: LatencyTable
    warnings: list[str]
    also_timed_ms: dict[str, float]  # the `also_time` models, whole, timed in the same run


def calibrate(specs: list[ModelSpec], profile: Any, options: Any, runtime: str, threads: int,
              progress: Callable[[str], None] | None = None, cache: Path | None = None,
              fresh: bool = False, also_time: dict[str, torch.nn.Module] | None = None) -> Calibration:
    """Time every distinct unit of `specs` and each spec whole; merge into the device's table and refit.

    Units and models already in the table are not measured again, so an extended calibration only pays for
    what is new; `fresh` starts a new table instead. `cache` keeps the exported files for a rerun.
    `also_time` (point_key -> model) are timed whole in the same interleaved run and not added to the table:
    models to score the table on without the drift between two runs.
    """
    if not specs:
        raise EdgekitError("nothing to calibrate: give at least one family, width and resolution.")
    table = None
    if not fresh:
        with contextlib.suppress(EdgekitError):
            table = load_table(profile.name, runtime, threads)
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
    timed = time_on_device(todo, {**(also_time or {}), **models}, profile, options, runtime, progress, cache,
                           profile_models=models)
    if table is None:
        table = new_table(profile.name, runtime, threads, timed.info)
    add_units(table, todo, timed.units_ms)
    for key in models:
        units = cuts[key]
        record = {"key": key, "spec": models[key].spec.to_dict(), "measured_ms": timed.models_ms[key],
                  "units": [u.signature for u in units]}
        if key in timed.nodes:
            record["unit_shares"], record["unprofiled_share"] = unit_shares(timed.nodes[key], [u.name for u in units])
        table.models.append(record)
    table.info = timed.info
    table.refit()
    return Calibration(table, timed.warnings, {key: timed.models_ms[key] for key in also_time or {}})
