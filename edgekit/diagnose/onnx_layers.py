"""Per-layer INT8 error of an ONNX QDQ file against its FP32 twin, read from the files on ONNX Runtime.

A quantized layer is a QuantizeLinear on an activation: the point where the INT8 file rounds a float tensor.
Its float reference is found in the FP32 file by the layer's weight (a convolution or Gemm reads the same
initializer name in both files, `features.3.conv.0.0.weight` and `..._quantized`) or else by the tensor's name
(both files are exported from the same torch graph, so `hardtanh_4` and `add_2` name the same values).

Two runs of the INT8 file, each with the quantized tensors kept as outputs:
- accumulated: the INT8 file end to end, every layer fed by the quantized layers before it;
- alone: a rewired copy in which every QuantizeLinear reads the FP32 file's value instead of its producer's, so
  each layer's output carries its own error only (its input rounding, int8 weights and output rounding, on
  ONNX Runtime's own fused kernels), as ONNX Runtime's qdq_loss_debug separates them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.core.errors import EdgekitError
from edgekit.diagnose.errors import (
    LayerErrors,
    TensorError,
    channel_gain,
    kind,
    name_unnamed,
    representable,
    weight_spread,
)
from edgekit.runtime.harness import ort_session_options

WEIGHTED = ("Conv", "Gemm", "MatMul")
CLAMPS = ("Relu", "Clip")
# Ops that move values without computing: their output carries the quantization of their input, nothing new.
MOVES = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "DequantizeLinear", "Pad", "Identity")
FLOAT_SUFFIX = "::float"


@dataclass(frozen=True)
class Point:
    """One quantized activation of the INT8 file and where its float value is in the FP32 file."""

    layer: LayerErrors
    quantized: str  # the QuantizeLinear's output in the INT8 file
    source: str  # the QuantizeLinear's float input in the INT8 file
    reference: str  # the same value's name in the FP32 file
    scale: float
    zero_point: int
    dtype: np.dtype
    gain: np.ndarray | None = None  # per output channel: the INT8 layer computes the FP32 value times this

    def expected(self, reference: np.ndarray) -> np.ndarray:
        """The FP32 file's value as the INT8 layer computes it (rescaled where equalization rescaled it)."""
        if self.gain is None:
            return reference
        return reference * self.gain.reshape((1, -1) + (1,) * (reference.ndim - 2)).astype(reference.dtype)


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _module(node: onnx.NodeProto) -> str | None:
    """The torch module path torch.onnx records for a node (its name scopes end with the op's own name)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = [s.strip(" '\"") for s in prop.value.strip("[]").split(",")]
            scopes = [s for s in scopes if s]
            return scopes[-2] if len(scopes) >= 2 else None
    return None


class _Graph:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.constants = _constants(model)
        self.values = set(self.producer) | {i.name for i in model.graph.input}


def _weight(graph: _Graph, node: onnx.NodeProto) -> tuple[str, np.ndarray] | None:
    """A weighted node's weight: its initializer's name (without `_quantized`) and float values."""
    if len(node.input) < 2:
        return None
    name = node.input[1]
    dq = graph.producer.get(name)
    if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in graph.constants:
        q = graph.constants[dq.input[0]].astype(np.float64)
        scale = graph.constants[dq.input[1]].astype(np.float64)
        zero = graph.constants[dq.input[2]].astype(np.float64) if len(dq.input) > 2 else np.zeros_like(scale)
        if scale.size > 1:
            shape = [1] * q.ndim
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return dq.input[0].removesuffix("_quantized"), (q - zero) * scale
    if name in graph.constants:
        return name, graph.constants[name]
    return None


def _layer_name(weight: str) -> str:
    return weight.removesuffix(".weight")


def _op(graph: _Graph, node: onnx.NodeProto) -> str:
    if node.op_type == "Conv":
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        return "Conv (depthwise)" if group > 1 else "Conv"
    return node.op_type


class _Matcher:
    """Finds an INT8 float tensor's twin in the FP32 file."""

    def __init__(self, fp32: _Graph, int8: _Graph, equalized: bool) -> None:
        self.fp32, self.int8, self.equalized = fp32, int8, equalized
        self.by_weight = {}
        for node in fp32.model.graph.node:
            if node.op_type in WEIGHTED and (found := _weight(fp32, node)) is not None:
                self.by_weight[found[0]] = node
        self.fp32_by_scope, self.int8_by_scope = _by_scope(fp32.model), _by_scope(int8.model)

    def gain(self, name: str, gains: dict[str, np.ndarray | None]) -> np.ndarray | None:
        """Per output channel, how much larger the INT8 layer producing `name` computes than its FP32 twin (see
        errors.channel_gain); `gains`: those of the quantized tensors before it, by name."""
        if not self.equalized:  # else a channel whose weights all round to zero would read as rescaled
            return None
        producer = self.int8.producer.get(name)
        while producer is not None and producer.op_type in CLAMPS:
            producer = self.int8.producer.get(producer.input[0])
        found = _weight(self.int8, producer) if producer is not None and producer.op_type in WEIGHTED else None
        twin = self.by_weight.get(found[0]) if found is not None else None
        theirs = _weight(self.fp32, twin) if twin is not None else None
        if found is None or theirs is None or producer is None:
            return None
        dq = self.int8.producer.get(producer.input[0])
        q = self.int8.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        input_gain = gains.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        return channel_gain(found[1], theirs[1], input_gain)

    @staticmethod
    def _same_op(ours: onnx.NodeProto | None, theirs: onnx.NodeProto | None) -> bool:
        """A tensor of the same name is the same value when the same op of the same module made it (the INT8
        graph decomposes some ops, hard-sigmoid into add and mul, which shifts the numbering of the rest)."""
        if ours is None or theirs is None:
            return ours is None and theirs is None  # both graph inputs
        return ours.op_type == theirs.op_type and _module(ours) == _module(theirs)

    def reference(self, name: str, depth: int = 0) -> str | None:
        producer = self.int8.producer.get(name)
        if producer is not None and producer.op_type in WEIGHTED and (found := _weight(self.int8, producer)):
            twin = self.by_weight.get(found[0])
            if twin is None:
                return None
            out = twin.output[0]
            # the INT8 file drops a ReLU/ReLU6 whose range its QuantizeLinear already saturates to: follow the
            # FP32 file through that clamp, but only when the INT8 file feeds the layer's output to rounding alone
            if all(c.op_type == "QuantizeLinear" for c in self.int8.consumers.get(name, [])):
                while len(users := self.fp32.consumers.get(out, [])) == 1 and users[0].op_type in CLAMPS:
                    out = users[0].output[0]
            return out
        if name in self.fp32.values and self._same_op(producer, self.fp32.producer.get(name)):
            return name
        if producer is not None and (module := _module(producer)):
            # the k-th op of its kind in its module, where both files have as many of them (SiLU and hard-sigmoid
            # are decomposed in one file and not named alike in the other)
            key = (module, producer.op_type)
            ours, theirs = self.int8_by_scope.get(key, []), self.fp32_by_scope.get(key, [])
            if len(ours) == len(theirs) and name in ours:
                return theirs[ours.index(name)]
        if producer is not None and producer.op_type == "DequantizeLinear" and depth < 8:
            upstream = self.int8.producer.get(producer.input[0])
            if upstream is not None and upstream.op_type == "QuantizeLinear":
                return self.reference(upstream.input[0], depth + 1)
        return None


