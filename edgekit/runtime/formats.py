"""The one table of model file formats: the manifest's name for each, its file suffix, the runtime that runs it,
and the packages that provide that runtime on a device.

Everything in edgekit that maps a file to its runtime asks here. The on-device harness, which runs without edgekit,
keeps its own copy (harness.SUFFIX_RUNTIME and harness.RUNTIME_PACKAGES), held to this table by a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekit.core.errors import EdgekitError


@dataclass(frozen=True)
class Format:
    name: str  # "onnx", "tflite": the manifest's file keys (model_int8.* are "<name>_int8") and layout keys
    suffix: str  # ".onnx", ".tflite"
    runtime: str  # "onnxruntime", "tflite": what manifests, bench records and --runtime call the runtime
    packages: tuple[str, ...]  # the Python packages that provide the runtime, as the device probe names them


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", "onnxruntime", ("onnxruntime",)),
    Format("tflite", ".tflite", "tflite", ("ai-edge-litert", "tflite-runtime", "tensorflow")),
)}
ONNX, TFLITE = FORMATS["onnx"], FORMATS["tflite"]
RUNTIMES = tuple(f.runtime for f in FORMATS.values())  # ("onnxruntime", "tflite")
SUFFIXES = tuple(f.suffix for f in FORMATS.values())  # (".onnx", ".tflite")


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
