"""`edgekit check`: evaluate an artifact's FP32 reference and INT8 files on the same data and gate on the drop.

Each figure becomes a Case (model x format x metric) with its limit and verdict; the CLI prints them as a
table, JUnit XML and Markdown. Accuracy is measured here, on the spot; latency comes from the figures
`edgekit bench` recorded in the manifest for the files as they are now, each with its interval: a latency case
whose interval straddles its limit is inconclusive (edgekit/gate/rules.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgekit.artifact import artifact_name, locate_artifact, verify_files
from edgekit.benchmark.records import latest_figures
from edgekit.benchmark.repeat import Figure
from edgekit.checkpoint import read_trained
from edgekit.core.errors import EdgekitError
from edgekit.core.files import sha256_file
from edgekit.data import DataSource, ImageSet, load_split, require_same_classes
from edgekit.evaluation import close_runner, evaluate
from edgekit.gate.baseline import Baseline, BaselineEntry
from edgekit.gate.rules import (
    INT8_FORMATS,
    Case,
    accuracy_drop_cases,
    latency_case,
    latency_ratio_cases,
    verdict,
)
from edgekit.manifest import Manifest, read_manifest, update_manifest
from edgekit.preprocess import GivenPreprocess
from edgekit.runtime import formats
from edgekit.runtime.open import open_model

FP32_FORMATS = tuple(formats.FORMATS)  # ("onnx", "tflite")
SUBSET_SEED = 0


@dataclass
class CheckOptions:
    """What `edgekit check` gates on: the data (None: the recorded one) and a seeded subset of it, the largest INT8
    accuracy drop (pp, or percent of the reference with `relative`) against the FP32 `reference`, a baseline with
    its tolerances, and the largest INT8/FP32 latency ratio."""

    data: str | None = None
    samples: int | None = None
    max_drop: float = 1.0  # percentage points, or percent of the reference's accuracy with `relative`
    relative: bool = False
    reference: str = "auto"  # auto, torch, onnx, tflite
    baseline: Baseline | None = None
    tolerance: float = 0.2  # pp, for accuracy against the baseline
    latency_tolerance: float = 10.0  # percent, for latency against the baseline
    max_latency_ratio: float | None = None  # INT8 p50 / FP32 p50 on the same device, runtime and threads
    update_baseline: bool = False
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.reference not in ("auto", "torch", *FP32_FORMATS):
            raise EdgekitError(f"--reference {self.reference!r}: use auto, torch, onnx or tflite.")
        if self.samples is not None and self.samples < 1:
            raise EdgekitError(f"--samples {self.samples}: give a positive number of images.")
        if self.max_drop < 0 or self.tolerance < 0 or self.latency_tolerance < 0 or (
                self.max_latency_ratio is not None and self.max_latency_ratio <= 0):
            raise EdgekitError("a limit is negative: give --max-drop, --tolerance and --latency-tolerance >= 0, "
                               "and --max-latency-ratio above 0.")
        if self.update_baseline and self.baseline is None:
            raise EdgekitError("--update-baseline needs --baseline FILE: the file to write.")


@dataclass
class ArtifactCheck:
    directory: Path
    model: str  # the key in baselines and reports: mobilenet_v2-w0.75-r32@fashion-mnist
    data: str
    images: int
    samples: int | None
    reference: str
    top1: dict[str, float]
    cases: list[Case] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_ci_ms: dict[str, list[float]] = field(default_factory=dict)  # the p50's interval, where recorded
    seconds: float = 0.0
    started: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def verdict(self) -> str:
        """passed; failed (a case failed); inconclusive (none failed, but a latency figure was too noisy to judge)."""
        return verdict(self.cases).name

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.directory), "model": self.model, "data": self.data, "images": self.images,
                "samples": self.samples, "seed": SUBSET_SEED if self.samples else None,
                "reference": self.reference, "top1": self.top1, "latency_ms": self.latency_ms,
                "latency_ci_ms": self.latency_ci_ms, "passed": self.passed, "verdict": self.verdict,
                "cases": [{**vars(c), "verdict": c.verdict} for c in self.cases]}


def model_key(manifest: Manifest, data: str) -> str:
    return f"{artifact_name(manifest.spec)}@{data}"


def _reference_path(directory: Path, manifest: Manifest, choice: str) -> tuple[str, Path]:
    files, source = manifest.files, manifest.source or {}
    weights = source.get("weights")
    torch_ok = bool(weights) and Path(weights).is_file() and Path(weights).suffix in (".pt", ".pth") \
        and sha256_file(Path(weights)) == source.get("sha256")
    if choice in ("auto", "torch") and torch_ok:
        try:
            read_trained(Path(weights))  # an edgekit checkpoint: it knows its own preprocessing
            return "torch", Path(weights)
        except EdgekitError:
            if choice == "torch":
                raise
    if choice == "torch":
        raise EdgekitError(
            f"{directory}: the checkpoint it was exported from ({weights or 'none recorded'}) is missing or changed: "
            "use --reference onnx or tflite."
        )
    for fmt in FP32_FORMATS if choice == "auto" else (choice,):
        if fmt in files:
            return fmt, directory / files[fmt].file
    raise EdgekitError(
        f"{directory} has no FP32 {'model' if choice == 'auto' else choice} to compare with: "
        "export FP32 and INT8 together (edgekit export ... --int8)."
    )


def load_data(label: str, manifest: Manifest, samples: int | None, where: Path) -> ImageSet:
    spec = manifest.spec
    data = load_split(DataSource.parse(label), "val", spec.resolution, spec.in_channels,
                      preprocess=manifest.input.preprocess)
    require_same_classes(where, manifest.input.classes or None, data,
                         "check it on the data it was trained for (--data)")
    return _seeded_subset(data, samples)


def _seeded_subset(data: ImageSet, samples: int | None) -> ImageSet:
    if samples is not None and samples < len(data):
        generator = torch.Generator().manual_seed(SUBSET_SEED)
        indices = torch.randperm(len(data), generator=generator)[:samples].sort().values
        data = data.subset(indices, f"{data.name} ({samples} seeded samples)")
    return data


def run_checks(artifacts: list[Path], options: CheckOptions, pair: tuple[Path, Path] | None = None,
               given: GivenPreprocess | None = None, progress: Callable[[str, int, int], None] | None = None,
               record: bool = True) -> list[ArtifactCheck]:
    """`edgekit check` and `edgekit.check()`: artifact directories, or one `pair` of model files (FP32, INT8) with
    `given` preprocessing where they record none. Refused: both or neither, and preprocessing for artifacts."""
    if bool(pair) == bool(artifacts):
        raise EdgekitError("give artifact directories, or --pair FP32_FILE INT8_FILE: "
                           + ("not both." if pair else "nothing to check."))
    if given is not None and not pair:
        raise EdgekitError("--preprocess and its flags apply to --pair files made elsewhere: an artifact's "
                           "manifest records its preprocessing.")
    if pair:
        return [check_pair(Path(pair[0]), Path(pair[1]), options, given, progress)]
    return check_artifacts(artifacts, options, progress, record=record)


def check_pair(fp32: Path, int8: Path, options: CheckOptions, given: GivenPreprocess | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> ArtifactCheck:
    """`edgekit check --pair FP32 INT8`: two model files, from one artifact or made elsewhere (with `given`
    preprocessing), judged on the same images; the INT8 file's top-1 drop against the FP32 file's. Nothing is
    recorded: the files need no manifest. A baseline applies by the FP32 file's name."""
    start = dt.datetime.now(dt.timezone.utc)
    opened = [open_model(path, given=given) for path in (fp32, int8)]
    try:
        label = options.data or opened[0].data or opened[1].data
        if label is None:
            raise EdgekitError(f"{fp32} records no dataset: pass --data (imagefolder:PATH for your own images).")
        keys = [formats.format_of(fp32).name, f"{formats.format_of(int8).name}_int8"]
        if keys[1] == f"{keys[0]}_int8" and fp32.resolve() == int8.resolve():
            raise EdgekitError(f"--pair names {fp32} twice: give the FP32 file, then the INT8 file.")
        spec = opened[0].spec
        if (spec.in_channels, spec.resolution) != (opened[1].spec.in_channels, opened[1].spec.resolution):
            raise EdgekitError(f"{fp32} takes {spec.in_channels}x{spec.resolution} px inputs but {int8} takes "
                               f"{opened[1].spec.in_channels}x{opened[1].spec.resolution}: pair two files of one "
                               "model.")
        data = load_split(DataSource.parse(label), "val", spec.resolution, spec.in_channels,
                          preprocess=opened[0].preprocess)
        for path, one in zip((fp32, int8), opened, strict=True):
            if not one.by_name:
                require_same_classes(path, one.classes or None, data, "check it on the data it was trained for")
        data = _seeded_subset(data, options.samples)
        top1: dict[str, float] = {}
        for key, one in zip(keys, opened, strict=True):
            done = 0

            def advance(n: int, key: str = key) -> None:
                nonlocal done
                done += n
                if progress:
                    progress(key, done, len(data))

            top1[key] = evaluate(one.runner, data, one.preprocess, options.batch_size, progress=advance,
                                 classes=one.classes if one.by_name else None).top1
    finally:
        for one in opened:
            close_runner(one.runner)
    result = ArtifactCheck(fp32.parent, f"{fp32.stem}@{label}", data.name, len(data), options.samples, keys[0],
                           top1)
    result.cases += _accuracy_cases(result, keys[1:], options)
    if options.baseline is not None and options.update_baseline:
        options.baseline.set(result.model, BaselineEntry(dict(top1), {}, options.samples, result.data))
        options.baseline.save()
    elif options.baseline is not None:
        result.cases += _baseline_cases(result, options.baseline.entry(result.model), options)
    result.seconds = (dt.datetime.now(dt.timezone.utc) - start).total_seconds()
    result.started = start.isoformat(timespec="seconds")
    return result


