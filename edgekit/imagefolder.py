"""Image folders read the way torchvision reads them: files listed once, decoded with Pillow, ImageNet's transforms.

Evaluation (`Transform(train=False)`): resize the shorter side to round(size / crop_ratio), then center-crop
size x size (crop_ratio 0.875: 256 -> 224). Training (`train=True`): RandomResizedCrop (scale 0.08-1, aspect ratio
3/4-4/3) to size x size and a random mirror. Both give uint8 (C, size, size); normalisation stays in
`edgekit.data.Preprocess`, which records the crop ratio and resize rule so every consumer prepares images alike.

A split whose decoded images fit `MEMORY_BUDGET` is decoded once into memory (a training split below
`STREAM_TRAIN_FROM` px, which trains with padded crops as the built-in datasets do); a larger one is streamed:
`FolderImages` stands in for the image tensor, decodes what is indexed, and `loader()` decodes batches in
DataLoader worker processes.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.errors import EdgekitError
from edgekit.preprocess import SHORTER_SIDE, SQUASH, Preprocess

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
STREAM_TRAIN_FROM = 128  # px: a training split this large streams (random-resized crops of the whole photo)
MEMORY_BUDGET = 1 << 30  # decoded uint8 bytes one split may hold in memory before it is streamed instead
DEFAULT_CROP_RATIO = 0.875  # torchvision's ImageNet evaluation: resize to 256, center-crop 224
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)


def _visible_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def list_split(root: Path, split: str) -> tuple[list[Path], list[int], list[str]]:
    """The image files of ROOT/SPLIT/CLASS/..., their labels and the class names (the train split's classes for
    val, so labels agree across splits)."""
    if not root.is_dir():
        raise EdgekitError(f"image folder {root} does not exist: give a folder with train/ and val/ inside.")
    folder = root / split
    if not folder.is_dir():
        raise EdgekitError(f"{root} has no {split}/ folder: lay it out as {root}/{split}/CLASS_NAME/image.jpg.")
    classes = _visible_dirs(folder)
    if split == "val" and (root / "train").is_dir():
        classes = _visible_dirs(root / "train")
    if not classes:
        raise EdgekitError(f"{folder} has no class folders: put the images in one sub-folder per class "
                           f"({folder}/CLASS_NAME/image.jpg).")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = _images_under(folder / name) if (folder / name).is_dir() else []
        files += found
        labels += [label] * len(found)
    if not files:
        raise EdgekitError(f"{folder} holds no images: put JPEG/PNG files in one sub-folder per class.")
    return files, labels, classes


def list_images(root: Path) -> list[Path]:
    """Every image file under `root`, in any layout (calibration needs no labels)."""
    if not root.is_dir():
        raise EdgekitError(f"{root} is not a folder: give a folder of images (any layout) or imagefolder:PATH.")
    files = _images_under(root)
    if not files:
        raise EdgekitError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): give a folder of photos.")
    return files


def readable(files: Sequence[Path]) -> list[bool]:
    """Whether Pillow recognises each file's header (cheap: no pixels are decoded)."""
    from PIL import Image

    ok = []
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as img:
                    ok.append(img.size[0] > 0 and img.size[1] > 0)
        except Exception:  # noqa: BLE001 (Pillow raises many types on damaged files)
            ok.append(False)
    return ok


@dataclass(frozen=True)
class Transform:
    """A file -> uint8 (channels, size, size) array: the evaluation transform, or the training one (`train`)."""

    size: int
    channels: int = 3
    crop_ratio: float = DEFAULT_CROP_RATIO
    resize: str = SHORTER_SIDE
    train: bool = False
    hflip: bool = True

    @classmethod
    def of(cls, preprocess: Preprocess, train: bool = False, hflip: bool = True) -> Transform:
        """How an image file becomes `preprocess`'s uint8 input (the training variant with `train`)."""
        return cls(preprocess.resolution, preprocess.channels, preprocess.crop_ratio, preprocess.resize, train, hflip)

    def __call__(self, path: Path, rng: np.random.Generator | None = None) -> np.ndarray:
        """Decode and transform into uint8 (C, H, W); OSError/ValueError (and Pillow's errors) when the file cannot
        be read."""
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                out = self._train(img, rng or np.random.default_rng()) if self.train else self._eval(img)
        array = np.asarray(out, dtype=np.uint8)
        if array.ndim == 2:
            array = array[..., None]
        return array.transpose(2, 0, 1).copy()  # writable and contiguous (torch.from_numpy warns on read-only)

    def _mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    def _eval(self, img: Any) -> Any:
        from PIL import Image

        img = img.convert(self._mode())
        w, h = img.size
        if self.resize == SQUASH:
            return img.resize((self.size, self.size), Image.Resampling.BILINEAR)
        short = round(self.size / self.crop_ratio)
        scale = short / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return img.crop((left, top, left + self.size, top + self.size))

    def _train(self, img: Any, rng: np.random.Generator) -> Any:
        from PIL import Image

        w, h = img.size
        left, top, cw, ch = random_resized_crop_box(w, h, rng)
        if img.format == "JPEG":  # let the decoder downscale by 2/4/8 while the crop keeps >= size pixels
            reduce = min(cw, ch) / self.size
            if reduce >= 2:
                img.draft(None, (math.ceil(w / reduce), math.ceil(h / reduce)))
                sx, sy = img.size[0] / w, img.size[1] / h
                left, top, cw, ch = left * sx, top * sy, cw * sx, ch * sy
        img = img.convert(self._mode())
        out = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
        if self.hflip and rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out


def random_resized_crop_box(w: int, h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (left, top, width, height), 10 tries then a center crop."""
    area = w * h
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*RRC_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1)), cw, ch
    in_ratio = w / h
    if in_ratio < RRC_RATIO[0]:
        cw, ch = w, round(w / RRC_RATIO[0])
    elif in_ratio > RRC_RATIO[1]:
        ch, cw = h, round(h * RRC_RATIO[1])
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def default_workers() -> int:
    """Decoding processes beside the training process: half the cores this process may use, 1 to 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // 2))


def decoded_bytes(count: int, channels: int, size: int) -> int:
    return count * channels * size * size
