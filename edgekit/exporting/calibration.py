"""The images an INT8 export calibrates on: the training split of --calib, a plain folder of images, or the
checkpoint's own data (labels unused, classes need not match), and the seeded sample of it that the observers see."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.core.errors import EdgekitError
from edgekit.data import BUILTIN, DataSource, ImageSet, Preprocess, load_images, load_split, preprocess_for
from edgekit.models import ModelSpec


@dataclass
class CalibrationSet:
    images: np.ndarray  # preprocessed float32 NCHW, what the model sees
    source: dict[str, Any]


def calibration_data(calib: str | None, trained: Any, spec: ModelSpec, preprocess: Preprocess | None
                     ) -> tuple[ImageSet | None, Preprocess | None]:
    """The images to calibrate on, and the preprocessing to apply to them; (None, preprocess) when there are
    none: calibration then falls back to noise.

    `calib` is a data source (its training split; an `imagefolder:DIR` without train/ is read as a plain folder),
    or a plain folder of images in any layout; default: the checkpoint's own data. Calibration needs
    representative inputs, not labels, so the classes need not match the model's; the images get the evaluation
    transform (resize, center crop) of the model's preprocessing."""
    if calib is None and trained is None:
        return None, preprocess
    text = calib if calib is not None else trained.data
    folder = _plain_folder(text)
    source = DataSource("imagefolder", folder) if folder is not None else DataSource.parse(text)
    if preprocess is None:
        preprocess = trained.preprocess if trained else preprocess_for(source, spec.resolution, spec.in_channels)
    if preprocess.resolution != spec.resolution or preprocess.channels != spec.in_channels:
        preprocess = replace(preprocess, resolution=spec.resolution, channels=spec.in_channels)
    if folder is not None:
        data = load_images(folder, preprocess)
        data.source = str(folder)
    else:
        data = load_split(source, "train", spec.resolution, spec.in_channels, preprocess=preprocess)
    return data, preprocess


def _plain_folder(text: str) -> Path | None:
    """`text` as a folder of images read without labels: a path that is a folder (and not a data source name),
    or imagefolder:DIR when DIR has no train/ split."""
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    if sep and kind == "imagefolder":
        path = Path(rest).expanduser()
        return path if rest and path.is_dir() and not (path / "train").is_dir() else None
    if kind in BUILTIN:
        return None
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if "/" in text:
        raise EdgekitError(f"--calib {text}: no such folder: give a folder of images (any layout), "
                           f"imagefolder:PATH or one of {', '.join(BUILTIN)}.")
    return None


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


def calibration_from_samples(samples: Any, size: int, input_shape: tuple[int, ...], seed: int = 0,
                             name: str | None = None) -> CalibrationSet:
    """Calibration images from Python objects, already preprocessed as the model takes them (float NCHW): a
    torch Dataset (`size` items drawn with a fixed seed), a DataLoader or any iterable (its first `size` images).
    An item is an image (C, H, W), a batch (N, C, H, W), or a tuple/list/dict whose first value is one (the label
    is not needed: calibration only needs representative inputs)."""
    what = name or type(samples).__name__
    if isinstance(samples, np.ndarray | torch.Tensor):
        samples = [samples]
    if isinstance(samples, torch.utils.data.Dataset) and hasattr(samples, "__len__") \
            and not isinstance(samples, torch.utils.data.IterableDataset):
        count = len(samples)  # type: ignore[arg-type]
        if count == 0:
            raise EdgekitError(f"the calibration dataset {what} is empty: give it at least one image.")
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size].sort().values
        items: Any = (samples[int(i)] for i in order)
        how: dict[str, Any] = {"seed": seed}
    else:
        try:
            items = iter(samples)
        except TypeError:
            raise EdgekitError(f"calibration data {what} is neither a data source name, a Dataset, a DataLoader "
                               "nor an iterable of image arrays: give one of those.") from None
        how = {"order": "first images"}
    chunks: list[np.ndarray] = []
    taken = 0
    for item in items:
        batch = _images_of(item, input_shape, what)
        chunks.append(batch[: size - taken])
        taken += len(chunks[-1])
        if taken >= size:
            break
    if not taken:
        raise EdgekitError(f"calibration data {what} yielded no images: give at least one.")
    images = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.isfinite(images).all():
        raise EdgekitError(f"calibration data {what} holds NaN or infinite values: give preprocessed images.")
    return CalibrationSet(np.ascontiguousarray(images), {"data": what, "images": taken, **how})


def _images_of(item: Any, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    """One item of calibration data as a float32 (N, C, H, W) batch, checked against the model's input."""
    if isinstance(item, dict):
        item = next(iter(item.values()), None)
    elif isinstance(item, tuple | list) and item and not isinstance(item[0], int | float):
        item = item[0]
    try:
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    except Exception:
        array = np.asarray(None)
    if array.ndim == len(input_shape):
        array = array[None]
    if array.ndim != len(input_shape) + 1 or tuple(array.shape[1:]) != tuple(input_shape) \
            or not np.issubdtype(array.dtype, np.floating):
        shown = "x".join(map(str, input_shape))
        got = (f"{array.dtype} " + "x".join(map(str, array.shape))) if array.dtype != object else type(item).__name__
        raise EdgekitError(f"calibration data {what} yields {got}, not images of {shown} (C, H, W) or batches of "
                           "them: give preprocessed float NCHW inputs, as the model takes them.")
    return array.astype(np.float32, copy=False)
