"""`edgekit export`: build, load weights, convert, check parity, write the artifact directory atomically."""

from __future__ import annotations

import copy
import importlib.metadata
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.artifact import artifact_name
from edgekit.checkpoint import load_weights
from edgekit.core.errors import EdgekitError
from edgekit.core.files import staged_directory
from edgekit.core.quiet import quiet
from edgekit.data import ImageSet, Preprocess, require_same_classes
from edgekit.evaluation import evaluate
from edgekit.exporting.calibration import CalibrationSet, calibration_data, calibration_from_samples, calibration_set
from edgekit.exporting.converters import ONNX_OPSET
from edgekit.exporting.int8 import Int8Job, build_int8
from edgekit.exporting.source import Source, evaluation_data
from edgekit.inspect import inspect_file
from edgekit.manifest import FileRecord, InputRecord, Manifest, write_manifest
from edgekit.models import ModelSpec, build
from edgekit.models.complexity import profile_model
from edgekit.options import ExportOptions
from edgekit.quantization.options import Int8Plan, plan_int8
from edgekit.runtime import formats
from edgekit.runtime.parity import FP32_MAX_REL_DIFF, FP32_MIN_COSINE, compare
from edgekit.runtime.runners import TorchRunner
from edgekit.user_model import check_capturable

FORMATS = tuple(formats.FORMATS)  # ("onnx", "tflite")
PARITY_SAMPLES = 16
TOOLS = ("torch", "onnx", "onnxruntime", "onnxscript", "litert-torch", "ai-edge-litert", "numpy")
# Ops an FP32 classifier from our families may contain; anything else is reported as unexpected.
EXPECTED_TFLITE_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "MEAN", "AVERAGE_POOL_2D", "MAX_POOL_2D", "FULLY_CONNECTED",
    "PAD", "PADV2", "RESHAPE", "TRANSPOSE", "CONCATENATION", "HARD_SWISH", "LOGISTIC", "RELU", "RELU6", "SPLIT",
    "STRIDED_SLICE", "SLICE", "SQUEEZE", "SUM", "MINIMUM", "MAXIMUM", "DIV", "SUB",
}
EXPECTED_ONNX_OPS = {
    "Conv", "Add", "Mul", "Clip", "Relu", "ReduceMean", "GlobalAveragePool", "AveragePool", "MaxPool", "Gemm",
    "MatMul", "Reshape", "Flatten", "Transpose", "Concat", "HardSwish", "HardSigmoid", "Sigmoid", "Split", "Slice",
    "Squeeze", "Unsqueeze", "Identity", "Div", "Sub", "Max", "Min",
}


@dataclass
class ExportResult:
    directory: Path
    manifest: Manifest
    timings: dict[str, float] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    versions = {}
    for tool in TOOLS:
        try:
            versions[tool] = importlib.metadata.version(tool)
        except importlib.metadata.PackageNotFoundError:
            versions[tool] = "not installed"
    return versions


