"""What a recipe resolves to before any training: the spec with the data's class count, both splits and the
preprocessing, and how an image folder is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from edgekit.core.errors import EdgekitError
from edgekit.data import DataSource, ImageSet, Preprocess, load_split, preprocess_for
from edgekit.folder_images import FolderImages
from edgekit.models import resolve_spec
from edgekit.models._registry import ModelSpec
from edgekit.recipe import Recipe


class Batches(Dataset):
    """An ImageSet as a map-style dataset that DataLoader fetches a whole batch at a time."""

    def __init__(self, data: ImageSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.images[i], self.data.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.data.images[idx], self.data.labels[idx]


@dataclass
class Prepared:
    """What a recipe resolves to before any training: the spec, data and preprocessing."""

    spec: ModelSpec
    source: DataSource
    preprocess: Preprocess
    train: ImageSet
    val: ImageSet


def prepare_training(recipe: Recipe, data_override: str | None = None) -> Prepared:
    """Resolve a recipe's data and model: load both splits and fix the spec's class count to the data's.

    An image folder's splits are decoded into memory when they fit, else streamed (`ImageSet.streamed`)."""
    source = DataSource.parse(data_override or recipe.data.source)
    source = DataSource(source.kind, source.path,
                        tuple(recipe.data.mean) if recipe.data.mean else None,
                        tuple(recipe.data.std) if recipe.data.std else None, recipe.data.hflip,
                        {"crop_ratio": recipe.data.crop_ratio, "loader": recipe.data.loader})
    m = recipe.model
    probe = resolve_spec(m.name, width=m.width, resolution=m.resolution, num_classes=m.num_classes or 10,
                         in_channels=m.in_channels, **m.options)
    train_set = load_split(source, "train", probe.resolution, probe.in_channels)
    val_set = load_split(source, "val", probe.resolution, probe.in_channels)
    for split in (train_set, val_set):
        if isinstance(split.images, FolderImages) and recipe.data.workers is not None:
            split.images.workers = recipe.data.workers
    classes = len(train_set.classes)
    if m.num_classes is not None and m.num_classes != classes:
        raise EdgekitError(
            f"{recipe.source}: model.num_classes is {m.num_classes} but {source.label} has {classes} classes: "
            "set num_classes to match the data (or leave it out)."
        )
    spec = resolve_spec(m.name, width=m.width, resolution=probe.resolution, num_classes=classes,
                        in_channels=m.in_channels, **m.options)
    return Prepared(spec, source, preprocess_for(source, spec.resolution, spec.in_channels), train_set, val_set)


def loader_line(prep: Prepared) -> str:
    """How an image folder's splits are read, as the run says it: in memory, or streamed by how many workers."""
    parts = []
    for name, split in (("train", prep.train), ("val", prep.val)):
        if isinstance(split.images, FolderImages):
            how = "random-resized-crop + flip" if name == "train" else "resize + center crop"
            parts.append(f"{name} streamed from disk by {split.images.workers} worker(s) ({how})")
        else:
            parts.append(f"{name} decoded into memory")
    pre = prep.preprocess
    return (f"{prep.source.label}: {'; '.join(parts)}; evaluation resizes the shorter side to "
            f"{round(pre.resolution / pre.crop_ratio)} px and center-crops {pre.resolution} px "
            f"(crop ratio {pre.crop_ratio:g})")
