"""Quantization-aware fine-tuning: the post-training graph with fake-quantizers, trained a few epochs more.

The model is captured and BN-folded exactly as for post-training INT8, its fake-quantizers start from the
calibration images, and the folded weights are fine-tuned through them. The converted graph then goes through
the same ONNX/TFLite export, so QAT changes the numbers in the files, never their structure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.checkpoint import TrainedModel
from edgekit.core.errors import EdgekitError
from edgekit.data import DataSource, ImageSet, Preprocess, augment, default_hflip
from edgekit.options import DEFAULT_QAT_LR, check_qat_lr
from edgekit.quantization.annotator import QuantSettings
from edgekit.quantization.ptq import QuantizedModel, convert, prepare
from edgekit.training.optim import optimizer_step, warmup_cosine


@dataclass(frozen=True)
class QatSchedule:
    """How to fine-tune: SGD with momentum and a cosine decay from `lr`, the training run's augmentation."""

    epochs: int
    lr: float = DEFAULT_QAT_LR
    batch_size: int = 128
    label_smoothing: float = 0.0
    crop_padding: int = 0
    hflip: bool = False
    seed: int = 0

    def check(self) -> None:
        if self.epochs < 1:
            raise EdgekitError(f"--qat-epochs {self.epochs}: give a positive number of epochs, e.g. 1.")
        check_qat_lr(self.lr)


@dataclass
class QatRecord:
    """What the fine-tuning did, for the manifest."""

    schedule: QatSchedule
    images_per_epoch: int
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        s = self.schedule
        return {"epochs": s.epochs, "lr": s.lr, "optimizer": "sgd, momentum 0.9, cosine decay",
                "batch_size": s.batch_size, "label_smoothing": s.label_smoothing,
                "augment": {"crop_padding": s.crop_padding, "hflip": s.hflip}, "seed": s.seed,
                "images_per_epoch": self.images_per_epoch, "loss": [round(v, 5) for v in self.loss],
                "seconds": round(self.seconds, 1)}


def quantize_qat(
    model: nn.Module,
    calibration_images: np.ndarray,
    train: ImageSet,
    preprocess: Preprocess,
    settings: QuantSettings,
    schedule: QatSchedule,
    on_step: Callable[[int, int, int, float], None] | None = None,
) -> tuple[QuantizedModel, QatRecord]:
    """Fine-tune the fake-quantized model on `train`, then convert. `on_step(epoch, step, steps, loss)`
    reports progress."""
    schedule.check()
    if len(train) < schedule.batch_size:
        raise EdgekitError(
            f"{train.name} has {len(train)} images, fewer than one batch of {schedule.batch_size}: "
            "quantization-aware training needs the model's training data."
        )
    settings = replace(settings, qat=True)
    prepared = prepare(model, calibration_images, settings)
    params = [p for p in prepared.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=schedule.lr, momentum=0.9)
    criterion = nn.CrossEntropyLoss(label_smoothing=schedule.label_smoothing)
    steps = len(train) // schedule.batch_size  # whole batches only: a tiny last batch upsets the moving ranges
    # training's own schedule: cosine decay from schedule.lr over every step, without warm-up (the weights are
    # trained already)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(0, steps * schedule.epochs))
    record = QatRecord(schedule, steps * schedule.batch_size)
    start = time.perf_counter()
    for epoch in range(1, schedule.epochs + 1):
        generator = torch.Generator().manual_seed(schedule.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train), generator=generator)
        loss_sum = 0.0
        for step in range(steps):
            batch = order[step * schedule.batch_size:(step + 1) * schedule.batch_size]
            x = preprocess.tensor(augment(train.images[batch], generator, schedule.crop_padding, schedule.hflip))
            loss = criterion(prepared(x), train.labels[batch])
            optimizer_step(optimizer, loss, "quantization-aware loss", f"epoch {epoch}, step {step + 1}",
                           "lower --qat-lr.")
            scheduler.step()
            loss_sum += loss.item()
            if on_step is not None:
                on_step(epoch, step + 1, steps, loss_sum / (step + 1))
        record.loss.append(loss_sum / steps)
    record.seconds = time.perf_counter() - start
    return convert(prepared, settings, len(calibration_images)), record


def schedule_for(epochs: int, lr: float, spec: Any, source: DataSource, trained: TrainedModel | None) -> QatSchedule:
    """The fine-tuning schedule: the checkpoint's own augmentation and label smoothing where it has them."""
    augment_record = trained.augment if trained is not None else {}
    return QatSchedule(
        epochs=epochs, lr=lr,
        label_smoothing=trained.label_smoothing if trained is not None else 0.0,
        crop_padding=int(augment_record.get("crop_padding", spec.resolution // 8)),
        hflip=bool(augment_record.get("hflip", default_hflip(source))),
    )
