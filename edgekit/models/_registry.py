"""The model registry: every architecture edgekit knows, built by one `create()` call."""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

from edgekit.core.errors import EdgekitError, close_names
from edgekit.core.optional import installed

MIN_RESOLUTION = 32
MAX_RESOLUTION = 2048  # beyond it one activation of a large model outgrows any device's memory
MAX_CLASSES = 100_000
MAX_IN_CHANNELS = 64
MAX_WIDTH = 4.0
CUSTOM_FAMILY = "custom"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model: the record that checkpoints and manifests carry."""

    name: str
    family: str
    width: float
    resolution: int
    num_classes: int
    in_channels: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        if self.family == CUSTOM_FAMILY:  # a user's model may take a non-square input
            channels, height, width = self.options["input_shape"]
            return (int(channels), int(height), int(width))
        return (self.in_channels, self.resolution, self.resolution)

    @property
    def custom(self) -> bool:
        """A user's own module (not in the zoo): described by its input shape and source, never rebuilt."""
        return self.family == CUSTOM_FAMILY

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelEntry:
    """One registered name. `builder(width, num_classes, in_channels, **options)` returns the module.

    `width` handed to the builder is the user's multiplier times the entry's `base_width`, so
    `shufflenet_v2_x1_0 --width 0.5` is the paper's 0.5x network.
    """

    name: str
    family: str
    default_resolution: int
    builder: Callable[..., nn.Module]
    description: str
    base_width: float = 1.0
    fixed: dict[str, Any] = field(default_factory=dict)
    resolution_fn: Callable[[dict[str, Any]], int] | None = None
    design_space: bool = False  # a family's option-driven entry (`efficientnet -o phi=..`), not a named network

    def default_resolution_for(self, options: dict[str, Any]) -> int:
        return self.resolution_fn(options) if self.resolution_fn else self.default_resolution

    @property
    def options(self) -> dict[str, Any]:
        """Family options a user may set, with their defaults."""
        params = inspect.signature(self.builder).parameters
        reserved = {"width", "num_classes", "in_channels"} | set(self.fixed)
        return {
            name: p.default for name, p in params.items()
            if name not in reserved and p.kind is p.KEYWORD_ONLY
        }


_REGISTRY: dict[str, ModelEntry] = {}
# Importing a family module registers its models; this order is the order `edgekit models` lists them in.
FAMILY_MODULES = (
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "shufflenet_v1", "shufflenet_v2", "efficientnet", "regnet",
)
_families_loaded = False


def _load_families() -> None:
    """Import the family modules, and torch with them, when a model is first looked up: a command that never
    looks one up (benchmarking an exported file) never imports torch."""
    global _families_loaded
    if _families_loaded:
        return
    _families_loaded = True
    for module in FAMILY_MODULES:
        importlib.import_module(f"edgekit.models.{module}")
    # in FAMILY_MODULES order, whichever family module was imported first
    rank = {f"edgekit.models.{m}": i for i, m in enumerate(FAMILY_MODULES)}
    ordered = sorted(_REGISTRY.values(),
                     key=lambda e: rank.get(getattr(e.builder, "func", e.builder).__module__, len(rank)))
    _REGISTRY.clear()
    _REGISTRY.update((e.name, e) for e in ordered)


