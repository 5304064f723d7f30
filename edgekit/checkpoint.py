"""Loading weights: edgekit checkpoints and plain (e.g. torchvision) state_dicts, never arbitrary pickles."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.core.errors import EdgekitError, first_line
from edgekit.core.files import atomic_path
from edgekit.data import Preprocess
from edgekit.models import ModelSpec, build, spec_from_record


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