@dataclass
class _Plan:
    """Everything about one artifact that can be refused before any evaluation runs."""

    directory: Path
    manifest: Manifest
    int8: list[str]
    key: str
    entry: BaselineEntry | None
    reference: str
    reference_path: Path
    data: ImageSet
    latency_cases: list[Case]  # they need only the manifest, so they are judged (or refused) up front


def _plan(path: Path, options: CheckOptions) -> _Plan:
    directory = locate_artifact(path)
    manifest = read_manifest(directory)
    int8 = [fmt for fmt in INT8_FORMATS if fmt in manifest.files]
    if not int8:
        raise EdgekitError(f"{directory} has no INT8 files to check: export with --int8.")
    verify_files(directory, manifest)
    label = options.data or manifest.input.data
    if not label:
        raise EdgekitError(f"{directory} records no dataset: pass --data (e.g. --data fashion-mnist).")
    label = DataSource.parse(label).label
    key = model_key(manifest, label)
    entry = None
    if options.baseline is not None and not options.update_baseline:
        entry = options.baseline.entry(key)
        if entry.samples != options.samples:
            raise EdgekitError(
                f"{options.baseline.path}: {key} was measured on {_images(entry.samples)}, this check on "
                f"{_images(options.samples)}: pass the same --samples, or rewrite it with --update-baseline."
            )
    reference, reference_path = _reference_path(directory, manifest, options.reference)
    data = load_data(label, manifest, options.samples, directory)
    latency_cases = [] if options.max_latency_ratio is None else \
        latency_ratio_cases(directory, key, manifest, options.max_latency_ratio)
    return _Plan(directory, manifest, int8, key, entry, reference, reference_path, data, latency_cases)


