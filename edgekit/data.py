"""Datasets that work offline, and the one preprocessing every consumer applies.

A dataset is uint8 images at the model's resolution (`ImageSet`): held in memory, or, for an image folder too
large for memory, streamed from disk (`edgekit.folder_images.FolderImages`). `Preprocess` turns those into the
float32 NCHW batches that training, evaluation, calibration, parity checks and the device harness all see. Its
`to_dict()` record (resolution, statistics, and for image folders the resize rule and crop ratio) travels in
checkpoints and manifests, so a consumer never guesses how an artifact's inputs were prepared.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.core.errors import EdgekitError
from edgekit.datasource import BUILTIN as BUILTIN  # edgekit.data's names too
from edgekit.datasource import DataSource as DataSource
from edgekit.datasource import default_hflip as default_hflip
from edgekit.datasource import preprocess_for as preprocess_for
from edgekit.datasource import require_same_classes as require_same_classes
from edgekit.folder_images import FolderImages
from edgekit.imagefolder import (
    MEMORY_BUDGET,
    STREAM_TRAIN_FROM,
    Transform,
    decoded_bytes,
    list_images,
    list_split,
    readable,
)
from edgekit.preprocess import Preprocess

FASHION_MNIST_ENV = "EDGEKIT_FASHION_MNIST"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
LOADERS = ("auto", "memory", "stream")  # how an image folder is read: chosen by size, or forced


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) at the model's resolution, with int64 labels.

    `images` is a tensor, or a `FolderImages` that decodes from disk what is indexed and streams `batches()`
    through DataLoader workers (`streamed`); indexing either gives tensors."""

    name: str
    images: torch.Tensor | FolderImages
    labels: torch.Tensor
    classes: list[str]
    skipped: int = 0
    source: str = ""  # the DataSource label that loads it again, e.g. fashion-mnist or imagefolder:PATH

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def streamed(self) -> bool:
        return isinstance(self.images, FolderImages)

    def subset(self, indices: torch.Tensor | np.ndarray, name: str | None = None) -> ImageSet:
        idx = torch.as_tensor(indices, dtype=torch.long)
        images = self.images.select(idx) if isinstance(self.images, FolderImages) else self.images[idx]
        return ImageSet(name or self.name, images, self.labels[idx], self.classes, source=self.source)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.images, FolderImages):
            yield from self.images.batches(batch_size)
            return
        for start in range(0, len(self), batch_size):
            yield self.images[start:start + batch_size], self.labels[start:start + batch_size]


def load_split(source: DataSource, split: str, resolution: int, channels: int,
               progress: Callable[[int, int], None] | None = None,
               preprocess: Preprocess | dict[str, Any] | None = None) -> ImageSet:
    """One split ('train' or 'val') of `source`, as uint8 images at `resolution` with `channels` channels.

    Image-folder images get the evaluation transform of `preprocess` (default: `preprocess_for(source)`), the one
    a model's recorded preprocessing names (a `Preprocess` or its record); a folder too large for memory is
    streamed (`ImageSet.streamed`)."""
    if split not in ("train", "val"):
        raise ValueError(split)
    if source.kind == "imagefolder":
        if isinstance(preprocess, dict):  # a manifest's record, which opening the artifact has validated
            preprocess = Preprocess.from_dict(preprocess)
        pre = preprocess or preprocess_for(source, resolution, channels)
        transform = replace(Transform.of(pre), size=resolution, channels=channels)
        assert source.path is not None
        files, labels, classes = list_split(source.path, split)
        data = _folder_set(files, labels, classes, f"{source.path.name}/{split}", transform, source.loader,
                           progress, train=split == "train")
        data.source = source.label
        return data
    loader = {"fashion-mnist": _fashion_mnist, "digits": _digits, "synthetic": _synthetic}[source.kind]
    data = loader(source, split)
    data.images = fit_images(data.images, resolution, channels)
    data.source = source.label
    return data


def load_images(folder: Path, preprocess: Preprocess, loader: str = "auto") -> ImageSet:
    """Every image under `folder`, in any layout, without labels (calibration), with `preprocess`'s evaluation
    transform; labels are all 0 and there are no classes."""
    files = list_images(folder)
    return _folder_set(files, [0] * len(files), [], folder.name or str(folder), Transform.of(preprocess), loader,
                       None)


