"""What a recipe's `data:` section or `--data` names (`DataSource`), the preprocessing a model trained on it gets,
and the rule that data and model agree on classes: the torch-free half of edgekit.data, which evaluating an exported
file on an image folder needs without torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekit.core.errors import EdgekitError
from edgekit.imagefolder import DEFAULT_CROP_RATIO, SHORTER_SIDE
from edgekit.preprocess import Preprocess

BUILTIN = ("fashion-mnist", "digits", "synthetic")


class Labelled(Protocol):
    name: str
    classes: list[str]


def require_same_classes(model: object, classes: list[str] | int | None, data: Labelled, fix: str) -> None:
    """Refuse data whose classes differ from the model's: by count, or by name when both are named."""
    if classes is None:
        return
    count = classes if isinstance(classes, int) else len(classes)
    if count != len(data.classes):
        raise EdgekitError(f"{model} predicts {count} classes but {data.name} has {len(data.classes)}: {fix}.")
    if isinstance(classes, list) and list(map(str, classes)) != list(map(str, data.classes)):
        ours, theirs = ", ".join(map(str, classes[:3])), ", ".join(map(str, data.classes[:3]))
        raise EdgekitError(
            f"{model} was trained on classes {ours}, ... but {data.name} has {theirs}, ...: {fix}."
        )


@dataclass(frozen=True)
class DataSource:
    """What a recipe's `data:` section or `--data` names, parsed: `fashion-mnist`, `digits`, `imagefolder:PATH`."""

    kind: str
    path: Path | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    hflip: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"imagefolder:{self.path}" if self.kind == "imagefolder" else self.kind

    @property
    def crop_ratio(self) -> float:
        return float(self.options.get("crop_ratio") or DEFAULT_CROP_RATIO)

    @property
    def loader(self) -> str:
        return str(self.options.get("loader") or "auto")

    @classmethod
    def parse(cls, text: str) -> DataSource:
        kind, _, rest = text.partition(":")
        kind = kind.strip().lower()
        if kind == "imagefolder":
            if not rest:
                raise EdgekitError("imagefolder needs a path: use --data imagefolder:PATH (with train/ and val/).")
            return cls("imagefolder", Path(rest).expanduser())
        if kind == "fashion-mnist" and rest:
            return cls("fashion-mnist", Path(rest).expanduser())
        if kind in BUILTIN and not rest:
            return cls(kind)
        raise EdgekitError(
            f"unknown dataset {text!r}: use one of {', '.join(BUILTIN)} or imagefolder:PATH."
        )


# Per-source defaults: normalization statistics of the training split and whether mirroring keeps the label.
_STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,), True),
    "digits": ((0.3057,), (0.3860,), False),
    "synthetic": ((0.5,), (0.25,), False),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True),
}


def preprocess_for(source: DataSource, resolution: int, channels: int) -> Preprocess:
    """The preprocessing a model trained on `source` gets: its statistics, and for an image folder the
    shorter-side resize and center crop at the source's crop ratio (default 0.875)."""
    mean, std, _ = _STATS[source.kind]
    mean, std = source.mean or mean, source.std or std
    if len(mean) != channels:  # grayscale stats for a 3-channel model (replicated) or vice versa
        mean, std = (float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels
    if source.kind == "imagefolder":
        return Preprocess(resolution=resolution, channels=channels, mean=tuple(mean), std=tuple(std),
                          resize=SHORTER_SIDE, crop_ratio=source.crop_ratio)
    return Preprocess(resolution=resolution, channels=channels, mean=tuple(mean), std=tuple(std))


def default_hflip(source: DataSource) -> bool:
    return source.hflip if source.hflip is not None else _STATS[source.kind][2]