def _by_scope(model: onnx.ModelProto) -> dict[tuple[str, str], list[str]]:
    """Each (module path, op type) with the outputs of its nodes, in file order."""
    found: dict[tuple[str, str], list[str]] = {}
    for node in model.graph.node:
        module = _module(node)
        if module and node.output:
            found.setdefault((module, node.op_type), []).append(node.output[0])
    return found


def quantized_points(fp32_model: onnx.ModelProto, int8_model: onnx.ModelProto, equalized: bool = False
                     ) -> tuple[list[Point], int]:
    """Every activation QuantizeLinear of the INT8 file with its FP32 twin, in file order; and how many had
    none (a tensor the two exports name differently). `equalized`: the export rescaled convolution pairs."""
    fp32, int8 = _Graph(fp32_model), _Graph(int8_model)
    matcher = _Matcher(fp32, int8, equalized)
    points, unmatched = [], 0
    gains: dict[str, np.ndarray | None] = {}
    unnamed: set[int] = set()
    for node in int8_model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in int8.constants:
            continue
        scale, zero = int8.constants.get(node.input[1]), int8.constants.get(node.input[2])
        if scale is None or zero is None or scale.size != 1:
            continue
        producer = int8.producer.get(node.input[0])
        if producer is not None and producer.op_type in MOVES:
            continue
        reference = matcher.reference(node.input[0])
        if reference is None:
            unmatched += 1
            continue
        layer = _describe(int8, node.input[0], len(points))
        if layer.name == "":
            unnamed.add(layer.index)
        layer.activation_range = representable(float(scale), int(zero), zero.dtype)
        gains[node.input[0]] = matcher.gain(node.input[0], gains)
        points.append(Point(layer, node.output[0], node.input[0], reference, float(scale), int(zero), zero.dtype,
                            gains[node.input[0]]))
    name_unnamed([p.layer for p in points], unnamed)
    return points, unmatched


