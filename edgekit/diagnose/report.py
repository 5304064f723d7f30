"""`edgekit int8 report` and `edgekit.int8_report()`: where an artifact's INT8 files lose accuracy, layer by layer.

Each INT8 file is compared with its FP32 twin from the same export (model_int8.onnx with model.onnx,
model_int8.tflite with model.tflite) on images of the data it was calibrated on (or --data), run by the files'
own runtimes, so a converter's fault shows as well as a quantization one. Layers are ranked worst first by their
own error (ONNX; TFLite: the error accumulated up to them), median over channels: see diagnose/errors.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.artifact import locate_artifact, verify_files
from edgekit.core.errors import EdgekitError
from edgekit.core.optional import require_extra
from edgekit.diagnose.errors import LayerErrors
from edgekit.exporting.calibration import calibration_data, calibration_set
from edgekit.manifest import Manifest, read_manifest
from edgekit.runtime.formats import FORMATS

if TYPE_CHECKING:
    from edgekit.diagnose.tflite_layers import DeviceTensors

DEFAULT_IMAGES = 100
KERNELS = {"onnx": "ONNX Runtime CPU provider, its fused QLinear kernels (the session edgekit benches with)",
           "tflite": "TFLite built-in kernels (a delegate such as XNNPACK keeps no intermediate tensors)"}
# Hints for the worst layers, from the figures that point at each cause.
HINT_BELOW_DB = 30.0  # a layer's own SQNR under which it is worth a hint (INT8's rounding alone gives about 40)
CLIPPED_HINT = 0.005  # share of float values outside the representable range
OUTLIER_GAP_DB = 15.0  # tensor SQNR above the channel median by this much: a few wide channels set the scale


@dataclass
class Int8LayerReport:
    artifact: Path
    data: str
    images: int
    layers: dict[str, list[LayerErrors]]  # by format, in file order
    unmatched: dict[str, int] = field(default_factory=dict)
    device: str | None = None  # where the files ran (int8 report --device), None: here

    @property
    def kernels(self) -> dict[str, str]:
        where = f" on {self.device}" if self.device else ""
        return {fmt: KERNELS[fmt] + where for fmt in self.layers}

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer (the formats' figures side by side, by layer name), worst first."""
        rows: dict[str, dict[str, Any]] = {}
        for fmt, layers in self.layers.items():
            for layer in layers:
                row = rows.setdefault(layer.name, {"layer": layer.name, "op": layer.op, "depth": layer.index,
                                                   "weight_spread": layer.weight_spread,
                                                   "activation_range": layer.activation_range})
                row[fmt] = layer.to_dict()
        for row in rows.values():
            row["score_db"] = _score(row)
            row["hint"] = _hint(row)
        return sorted(rows.values(), key=lambda r: (r["score_db"] is None, r["score_db"] or 0.0, r["depth"]))

    def plot(self, path: str | Path) -> Path:
        """The picture: SQNR along depth per file, the worst layers circled (a PNG, written whole or not at all)."""
        from edgekit.diagnose.plot import depth_plot

        target = _plot_path(path)
        depth_plot(self.rows(), f"INT8 layers of {self.artifact.name} ({self.images} images of {self.data})", target)
        return target

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": str(self.artifact), "data": self.data, "images": self.images, "device": self.device,
                "kernels": self.kernels,
                "unmatched": self.unmatched, "ranking": "own error (alone), median channel SQNR, worst first",
                "layers": [{k: v for k, v in row.items() if k != "activation_range"} for row in self.rows()]}


def _score(row: dict[str, Any]) -> float | None:
    """What the ranking sorts by: the layer's own error where a format measured it, else the accumulated one."""
    onnx = row.get("onnx")
    if onnx and onnx["alone"] and onnx["alone"]["channel_sqnr_db"] is not None:
        return onnx["alone"]["channel_sqnr_db"]
    figures = [row[fmt]["accumulated"]["channel_sqnr_db"] for fmt in ("onnx", "tflite")
               if row.get(fmt) and row[fmt]["accumulated"]["channel_sqnr_db"] is not None]
    return min(figures) if figures else None


def _hint(row: dict[str, Any]) -> str:
    """The likely cause, for a layer whose own error is large enough to matter."""
    figures = row.get("onnx") or row.get("tflite") or {}
    own = figures.get("alone") or figures.get("accumulated") or {}
    if row["score_db"] is None or row["score_db"] >= HINT_BELOW_DB:
        return ""
    if own.get("clipped", 0.0) > CLIPPED_HINT:
        return "clips: its calibrated range is too narrow (--calib-method minmax, or more representative --calib)"
    tensor, channel = own.get("sqnr_db"), own.get("channel_sqnr_db")
    if tensor is not None and channel is not None and tensor - channel > OUTLIER_GAP_DB:
        return "a few wide channels set its scale: --equalize, or keep it in float (--max-drop)"
    return ""


def _plot_path(path: str | Path) -> Path:
    """Where the picture goes, refused before any work when it cannot be written there."""
    require_extra("report", "the report's picture")
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise EdgekitError(f"--plot {path}: the picture is a PNG: give a path ending in .png.")
    if not target.parent.is_dir():
        raise EdgekitError(f"--plot {path}: no folder {target.parent}: create it, or give a path in a folder "
                           "that exists.")
    return target


