"""`edgekit run RECIPE`: the whole pipeline, each stage skipped when its output is already up to date.

train -> export (ONNX, TFLite, FP32 and INT8, parity on real images) -> accuracy check -> latency on the recipe's
devices -> latency check -> report. A stage is up to date when the record it wrote names the same inputs: the
checkpoint carries the recipe's training hash, the manifest carries the checkpoint's sha256 and the export
settings, and each bench entry the file's sha256, the device, the thread count and the timing settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.benchmark.host import BenchOptions, bench_target
from edgekit.benchmark.records import latest_latencies
from edgekit.benchmark.repeat import FAIL, INCONCLUSIVE
from edgekit.checkpoint import TrainedModel, load_checkpoint, read_trained
from edgekit.core.errors import EdgekitError
from edgekit.core.files import sha256_file, write_json_atomic
from edgekit.core.threads import thread_budget
from edgekit.core.ui import Reporter
from edgekit.data import DataSource, load_split
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.exporting import export_model
from edgekit.gate.checks import recorded_accuracy, recorded_accuracy_cases
from edgekit.gate.rules import Case, latency_budget_cases, verdict
from edgekit.manifest import MANIFEST, Manifest, read_manifest
from edgekit.options import ExportOptions
from edgekit.quantization.options import int8_plan_from_recipe
from edgekit.recipe import Recipe
from edgekit.training.loop import train_recipe
from edgekit.training.rundir import BEST, LAST, SUMMARY

REPORT = "report.json"


class CheckFailed(EdgekitError):
    """The pipeline ran, but a budget was missed or a device could not be measured: CI should fail (exit 1).
    `report` is what the run saved in report.json."""

    exit_code = 1

    def __init__(self, message: str, report: RunReport | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.report = report
        self.exit_code = exit_code


@dataclass
class StageRecord:
    name: str
    status: str  # "ran", "up to date"
    seconds: float
    detail: str = ""


@dataclass
class RunReport:
    recipe: str
    out: Path
    stages: list[StageRecord] = field(default_factory=list)
    accuracy: dict[str, float] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    latency: list[dict[str, Any]] = field(default_factory=list)  # p50/p90 per device x file x threads
    speedup: list[dict[str, Any]] = field(default_factory=list)  # FP32 p50 / INT8 p50 per device x runtime x threads
    threads: dict[str, Any] = field(default_factory=dict)  # training's threads (summary.json)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe, "out": str(self.out),
            "stages": [vars(s) for s in self.stages], "accuracy": self.accuracy, "check": self.check,
            "latency": self.latency, "int8_speedup": self.speedup, "threads": self.threads,
        }


def training_state(out: Path, recipe: Recipe) -> str:
    """'absent', 'partial' (resumable), 'complete', or 'other' (trained from a different recipe)."""
    last = out / LAST
    if not last.exists():
        return "absent"
    saved = load_checkpoint(last)
    if saved.get("recipe_hash") != recipe.training_hash():
        return "other"
    return "complete" if int(saved["epoch"]) >= recipe.train.epochs and (out / BEST).exists() else "partial"


def _export_settings(recipe: Recipe) -> dict[str, Any]:
    """What the export stage is asked for, as recorded in the manifest (a change re-runs the stage)."""
    return {
        "formats": list(recipe.export.formats), "nhwc": recipe.export.nhwc,
        "int8": dataclasses.asdict(recipe.int8) if recipe.export.int8 else None,
    }


def run_recipe(recipe: Recipe, out: Path | None = None, reporter: Reporter | None = None, *,
               threads: int | None = None, devices: list[str] | None = None) -> RunReport:
    """Run the pipeline for `recipe` into `out` (default runs/NAME). `threads` fixes training's torch threads;
    `devices` replaces the recipe's devices for the bench stage (an empty list skips it)."""
    reporter = reporter or Reporter(enabled=False)
    out = (out or Path("runs") / recipe.name).resolve()
    report = RunReport(recipe.source or recipe.name, out)
    settings = _export_settings(recipe)
    int8_plan_from_recipe(recipe, None)  # every INT8 rule, before any work
    ExportOptions(formats=tuple(recipe.export.formats))  # and every format's converter installed
    profiles = [load_profile(name) for name in (recipe.devices if devices is None else devices)]
    options = _bench_options(recipe)

    trained = _train_stage(recipe, out, reporter, report, threads)
    manifest = _export_stage(recipe, out, reporter, report, trained, settings)
    export_dir = out / "export"
    accuracy_cases = _accuracy_check(recipe, report, manifest)
    failures = _bench_stage(export_dir, profiles, options, recipe, reporter, report)
    manifest = read_manifest(export_dir) if profiles else manifest
    latency_cases = _latency_check(recipe, report, manifest, profiles)
    cases = accuracy_cases + latency_cases
    outcome = verdict(cases)
    report.check["cases"] = [vars(c) for c in cases]
    report.check["passed"] = outcome.name == "passed"
    report.check["inconclusive"] = [c.name for c in outcome.inconclusive]
    write_json_atomic(out / REPORT, report.to_dict())
    over = [c for c in accuracy_cases if not c.passed]
    problems = [f"accuracy drop over budget ({', '.join(f'{c.format} {c.value:.2f} pp' for c in over)} > "
                f"{recipe.check.max_drop:g} pp)"] if over else []
    problems += [f"{c.format} {c.metric} {c.value:g} (limit {c.limit})" for c in latency_cases
                 if c.verdict == FAIL]
    problems += [f"bench on {name} failed ({error.rstrip('.')})" for name, error in failures]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckFailed(f"{'; '.join(problems[:3])}{more}: see {out / REPORT}.", report)
    if outcome.inconclusive:
        raise CheckFailed(f"inconclusive: {', '.join(c.name for c in outcome.inconclusive)} too noisy to judge "
                          f"against the budget; rerun on a quieter machine or with more bench.runs: see "
                          f"{out / REPORT}.", report, exit_code=outcome.exit_code)
    return report