def parity_inputs(spec: ModelSpec, samples: int = PARITY_SAMPLES, seed: int = 0) -> np.ndarray:
    """Random standard-normal images in the model's normalised input range, when no data is known."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((samples, *spec.input_shape)).astype(np.float32)


def _check_data(spec: ModelSpec, preprocess: Preprocess, data: ImageSet) -> None:
    if preprocess.resolution != spec.resolution or preprocess.channels != spec.in_channels:
        raise EdgekitError(
            f"the preprocessing ({preprocess.channels}x{preprocess.resolution}px) does not match the model "
            f"({spec.in_channels}x{spec.resolution}px): export with the checkpoint's own settings."
        )
    require_same_classes("the model", spec.num_classes, data, "evaluate on the data the model was trained for")


def export_model(
    spec: ModelSpec,
    *,
    weights: Path | None = None,
    formats: Sequence[str] = FORMATS,
    nhwc: bool = False,
    out: Path | None = None,
    force: bool = False,
    dynamic_batch: bool = False,
    on_stage: Callable[[str], None] = lambda stage: None,
    preprocess: Preprocess | None = None,
    data: ImageSet | None = None,
    evaluate_accuracy: bool = False,
    run_record: dict[str, Any] | None = None,
    int8: Int8Plan | None = None,
    calibration_data: ImageSet | None = None,
    model: nn.Module | None = None,
    calibration: CalibrationSet | None = None,
) -> ExportResult:
    """Export `spec` (FP32) to the given formats; fail, leaving nothing behind, if parity does not hold.

    `model` is the user's own module (a custom spec, edgekit.user_model.describe); zoo models are built from
    `spec`. `calibration` gives the INT8 calibration images directly (a Dataset or arrays the caller turned into a
    CalibrationSet) instead of drawing them from `calibration_data`.

    With `preprocess` and `data` (real images), parity runs on the first images of `data` and the
    preprocessing is recorded in the manifest; `evaluate_accuracy` adds top-1 of every format on all of `data`.
    With `int8`, model_int8.onnx and model_int8.tflite are calibrated on `calibration_data` (the training split)
    and described in the manifest's `int8` section.
    """
    formats = ExportOptions(formats=tuple(formats)).formats  # its rules: known formats, at least one
    directory = out if out is not None else Path("out") / artifact_name(spec)
    job = _Fp32Job(spec, formats, nhwc, dynamic_batch, on_stage)
    model, source, complexity = _build(job, weights, model)
    if data is not None and preprocess is not None:
        _check_data(spec, preprocess, data)
    else:
        data = None
    inputs, parity_source = _parity_inputs(spec, data, preprocess)
    torch_runner = TorchRunner(model)
    reference = torch_runner.predict(inputs)
    accuracy: dict[str, Any] | None = None
    if evaluate_accuracy and data is not None and preprocess is not None:
        done = job.stage("accuracy torch")
        accuracy = {"data": data.name, "images": len(data),
                    "top1": {"torch": evaluate(torch_runner, data, preprocess).top1}}
        done()
    with staged_directory(directory, force=force) as staging:
        files, parity, ops = _write_fp32(job, model, staging, inputs, reference,
                                         (data, preprocess, accuracy) if accuracy is not None else None)
        int8_section = None
        if int8 is not None:
            if calibration is None:
                calibration = calibration_set(spec, int8.options.calib_size, calibration_data, preprocess)
            int8_section, int8_files = build_int8(Int8Job(
                model, spec, int8, calibration, staging, formats=formats, nhwc=nhwc, parity_inputs=inputs,
                fp32_reference=reference, data=data if evaluate_accuracy else None, preprocess=preprocess,
                fp32_top1=accuracy["top1"]["torch"] if accuracy is not None else None, stage=job.stage,
                train_data=calibration_data, on_progress=on_stage,
            ))
            files.update(int8_files)
        if preprocess is not None:
            files = _with_tflite_metadata(staging, files, spec, preprocess, data.classes if data is not None else None)
        manifest = Manifest(
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            spec=spec,
            input=_input_section(job, preprocess, data),
            source=source,
            complexity={"params": complexity.params, "macs": complexity.macs},
            files=files,
            parity={
                "reference": "torch",
                "inputs": parity_source,
                "tolerance": {"max_rel_diff": FP32_MAX_REL_DIFF, "min_cosine": FP32_MIN_COSINE},
                "results": parity,
            },
            ops=ops,
            accuracy=accuracy,
            int8=int8_section,
            export={"onnx_opset": ONNX_OPSET if "onnx" in formats else None, "timings_s": job.timings},
            tools=_versions(),
            run=run_record,
        )
        write_manifest(staging, manifest)
    return ExportResult(directory=directory, manifest=manifest, timings=job.timings)


def export_source(
    source: Source,
    options: ExportOptions,
    *,
    out: Path | None = None,
    force: bool = False,
    eval_data: str | None = None,
    calib: Any = None,
    on_stage: Callable[[str], None] = lambda stage: None,
    on_status: Callable[[str], None] = lambda status: None,
    on_warning: Callable[[str], None] = lambda text: None,
) -> ExportResult:
    """`edgekit export` and `edgekit.export()`: plan the INT8 stage for this model, load the evaluation and
    calibration data a resolved source needs, export, and report every warning (random weights, noise calibration,
    unexpected ops, float left in the INT8 graph) through `on_warning`.

    `calib` is a data source label (its training split), or, from Python, a Dataset, DataLoader or iterable of
    preprocessed arrays; None calibrates on the checkpoint's own data, else on noise.
    """
    spec, trained = source.spec, source.trained
    int8 = None
    if options.int8 is not None:
        int8 = plan_int8(options.int8, spec=spec, trained=trained, qat_data=calib if isinstance(calib, str) else None,
                         has_eval_data=eval_data is not None)
    elif calib is not None:
        raise EdgekitError("--calib (calibration=) applies to INT8 export: add --int8 (int8=True).")
    if source.weights is None and source.model is None:
        on_warning("no --weights: exporting random weights, for plumbing only.")
    if spec.custom and spec.input_shape[1] != spec.input_shape[2] and any(
            isinstance(d, str) for d in (eval_data, calib)):
        raise EdgekitError(f"{spec.name} takes {spec.input_shape[1]}x{spec.input_shape[2]} images, and edgekit's "
                           "data sources give square ones: calibrate from Python with preprocessed arrays instead.")
    on_status("loading evaluation data")
    data, preprocess = evaluation_data(eval_data, trained, spec, source.preprocess)
    calibration_images, calibration_set_ = None, None
    if int8 is not None:
        if calib is None and trained is None:
            on_warning("--int8 without a checkpoint or --calib: calibrating on random noise, for plumbing only.")
        on_status("loading calibration data")
        if calib is None or isinstance(calib, str):
            calibration_images, preprocess = calibration_data(calib, trained, spec, preprocess)
        else:
            calibration_set_ = calibration_from_samples(calib, int8.options.calib_size, spec.input_shape)
    on_status("exporting")
    result = export_model(
        spec, weights=source.weights, formats=options.formats, nhwc=options.nhwc, out=out, force=force,
        dynamic_batch=options.dynamic_batch, on_stage=on_stage, preprocess=preprocess, data=data,
        evaluate_accuracy=eval_data is not None, int8=int8, calibration_data=calibration_images, model=source.model,
        calibration=calibration_set_,
    )
    for fmt, report in result.manifest.ops.items():
        for warning in report["warnings"]:
            on_warning(f"{fmt} graph: {warning}")
    for warning in (result.manifest.int8 or {}).get("warnings", []):
        on_warning(f"int8: {warning}")
    return result


@dataclass
class _Fp32Job:
    """What every FP32 step shares: the model asked for, the files' settings, and the stage timings."""

    spec: ModelSpec
    formats: Sequence[str]
    nhwc: bool
    dynamic_batch: bool
    on_stage: Callable[[str], None]
    timings: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str) -> Callable[[], None]:
        """Announce stage `name`; the returned function records its time."""
        self.on_stage(name)
        start = time.perf_counter()
        return lambda: self.timings.__setitem__(name, round(time.perf_counter() - start, 3))


