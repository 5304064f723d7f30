"""An INT8 export's plan: the user's Int8Options (edgekit/options.py, where their defaults and rules live) made
concrete for one model and its data. What needs the model or the data is checked here: an accuracy budget needs
evaluation data, quantization-aware fine-tuning needs training data and takes the checkpoint's own augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.data import DataSource
from edgekit.options import Int8Options
from edgekit.quantization.annotator import QuantSettings
from edgekit.quantization.qat import QatSchedule, schedule_for


@dataclass(frozen=True)
class Int8Plan:
    options: Int8Options
    qat: QatSchedule | None = None  # quantization-aware fine-tuning after calibration; None: post-training

    def settings(self) -> QuantSettings:
        o = self.options
        return QuantSettings(method=o.calib_method, per_channel=not o.per_tensor, equalize=o.equalize)


def require_data(accuracy_aware: bool, quantization_aware: bool, has_eval_data: bool, has_train_data: bool) -> None:
    """An accuracy budget is measured on evaluation data; quantization-aware fine-tuning trains on training data."""
    if accuracy_aware and not has_eval_data:
        raise EdgekitError("--max-drop takes a budget >= 0 in percentage points and evaluation data: add --eval "
                           "auto (a checkpoint's own data) or --eval DATA.")
    if quantization_aware and not has_train_data:
        raise EdgekitError("--qat-epochs fine-tunes on training data: give --weights CKPT from `edgekit train`, "
                           "or name the data with --calib.")


def plan_int8(options: Int8Options, *, spec: Any, trained: Any = None, qat_data: str | None = None,
              has_eval_data: bool = True) -> Int8Plan:
    """The plan for `options` on this model. `qat_data` is the training data quantization-aware fine-tuning uses
    (default: the checkpoint's own); `has_eval_data` says whether an accuracy-aware budget can be measured."""
    source = qat_data if qat_data is not None else (trained.data if trained is not None else None)
    require_data(options.accuracy_aware, options.quantization_aware, has_eval_data, source is not None)
    schedule = schedule_for(options.qat_epochs, options.qat_lr, spec, DataSource.parse(source), trained) \
        if options.quantization_aware else None
    return Int8Plan(options, schedule)


def int8_plan_from_recipe(recipe: Any, trained: Any = None) -> Int8Plan | None:
    """A recipe's int8 section (None when the recipe's export has int8: false). Without the trained checkpoint
    (before training) the rules are checked on the recipe's own model and data."""
    if not recipe.export.int8:
        return None
    from edgekit.models import resolve_spec

    m = recipe.model
    spec = trained.spec if trained is not None else resolve_spec(
        m.name, width=m.width, resolution=m.resolution, num_classes=m.num_classes or 10, in_channels=m.in_channels,
        **m.options)
    return plan_int8(recipe.int8, spec=spec, trained=trained, has_eval_data=True,
                     qat_data=None if trained is not None else recipe.data.source)
