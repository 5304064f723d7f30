"""Tidy the QDQ ONNX graph torch.onnx writes for a converted PT2E model, so ONNX Runtime fuses it.

torch.onnx exports a weight's fake quantization as QuantizeLinear -> Clip(-127, 127) -> DequantizeLinear on the
float weight, evaluated at run time, and keeps ReLU/ReLU6 between a convolution and its output QuantizeLinear.
ORT's CPU provider fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv only when the weight is an
int8 constant and nothing sits between the Conv and the QuantizeLinear. So:
- weights are quantized once, here, into int8 initializers (same rounding as torch: half to even), and
  constants quantized like activations into uint8 ones (see below);
- a DequantizeLinear that feeds several ops (torch.onnx's common-subexpression pass merges them) is duplicated,
  one per consumer: ORT fuses a node unit only when its DequantizeLinear inputs are its own;
- activations move from int8 to uint8 with the zero point shifted by 128: the same 256 values, so the same
  calibration as the TFLite graph, but the U8S8 form ORT fuses everywhere (with int8 activations it leaves the
  convolutions and ADDs around every residual connection in float);
- a Clip or Relu whose every consumer is a QuantizeLinear that already saturates inside the clamp's range is
  dropped: the int8 range *is* the ReLU6, exactly as TFLite's fused activation;
- every weight DequantizeLinear gets its own weight and zero-point initializers (torch.onnx shares equal
  constants): on x86 CPUs without VNNI, ORT's exact-int8 mode (runtime.harness.ort_session_options) rewrites each fused
  weight and zero point to uint8 under a name derived from the original, and fails on a shared one.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

CLAMP_SLACK = 1e-6


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            users[name].append(node)
    return users


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _quantize(weight: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int, low: float, high: float
              ) -> np.ndarray:
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * weight.ndim
        shape[axis] = scale.size
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    q = np.rint(weight / scale) + zero_point.astype(np.float64)
    return np.clip(q, low, high).astype(zero_point.dtype)


def fold_weight_quantization(model: onnx.ModelProto) -> int:
    """QuantizeLinear(float W) [-> Clip] -> DequantizeLinear becomes int8 W -> DequantizeLinear. Returns the count."""
    constants = _constants(model)
    initializers = {i.name for i in model.graph.initializer}
    users = _consumers(model)
    removed: set[str] = set()
    folded = 0
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in initializers:
            continue
        scale, zero_point = constants.get(node.input[1]), constants.get(node.input[2])
        if scale is None or zero_point is None:
            continue
        info = np.iinfo(zero_point.dtype)
        low, high, tail = float(info.min), float(info.max), node
        after = users[node.output[0]]
        if len(after) == 1 and after[0].op_type == "Clip":
            clip = after[0]
            low = max(low, float(constants[clip.input[1]])) if len(clip.input) > 1 and clip.input[1] else low
            high = min(high, float(constants[clip.input[2]])) if len(clip.input) > 2 and clip.input[2] else high
            tail = clip
        dequantizers = users[tail.output[0]]
        if not dequantizers or any(d.op_type != "DequantizeLinear" for d in dequantizers):
            continue
        q = _quantize(constants[node.input[0]].astype(np.float64), scale, zero_point, _axis(node), low, high)
        name = f"{node.input[0]}_quantized"
        if tail is node and zero_point.dtype == np.int8:
            # no symmetric Clip: a constant quantized like an activation (hard-sigmoid's +3 and *1/6); it joins
            # the activations' uint8 form so its ADD/MUL fuses
            q = (q.astype(np.int16) + 128).astype(np.uint8)
            zp_name = f"{node.input[0]}_zero_point_u8"
            model.graph.initializer.append(numpy_helper.from_array((zero_point.astype(np.int16) + 128).astype(np.uint8),
                                                                   zp_name))
            for d in dequantizers:
                d.input[2] = zp_name
        model.graph.initializer.append(numpy_helper.from_array(q, name))
        for d in dequantizers:
            d.input[0] = name
        removed.update({node.output[0], tail.output[0]})
        folded += 1
    _drop(model, removed)
    return folded


def drop_redundant_clamps(model: onnx.ModelProto) -> int:
    """Remove Relu/Clip nodes whose outputs only feed QuantizeLinear ops that saturate within the clamp."""
    constants = _constants(model)
    users = _consumers(model)
    produced_outputs = {o.name for o in model.graph.output}
    removed: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in ("Relu", "Clip") or node.output[0] in produced_outputs:
            continue
        low, high = 0.0, np.inf
        if node.op_type == "Clip":
            low = float(constants[node.input[1]]) if len(node.input) > 1 and node.input[1] else -np.inf
            high = float(constants[node.input[2]]) if len(node.input) > 2 and node.input[2] else np.inf
        consumers = users[node.output[0]]
        if not consumers or not all(_saturates_within(q, constants, low, high) for q in consumers):
            continue
        for q in consumers:
            q.input[0] = node.input[0]
        removed.add(node.output[0])
    _drop(model, removed)
    return len(removed)


def _saturates_within(node: onnx.NodeProto, constants: dict[str, np.ndarray], low: float, high: float) -> bool:
    if node.op_type != "QuantizeLinear" or node.input[1] not in constants or node.input[2] not in constants:
        return False
    scale, zero_point = constants[node.input[1]], constants[node.input[2]]
    if scale.size != 1:
        return False
    info = np.iinfo(zero_point.dtype)
    s, z = float(scale), int(zero_point)
    q_low, q_high = (info.min - z) * s, (info.max - z) * s
    return q_low >= low - CLAMP_SLACK and q_high <= high + CLAMP_SLACK * max(1.0, abs(high))


def _drop(model: onnx.ModelProto, removed: set[str]) -> None:
    """Remove the nodes whose first output is named in `removed`, and initializers nothing uses any more."""
    keep = [n for n in model.graph.node if n.output[0] not in removed]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {name for n in model.graph.node for name in n.input}
    unused = [i for i in model.graph.initializer if i.name not in used]
    for i in unused:
        model.graph.initializer.remove(i)


def unshare_dequantize(model: onnx.ModelProto) -> int:
    """Give every consumer of a shared DequantizeLinear its own copy. Returns the number of copies made."""
    users = _consumers(model)
    graph_outputs = {o.name for o in model.graph.output}
    nodes: list[onnx.NodeProto] = []
    copies = 0
    for node in model.graph.node:
        nodes.append(node)
        consumers = users[node.output[0]] if node.op_type == "DequantizeLinear" else []
        if len(consumers) < 2 or node.output[0] in graph_outputs:
            continue
        for k, consumer in enumerate(consumers[1:], start=1):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = f"{node.name}_{k}"
            copy.output[0] = f"{node.output[0]}_{k}"
            for i, name in enumerate(consumer.input):
                if name == node.output[0]:
                    consumer.input[i] = copy.output[0]
            nodes.append(copy)
            copies += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return copies


def activations_to_uint8(model: onnx.ModelProto) -> int:
    """Re-express every int8 activation Q/DQ pair as uint8 (zero point + 128). Weights stay int8."""
    constants = _constants(model)
    initializers = {i.name for i in model.graph.initializer}
    shifted: dict[str, str] = {}
    changed = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        if node.input[0] in initializers:  # a weight
            continue
        zero_point = constants.get(node.input[2])
        if zero_point is None or zero_point.dtype != np.int8:
            continue
        if node.input[2] not in shifted:
            name = f"{node.input[2]}_u8"
            value = (zero_point.astype(np.int16) + 128).astype(np.uint8)
            model.graph.initializer.append(numpy_helper.from_array(value, name))
            shifted[node.input[2]] = name
        node.input[2] = shifted[node.input[2]]
        changed += 1
    del model.graph.value_info[:]  # recorded int8 types of the activations; ONNX infers the new ones
    _drop(model, set())
    return changed


def unshare_weight_constants(model: onnx.ModelProto) -> int:
    """Give each int8 weight DequantizeLinear its own weight and zero-point initializers. Returns the copies made."""
    initializers = {i.name: i for i in model.graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in model.graph.node:
        weight = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weight is None or weight.data_type != onnx.TensorProto.INT8:
            continue
        for index in (0, 2):
            if index >= len(node.input) or node.input[index] not in initializers:
                continue
            name = node.input[index]
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}_{node.output[0]}"
                model.graph.initializer.append(copy)
                node.input[index] = copy.name
                copies += 1
            seen.add(node.input[index])
    return copies


def tidy_qdq(model: onnx.ModelProto) -> dict[str, int]:
    """All the passes, in place; returns what each changed (recorded in the manifest)."""
    return {
        "weights_folded": fold_weight_quantization(model),
        "clamps_dropped": drop_redundant_clamps(model),
        "activations_to_uint8": activations_to_uint8(model),
        "dequantize_unshared": unshare_dequantize(model),
        "weight_constants_unshared": unshare_weight_constants(model),
    }
