"""Open any model edgekit runs (a checkpoint, an .onnx or a .tflite file) with the preprocessing it was built with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.artifact import read_manifest, verify_files
from edgekit.checkpoint import read_trained
from edgekit.core.errors import EdgekitError
from edgekit.core.quiet import quiet
from edgekit.data import Preprocess
from edgekit.models import ModelSpec
from edgekit.runtime.runners import OnnxRunner, Runner, TFLiteRunner, TorchRunner


@dataclass
class Opened:
    runner: Runner
    spec: ModelSpec
    preprocess: Preprocess
    data: str | None
    classes: list[str] | None


def open_model(path: Path, threads: int = 1, verify: bool = True) -> Opened:
    """A checkpoint, or an exported file with its manifest's preprocessing (checked against its sha256 unless
    the caller has just verified the whole artifact)."""
    if not path.is_file():
        raise EdgekitError(f"{path} does not exist: give a checkpoint (.pt), an .onnx or a .tflite file.")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        trained = read_trained(path)
        return Opened(TorchRunner(trained.build()), trained.spec, trained.preprocess, trained.data, trained.classes)
    if suffix not in (".onnx", ".tflite"):
        raise EdgekitError(f"{path}: unknown model format {suffix!r}: give a .pt, .onnx or .tflite file.")
    manifest = read_manifest(path.parent)
    if verify:
        verify_files(path.parent, manifest, only=path)
    record = manifest["input"].get("preprocess")
    if record is None:
        raise EdgekitError(
            f"{path} was exported without a dataset, so its preprocessing is unknown: "
            "export it from a trained checkpoint (edgekit export runs/NAME/best.pt)."
        )
    fmt = suffix[1:]
    layout = manifest["input"]["layout"].get(fmt, "nchw")
    if fmt == "onnx":
        runner: Runner = OnnxRunner(path, threads=threads)
    else:
        with quiet():
            runner = TFLiteRunner(path, layout=layout, threads=threads)
    return Opened(runner, ModelSpec(**manifest["spec"]), Preprocess.from_dict(record),
                  manifest["input"].get("data"), manifest["input"].get("classes"))