def register(
    name: str,
    family: str,
    default_resolution: int,
    builder: Callable[..., nn.Module],
    description: str,
    base_width: float = 1.0,
    fixed: dict[str, Any] | None = None,
    resolution_fn: Callable[[dict[str, Any]], int] | None = None,
    design_space: bool = False,
) -> None:
    """Add a model. `fixed` holds the builder arguments that define this name (not user options);
    a `functools.partial` builder sets defaults a user may still override."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = ModelEntry(
        name, family, default_resolution, builder, description, base_width, fixed or {}, resolution_fn,
        design_space,
    )


def list_models(family: str | None = None) -> list[str]:
    """Registered names, in registration order (grouped by family)."""
    _load_families()
    return [n for n, e in _REGISTRY.items() if family is None or e.family == family]


SPEC_FIELDS = ("name", "width", "resolution", "num_classes", "in_channels")


def spec_from_record(record: Any, origin: str, fix: str) -> ModelSpec:
    """A spec read back from a checkpoint or manifest, validated as strictly as user input."""
    if not isinstance(record, dict) or any(k not in record for k in SPEC_FIELDS) \
            or not isinstance(record.get("options", {}), dict) or not isinstance(record["name"], str):
        raise EdgekitError(f"{origin} holds no complete model spec: {fix}.")
    try:
        if record.get("family") == CUSTOM_FAMILY:
            options = record.get("options", {})
            return custom_spec(record["name"], options.get("input_shape"), record["num_classes"],
                               str(options.get("source", "")))
        if not installed("torch"):  # a lean install: the zoo is made of torch modules
            return _spec_without_zoo(record)
        return resolve_spec(record["name"], width=record["width"], resolution=record["resolution"],
                            num_classes=record["num_classes"], in_channels=record["in_channels"],
                            **record.get("options", {}))
    except EdgekitError as exc:
        raise EdgekitError(f"{origin} records an unusable model ({str(exc).rstrip('.')}): {fix}.") from None


def get_entry(name: str) -> ModelEntry:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = close_names(name, _REGISTRY)
        hint = f"did you mean {', '.join(close)}?" if close else "run `edgekit models` for the list."
        raise EdgekitError(f"unknown model {name!r}: {hint}") from None


# Family options a user may set, and the range of each: wide enough for any design the papers' spaces contain, and
# bounded so that a typo (depth=10000000) is refused instead of building for minutes.
OPTION_RANGES: dict[str, tuple[float, float]] = {
    "depth": (1, 64), "w_0": (8, 2048), "w_a": (0.0, 512.0), "w_m": (1.01, 8.0), "group_width": (1, 1024),
    "bottleneck_ratio": (0.0625, 8.0), "se_ratio": (0.0, 1.0), "groups": (1, 64), "expansion": (1, 16),
    "phi": (-2.0, 8.0), "dropout": (0.0, 0.99), "stochastic_depth_prob": (0.0, 0.99),
}


def check_option(model: str, key: str, value: Any, default: Any) -> None:
    """A family option has its default's type (a whole number where the default is one) and stays in its range."""
    if isinstance(default, bool) or not isinstance(default, int | float):
        if isinstance(default, bool) and not isinstance(value, bool):
            raise EdgekitError(f"{model} option {key}={value!r}: give true or false.")
        return
    lo, hi = OPTION_RANGES.get(key, (0, 1e6))
    whole = isinstance(default, int)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or (whole and value != int(value)) or not lo <= value <= hi:
        kind = "a whole number" if whole else "a number"
        raise EdgekitError(f"{model} option {key}={value!r} is out of range: give {kind} from {lo:g} to {hi:g}.")


def resolve_spec(
    name: str,
    *,
    width: float = 1.0,
    resolution: int | None = None,
    res_mult: float | None = None,
    num_classes: int = 1000,
    in_channels: int = 3,
    **options: Any,
) -> ModelSpec:
    """Validate user input and return the full spec (defaults filled in). Raises EdgekitError."""
    entry = get_entry(name)
    accepted = entry.options
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(f"{k} (default {v!r})" for k, v in accepted.items()) or "no options"
        raise EdgekitError(f"{name} does not take option {', '.join(unknown)}: it takes {takes}.")
    for key, value in options.items():
        check_option(name, key, value, accepted[key])
    options = {**accepted, **options}
    default_resolution = entry.default_resolution_for(options)
    if resolution is not None and res_mult is not None:
        raise EdgekitError("both a resolution and a resolution multiplier were given: give one of them.")
    if res_mult is not None:
        if not (math.isfinite(res_mult) and res_mult > 0):
            raise EdgekitError(f"resolution multiplier {res_mult!r} must be > 0, e.g. 0.714 for 160 from 224.")
        resolution = round(default_resolution * res_mult)
    if resolution is None:
        resolution = default_resolution
    _check_sizes(width, resolution, num_classes, in_channels)
    return ModelSpec(
        name=name,
        family=entry.family,
        width=float(width),
        resolution=resolution,
        num_classes=num_classes,
        in_channels=in_channels,
        options=options,
    )