def _train_stage(recipe: Recipe, out: Path, reporter: Reporter, report: RunReport,
                 threads: int | None) -> TrainedModel:
    start = time.perf_counter()
    state = training_state(out, recipe)
    if state == "other":
        raise EdgekitError(
            f"{out} holds a run of a different recipe (model, data or train settings changed): "
            "pass --out DIR for this one, or move the old run away."
        )
    if state == "complete":
        trained = read_trained(out / BEST)
        reporter.note(f"train: up to date ({out / BEST}, val top-1 {trained.val_top1:.2%})")
        report.stages.append(StageRecord("train", "up to date", 0.0, f"val top-1 {trained.val_top1:.2%}"))
    else:
        result = train_recipe(recipe, out, resume=state == "partial", reporter=reporter, threads=threads)
        report.stages.append(StageRecord(
            "train", "ran", time.perf_counter() - start,
            f"best val top-1 {result.best_top1:.2%} at epoch {result.best_epoch}"))
    summary = out / SUMMARY
    with contextlib.suppress(OSError, ValueError):
        report.threads = json.loads(summary.read_text()).get("threads", {})
    return read_trained(out / BEST)


def _export_stage(recipe: Recipe, out: Path, reporter: Reporter, report: RunReport, trained: TrainedModel,
                  settings: dict[str, Any]) -> Manifest:
    start = time.perf_counter()
    export_dir = out / "export"
    checkpoint_hash = sha256_file(out / BEST)
    manifest = _current_manifest(export_dir, checkpoint_hash, settings)
    if manifest is not None:
        reporter.note(f"export: up to date ({export_dir})")
        report.stages.append(StageRecord("export", "up to date", 0.0, ", ".join(manifest.files)))
        return manifest
    source, spec = DataSource.parse(trained.data), trained.spec
    data = load_split(source, "val", spec.resolution, spec.in_channels, preprocess=trained.preprocess)
    calibration = load_split(source, "train", spec.resolution, spec.in_channels, preprocess=trained.preprocess)
    int8 = int8_plan_from_recipe(recipe, trained)
    what = "FP32" if int8 is None else ("FP32 and quantization-aware INT8" if int8.qat else "FP32 and INT8")
    with reporter.status(f"exporting {what} ONNX and TFLite, checking parity and accuracy"):
        result = export_model(
            spec, weights=out / BEST, formats=settings["formats"], nhwc=settings["nhwc"],
            out=export_dir, force=True, preprocess=trained.preprocess, data=data, evaluate_accuracy=True,
            run_record={"checkpoint_sha256": checkpoint_hash, "settings": settings},
            int8=int8, calibration_data=calibration,
        )
    report.stages.append(StageRecord("export", "ran", time.perf_counter() - start, ", ".join(result.manifest.files)))
    return result.manifest


