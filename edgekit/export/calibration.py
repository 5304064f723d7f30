"""The images an INT8 export calibrates on: the training split of --calib (or the checkpoint's own data), checked
against the model, and the seeded sample of it that the observers see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgekit.core.errors import EdgekitError
from edgekit.data import DataSource, ImageSet, Preprocess, load_split, preprocess_for, require_same_classes
from edgekit.models import ModelSpec


@dataclass
class CalibrationSet:
    images: np.ndarray  # preprocessed float32 NCHW, what the model sees
    source: dict[str, Any]


def calibration_data(calib: str | None, trained: Any, spec: ModelSpec, preprocess: Preprocess | None
                     ) -> tuple[ImageSet | None, Preprocess | None]:
    """The training split of `calib` (default: the checkpoint's own data) to calibrate on, and the preprocessing
    to apply to it; (None, preprocess) when there is neither: calibration then falls back to noise."""
    if calib is None and trained is None:
        return None, preprocess
    source = DataSource.parse(calib if calib is not None else trained.data)
    if preprocess is None:
        preprocess = trained.preprocess if trained else preprocess_for(source, spec.resolution, spec.in_channels)
    data = load_split(source, "train", spec.resolution, spec.in_channels)
    require_same_classes("the model", trained.classes if trained else spec.num_classes, data,
                         "calibrate on the data the model was trained for")
    return data, preprocess


def calibration_set(spec: ModelSpec, size: int, data: ImageSet | None, preprocess: Preprocess | None,
                    seed: int = 0) -> CalibrationSet:
    """`size` images drawn (seeded) from `data`, preprocessed; random normal images only when there is no data.
    `size` comes from Int8Options, which has checked it."""
    if data is None or preprocess is None:
        rng = np.random.default_rng(seed)
        images = rng.standard_normal((size, *spec.input_shape)).astype(np.float32)
        return CalibrationSet(images, {"data": None, "images": size, "note": "standard-normal noise: plumbing only"})
    if len(data) == 0:
        raise EdgekitError(f"{data.name} has no images to calibrate on: give --calib with real data.")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:size]
    images = preprocess(data.images[order.sort().values])
    return CalibrationSet(images, {"data": data.source or data.name, "split": data.name, "images": len(images),
                                   "seed": seed})
