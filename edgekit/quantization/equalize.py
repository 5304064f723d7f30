"""Cross-layer equalization (`--equalize`; Nagel et al., "Data-Free Quantization", 2019).

Per-tensor weight scales fail on depthwise convolutions whose channels' ranges differ by orders of magnitude.
For two consecutive convolutions A -> B with only a ReLU (or nothing) between them, scaling A's output channel i
by 1/s and B's input channel i by s leaves the network's function unchanged, because relu(x / s) = relu(x) / s
for s > 0. Choosing s = sqrt(r_A / r_B) gives both channels the range sqrt(r_A * r_B), so one scale per tensor
fits every channel better.

ReLU6 is not scale-equivariant (min(x / s, 6) != min(x, 6) / s), so pairs joined by a ReLU6 are left alone; the
data-free quantization paper replaced ReLU6 with ReLU, which changes the trained model, and edgekit does not.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten
RELU = {aten.relu.default, aten.relu_.default}
CONV = {aten.conv2d.default}
SWEEPS = 4  # equalizing one pair unbalances its neighbour in a chain: a few sweeps converge (the paper iterates)


def parameter(graph: GraphModule, node: Node | None) -> torch.Tensor | None:
    """The tensor a get_attr node names (a dotted path into the graph module), or None for anything else."""
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    value = graph
    for part in node.target.split("."):
        value = getattr(value, part)
    return value


def _next_conv(node: Node) -> Node | None:
    """The convolution that alone consumes `node`'s output, through at most one ReLU."""
    users = list(node.users)
    if len(users) == 1 and users[0].target in RELU:
        users = list(users[0].users)
    return users[0] if len(users) == 1 and users[0].target in CONV else None


def _groups(node: Node) -> int:
    return int(node.args[6]) if len(node.args) > 6 else 1


def _input_channel_view(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """B's weight as (input channel, everything that multiplies it): the rows equalization scales."""
    out_channels, per_group = weight.shape[:2]
    out_per_group = out_channels // groups
    grouped = weight.reshape(groups, out_per_group, per_group, -1)  # g, o, i, k
    return grouped.permute(0, 2, 1, 3).reshape(groups * per_group, -1)


def equalization_pairs(graph: GraphModule) -> list[tuple[Node, Node]]:
    """Every (A, B) convolution pair that can be equalized exactly: A feeds only B, through at most a ReLU."""
    pairs = []
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target not in CONV:
            continue
        following = _next_conv(node)
        if following is None or parameter(graph, node.args[1]) is None or parameter(graph, following.args[1]) is None:
            continue
        if parameter(graph, node.args[1]).shape[0] != parameter(graph, following.args[1]).shape[1] * _groups(following):
            continue
        pairs.append((node, following))
    return pairs


def equalize(graph: GraphModule) -> int:
    """Equalize every exact pair of a captured graph whose BatchNorms are folded, in place. Returns the count."""
    pairs = equalization_pairs(graph)
    with torch.no_grad():
        for _ in range(SWEEPS):
            for first, second in pairs:
                weight_a, weight_b = parameter(graph, first.args[1]), parameter(graph, second.args[1])
                bias_a = parameter(graph, first.args[2]) if len(first.args) > 2 else None
                range_a = weight_a.reshape(weight_a.shape[0], -1).abs().amax(1)
                range_b = _input_channel_view(weight_b, _groups(second)).abs().amax(1)
                scale = torch.where((range_a > 0) & (range_b > 0), (range_a / range_b).sqrt(),
                                    torch.ones_like(range_a))
                weight_a.div_(scale.view(-1, *([1] * (weight_a.dim() - 1))))
                if bias_a is not None:
                    bias_a.div_(scale)
                groups = _groups(second)
                out_per_group = weight_b.shape[0] // groups
                per_group = weight_b.shape[1]
                grouped = weight_b.view(groups, out_per_group, per_group, *weight_b.shape[2:])
                grouped.mul_(scale.view(groups, 1, per_group, *([1] * (weight_b.dim() - 2))))
    return len(pairs)