def _images(samples: int | None) -> str:
    return "all images" if samples is None else f"{samples} seeded samples"


def _run(plan: _Plan, options: CheckOptions, progress: Callable[[str, int, int], None] | None) -> ArtifactCheck:
    start = dt.datetime.now(dt.timezone.utc)
    directory, manifest, data = plan.directory, plan.manifest, plan.data
    top1: dict[str, float] = {}
    models = [(plan.reference, plan.reference_path),
              *((f, directory / manifest.files[f].file) for f in plan.int8)]
    for fmt, file in models:
        opened = open_model(file, verify=False)  # the plan verified every file before any evaluation
        done = 0

        def advance(n: int, fmt: str = fmt) -> None:
            nonlocal done
            done += n
            if progress:
                progress(f"{directory.name} {fmt}", done, len(data))

        try:
            top1[fmt] = evaluate(opened.runner, data, opened.preprocess, options.batch_size, progress=advance).top1
        finally:
            close_runner(opened.runner)

    result = ArtifactCheck(directory, plan.key, data.name, len(data), options.samples, plan.reference, top1)
    result.cases += _accuracy_cases(result, plan.int8, options)
    figures = latest_figures(manifest)
    result.latency_ms = {k.label: f.value for k, f in figures.items()}
    result.latency_ci_ms = {k.label: [f.low, f.high] for k, f in figures.items() if f.repeatable is not None}
    result.cases += plan.latency_cases
    if plan.entry is not None:
        result.cases += _baseline_cases(result, plan.entry, options)
    result.seconds = (dt.datetime.now(dt.timezone.utc) - start).total_seconds()

    result.started = start.isoformat(timespec="seconds")
    return result


