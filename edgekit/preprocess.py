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
