"""Accuracy of any Runner on an ImageSet: top-1, top-5, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.errors import EdgekitError
from edgekit.data import ImageSet, Preprocess
from edgekit.preprocess import GivenPreprocess
from edgekit.runtime.runners import Runner


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
    if classes is None or list(classes) == list(data.classes):
        batches = ((preprocess(images), labels.numpy()) for images, labels in data.batches(batch_size))
        return evaluate_batches(runner, batches, list(data.classes), data.name, progress)
    index = {name: i for i, name in enumerate(classes)}
    missing = [name for name in data.classes if name not in index]
    if missing:
        raise EdgekitError(f"{data.name} has class {missing[0]!r}, which the labels file does not name: name the "
                           "class folders as the labels file names the model's outputs.")
    to_output = np.array([index[name] for name in data.classes], dtype=np.int64)
    batches = ((preprocess(images), to_output[labels.numpy()]) for images, labels in data.batches(batch_size))
    return evaluate_batches(runner, batches, list(classes), data.name, progress)


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
    from edgekit.data import DataSource, load_split, require_same_classes
    from edgekit.runtime.open import open_model

    opened = open_model(path, threads=threads, given=given)
    label = data or opened.data
    if label is None:
        raise EdgekitError(f"{path} records no dataset: pass --data (imagefolder:PATH for your own images).")
    source = DataSource.parse(label)
    spec = opened.spec
    on_loading(source.label)
    dataset = load_split(source, "val", spec.resolution, spec.in_channels, preprocess=opened.preprocess)
    if not opened.by_name:
        require_same_classes(path, opened.classes or None, dataset, "evaluate on the data the model was trained for")
    try:
        result = evaluate(opened.runner, dataset, opened.preprocess, batch_size, progress=progress,
                          classes=opened.classes if opened.by_name else None)
    finally:
        close_runner(opened.runner)
    return result, opened.runner.name, source.label, dataset.name
