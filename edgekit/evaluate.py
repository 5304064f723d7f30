"""Accuracy of any Runner on an ImageSet: top-1, top-5, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core.errors import EdgekitError
from edgekit.data import ImageSet, Preprocess
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
             progress: Callable[[int], None] | None = None) -> Evaluation:
    classes = len(data.classes)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    top5 = 0
    for images, labels in data.batches(batch_size):
        logits = runner.predict(preprocess(images))
        if logits.shape[-1] != classes:
            raise EdgekitError(
                f"the model has {logits.shape[-1]} outputs but {data.name} has {classes} classes: "
                "evaluate on the data the model was trained for."
            )
        labels_np = labels.numpy()
        np.add.at(confusion, (labels_np, logits.argmax(-1)), 1)
        k = min(5, classes)
        best = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
        top5 += int((best == labels_np[:, None]).any(-1).sum())
        if progress:
            progress(len(labels))
    return Evaluation(confusion, top5, list(data.classes))
