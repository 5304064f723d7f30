"""The INT8 stage of `edgekit export --int8`: calibrate once, write model_int8.onnx and model_int8.tflite,
check both against each other and the fake-quantized torch graph, and describe it all in the manifest."""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.artifact import file_record
from edgekit.core.errors import EdgekitError
from edgekit.core.quiet import quiet
from edgekit.data import DataSource, ImageSet, Preprocess, load_split, preprocess_for, require_same_classes
from edgekit.export.int8_files import export_int8_onnx, export_int8_tflite, tflite_int8_report
from edgekit.inspect import inspect_file
from edgekit.models import ModelSpec
from edgekit.quantize.fallback import quantize_within_budget
from edgekit.quantize.options import Int8Options, require_data
from edgekit.quantize.ptq import QuantizedModel, quantize_ptq
from edgekit.quantize.qat import quantize_qat
from edgekit.runtime.parity import compare
from edgekit.runtime.runners import OnnxRunner, Runner, TFLiteRunner

MIN_FORMAT_AGREEMENT = 0.99  # top-1 agreement between the ONNX and TFLite INT8 files on the evaluation set


@dataclass
class CalibrationSet:
    images: np.ndarray  # preprocessed float32 NCHW, what the model sees
    source: dict[str, Any]


def calibration_set(spec: ModelSpec, size: int, data: ImageSet | None, preprocess: Preprocess | None,
                    seed: int = 0) -> CalibrationSet:
    """`size` images drawn (seeded) from `data`, preprocessed; random normal images only when there is no data."""
    if size < 1:
        raise EdgekitError(f"--calib-size {size} is not a positive number of images: give e.g. --calib-size 512.")
    if data is None or preprocess is None:
        rng = np.random.default_rng(seed)
        images = rng.standard_normal((size, *spec.input_shape)).astype(np.float32)
        return CalibrationSet(images, {"data": None, "images": size, "note": "standard-normal noise: plumbing only"})
    if len(data) == 0:
        raise EdgekitError(f"{data.name} has no images to calibrate on: give --calib with real data.")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size]
    images = preprocess(data.images[order.sort().values])
    return CalibrationSet(images, {"data": data.source or data.name, "split": data.name, "images": len(images),
                                "seed": seed})


def calibration_data(calib: str | None, trained: Any, spec: ModelSpec, preprocess: Preprocess | None
                     ) -> tuple[ImageSet | None, Preprocess | None]:
    """The training split of `calib` (default: the checkpoint's own data) to calibrate on, and the preprocessing
    to apply to it; (None, preprocess) when there is neither: calibration then falls back to noise."""
    if calib is None and trained is None:
        return None, preprocess
    source = DataSource.parse(calib if calib is not None else trained.data)
    if preprocess is None:
        preprocess = trained.preprocess if trained else preprocess_for(source, spec.resolution, spec.in_channels)
    data = load_split(source, "train", spec.resolution, spec.in_channels)
    require_same_classes("the model", trained.classes if trained else spec.num_classes, data,
                         "calibrate on the data the model was trained for")
    return data, preprocess


class FakeQuantRunner:
    """The converted PT2E graph in torch: the int8 arithmetic the files should reproduce."""

    name = "torch-int8"

    def __init__(self, quantized: QuantizedModel) -> None:
        self.quantized = quantized

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.quantized(torch.from_numpy(np.ascontiguousarray(batch))).numpy()


