"""Recipes: one YAML file that says what to build, train, quantize, export, check and measure.

The schema is the dataclasses below; a bad key or value is reported with its file and line
(`recipes/x.yaml:12: train.optimzer: unknown key; did you mean 'optimizer'?`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekit import builtin
from edgekit.core.errors import EdgekitError, close_names
from edgekit.core.safe_yaml import MAX_NESTING, yaml_depth
from edgekit.options import Int8Options, known_formats


def _choice(*values: str) -> dict[str, Any]:
    return {"choices": values}


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


@dataclass
class ModelSection:
    name: str
    width: float = field(default=1.0, metadata=_range(0.0))
    resolution: int | None = field(default=None, metadata=_range(32))
    num_classes: int | None = field(default=None, metadata=_range(2))
    in_channels: int = field(default=3, metadata=_choice(1, 3))
    options: dict[str, Any] = field(default_factory=dict)
    # Start from these weights (a torchvision-style state_dict or an edgekit checkpoint; a relative path is read
    # from the working directory); a classifier for another class count is re-initialised.
    weights: str | None = None


@dataclass
class DataSection:
    source: str = "fashion-mnist"
    hflip: bool | None = None
    crop_padding: int | None = field(default=None, metadata=_range(0))
    mean: list[float] | None = None
    std: list[float] | None = None
    # Image folders: evaluation resizes the shorter side to resolution / crop_ratio, then center-crops; `loader`
    # decodes into memory or streams from disk (auto: by decoded size); `workers` decoding processes.
    crop_ratio: float | None = field(default=None, metadata=_range(0.05, 1.0))
    loader: str = field(default="auto", metadata=_choice("auto", "memory", "stream"))
    workers: int | None = field(default=None, metadata=_range(0, 64))


@dataclass
class TrainSection:
    epochs: int = field(default=10, metadata=_range(1))
    batch_size: int = field(default=128, metadata=_range(1))
    optimizer: str = field(default="sgd", metadata=_choice("sgd", "adamw"))
    lr: float = field(default=0.1, metadata=_range(0.0))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    nesterov: bool = True
    weight_decay: float = field(default=4e-5, metadata=_range(0.0))
    warmup_epochs: float = field(default=1.0, metadata=_range(0.0))
    label_smoothing: float = field(default=0.0, metadata=_range(0.0, 1.0))
    ema_decay: float | None = field(default=None, metadata=_range(0.0, 1.0))
    seed: int = 0
    limit_batches: int | None = field(default=None, metadata=_range(1))
    freeze_epochs: int = field(default=0, metadata=_range(0))  # backbone frozen, classifier trained, first N epochs
    # a fixed thread count and deterministic kernels: the same weights whatever else the machine runs (slower
    # beside other work, where the default gives threads back); not part of the training hash
    deterministic: bool = False


# A recipe's int8 section is the export's Int8Options itself: the same fields, defaults and rules as the command
# line's --int8 flags and the API's keywords.
Int8Section = Int8Options


@dataclass
class ExportSection:
    formats: list[str] = field(default_factory=lambda: ["onnx", "tflite"])
    nhwc: bool = False
    int8: bool = True  # edgekit run's INT8 stage, configured by the int8 section


@dataclass
class CheckSection:
    max_drop: float = field(default=1.0, metadata=_range(0.0))
    # Latency budgets, from edgekit run's bench stage: the p50 (ms) every INT8 file may take on a device (at its
    # fastest thread count), and the least INT8/FP32 speed-up on each device, runtime and thread count.
    max_latency_ms: dict[str, float] = field(default_factory=dict, metadata=_range(0.0))
    min_int8_speedup: float | None = field(default=None, metadata=_range(0.0))


@dataclass
class BenchSection:
    """edgekit run's bench stage: every exported file on each device of the recipe's `devices`."""

    threads: list[int] | None = None  # default: 1 and all big cores (the device profile's largest count)
    runs: int | None = field(default=None, metadata=_range(1))
    min_seconds: float | None = field(default=None, metadata=_range(0.0))
    warmup_seconds: float | None = field(default=None, metadata=_range(0.0))
    processes: int | None = field(default=None, metadata=_range(1))  # default: bench's (BenchOptions checks)


# A recipe's name becomes a directory (runs/NAME): one path component, no separators, no leading dot or dash.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


@dataclass
class Recipe:
    name: str = field(metadata={"pattern": NAME_PATTERN})
    model: ModelSection
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    int8: Int8Section = field(default_factory=Int8Section)
    export: ExportSection = field(default_factory=ExportSection)
    check: CheckSection = field(default_factory=CheckSection)
    bench: BenchSection = field(default_factory=BenchSection)
    devices: list[str] = field(default_factory=lambda: ["local"])
    source: str | None = field(default=None, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        return data

    def training_hash(self) -> str:
        """Identifies a training run: the sections that change the trained weights."""
        data = self.to_dict()
        relevant = {k: data[k] for k in ("model", "data", "train")}
        relevant["data"].pop("workers")  # decoding processes do not change the images (seeded per image)
        relevant["train"].pop("deterministic")  # how the weights are computed, not which
        for section, key, default in _LATER_KEYS:  # absent at their default: older runs keep their hash
            if relevant[section].get(key) == default:
                relevant[section].pop(key)
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


# Keys added after runs were recorded: left out of the training hash at their default.
_LATER_KEYS = (("model", "weights", None), ("data", "crop_ratio", None), ("data", "loader", "auto"),
               ("train", "freeze_epochs", 0))


def load_recipe(path: str | Path) -> Recipe:
    """A recipe from a YAML file, or a built-in recipe by name (`mobilenet_v2_fashion`: see `edgekit recipes`)."""
    path = Path(path)
    if not path.is_file():
        shipped = builtin.builtin_recipe(str(path))
        if shipped is None:
            close = close_names(path.name.removesuffix(".yaml"), builtin.recipe_names())
            if close:
                raise EdgekitError(f"recipe {path} does not exist: did you mean {', '.join(close)}? (`edgekit "
                                   "recipes` lists the built-in ones)")
            raise EdgekitError(f"recipe {path} does not exist: give a YAML file, or a built-in recipe name "
                               f"({', '.join(builtin.recipe_names())}).")
        path = shipped
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgekitError(f"cannot read recipe {path} ({exc}): give a UTF-8 YAML file.") from None
    return parse_recipe(text, str(path))


def parse_recipe(text: str, origin: str = "<recipe>") -> Recipe:
    try:
        if yaml_depth(text) > MAX_NESTING:
            raise EdgekitError(f"{origin}: nested more than {MAX_NESTING} levels deep: a recipe has sections of "
                               "keys, see recipes/ for the shape.")
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark else origin
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EdgekitError(f"{where}: not valid YAML ({problem}): fix the syntax.") from None
    if not isinstance(data, dict):
        raise EdgekitError(f"{origin}: a recipe is a YAML mapping with name: and model: keys.")
    lines = _line_map(node)
    recipe = _build(Recipe, data, "", lines, origin)
    recipe.source = origin
    _check_model(recipe, lines, origin)
    _check_export(recipe, lines, origin)
    return recipe


def _check_model(recipe: Recipe, lines: dict[str, int], origin: str) -> None:
    """The model section names a model the registry can build, with options and sizes it accepts: refused when
    the recipe is read, not after training started (or, in a sweep, after the other points ran)."""
    from edgekit.models import resolve_spec

    m = recipe.model
    try:
        resolve_spec(m.name, width=m.width, resolution=m.resolution, num_classes=m.num_classes or 10,
                     in_channels=m.in_channels, **m.options)
    except EdgekitError as exc:
        _fail(origin, lines, "model", str(exc).rstrip("."))
    from edgekit.weights import is_weights_name, published_for

    if is_weights_name(m.weights):  # published weights that exist for this model and width
        try:
            published_for(str(m.weights), m.name, m.width)
        except EdgekitError as exc:
            _fail(origin, lines, "model.weights", str(exc).rstrip("."))


def _check_export(recipe: Recipe, lines: dict[str, int], origin: str) -> None:
    """The formats are ones edgekit exports (whether their converters are installed, `edgekit run` asks: a
    recipe trains without them)."""
    try:
        known_formats(recipe.export.formats)
    except EdgekitError as exc:
        _fail(origin, lines, "export.formats", str(exc).rstrip("."))


def _line_map(node: yaml.Node, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    """Dotted key path -> 1-based line of its value, for every key in the document."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            out[path] = key.start_mark.line + 1
            _line_map(value, path, out)
    return out