def _check_sizes(width: Any, resolution: Any, num_classes: Any, in_channels: Any) -> None:
    """The ranges every zoo spec keeps, whichever family it is of."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= MAX_WIDTH:
        raise EdgekitError(f"width {width!r} is out of range: use a multiplier in (0, {MAX_WIDTH:g}], e.g. 0.75.")
    if (isinstance(resolution, bool) or not isinstance(resolution, int)
            or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise EdgekitError(
            f"resolution {resolution!r} is not usable: give an integer from {MIN_RESOLUTION} "
            f"(the networks downsample 32x) to {MAX_RESOLUTION}."
        )
    for value, what, most in ((num_classes, "number of classes", MAX_CLASSES),
                              (in_channels, "number of input channels", MAX_IN_CHANNELS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise EdgekitError(f"{what} {value!r} is out of range: give an integer from 1 to {most:,}.")


def _spec_without_zoo(record: dict[str, Any]) -> ModelSpec:
    """A zoo spec's record checked for its shape and ranges only, where the zoo itself is not installed: enough
    to describe the model; building one needs torch anyway."""
    if not isinstance(record.get("family"), str):
        raise EdgekitError("its model family is missing")
    _check_sizes(record["width"], record["resolution"], record["num_classes"], record["in_channels"])
    return ModelSpec(name=record["name"], family=record["family"], width=float(record["width"]),
                     resolution=record["resolution"], num_classes=record["num_classes"],
                     in_channels=record["in_channels"], options=dict(record.get("options", {})))


def custom_spec(name: str, input_shape: Any, num_classes: Any, source: str) -> ModelSpec:
    """The record of a user's own module: its (C, H, W) input, class count and where it came from
    (`pkg.module:callable`, a .pt2 file or "python object"). Validated like a zoo spec."""
    shape = list(input_shape) if isinstance(input_shape, list | tuple) else []
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape) \
            or not 1 <= shape[0] <= MAX_IN_CHANNELS or not all(1 <= v <= MAX_RESOLUTION for v in shape[1:]):
        raise EdgekitError(f"input shape {input_shape!r} is not usable: give channels from 1 to {MAX_IN_CHANNELS} "
                           f"and a height and width from 1 to {MAX_RESOLUTION}, e.g. 3,224,224.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        raise EdgekitError(f"number of classes {num_classes!r} is out of range: give an integer from 1 to "
                           f"{MAX_CLASSES:,}.")
    if not isinstance(name, str) or not name.strip() or "/" in name or name in (".", ".."):
        raise EdgekitError(f"model name {name!r} is not usable: give a plain name such as my_net.")
    return ModelSpec(name=name, family=CUSTOM_FAMILY, width=1.0, resolution=shape[1], num_classes=num_classes,
                     in_channels=shape[0], options={"source": source, "input_shape": shape})


def build(spec: ModelSpec) -> nn.Module:
    """Build the module a spec describes; the spec is attached as `model.spec`."""
    if spec.custom:
        raise EdgekitError(f"{spec.name} is your own model ({spec.options.get('source') or 'a Python object'}): "
                           "edgekit cannot rebuild it from its record; use the exported files, or export it again.")
    entry = get_entry(spec.name)
    try:
        model = entry.builder(
            width=spec.width * entry.base_width,
            num_classes=spec.num_classes,
            in_channels=spec.in_channels,
            **entry.fixed,
            **spec.options,
        )
    except (ValueError, TypeError) as exc:  # a builder's own check of an option value
        raise EdgekitError(f"{spec.name}: {exc}") from None
    model.spec = spec
    return model


def create(
    name: str,
    *,
    width: float = 1.0,
    resolution: int | None = None,
    num_classes: int = 1000,
    in_channels: int = 3,
    res_mult: float | None = None,
    **family_options: Any,
) -> nn.Module:
    """Build a registered model, e.g. `create("mobilenet_v2", width=0.75)`.

    `resolution` (or `res_mult`, a multiplier of the family's default) does not change the weights; it is
    recorded in `model.spec` and used by the profiler and exporters as the input size.
    """
    spec = resolve_spec(
        name, width=width, resolution=resolution, res_mult=res_mult,
        num_classes=num_classes, in_channels=in_channels, **family_options,
    )
    return build(spec)
