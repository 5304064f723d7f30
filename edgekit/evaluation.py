"""Accuracy of any Runner on an ImageSet: top-1, top-5, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.core.errors import EdgekitError
from edgekit.core.optional import installed
from edgekit.preprocess import GivenPreprocess, Preprocess
from edgekit.runtime.runners import Runner

if TYPE_CHECKING:
    from edgekit.data import ImageSet
    from edgekit.datasource import DataSource


@dataclass
class Evaluation:
    confusion: np.ndarray  # [true, predicted] counts
    top5_correct: int
    classes: list[str]

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        return float(np.trace(self.confusion) / max(self.count, 1))

    @property
    def top5(self) -> float:
        return self.top5_correct / max(self.count, 1)

    @property
    def per_class(self) -> dict[str, float]:
        totals = self.confusion.sum(1)
        return {name: float(self.confusion[i, i] / totals[i]) if totals[i] else float("nan")
                for i, name in enumerate(self.classes)}

    def to_dict(self, confusion: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"images": self.count, "top1": self.top1, "top5": self.top5,
                               "per_class": self.per_class}
        if confusion:
            out["confusion"] = self.confusion.tolist()
        return out


def evaluate(runner: Runner, data: ImageSet, preprocess: Preprocess, batch_size: int = 256,
             progress: Callable[[int], None] | None = None, classes: list[str] | None = None) -> Evaluation:
    """Accuracy on `data`. `classes`: the model's output names (a labels file), when they are not the data's
    own: each of the data's classes is scored as the output of the same name."""
    batches = ((images.numpy(), labels.numpy()) for images, labels in data.batches(batch_size))
    return evaluate_labelled(runner, batches, list(data.classes), data.name, preprocess, progress, classes)


def evaluate_labelled(runner: Runner, batches: Iterable[tuple[np.ndarray, np.ndarray]], data_classes: list[str],
                      name: str, preprocess: Preprocess, progress: Callable[[int], None] | None = None,
                      classes: list[str] | None = None) -> Evaluation:
    """`evaluate` on (uint8 images, labels) batches of a dataset with `data_classes`."""
    if classes is None or list(classes) == data_classes:
        return evaluate_batches(runner, ((preprocess(x), y) for x, y in batches), data_classes, name, progress)
    index = {label: i for i, label in enumerate(classes)}
    missing = [label for label in data_classes if label not in index]
    if missing:
        raise EdgekitError(f"{name} has class {missing[0]!r}, which the labels file does not name: name the "
                           "class folders as the labels file names the model's outputs.")
    to_output = np.array([index[label] for label in data_classes], dtype=np.int64)
    return evaluate_batches(runner, ((preprocess(x), to_output[y]) for x, y in batches), list(classes), name,
                            progress)


def evaluate_batches(runner: Runner, batches: Iterable[tuple[np.ndarray, np.ndarray]], classes: list[str] | None,
                     name: str, progress: Callable[[int], None] | None = None) -> Evaluation:
    """Accuracy over (preprocessed inputs, int labels) batches; `classes` None: as many as the model outputs."""
    confusion: np.ndarray | None = None
    top5 = 0
    for inputs, labels_np in batches:
        logits = runner.predict(inputs)
        if classes is None:
            classes = [str(i) for i in range(logits.shape[-1])]
        if logits.shape[-1] != len(classes):
            raise EdgekitError(
                f"the model has {logits.shape[-1]} outputs but {name} has {len(classes)} classes: "
                "evaluate on the data the model was trained for."
            )
        if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= len(classes)):
            raise EdgekitError(f"{name} has labels outside 0..{len(classes) - 1}: give the model's class indices.")
        if confusion is None:
            confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
        np.add.at(confusion, (labels_np, logits.argmax(-1)), 1)
        k = min(5, len(classes))
        best = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
        top5 += int((best == labels_np[:, None]).any(-1).sum())
        if progress:
            progress(len(labels_np))
    classes = classes or []
    if confusion is None:
        confusion = np.zeros((len(classes), len(classes)), dtype=np.int64)
    return Evaluation(confusion, top5, list(classes))


def close_runner(runner: object) -> None:
    """Release what a runner holds for the process (a torch runner's thread count), where it holds anything."""
    close = getattr(runner, "close", None)
    if close is not None:
        close()


