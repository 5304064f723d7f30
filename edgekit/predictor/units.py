"""A model cut into the units a latency predictor times: its blocks, in order, each a model of its own.

The cut follows the model's own structure, not a second description of it. The model is traced with torch.fx,
treating every block as a leaf: a module stays whole unless it is an `nn.Sequential` of containers (a stage or
`features` list, which is opened). So a unit is an inverted residual, a shuffle unit, an MBConv with its SE, a stem
or head conv with its BatchNorm and activation, the classifier. Parameter-free steps between blocks (pooling,
flatten, dropout) join the unit before them, as a runtime would run them back to back.

Each unit has a signature: a hash of its structure (every submodule's type, configuration and plain attributes,
every function it calls) and its input shape. Two units with one signature compute the same thing on the same
shapes, whichever model they came from, so one measurement serves both.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from edgekit.core.errors import EdgekitError
from edgekit.models._layers import StochasticDepth

# What a unit's layers do, by kind: the multiply-accumulates of each kind of convolution (the kinds run different
# kernels at different speeds), the elements convolutions and linears write, and how many such layers there are.
OP_FEATURES = ("macs_pointwise", "macs_dense", "macs_depthwise", "macs_grouped", "macs_linear", "layer_outputs",
               "layers")
# Which kernel a runtime picks, beyond the kind of layer: SIMD kernels take channel blocks of 4, 8 or 16 (ONNX
# Runtime's NCHWc path on AVX-512 needs multiples of 16, else a slower generic one), and a grouped convolution runs
# one small matrix product per group. So a 3x3 convolution with 24 channels per group can take twice the time of
# one with 16 on the same tensor, for 1.5x the MACs (tools/grouped_conv_speed.py). `alignment` is the largest
# power of two (up to MAX_ALIGNMENT) dividing every channel count read and written per group by the unit's
# convolutions that do at least SIGNIFICANT_SHARE of its MACs; `group_width` the channels per group of its largest
# grouped convolution (0 without one).
KERNEL_FEATURES = ("alignment", "group_width")
MAX_ALIGNMENT = 64
SIGNIFICANT_SHARE = 0.05
TRAINING_ONLY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, StochasticDepth)


@dataclass
class Unit:
    """One block of a model: what it is, what it costs on paper, and the module that computes it."""

    name: str
    kind: str
    signature: str
    input_shape: tuple[int, ...]  # (C, H, W) or (features,), batch 1
    output_shape: tuple[int, ...]
    macs: int
    params: int
    module: nn.Module
    ops: dict[str, int] = field(default_factory=dict)  # OP_FEATURES: the unit's work by kind of layer
    template: str = ""  # its structure without sizes: the same block at any width or resolution shares it

    @property
    def in_bytes(self) -> int:
        return 4 * math.prod(self.input_shape)

    @property
    def out_bytes(self) -> int:
        return 4 * math.prod(self.output_shape)

    def example(self) -> torch.Tensor:
        return torch.zeros(1, *self.input_shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "signature": self.signature,
                "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
                "macs": self.macs, "params": self.params, "ops": dict(self.ops), "template": self.template}


def _opened(module: nn.Module) -> bool:
    """A plain Sequential of containers (a stage, a `features` list) is opened; everything else is one block.

    Subclasses (ConvBNAct, MobileNetV1's DepthwiseSeparable) are blocks with a name of their own: kept whole."""
    return type(module) is nn.Sequential and any(any(True for _ in c.children()) for c in module.children())


class _BlockTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return not _opened(m)


def _plain(value: Any) -> bool:
    return isinstance(value, (int, float, bool, str)) or (
        isinstance(value, tuple) and all(isinstance(v, (int, float, bool, str)) for v in value))


def describe(module: nn.Module) -> str:
    """Everything about a module that decides what it computes at inference, in a stable text (weights excluded).

    Dropout and stochastic depth are identities at inference, so their rates are left out: EfficientNet's drop
    rate grows with a block's depth in the network, and with it in the text two blocks that compute the same thing
    (in B0 and B1, or twice in one stage) would be timed twice and never share a measurement."""
    parts = []
    for name, sub in module.named_modules():
        if isinstance(sub, TRAINING_ONLY):
            parts.append(f"{name}:{type(sub).__name__}")
            continue
        attrs = sorted((k, v) for k, v in vars(sub).items()
                       if not k.startswith("_") and k != "training" and _plain(v))
        parts.append(f"{name}:{type(sub).__name__}({sub.extra_repr()}){attrs}")
    return ";".join(parts)


def template(module: fx.GraphModule, kind: str) -> str:
    """A unit's structure without its sizes: its layers' types in order (convolutions with their kernel, stride
    and grouping) and the functions it calls. The same block of a network at another width or resolution, or a
    block built alike in another network of the family, has the same template."""
    parts = [kind]
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            grouping = "dw" if sub.groups == sub.in_channels > 1 else "g" if sub.groups > 1 else ""
            parts.append(f"conv{sub.kernel_size[0]}s{sub.stride[0]}{grouping}")
        elif sub is not module:
            parts.append(type(sub).__name__)
    parts += [getattr(n.target, "__name__", str(n.target)) for n in module.graph.nodes
              if n.op in ("call_function", "call_method")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _node_text(node: fx.Node, root: nn.Module) -> str:
    def arg(a: Any) -> str:
        return "<x>" if isinstance(a, fx.Node) else repr(a)

    args = ",".join(map(arg, node.args)) + "|" + ",".join(f"{k}={arg(v)}" for k, v in sorted(node.kwargs.items()))
    if node.op == "call_module":
        return f"module[{describe(root.get_submodule(str(node.target)))}]({args})"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{node.op}:{target}({args})"


def signature(text: str, input_shape: tuple[int, ...]) -> str:
    return hashlib.sha256(f"{text}@{list(input_shape)}".encode()).hexdigest()[:20]


def _segments(graph: fx.Graph, root: nn.Module) -> list[list[fx.Node]]:
    """Compute nodes grouped into units: a new unit starts at every block that holds parameters."""
    segments: list[list[fx.Node]] = []
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        starts = node.op == "call_module" and any(True for _ in root.get_submodule(str(node.target)).parameters())
        if starts or not segments:
            segments.append([node])
        else:
            segments[-1].append(node)
    # A unit must read one tensor only (the previous unit's output); where the model is not a chain, merge back.
    merged: list[list[fx.Node]] = []
    for seg in segments:
        merged.append(seg)
        while len(merged) > 1 and len(_inputs(merged[-1])) != 1:
            last = merged.pop()
            merged[-1].extend(last)
    return merged


def _inputs(segment: list[fx.Node]) -> set[fx.Node]:
    inside = set(segment)
    return {n for node in segment for n in node.all_input_nodes if n not in inside}


def _module_of(segment: list[fx.Node], root: nn.Module) -> fx.GraphModule:
    graph = fx.Graph()
    (source,) = _inputs(segment) or {None}
    env: dict[fx.Node, fx.Node] = {}
    x = graph.placeholder("x")
    if source is not None:
        env[source] = x
    for node in segment:
        env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[segment[-1]])
    return fx.GraphModule(root, graph)


def _kind(segment: list[fx.Node], root: nn.Module) -> str:
    first = segment[0]
    if first.op != "call_module":
        return getattr(first.target, "__name__", str(first.target))
    module = root.get_submodule(str(first.target))
    kind = type(module).__name__
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if kind in ("Sequential", "ConvBNAct") and conv is not None:
        k = conv.kernel_size[0]
        if conv.groups > 1 and conv.groups == conv.in_channels:
            return f"depthwise{k}x{k}"
        return f"conv{k}x{k}" if k > 1 else "pointwise"
    if kind == "Sequential" and any(isinstance(m, nn.Linear) for m in module.modules()):
        return "Linear"
    family = type(module).__module__.rsplit(".", 1)[-1]
    return f"{family}.{kind}" if type(module).__module__.startswith("edgekit.models") else kind


def cut(model: nn.Module, input_shape: tuple[int, ...]) -> list[Unit]:
    """The model's units in order, with shapes, MACs and signatures. Raises EdgekitError when it cannot trace."""
    model = model.eval()
    try:
        graph = _BlockTracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many types for untraceable Python
        raise EdgekitError(f"{type(model).__name__} cannot be cut into blocks ({type(exc).__name__}: "
                           f"{str(exc)[:120]}): the predictor needs a traceable forward.") from None
    units = []
    shape = tuple(input_shape)
    for i, segment in enumerate(_segments(graph, model)):
        module = _module_of(segment, model).eval()
        out, ops = _run_counting(module, torch.zeros(1, *shape, device=_device(model)))
        macs = sum(v for k, v in ops.items() if k.startswith("macs_"))
        text = ";".join(_node_text(n, model) for n in segment)
        name = ".".join(str(n.target) for n in segment if n.op == "call_module")[:80] or f"unit{i}"
        kind = _kind(segment, model)
        units.append(Unit(name, kind, signature(text, shape), shape, tuple(out.shape[1:]), macs,
                          sum(p.numel() for p in module.parameters()), module, ops, template(module, kind)))
        shape = tuple(out.shape[1:])
    return units


def _layer_kind(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return "macs_linear"
    if m.groups == 1:
        return "macs_pointwise" if m.kernel_size == (1, 1) else "macs_dense"
    return "macs_depthwise" if m.groups == m.in_channels else "macs_grouped"


def _run_counting(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, int]]:
    """One forward pass, counting conv and linear multiply-accumulates as `edgekit profile` does, by layer kind."""
    ops = dict.fromkeys(OP_FEATURES, 0) | {"group_width": 0}  # "alignment" is set once all layers are seen
    convs: list[tuple[int, int]] = []  # (MACs, alignment) per convolution
    largest_grouped = 0

    def count(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal largest_grouped
        fan_in = math.prod(m.weight.shape[1:]) if isinstance(m, nn.Conv2d) else m.in_features
        kind, macs = _layer_kind(m), out.numel() * fan_in
        ops[kind] += macs
        ops["layer_outputs"] += out.numel()
        ops["layers"] += 1
        if isinstance(m, nn.Conv2d):
            per_group = 1 if kind == "macs_depthwise" else m.groups
            channels = (m.in_channels // per_group) | (m.out_channels // per_group)
            convs.append((macs, channels & -channels))  # the largest power of two dividing both
        if kind == "macs_grouped" and macs > largest_grouped:
            largest_grouped = macs
            ops["group_width"] = m.in_channels // m.groups

    handles = [m.register_forward_hook(count) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for handle in handles:
            handle.remove()
    # the layers that do the work set the path: an SE block's squeeze convolutions, a few % of the MACs, do not
    work = sum(macs for macs, _ in convs)
    ops["alignment"] = min([MAX_ALIGNMENT, *(a for macs, a in convs if macs >= SIGNIFICANT_SHARE * work)])
    return out, ops


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def cut_spec(spec: Any, meta: bool = True) -> list[Unit]:
    """The units of a registered model spec. On the meta device (the default) it allocates nothing: shapes and
    signatures only, which is all prediction needs; calibration builds real modules to export."""
    from edgekit.models import build

    torch.manual_seed(0)
    with torch.device("meta" if meta else "cpu"):
        model = build(spec)
    return cut(model, spec.input_shape)
