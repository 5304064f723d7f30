"""Accuracy-aware INT8 (`--max-drop`): keep the most quantization-sensitive layers in float until the drop fits.

The idea of NNCF's quantize_with_accuracy_control, on edgekit's own quantizer: rank every convolution and
linear layer by how much top-1 comes back when that layer alone stays float, then return layers to float in
that order until the INT8 model is within the budget.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx import GraphModule, Node

from edgekit.core.errors import EdgekitError
from edgekit.quantization.annotator import (
    BINARY,
    FUSABLE_ACTIVATIONS,
    MULTI_OUTPUT,
    OWN_RANGE,
    SHARED,
    UNIT_RANGE,
    WEIGHTED,
    QuantSettings,
    fused_activation,
)
from edgekit.quantization.ptq import QuantizedModel, capture, convert, prepare_captured, quantize_ptq

MAX_FLOAT_LAYERS = 8  # beyond this, float fallback stops being INT8 deployment: fine-tune instead
RANKING_IMAGES = 1000


@dataclass(frozen=True)
class Layer:
    node: str  # the torch.export node name, stable across captures of the same model
    module: str  # the module path, for people
    macs: int


@dataclass
class FallbackResult:
    quantized: QuantizedModel
    budget_pp: float
    drop_pp: float
    float_layers: list[dict[str, Any]] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    float_macs_share: float = 0.0
    ranking: list[dict[str, Any]] = field(default_factory=list)  # every layer, most sensitive first

    def to_dict(self) -> dict[str, Any]:
        return {"budget_pp": self.budget_pp, "drop_pp": round(self.drop_pp, 3), "float_layers": self.float_layers,
                "float_macs_share": round(self.float_macs_share, 4), "trials": self.trials,
                "ranking_images": RANKING_IMAGES, "ranking": self.ranking}


def weighted_layers(graph: GraphModule) -> list[Layer]:
    """Every convolution and linear layer of a captured graph, in graph order."""
    layers = []
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target not in WEIGHTED:
            continue
        stack = node.meta.get("nn_module_stack") or {}
        module = list(stack.values())[-1][0] if stack else node.name
        out, weight = node.meta["val"], node.args[1].meta["val"]
        layers.append(Layer(node.name, module, math.prod(out.shape[1:]) * math.prod(weight.shape[1:])))
    return layers


def _top1(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    with torch.no_grad():
        predictions = np.concatenate([
            model(torch.from_numpy(np.ascontiguousarray(images[i:i + batch]))).argmax(1).numpy()
            for i in range(0, len(images), batch)])
    return float((predictions == labels).mean())


def runtime_float_layers(quantized: QuantizedModel) -> set[str]:
    """The weighted layers an INT8 runtime runs in float: those without a DEQUANTIZE before and a QUANTIZE after
    (through a fused ReLU/ReLU6). A float layer's producer is one of them: its output stays float."""
    quantizes = {torch.ops.quantized_decomposed.quantize_per_tensor.default}
    dequantizes = {torch.ops.quantized_decomposed.dequantize_per_tensor.default}
    floating = set()
    for node in quantized.graph.graph.nodes:
        if node.op != "call_function" or node.target not in WEIGHTED:
            continue
        output = fused_activation(node) or node
        quantized_in = isinstance(node.args[0], Node) and node.args[0].target in dequantizes
        quantized_out = any(user.target in quantizes for user in output.users)
        if not (quantized_in and quantized_out):
            floating.add(node.name)
    return floating


QUANTIZED_OPS = WEIGHTED | FUSABLE_ACTIVATIONS | BINARY | OWN_RANGE | UNIT_RANGE | SHARED | MULTI_OUTPUT | {
    torch.ops.aten.cat.default}


def unquantized_ops(quantized: QuantizedModel) -> list[dict[str, Any]]:
    """The ops of a user's graph that edgekit's quantizer has no INT8 rule for (the annotator leaves them alone):
    they are fed dequantized values, so each is a float island unless a runtime has an int8 kernel for it."""
    found: dict[str, list[str]] = {}
    for node in quantized.graph.graph.nodes:
        if node.op != "call_function" or node.target in QUANTIZED_OPS or not hasattr(node.target, "_schema") \
                or "quantize" in str(node.target) or not isinstance(node.meta.get("val"), torch.Tensor):
            continue  # shape arithmetic (sym_size) computes no tensor
        stack = node.meta.get("nn_module_stack") or {}
        op = str(node.target).removesuffix(".default")
        found.setdefault(op, []).append(list(stack.values())[-1][0] if stack else node.name)
    return [{"op": op, "modules": modules,
             "why": "edgekit's INT8 quantizer has no rule for it: it runs in float between DEQUANTIZE and QUANTIZE "
                    "wherever the runtime lacks an int8 kernel for it"} for op, modules in found.items()]


