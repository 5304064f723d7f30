"""Where the int8 quantization points go in an exported (PT2E) graph, for full-integer TFLite and ONNX graphs.

One walk over the aten graph, op by op (no source-partition matching, which misses chained residual ADDs):
- conv2d / linear: int8 input, weights symmetric per-channel (per-tensor on request), float bias (the
  converters make it int32 from the input and weight scales). A following ReLU or ReLU6 is fused: the output
  is observed after the clamp, so its range is [0, 6] or inside it, and the converters fold the clamp away.
- add / mul: both inputs and the output (ReLU fused as above).
- hardswish and mean (global pooling): own output range. sigmoid: the fixed [0, 1) range TFLite's int8
  LOGISTIC requires; the hard-sigmoid's final multiply gets the same range.
- Ops that only move values (reshape, transpose, max-pool, concat, chunk, flatten), and average pooling
  (TFLite's int8 kernel wants equal input and output scales): share the range of their input, so no
  requantization appears around a channel shuffle or a concat.
- Rewrites first, into ops TFLite runs in int8: SiLU as x * sigmoid(x) (there is no int8 SiLU), and
  hard-sigmoid as relu6(x + 3) * 1/6 (litert-torch lowers hard-sigmoid to float ops; ADD with a fused RELU6
  and MUL by a constant are int8 kernels).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.fake_quantize import FusedMovingAvgObsFakeQuantize
from torchao.quantization.pt2e.observer import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from torchao.quantization.pt2e.quantizer import (
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    QuantizationSpec,
    Quantizer,
    SharedQuantizationSpec,
)

from edgekit.quantization.observers import PercentileObserver

aten = torch.ops.aten
EPS = 2.0**-12

WEIGHTED = {aten.conv2d.default, aten.linear.default}
FUSABLE_ACTIVATIONS = {aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default}
BINARY = {aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor}
OWN_RANGE = {
    aten.hardswish.default, aten.hardswish_.default, aten.mean.dim, aten.adaptive_avg_pool2d.default,
    aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default,
    aten.silu.default, aten.silu_.default,
}
UNIT_RANGE = {aten.sigmoid.default, aten.sigmoid_.default}
UNIT_RANGE_OUTPUT = "edgekit_unit_range"  # node meta flag: the output is in [0, 1] by construction
SHARED = {
    aten.view.default, aten.reshape.default, aten.flatten.using_ints, aten.transpose.int, aten.permute.default,
    aten.contiguous.default, aten.max_pool2d.default, aten.avg_pool2d.default, aten.squeeze.dim, aten.squeeze.dims,
    aten.unsqueeze.default,
    aten.clone.default, aten.dropout.default, aten.dropout_.default,
}
MULTI_OUTPUT = {aten.chunk.default, aten.split.Tensor, aten.split_with_sizes.default, aten.unbind.int}


@dataclass(frozen=True)
class QuantSettings:
    """How to quantize: what the user chose on the command line."""

    method: str = "minmax"
    per_channel: bool = True
    qat: bool = False
    equalize: bool = False  # cross-layer equalization of conv pairs before calibration (quantization/equalize.py)


def _activation_spec(settings: QuantSettings) -> QuantizationSpec:
    if settings.qat:
        ctr = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, eps=EPS)
    elif settings.method == "mse":
        ctr = HistogramObserver.with_args(eps=EPS)
    elif settings.method == "percentile":
        ctr = PercentileObserver.with_args(eps=EPS)
    else:
        ctr = MinMaxObserver.with_args(eps=EPS)
    return QuantizationSpec(
        dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=ctr,
    )


def _weight_spec(settings: QuantSettings) -> QuantizationSpec:
    if settings.per_channel:
        observer = MovingAveragePerChannelMinMaxObserver if settings.qat else PerChannelMinMaxObserver
        qscheme, axis = torch.per_channel_symmetric, 0
    else:
        observer = MovingAverageMinMaxObserver if settings.qat else MinMaxObserver
        qscheme, axis = torch.per_tensor_symmetric, None
    ctr = (
        FusedMovingAvgObsFakeQuantize.with_args(observer=observer, eps=EPS)
        if settings.qat else observer.with_args(eps=EPS)
    )
    return QuantizationSpec(
        dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=qscheme, ch_axis=axis,
        observer_or_fake_quant_ctr=ctr,
    )


UNIT_SPEC = FixedQParamsQuantizationSpec(
    dtype=torch.int8, scale=1.0 / 256.0, zero_point=-128, quant_min=-128, quant_max=127,
    qscheme=torch.per_tensor_affine,
)


def _is_relu6_or_relu(node: Node) -> bool:
    if node.target in (aten.relu.default, aten.relu_.default):
        return True
    if node.target in (aten.hardtanh.default, aten.hardtanh_.default):
        low = node.args[1] if len(node.args) > 1 else -1.0
        high = node.args[2] if len(node.args) > 2 else 1.0
        return float(low) == 0.0 and float(high) == 6.0
    return False


def fused_activation(node: Node) -> Node | None:
    """The ReLU/ReLU6 that consumes `node` alone, if any: the quantized op takes it as its fused activation."""
    users = list(node.users)
    if len(users) == 1 and users[0].target in FUSABLE_ACTIVATIONS and _is_relu6_or_relu(users[0]):
        return users[0]
    return None


def _annotate(node: Node, inputs: dict[Node, object], output: object | None) -> None:
    node.meta["quantization_annotation"] = QuantizationAnnotation(
        input_qspec_map=inputs, output_qspec=output, _annotated=True,
    )


def _annotated(node: Node) -> bool:
    annotation = node.meta.get("quantization_annotation")
    return annotation is not None and annotation._annotated


def _replace(node: Node, result: Node, new_nodes: list[Node]) -> None:
    for new in new_nodes:
        new.meta = dict(node.meta)
    node.replace_all_uses_with(result)
    node.graph.erase_node(node)


def _constant(model: GraphModule, name: str, like: Node, value: float) -> Node:
    """A broadcastable constant of `like`'s rank, as a graph tensor the quantizer can observe."""
    tensor = torch.full((1,) * like.meta["val"].dim(), value)
    model.register_buffer(name, tensor)
    node = model.graph.get_attr(name)
    node.meta["val"] = tensor
    return node


