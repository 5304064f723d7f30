"""What an INT8 export is checked against: each file against the fake-quantized torch graph (and that graph
against FP32), the files against each other, top-1 on the evaluation data, and float left in an integer graph."""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.data import ImageSet, Preprocess
from edgekit.quantization.ptq import QuantizedModel
from edgekit.runtime.parity import compare
from edgekit.runtime.runners import Runner

MIN_FORMAT_AGREEMENT = 0.99  # top-1 agreement between the ONNX and TFLite INT8 files on the evaluation set


class FakeQuantRunner:
    """The converted PT2E graph in torch: the int8 arithmetic the files should reproduce."""

    name = "torch-int8"

    def __init__(self, quantized: QuantizedModel) -> None:
        self.quantized = quantized

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.quantized(torch.from_numpy(np.ascontiguousarray(batch))).numpy()


def predictions(runner: Runner, data: ImageSet, preprocess: Preprocess, batch_size: int = 256) -> np.ndarray:
    """The top-1 class `runner` gives each image of `data`."""
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


def int8_parity(runners: dict[str, Runner], inputs: np.ndarray, fp32_reference: np.ndarray) -> dict[str, Any]:
    """Each INT8 file (`runners` by format: onnx_int8, tflite_int8) against the fake-quantized torch graph
    (torch_int8), that graph against FP32, and the files against each other."""
    logits = {name: runner.predict(inputs) for name, runner in runners.items()}
    parity = {"torch_int8_vs_fp32": compare(fp32_reference, logits["torch_int8"]).to_dict()}
    for name in ("onnx_int8", "tflite_int8"):
        if name in logits:
            parity[f"{name}_vs_torch_int8"] = compare(logits["torch_int8"], logits[name]).to_dict()
    if "onnx_int8" in logits and "tflite_int8" in logits:
        parity["onnx_vs_tflite"] = compare(logits["onnx_int8"], logits["tflite_int8"]).to_dict()
    for record in parity.values():
        record.pop("passed", None)  # the FP32 tolerance does not apply to int8 rounding
    return parity


def int8_accuracy(runners: dict[str, Runner], data: ImageSet, preprocess: Preprocess, fp32_top1: float,
                  stage: Callable[[str], Callable[[], None]]) -> tuple[dict[str, Any], list[str]]:
    """Top-1 of every INT8 runner on `data`, its drop against FP32, and whether the files agree (a warning when
    they do not)."""
    labels = data.labels.numpy()
    predicted = {}
    for name, runner in runners.items():
        done = stage(f"accuracy {name}")
        predicted[name] = predictions(runner, data, preprocess)
        done()
    top1 = {name: float((p == labels).mean()) for name, p in predicted.items()}
    accuracy: dict[str, Any] = {
        "data": data.source or data.name,
        "images": len(labels),
        "top1": {"torch_fp32": fp32_top1, **top1},
        "drop_pp": {name: round(100 * (fp32_top1 - value), 3) for name, value in top1.items()},
    }
    warnings = []
    if "onnx_int8" in predicted and "tflite_int8" in predicted:
        agreement = float((predicted["onnx_int8"] == predicted["tflite_int8"]).mean())
        accuracy["onnx_tflite_top1_agreement"] = agreement
        if agreement < MIN_FORMAT_AGREEMENT:
            warnings.append(
                f"the ONNX and TFLite INT8 files agree on only {agreement:.2%} of top-1 predictions "
                f"(expected >= {MIN_FORMAT_AGREEMENT:.0%}): please report this model and version"
            )
    return accuracy, warnings


def graph_warnings(graph: dict[str, Any], float_asked: bool) -> list[str]:
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
