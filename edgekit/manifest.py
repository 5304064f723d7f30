"""An artifact's manifest.json as a typed record: the one module that reads, validates and writes it.

The file itself is unchanged (manifest_version 1): `Manifest.from_dict` reads what any edgekit of this version
wrote and refuses a damaged or hand-edited one with the fix; `to_dict` writes it back, keeping sections it does
not know. Sections that describe rather than drive (parity, ops, the INT8 report, timings, tool versions) stay
plain JSON objects: readers show them, nothing branches on their keys.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgekit.core.errors import EdgekitError, first_line
from edgekit.core.files import sha256_file, waiting_lock, write_json_atomic
from edgekit.models import ModelSpec, spec_from_record
from edgekit.runtime.formats import format_of

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
REEXPORT = "export the model again"


@dataclass(frozen=True)
class FileRecord:
    """One file of the artifact: its name in the directory, its size and its sha256."""

    file: str
    bytes: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> FileRecord:
        return cls(path.name, path.stat().st_size, sha256_file(path))

    @classmethod
    def from_dict(cls, entry: Any, where: str) -> FileRecord:
        name = entry.get("file") if isinstance(entry, dict) else None
        if not (isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")
                and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)):
            raise EdgekitError(f"{where} lists a file record {entry!r} that is not a plain file name with bytes and "
                               f"sha256 (a manifest never points outside its directory): {REEXPORT}.")
        return cls(name, entry["bytes"], entry["sha256"])

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class InputRecord:
    """What each file takes and how to make it from an image."""

    layout: dict[str, str]  # format name ("onnx", "tflite") -> "nchw" or "nhwc"
    shape_nchw: list[int]
    dtype: str = "float32"
    dynamic_batch: dict[str, bool] = field(default_factory=dict)
    preprocess: dict[str, Any] | None = None  # a Preprocess record: `preprocessing()` gives the object
    data: str | None = None  # the dataset it was evaluated and calibrated on
    classes: list[str] | None = None

    @classmethod
    def from_dict(cls, record: Any, where: str) -> InputRecord:
        if not isinstance(record, dict):
            raise EdgekitError(f"{where} lacks its files or input section: {REEXPORT}.")
        made = cls(**{"layout": {}, "shape_nchw": [],
                      **{f.name: record[f.name] for f in fields(cls) if f.name in record}})
        if made.preprocess is not None:
            try:
                made.preprocessing()
            except (KeyError, TypeError, ValueError) as exc:
                raise EdgekitError(f"{where} records a damaged preprocessing ({exc}): {REEXPORT}.") from None
        return made

    def preprocessing(self) -> Any:
        """The recorded edgekit.preprocess.Preprocess, or None for a file exported without one."""
        from edgekit.preprocess import Preprocess

        return None if self.preprocess is None else Preprocess.from_dict(self.preprocess)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Manifest:
    """What an export built: the model, its input, its files, and what export, bench, check and run recorded."""

    spec: ModelSpec
    input: InputRecord
    files: dict[str, FileRecord]  # format key ("onnx", "tflite_int8") -> file
    created: str = ""
    source: dict[str, Any] | None = None  # the checkpoint or weights it came from
    complexity: dict[str, int] = field(default_factory=dict)  # params, macs
    parity: dict[str, Any] = field(default_factory=dict)
    ops: dict[str, Any] = field(default_factory=dict)  # per format: histogram, unexpected, warnings
    accuracy: dict[str, Any] | None = None  # data, images, top1 per runtime ("torch", "onnx", "tflite")
    int8: dict[str, Any] | None = None
    export: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    bench: list[dict[str, Any]] = field(default_factory=list)  # appended by `edgekit bench`
    check: dict[str, Any] | None = None  # the last `edgekit check`
    run: dict[str, Any] | None = None  # what `edgekit run` asked of the export
    other: dict[str, Any] = field(default_factory=dict)  # sections this version does not know, kept as they were

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST) -> Manifest:
        if not isinstance(data, dict) or data.get("manifest_version") != MANIFEST_VERSION:
            raise EdgekitError(f"{where} is not an edgekit v{MANIFEST_VERSION} manifest: {REEXPORT}.")
        spec = spec_from_record(data.get("spec"), where, REEXPORT)
        files = data.get("files")
        if not isinstance(files, dict):
            raise EdgekitError(f"{where} lacks its files or input section: {REEXPORT}.")
        known = {f.name for f in fields(cls)} - {"other"}
        return cls(
            spec=spec,
            input=InputRecord.from_dict(data.get("input"), where),
            files={key: FileRecord.from_dict(entry, where) for key, entry in files.items()},
            **{name: data[name] for name in known - {"spec", "input", "files"} if data.get(name) is not None},
            other={k: v for k, v in data.items() if k not in known and k != "manifest_version"},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"manifest_version": MANIFEST_VERSION}
        for name in _ORDER:
            value = getattr(self, name)
            if name in ("bench", "check", "run") and not value:
                continue  # written by later verbs: absent until they run
            out[name] = value.to_dict() if name in ("spec", "input") else (
                {key: record.to_dict() for key, record in value.items()} if name == "files" else value)
        return {**out, **self.other}

    def format_of_file(self) -> dict[str, str]:
        """File name -> its format key."""
        return {record.file: key for key, record in self.files.items()}

    def __getitem__(self, key: str) -> Any:
        """The manifest as the dict it used to be (edgekit 0.x): deprecated, read the attributes instead."""
        warnings.warn("indexing a Manifest like a dict is deprecated: read its attributes (manifest.int8, "
                      "manifest.files, ...) or manifest.to_dict(); dict access goes in the next release.",
                      DeprecationWarning, stacklevel=2)
        return self.to_dict()[key]


# the order sections are written in: what was built first, then what later verbs appended
_ORDER = ("created", "spec", "input", "source", "complexity", "files", "parity", "ops", "accuracy", "int8", "export",
          "tools", "run", "bench", "check")


def layout_of(path: Path, manifest: Manifest | None) -> str | None:
    """The layout ("nchw", "nhwc") the manifest records for a model file's format; None where it records none."""
    return None if manifest is None else manifest.input.layout.get(format_of(path).name)


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.is_file():
        raise EdgekitError(
            f"no {MANIFEST} in {directory}: it records the model's preprocessing; export with `edgekit export`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, or not JSON
        reason = "nested too deep" if isinstance(exc, RecursionError) else first_line(exc)
        raise EdgekitError(f"{path} is unreadable ({reason}): {REEXPORT}.") from None
    return Manifest.from_dict(data, str(path))


def write_manifest(directory: Path, manifest: Manifest) -> None:
    write_json_atomic(directory / MANIFEST, manifest.to_dict())


@contextlib.contextmanager
def manifest_lock(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of one manifest between processes (bench and check may run at once)."""
    with waiting_lock(directory / ".manifest.lock"):
        yield


def update_manifest(directory: Path, change: Callable[[Manifest], None]) -> Manifest:
    """Apply `change` to the manifest in place, under the lock, and write it back atomically."""
    with manifest_lock(directory):
        manifest = read_manifest(directory)
        change(manifest)
        write_manifest(directory, manifest)
    return manifest
