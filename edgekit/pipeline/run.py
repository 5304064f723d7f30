"""`edgekit run RECIPE`: the whole pipeline, each stage skipped when its output is already up to date.

train -> export (ONNX, TFLite, parity on real images) -> accuracy check -> report. A stage is up to date
when the record it wrote names the same inputs: the checkpoint carries the recipe's training hash, the
manifest carries the checkpoint's sha256 and the export settings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.artifact import MANIFEST, read_manifest
from edgekit.checkpoint import TrainedModel, load_checkpoint, read_trained
from edgekit.core.errors import EdgekitError
from edgekit.core.files import sha256_file, write_json_atomic
from edgekit.core.ui import Reporter
from edgekit.data import DataSource, load_split
from edgekit.export import export_model
from edgekit.export.int8 import Int8Options
from edgekit.quantize.qat import schedule_for
from edgekit.recipe import Recipe
from edgekit.train import BEST, LAST, train

REPORT = "report.json"


class CheckFailed(EdgekitError):
    """The pipeline ran, but an accuracy budget was missed: CI should fail (exit 1)."""

    exit_code = 1


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe, "out": str(self.out),
            "stages": [vars(s) for s in self.stages], "accuracy": self.accuracy, "check": self.check,
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
    int8 = recipe.int8
    if not recipe.export.int8:
        return {"formats": list(recipe.export.formats), "nhwc": recipe.export.nhwc, "int8": None}
    if int8.max_drop is not None and int8.qat_epochs:
        raise EdgekitError(
            f"{recipe.source or 'the recipe'}: int8.max_drop and int8.qat_epochs are two ways to the same end: "
            "keep one."
        )
    return {
        "formats": list(recipe.export.formats), "nhwc": recipe.export.nhwc,
        "int8": {"calib_size": int8.calib_size, "calib_method": int8.calib_method, "per_tensor": int8.per_tensor,
                 "equalize": int8.equalize, "int8_io": int8.int8_io, "qat_epochs": int8.qat_epochs,
                 "qat_lr": int8.qat_lr, "max_drop": int8.max_drop},
    }


def _int8_options(settings: dict[str, Any], trained: TrainedModel) -> Int8Options | None:
    int8 = settings["int8"]
    if int8 is None:
        return None
    schedule = None
    if int8["qat_epochs"]:
        schedule = schedule_for(int8["qat_epochs"], int8["qat_lr"], trained.spec, DataSource.parse(trained.data),
                                trained)
    return Int8Options(calib_size=int8["calib_size"], method=int8["calib_method"],
                       per_channel=not int8["per_tensor"], equalize=int8["equalize"], int8_io=int8["int8_io"],
                       qat=schedule, max_drop=int8["max_drop"])


def run_recipe(recipe: Recipe, out: Path | None = None, reporter: Reporter | None = None) -> RunReport:
    reporter = reporter or Reporter(enabled=False)
    out = (out or Path("runs") / recipe.name).resolve()
    report = RunReport(recipe.source or recipe.name, out)
    settings = _export_settings(recipe)  # refuses unsupported settings before any work

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
        result = train(recipe, out, resume=state == "partial", reporter=reporter)
        report.stages.append(StageRecord(
            "train", "ran", time.perf_counter() - start,
            f"best val top-1 {result.best_top1:.2%} at epoch {result.best_epoch}"))
    trained = read_trained(out / BEST)

    start = time.perf_counter()
    export_dir = out / "export"
    checkpoint_hash = sha256_file(out / BEST)
    manifest = _current_manifest(export_dir, checkpoint_hash, settings)
    if manifest is not None:
        reporter.note(f"export: up to date ({export_dir})")
        report.stages.append(StageRecord("export", "up to date", 0.0, ", ".join(manifest["files"])))
    else:
        source, spec = DataSource.parse(trained.data), trained.spec
        data = load_split(source, "val", spec.resolution, spec.in_channels)
        calibration = load_split(source, "train", spec.resolution, spec.in_channels)
        what = "FP32" if not settings["int8"] else (
            "FP32 and quantization-aware INT8" if settings["int8"]["qat_epochs"] else "FP32 and INT8")
        with reporter.status(f"exporting {what} ONNX and TFLite, checking parity and accuracy"):
            result = export_model(
                spec, weights=out / BEST, formats=settings["formats"], nhwc=settings["nhwc"],
                out=export_dir, force=True, preprocess=trained.preprocess, data=data, evaluate_accuracy=True,
                extra={"run": {"checkpoint_sha256": checkpoint_hash, "settings": settings}},
                int8=_int8_options(settings, trained), calibration_data=calibration,
            )
        manifest = result.manifest
        report.stages.append(StageRecord("export", "ran", time.perf_counter() - start, ", ".join(manifest["files"])))

    accuracy = dict(manifest["accuracy"]["top1"])
    int8_accuracy = (manifest.get("int8") or {}).get("accuracy") or {"top1": {}}
    accuracy.update({fmt: top1 for fmt, top1 in int8_accuracy["top1"].items() if fmt != "torch_fp32"})
    for warning in (manifest.get("int8") or {}).get("warnings", []):
        reporter.note(f"warning: int8: {warning}")
    report.accuracy = dict(accuracy)
    reference = accuracy["torch"]
    drops = {fmt: round((reference - top1) * 100, 3) for fmt, top1 in accuracy.items() if fmt != "torch"}
    budget = recipe.check.max_drop
    failed = [fmt for fmt, drop in drops.items() if drop > budget]
    report.check = {"reference": "torch", "max_drop_pp": budget, "drop_pp": drops, "passed": not failed}
    report.stages.append(StageRecord(
        "check", "ran", 0.0, "passed" if not failed else f"failed: {', '.join(failed)} over {budget} pp"))
    write_json_atomic(out / REPORT, report.to_dict())
    if failed:
        raise CheckFailed(
            f"accuracy drop over budget ({', '.join(f'{f} {drops[f]:.2f} pp' for f in failed)} > {budget} pp): "
            f"see {out / REPORT}."
        )
    return report


def _current_manifest(directory: Path, checkpoint_hash: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    if not (directory / MANIFEST).is_file():
        return None
    try:
        manifest = read_manifest(directory)
    except EdgekitError:
        return None
    run = manifest.get("run") or {}
    files_present = all((directory / rec["file"]).is_file() for rec in manifest.get("files", {}).values())
    if run.get("checkpoint_sha256") == checkpoint_hash and run.get("settings") == settings and files_present \
            and manifest.get("accuracy"):
        return manifest
    return None