def _accuracy_check(recipe: Recipe, report: RunReport, manifest: Manifest) -> list[Case]:
    """Every exported format's top-1 drop against the torch FP32 model, within the recipe's check.max_drop: the
    gate's rule on the figures the export stage has just measured."""
    report.accuracy = recorded_accuracy(manifest)
    budget = recipe.check.max_drop
    cases = recorded_accuracy_cases(manifest, budget)
    failed = [c.format for c in cases if not c.passed]
    report.check = {"reference": "torch", "max_drop_pp": budget, "drop_pp": {c.format: c.value for c in cases},
                    "passed": not failed}
    report.stages.append(StageRecord(
        "check", "ran", 0.0, "passed" if not failed else f"failed: {', '.join(failed)} over {budget} pp"))
    return cases


def _bench_options(recipe: Recipe) -> BenchOptions:
    b = recipe.bench
    given = {"runs": b.runs, "min_seconds": b.min_seconds, "warmup_seconds": b.warmup_seconds,
             "processes": b.processes}
    return BenchOptions(threads=tuple(b.threads) if b.threads else None,
                        **{k: v for k, v in given.items() if v is not None})


def _device_threads(profile: DeviceProfile, options: BenchOptions) -> tuple[int, ...]:
    """The recipe's thread counts, else 1 and all big cores: the profile's largest count (this machine's cores for
    the local device)."""
    if options.threads:
        return options.threads
    most = thread_budget() if profile.transport == "local" else max(profile.threads)
    return tuple(sorted({1, most}))


def _measured(manifest: Manifest, device: str, threads: tuple[int, ...], options: BenchOptions) -> bool:
    """Does the manifest hold a current figure (same file bytes) for every file at every thread count on `device`,
    taken with these timing settings?"""
    latest = latest_latencies(manifest)
    wanted = {(rec.file, t) for rec in manifest.files.values() for t in threads}
    timing = {"runs": options.runs, "min_seconds": options.min_seconds, "warmup_seconds": options.warmup_seconds}
    have = {(key.file, key.threads) for key, entry in latest.items() if key.device == device
            and all(entry.get("settings", {}).get(k) == v for k, v in timing.items())}
    return wanted <= have


def _bench_stage(export_dir: Path, profiles: list[DeviceProfile], options: BenchOptions, recipe: Recipe,
                 reporter: Reporter, report: RunReport) -> list[tuple[str, str]]:
    """Every exported file on each device, one device at a time (a local run must not share the CPU with an
    emulated one); a device already measured with these settings is skipped, one that fails is reported."""
    if not profiles:
        return []
    start = time.perf_counter()
    ran, failures = [], []
    for profile in profiles:
        threads = _device_threads(profile, options)
        if _measured(read_manifest(export_dir), profile.name, threads, options):
            continue
        with reporter.status(f"bench: {profile.name}, threads {','.join(map(str, threads))}"):
            _, failed = bench_target(export_dir, [profile], dataclasses.replace(options, threads=threads))
        ran.append(profile.name)
        failures += [(p.name, str(error)) for p, error in failed]
    if failures:
        detail = "; ".join(f"{name}: {error}" for name, error in failures)
        report.stages.append(StageRecord("bench", "failed", time.perf_counter() - start, detail))
    elif ran:
        report.stages.append(StageRecord("bench", "ran", time.perf_counter() - start, ", ".join(ran)))
    else:
        reporter.note(f"bench: up to date ({', '.join(p.name for p in profiles)})")
        report.stages.append(StageRecord("bench", "up to date", 0.0, ", ".join(p.name for p in profiles)))
    return failures