def record_results(results: list[ArtifactCheck]) -> None:
    """Write each result into its artifact's manifest.json (under `check`): the last step of a check, after every
    other output, so that a check that fails to write its report leaves the manifests as they were."""
    for result in results:
        record = {"time": result.started, **result.to_dict()}
        record.pop("artifact")
        update_manifest(result.directory, lambda m, record=record: setattr(m, "check", record))


def recorded_accuracy(manifest: Manifest) -> dict[str, float]:
    """The top-1 of every file as the export measured it (torch FP32 under "torch"), from the manifest."""
    top1 = dict((manifest.accuracy or {}).get("top1") or {})
    int8 = ((manifest.int8 or {}).get("accuracy") or {}).get("top1") or {}
    top1.update({fmt: value for fmt, value in int8.items() if fmt != "torch_fp32"})
    return top1


def recorded_accuracy_cases(manifest: Manifest, max_drop: float) -> list[Case]:
    """The accuracy gate on the figures the export recorded (`edgekit run`, which has just measured them): every
    file's drop against the torch FP32 model, within `max_drop` pp. `edgekit check` measures them anew instead."""
    top1 = recorded_accuracy(manifest)
    return accuracy_drop_cases(manifest.spec.name, top1, "torch", [f for f in top1 if f != "torch"], max_drop)


def _accuracy_cases(result: ArtifactCheck, int8: list[str], options: CheckOptions) -> list[Case]:
    return accuracy_drop_cases(result.model, result.top1, result.reference, int8, options.max_drop,
                               relative=options.relative, images=result.images)


def _baseline_cases(result: ArtifactCheck, entry: BaselineEntry, options: CheckOptions) -> list[Case]:
    cases = []
    for fmt, expected in sorted(entry.accuracy.items()):
        if fmt not in result.top1:
            continue
        delta = (result.top1[fmt] - expected) * 100
        if delta < -options.tolerance:
            verdict, detail = False, f"regressed: {result.top1[fmt]:.2%} against {expected:.2%} in the baseline"
        elif delta > options.tolerance:
            verdict, detail = False, (
                f"improved beyond tolerance ({result.top1[fmt]:.2%} against {expected:.2%}): "
                "did the model or the evaluation change? If intended, run with --update-baseline")
        else:
            verdict, detail = True, f"{result.top1[fmt]:.2%} against {expected:.2%} in the baseline"
        cases.append(Case(result.model, fmt, "accuracy vs baseline", round(delta, 3),
                          f"within +-{options.tolerance:g} pp", verdict, detail))
    for label, expected in sorted(entry.latency_ms.items()):
        measured = result.latency_ms.get(label)
        if measured is None:
            cases.append(Case(result.model, label.rsplit("/", 1)[-1], f"latency vs baseline {label}", float("nan"),
                              "measured", False,
                              f"the baseline has {label} but the artifact has no such measurement: run edgekit bench"))
            continue
        now = _figure(measured, result.latency_ci_ms.get(label))
        then = _figure(expected, entry.latency_ci_ms.get(label))
        cases.append(latency_case(
            result.model, label.rsplit("/", 1)[-1], f"latency vs baseline {label}", now / then,
            1 + options.latency_tolerance / 100, f"<= +{options.latency_tolerance:g} %",
            f"p50 {now.interval} against {then.interval} in the baseline", scale=100, offset=-100))
    return cases


def _figure(p50: float, interval: list[float] | None) -> Figure:
    """A p50 with its interval; one that does not hold the p50 (a baseline edited by hand) is stale: ignored."""
    if interval is None or not interval[0] <= p50 <= interval[1]:
        return Figure(p50, p50, p50, None)
    return Figure(p50, interval[0], interval[1], True)


def check_artifacts(paths: list[Path], options: CheckOptions, progress: Callable[[str, int, int], None] | None = None,
                    record: bool = True) -> list[ArtifactCheck]:
    """Check every artifact; then, with --update-baseline, rewrite the baseline with what was measured, and (with
    `record`) write each result into its manifest. A caller with outputs of its own (JUnit, Markdown) passes
    record=False and calls record_results after writing them."""
    plans = [_plan(path, options) for path in paths]
    results = [_run(plan, options, progress) for plan in plans]
    if options.update_baseline and options.baseline is not None:
        for r in results:
            options.baseline.set(r.model, BaselineEntry(dict(r.top1), dict(r.latency_ms), r.samples, r.data,
                                                        dict(r.latency_ci_ms)))
        options.baseline.save()
    if record:
        record_results(results)
    return results
