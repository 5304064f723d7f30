"""Loading weights: edgekit checkpoints and plain (e.g. torchvision) state_dicts, never arbitrary pickles."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.core.errors import EdgekitError, first_line
from edgekit.core.files import atomic_path
from edgekit.data import DataSource, ImageSet, Preprocess, load_split, preprocess_for
from edgekit.models import ModelSpec, build, resolve_spec, spec_from_record
from edgekit.user_model import (
    INPUT_SHAPE_HELP,
    describe,
    is_callable_target,
    is_program_path,
    load_callable,
    load_program,
    parse_input_shape,
)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from an edgekit checkpoint ({"model": state_dict, ...}) or a bare state_dict file."""
    if not path.is_file():
        raise EdgekitError(f"weights file {path} does not exist: check the --weights path.")
    obj = _load(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgekitError(f"{path} holds no state_dict: save one with torch.save(model.state_dict(), path).")
    return obj


def _load(path: Path) -> Any:
    if not path.is_file():
        raise EdgekitError(f"{path} does not exist: check the path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise EdgekitError(
            f"{path} is not a loadable weights file ({first}): give a state_dict or edgekit checkpoint."
        ) from None
    except MemoryError:
        raise
    except Exception as exc:  # torch.load fails on arbitrary bytes in many ways (KeyError, IndexError, EOFError...)
        raise EdgekitError(
            f"{path} is corrupt or not a PyTorch file ({type(exc).__name__}): re-save or re-download it."
        ) from None


@dataclass(frozen=True)
class KeyFit:
    """How a state_dict's keys fit a model's: the model's keys it lacks, its keys the model lacks, and the shared
    keys whose shapes differ."""

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]

    @classmethod
    def of(cls, state: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> KeyFit:
        return cls([k for k in ours if k not in state], [k for k in state if k not in ours],
                   [k for k in ours if k in state and state[k].shape != ours[k].shape])

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self) -> str:
        """e.g. "missing: a, b; wrong shape: c, d, e (+2 more)"."""
        parts = []
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("wrong shape", self.wrong_shape)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{label}: {', '.join(keys[:3])}{more}")
        return "; ".join(parts)


def non_finite_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The floating-point tensors holding NaN or infinity: weights of a training that diverged."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_weights(model: nn.Module, path: Path) -> None:
    """Load `path` into `model` strictly; a mismatch names the missing and unexpected keys."""
    state = load_state_dict(path)
    fit = KeyFit.of(state, model.state_dict())
    if not fit.fits:
        raise EdgekitError(
            f"{path} does not fit {getattr(model, 'spec', None) and model.spec.name or 'this model'} "
            f"({fit.describe()}): pass the model, width and classes the weights were trained with."
        )
    broken = non_finite_keys(state)
    if broken:
        raise EdgekitError(
            f"{path} holds NaN or infinite values in {', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''}: "
            "the training diverged; train again with a lower learning rate, or resume from an earlier checkpoint."
        )
    model.load_state_dict(state, strict=True)


CHECKPOINT_FORMAT = "edgekit-checkpoint"


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write atomically: a full temp file beside `path`, fsynced, then renamed over it.

    A crash or a full disk leaves the previous checkpoint at `path` intact.
    """
    try:
        with atomic_path(path) as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, "version": 1, **checkpoint}, str(tmp))
    except (OSError, RuntimeError) as exc:  # torch.save's zip writer reports a short write as a RuntimeError
        raise EdgekitError(
            f"cannot write checkpoint {path} ({getattr(exc, 'strerror', None) or first_line(exc)}): free disk "
            "space or choose another --out; the previous checkpoint is intact."
        ) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """An edgekit training checkpoint (spec, preprocessing, classes and weights), loaded without pickle code."""
    obj = _load(path)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise EdgekitError(
            f"{path} is not an edgekit checkpoint: train one with `edgekit train RECIPE`, "
            "or pass a plain state_dict with --weights and the model name."
        )
    return obj


@dataclass(frozen=True)
class TrainedModel:
    """What an edgekit checkpoint says about its model: enough to rebuild, feed and evaluate it."""

    path: Path
    spec: ModelSpec
    preprocess: Preprocess
    classes: list[str]
    data: str
    epoch: int
    val_top1: float | None
    augment: dict[str, Any] = field(default_factory=dict)  # {crop_padding, hflip} of the training run
    label_smoothing: float = 0.0

    def build(self) -> nn.Module:
        model = build(self.spec)
        load_weights(model, self.path)
        return model.eval()


def read_trained(path: Path) -> TrainedModel:
    ckpt = load_checkpoint(path)
    try:
        return TrainedModel(
            path=path, spec=spec_from_record(ckpt.get("spec"), str(path), "train it again"),
            preprocess=Preprocess.from_dict(ckpt["preprocess"]),
            classes=list(ckpt["classes"]), data=str(ckpt["data"]), epoch=int(ckpt["epoch"]),
            val_top1=(ckpt.get("val") or {}).get("top1"),
            augment=dict(ckpt.get("augment") or {}),
            label_smoothing=float(((ckpt.get("recipe") or {}).get("train") or {}).get("label_smoothing", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgekitError(f"{path} is an incomplete edgekit checkpoint ({exc}): train it again.") from None


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


def evaluation_data(eval_data: str | None, trained: TrainedModel | None,
                    spec: ModelSpec) -> tuple[ImageSet | None, Preprocess | None]:
    """The validation split a model is checked on, and the preprocessing to apply to it.

    `eval_data` is a data source, 'auto' (a checkpoint's own data) or None; with a checkpoint and no
    `eval_data`, its own data is still loaded for parity on real images. Neither: (None, None).
    """
    if trained is None and eval_data in (None, "auto"):
        if eval_data == "auto":
            raise EdgekitError("--eval auto needs an edgekit checkpoint: name the data, e.g. --eval digits.")
        return None, None
    source = DataSource.parse(trained.data if eval_data in (None, "auto") else eval_data)  # type: ignore[union-attr]
    preprocess = trained.preprocess if trained else preprocess_for(source, spec.resolution, spec.in_channels)
    return load_split(source, "val", spec.resolution, spec.in_channels, preprocess=preprocess), preprocess
