"""Open any model edgekit runs (a checkpoint, an .onnx or a .tflite file) with the preprocessing it was built with."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.artifact import verify_files
from edgekit.core.errors import EdgekitError
from edgekit.manifest import MANIFEST, layout_of, read_manifest
from edgekit.models import ModelSpec, custom_spec
from edgekit.preprocess import GivenPreprocess, Preprocess
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
    # the classes name the outputs (a labels file, TFLite metadata): data is scored by class name, not position
    by_name: bool = False


def open_model(path: Path, threads: int | None = None, verify: bool = True,
               given: GivenPreprocess | None = None) -> Opened:
    """A checkpoint, or an exported file with its manifest's preprocessing (checked against its sha256 unless
    the caller has just verified the whole artifact), or any .onnx/.tflite file with `given` preprocessing (one
    made elsewhere, without a manifest; `given` also replaces a manifest's).

    `threads`: a checkpoint runs with torch under a ThreadGovernor (None: the cores other processes leave free,
    re-checked as it goes, as training does); an exported file with that many runtime threads (None: 1)."""
    if not path.is_file():
        raise EdgekitError(f"{path} does not exist: give a checkpoint (.pt), an .onnx or a .tflite file.")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        from edgekit.core.threads import ThreadGovernor

        if given is not None:
            raise EdgekitError(f"{path} is a checkpoint, which records its own preprocessing: give preprocessing "
                               "(--preprocess, --mean, ...) for .onnx and .tflite files only.")
        from edgekit.checkpoint import read_trained  # torch: a file needs none

        trained = read_trained(path)
        return Opened(TorchRunner(trained.build(), ThreadGovernor(threads)), trained.spec, trained.preprocess,
                      trained.data, trained.classes)
    format_of(path, also=CHECKPOINT_SUFFIXES[:1])  # an unknown suffix is refused before the manifest is read
    if not (path.parent / MANIFEST).is_file():
        if given is None:
            given = preprocess_from_metadata(path)
        if given is None:
            raise EdgekitError(f"{path} has no {MANIFEST} beside it, so its preprocessing is unknown: give it with "
                               f"--preprocess FILE.yaml or flags such as --mean/--std (docs/eval.md, Any model file).")
        return _open_bare(path, threads or 1, given)
    manifest = read_manifest(path.parent)
    if verify:
        verify_files(path.parent, manifest, only=path)
    layout = layout_of(path, manifest) or "nchw"
    if given is not None:
        preprocess = given.resolve(path, manifest.spec.in_channels, manifest.spec.resolution)
        runner = file_runner(path, threads=threads or 1, layout=given.layout or layout)
        labels = _labels(given, manifest.spec.num_classes)
        return Opened(runner, manifest.spec, preprocess, manifest.input.data, labels or manifest.input.classes,
                      by_name=labels is not None)
    preprocess = manifest.input.preprocessing()
    if preprocess is None:
        raise EdgekitError(
            f"{path} was exported without a dataset, so its preprocessing is unknown: give it with --preprocess "
            "FILE.yaml or flags such as --mean/--std, or export from a trained checkpoint (edgekit export "
            "runs/NAME/best.pt)."
        )
    runner = file_runner(path, threads=threads or 1, layout=layout)
    return Opened(runner, manifest.spec, preprocess, manifest.input.data, manifest.input.classes)


def preprocess_from_metadata(path: Path) -> GivenPreprocess | None:
    """A .tflite's TFLite Support metadata (normalization, labels) as given preprocessing; None without it."""
    if format_of(path).name != "tflite":
        return None
    from edgekit.runtime.tflite_metadata import read_metadata

    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001 - unreadable metadata is no metadata: the user gives the preprocessing
        return None
    if meta is None or not meta.mean or not meta.std:
        return None
    given = GivenPreprocess.parse({"mean": list(meta.mean), "std": list(meta.std), "input_range": [0, 255]},
                                  f"{path}'s TFLite metadata")
    return replace(given, packed_labels=tuple(meta.labels) if meta.labels else None)


def input_layout(shape: list, given: str | None) -> tuple[str, int, int]:
    """(layout, channels, resolution) of a file's 4-d input shape; `given` settles the layout when set, else the
    channel axis is the one of 1, 3 or 4 values. Square inputs only."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if len(dims) != 4 or None in dims[1:]:
        raise EdgekitError(f"the model's input shape is {shape}: edgekit runs image models with one fixed-size "
                           "(batch, channels, height, width) or (batch, height, width, channels) input.")
    _, a, b, c = dims
    layout = given or ("nhwc" if c in (1, 3, 4) and a not in (1, 3, 4) else "nchw")
    channels, height, width = (a, b, c) if layout == "nchw" else (c, a, b)
    if height != width:
        raise EdgekitError(f"the model's input is {height}x{width} px ({layout}): edgekit evaluates square inputs; "
                           "give layout: nhwc or nchw if it guessed the channel axis wrong.")
    return layout, channels, height


def _open_bare(path: Path, threads: int, given: GivenPreprocess) -> Opened:
    """A model file without a manifest: its input shape gives the layout, channels and resolution."""
    probe = file_runner(path, threads=threads)
    layout, channels, resolution = input_layout(probe.input_shape, given.layout)
    runner = file_runner(path, threads=threads, layout=layout) if layout != "nchw" else probe
    preprocess = given.resolve(path, channels, resolution)
    outputs = runner.predict(np.zeros((1, channels, resolution, resolution), np.float32)).shape[-1]
    spec = custom_spec(_plain_name(path.stem), [channels, resolution, resolution], outputs, f"file {path.name}")
    labels = _labels(given, outputs)
    return Opened(runner, spec, replace(preprocess, layout=layout), None, labels, by_name=labels is not None)


def _labels(given: GivenPreprocess, outputs: int) -> list[str] | None:
    names = given.classes()
    if names is not None and len(names) != outputs:
        raise EdgekitError(f"{given.labels or given.origin} names {len(names)} classes but the model has {outputs} "
                           "outputs: give one name per output, line k naming output k.")
    return names


def _plain_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "model"
