"""Timing units and whole models on a device with the bench machinery (`edgekit bench`'s harness)."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.core.errors import EdgekitError
from edgekit.predictor.units import Unit
from edgekit.runtime.formats import FORMATS, for_runtime

# A calibration times hundreds of units and models in one run, in rounds that interleave them against drift. Every
# file gets the same runs in the same 20 rounds (no minimum time, which would leave the smallest units to be
# timed alone at the end): units and the models they predict are measured across the same stretch of the run, so
# a machine that slows down midway slows both alike.
CALIBRATION_OPTIONS = {"warmup_runs": 3, "warmup_seconds": 0.1, "runs": 60, "min_seconds": 0.0, "rounds": 20}
# Model files per device run (see _bench_in_batches): a quarter of the memory the device has free (ONNX Runtime
# holds about 2.5x a model's file size), and at least MIN_BATCH_BYTES; BATCH_BYTES where the device cannot say.
BATCH_BYTES = 512 * 2**20
MIN_BATCH_BYTES = 256 * 2**20
# The per-node profile only splits a model's measured time among its units, so a few runs are enough; it runs
# apart from the timing, whose figures the profiler's own cost would raise.
PROFILE_OPTIONS = {"op_profile": True, "all_nodes": True, "warmup_runs": 3, "warmup_seconds": 0.0, "runs": 20,
                   "min_seconds": 0.0, "rounds": 1, "processes": 1}


def _short_windows(options: Any) -> dict[str, Any]:
    """The calibration timing windows for the settings a user left at bench's defaults; theirs for the rest."""
    from edgekit.benchmark.host import BenchOptions

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
    # model key -> (exporter scope, ms) of every node in run order, for the models asked to be profiled
    nodes: dict[str, list[tuple[str, float]]] = dataclasses.field(default_factory=dict)


def export(module: nn.Module, example: torch.Tensor, path: Path, fmt: str, precision: str = "fp32",
           int8_io: bool = False) -> None:
    """One file to time: the module as FP32 ONNX or TFLite, or (`precision` int8) as full-integer TFLite, the
    form edgekit's INT8 export gives (ReLU6 fused), with int8 input and output when `int8_io`."""
    from edgekit.core.quiet import quiet

    if precision == "int8":
        _export_int8_tflite(module, example, path, int8_io)
        return
    with quiet(), torch.no_grad():
        FORMATS[fmt].behaviour("exporter")(module.eval(), example, path)


def _export_int8_tflite(module: nn.Module, example: torch.Tensor, path: Path, int8_io: bool) -> None:
    """Quantized as `edgekit export --int8` quantizes (edgekit.quantization.ptq, default settings), calibrated on
    random inputs: an INT8 kernel's time does not depend on the scales, and a unit's input is an activation, not
    an image."""
    import copy

    import numpy as np

    from edgekit.exporting.int8_files import export_int8_tflite
    from edgekit.quantization.annotator import QuantSettings
    from edgekit.quantization.ptq import MIN_CALIBRATION, capture, convert, prepare_captured

    shape = tuple(example.shape[1:])
    samples = np.random.default_rng(0).standard_normal((MIN_CALIBRATION, *shape)).astype(np.float32)
    settings = QuantSettings()
    graph = capture(copy.deepcopy(module).eval(), shape)
    quantized = convert(prepare_captured(graph, samples, settings), settings, len(samples))
    export_int8_tflite(quantized, shape, path, int8_io=int8_io)


def export_all(units: Iterable[Unit], models: dict[str, nn.Module], folder: Path, runtime: str,
               progress: Callable[[str], None] | None = None, precision: str = "fp32") -> dict[str, tuple[str, str]]:
    """Export each distinct unit and each whole model into `folder` (a file already there is reused: the names
    are signatures, spec keys and the precision, which fix what the file computes). Returns file name ->
    (unit|model, key).

    INT8 units take and give int8 tensors, as they do inside the model; whole INT8 models take float input and
    give float output, as the deployed file does."""
    from edgekit.core.files import atomic_path

    fmt = for_runtime(runtime).name
    if precision == "int8" and fmt != "tflite":
        raise EdgekitError(f"INT8 units are timed as full-integer TFLite, not {fmt}: use the tflite runtime.")
    suffix = fmt if precision == "fp32" else f"{precision}.{fmt}"
    distinct: dict[str, Unit] = {}
    for unit in units:
        distinct.setdefault(unit.signature, unit)
    todo: list[tuple[str, str, str, nn.Module, torch.Tensor]] = [
        (f"u-{sig}.{suffix}", "unit", sig, unit.module, unit.example()) for sig, unit in distinct.items()]
    todo += [(f"m-{hashlib.sha256(key.encode()).hexdigest()[:16]}.{suffix}", "model", key, model,
              torch.zeros(1, *model.spec.input_shape)) for key, model in models.items()]
    names = {}
    for i, (name, what, key, module, example) in enumerate(todo):
        names[name] = (what, key)
        if (folder / name).is_file():
            continue
        if progress:
            progress(f"exporting {i + 1}/{len(todo)}: {key if what == 'model' else 'a block'}")
        with atomic_path(folder / name) as tmp:
            export(module, example, tmp, fmt, precision, int8_io=what == "unit")
    return names


