"""Artifact directories and their manifest.json: written whole under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.models import ModelSpec

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def artifact_name(spec: ModelSpec) -> str:
    """`mobilenet_v2-w0.75-r224`: the default directory name for a spec's artifacts."""
    return f"{spec.name}-w{spec.width:g}-r{spec.resolution}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_directory(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside `final`; on success it replaces `final` in one rename.

    On any failure (or Ctrl-C) the staging directory is removed and an existing `final` is untouched.
    An existing `final` is only replaced when `force` is set.
    """
    final = final.resolve()
    if final.exists() and not force:
        raise EdgekitError(f"{final} already exists: pass --force to replace it, or --out to write elsewhere.")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    except OSError as exc:
        raise EdgekitError(f"cannot write to {final.parent} ({exc.strerror}): choose a writable --out.") from None
    try:
        yield staging
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise EdgekitError(
            f"no {MANIFEST} in {directory}: it records the model's preprocessing; export with `edgekit export`."
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgekitError(f"{path} is unreadable ({exc}): export the model again.") from None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise EdgekitError(f"{path} is not an edgekit v{MANIFEST_VERSION} manifest: export the model again.")
    return manifest
