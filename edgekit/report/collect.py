"""One row per artifact, read from its manifest: nothing is re-measured here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.artifact import locate_artifact
from edgekit.benchmark.records import latest_p50
from edgekit.core.errors import EdgekitError
from edgekit.manifest import read_manifest
from edgekit.runtime.formats import DEPLOY_ORDER, INT8_NAMES

INT8_PREFERENCE = tuple(key for key in DEPLOY_ORDER if key in INT8_NAMES)  # ("tflite_int8", "onnx_int8")
FP32_PREFERENCE = ("torch", *(key for key in DEPLOY_ORDER if key not in INT8_NAMES))  # torch, tflite, onnx


@dataclass
class Row:
    directory: Path
    name: str
    family: str
    width: float
    resolution: int
    params: int
    macs: int
    bytes: dict[str, int]  # per format key of the manifest: onnx, tflite, onnx_int8, tflite_int8
    top1: dict[str, float]  # per runtime/format: torch, onnx, tflite, onnx_int8, tflite_int8
    accuracy_source: str  # "check (N images)" or "export (N images)"
    latency_ms: dict[str, float] = field(default_factory=dict)  # device/runtime/threads/file -> p50
    file_format: dict[str, str] = field(default_factory=dict)  # file name -> format key

    @property
    def label(self) -> str:
        return f"{self.name} {self.width:g}x {self.resolution}px"

    def accuracy(self, which: str) -> float | None:
        """Top-1 of the INT8 (`int8`) or FP32 (`fp32`) model, by the preference order above."""
        for fmt in INT8_PREFERENCE if which == "int8" else FP32_PREFERENCE:
            if fmt in self.top1:
                return self.top1[fmt]
        return None

    def size(self, which: str) -> int | None:
        """Bytes of the INT8 (`int8`) or FP32 (`fp32`) file edgekit deploys."""
        return next((self.bytes[k] for k in (INT8_PREFERENCE if which == "int8" else FP32_PREFERENCE)
                     if k in self.bytes), None)

    def latency(self, setting: str, kind: str) -> float | None:
        """p50 of the INT8 or FP32 file measured under `setting` (device/runtime/threads)."""
        for label, p50 in self.latency_ms.items():
            prefix, _, file = label.rpartition("/")
            if prefix == setting and self.file_format.get(file, "").endswith("_int8") == (kind == "int8"):
                return p50
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.directory), "name": self.name, "family": self.family, "width": self.width,
                "resolution": self.resolution, "params": self.params, "macs": self.macs, "bytes": self.bytes,
                "top1": self.top1, "accuracy_source": self.accuracy_source, "latency_ms": self.latency_ms}


def read_row(path: Path) -> Row:
    directory = locate_artifact(path)
    manifest = read_manifest(directory)
    spec, files = manifest.spec, manifest.files
    top1: dict[str, float] = {}
    check = manifest.check
    if check and check.get("top1"):
        top1.update(check["top1"])
        source = f"edgekit check ({check['images']:,} images)"
    else:
        accuracy = manifest.accuracy or {}
        top1.update(accuracy.get("top1") or {})
        int8 = ((manifest.int8 or {}).get("accuracy") or {}).get("top1") or {}
        top1.update({k: v for k, v in int8.items() if k in INT8_PREFERENCE})
        source = f"edgekit export --eval ({accuracy['images']:,} images)" if accuracy.get("images") else "none"
    return Row(
        directory, spec.name, spec.family, float(spec.width), int(spec.resolution),
        int(manifest.complexity["params"]), int(manifest.complexity["macs"]),
        {fmt: rec.bytes for fmt, rec in files.items()}, top1, source,
        {k.label: p50 for k, p50 in latest_p50(manifest).items()}, manifest.format_of_file(),
    )


def read_rows(paths: list[Path]) -> list[Row]:
    rows = [read_row(p) for p in paths]
    seen: dict[Path, Path] = {}
    for path, row in zip(paths, rows, strict=True):
        if row.directory in seen:
            raise EdgekitError(f"{path} and {seen[row.directory]} are the same artifact: name each once.")
        seen[row.directory] = path
    return rows


def settings(rows: list[Row]) -> list[str]:
    """Every device/runtime/threads some artifact was measured under, most common first, TFLite before ONNX."""
    counts = Counter(label.rpartition("/")[0] for row in rows for label in row.latency_ms)
    return sorted(counts, key=lambda s: (-counts[s], "/tflite/" not in s, s))
