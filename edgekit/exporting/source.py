"""What `edgekit export` and `edgekit.export()` are given, resolved into one Source: a zoo model by name (with its
size, options and optional weights), an edgekit checkpoint, or the user's own model (`pkg.module:callable`, a
torch.export program saved as .pt2, or an nn.Module object with its input shape). Also the data a source is
evaluated on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from edgekit.checkpoint import TrainedModel, load_weights, read_trained
from edgekit.core.errors import EdgekitError
from edgekit.data import DataSource, ImageSet, Preprocess, load_split, preprocess_for
from edgekit.models import ModelSpec, resolve_spec
from edgekit.user_model import (
    INPUT_SHAPE_HELP,
    describe,
    is_callable_target,
    is_program_path,
    load_callable,
    load_program,
    parse_input_shape,
)
from edgekit.weights import fetch, is_weights_name, published_for


def is_checkpoint_path(text: str) -> bool:
    return text.endswith((".pt", ".pth")) or Path(text).is_file()


@dataclass
class Source:
    """What to export: the spec, the weights file to load, the edgekit checkpoint it came from, and the user's
    own module (None for zoo models, which are built from the spec)."""

    spec: ModelSpec
    weights: Path | None = None
    trained: TrainedModel | None = None
    model: nn.Module | None = None
    preprocess: Preprocess | None = None  # what published weights were trained with (None: not known)


def resolve_source(target: str | nn.Module, width: float | None = None, resolution: int | None = None,
                   res_mult: float | None = None, num_classes: int | None = None, in_channels: int | None = None,
                   options: dict[str, Any] | None = None, weights: Path | None = None,
                   input_shape: str | Sequence[int] | None = None, name: str | None = None) -> Source:
    """What to export: a model name (with its size and options, and optional weights), an edgekit checkpoint,
    the user's own model (`pkg.module:callable`, a torch.export program saved as .pt2, or an nn.Module object,
    with `input_shape`).

    Size flags cannot change a trained checkpoint's model, and weights must hold the named architecture.
    """
    if isinstance(target, nn.Module) or is_callable_target(target) or is_program_path(target):
        return _user_source(target, width, resolution, res_mult, num_classes, in_channels, options, weights,
                            input_shape, name)
    if input_shape is not None:
        raise EdgekitError(f"--input-shape applies to your own model (MODULE:CALLABLE or a .pt2 program): give "
                           f"{target} --resolution and --in-channels instead.")
    num_classes = 1000 if num_classes is None else num_classes
    in_channels = 3 if in_channels is None else in_channels
    if is_checkpoint_path(target):
        if weights is not None:
            raise EdgekitError(f"{target} is a checkpoint already: drop --weights, or give a model name instead.")
        trained = read_trained(Path(target))
        given = {"width": width, "resolution": resolution, "res_mult": res_mult, "option": options or None}
        clash = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if clash:
            raise EdgekitError(
                f"{', '.join(clash)} cannot change a trained checkpoint's model: export it as trained, "
                "or train a recipe with the new settings."
            )
        return Source(trained.spec, trained.path, trained)
    spec = resolve_spec(target, width=1.0 if width is None else width, resolution=resolution, res_mult=res_mult,
                        num_classes=num_classes, in_channels=in_channels, **(options or {}))
    if is_weights_name(weights):
        entry = published_for(str(weights), spec.name, spec.width)
        return Source(spec, fetch(entry), preprocess=replace(entry.preprocess(), resolution=spec.resolution,
                                                             channels=spec.in_channels))
    if weights is not None and weights.is_file():
        try:
            trained = read_trained(weights)
        except EdgekitError:
            return Source(spec, weights)  # a plain state_dict: load_weights checks it strictly
        if trained.spec.name != spec.name:
            raise EdgekitError(
                f"{weights} holds a {trained.spec.name}, not a {spec.name}: export it with `edgekit export {weights}`."
            )
        _same_as_trained(trained, weights, width, resolution if res_mult is None else spec.resolution, options)
        return Source(trained.spec, weights, trained)
    return Source(spec, weights)


def _user_source(target: str | nn.Module, width: float | None, resolution: int | None, res_mult: float | None,
                 num_classes: int | None, in_channels: int | None, options: dict[str, Any] | None,
                 weights: Path | None, input_shape: str | Sequence[int] | None, name: str | None) -> Source:
    """The user's own module, its weights loaded (strictly), described by one forward pass."""
    given = {"--width": width, "--resolution": resolution, "--res-mult": res_mult, "--num-classes": num_classes,
             "--in-channels": in_channels, "--option": options or None}
    clash = [flag for flag, value in given.items() if value is not None]
    if clash:
        raise EdgekitError(f"{', '.join(clash)} cannot change your own model: its input is --input-shape and its "
                           "classes are what it returns.")
    if isinstance(target, nn.Module):
        model, default_name, source = target, type(target).__name__, "python object"
    elif is_program_path(target):
        model, recorded = load_program(Path(target))
        default_name, source = Path(target).stem, str(target)
        if input_shape is not None and parse_input_shape(input_shape) != recorded:
            raise EdgekitError(f"{target} was captured for input {'x'.join(map(str, (1, *recorded)))}, not "
                               f"{input_shape}: drop --input-shape, or save the program at that shape.")
        input_shape = recorded
    else:
        model, default_name = load_callable(target)
        source = target
    if input_shape is None:
        raise EdgekitError(f"{name or default_name} needs its input shape: give --input-shape {INPUT_SHAPE_HELP} "
                           "(input_shape= in Python).")
    shape = parse_input_shape(input_shape)
    if weights is not None:
        load_weights(model, weights)
    spec = describe(model, shape, name or default_name, source)
    return Source(spec, weights, None, model)