def _folder_set(files: list[Path], labels: list[int], classes: list[str], name: str, transform: Transform,
                loader: str, progress: Callable[[int, int], None] | None, train: bool = False) -> ImageSet:
    """The readable `files` as an ImageSet: decoded into memory when they fit MEMORY_BUDGET (or `loader` says
    memory), else streamed. Unreadable files are counted in `skipped`; all unreadable is an error.

    A training split at STREAM_TRAIN_FROM px or more streams whatever its size: its random-resized crops are cut
    from the whole photo, which an in-memory copy at the model's resolution no longer holds, and a small folder
    must not train with another augmentation than a big one."""
    if loader not in LOADERS:
        raise EdgekitError(f"data loader {loader!r}: use one of {', '.join(LOADERS)}.")
    folder = files[0].parent if files else Path(name)
    ok = readable(files)
    kept = [(f, label) for f, label, good in zip(files, labels, ok, strict=True) if good]
    skipped = len(files) - len(kept)
    if not kept:
        raise EdgekitError(f"none of the {len(files)} images in {name} ({folder}) could be read: check the files.")
    streamed = FolderImages([f for f, _ in kept], [label for _, label in kept], transform)
    big = decoded_bytes(len(kept), transform.channels, transform.size) > MEMORY_BUDGET
    if loader == "stream" or (loader == "auto" and (big or (train and transform.size >= STREAM_TRAIN_FROM))):
        return ImageSet(name, streamed, streamed.labels.clone(), classes, skipped=skipped)
    if len(kept) < 256:  # too few to pay for starting decoding processes
        streamed.workers = 0
    images, kept_labels, done = [], [], 0
    for batch, batch_labels, failed in streamed.loader(64):
        images.append(batch)
        kept_labels.append(batch_labels)
        skipped += failed
        done += len(batch_labels) + failed
        if progress:
            progress(done, len(kept))
    if not sum(len(y) for y in kept_labels):
        raise EdgekitError(f"none of the {len(files)} images in {name} ({folder}) could be read: check the files.")
    return ImageSet(name, torch.cat([b for b in images if len(b)]), torch.cat(kept_labels), classes, skipped=skipped)


def fit_images(images: torch.Tensor, resolution: int, channels: int) -> torch.Tensor:
    """uint8 (N, C, h, w) -> uint8 (N, channels, resolution, resolution): replicate gray, resize, round."""
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1:  # ITU-R 601 luma, as PIL's convert("L")
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            raise EdgekitError(f"cannot turn {images.shape[1]}-channel images into {channels} channels.")
    if images.shape[-2:] != (resolution, resolution):
        out = []
        for chunk in images.split(4096):
            resized = F.interpolate(chunk.float(), size=(resolution, resolution), mode="bilinear",
                                    align_corners=False, antialias=True)
            out.append(resized.round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(out)
    return images.contiguous()


def fashion_mnist_dir(source: DataSource | None = None) -> Path:
    if source is not None and source.path is not None:
        return source.path
    return Path(os.environ.get(FASHION_MNIST_ENV, FASHION_MNIST_DIR))


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, ValueError, EOFError, struct.error) as exc:
        raise EdgekitError(f"{path} is corrupt ({exc}): reinstall the dataset.") from None


def _fashion_mnist(source: DataSource, split: str) -> ImageSet:
    root = fashion_mnist_dir(source)
    prefix = "train" if split == "train" else "t10k"
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [root / f"{prefix}-{kind}.gz", root / f"{prefix}-{kind}"]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise EdgekitError(
                f"Fashion-MNIST not found in {root}: install it with `apt-get install dataset-fashion-mnist`, "
                f"or point {FASHION_MNIST_ENV} (or --data fashion-mnist:DIR) at a folder with the IDX files."
            )
        files.append(found)
    images, labels = _read_idx(files[0]), _read_idx(files[1])
    if len(images) != len(labels):
        raise EdgekitError(f"{root}: {len(images)} images but {len(labels)} labels: reinstall the dataset.")
    return ImageSet(f"fashion-mnist/{split}", torch.from_numpy(images.copy())[:, None],
                    torch.from_numpy(labels.astype(np.int64)), list(FASHION_MNIST_CLASSES))


def _digits(source: DataSource, split: str) -> ImageSet:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EdgekitError("the digits dataset needs scikit-learn: pip install scikit-learn.") from None
    bunch = load_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8))[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    train, val = seeded_split(len(labels), val_fraction=0.2, seed=0)
    idx = train if split == "train" else val
    return ImageSet(f"digits/{split}", images[idx], labels[idx], [str(d) for d in range(10)])


def _synthetic(source: DataSource, split: str) -> ImageSet:
    """Class-dependent blobs: learnable, for plumbing tests only. Never substituted for a real dataset."""
    n = 512 if split == "train" else 128
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.randint(0, 10, (n,), generator=g)
    ys, xs = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    cy, cx = 3 + (labels // 4) * 4, 3 + (labels % 4) * 4
    blob = torch.exp(-((ys - cy.view(-1, 1, 1)) ** 2 + (xs - cx.view(-1, 1, 1)) ** 2) / 6.0)
    noise = torch.rand(n, 16, 16, generator=g) * 0.3
    images = ((blob + noise).clamp(0, 1) * 255).round().to(torch.uint8)[:, None]
    return ImageSet(f"synthetic/{split}", images, labels, [f"class{i}" for i in range(10)])


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed train/val split of range(n) for datasets that ship without a validation set."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * val_fraction))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def augment(images: torch.Tensor, generator: torch.Generator, padding: int, hflip: bool) -> torch.Tensor:
    """Random crop after zero padding, and a random mirror: a batch at a time, driven by `generator`."""
    n, c, h, w = images.shape
    if padding:
        padded = F.pad(images, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
        rows = (dy + torch.arange(h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
        cols = (dx + torch.arange(w)).view(n, 1, 1, w).expand(n, c, h, w)
        images = padded.gather(2, rows).gather(3, cols)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)
    return images