def evaluate_file(path: Path, data: str | None = None, batch_size: int = 256, threads: int | None = None,
                  progress: Callable[[int], None] | None = None,
                  on_loading: Callable[[str], None] = lambda label: None,
                  given: GivenPreprocess | None = None) -> tuple[Evaluation, str, str, str]:
    """`edgekit eval` and `edgekit.evaluate()`: a checkpoint, .onnx or .tflite file on the validation split of
    `data` (default: the data it was trained on), with the preprocessing recorded with it, or `given` (any model
    file, made elsewhere; its labels file maps the data's class folders to outputs by name). `threads` as
    runtime.open.open_model takes them (None: a checkpoint's torch threads follow the free cores; a file's 1).
    Returns the evaluation, the runner's name, the data's label and the split's name."""
    from edgekit.datasource import DataSource, require_same_classes
    from edgekit.runtime.open import open_model

    opened = open_model(path, threads=threads, given=given)
    label = data or opened.data
    if label is None:
        raise EdgekitError(f"{path} records no dataset: pass --data (imagefolder:PATH for your own images).")
    source = DataSource.parse(label)
    spec = opened.spec
    on_loading(source.label)
    if installed("torch"):
        from edgekit.data import load_split

        dataset = load_split(source, "val", spec.resolution, spec.in_channels, preprocess=opened.preprocess)
        batches: Iterable[tuple[np.ndarray, np.ndarray]] = (
            (images.numpy(), labels.numpy()) for images, labels in dataset.batches(batch_size))
        data_classes, name = list(dataset.classes), dataset.name
    else:  # an exported file judged where torch is not installed: an image folder, decoded here
        folder = FolderSplit.of(source, "val", replace(opened.preprocess, resolution=spec.resolution,
                                                       channels=spec.in_channels))
        batches, data_classes, name = folder.batches(batch_size), folder.classes, folder.name
    if not opened.by_name:
        require_same_classes(path, opened.classes or None, _Named(name, data_classes),
                             "evaluate on the data the model was trained for")
    try:
        result = evaluate_labelled(opened.runner, batches, data_classes, name, opened.preprocess, progress,
                                   classes=opened.classes if opened.by_name else None)
    finally:
        close_runner(opened.runner)
    return result, opened.runner.name, source.label, name


@dataclass
class _Named:
    name: str
    classes: list[str]


@dataclass
class FolderSplit:
    """One split of an image folder, decoded in this process with numpy and Pillow only: how an exported file is
    evaluated where torch is not installed (the same files, transform and pixels as edgekit.data's loader)."""

    name: str
    classes: list[str]
    files: list[Path]
    labels: list[int]
    preprocess: Preprocess

    @classmethod
    def of(cls, source: DataSource, split: str, preprocess: Preprocess) -> FolderSplit:
        from edgekit.imagefolder import list_split, readable

        if source.kind != "imagefolder" or source.path is None:
            raise EdgekitError(f"evaluating on {source.label} needs torch, which is not installed: give "
                               "--data imagefolder:PATH, or install torch (pip install torch==2.13.0).")
        files, labels, classes = list_split(source.path, split)
        kept = [(f, y) for f, y, ok in zip(files, labels, readable(files), strict=True) if ok]
        if not kept:
            raise EdgekitError(f"none of the {len(files)} images in {source.path}/{split} could be read: check "
                               "the files.")
        return cls(f"{source.path.name}/{split}", classes, [f for f, _ in kept], [y for _, y in kept], preprocess)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(uint8 images, labels) batches; an image that fails to decode is dropped, as the torch loader drops it."""
        from edgekit.imagefolder import Transform

        transform = Transform.of(self.preprocess)
        for start in range(0, len(self.files), batch_size):
            images, labels = [], []
            for path, label in zip(self.files[start:start + batch_size], self.labels[start:start + batch_size],
                                   strict=True):
                try:
                    images.append(transform(path))
                except Exception:  # noqa: BLE001 (Pillow raises many types on damaged files)
                    continue
                labels.append(label)
            if labels:
                yield np.stack(images), np.asarray(labels, dtype=np.int64)
