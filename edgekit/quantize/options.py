"""What an INT8 export is asked to do, and every rule about it, in one place: the command line (`edgekit export
--int8 ...`: int8_options_from_flags), a recipe's int8 section (`edgekit run`: int8_options_from_recipe) and the
Python API (Int8Options, int8_options) all build their options here. Each rule raises EdgekitError with one line
naming the problem and its fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.data import DataSource
from edgekit.models import resolve_spec
from edgekit.quantize.annotator import CALIBRATION_METHODS, QuantSettings
from edgekit.quantize.qat import QatSchedule, schedule_for
from edgekit.recipe import DEFAULT_QAT_LR

DEFAULT_CALIBRATION_SIZE = 512


@dataclass(frozen=True)
class Int8Options:
    calib_size: int = DEFAULT_CALIBRATION_SIZE
    method: str = "minmax"
    per_channel: bool = True
    int8_io: bool = False
    qat: QatSchedule | None = None  # quantization-aware fine-tuning after calibration; None: post-training
    max_drop: float | None = None  # accuracy-aware: layers go back to float until the top-1 drop fits (pp)
    equalize: bool = False  # cross-layer equalization before calibration

    def __post_init__(self) -> None:
        if self.calib_size < 1:
            raise EdgekitError(f"--calib-size {self.calib_size} is not a positive number of images: give e.g. "
                               "--calib-size 512.")
        if self.method not in CALIBRATION_METHODS:
            raise EdgekitError(f"unknown calibration method {self.method!r}: choose from "
                               f"{', '.join(CALIBRATION_METHODS)}.")
        require_one_way(self.max_drop is not None, self.qat is not None)
        if self.max_drop is not None and not self.max_drop >= 0:  # NaN too
            raise EdgekitError(f"--max-drop {self.max_drop:g}: give a budget >= 0 in percentage points.")
        if self.qat is not None:
            self.qat.check()

    def settings(self) -> QuantSettings:
        return QuantSettings(method=self.method, per_channel=self.per_channel, equalize=self.equalize)


def require_one_way(accuracy_aware: bool, quantization_aware: bool) -> None:
    """--max-drop (float fallback) and --qat-epochs (fine-tuning) both buy back accuracy: one at a time."""
    if accuracy_aware and quantization_aware:
        raise EdgekitError("--max-drop (int8.max_drop) and --qat-epochs (int8.qat_epochs) are two ways to the "
                           "same end: choose one.")


def require_data(accuracy_aware: bool, quantization_aware: bool, has_eval_data: bool, has_train_data: bool) -> None:
    """An accuracy budget is measured on evaluation data; quantization-aware fine-tuning trains on training data."""
    if accuracy_aware and not has_eval_data:
        raise EdgekitError("--max-drop takes a budget >= 0 in percentage points and evaluation data: add --eval "
                           "auto (a checkpoint's own data) or --eval DATA.")
    if quantization_aware and not has_train_data:
        raise EdgekitError("--qat-epochs fine-tunes on training data: give --weights CKPT from `edgekit train`, "
                           "or name the data with --calib.")


def int8_options(*, spec: Any, trained: Any = None, calib_size: int = DEFAULT_CALIBRATION_SIZE,
                 method: str = "minmax", per_tensor: bool = False, equalize: bool = False, int8_io: bool = False,
                 qat_epochs: int = 0, qat_lr: float = DEFAULT_QAT_LR, max_drop: float | None = None,
                 qat_data: str | None = None, has_eval_data: bool = True) -> Int8Options:
    """Int8Options with every rule applied. `qat_data` is the training data quantization-aware fine-tuning uses
    (default: the checkpoint's own); `has_eval_data` says whether an accuracy-aware budget can be measured."""
    require_one_way(max_drop is not None, bool(qat_epochs))
    if qat_epochs:
        QatSchedule(qat_epochs, qat_lr).check()  # a bad --qat-epochs or --qat-lr before the data it needs
    source = qat_data if qat_data is not None else (trained.data if trained is not None else None)
    require_data(max_drop is not None and max_drop >= 0, qat_epochs > 0, has_eval_data, source is not None)
    schedule = schedule_for(qat_epochs, qat_lr, spec, DataSource.parse(source), trained) if qat_epochs else None
    return Int8Options(calib_size=calib_size, method=method, per_channel=not per_tensor, equalize=equalize,
                       int8_io=int8_io, qat=schedule, max_drop=max_drop)


def int8_options_from_flags(int8: bool, *, spec: Any, trained: Any = None, calib: str | None = None,
                            eval_data: str | None = None, calib_size: int = DEFAULT_CALIBRATION_SIZE,
                            method: str = "minmax", per_tensor: bool = False, equalize: bool = False,
                            int8_io: bool = False, qat_epochs: int = 0, qat_lr: float = DEFAULT_QAT_LR,
                            max_drop: float | None = None) -> Int8Options | None:
    """`edgekit export`'s INT8 flags: None without --int8, when no INT8 flag may be given either. --calib names
    the data to calibrate (and fine-tune) on; --eval (`eval_data`) the data a --max-drop budget is measured on."""
    if not int8:
        given = {"--calib": calib is not None, "--per-tensor": per_tensor, "--equalize": equalize,
                 "--int8-io": int8_io, "--qat-epochs": bool(qat_epochs), "--max-drop": max_drop is not None}
        if any(given.values()):
            raise EdgekitError(f"{', '.join(flag for flag, on in given.items() if on)} apply to INT8 export: "
                               "add --int8.")
        return None
    return int8_options(spec=spec, trained=trained, calib_size=calib_size, method=method, per_tensor=per_tensor,
                        equalize=equalize, int8_io=int8_io, qat_epochs=qat_epochs, qat_lr=qat_lr,
                        max_drop=max_drop, qat_data=calib, has_eval_data=eval_data is not None)


def int8_options_from_recipe(recipe: Any, trained: Any = None) -> Int8Options | None:
    """A recipe's int8 section (None when the recipe's export has int8: false). Without the trained checkpoint
    (before training) the rules are checked on the recipe's own model and data."""
    if not recipe.export.int8:
        return None
    i, m = recipe.int8, recipe.model
    spec = trained.spec if trained is not None else resolve_spec(
        m.name, width=m.width, resolution=m.resolution, num_classes=m.num_classes or 10, in_channels=m.in_channels,
        **m.options)
    return int8_options(spec=spec, trained=trained, calib_size=i.calib_size, method=i.calib_method,
                        per_tensor=i.per_tensor, equalize=i.equalize, int8_io=i.int8_io, qat_epochs=i.qat_epochs,
                        qat_lr=i.qat_lr, max_drop=i.max_drop, has_eval_data=True,
                        qat_data=None if trained is not None else recipe.data.source)
