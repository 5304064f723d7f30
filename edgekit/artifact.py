"""Artifact directories: an export's files and its manifest.json (edgekit.manifest), read back and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.core.errors import EdgekitError
from edgekit.core.files import sha256_file
from edgekit.manifest import MANIFEST, Manifest, read_manifest
from edgekit.models import ModelSpec
from edgekit.runtime.formats import DEPLOY_ORDER


def artifact_name(spec: ModelSpec) -> str:
    """`mobilenet_v2-w0.75-r224`: the default directory name for a spec's artifacts."""
    return f"{spec.name}-w{spec.width:g}-r{spec.resolution}"


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


def changed_files(directory: Path, manifest: Manifest, only: Path | None = None) -> list[tuple[str, str]]:
    """(file, what is wrong) for each listed file (or just `only`) that is missing or differs from its record."""
    problems = []
    for record in manifest.files.values():
        if only is not None and record.file != only.name:
            continue
        path = directory / record.file
        if not path.is_file():
            problems.append((record.file, "it is missing"))
        elif (size := path.stat().st_size) != record.bytes:
            problems.append((record.file, f"{size:,} bytes, the manifest records {record.bytes:,}"))
        elif sha256_file(path) != record.sha256:
            problems.append((record.file, "its sha256 no longer matches the manifest"))
    return problems


def verify_files(directory: Path, manifest: Manifest, only: Path | None = None) -> None:
    """Refuse files that changed since the manifest recorded them (edited, corrupted or half-copied)."""
    problems = changed_files(directory, manifest, only)
    if problems:
        name, what = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise EdgekitError(f"{directory / name} changed since it was exported ({what}){more}: export it again.")


@dataclass(frozen=True)
class Artifact:
    """An exported artifact directory: its files (by format key: onnx, tflite, onnx_int8, tflite_int8) and its
    manifest, the record of what was built. `Artifact.open(path)` reads one back (checked like every reader)."""

    directory: Path
    manifest: Manifest

    @classmethod
    def open(cls, path: str | Path) -> Artifact:
        directory = locate_artifact(Path(path))
        return cls(directory, read_manifest(directory))

    @property
    def name(self) -> str:
        return self.manifest.spec.name

    @property
    def files(self) -> dict[str, Path]:
        return {fmt: self.directory / record.file for fmt, record in self.manifest.files.items()}

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    @property
    def full_integer(self) -> bool | None:
        """Whether the INT8 TFLite graph is integer end to end; None without one."""
        graph = ((self.manifest.int8 or {}).get("graph") or {}).get("tflite")
        return None if graph is None else bool(graph["full_integer"])

    @property
    def warnings(self) -> list[str]:
        """What the export warned about: unexpected ops, layout transposes, float left in the INT8 graph."""
        found = [f"{fmt} graph: {w}" for fmt, report in self.manifest.ops.items() for w in report.get("warnings", [])]
        return found + [f"int8: {w}" for w in (self.manifest.int8 or {}).get("warnings", [])]

    def file(self, fmt: str | None = None) -> Path:
        """The file of format key `fmt`; by default the one to deploy: INT8 TFLite, else TFLite, else ONNX."""
        files = self.files
        if fmt is None:
            fmt = next((f for f in DEPLOY_ORDER if f in files), None)
        if fmt not in files:
            raise EdgekitError(f"{self.directory} has no {fmt} file: it holds {', '.join(files) or 'none'}.")
        return files[fmt]

    def __repr__(self) -> str:
        return f"Artifact({str(self.directory)!r}, files={sorted(self.manifest.files)})"