def _predictions(runner: Runner, data: ImageSet, preprocess: Preprocess, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([runner.predict(preprocess(images)).argmax(-1) for images, _ in data.batches(batch_size)])


def ort_fused_histogram(path: Path) -> dict[str, int]:
    """The op histogram after ONNX Runtime's CPU graph optimizations: what actually runs."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return dict(collections.Counter(n.op_type for n in graph.node).most_common())


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


def _write_onnx(quantized: QuantizedModel, spec: ModelSpec, path: Path) -> tuple[dict[str, int], Runner]:
    changes = export_int8_onnx(quantized, spec.input_shape, path)
    return changes, OnnxRunner(path)


def _write_tflite(quantized: QuantizedModel, spec: ModelSpec, path: Path, int8_io: bool, nhwc: bool) -> Runner:
    export_int8_tflite(quantized, spec.input_shape, path, int8_io=int8_io, nhwc=nhwc)
    with quiet():
        return TFLiteRunner(path, layout="nhwc" if nhwc else "nchw")


def _io_quantization(path: Path) -> dict[str, Any]:
    info = inspect_file(path)
    return {"input": info["inputs"][0].get("quantization"), "output": info["outputs"][0].get("quantization")}


@dataclass
class Int8Job:
    """Everything one INT8 export works from: the FP32 model, what was asked, the calibration images, where the
    files go, and the FP32 figures they are checked against."""

    model: nn.Module
    spec: ModelSpec
    options: Int8Options
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


@dataclass
class _Quantized:
    model: QuantizedModel
    qat: Any = None  # QatRecord
    fallback: Any = None  # the accuracy-aware search's result


def build_int8(job: Int8Job) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write model_int8.<format> into `job.staging`. Returns the manifest section (warnings included) and the
    file records."""
    require_data(job.options.max_drop is not None, job.options.qat is not None, job.evaluated,
                 job.train_data is not None and job.preprocess is not None)
    quantized = _quantize(job)
    paths = {fmt: job.staging / f"model_int8.{fmt}" for fmt in job.formats}
    runners, graph = _write_files(job, quantized.model, paths)
    parity = _parity(job, runners, len(paths) == 2)
    accuracy, warnings = _accuracy(job, runners, len(paths) == 2)
    warnings += _graph_warnings(graph, float_asked=bool(quantized.fallback and quantized.fallback.float_layers))
    section = _section(job, quantized, paths, graph, parity, accuracy, warnings)
    return section, {f"{fmt}_int8": file_record(path) for fmt, path in paths.items()}


def _quantize(job: Int8Job) -> _Quantized:
    """Post-training calibration, the accuracy-aware search (--max-drop) or quantization-aware fine-tuning."""
    options, settings = job.options, job.options.settings()
    if options.max_drop is not None:
        assert job.data is not None and job.preprocess is not None
        data, preprocess = job.data, job.preprocess
        done = job.stage("int8 accuracy-aware calibration")
        labels = data.labels.numpy()

        def deployed_top1(candidate: QuantizedModel) -> dict[str, float]:
            with tempfile.TemporaryDirectory() as scratch:
                found = {}
                for fmt in job.formats:
                    path = Path(scratch) / f"model_int8.{fmt}"
                    runner = (_write_onnx(candidate, job.spec, path)[1] if fmt == "onnx"
                              else _write_tflite(candidate, job.spec, path, options.int8_io, job.nhwc))
                    found[f"{fmt}_int8"] = float((_predictions(runner, data, preprocess) == labels).mean())
                return found

        fallback = quantize_within_budget(job.model, job.calibration.images, preprocess(data.images), labels,
                                          settings, options.max_drop, deployed_top1=deployed_top1,
                                          on_progress=job.on_progress)
        done()
        return _Quantized(fallback.quantized, fallback=fallback)
    if options.qat is None:
        done = job.stage("int8 calibrate")
        quantized = quantize_ptq(job.model, job.calibration.images, settings)
        done()
        return _Quantized(quantized)
    assert job.train_data is not None and job.preprocess is not None
    done = job.stage("int8 quantization-aware training")
    qat = options.qat

    def report(epoch: int, step: int, steps: int, loss: float) -> None:
        if step % 10 == 0 or step == steps:
            job.on_progress(f"int8 quantization-aware training: epoch {epoch}/{qat.epochs}, step {step}/{steps}, "
                            f"loss {loss:.4f}")

    quantized, record = quantize_qat(job.model, job.calibration.images, job.train_data, job.preprocess, settings,
                                     qat, on_step=report)
    done()
    return _Quantized(quantized, qat=record)


def _write_files(job: Int8Job, quantized: QuantizedModel, paths: dict[str, Path]
                 ) -> tuple[dict[str, Runner], dict[str, Any]]:
    """The INT8 files, a runner for each (and for the fake-quantized torch graph), and what each graph holds."""
    runners: dict[str, Runner] = {"torch_int8": FakeQuantRunner(quantized)}
    graph: dict[str, Any] = {}
    if "onnx" in paths:
        done = job.stage("int8 export onnx")
        onnx_changes, runners["onnx_int8"] = _write_onnx(quantized, job.spec, paths["onnx"])
        graph["onnx"] = {"histogram": inspect_file(paths["onnx"])["ops"], "tidy": onnx_changes,
                         "onnxruntime_fused": ort_fused_histogram(paths["onnx"])}
        done()
    if "tflite" in paths:
        done = job.stage("int8 export tflite")
        runners["tflite_int8"] = _write_tflite(quantized, job.spec, paths["tflite"], job.options.int8_io, job.nhwc)
        graph["tflite"] = {"histogram": inspect_file(paths["tflite"])["ops"],
                           **tflite_int8_report(paths["tflite"], job.options.int8_io)}
        done()
    return runners, graph


def _parity(job: Int8Job, runners: dict[str, Runner], both: bool) -> dict[str, Any]:
    """Each INT8 file against the fake-quantized torch graph, that graph against FP32, and the files against each
    other."""
    done = job.stage("int8 parity")
    logits = {name: runner.predict(job.parity_inputs) for name, runner in runners.items()}
    parity = {"torch_int8_vs_fp32": compare(job.fp32_reference, logits["torch_int8"]).to_dict()}
    for name in ("onnx_int8", "tflite_int8"):
        if name in logits:
            parity[f"{name}_vs_torch_int8"] = compare(logits["torch_int8"], logits[name]).to_dict()
    if both:
        parity["onnx_vs_tflite"] = compare(logits["onnx_int8"], logits["tflite_int8"]).to_dict()
    for record in parity.values():
        record.pop("passed", None)  # the FP32 tolerance does not apply to int8 rounding
    done()
    return parity


def _accuracy(job: Int8Job, runners: dict[str, Runner], both: bool) -> tuple[dict[str, Any] | None, list[str]]:
    """Top-1 of every INT8 runner on the evaluation data, its drop against FP32, and whether the files agree."""
    if not job.evaluated:
        return None, []
    assert job.data is not None and job.preprocess is not None and job.fp32_top1 is not None
    labels = job.data.labels.numpy()
    predictions = {}
    for name, runner in runners.items():
        done = job.stage(f"accuracy {name}")
        predictions[name] = _predictions(runner, job.data, job.preprocess)
        done()
    top1 = {name: float((p == labels).mean()) for name, p in predictions.items()}
    accuracy: dict[str, Any] = {
        "data": job.data.source or job.data.name,
        "images": len(labels),
        "top1": {"torch_fp32": job.fp32_top1, **top1},
        "drop_pp": {name: round(100 * (job.fp32_top1 - value), 3) for name, value in top1.items()},
    }
    warnings = []
    if both:
        agreement = float((predictions["onnx_int8"] == predictions["tflite_int8"]).mean())
        accuracy["onnx_tflite_top1_agreement"] = agreement
        if agreement < MIN_FORMAT_AGREEMENT:
            warnings.append(
                f"the ONNX and TFLite INT8 files agree on only {agreement:.2%} of top-1 predictions "
                f"(expected >= {MIN_FORMAT_AGREEMENT:.0%}): please report this model and version"
            )
    return accuracy, warnings


def _graph_warnings(graph: dict[str, Any], float_asked: bool) -> list[str]:
    """Float left in a graph that should be integer (--max-drop's float layers are asked for, not a defect)."""
    warnings = []
    tflite_graph = graph.get("tflite")
    if tflite_graph is not None and not tflite_graph["full_integer"] and not float_asked:
        warnings.append(
            f"the TFLite INT8 graph is not full-integer: {', '.join(tflite_graph['float_ops']) or 'no op'} runs in "
            f"float, with {tflite_graph['interior_quantize_dequantize']} QUANTIZE/DEQUANTIZE inside the graph"
        )
    if "onnx" in graph and not float_asked:
        fused = graph["onnx"]["onnxruntime_fused"]
        in_float = {op: n for op, n in fused.items() if op in ("Conv", "Gemm", "MatMul", "Add", "Mul")}
        # ORT has no quantized HardSwish: it runs it as float HardSigmoid * x between its Q/DQ, by design
        in_float["Mul"] = in_float.get("Mul", 0) - fused.get("HardSigmoid", 0)
        in_float = {op: n for op, n in in_float.items() if n > 0}
        if in_float:
            warnings.append("ONNX Runtime leaves " + ", ".join(f"{n} {op}" for op, n in in_float.items())
                            + " in float")
    return warnings


def _section(job: Int8Job, quantized: _Quantized, paths: dict[str, Path], graph: dict[str, Any],
             parity: dict[str, Any], accuracy: dict[str, Any] | None, warnings: list[str]) -> dict[str, Any]:
    """The manifest's int8 section."""
    options, fallback, qat = job.options, quantized.fallback, quantized.qat
    return {
        "scheme": {
            "weights": "int8 symmetric " + ("per-channel" if options.per_channel else "per-tensor"),
            "activations": "int8 asymmetric per-tensor (uint8 with zero point + 128 in ONNX: the same values)",
            "bias": "int32 (input scale x weight scale)",
            "batch_norm": "folded into the convolutions",
            "fused_activations": "ReLU and ReLU6 observed after the clamp and fused into the producing op",
            "equalization": (f"cross-layer, {quantized.model.equalized_pairs} convolution pair(s) joined by ReLU or "
                             "nothing" if options.equalize else None),
        },
        "method": "post-training" if qat is None else "quantization-aware",
        "qat": qat.to_dict() if qat is not None else None,
        "calibration": {"method": options.method, **job.calibration.source},
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
