"""Artifact directories and their manifest.json: written whole under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.core.errors import EdgekitError, first_line
from edgekit.core.files import sha256_file, waiting_lock, write_json_atomic
from edgekit.models import ModelSpec, spec_from_record
from edgekit.runtime.formats import DEPLOY_ORDER

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def artifact_name(spec: ModelSpec) -> str:
    """`mobilenet_v2-w0.75-r224`: the default directory name for a spec's artifacts."""
    return f"{spec.name}-w{spec.width:g}-r{spec.resolution}"


def file_record(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise EdgekitError(
            f"no {MANIFEST} in {directory}: it records the model's preprocessing; export with `edgekit export`."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, or not JSON
        reason = "nested too deep" if isinstance(exc, RecursionError) else first_line(exc)
        raise EdgekitError(f"{path} is unreadable ({reason}): export the model again.") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise EdgekitError(f"{path} is not an edgekit v{MANIFEST_VERSION} manifest: export the model again.")
    _validate_manifest(path, manifest)
    return manifest


def _validate_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """The parts every reader relies on; a damaged or hand-edited manifest is refused here, not deep inside."""
    from edgekit.data import Preprocess

    spec_from_record(manifest.get("spec"), str(path), "export the model again")
    files, record = manifest.get("files"), manifest.get("input")
    if not isinstance(files, dict) or not isinstance(record, dict):
        raise EdgekitError(f"{path} lacks its files or input section: export the model again.")
    for entry in files.values():
        name = entry.get("file") if isinstance(entry, dict) else None
        if not (isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")
                and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)):
            raise EdgekitError(
                f"{path} lists a file record {entry!r} that is not a plain file name with bytes and sha256 "
                "(a manifest never points outside its directory): export the model again."
            )
    if record.get("preprocess") is not None:
        try:
            Preprocess.from_dict(record["preprocess"])
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgekitError(f"{path} records a damaged preprocessing ({exc}): export the model again.") from None


def locate_artifact(path: Path) -> Path:
    """An artifact directory, or a run directory of `edgekit run` (its artifact is `export/`)."""
    for candidate in (path, path / "export"):
        if (candidate / MANIFEST).is_file():
            return candidate
    if not path.exists():
        raise EdgekitError(f"{path} does not exist: give an artifact directory written by `edgekit export`.")
    raise EdgekitError(
        f"{path} holds no {MANIFEST}: give an artifact directory (`edgekit export`) or a run directory (`edgekit run`)."
    )


def changed_files(directory: Path, manifest: dict[str, Any], only: Path | None = None) -> list[tuple[str, str]]:
    """(file, what is wrong) for each listed file (or just `only`) that is missing or differs from its record."""
    problems = []
    for record in manifest.get("files", {}).values():
        if only is not None and record["file"] != only.name:
            continue
        path = directory / record["file"]
        if not path.is_file():
            problems.append((record["file"], "it is missing"))
        elif (size := path.stat().st_size) != record["bytes"]:
            problems.append((record["file"], f"{size:,} bytes, the manifest records {record['bytes']:,}"))
        elif sha256_file(path) != record["sha256"]:
            problems.append((record["file"], "its sha256 no longer matches the manifest"))
    return problems


def verify_files(directory: Path, manifest: dict[str, Any], only: Path | None = None) -> None:
    """Refuse files that changed since the manifest recorded them (edited, corrupted or half-copied)."""
    problems = changed_files(directory, manifest, only)
    if problems:
        name, what = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise EdgekitError(f"{directory / name} changed since it was exported ({what}){more}: export it again.")


@contextlib.contextmanager
def manifest_lock(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of one manifest between processes (bench and check may run at once)."""
    with waiting_lock(directory / ".manifest.lock"):
        yield


def update_manifest(directory: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply `change` to the manifest in place, under the lock, and write it back atomically."""
    with manifest_lock(directory):
        manifest = read_manifest(directory)
        change(manifest)
        write_json_atomic(directory / MANIFEST, manifest)
    return manifest


@dataclass(frozen=True)
class Artifact:
    """An exported artifact directory: its files (by format key: onnx, tflite, onnx_int8, tflite_int8) and its
    manifest, the record of what was built. `Artifact.open(path)` reads one back (checked like every reader)."""

    directory: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Artifact:
        directory = locate_artifact(Path(path))
        return cls(directory, read_manifest(directory))

    @property
    def name(self) -> str:
        return str(self.manifest["spec"]["name"])

    @property
    def files(self) -> dict[str, Path]:
        return {fmt: self.directory / record["file"] for fmt, record in self.manifest["files"].items()}

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    @property
    def full_integer(self) -> bool | None:
        """Whether the INT8 TFLite graph is integer end to end; None without one."""
        graph = ((self.manifest.get("int8") or {}).get("graph") or {}).get("tflite")
        return None if graph is None else bool(graph["full_integer"])

    @property
    def warnings(self) -> list[str]:
        """What the export warned about: unexpected ops, layout transposes, float left in the INT8 graph."""
        found = [f"{fmt} graph: {w}" for fmt, report in self.manifest.get("ops", {}).items()
                 for w in report.get("warnings", [])]
        return found + [f"int8: {w}" for w in (self.manifest.get("int8") or {}).get("warnings", [])]

    def file(self, fmt: str | None = None) -> Path:
        """The file of format key `fmt`; by default the one to deploy: INT8 TFLite, else TFLite, else ONNX."""
        files = self.files
        if fmt is None:
            fmt = next((f for f in DEPLOY_ORDER if f in files), None)
        if fmt not in files:
            raise EdgekitError(f"{self.directory} has no {fmt} file: it holds {', '.join(files) or 'none'}.")
        return files[fmt]

    def __repr__(self) -> str:
        return f"Artifact({str(self.directory)!r}, files={sorted(self.manifest['files'])})"