class EdgeQuantizer(Quantizer):
    """A PT2E quantizer whose graphs convert to full-integer TFLite (litert-torch) and fuse in ONNX Runtime."""

    def __init__(self, settings: QuantSettings, skip: Callable[[Node], bool] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.skip = skip or (lambda node: False)
        self.act = _activation_spec(settings)
        self.weight = _weight_spec(settings)

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        graph = model.graph
        for index, node in enumerate(list(graph.nodes)):
            if node.op != "call_function":
                continue
            if node.target in (aten.silu.default, aten.silu_.default):
                x = node.args[0]
                with graph.inserting_before(node):
                    gate = graph.call_function(aten.sigmoid.default, (x,))
                    product = graph.call_function(aten.mul.Tensor, (x, gate))
                _replace(node, product, [gate, product])
            elif node.target in (aten.hardsigmoid.default, aten.hardsigmoid_.default):
                x = node.args[0]
                with graph.inserting_before(node):
                    three = _constant(model, f"_edgekit_three_{index}", x, 3.0)
                    sixth = _constant(model, f"_edgekit_sixth_{index}", x, 1.0 / 6.0)
                    shifted = graph.call_function(aten.add.Tensor, (x, three))
                    clamped = graph.call_function(aten.hardtanh.default, (shifted, 0.0, 6.0))
                    scaled = graph.call_function(aten.mul.Tensor, (clamped, sixth))
                _replace(node, scaled, [shifted, clamped, scaled])
                scaled.meta[UNIT_RANGE_OUTPUT] = True
        graph.lint()
        model.recompile()
        return model

    def annotate(self, model: GraphModule) -> GraphModule:
        in_float = self._float_nodes(model)
        for node in model.graph.nodes:
            if node.op != "call_function" or _annotated(node) or node in in_float:
                continue
            target = node.target
            if target in WEIGHTED:
                self._weighted(node)
            elif target in BINARY:
                self._binary(node)
            elif target in UNIT_RANGE:
                _annotate(node, {node.args[0]: self.act}, UNIT_SPEC)
            elif target in OWN_RANGE:
                _annotate(node, {node.args[0]: self.act}, self.act)
            elif target in SHARED:
                self._shared(node)
            elif target == aten.cat.default:
                self._cat(node)
            elif target in MULTI_OUTPUT:
                self._multi_output(node)
        self._float_inputs(in_float)
        return model

    def _float_nodes(self, model: GraphModule) -> set[Node]:
        """The nodes `skip` keeps in float, with their fused ReLU/ReLU6 (no Q/DQ may sit between the two)."""
        in_float = set()
        for node in model.graph.nodes:
            if node.op == "call_function" and self.skip(node):
                in_float.add(node)
                activation = fused_activation(node)
                if activation is not None:
                    in_float.add(activation)
        return in_float

    @staticmethod
    def _float_inputs(in_float: set[Node]) -> None:
        """A float layer also takes a float input. Runtimes quantize any op found between a DEQUANTIZE and a
        QUANTIZE (ONNX Runtime's weight quantization, the TFLite converter's QDQ mode), float weights and all, so
        the producer's output quantization goes; its other consumers quantize that edge on their own inputs."""
        for node in in_float:
            for producer in node.all_input_nodes:
                annotation = producer.meta.get("quantization_annotation")
                if annotation is not None and producer not in in_float:
                    annotation.output_qspec = None

    def validate(self, model: GraphModule) -> None:
        pass

    def _output(self, node: Node) -> QuantizationSpec | None:
        """Observe the output after a fused ReLU/ReLU6 when there is one."""
        activation = fused_activation(node)
        if activation is not None and not self.skip(activation):
            _annotate(activation, {}, self.act)
            return None
        return self.act

    def _weighted(self, node: Node) -> None:
        x, weight = node.args[0], node.args[1]
        inputs = {x: self.act, weight: self.weight}
        _annotate(node, inputs, self._output(node))

    def _binary(self, node: Node) -> None:
        tensors = [a for a in node.args[:2] if isinstance(a, Node)]
        if len(tensors) < 2:  # x + constant, x * scalar: not an op we place quantization around
            return
        output = UNIT_SPEC if node.meta.get(UNIT_RANGE_OUTPUT) else self._output(node)
        _annotate(node, dict.fromkeys(tensors, self.act), output)

    def _shared(self, node: Node) -> None:
        source = node.args[0]
        if not isinstance(source, Node):
            return
        _annotate(node, {source: self.act}, SharedQuantizationSpec((source, node)))

    def _cat(self, node: Node) -> None:
        tensors = [t for t in node.args[0] if isinstance(t, Node)]
        first = tensors[0]
        inputs = {first: self.act}
        inputs.update({t: SharedQuantizationSpec((first, node)) for t in tensors[1:]})
        _annotate(node, inputs, SharedQuantizationSpec((first, node)))

    def _multi_output(self, node: Node) -> None:
        source = node.args[0]
        _annotate(node, {source: self.act}, None)
        for user in node.users:
            if user.target is operator.getitem:
                _annotate(user, {}, SharedQuantizationSpec((source, node)))
