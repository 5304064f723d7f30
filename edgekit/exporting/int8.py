"""The INT8 stage of `edgekit export --int8`: quantize the FP32 model once (edgekit.quantization), write
model_int8.onnx and model_int8.tflite, check both (edgekit.exporting.verify), and describe it all in the manifest."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edgekit.data import ImageSet, Preprocess
from edgekit.exporting.calibration import CalibrationSet
from edgekit.exporting.int8_files import Int8File
from edgekit.exporting.verify import (
    FakeQuantRunner,
    graph_warnings,
    int8_accuracy,
    int8_parity,
    predictions,
)
from edgekit.inspect import inspect_file
from edgekit.manifest import FileRecord
from edgekit.models import ModelSpec
from edgekit.quantization.fallback import quantize_within_budget, unquantized_ops
from edgekit.quantization.options import Int8Plan, require_data
from edgekit.quantization.ptq import QuantizedModel, quantize_ptq
from edgekit.quantization.qat import quantize_qat
from edgekit.runtime import formats
from edgekit.runtime.runners import Runner, file_runner


def _quantization_summary(quantized: QuantizedModel) -> dict[str, Any]:
    """Scales of the activation quantization points and the count of quantized weights."""
    scales, weights = [], 0
    for node in quantized.graph.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if "quantize_per_tensor" in name and "dequantize" not in name:
            scales.append(float(node.args[1]))
        elif "quantize_per_channel" in name and "dequantize" not in name:
            weights += 1
    values = np.array(scales) if scales else np.zeros(1)
    return {
        "activation_quantizers": len(scales),
        "weight_tensors_per_channel": weights,
        "activation_scale": {"min": float(values.min()), "median": float(np.median(values)),
                             "max": float(values.max())},
    }


def _write(job: Int8Job, quantized: QuantizedModel, fmt: str, path: Path) -> Int8File:
    """model_int8.<fmt> by the format table's INT8 writer."""
    writer = formats.FORMATS[fmt].behaviour("int8_writer")
    return writer(quantized, job.spec.input_shape, path, int8_io=job.plan.options.int8_io, nhwc=job.nhwc)


def _io_quantization(path: Path) -> dict[str, Any]:
    info = inspect_file(path)
    return {"input": info["inputs"][0].get("quantization"), "output": info["outputs"][0].get("quantization")}


@dataclass
class Int8Job:
    """Everything one INT8 export works from: the FP32 model, what was asked, the calibration images, where the
    files go, and the FP32 figures they are checked against."""

    model: nn.Module
    spec: ModelSpec
    plan: Int8Plan
    calibration: CalibrationSet
    staging: Path
    formats: Sequence[str]
    nhwc: bool
    parity_inputs: np.ndarray
    fp32_reference: np.ndarray
    data: ImageSet | None  # evaluation data (accuracy, and the --max-drop budget)
    preprocess: Preprocess | None
    fp32_top1: float | None
    stage: Callable[[str], Callable[[], None]]
    train_data: ImageSet | None = None  # quantization-aware fine-tuning
    on_progress: Callable[[str], None] = lambda text: None

    @property
    def evaluated(self) -> bool:
        return self.data is not None and self.preprocess is not None and self.fp32_top1 is not None


@dataclass(frozen=True)
class _Written:
    """An INT8 file the accuracy-aware search already wrote (and described) for the model it accepted."""

    path: Path
    graph: dict[str, Any]


@dataclass
class _Quantized:
    model: QuantizedModel
    qat: Any = None  # QatRecord
    fallback: Any = None  # the accuracy-aware search's result
    written: dict[str, _Written] = field(default_factory=dict)  # by format: files of `model` to keep, not rewrite


def build_int8(job: Int8Job) -> tuple[dict[str, Any], dict[str, FileRecord]]:
    """Write model_int8.<format> into `job.staging`. Returns the manifest section (warnings included) and the
    file records."""
    require_data(job.plan.options.accuracy_aware, job.plan.qat is not None, job.evaluated,
                 job.train_data is not None and job.preprocess is not None)
    quantized = _quantize(job)
    paths = {fmt: job.staging / f"model_int8.{fmt}" for fmt in job.formats}
    runners, graph = _write_files(job, quantized, paths)
    done = job.stage("int8 parity")
    parity = int8_parity(runners, job.parity_inputs, job.fp32_reference)
    done()
    accuracy, warnings = None, []
    if job.evaluated:
        assert job.data is not None and job.preprocess is not None and job.fp32_top1 is not None
        accuracy, warnings = int8_accuracy(runners, job.data, job.preprocess, job.fp32_top1, job.stage)
    warnings += graph_warnings(graph, float_asked=bool(quantized.fallback and quantized.fallback.float_layers))
    islands = unquantized_ops(quantized.model)
    warnings += [f"{i['op']} ({', '.join(i['modules'][:3])}) is not quantized: {i['why']}; a ReLU, ReLU6 or "
                 "hardswish keeps the graph integer" for i in islands]
    section = _section(job, quantized, paths, graph, parity, accuracy, warnings)
    section["unquantized_ops"] = islands
    return section, {f"{fmt}_int8": FileRecord.of(path) for fmt, path in paths.items()}


def _quantize(job: Int8Job) -> _Quantized:
    """Post-training calibration, the accuracy-aware search (--max-drop) or quantization-aware fine-tuning."""
    if job.plan.options.accuracy_aware:
        return _quantize_within_budget(job)
    if job.plan.qat is not None:
        return _quantize_aware(job)
    done = job.stage("int8 calibrate")
    quantized = quantize_ptq(job.model, job.calibration.images, job.plan.settings())
    done()
    return _Quantized(quantized)