def _pairs(directory: Path, manifest: Manifest, formats: Sequence[str] | None) -> dict[str, tuple[Path, Path]]:
    present = {fmt: (directory / manifest.files[fmt].file, directory / manifest.files[f"{fmt}_int8"].file)
               for fmt in FORMATS if fmt in manifest.files and f"{fmt}_int8" in manifest.files
               and fmt in KERNELS}
    if not present:
        raise EdgekitError(f"{directory} has no INT8 file beside its FP32 twin: export with --int8 "
                           "(edgekit export ... --int8) and report on that artifact.")
    if formats is None:
        return present
    for fmt in formats:
        if fmt not in FORMATS or fmt not in KERNELS:
            raise EdgekitError(f"--format {fmt}: unknown format; give one or more of {', '.join(KERNELS)}.")
        if fmt not in present:
            raise EdgekitError(f"{directory} has no {fmt} INT8 file with its FP32 twin: give --format "
                               f"{','.join(present)}.")
    return {fmt: present[fmt] for fmt in formats}


def _images(manifest: Manifest, data: str | None, count: int, directory: Path) -> tuple[np.ndarray, str]:
    recorded = ((manifest.int8 or {}).get("calibration") or {}).get("data")
    text = data or recorded
    if not text:
        raise EdgekitError(f"{directory} was calibrated without data (noise) and no --data was given: give "
                           "--data (a folder of images, imagefolder:DIR, digits or fashion-mnist).")
    images, preprocess = calibration_data(str(text), None, manifest.spec, manifest.input.preprocessing())
    drawn = calibration_set(manifest.spec, count, images, preprocess)
    return drawn.images, str(text)


def int8_layer_report(artifact: Path, data: str | None = None, *, images: int = DEFAULT_IMAGES,
                      formats: Sequence[str] | None = None, layer: str | None = None, plot: Path | None = None,
                      progress: Callable[[str, int, int], None] | None = None,
                      device: tuple[str, DeviceTensors] | None = None) -> Int8LayerReport:
    """Each quantized layer's error in the artifact's INT8 files against their FP32 twins, on `images` images
    drawn (seeded) from `data` (default: the data the artifact was calibrated on). `layer` keeps that layer only
    (its module path, as the report names it); `plot` a PNG path for the picture (the only file written).
    `progress(format, images done, images)` follows the work. `device`: (its name, a runner of .tflite files
    there, benchmark.kept_tensors.tensors_on): the TFLite files run on that device instead of here."""
    from edgekit.diagnose.onnx_layers import onnx_layer_errors
    from edgekit.diagnose.tflite_layers import tflite_layer_errors

    if images < 1:
        raise EdgekitError(f"--images {images}: give at least 1 image (100 is typical).")
    if plot is not None:
        _plot_path(plot)
    if device is not None and formats and "onnx" in formats:
        raise EdgekitError("--device reads the TFLite files' layers on the device (ONNX Runtime keeps no "
                           "intermediate tensors there): give --format tflite, or leave --format out.")
    directory = locate_artifact(Path(artifact))
    manifest = read_manifest(directory)
    pairs = _pairs(directory, manifest, ["tflite"] if device is not None else formats)
    verify_files(directory, manifest)
    batch, source = _images(manifest, data, images, directory)
    found: dict[str, list[LayerErrors]] = {}
    unmatched: dict[str, int] = {}
    equalized = bool(((manifest.int8 or {}).get("scheme") or {}).get("equalization"))
    for fmt, (fp32, int8) in pairs.items():
        done = [0]

        def advance(fmt: str = fmt, done: list[int] = done) -> None:
            done[0] += 1
            if progress is not None:
                progress(fmt, done[0], len(batch))

        if fmt == "onnx":
            found[fmt], unmatched[fmt] = onnx_layer_errors(fp32, int8, list(batch), equalized=equalized,
                                                           on_image=advance)
        else:
            found[fmt], unmatched[fmt] = tflite_layer_errors(fp32, int8, list(batch), equalized=equalized,
                                                             on_image=advance, device=device[1] if device else None)
    _share_names(found)
    if layer is not None:
        known = {entry.name for layers in found.values() for entry in layers}
        if layer not in known:
            close = sorted(known, key=lambda name: (layer not in name, name))[:3]
            raise EdgekitError(f"--layer {layer}: no quantized layer of that name; this artifact's include "
                               f"{', '.join(close)} (`edgekit int8 report {directory}` lists them all).")
        found = {fmt: [entry for entry in layers if entry.name == layer] for fmt, layers in found.items()}
    result = Int8LayerReport(directory, source, len(batch), found, unmatched, device[0] if device else None)
    if plot is not None:
        result.plot(plot)
    return result


def _share_names(found: dict[str, list[LayerErrors]]) -> None:
    """TFLite loses some module paths (a classifier's, a pooling's): where both files have the same weighted
    layers in the same order, the TFLite layer takes the ONNX layer's name."""
    if "onnx" not in found or "tflite" not in found:
        return
    onnx = [e for e in found["onnx"] if e.weight_spread is not None or e.op.startswith(("Conv", "Gemm"))]
    tflite = [e for e in found["tflite"] if e.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    if len(onnx) == len(tflite):
        for ours, theirs in zip(tflite, onnx, strict=True):
            ours.name = theirs.name
    # An op with a fused activation is named after the activation's module in TFLite (`stage2.1.relu (add)`)
    # and after its own in ONNX (`stage2.1 (add)`): a TFLite name without an ONNX twin takes its parent's.
    onnx_names = {e.name for e in found["onnx"]}
    free = onnx_names - {e.name for e in found["tflite"]}
    for layer in found["tflite"]:
        module, bracket, kind = layer.name.partition(" (")
        if not bracket or layer.name in onnx_names:
            continue
        parent = f"{module.rpartition('.')[0]} ({kind}"
        if parent in free:
            layer.name = parent
            free.discard(parent)