def _latency_check(recipe: Recipe, report: RunReport, manifest: Manifest,
                   profiles: list[DeviceProfile]) -> list[Case]:
    """The latency table for report.json, and the recipe's latency budgets (check.max_latency_ms per device,
    check.min_int8_speedup) decided on it."""
    names = {p.name for p in profiles}
    formats = manifest.format_of_file()
    latest = {k: v for k, v in latest_latencies(manifest).items() if k.device in names}
    report.latency = [{"device": k.device, "format": formats.get(k.file, k.file), "file": k.file,
                       "runtime": k.runtime, "threads": k.threads, "p50_ms": e["steady"]["p50_ms"],
                       "p90_ms": e["steady"].get("p90_ms")}
                      for k, e in sorted(latest.items(), key=lambda item: item[0].label)]
    by_setting = {(r["device"], r["runtime"], r["threads"], r["format"]): r["p50_ms"] for r in report.latency}
    dot_product = {k.device: ((e.get("device") or {}).get("cpu_features") or {}).get("int8_dot_product")
                   for k, e in latest.items()}
    report.speedup = [{"device": d, "runtime": rt, "threads": t, "format": fmt,
                       "speedup": round(by_setting[(d, rt, t, fmt.removesuffix("_int8"))] / p50, 3),
                       "int8_dot_product": dot_product.get(d)}
                      for (d, rt, t, fmt), p50 in sorted(by_setting.items())
                      if fmt.endswith("_int8") and (d, rt, t, fmt.removesuffix("_int8")) in by_setting]
    model, check = manifest.spec.name, recipe.check
    cases = latency_budget_cases(model, manifest, check.max_latency_ms) if check.max_latency_ms else []
    if check.min_int8_speedup is not None and latest:
        cases += [Case(model, s["format"], f"int8 speed-up {s['device']} {s['runtime']} x{s['threads']}",
                       s["speedup"], f">= {check.min_int8_speedup:g}x", s["speedup"] >= check.min_int8_speedup)
                  for s in report.speedup]
    if cases:
        failed = [c for c in cases if c.verdict == FAIL]
        unsure = [c for c in cases if c.verdict == INCONCLUSIVE]
        detail = "passed" if not failed and not unsure else "; ".join(
            f"{label}: " + ", ".join(c.name for c in group)
            for label, group in (("failed", failed), ("inconclusive", unsure)) if group)
        report.stages.append(StageRecord("latency check", "ran", 0.0, detail))
    return cases


def speedup_caveat(speedup: list[dict[str, Any]]) -> str | None:
    """A line for an INT8 speed-up below 1 on a CPU without 8-bit dot products: the CPU's property, not the file's."""
    slow = sorted({s["device"] for s in speedup if s["speedup"] < 1 and s.get("int8_dot_product") is False})
    if not slow:
        return None
    return (f"INT8 below 1x on {', '.join(slow)}: {'its' if len(slow) == 1 else 'their'} CPU has no 8-bit dot "
            "products (VNNI on x86, SDOT on ARM), so INT8 kernels run about as fast as FP32 there; a device with "
            "them (Cortex-A55/A76 and later, x86 with VNNI) is where the INT8 file pays off. `edgekit devices "
            "check` lists the features.")


def _current_manifest(directory: Path, checkpoint_hash: str, settings: dict[str, Any]) -> Manifest | None:
    if not (directory / MANIFEST).is_file():
        return None
    try:
        manifest = read_manifest(directory)
    except EdgekitError:
        return None
    run = manifest.run or {}
    files_present = all((directory / rec.file).is_file() for rec in manifest.files.values())
    if run.get("checkpoint_sha256") == checkpoint_hash and run.get("settings") == settings and files_present \
            and manifest.accuracy:
        return manifest
    return None
