"""What an export is asked to do, with every default and rule in one place: the command line (`edgekit export
--int8 --calib-method mse ...`), a recipe (its `int8:` section is an Int8Options, read with file and line) and the
Python API (`edgekit.export(..., int8=Int8Options(...))` or the same keywords) all build these objects, and the
library takes them whole. A rule broken raises EdgekitError with one line naming the problem and its fix.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.runtime.formats import FORMATS

CALIBRATION_METHODS = ("minmax", "percentile", "mse")
DEFAULT_CALIBRATION_SIZE = 512
DEFAULT_QAT_LR = 1e-4  # fine-tuning from a trained checkpoint: far below training rates
DEFAULT_FORMATS = tuple(FORMATS)  # ("onnx", "tflite")


def check_qat_lr(lr: float) -> None:
    """The quantization-aware learning rate: above 0 and below 1 (Int8Options and the QAT schedule both ask)."""
    if not (math.isfinite(lr) and 0 < lr < 1):
        raise EdgekitError(f"--qat-lr {lr:g}: give a small positive rate below 1, e.g. {DEFAULT_QAT_LR:g}.")


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


@dataclass(frozen=True)
class Int8Options:
    """Full-integer INT8: post-training calibration, optionally equalized, quantization-aware (qat_epochs) or
    accuracy-aware (max_drop). Field names are the command line's (`--calib-size` is calib_size) and the recipe's."""

    calib_size: int = field(default=DEFAULT_CALIBRATION_SIZE, metadata=_range(1))
    calib_method: str = field(default="minmax", metadata={"choices": CALIBRATION_METHODS})
    per_tensor: bool = False  # one weight scale per tensor instead of per output channel
    equalize: bool = False  # cross-layer equalization before calibration
    int8_io: bool = False  # the INT8 TFLite file takes and returns int8 tensors
    max_drop: float | None = field(default=None, metadata=_range(0.0))  # pp; layers go back to float until it fits
    qat_epochs: int = field(default=0, metadata=_range(0))  # quantization-aware fine-tuning after calibration
    qat_lr: float = field(default=DEFAULT_QAT_LR, metadata=_range(0.0, 1.0))

    def __post_init__(self) -> None:
        if isinstance(self.calib_size, bool) or not isinstance(self.calib_size, int) or self.calib_size < 1:
            raise EdgekitError(f"--calib-size {self.calib_size} is not a positive number of images: give e.g. "
                               "--calib-size 512.")
        if self.calib_method not in CALIBRATION_METHODS:
            raise EdgekitError(f"unknown calibration method {self.calib_method!r}: choose from "
                               f"{', '.join(CALIBRATION_METHODS)}.")
        if self.max_drop is not None and self.qat_epochs:
            raise EdgekitError("--max-drop (int8.max_drop) and --qat-epochs (int8.qat_epochs) are two ways to the "
                               "same end: choose one.")
        if self.max_drop is not None and not self.max_drop >= 0:  # NaN too
            raise EdgekitError(f"--max-drop {self.max_drop:g}: give a budget >= 0 in percentage points.")
        if isinstance(self.qat_epochs, bool) or not isinstance(self.qat_epochs, int) or self.qat_epochs < 0:
            raise EdgekitError(f"--qat-epochs {self.qat_epochs}: give a whole number of epochs >= 0 "
                               "(0 = post-training only).")
        check_qat_lr(self.qat_lr)

    @property
    def accuracy_aware(self) -> bool:
        return self.max_drop is not None

    @property
    def quantization_aware(self) -> bool:
        return self.qat_epochs > 0

    def changed(self) -> list[str]:
        """The command-line flags of the fields that differ from their defaults, e.g. ['--per-tensor']."""
        return [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default]


def known_formats(formats: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The format names without repeats, each one edgekit exports (at least one); else one EdgekitError."""
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise EdgekitError(f"unknown format {', '.join(unknown) or '(none)'}: choose from {', '.join(FORMATS)}.")
    return formats


@dataclass(frozen=True)
class ExportOptions:
    """The files an export writes: formats, layout, batch axis, and INT8 (None: FP32 only)."""

    formats: tuple[str, ...] = DEFAULT_FORMATS
    nhwc: bool = False  # TFLite takes channels-last input
    dynamic_batch: bool = False  # the ONNX input has a dynamic batch axis
    int8: Int8Options | None = None

    def __post_init__(self) -> None:
        if isinstance(self.formats, str):
            object.__setattr__(self, "formats", tuple(f.strip() for f in self.formats.split(",") if f.strip()))
        object.__setattr__(self, "formats", known_formats(self.formats))
        for name in self.formats:
            FORMATS[name].require_exporter()
        if self.int8 is not None and not isinstance(self.int8, Int8Options):
            raise EdgekitError(f"int8= takes an Int8Options or True, not {type(self.int8).__name__}.")


def int8_from_flags(int8: bool | Int8Options, calib: object = None, **fields: Any) -> Int8Options | None:
    """Int8Options from `edgekit export`'s flags or the API's keywords: None without --int8, when no INT8 flag
    (and no calibration data) may be given either. `int8` may be an Int8Options already, then no field is given."""
    if isinstance(int8, Int8Options):
        if any(v != Int8Options.__dataclass_fields__[k].default for k, v in fields.items()):
            raise EdgekitError("give the INT8 settings either as int8=Int8Options(...) or as keywords, not both.")
        return int8
    options = Int8Options(**fields)
    if int8:
        return options
    # calib_size, calib_method and qat_lr have defaults the command line cannot tell from a choice: not refused
    given = [flag for flag in options.changed() if flag not in ("--calib-size", "--calib-method", "--qat-lr")]
    given = (["--calib (calibration=)"] if calib is not None else []) + given
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise EdgekitError(f"{', '.join(given)} {verb} to INT8 export: add --int8 (int8=True in Python).")
    return None
