"""Test and tool helpers: image folders built from real images that installed packages ship (never noise).

- `fashion_mnist_folder`: Fashion-MNIST written as PNG files at 224 px (or any size), ROOT/{train,val}/CLASS/N.png.
- `photo_folder`: scikit-image's and scikit-learn's sample photos and random crops of them, in nested folders of
  any layout (what a user's "folder of photos" for calibration looks like), as JPEG and PNG.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tools.imagenet_samples import random_crops, sample_photos


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def fashion_mnist_folder(root: Path, train_per_class: int, val_per_class: int, size: int = 224,
                         classes: Sequence[str] | None = None, seed: int = 0) -> Path:
    """ROOT/train/CLASS/*.png and ROOT/val/CLASS/*.png: Fashion-MNIST images (train from its training split, val
    from its test split, seeded picks) upscaled bilinearly to `size` px. `classes` picks some of the ten by name.
    Returns ROOT."""
    from edgekit.data import DataSource, load_split

    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        data = load_split(DataSource.parse("fashion-mnist"), split, 28, 1)
        wanted = list(classes) if classes is not None else list(data.classes)
        for name in wanted:
            label = data.classes.index(name)
            indices = np.flatnonzero(data.labels.numpy() == label)
            picked = np.sort(rng.choice(indices, size=min(per_class, len(indices)), replace=False))
            folder = root / split / _slug(name)
            folder.mkdir(parents=True, exist_ok=True)
            for index in picked:
                image = Image.fromarray(data.images[int(index), 0].numpy(), mode="L")
                image.resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{index}.png")
    return root


def photo_folder(root: Path, crops_per_photo: int = 3, seed: int = 0, crop_suffix: str = ".png") -> Path:
    """Every sample photo whole and `crops_per_photo` random crops of it, written under ROOT in a nested, unlabelled
    layout (ROOT/PHOTO.jpg, ROOT/crops/PHOTO/K.png; `crop_suffix` ".jpg" writes the crops as JPEG). Returns ROOT."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, photo in sample_photos().items():
        Image.fromarray(np.ascontiguousarray(photo)).save(root / f"{name}.jpg", quality=92)
        crops = root / "crops" / name
        crops.mkdir(parents=True, exist_ok=True)
        for k, crop in enumerate(random_crops(photo, crops_per_photo, rng)):
            Image.fromarray(np.ascontiguousarray(crop)).save(crops / f"{k}{crop_suffix}", quality=92)
    return root
