"""Post-training INT8: calibrate once in torch (PT2E), export the same quantized graph to ONNX and TFLite.

The converted PT2E graph is also the fake-quantized torch reference both files are compared with.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.fx import GraphModule, Node

from edgekit.core.errors import EdgekitError
from edgekit.core.quiet import quiet
from edgekit.export.converters import ONNX_OPSET, tflite_ready
from edgekit.quantize.annotator import EdgeQuantizer, QuantSettings
from edgekit.quantize.equalize import equalize
from edgekit.quantize.onnx_qdq import tidy_qdq
from edgekit.quantize.tflite_io import add_float_io

CALIBRATION_BATCH = 32
MIN_CALIBRATION = 8


@dataclass
class QuantizedModel:
    """A calibrated, converted PT2E graph: runs in torch with the exact int8 rounding of the exported files."""

    graph: GraphModule
    settings: QuantSettings
    calibration_images: int
    equalized_pairs: int = 0  # convolution pairs cross-layer equalized before calibration

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.graph(batch)


def _check_images(images: np.ndarray, model_input: tuple[int, ...]) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model_input):
        raise EdgekitError(
            f"calibration images have shape {tuple(images.shape[1:])} but the model takes {tuple(model_input)}: "
            "calibrate with data at the model's resolution and channels (the checkpoint's own data)."
        )
    if len(images) < MIN_CALIBRATION:
        raise EdgekitError(
            f"only {len(images)} calibration images: give at least {MIN_CALIBRATION} (a few hundred is typical)."
        )
    if not np.isfinite(images).all():
        raise EdgekitError("calibration images contain NaN or Inf: check the data and its preprocessing.")


def _check_weights(model: nn.Module) -> None:
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise EdgekitError(f"weight {name} contains NaN or Inf: the checkpoint is damaged or training diverged.")


def capture(model: nn.Module, input_shape: tuple[int, ...]) -> GraphModule:
    """torch.export the eval-mode model with a dynamic batch axis (calibration runs in batches)."""
    example = torch.zeros((2, *input_shape))
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},)).module()


def prepare(model: nn.Module, images: np.ndarray, settings: QuantSettings,
            skip: Callable[[Node], bool] | None = None) -> GraphModule:
    """Check the inputs, capture the model with its BatchNorm folded, insert observers (or, with
    `settings.qat`, fake-quantizers) and let them see the calibration images. Nodes for which `skip` is true
    stay in float."""
    input_shape = tuple(int(d) for d in images.shape[1:])
    spec = getattr(model, "spec", None)
    _check_images(images, spec.input_shape if spec is not None else input_shape)
    _check_weights(model)
    # the captured graph shares its parameters with `model`: fine-tuning would change the caller's model
    return prepare_captured(capture(copy.deepcopy(model), input_shape), images, settings, skip)


def prepare_captured(graph: GraphModule, images: np.ndarray, settings: QuantSettings,
                     skip: Callable[[Node], bool] | None = None) -> GraphModule:
    """`prepare` on a graph from `capture`, which it changes in place: pass a copy to prepare one twice."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    equalized = 0
    with quiet():
        if settings.qat or settings.equalize:
            # BN folded once with its running statistics, as post-training does, so the fine-tuned graph is the
            # exported one: no train/eval BN switch and no re-folding after training. Equalization needs the
            # folded weights too.
            _fuse_conv_bn_(graph)
        if settings.equalize:
            equalized = equalize(graph)
        if settings.qat:
            prepared = prepare_qat_pt2e(graph, EdgeQuantizer(settings, skip))
        else:
            prepared = prepare_pt2e(graph, EdgeQuantizer(settings, skip))
    prepared.edgekit_equalized_pairs = equalized
    with torch.no_grad():
        for start in range(0, len(images), CALIBRATION_BATCH):
            prepared(torch.from_numpy(np.ascontiguousarray(images[start:start + CALIBRATION_BATCH])))
    return prepared


def convert(prepared: GraphModule, settings: QuantSettings, calibration_images: int) -> QuantizedModel:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    equalized = getattr(prepared, "edgekit_equalized_pairs", 0)
    with quiet():
        # No move_exported_model_to_eval: `capture` exports the eval-mode model, so dropout and batchnorm are
        # already their eval forms, and torchao's pattern rewrite (1-2 s a call) would replace them with themselves
        converted = convert_pt2e(prepared, fold_quantize=False)
    return QuantizedModel(graph=converted, settings=settings, calibration_images=calibration_images,
                          equalized_pairs=equalized)


def quantize_ptq(model: nn.Module, images: np.ndarray, settings: QuantSettings) -> QuantizedModel:
    """Fold BN, observe the calibration images, convert: int8 weights and activations as `settings` say."""
    return convert(prepare(model, images, settings), settings, len(images))


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
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return changes


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