def _describe(int8: _Graph, name: str, index: int) -> LayerErrors:
    producer = int8.producer.get(name)
    if producer is None:
        return LayerErrors(name="input", op="input", node=name, index=index)
    while producer.op_type in CLAMPS and producer.input[0] in int8.producer:
        producer = int8.producer[producer.input[0]]
    if producer.op_type in WEIGHTED and (found := _weight(int8, producer)) is not None:
        weight, values = found
        layer = LayerErrors(name=_layer_name(weight), op=_op(int8, producer), node=producer.name, index=index)
        layer.weight_spread = weight_spread(values)
        return layer
    module = _module(producer)
    return LayerErrors(name=f"{module} ({kind(producer.op_type)})" if module else "", op=producer.op_type,
                       node=producer.name, index=index)


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    copy.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in present)
    return copy


def _isolated(model: onnx.ModelProto, points: list[Point]) -> onnx.ModelProto:
    """The INT8 graph with each QuantizeLinear's readers moved to a twin that reads the float value from a new
    graph input: every layer then starts from float inputs, and the original QuantizeLinear rounds its output."""
    copy = _with_outputs(model, [p.quantized for p in points])
    by_output = {p.quantized: p for p in points}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in copy.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    twins = []
    for node in copy.graph.node:
        point = by_output.get(node.output[0]) if node.op_type == "QuantizeLinear" else None
        if point is None:
            continue
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        twin.name = f"{node.name}{FLOAT_SUFFIX}"
        twin.input[0] = point.source + FLOAT_SUFFIX
        twin.output[0] = node.output[0] + FLOAT_SUFFIX
        for reader in readers.get(node.output[0], []):
            for i, name in enumerate(reader.input):
                if name == node.output[0]:
                    reader.input[i] = twin.output[0]
        twins.append(twin)
    copy.graph.node.extend(twins)
    existing = {i.name for i in copy.graph.input}
    sources = {p.source for p in points}
    copy.graph.input.extend(helper.make_tensor_value_info(s + FLOAT_SUFFIX, onnx.TensorProto.FLOAT, None)
                            for s in sorted(sources) if s + FLOAT_SUFFIX not in existing)
    return _sorted(copy)


