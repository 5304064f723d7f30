"""The one preprocessing every consumer applies, as a record that travels with checkpoints and manifests.

`Preprocess` turns uint8 images at the model's resolution into the float32 NCHW batches that training,
evaluation, calibration, parity checks and the device harness all see. It needs numpy only: judging an exported
file (a lean install, without torch) reads and applies it too. The datasets themselves live in edgekit.data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

SHORTER_SIDE = "shorter-side"  # resize rule: shorter side to round(size / crop_ratio), then center crop
SQUASH = "bilinear-antialias"  # the rule before crop ratios: the whole image resized to a square


@dataclass(frozen=True)
class Preprocess:
    """uint8 image -> model input: resize (done when the image is read), scale to [0, 1], normalize, NCHW float32.

    `resize` is the rule images are brought to `resolution` with: "shorter-side" (image folders: the shorter side
    to round(resolution / crop_ratio), then a center crop) or "bilinear-antialias" (the whole image to a square;
    records written before crop ratios existed, and the square built-in datasets)."""

    resolution: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = SQUASH
    layout: str = "nchw"
    range: tuple[float, float] = (0.0, 255.0)
    crop_ratio: float = 1.0

    def __call__(self, images: Any) -> np.ndarray:
        """(N, C, H, W) uint8 at `resolution` (numpy, or a CPU tensor) -> (N, C, H, W) float32, normalized: the
        same float32 operations as `tensor`, in numpy, so that files are judged without torch."""
        x = np.asarray(images).astype(np.float32) / np.float32(self.range[1])
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return (x - mean) / std

    def tensor(self, images: torch.Tensor) -> torch.Tensor:
        """`__call__` on a tensor, for training and torch evaluation."""
        import torch

        x = images.float() / self.range[1]
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Preprocess:
        """Read back a recorded preprocessing; ValueError/KeyError/TypeError when it is damaged."""
        pre = cls(
            resolution=int(record["resolution"]), channels=int(record["channels"]),
            mean=tuple(float(v) for v in record["mean"]), std=tuple(float(v) for v in record["std"]),
            resize=record.get("resize", SQUASH), layout=record.get("layout", "nchw"),
            range=tuple(float(v) for v in record.get("range", (0.0, 255.0))),
            crop_ratio=float(record.get("crop_ratio", 1.0)),
        )
        if pre.resize not in (SQUASH, SHORTER_SIDE):
            raise ValueError(f"unknown resize rule {pre.resize!r}")
        if not (math.isfinite(pre.crop_ratio) and 0 < pre.crop_ratio <= 1):
            raise ValueError("crop_ratio must be in (0, 1]")
        if len(pre.mean) != pre.channels or len(pre.std) != pre.channels:
            raise ValueError(f"mean and std need {pre.channels} values each")
        if not all(math.isfinite(v) for v in (*pre.mean, *pre.range)) or not all(
                math.isfinite(v) and v > 0 for v in pre.std):
            raise ValueError("mean must be finite and std finite and > 0")
        return pre


# What a user may say about a model file's preprocessing (a YAML file or flags), and what each key means.
GIVEN_KEYS = {
    "resolution": "input size in px (default: the file's input shape)",
    "resize": "shorter-side (the shorter side to resolution / crop_ratio, then a center crop) or squash (the "
              "whole image to a square)",
    "crop_ratio": "the center crop's share of the resized image, in (0, 1] (e.g. 0.875)",
    "mean": "per-channel mean, in the units of input_range (one value, or one per channel)",
    "std": "per-channel standard deviation, in the units of input_range (one value, or one per channel)",
    "input_range": "the pixel range the model takes before mean and std: [0, 1] (default), [0, 255], [-1, 1]",
    "layout": "nchw or nhwc (default: read from the file's input shape)",
    "labels": "a text file with one class name per line, line k naming output k",
}
_RESIZE_RULES = {"shorter-side": SHORTER_SIDE, "squash": SQUASH}


@dataclass(frozen=True)
class GivenPreprocess:
    """Preprocessing given by the user for a model file that does not record it (one made elsewhere: Keras, a
    plain torch.onnx.export), from `--preprocess FILE.yaml` and flags. `resolve` checks it against the file."""

    resolution: int | None = None
    resize: str = SHORTER_SIDE
    crop_ratio: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    input_range: tuple[float, float] = (0.0, 1.0)
    layout: str | None = None
    labels: str | None = None  # the labels file's path
    origin: str = "--preprocess"
    packed_labels: tuple[str, ...] | None = None  # labels read from the model file itself (TFLite metadata)

    @classmethod
    def parse(cls, record: dict[str, Any], origin: str, base: Any = None) -> GivenPreprocess:
        """Validate a user's keys (a YAML file's mapping, or flags); `base` is the folder relative label paths
        are read from. One EdgekitError naming the key and the fix for anything unknown or impossible."""
        from pathlib import Path

        from edgekit.core.errors import EdgekitError

        def fail(key: str, problem: str) -> EdgekitError:
            return EdgekitError(f"{origin}: {key} {problem}: {key} is {GIVEN_KEYS[key]}.")

        unknown = sorted(set(record) - set(GIVEN_KEYS))
        if unknown:
            raise EdgekitError(f"{origin}: unknown key {unknown[0]!r}: the keys are {', '.join(GIVEN_KEYS)} "
                               "(docs/eval.md, Any model file).")
        fields: dict[str, Any] = {"origin": origin}
        for key, value in record.items():
            if value is None:
                continue
            if key == "resolution":
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8192:
                    raise fail(key, f"{value!r} is not a whole number of pixels from 1 to 8192")
                fields[key] = value
            elif key == "resize":
                if value not in _RESIZE_RULES:
                    raise fail(key, f"{value!r} is not a rule edgekit knows")
                fields[key] = _RESIZE_RULES[value]
            elif key == "crop_ratio":
                ratio = _number(value)
                if ratio is None or not 0 < ratio <= 1:
                    raise fail(key, f"{value!r} is not a number in (0, 1]")
                fields[key] = ratio
            elif key in ("mean", "std", "input_range"):
                values = _numbers(value)
                if values is None or not values or not all(math.isfinite(v) for v in values):
                    raise fail(key, f"{value!r} is not a list of finite numbers")
                if key == "std" and not all(v > 0 for v in values):
                    raise fail(key, f"{value!r} has a value that is not above 0")
                if key == "input_range" and (len(values) != 2 or not values[0] < values[1]):
                    raise fail(key, f"{value!r} is not two numbers, low then high")
                fields[key] = values
            elif key == "layout":
                if value not in ("nchw", "nhwc"):
                    raise fail(key, f"{value!r} is neither nchw nor nhwc")
                fields[key] = value
            elif key == "labels":
                path = Path(str(value)).expanduser()
                if base is not None and not path.is_absolute():
                    path = Path(base) / path
                if not path.is_file():
                    raise fail(key, f"file {path} does not exist")
                fields[key] = str(path)
        return cls(**fields)

    @classmethod
    def load(cls, path: Any, flags: dict[str, Any] | None = None) -> GivenPreprocess:
        """`--preprocess FILE.yaml` (None: no file), with flags given beside it taking precedence."""
        from pathlib import Path

        record: dict[str, Any] = {}
        origin = "preprocessing flags"
        base = None
        if path is not None:
            from edgekit.core.safe_yaml import read_yaml_mapping

            path = Path(path)
            record = read_yaml_mapping(path, "preprocessing file", "give keys such as resolution: 224, mean: "
                                       "[0.485, 0.456, 0.406] (docs/eval.md, Any model file).")
            origin, base = str(path), path.parent
        given = cls.parse(record, origin, base)
        extra = {k: v for k, v in (flags or {}).items() if v is not None}
        if not extra:
            return given
        from dataclasses import replace

        from_flags = cls.parse(extra, "preprocessing flags")
        return replace(given, **{k: getattr(from_flags, k) for k in extra})

    @classmethod
    def of(cls, value: Any) -> GivenPreprocess | None:
        """The API's `preprocess=`: a YAML file's path, a dict of its keys, a GivenPreprocess, or None."""
        from pathlib import Path

        if value is None or isinstance(value, GivenPreprocess):
            return value
        return cls.load(None, value) if isinstance(value, dict) else cls.load(Path(value))

    def resolve(self, file: Any, channels: int, resolution: int) -> Preprocess:
        """The Preprocess for a file that takes `channels` x `resolution` px: refused when they disagree."""
        from edgekit.core.errors import EdgekitError

        if self.resolution is not None and self.resolution != resolution:
            raise EdgekitError(f"{self.origin}: resolution {self.resolution} but {file} takes {resolution} px "
                               f"inputs: give resolution {resolution}, or the file made for {self.resolution} px.")
        lo, hi = self.input_range
        per_channel = []
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise EdgekitError(f"{self.origin}: {key} has {len(values)} values but {file} takes {channels} "
                                   f"channel(s): give one value, or {channels}.")
            per_channel.append(values * channels if len(values) == 1 else values)
        mean, std = per_channel
        return Preprocess(
            resolution=resolution, channels=channels, resize=self.resize, crop_ratio=self.crop_ratio,
            layout=self.layout or "nchw", range=(0.0, 255.0),
            # the model takes lo + (hi - lo) * pixel / 255, then (x - mean) / std: in the units of pixel / 255
            mean=tuple((m - lo) / (hi - lo) for m in mean), std=tuple(s / (hi - lo) for s in std))

    def classes(self) -> list[str] | None:
        """The labels file's class names, line k naming output k; None without one."""
        if self.packed_labels is not None:
            return list(self.packed_labels)
        if self.labels is None:
            return None
        from pathlib import Path

        from edgekit.core.errors import EdgekitError

        try:
            names = [line.strip() for line in Path(self.labels).read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgekitError(f"labels file {self.labels} is unreadable ({exc}): give a UTF-8 text file.") from None
        while names and not names[-1]:
            names.pop()
        if not names or any(not n for n in names):
            raise EdgekitError(f"labels file {self.labels} has an empty line among its names: give one class name "
                               "per line, line k naming output k.")
        return names


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _numbers(value: Any) -> tuple[float, ...] | None:
    """A list of numbers from YAML ([0.5, 0.5]), one number, or a flag's "0.485,0.456,0.406"."""
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    elif not isinstance(value, list | tuple):
        value = [value]
    numbers = [_number(v) for v in value]
    return None if any(n is None for n in numbers) else tuple(n for n in numbers if n is not None)