def time_on_device(units: Iterable[Unit], models: dict[str, nn.Module], profile: Any, options: Any, runtime: str,
                   progress: Callable[[str], None] | None = None, cache: Path | None = None,
                   profile_models: Iterable[str] = (), precision: str = "fp32") -> Timed:
    """Export each distinct unit (and each whole model) at `precision` and time them all on the device,
    interleaved.

    `cache`: a folder that keeps the exported files for the next call (a benchmark rerun); a temp folder without.
    `profile_models`: model keys to run again under ONNX Runtime's per-node profiler, after the timing (other
    runtimes have no per-node profile in Python: their models get none).
    """
    # One process, whatever bench's default: hundreds of files loaded once, units and the models they predict timed
    # side by side in it (a table's figures are relative; the interval across processes is bench's business).
    options = dataclasses.replace(options, runtime=runtime, processes=1, **_short_windows(options))
    with tempfile.TemporaryDirectory(prefix="edgekit-predictor-") as tmp:
        folder = cache or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        names = export_all(units, models, folder, runtime, progress, precision)
        if progress:
            progress(f"timing {len(names)} models on {profile.name}")
        budget = batch_bytes(profile)  # one probe for the timing and the profile runs
        run = _bench_in_batches(profile, folder, list(names), options, budget)
        timed = Timed({}, {}, run.device, run.info, run.warnings)
        for result in run.results:
            what, key = names[result["file"]]
            (timed.units_ms if what == "unit" else timed.models_ms)[key] = result["steady"]["p50_ms"]
        wanted = set(profile_models)
        if runtime == "onnxruntime" and wanted:
            timed.nodes = _profile_nodes({n: k for n, (w, k) in names.items() if w == "model" and k in wanted},
                                         folder, profile, options, budget, progress)
    return timed


def batch_bytes(profile: Any) -> int:
    """How many bytes of model files one device run may take, from the memory the device has free."""
    import contextlib

    from edgekit.devices.probe import probe_device
    from edgekit.devices.transports import connect

    try:
        transport = connect(profile)
        workdir = transport.make_temp_dir()
        try:
            free_mb = probe_device(profile, transport, workdir).get("mem_available_mb")
        finally:
            with contextlib.suppress(EdgekitError):
                transport.remove_dir(workdir)
    except EdgekitError:
        return BATCH_BYTES
    return max(MIN_BATCH_BYTES, int(free_mb * 2**20 / 4)) if free_mb else BATCH_BYTES


def _bench_in_batches(profile: Any, folder: Path, names: list[str], options: Any, budget: int) -> Any:
    """As few device runs as the device's memory allows (`budget` bytes of model files each), merged: the harness
    holds every model of a run in memory to interleave them, and a calibration's hundreds of models would not fit
    a phone's or a Pi's. Models in one run are timed across the same stretch of it; between runs a machine's
    speed drifts, so the files are dealt in a fixed shuffled order and the drift falls on no one kind."""
    from edgekit.benchmark.host import bench_device, model_files

    order = sorted(names, key=lambda n: hashlib.sha256(n.encode()).digest())
    batches: list[list[str]] = [[]]
    size = 0
    for name in order:
        file_size = (folder / name).stat().st_size
        if batches[-1] and size + file_size > budget:
            batches.append([])
            size = 0
        batches[-1].append(name)
        size += file_size
    merged = None
    for batch in batches:
        run = bench_device(profile, [f for name in batch for f in model_files(folder / name, checks=1)], options)
        if merged is None:
            merged = run
        else:
            merged.results += run.results
            merged.warnings += [w for w in run.warnings if w not in merged.warnings]
    return merged


def _profile_nodes(files: dict[str, str], folder: Path, profile: Any, options: Any, budget: int,
                   progress: Callable[[str], None] | None) -> dict[str, list[tuple[str, float]]]:
    from edgekit.predictor.context import node_scopes, scope_of

    if progress:
        progress(f"profiling {len(files)} models on {profile.name}")
    run = _bench_in_batches(profile, folder, list(files), dataclasses.replace(options, **PROFILE_OPTIONS), budget)
    nodes = {}
    for result in run.results:
        listed = result.get("op_profile", {}).get("nodes")
        if listed:
            scopes = node_scopes(folder / result["file"])
            nodes[files[result["file"]]] = [(scope_of(name, scopes), ms) for name, ms in listed]
    return nodes