def _fail(origin: str, lines: dict[str, int], path: str, message: str) -> typing.NoReturn:
    line = lines.get(path)
    if line is None and "." in path:
        line = lines.get(path.rsplit(".", 1)[0])
    where = f"{origin}:{line}" if line else origin
    raise EdgekitError(f"{where}: {path}: {message}")


def _build(cls: type, data: Any, prefix: str, lines: dict[str, int], origin: str) -> Any:
    if not isinstance(data, dict):
        _fail(origin, lines, prefix, f"expected a mapping of keys, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = close_names(str(key), fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(fields)}."
            _fail(origin, lines, path, f"unknown key; {hint}")
        kwargs[key] = _value(hints[key], fields[key], value, path, lines, origin)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            _fail(origin, lines, prefix, f"missing required key {name!r}.")
    return cls(**kwargs)


def _value(hint: Any, f: dataclasses.Field, value: Any, path: str, lines: dict[str, int], origin: str) -> Any:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        _fail(origin, lines, path, "needs a value.")
    target = next(t for t in allowed if t is not type(None))
    if dataclasses.is_dataclass(target):
        return _build(target, value, path, lines, origin)
    origin_type = typing.get_origin(target) or target
    if origin_type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if origin_type is float and isinstance(value, str):  # YAML 1.1 reads 4e-5 as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if not isinstance(value, origin_type) or (origin_type in (int, float) and isinstance(value, bool)):
        _fail(origin, lines, path, f"expected {_type_name(target)}, got {value!r}.")
    if origin_type is dict and typing.get_args(target) == (str, float):
        return _number_map(value, f.metadata, path, lines, origin)
    if origin_type is list:
        (item_type,) = typing.get_args(target)
        for item in value:
            if item_type is float and isinstance(item, int | float) and not isinstance(item, bool):
                continue
            if not isinstance(item, item_type):
                _fail(origin, lines, path, f"expected a list of {item_type.__name__}, got {item!r}.")
        value = [float(v) for v in value] if item_type is float else list(value)
    meta = f.metadata
    if "pattern" in meta and not meta["pattern"].fullmatch(value):
        _fail(origin, lines, path, f"{value!r} cannot name a run directory: use letters, digits, '.', '_', '+' and "
                                   "'-' (no '/', no leading '.' or '-'), at most 100 characters.")
    if "choices" in meta and value not in meta["choices"]:
        _fail(origin, lines, path, f"{value!r} is not one of {', '.join(map(str, meta['choices']))}.")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        _fail(origin, lines, path, f"{value!r} is out of range: use a value {bounds}.")
    return value


def _number_map(value: dict[Any, Any], meta: Any, path: str, lines: dict[str, int], origin: str) -> dict[str, float]:
    """A mapping of names to finite numbers above the field's minimum (e.g. a latency budget per device)."""
    out = {}
    for key, number in value.items():
        where = f"{path}.{key}"
        if not isinstance(key, str) or isinstance(number, bool) or not isinstance(number, int | float):
            _fail(origin, lines, where, f"expected a name and a number, got {key!r}: {number!r}.")
        if not math.isfinite(number) or number <= meta.get("min", 0.0):
            _fail(origin, lines, where, f"{number!r} is out of range: use a number above {meta.get('min', 0.0)}.")
        out[key] = float(number)
    return out


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is list:
        return f"a list of {typing.get_args(t)[0].__name__}"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}.get(
        t, getattr(t, "__name__", str(t)))


def with_overrides(recipe: Recipe, epochs: int | None = None, batch_size: int | None = None,
                   limit_batches: int | None = None, data: str | None = None,
                   weights: str | None = None) -> Recipe:
    """The recipe with the command line's overrides (`--epochs`, `--batch-size`, `--limit-batches`, `--data`,
    `--weights`)."""
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("limit_batches", limit_batches)):
        if value is not None:
            if value < 1:
                raise EdgekitError(f"--{key.replace('_', '-')} must be at least 1, got {value}.")
            setattr(recipe.train, key, value)
    if data is not None:
        recipe.data.source = data
    if weights is not None:
        from edgekit.weights import is_weights_name, published_for

        if is_weights_name(weights):
            published_for(weights, recipe.model.name, recipe.model.width)  # before any download or training
        recipe.model.weights = weights
    return recipe
