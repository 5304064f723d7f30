"""Channel shuffles rewritten for TFLite's NHWC layout, so the converter adds no layout TRANSPOSEs around them.

A shuffle written as torch (and torchvision) write it, `view(B, g, C/g, H, W) -> transpose(1, 2) -> view(B, C, H, W)`,
reshapes the channel axis of an NCHW tensor. litert-torch keeps every tensor NHWC, so it wraps each such reshape
in an NHWC->NCHW and an NCHW->NHWC TRANSPOSE: two per ShuffleNet unit. The same permutation of channels, written on
the last axis of an NHWC view, `permute(0, 2, 3, 1) -> reshape(B, H, W, g, C/g) -> transpose(3, 4) ->
reshape(B, H, W, C) -> permute(0, 3, 1, 2)`, leaves the converter two permutes it cancels against its own layout
changes. Only the TFLite export is rewritten: ONNX Runtime would run the permutes as real Transposes.

The rewrite works on an exported ATen graph, float or PT2E-quantized (where every step sits between a quantize
and dequantize of the same shared parameters, which the new steps copy), and is exact: it moves values only.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten
_RESHAPES = (aten.view.default, aten.reshape.default, aten._unsafe_view.default)
_COPIES = (aten.contiguous.default, aten.clone.default)


def _is(node: object, *targets: object) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target in targets


def _quantize_ops() -> tuple[object, object]:
    try:
        return (torch.ops.quantized_decomposed.quantize_per_tensor.default,
                torch.ops.quantized_decomposed.dequantize_per_tensor.default)
    except (AttributeError, RuntimeError):  # the PT2E ops are registered only once torchao is imported
        return None, None


def _skip_qdq_down(node: Node) -> Node:
    """Past a quantize -> dequantize pair that is `node`'s only user (a PT2E shared-parameter pair)."""
    quantize, dequantize = _quantize_ops()
    users = list(node.users)
    if len(users) == 1 and _is(users[0], quantize):
        after = list(users[0].users)
        if len(after) == 1 and _is(after[0], dequantize):
            return after[0]
    return node


def _skip_qdq_up(node: Node) -> tuple[Node, Node | None]:
    """The tensor before a dequantize(quantize(x)) pair, and the dequantize (None when there is no pair)."""
    quantize, dequantize = _quantize_ops()
    if _is(node, dequantize) and _is(node.args[0], quantize):
        return node.args[0].args[0], node
    return node, None


@dataclass
class _Shuffle:
    source: Node  # the NCHW tensor the shuffle reads (a dequantize in a quantized graph)
    qdq: Node | None  # a dequantize node whose quantize/dequantize pair every new step gets
    last: Node  # the final reshape back to (B, C, H, W): its users read the rewritten result
    batch: object  # B as the graph has it (an int or a symbolic size node)
    groups: int
    channels: int
    height: int
    width: int


def _match(transpose: Node) -> _Shuffle | None:
    if not (_is(transpose, aten.transpose.int) and tuple(transpose.args[1:]) in ((1, 2), (2, 1))):
        return None
    split, _ = _skip_qdq_up(transpose.args[0])
    if not _is(split, *_RESHAPES) or len(split.args[1]) != 5:
        return None
    batch, groups, per_group, height, width = split.args[1]
    source = split.args[0]
    if not isinstance(source, Node) or not all(isinstance(v, int) for v in (groups, per_group, height, width)):
        return None
    value = source.meta.get("val")  # nodes PT2E inserted may carry no example value
    if value is not None and value.dim() != 4:
        return None
    node = _skip_qdq_down(transpose)
    users = list(node.users)
    if len(users) == 1 and _is(users[0], *_COPIES):
        node = _skip_qdq_down(users[0])
        users = list(node.users)
    if len(users) != 1 or not _is(users[0], *_RESHAPES):
        return None
    last = users[0]
    if list(last.args[1][1:]) != [groups * per_group, height, width]:
        return None
    return _Shuffle(source, _skip_qdq_up(source)[1], last, batch, groups, groups * per_group, height, width)


def _step(graph: torch.fx.Graph, qdq: Node | None, target: object, *args: object) -> Node:
    node = graph.call_function(target, args)
    if qdq is None:
        return node
    quantize, dequantize = _quantize_ops()
    q = graph.call_function(quantize, (node, *qdq.args[0].args[1:]))
    return graph.call_function(dequantize, (q, *qdq.args[1:]))


def _erase_unused(graph: torch.fx.Graph, node: Node, stop: Node) -> None:
    """Erase the old shuffle: `node` and what fed only it, back to `stop` (a general dead-code pass would also
    drop the exported graph's buffer updates)."""
    while isinstance(node, Node) and node is not stop and not node.users:
        data = node.args[0]  # every step of the chain reads its tensor first
        graph.erase_node(node)
        node = data


def nhwc_channel_shuffles(module: GraphModule) -> tuple[GraphModule, int]:
    """A copy of an exported graph with every channel shuffle in NHWC form (see the module doc), sharing the
    original's weights, and how many shuffles it rewrote."""
    with warnings.catch_warnings():  # copying the graph's pytree spec warns of a deprecation inside torch
        warnings.simplefilter("ignore", FutureWarning)
        graph = copy.deepcopy(module.graph)
    shuffles = [s for s in map(_match, list(graph.nodes)) if s is not None]
    for s in shuffles:
        with graph.inserting_before(s.last):
            x = _step(graph, s.qdq, aten.permute.default, s.source, [0, 2, 3, 1])
            x = _step(graph, s.qdq, aten.reshape.default, x,
                      [s.batch, s.height, s.width, s.groups, s.channels // s.groups])
            x = _step(graph, s.qdq, aten.transpose.int, x, 3, 4)
            x = _step(graph, s.qdq, aten.reshape.default, x, [s.batch, s.height, s.width, s.channels])
            x = graph.call_function(aten.permute.default, (x, [0, 3, 1, 2]))
        s.last.replace_all_uses_with(x)
        _erase_unused(graph, s.last, stop=s.source)
    rewritten = GraphModule(module, graph)
    rewritten.graph.lint()
    rewritten.recompile()
    return rewritten, len(shuffles)