def _build(job: _Fp32Job, weights: Path | None, given: nn.Module | None
           ) -> tuple[torch.nn.Module, dict[str, Any], Any]:
    """The eval-mode model with `weights` loaded (the user's own `given` module, or the zoo model of the spec),
    where its weights came from, and its params and MACs."""
    done = job.stage("build")
    if job.spec.custom != (given is not None):
        raise ValueError("a custom spec comes with its module, a zoo spec without one")
    model = build(job.spec).eval() if given is None else copy.deepcopy(given).eval()
    source: dict[str, Any] = {"weights": None, "sha256": None, "pretrained": False}
    if job.spec.custom:
        source["model"] = job.spec.options["source"]
        check_capturable(model, job.spec.input_shape, job.spec.name)
    if weights is not None:
        if given is None:
            load_weights(model, weights)  # the user's own module had them loaded when it was described
        source = {"weights": str(weights), "sha256": FileRecord.of(weights).sha256, "pretrained": True}
    complexity = profile_model(model, job.spec.input_shape)
    done()
    return model, source, complexity


def _parity_inputs(spec: ModelSpec, data: ImageSet | None, preprocess: Preprocess | None
                   ) -> tuple[np.ndarray, str]:
    """The images every file is compared on (the first of `data`, else seeded noise), and how to name them."""
    if data is not None and preprocess is not None:
        inputs = preprocess(data.images[:PARITY_SAMPLES])
        return inputs, f"the first {len(inputs)} images of {data.name}"
    return parity_inputs(spec), f"{PARITY_SAMPLES} standard-normal images, seed 0"


