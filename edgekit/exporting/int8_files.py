"""The INT8 files: one quantized torch graph (edgekit.quantization.ptq) written as QDQ ONNX and full-integer TFLite,
and what the TFLite graph holds (full integer? activations fused?)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from edgekit.core.errors import EdgekitError
from edgekit.core.quiet import quiet
from edgekit.exporting.converters import ONNX_OPSET, tflite_ready
from edgekit.exporting.onnx_qdq import tidy_qdq
from edgekit.exporting.tflite_io import add_float_io
from edgekit.quantization.ptq import QuantizedModel
from edgekit.runtime.harness import EXACT_INT8_CONFIG, EXACT_INT8_METADATA
from edgekit.runtime.runners import Runner


@dataclass(frozen=True)
class Int8File:
    """An INT8 file just written: a runner for it, and what its graph holds (the manifest's int8.graph.<format>)."""

    runner: Runner
    graph: dict[str, Any]


def write_onnx_int8(quantized: QuantizedModel, input_shape: tuple[int, ...], path: Path, *, int8_io: bool = False,
                    nhwc: bool = False) -> Int8File:
    """The format table's INT8 writer for ONNX: a QDQ graph (float input and output, NCHW: ONNX Runtime takes no
    other, so `int8_io` and `nhwc` do not apply)."""
    from edgekit.exporting.verify import ort_fused_histogram
    from edgekit.inspect import inspect_file
    from edgekit.runtime.runners import OnnxRunner

    changes = export_int8_onnx(quantized, input_shape, path)
    info = inspect_file(path)
    graph = {"histogram": info["ops"], "tidy": changes, "onnxruntime_fused": ort_fused_histogram(path),
             "onnxruntime_needs": info["onnxruntime_needs"]}
    return Int8File(OnnxRunner(path), graph)


def write_tflite_int8(quantized: QuantizedModel, input_shape: tuple[int, ...], path: Path, *, int8_io: bool = False,
                      nhwc: bool = False) -> Int8File:
    """The format table's INT8 writer for TFLite: full-integer where the graph allows, int8 input and output with
    `int8_io`, channels-last input with `nhwc`."""
    from edgekit.inspect import inspect_file
    from edgekit.runtime.runners import TFLiteRunner

    export_int8_tflite(quantized, input_shape, path, int8_io=int8_io, nhwc=nhwc)
    graph = {"histogram": inspect_file(path)["ops"], **tflite_int8_report(path, int8_io)}
    with quiet():  # the interpreter announces its XNNPACK delegate on stderr
        return Int8File(TFLiteRunner(path, layout="nhwc" if nhwc else "nchw"), graph)


def export_int8_onnx(quantized: QuantizedModel, input_shape: tuple[int, ...], path: Path) -> dict[str, int]:
    """QDQ ONNX with int8 weights and uint8 activations (ORT's fused U8S8 form); float input and output."""
    example = torch.zeros((1, *input_shape))
    with quiet():
        program = torch.onnx.export(
            quantized.graph, (example,), dynamo=True, opset_version=ONNX_OPSET, input_names=["input"],
            output_names=["logits"], verbose=False,
        )
    model = program.model_proto
    changes = tidy_qdq(model)
    state_exact_int8_config(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return changes


def state_exact_int8_config(model: onnx.ModelProto) -> None:
    """Write into the file the session config entry it needs on x86 CPUs without VNNI, where ORT's default U8S8
    kernels saturate int8 products (docs/int8.md): whoever opens it with their own session can read it there
    (`edgekit inspect` shows it). ORT itself does not apply it: a session must add the entry."""
    entry = next((p for p in model.metadata_props if p.key == EXACT_INT8_METADATA), None) or model.metadata_props.add()
    entry.key, entry.value = EXACT_INT8_METADATA, json.dumps(EXACT_INT8_CONFIG)


def export_int8_tflite(quantized: QuantizedModel, input_shape: tuple[int, ...], path: Path, *,
                       int8_io: bool = False, nhwc: bool = False) -> None:
    """Full-integer TFLite through litert-torch; float input/output unless `int8_io`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet():
        import litert_torch
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig

    # a copy: the torch reference graph stays as it is
    module, example = tflite_ready(quantized.graph, torch.zeros((1, *input_shape)), nhwc)
    # litert-torch reads only "static Q/DQ" from this config; the quantization itself is already in the graph.
    static_qdq = QuantConfig(pt2e_quantizer=PT2EQuantizer().set_global(get_symmetric_quantization_config()))
    try:
        with quiet():
            flatbuffer = litert_torch.convert(module, (example,), quant_config=static_qdq).model_content()
    except Exception as exc:  # the converter's errors come in many types; name the stage and the cause
        raise EdgekitError(f"INT8 TFLite conversion failed ({type(exc).__name__}: {str(exc)[:200]}).") from exc
    data = bytes(flatbuffer) if int8_io else add_float_io(bytes(flatbuffer))
    path.write_bytes(data)


def tflite_int8_report(path: Path, int8_io: bool) -> dict[str, Any]:
    """Is the TFLite graph full-integer, with ReLU/ReLU6 fused and their output ranges starting at 0?"""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    activations = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    boundary = set(graph.inputs) | set(graph.outputs)
    float_ops, interior_qdq, clamps, fused = [], [], [], {"RELU": 0, "RELU6": 0}
    relu6_zero_points: list[int] = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
        tensors = [graph.tensors[i] for i in list(op.inputs) + list(op.outputs) if i >= 0]
        if name in ("QUANTIZE", "DEQUANTIZE"):
            if not boundary.intersection(i for i in list(op.inputs) + list(op.outputs)):
                interior_qdq.append(name)
            continue
        if name in ("RELU", "RELU6", "RELU_N1_TO_1", "MINIMUM", "MAXIMUM"):
            clamps.append(name)
        if any(t.type == schema.TensorType.FLOAT32 and not _is_constant(model, t) for t in tensors):
            float_ops.append(name)
        options = op.builtinOptions
        activation = activations.get(getattr(options, "fusedActivationFunction", 0), "NONE")
        if activation in fused:
            fused[activation] += 1
            quant = graph.tensors[op.outputs[0]].quantization
            if activation == "RELU6" and quant is not None and quant.zeroPoint is not None:
                relu6_zero_points.append(int(quant.zeroPoint[0]))
    io_types = [graph.tensors[i].type for i in boundary]
    # Calibrating before the clamp puts the zero point above -128: that share of the 256 codes is wasted on
    # negative values the ReLU6 never outputs.
    wasted = [(z + 128) / 256 for z in relu6_zero_points]
    return {
        "full_integer": not float_ops and not interior_qdq,
        "float_ops": sorted(set(float_ops)),
        "interior_quantize_dequantize": len(interior_qdq),
        "separate_clamp_ops": len(clamps),
        "fused_activations": fused,
        "relu6_range_wasted_max": round(max(wasted), 4) if wasted else 0.0,
        "io_dtype": "int8" if int8_io else "float32",
        "io_types_ok": all(t == (schema.TensorType.INT8 if int8_io else schema.TensorType.FLOAT32) for t in io_types),
    }


def _is_constant(model: Any, tensor: Any) -> bool:
    buffer = model.buffers[tensor.buffer]
    return buffer.data is not None and len(buffer.data) > 0