def quantize_within_budget(
    model: nn.Module,
    calibration: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    settings: QuantSettings,
    max_drop_pp: float,
    deployed_top1: Callable[[QuantizedModel], dict[str, float]] | None = None,
    on_progress: Callable[[str], None] = lambda text: None,
) -> FallbackResult:
    """Post-training INT8 whose top-1 on (`images`, `labels`) is within `max_drop_pp` of the float model's.

    Layers are ranked on the torch INT8 model (fast); a candidate is accepted on `deployed_top1`, the top-1 of
    the files it exports to (the worst format counts), as the torch model only approximates their rounding."""
    fp32 = _top1(model.eval(), images, labels)

    def drops(quantized: QuantizedModel) -> dict[str, float]:
        top1 = deployed_top1(quantized) if deployed_top1 is not None else {
            "torch_int8": _top1(quantized, images, labels)}
        return {name: round(100 * (fp32 - value), 3) for name, value in top1.items()}

    quantized = quantize_ptq(model, calibration, settings)  # checks the model and data first
    measured = drops(quantized)
    result = FallbackResult(quantized, max_drop_pp, max(measured.values()))
    result.trials.append({"float_layers": 0, "drop_pp": measured})
    if result.drop_pp <= max_drop_pp:
        return result

    graph = capture(copy.deepcopy(model), tuple(images.shape[1:]))
    layers = weighted_layers(graph)
    total_macs = max(1, sum(layer.macs for layer in layers))

    def with_float(nodes: set[str]) -> QuantizedModel:
        with warnings.catch_warnings():  # torch's pytree deprecation, raised by copying an exported graph
            warnings.simplefilter("ignore", FutureWarning)
            copied = copy.deepcopy(graph)
        prepared = prepare_captured(copied, calibration, settings, skip=lambda n: n.name in nodes)
        return convert(prepared, settings, len(calibration))

    recovered = _recovery(layers, quantized, with_float, images[:RANKING_IMAGES], labels[:RANKING_IMAGES],
                          on_progress)
    ranked = sorted(layers, key=lambda layer: -recovered[layer.node])
    result.ranking = [{"module": layer.module, "node": layer.node, "macs": layer.macs,
                       "recovered_pp": round(recovered[layer.node], 3)} for layer in ranked]

    best = result
    for count in range(1, min(MAX_FLOAT_LAYERS, len(ranked)) + 1):
        on_progress(f"int8 fallback: {count} layer(s) in float")
        chosen = {layer.node for layer in ranked[:count]}
        quantized = with_float(chosen)
        measured = drops(quantized)
        result.trials.append({"float_layers": count, "drop_pp": measured})
        floating = runtime_float_layers(quantized)
        candidate = FallbackResult(
            quantized, max_drop_pp, max(measured.values()), trials=result.trials, ranking=result.ranking,
            float_layers=_float_layer_records(layers, floating, chosen, recovered),
            float_macs_share=sum(layer.macs for layer in layers if layer.node in floating) / total_macs,
        )
        if candidate.drop_pp < best.drop_pp:
            best = candidate
        if candidate.drop_pp <= max_drop_pp:
            return candidate
    raise EdgekitError(
        f"no float fallback reaches the --max-drop budget of {max_drop_pp:g} pp: the best, with "
        f"{len(best.float_layers)} layer(s) in float, still drops {best.drop_pp:.2f} pp. Fine-tune instead with "
        "--qat-epochs 1 (or raise --max-drop)."
    )


def _recovery(layers: list[Layer], quantized: QuantizedModel,
              with_float: Callable[[set[str]], QuantizedModel], images: np.ndarray, labels: np.ndarray,
              on_progress: Callable[[str], None]) -> dict[str, float]:
    """For each layer, the top-1 (pp) it wins back alone in float, against the all-INT8 `quantized`."""
    baseline = _top1(quantized, images, labels)
    recovered = {}
    for index, layer in enumerate(layers, 1):
        on_progress(f"int8 sensitivity: layer {index}/{len(layers)} ({layer.module})")
        recovered[layer.node] = 100 * (_top1(with_float({layer.node}), images, labels) - baseline)
    return recovered


def _float_layer_records(layers: list[Layer], floating: set[str], chosen: set[str],
                         recovered: dict[str, float]) -> list[dict[str, Any]]:
    """The manifest's float_layers: each layer that runs in float, and why."""
    return [{"module": layer.module, "node": layer.node, "macs": layer.macs,
             "why": (f"chosen: alone in float it recovers {recovered[layer.node]:+.2f} pp top-1"
                     if layer.node in chosen else "feeds a float layer, so its output stays float")}
            for layer in layers if layer.node in floating]