def _sorted(model: onnx.ModelProto) -> onnx.ModelProto:
    """The nodes in an order that computes every input before it is read (ONNX requires it)."""
    ready = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        still = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                still.append(node)
        if len(still) == len(pending):
            raise EdgekitError("the INT8 ONNX graph has a cycle or reads a value nothing produces: export it again.")
        pending = still
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model


def _session(model: onnx.ModelProto, threads: int):  # noqa: ANN202 (onnxruntime.InferenceSession)
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), ort_session_options(threads),
                                providers=["CPUExecutionProvider"])


def onnx_layer_errors(fp32_path: Path, int8_path: Path, images: Iterator[np.ndarray] | list[np.ndarray],
                      equalized: bool = False, threads: int = 1, on_image: Callable[[], None] = lambda: None
                      ) -> tuple[list[LayerErrors], int]:
    """Each quantized layer's error in `int8_path` against `fp32_path`, over `images` (NCHW, batch 1 each);
    `equalized`: the export rescaled convolution pairs (cross-layer equalization), which the FP32 file did not.
    Returns the layers in file order and the count of quantized tensors with no FP32 twin."""
    fp32_model = onnx.load(str(fp32_path))
    int8_model = onnx.load(str(int8_path))
    points, unmatched = quantized_points(fp32_model, int8_model, equalized)
    if not points:
        raise EdgekitError(f"{int8_path} has no quantized layers to report on: give an INT8 file "
                           "(edgekit export ... --int8 writes model_int8.onnx).")
    images = list(images)
    fp32 = _session(_with_outputs(fp32_model, sorted({p.reference for p in points})), threads)
    int8 = _session(_with_outputs(int8_model, [p.quantized for p in points]), threads)
    if images:  # a twin must have the tensor's shape: else the two files name different values alike
        first = np.ascontiguousarray(images[0][None] if images[0].ndim == 3 else images[0], dtype=np.float32)
        shapes = dict(zip([o.name for o in fp32.get_outputs()],
                          [v.shape for v in fp32.run(None, {fp32.get_inputs()[0].name: first})], strict=True))
        ours = dict(zip([o.name for o in int8.get_outputs()],
                        [v.shape for v in int8.run(None, {int8.get_inputs()[0].name: first})], strict=True))
        kept = [p for p in points if shapes[p.reference] == ours[p.quantized]]
        unmatched += len(points) - len(kept)
        points = kept
    alone = _session(_isolated(int8_model, points), threads)
    fp32_names = [o.name for o in fp32.get_outputs()]
    int8_names = [o.name for o in int8.get_outputs()]
    alone_names = [o.name for o in alone.get_outputs()]
    fp32_input, int8_input = fp32.get_inputs()[0].name, int8.get_inputs()[0].name
    sources = {p.source + FLOAT_SUFFIX: p for p in points}
    for p in points:
        p.layer.alone = TensorError()
    for image in images:
        image = np.ascontiguousarray(image[None] if image.ndim == 3 else image, dtype=np.float32)
        floats = dict(zip(fp32_names, fp32.run(None, {fp32_input: image}), strict=True))
        quantized = dict(zip(int8_names, int8.run(None, {int8_input: image}), strict=True))
        feed = {name: p.expected(floats[p.reference]) for name, p in sources.items()}
        feed[int8_input] = image
        own = dict(zip(alone_names, alone.run(None, feed), strict=True))
        for p in points:
            reference = p.expected(floats[p.reference])
            span = p.layer.activation_range
            p.layer.accumulated.add(reference, _dequantize(quantized[p.quantized], p), span)
            assert p.layer.alone is not None
            p.layer.alone.add(reference, _dequantize(own[p.quantized], p), span)
        on_image()
    return [p.layer for p in points], unmatched


def _dequantize(values: np.ndarray, point: Point) -> np.ndarray:
    return (values.astype(np.float64) - point.zero_point) * point.scale
