"""The one table of model file formats: for each, its name in manifests, its file suffix, the runtime that runs it,
the packages that provide that runtime on a device, where it ranks when edgekit picks the file to deploy, and its
behaviour: the function that exports a torch model to it, the runner class that runs a file, and the function that
describes a file (inputs, outputs, quantization, ops).

Everything in edgekit that maps a file to its runtime, exports a format, opens a file or names an INT8 twin asks
here. The behaviour is named as "module:attribute" and imported on first use, so this table stays at the bottom of
the layers (it imports nothing of edgekit's but core) while the converters and runtimes it points to sit above.

Adding a format: write its exporter, runner and inspector beside the others (exporting/converters.py,
runtime/runners.py, inspect.py, or a module of its own), add a row below, and teach the on-device harness
(runtime/harness.py, a standalone script) to load it; docs/formats.md says more.
The on-device harness keeps its own copy of the suffix-to-runtime map and packages (harness.SUFFIX_RUNTIME and
harness.RUNTIME_PACKAGES), held to this table by a test.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.core.optional import require_extra


@dataclass(frozen=True)
class Format:
    name: str  # "onnx", "tflite": the manifest's file keys (model_int8.* are "<name>_int8") and layout keys
    suffix: str  # ".onnx", ".tflite"
    runtime: str  # "onnxruntime", "tflite": what manifests, bench records and --runtime call the runtime
    packages: tuple[str, ...]  # the Python packages that provide the runtime, as the device probe names them
    deploy_rank: int  # the file edgekit deploys by default: the lowest rank present (INT8 before FP32)
    exporter: str  # (model, example, path, *, nhwc, dynamic_batch) -> None: write an FP32 file from torch
    runner: str  # (path, *, threads, layout) -> a Runner: load a file and run batches of inputs
    inspector: str  # (path) -> {"inputs", "outputs", "ops", ...}: describe a file, refusing a damaged one
    # (quantized, input_shape, path, *, int8_io, nhwc) -> Int8File: write the INT8 file from edgekit's
    # quantized graph (exporting/int8_files.py)
    int8_writer: str
    channels_last: bool = False  # whether `--nhwc` applies: the file can take channels-last input
    export_extra: str | None = None  # the distribution's extra the exporter needs (running the file needs none)
    label: str = ""  # how messages name the format ("TFLite")

    @property
    def int8_name(self) -> str:
        """The manifest's key for this format's INT8 file ("tflite_int8")."""
        return f"{self.name}_int8"

    def behaviour(self, what: str) -> Callable[..., Any]:
        """The exporter, runner, inspector or INT8 writer, imported on first use (a writer only where its
        converter is installed: else one line naming the extra)."""
        if what in ("exporter", "int8_writer"):
            self.require_exporter()
        module, _, attribute = getattr(self, what).partition(":")
        return getattr(importlib.import_module(module), attribute)

    def require_exporter(self) -> None:
        """Refuse, naming the extra to install, to export this format where its converter is not installed."""
        if self.export_extra:
            require_extra(self.export_extra, f"{self.label or self.name} export",
                          instead="leave the format out (--format onnx)")


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", "onnxruntime", ("onnxruntime",), deploy_rank=2,
           exporter="edgekit.exporting.converters:export_onnx", runner="edgekit.runtime.runners:OnnxRunner",
           inspector="edgekit.inspect:inspect_onnx", int8_writer="edgekit.exporting.int8_files:write_onnx_int8",
           label="ONNX"),
    Format("tflite", ".tflite", "tflite", ("ai-edge-litert", "tflite-runtime", "tensorflow"), deploy_rank=1,
           exporter="edgekit.exporting.converters:export_tflite", runner="edgekit.runtime.runners:TFLiteRunner",
           inspector="edgekit.inspect:inspect_tflite", int8_writer="edgekit.exporting.int8_files:write_tflite_int8",
           channels_last=True, export_extra="tflite", label="TFLite"),
)}
ONNX, TFLITE = FORMATS["onnx"], FORMATS["tflite"]
RUNTIMES = tuple(f.runtime for f in FORMATS.values())  # ("onnxruntime", "tflite")
SUFFIXES = tuple(f.suffix for f in FORMATS.values())  # (".onnx", ".tflite")
INT8_NAMES = tuple(f.int8_name for f in FORMATS.values())  # ("onnx_int8", "tflite_int8")
# Every file key of an artifact in the order edgekit picks the one to deploy: INT8 files first, each precision by
# its formats' deploy_rank ("tflite_int8", "onnx_int8", "tflite", "onnx").
DEPLOY_ORDER = (*(f.int8_name for f in sorted(FORMATS.values(), key=lambda f: f.deploy_rank)),
                *(f.name for f in sorted(FORMATS.values(), key=lambda f: f.deploy_rank)))


def base_format(key: str) -> Format:
    """The format of a manifest file key: "tflite_int8" and "tflite" are both TFLite."""
    return FORMATS[key.removesuffix("_int8")]


def _listed(items: Sequence[str], last: str = "or") -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def is_model_file(path: Path) -> bool:
    """Whether `path` has a model file suffix (any case); says nothing about its content."""
    return Path(path).suffix.lower() in SUFFIXES


def format_of(path: Path, also: Sequence[str] = ()) -> Format:
    """The format of a model file, by its suffix (any case). Any other suffix is one EdgekitError naming the ones
    edgekit runs, plus `also` (e.g. (".pt",) where the command takes a checkpoint too)."""
    suffix = Path(path).suffix.lower()
    for f in FORMATS.values():
        if suffix == f.suffix:
            return f
    raise EdgekitError(f"{path}: unknown model format {suffix or '(no suffix)'!r}: give a "
                       f"{_listed([*also, *SUFFIXES])} file.")


def runtime_for(path: Path) -> str:
    """The runtime ("onnxruntime", "tflite") that runs a model file, by its suffix."""
    return format_of(path).runtime


def for_runtime(runtime: str) -> Format:
    """The format a runtime name ("onnxruntime", "tflite") runs; an unknown name is an EdgekitError."""
    for f in FORMATS.values():
        if f.runtime == runtime:
            return f
    raise EdgekitError(f"unknown runtime {runtime!r}: use {_listed(RUNTIMES)}.")
