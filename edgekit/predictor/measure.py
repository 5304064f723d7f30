"""Timing units and whole models on a device with the bench machinery (`edgekit bench`'s harness)."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.predictor.units import Unit

FORMATS = {"onnxruntime": "onnx", "tflite": "tflite"}
# Short timing windows: a calibration times hundreds of small models; rounds interleave them against drift.
CALIBRATION_OPTIONS = {"warmup_runs": 3, "warmup_seconds": 0.1, "runs": 20, "min_seconds": 0.15, "rounds": 3}


def _short_windows(options: Any) -> dict[str, Any]:
    """The calibration timing windows for the settings a user left at bench's defaults; theirs for the rest."""
    from edgekit.bench.run import BenchOptions

    defaults = BenchOptions()
    return {k: v for k, v in CALIBRATION_OPTIONS.items() if getattr(options, k) == getattr(defaults, k)}


@dataclass
class Timed:
    """What the device measured: p50 per unit signature and per whole model, and the device's own description."""

    units_ms: dict[str, float]
    models_ms: dict[str, float]
    device: str
    info: dict[str, Any]
    warnings: list[str]


def export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    from edgekit.export.converters import export_onnx, export_tflite, quiet

    with quiet(), torch.no_grad():
        (export_onnx if path.suffix == ".onnx" else export_tflite)(module.eval(), example, path)


def time_on_device(units: Iterable[Unit], models: dict[str, nn.Module], profile: Any, options: Any, runtime: str,
                   progress: Callable[[str], None] | None = None) -> Timed:
    """Export each distinct unit (and each whole model) and time them all in one device run, interleaved."""
    from edgekit.bench.run import bench_device, model_files

    fmt = FORMATS[runtime]
    distinct: dict[str, Unit] = {}
    for unit in units:
        distinct.setdefault(unit.signature, unit)
    options = dataclasses.replace(options, runtime=runtime, **_short_windows(options))
    with tempfile.TemporaryDirectory(prefix="edgekit-predictor-") as tmp:
        folder = Path(tmp)
        names: dict[str, tuple[str, str]] = {}
        for i, (sig, unit) in enumerate(distinct.items()):
            if progress:
                progress(f"exporting unit {i + 1}/{len(distinct)} ({unit.kind})")
            name = f"u-{sig}.{fmt}"
            export(unit.module, unit.example(), folder / name)
            names[name] = ("unit", sig)
        for key, model in models.items():
            if progress:
                progress(f"exporting {key}")
            name = f"m-{len(names)}.{fmt}"
            export(model, torch.zeros(1, *model.spec.input_shape), folder / name)
            names[name] = ("model", key)
        if progress:
            progress(f"timing {len(names)} models on {profile.name}")
        files = [f for name in names for f in model_files(folder / name)]
        run = bench_device(profile, files, options)
    timed = Timed({}, {}, run.device, run.info, run.warnings)
    for result in run.results:
        what, key = names[result["file"]]
        (timed.units_ms if what == "unit" else timed.models_ms)[key] = result["steady"]["p50_ms"]
    return timed
