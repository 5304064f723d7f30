"""An image folder as a lazy uint8 tensor (`FolderImages`), decoded by DataLoader worker processes: the torch side
of edgekit.imagefolder, which lists, checks and transforms files without torch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from edgekit.imagefolder import Transform, default_workers


class FolderImages:
    """Images of a folder as a lazy uint8 (N, C, size, size) array: indexing decodes, nothing is held.

    `images[i]` is one (C, size, size) tensor and `images[slice or index tensor]` a stacked batch, so code written
    for an in-memory tensor (parity inputs, calibration samples) works unchanged; `select()` is the lazy subset.
    An image that cannot be decoded is counted in `failed` and comes back black (in batches: dropped)."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], transform: Transform, seed: int = 0,
                 workers: int | None = None) -> None:
        self.files = list(files)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.transform = transform
        self.seed = seed  # training transforms draw from (seed, index): any worker count gives the same images
        self.workers = default_workers() if workers is None else workers
        self.failed = 0

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        t = self.transform
        return (len(self.files), t.channels, t.size, t.size)

    dtype = torch.uint8

    def decode(self, index: int) -> torch.Tensor | None:
        rng = np.random.default_rng((self.seed, index)) if self.transform.train else None
        try:
            return torch.from_numpy(self.transform(self.files[index], rng))
        except Exception:  # noqa: BLE001 (Pillow raises many types on damaged files)
            return None

    def _positions(self, index: Any) -> list[int]:
        if isinstance(index, slice):
            return list(range(len(self)))[index]
        return [int(i) for i in torch.as_tensor(index).reshape(-1).tolist()]

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, int | np.integer) or (isinstance(index, torch.Tensor) and index.ndim == 0):
            return self._decoded(int(index))
        picked = self._positions(index)
        if not picked:
            return torch.zeros((0, *self.shape[1:]), dtype=torch.uint8)
        return torch.stack([self._decoded(i) for i in picked])

    def _decoded(self, index: int) -> torch.Tensor:
        image = self.decode(index)
        if image is None:
            self.failed += 1
            return torch.zeros(self.shape[1:], dtype=torch.uint8)
        return image

    def select(self, index: Any) -> FolderImages:
        picked = self._positions(index)
        return self.with_(files=[self.files[i] for i in picked], labels=self.labels[picked].tolist())

    def with_(self, files: Sequence[Path] | None = None, labels: Sequence[int] | None = None,
              **transform: Any) -> FolderImages:
        """A copy with other files/labels or transform fields (e.g. train=True, hflip=False)."""
        return FolderImages(self.files if files is None else files,
                            self.labels.tolist() if labels is None else labels,
                            replace(self.transform, **transform), self.seed, self.workers)

    def loader(self, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        """Batches of (uint8 images, labels) decoded in `workers` processes; unreadable images are dropped."""
        return DataLoader(_Decoded(self), batch_size=batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.workers, collate_fn=_collate, worker_init_fn=_one_thread,
                          persistent_workers=False, prefetch_factor=2 if self.workers else None)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, failed in self.loader(batch_size):
            self.failed += failed
            if len(labels):
                yield images, labels


class _Decoded(Dataset):
    def __init__(self, images: FolderImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int]:
        return self.images.decode(index), int(self.images.labels[index])


def _collate(items: list[tuple[torch.Tensor | None, int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    kept = [(image, label) for image, label in items if image is not None]
    if not kept:
        return torch.zeros((0, 1, 1, 1), dtype=torch.uint8), torch.zeros(0, dtype=torch.long), len(items)
    return (torch.stack([image for image, _ in kept]), torch.tensor([label for _, label in kept]),
            len(items) - len(kept))


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a decoding worker needs no intra-op threads; the trainer keeps the cores