def _write_fp32(job: _Fp32Job, model: torch.nn.Module, staging: Path, inputs: np.ndarray, reference: np.ndarray,
                evaluation: tuple[ImageSet, Preprocess, dict[str, Any]] | None
                ) -> tuple[dict[str, FileRecord], dict[str, Any], dict[str, Any]]:
    """model.<format> for each format, refused unless it matches torch on `inputs`; with `evaluation` (data,
    preprocessing, the accuracy record), each file's top-1 is added to the record. Returns the file records,
    the parity results and the op reports."""
    example = torch.zeros((1, *job.spec.input_shape))
    files: dict[str, FileRecord] = {}
    parity: dict[str, Any] = {}
    ops: dict[str, Any] = {}
    for fmt in job.formats:
        path = staging / f"model.{fmt}"
        done = job.stage(f"export {fmt}")
        behaviour = formats.FORMATS[fmt].behaviour
        behaviour("exporter")(model, example, path, nhwc=job.nhwc, dynamic_batch=job.dynamic_batch)
        with quiet():  # the TFLite interpreter announces its XNNPACK delegate on stderr
            runner = behaviour("runner")(path, layout=_layout(job, fmt))
        done()
        done = job.stage(f"parity {fmt}")
        result = compare(reference, runner.predict(inputs))
        done()
        if not result.fp32_ok:
            raise EdgekitError(
                f"{fmt} output disagrees with torch (max rel diff {result.max_rel_diff:.2e}, "
                f"cosine {result.min_cosine:.6f}): no artifact written; please report this model and version."
            )
        if evaluation is not None:
            data, preprocess, accuracy = evaluation
            done = job.stage(f"accuracy {fmt}")
            accuracy["top1"][fmt] = evaluate(runner, data, preprocess).top1
            done()
        files[fmt] = FileRecord.of(path)
        parity[fmt] = result.to_dict()
        ops[fmt] = _op_report(fmt, inspect_file(path), job.nhwc)
    return files, parity, ops


def _with_tflite_metadata(staging: Path, files: dict[str, FileRecord], spec: ModelSpec, preprocess: Preprocess,
                          classes: list[str] | None) -> dict[str, FileRecord]:
    """Every .tflite gets TFLite Support metadata (normalization in pixel units, the class names as its labels
    file), so Android tooling needs no manifest; the file records are taken again."""
    from edgekit import __version__
    from edgekit.runtime.tflite_metadata import TFLiteMetadata, with_metadata

    scale = preprocess.range[1]
    meta = TFLiteMetadata(
        name=artifact_name(spec), version=__version__,
        description=f"{spec.name} at {spec.resolution} px, exported by edgekit",
        resolution=spec.resolution, channels=spec.in_channels,
        mean=tuple(m * scale for m in preprocess.mean), std=tuple(s * scale for s in preprocess.std),
        labels=list(map(str, classes)) if classes else None)
    out = dict(files)
    for key, record in files.items():
        if formats.base_format(key).name == "tflite":
            path = staging / record.file
            path.write_bytes(with_metadata(path.read_bytes(), meta))  # in the staging directory, not yet visible
            out[key] = FileRecord.of(path)
    return out


def _layout(job: _Fp32Job, fmt: str) -> str:
    """The input layout of the `fmt` file: channels-last with --nhwc where the format can take it."""
    return "nhwc" if job.nhwc and formats.FORMATS[fmt].channels_last else "nchw"


def _input_section(job: _Fp32Job, preprocess: Preprocess | None, data: ImageSet | None) -> InputRecord:
    """The manifest's `input`: what each file takes and how to make it from an image."""
    return InputRecord(
        layout={fmt: _layout(job, fmt) for fmt in job.formats},
        shape_nchw=[1, *job.spec.input_shape],
        dtype="float32",
        dynamic_batch={"onnx": job.dynamic_batch, "tflite": False},
        preprocess=preprocess.to_dict() if preprocess is not None else None,
        data=data.source if data is not None else None,
        classes=data.classes if data is not None else None,
    )


def _op_report(fmt: str, info: dict[str, Any], nhwc: bool) -> dict[str, Any]:
    expected = EXPECTED_TFLITE_OPS if fmt == "tflite" else EXPECTED_ONNX_OPS
    histogram = info["ops"]
    unexpected = sorted(op for op in histogram if op not in expected)
    transposes = info.get("layout_transposes", 0)
    allowed = 0 if (nhwc or fmt == "onnx") else 1
    warnings = [f"unexpected ops: {', '.join(unexpected)}"] if unexpected else []
    if transposes > allowed:
        warnings.append(
            f"{transposes} NCHW<->NHWC TRANSPOSEs (at most {allowed} expected): the converter wraps reshapes "
            "such as channel shuffles in layout changes, which cost time on the device"
        )
    return {"histogram": histogram, "unexpected": unexpected, "layout_transposes": transposes, "warnings": warnings}
