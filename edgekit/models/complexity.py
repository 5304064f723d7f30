"""Layer-by-layer complexity of a built model: shapes, params, MACs, elementwise ops, activation memory.

Everything is measured from one forward pass of the real module on the `meta` device (shapes only: no
arithmetic, no memory), by watching the ATen operators it dispatches. Nothing is a second, hand-written formula.

Conventions:
- MACs: multiply-accumulates of convolutions and matrix multiplies (bias adds not counted). FLOPs = 2 x MACs.
- Elementwise ops: one per output element of every other arithmetic operator (BatchNorm, activations, residual
  adds, SE scaling); pooling and means count one per element read. Listed separately from MACs.
- Activation memory: the bytes of each layer's output, at 4 bytes (float32) and 1 byte (int8) per element.
- Rows: conv/linear layers absorb the BatchNorm and activation that directly follow them inside the same block,
  as deployed runtimes fuse them; `fuse=False` lists every operator.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

# Operators that only re-view or re-label data: no row, no cost.
_VIEW_OPS = {
    aten.view, aten._unsafe_view, aten.reshape, aten.t, aten.transpose, aten.permute, aten.expand,
    aten.unsqueeze, aten.squeeze, aten.detach, aten.alias, aten.slice, aten.split, aten.split_with_sizes,
    aten.chunk, aten.unbind, aten.select, aten.flatten, aten._reshape_alias, aten.as_strided, aten.empty,
    aten.empty_like, aten.lift_fresh, aten.native_dropout, aten.dropout, aten.feature_dropout,
}
# Operators that move data without arithmetic: a row, no ops counted.
_COPY_OPS = {aten.cat, aten.clone, aten.contiguous, aten._to_copy, aten.copy_, aten.stack}
_REDUCE_OPS = {aten.mean, aten.sum, aten._adaptive_avg_pool2d, aten.adaptive_avg_pool2d, aten.avg_pool2d}
_POOL_OPS = {aten.max_pool2d_with_indices, aten.max_pool2d, aten.avg_pool2d}
_FUSABLE = (nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.Hardtanh, nn.Identity)


@dataclass
class LayerProfile:
    name: str
    op: str
    input_shape: list[int]
    output_shape: list[int]
    params: int = 0
    macs: int = 0
    elementwise_ops: int = 0
    output_elements: int = 0
    detail: str = ""

    @property
    def activation_bytes_fp32(self) -> int:
        return 4 * self.output_elements

    @property
    def activation_bytes_int8(self) -> int:
        return self.output_elements

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["activation_bytes_fp32"] = self.activation_bytes_fp32
        d["activation_bytes_int8"] = self.activation_bytes_int8
        return d


@dataclass
class ModelProfile:
    input_shape: list[int]
    layers: list[LayerProfile]
    params: int
    spec: dict[str, Any] | None = None
    conventions: dict[str, str] = field(default_factory=lambda: dict(CONVENTIONS))

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def elementwise_ops(self) -> int:
        return sum(layer.elementwise_ops for layer in self.layers)

    @property
    def activation_bytes_fp32(self) -> int:
        return sum(layer.activation_bytes_fp32 for layer in self.layers)

    @property
    def peak_layer_bytes_fp32(self) -> int:
        """Largest input + output of one layer (float32): a lower bound on the working memory inference needs."""
        return max(4 * (math.prod(layer.input_shape) + layer.output_elements) for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "input_shape": self.input_shape,
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "elementwise_ops": self.elementwise_ops,
            "activation_bytes_fp32": self.activation_bytes_fp32,
            "activation_bytes_int8": self.activation_bytes_fp32 // 4,
            "peak_layer_bytes_fp32": self.peak_layer_bytes_fp32,
            "conventions": self.conventions,
            "layers": [layer.to_dict() for layer in self.layers],
        }


CONVENTIONS = {
    "macs": "multiply-accumulates of convolutions and matrix multiplies; FLOPs = 2 x MACs",
    "elementwise_ops": "one per output element of other arithmetic ops (BN, activations, adds, SE scaling); "
    "pooling and means one per element read",
    "activation_bytes": "bytes of each layer's output: 4 per element in float32, 1 in int8",
    "batch": "per image (batch 1)",
}


def _shape(t: Any) -> list[int]:
    return list(t.shape[1:]) if isinstance(t, torch.Tensor) and t.ndim > 0 else []


class _OpCounter(TorchDispatchMode):
    """Attributes every dispatched ATen op to the module currently running."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, nn.Module]] = []
        self.rows: list[LayerProfile] = []
        self.leaf_rows: dict[int, LayerProfile] = {}  # id(leaf module call) -> its row
        self.active: set[int] = set()  # rows that dispatched at least one op
        self.seen: set[nn.Module] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if packet in _VIEW_OPS:
            return out
        first_out = tree_flatten(out)[0][0] if isinstance(out, (tuple, list)) else out
        first_in = next((a for a in tree_flatten(args)[0] if isinstance(a, torch.Tensor)), None)
        macs, ops = _cost(packet, args, first_in, first_out)
        name, module = self.stack[-1] if self.stack else ("", None)
        row = self.leaf_rows.get(id(module)) if module is not None else None
        if row is None:  # an op in a block's own forward (residual add, SE scaling, shuffle, concat)
            row = LayerProfile(name or "model", packet.__name__, _shape(first_in), _shape(first_out))
            self.rows.append(row)
        row.macs += macs
        row.elementwise_ops += ops
        self.active.add(id(row))
        return out


