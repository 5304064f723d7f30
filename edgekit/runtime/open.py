"""Open any model edgekit runs (a checkpoint, an .onnx or a .tflite file) with the preprocessing it was built with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.artifact import verify_files
from edgekit.checkpoint import read_trained
from edgekit.core.errors import EdgekitError
from edgekit.data import Preprocess
from edgekit.manifest import layout_of, read_manifest
from edgekit.models import ModelSpec
from edgekit.runtime.formats import format_of
from edgekit.runtime.runners import Runner, TorchRunner, file_runner

CHECKPOINT_SUFFIXES = (".pt", ".pth")


@dataclass
class Opened:
    runner: Runner
    spec: ModelSpec
    preprocess: Preprocess
    data: str | None
    classes: list[str] | None


def open_model(path: Path, threads: int | None = None, verify: bool = True) -> Opened:
    """A checkpoint, or an exported file with its manifest's preprocessing (checked against its sha256 unless
    the caller has just verified the whole artifact).

    `threads`: a checkpoint runs with torch under a ThreadGovernor (None: the cores other processes leave free,
    re-checked as it goes, as training does); an exported file with that many runtime threads (None: 1)."""
    if not path.is_file():
        raise EdgekitError(f"{path} does not exist: give a checkpoint (.pt), an .onnx or a .tflite file.")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        from edgekit.core.threads import ThreadGovernor

        trained = read_trained(path)
        return Opened(TorchRunner(trained.build(), ThreadGovernor(threads)), trained.spec, trained.preprocess,
                      trained.data, trained.classes)
    format_of(path, also=CHECKPOINT_SUFFIXES[:1])  # an unknown suffix is refused before the manifest is read
    manifest = read_manifest(path.parent)
    if verify:
        verify_files(path.parent, manifest, only=path)
    preprocess = manifest.input.preprocessing()
    if preprocess is None:
        raise EdgekitError(
            f"{path} was exported without a dataset, so its preprocessing is unknown: "
            "export it from a trained checkpoint (edgekit export runs/NAME/best.pt)."
        )
    runner = file_runner(path, threads=threads or 1, layout=layout_of(path, manifest) or "nchw")
    return Opened(runner, manifest.spec, preprocess, manifest.input.data, manifest.input.classes)