def _quantize_within_budget(job: Int8Job) -> _Quantized:
    """--max-drop: layers go back to float until the deployed files' top-1 drop fits the budget."""
    assert job.data is not None and job.preprocess is not None and job.plan.options.max_drop is not None
    data, preprocess, options = job.data, job.preprocess, job.plan.options
    done = job.stage("int8 accuracy-aware calibration")
    labels = data.labels.numpy()

    # Each trial writes the deployed files into a folder of its own in the staging directory; the accepted
    # candidate is the last one tried, so its files become the export's instead of being converted again.
    trials = Path(tempfile.mkdtemp(prefix=".int8-trials-", dir=job.staging))
    last: dict[str, Any] = {}

    def deployed_top1(candidate: QuantizedModel) -> dict[str, float]:
        shutil.rmtree(last.get("folder", trials / "none"), ignore_errors=True)
        folder = Path(tempfile.mkdtemp(dir=trials))
        last.update(folder=folder, model=candidate, written={})
        found = {}
        for fmt in job.formats:
            path = folder / f"model_int8.{fmt}"
            written = _write(job, candidate, fmt, path)
            last["written"][fmt] = _Written(path, written.graph)
            found[f"{fmt}_int8"] = float((predictions(written.runner, data, preprocess) == labels).mean())
        return found

    fallback = quantize_within_budget(job.model, job.calibration.images, preprocess(data.images), labels,
                                      job.plan.settings(), options.max_drop, deployed_top1=deployed_top1,
                                      on_progress=job.on_progress)
    done()
    if last.get("model") is not fallback.quantized:  # never so today: the accepted candidate is the last tried
        shutil.rmtree(trials)
        return _Quantized(fallback.quantized, fallback=fallback)
    return _Quantized(fallback.quantized, fallback=fallback, written=last["written"])


def _quantize_aware(job: Int8Job) -> _Quantized:
    """--qat-epochs: calibrate, then fine-tune through the fake-quantizers on the training data."""
    assert job.train_data is not None and job.preprocess is not None and job.plan.qat is not None
    done = job.stage("int8 quantization-aware training")
    qat = job.plan.qat

    def report(epoch: int, step: int, steps: int, loss: float) -> None:
        if step % 10 == 0 or step == steps:
            job.on_progress(f"int8 quantization-aware training: epoch {epoch}/{qat.epochs}, step {step}/{steps}, "
                            f"loss {loss:.4f}")

    quantized, record = quantize_qat(job.model, job.calibration.images, job.train_data, job.preprocess,
                                     job.plan.settings(), qat, on_step=report)
    done()
    return _Quantized(quantized, qat=record)


def _write_files(job: Int8Job, quantized: _Quantized, paths: dict[str, Path]
                 ) -> tuple[dict[str, Runner], dict[str, Any]]:
    """The INT8 files (moved into place where the accuracy-aware search already wrote them), a runner for each
    (and for the fake-quantized torch graph), and what each graph holds."""
    runners: dict[str, Runner] = {"torch_int8": FakeQuantRunner(quantized.model)}
    graph: dict[str, Any] = {}
    for fmt, path in paths.items():
        name = formats.FORMATS[fmt].int8_name
        if fmt in quantized.written:
            os.replace(quantized.written[fmt].path, path)
            layout = "nhwc" if job.nhwc and formats.FORMATS[fmt].channels_last else "nchw"
            runners[name], graph[fmt] = file_runner(path, layout=layout), quantized.written[fmt].graph
            continue
        done = job.stage(f"int8 export {fmt}")
        written = _write(job, quantized.model, fmt, path)
        runners[name], graph[fmt] = written.runner, written.graph
        done()
    for folder in {w.path.parent.parent for w in quantized.written.values()}:
        shutil.rmtree(folder, ignore_errors=True)  # the search's trial folders
    return runners, graph


def _section(job: Int8Job, quantized: _Quantized, paths: dict[str, Path], graph: dict[str, Any],
             parity: dict[str, Any], accuracy: dict[str, Any] | None, warnings: list[str]) -> dict[str, Any]:
    """The manifest's int8 section."""
    options, fallback, qat = job.plan.options, quantized.fallback, quantized.qat
    return {
        "scheme": {
            "weights": "int8 symmetric " + ("per-tensor" if options.per_tensor else "per-channel"),
            "activations": "int8 asymmetric per-tensor (uint8 with zero point + 128 in ONNX: the same values)",
            "bias": "int32 (input scale x weight scale)",
            "batch_norm": "folded into the convolutions",
            "fused_activations": "ReLU and ReLU6 observed after the clamp and fused into the producing op",
            "equalization": (f"cross-layer, {quantized.model.equalized_pairs} convolution pair(s) joined by ReLU or "
                             "nothing" if options.equalize else None),
        },
        "method": "post-training" if qat is None else "quantization-aware",
        "qat": qat.to_dict() if qat is not None else None,
        "calibration": {"method": options.calib_method, **job.calibration.source},
        "layers": _quantization_summary(quantized.model),
        "float_layers": fallback.float_layers if fallback is not None else [],
        "accuracy_aware": fallback.to_dict() if fallback is not None else None,
        "io": {"dtype": "int8" if options.int8_io else "float32",
               "tflite": _io_quantization(paths["tflite"]) if options.int8_io and "tflite" in paths else None},
        "graph": graph,
        "parity": {"inputs": len(job.parity_inputs), "results": parity},
        "accuracy": accuracy,
        "warnings": warnings,
    }