def _cost(packet: Any, args: tuple, first_in: Any, out: Any) -> tuple[int, int]:
    """(MACs, elementwise ops) of one ATen op call."""
    if packet is aten.convolution:
        weight = args[1]
        return out.numel() * math.prod(weight.shape[1:]), 0
    if packet in (aten.addmm, aten.mm):
        a, b = (args[1], args[2]) if packet is aten.addmm else (args[0], args[1])
        return a.shape[0] * a.shape[1] * b.shape[1], 0
    if packet is aten.bmm:
        a, b = args[0], args[1]
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], 0
    if packet in _COPY_OPS:
        return 0, 0
    if packet in _POOL_OPS:
        kernel = args[1] if len(args) > 1 else 1
        return 0, out.numel() * math.prod(kernel if isinstance(kernel, (list, tuple)) else [kernel] * 2)
    if packet in _REDUCE_OPS:
        return 0, first_in.numel() if first_in is not None else 0
    return 0, out.numel() if isinstance(out, torch.Tensor) else 0


@contextmanager
def _attach(model: nn.Module, counter: _OpCounter) -> Iterator[None]:
    handles = []

    def pre_hook(module: nn.Module, inputs: tuple, name: str) -> None:
        counter.stack.append((name, module))
        if not any(True for _ in module.children()):
            params = sum(p.numel() for p in module.parameters(recurse=False))
            first = module not in counter.seen
            counter.seen.add(module)
            row = LayerProfile(
                name, type(module).__name__, _shape(inputs[0] if inputs else None), [],
                params=params if first else 0, detail=_detail(module),
            )
            counter.leaf_rows[id(module)] = row
            counter.rows.append(row)

    def post_hook(module: nn.Module, inputs: tuple, output: Any) -> None:
        counter.stack.pop()
        row = counter.leaf_rows.pop(id(module), None)
        if row is not None and isinstance(output, torch.Tensor):
            row.output_shape = _shape(output)

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda m, i, n=name: pre_hook(m, i, n)))
        handles.append(module.register_forward_hook(post_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _detail(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k, s = module.kernel_size, module.stride
        text = f"k{k[0]}x{k[1]} s{s[0]}"
        if module.groups > 1:
            text += " dw" if module.groups == module.in_channels == module.out_channels else f" g{module.groups}"
        return text
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return f"k{module.kernel_size} s{module.stride}"
    return ""


def _fuse(rows: list[LayerProfile]) -> list[LayerProfile]:
    """Fold BN/activation rows into the conv or linear row they directly follow in the same block."""
    fused: list[LayerProfile] = []
    for row in rows:
        prev = fused[-1] if fused else None
        if (
            prev is not None
            and row.op in {cls.__name__ for cls in _FUSABLE}
            and prev.op.split("+")[0] in ("Conv2d", "Linear")
            and row.name.rsplit(".", 1)[0] == prev.name.rsplit(".", 1)[0]
            and row.input_shape == prev.output_shape
        ):
            prev.op = f"{prev.op}+{row.op}"
            prev.params += row.params
            prev.elementwise_ops += row.elementwise_ops
            prev.output_shape = row.output_shape or prev.output_shape
            continue
        fused.append(row)
    return fused


def profile_model(
    model: nn.Module, input_shape: tuple[int, int, int] | None = None, fuse: bool = True
) -> ModelProfile:
    """Profile `model` for one image of `input_shape` (C, H, W); defaults to `model.spec.input_shape`.

    The model is copied to the meta device, so this is cheap even for EfficientNet-B7 at 600x600.
    """
    spec = getattr(model, "spec", None)
    if input_shape is None:
        if spec is None:
            raise ValueError("input_shape is required for a model without a spec")
        input_shape = spec.input_shape
    meta_model = _to_meta(model).eval()
    counter = _OpCounter()
    with torch.no_grad(), _attach(meta_model, counter), counter:
        meta_model(torch.empty((1, *input_shape), device="meta"))
    # Leaf modules that dispatched nothing (Dropout, StochasticDepth, Identity in eval) cost nothing: no row.
    rows = [r for r in counter.rows if id(r) in counter.active or r.params]
    for row in rows:
        row.output_elements = math.prod(row.output_shape) if row.output_shape else 0
    if fuse:
        rows = _fuse(rows)
    return ModelProfile(
        input_shape=list(input_shape),
        layers=rows,
        params=sum(p.numel() for p in model.parameters()),
        spec=spec.to_dict() if spec is not None else None,
    )


def _to_meta(model: nn.Module) -> nn.Module:
    if all(t.is_meta for t in model.parameters()):
        return model
    return copy.deepcopy(model).to("meta")


def profile_spec(name: str, *, fuse: bool = True, **spec_args: Any) -> ModelProfile:
    """Profile a registered model by name without allocating its weights (built on the meta device)."""
    from edgekit.models import build, resolve_spec

    spec = resolve_spec(name, **spec_args)
    with torch.device("meta"):
        model = build(spec)
    return profile_model(model, fuse=fuse)


# `edgekit models`: the default-configuration cost of every registered model. Profiling all of them takes
# seconds, so the figures ship precomputed in model_table.json (written by tools/model_table.py; a test
# recomputes every row). A row whose name, family, resolution or default options no longer match the
# registry is profiled live instead, so a new or changed entry is never listed with stale figures.
MODEL_TABLE_FILE = "model_table.json"
_STORED_FIELDS = ("name", "family", "resolution", "options", "params", "macs")


def model_table_row(name: str) -> dict[str, Any]:
    """One `edgekit models` row, profiled live: the named model at its defaults (1000 classes, 3 channels)."""
    from edgekit.models import get_entry

    entry = get_entry(name)
    prof = profile_spec(name)
    return dict(
        name=name, family=entry.family, resolution=prof.input_shape[-1], params=prof.params, macs=prof.macs,
        description=entry.description, options=entry.options,
    )


def stored_model_table() -> dict[str, dict[str, Any]]:
    """The shipped rows by name ({} when the file is missing or unreadable: every row is then profiled live)."""
    import json
    from importlib import resources

    try:
        data = json.loads(resources.files("edgekit.models").joinpath(MODEL_TABLE_FILE).read_text(encoding="utf-8"))
        return {row["name"]: row for row in data["models"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _as_json(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


def model_table(family: str | None = None) -> list[dict[str, Any]]:
    """Every registered model (or one family's, case-insensitive) with its default resolution, params and MACs.

    Rows have keys name, family, resolution, params, macs, description, options, in registration order.
    Raises EdgekitError for an unknown family.
    """
    from edgekit.core.errors import EdgekitError
    from edgekit.models import get_entry, list_models

    names = list_models()
    if family is not None:
        names = [n for n in names if get_entry(n).family.lower() == family.lower()]
        if not names:
            families = sorted({get_entry(n).family for n in list_models()})
            raise EdgekitError(f"no family {family!r}: choose one of {', '.join(families)}.")
    stored = stored_model_table()
    rows = []
    for name in names:
        entry = get_entry(name)
        options = entry.options
        record = stored.get(name)
        if (
            record is not None
            and record.get("family") == entry.family
            and record.get("resolution") == entry.default_resolution_for(options)
            and record.get("options") == _as_json(options)
            and isinstance(record.get("params"), int)
            and isinstance(record.get("macs"), int)
        ):
            rows.append(dict(
                name=name, family=entry.family, resolution=record["resolution"], params=record["params"],
                macs=record["macs"], description=entry.description, options=options,
            ))
        else:
            rows.append(model_table_row(name))
    return rows


def stored_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The part of a row model_table.json keeps (the description is always read from the registry)."""
    return _as_json({key: row[key] for key in _STORED_FIELDS})
