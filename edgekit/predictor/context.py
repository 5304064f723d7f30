"""Units timed in context: a calibration model's measured time split among its units by the runtime's per-node
profile of that model, run whole.

A unit timed alone is not the unit inside a model: alone, its weights stay in cache between runs, and its input and
output pay the runtime's layout conversions at the graph's edges (ONNX Runtime's NCHWc reorders). Inside the
model, each node's time belongs to the unit it was exported from: the exporter records every node's module scope
(": Net/features: Sequential/features.1: Block/..."), and the runtime's profile names the node it ran, or the
node it fused or converted it into ("relu_5_nchwc", "node_silu/QuickGeluFusion/").
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def node_scopes(onnx_path: Path) -> dict[str, str]:
    """Exporter scope of every node of an ONNX file, by node name and by output name."""
    import onnx

    scopes: dict[str, str] = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        for name in (node.name, *node.output):
            scopes.setdefault(name, namespace)
    return scopes


def scope_of(profiled_node: str, scopes: dict[str, str]) -> str:
    """The scope of a node the runtime profiled, through the names its graph optimisations give nodes."""
    base = profiled_node.split("/")[0].removesuffix("_nchwc")
    return next((scopes[c] for c in (profiled_node, base, f"node_{base}") if scopes.get(c)), "")


def _unit_index(scope: str, names: list[str]) -> int | None:
    """The unit a scope belongs to: the deepest module path that is a unit's name, or the one unit whose name
    starts with it (a block joined with the pooling after it is named "features.13.avgpool")."""
    paths = [part.split(":")[0].strip() for part in scope.split("/")[1:]]
    for path in reversed(paths):
        if path in names:
            return names.index(path)
        joined = [i for i, name in enumerate(names) if name.startswith(path + ".")]
        if len(joined) == 1:
            return joined[0]
    return None


def unit_shares(nodes: list[tuple[str, float]], unit_names: list[str]) -> tuple[list[float], float]:
    """Each unit's share of a model's profiled time, from (scope, ms) per node in run order, and the share no
    scope named: nodes the runtime added (layout reorders) go to the unit run before them."""
    cost = [0.0] * len(unit_names)
    unnamed, last = 0.0, 0
    for scope, ms in nodes:
        index = _unit_index(scope, unit_names) if scope else None
        if index is None:
            unnamed += ms
            index = last
        cost[index] += ms
        last = index
    total = sum(cost)
    if total <= 0:
        return [1.0 / len(cost)] * len(cost), 1.0
    return [c / total for c in cost], unnamed / total


def context_times(models: list[dict[str, Any]]) -> dict[str, float]:
    """Each unit's time in context: its share of every calibration model that holds it and was profiled, times
    that model's measured time, averaged geometrically over those models."""
    samples: dict[str, list[float]] = defaultdict(list)
    for record in models:
        shares = record.get("unit_shares")
        if not shares or not record.get("measured_ms"):
            continue
        for signature, share in zip(record["units"], shares, strict=True):
            samples[signature].append(record["measured_ms"] * max(share, 1e-6))
    return {sig: math.exp(statistics.fmean(map(math.log, v))) for sig, v in samples.items()}