def _same_as_trained(trained: TrainedModel, weights: Path, width: float | None, resolution: int | None,
                     options: dict[str, Any] | None) -> None:
    """Flags given beside an edgekit checkpoint's weights must agree with the model it holds: the checkpoint's
    model is what gets exported, so a different value would be silently ignored."""
    held = trained.spec
    clashes = []
    if width is not None and abs(width - held.width) > 1e-9:
        clashes.append(f"--width {width:g} (it holds width {held.width:g})")
    if resolution is not None and resolution != held.resolution:
        clashes.append(f"--resolution {resolution} (it was trained at {held.resolution})")
    for key, value in (options or {}).items():
        if held.options.get(key) != value:
            clashes.append(f"-o {key}={value} (it holds {key}={held.options.get(key)!r})")
    if clashes:
        raise EdgekitError(f"{weights} is an edgekit checkpoint that disagrees with {'; '.join(clashes)}: drop those "
                           f"flags to export it as trained (`edgekit export {weights}`).")


def evaluation_data(eval_data: str | None, trained: TrainedModel | None, spec: ModelSpec,
                    known: Preprocess | None = None) -> tuple[ImageSet | None, Preprocess | None]:
    """The validation split a model is checked on, and the preprocessing to apply to it.

    `eval_data` is a data source, 'auto' (a checkpoint's own data) or None; with a checkpoint and no
    `eval_data`, its own data is still loaded for parity on real images. Neither: (None, `known`). `known` is the
    preprocessing the weights were trained with where it is known without a checkpoint (published weights).
    """
    if trained is None and eval_data in (None, "auto"):
        if eval_data == "auto":
            raise EdgekitError("--eval auto needs an edgekit checkpoint: name the data, e.g. --eval digits.")
        return None, known
    source = DataSource.parse(trained.data if eval_data in (None, "auto") else eval_data)  # type: ignore[union-attr]
    preprocess = trained.preprocess if trained else known or preprocess_for(source, spec.resolution, spec.in_channels)
    return load_split(source, "val", spec.resolution, spec.in_channels, preprocess=preprocess), preprocess
