"""edgekit's public Python API: `import edgekit; edgekit.export(model, input_shape=(1, 3, 224, 224), int8=True,
calibration=...)`. Each function is a thin call into the library function the matching CLI command calls, so
both give the same checks, files and manifest. Bad input raises edgekit.EdgekitError with one clear line;
what the CLI prints as a warning is issued as an edgekit.EdgekitWarning.

Data, wherever a function takes it (`calibration=`, `data=`), is an edgekit data source (`"fashion-mnist"`,
`"digits"`, `"imagefolder:DIR"`), a torch Dataset or DataLoader, or any iterable of already preprocessed float
NCHW inputs: for calibration an item is an image or a batch (a label beside it is ignored); for evaluation an item
is an (inputs, labels) pair.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from edgekit.artifact import Artifact, verify_files
from edgekit.benchmark.host import BenchOptions, DeviceRun
from edgekit.core.errors import EdgekitError
from edgekit.diagnose.report import Int8LayerReport
from edgekit.evaluation import Evaluation, evaluate_batches, evaluate_file
from edgekit.gate.checks import ArtifactCheck, CheckOptions
from edgekit.manifest import read_manifest
from edgekit.models.complexity import ModelProfile
from edgekit.options import (
    DEFAULT_CALIBRATION_SIZE,
    DEFAULT_FORMATS,
    DEFAULT_QAT_LR,
    ExportOptions,
    Int8Options,
    int8_from_flags,
)
from edgekit.pipeline.sweep import SweepResult
from edgekit.training.loop import TrainResult

__all__ = [
    "Artifact", "BenchOptions", "CheckOptions", "EdgekitError", "EdgekitWarning", "ExportOptions", "Int8Options",
    "bench", "check", "create_model", "evaluate", "export", "profile", "quantize", "sweep", "train",
]

Data = str | torch.utils.data.Dataset | torch.utils.data.DataLoader | Iterable[Any]
ArtifactLike = Artifact | str | Path


class EdgekitWarning(UserWarning):
    """What the CLI prints as `warning:` (random weights, noise calibration, float ops left in an INT8 graph)."""


def _warn(text: str) -> None:
    warnings.warn(text, EdgekitWarning, stacklevel=4)


def export(
    model: nn.Module | str | Path,
    *,
    input_shape: Sequence[int] | str | None = None,
    width: float | None = None,
    resolution: int | None = None,
    res_mult: float | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    options: dict[str, Any] | None = None,
    weights: str | Path | None = None,
    name: str | None = None,
    formats: Sequence[str] | str = DEFAULT_FORMATS,
    nhwc: bool = False,
    dynamic_batch: bool = False,
    evaluate_on: str | None = None,
    int8: bool | Int8Options = False,
    calibration: Data | None = None,
    calib_size: int = DEFAULT_CALIBRATION_SIZE,
    calib_method: str = "minmax",
    per_tensor: bool = False,
    equalize: bool = False,
    int8_io: bool = False,
    qat_epochs: int = 0,
    qat_lr: float = DEFAULT_QAT_LR,
    max_drop: float | None = None,
    out: str | Path | None = None,
    force: bool = False,
) -> Artifact:
    """Export to ONNX and TFLite with parity checks (and full-integer INT8 files with `int8=True`); returns the
    artifact (its directory, files and manifest). Same as `edgekit export`, keyword for flag.

    `model` is your own torch.nn.Module (give `input_shape`, e.g. (1, 3, 224, 224); the class count is read from
    one forward pass), a zoo name (with `width`, `resolution` or `res_mult`, `num_classes`, family `options`), an
    edgekit checkpoint (.pt), a `"pkg.module:callable"` or a torch.export program saved as .pt2. `calibration` is
    the INT8 calibration data (see the module's docstring); `evaluate_on` a data source whose validation split every
    file's top-1 is measured on (and a `max_drop` budget judged on). The INT8 settings are `int8=Int8Options(...)`
    or the same names as keywords beside `int8=True`. `out` defaults to out/NAME-wW-rR. `weights` is a file, or
    "imagenet" for the weights torchvision publishes for a zoo model (downloaded once, checked; `edgekit weights`).
    """
    from edgekit.exporting.pipeline import export_source
    from edgekit.exporting.source import resolve_source

    int8_options = int8_from_flags(
        int8, calibration, calib_size=calib_size, calib_method=calib_method, per_tensor=per_tensor,
        equalize=equalize, int8_io=int8_io, qat_epochs=qat_epochs, qat_lr=qat_lr, max_drop=max_drop)
    export_options = ExportOptions(formats=tuple(formats) if not isinstance(formats, str) else formats, nhwc=nhwc,
                                   dynamic_batch=dynamic_batch, int8=int8_options)
    source = resolve_source(model if isinstance(model, nn.Module) else str(model), width, resolution, res_mult,
                            num_classes, in_channels, options, _path(weights), input_shape, name)
    result = export_source(source, export_options, out=_path(out), force=force, eval_data=evaluate_on,
                           calib=calibration, on_warning=_warn)
    return Artifact(result.directory, result.manifest)


def quantize(model: nn.Module | str | Path, calibration: Data | None = None, **options: Any) -> Artifact:
    """INT8 export: `export(model, int8=True, calibration=calibration, ...)`, with every other keyword of export;
    the artifact holds the FP32 and full-integer INT8 files, checked against each other."""
    return export(model, int8=options.pop("int8", True), calibration=calibration, **options)


def _quantize_signature() -> inspect.Signature:
    """export's keywords, so that help(), IDEs and inspect show quantize's real parameters."""
    params = inspect.signature(export).parameters
    calibration = params["calibration"].replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
    rest = [p.replace(default=True) if name == "int8" else p for name, p in params.items()
            if name not in ("model", "calibration")]
    return inspect.signature(export).replace(parameters=[params["model"], calibration, *rest])


quantize.__signature__ = _quantize_signature()  # type: ignore[attr-defined]


def evaluate(artifact: ArtifactLike, data: Data | None = None, *, format: str | None = None,
             batch_size: int = 256, threads: int | None = None,
             preprocess: str | Path | dict[str, Any] | None = None) -> Evaluation:
    """Top-1, top-5, per-class accuracy and confusion matrix of one file of an artifact (`format`: onnx, tflite,
    onnx_int8, tflite_int8; default the INT8 TFLite, else the first there is) or of a model file, as `edgekit eval`.

    `data` None uses the data recorded with the model; a data source string is evaluated with the recorded
    preprocessing; a Dataset, DataLoader or iterable yields (inputs, labels) already preprocessed. `threads`:
    ONNX Runtime's or TFLite's (default 1); a checkpoint's torch threads default to the cores other processes
    leave free. `preprocess`: for an .onnx or .tflite file made elsewhere (no manifest), a YAML file's path or
    a dict of its keys (resolution, resize, crop_ratio, mean, std, input_range, layout, labels), as
    `edgekit eval --preprocess`."""
    path = _model_file(artifact, format)
    if preprocess is not None:
        from edgekit.preprocess import GivenPreprocess

        given = GivenPreprocess.of(preprocess)
        if data is not None and not isinstance(data, str):
            raise EdgekitError("preprocess= applies to a data source (data='imagefolder:PATH'): data that yields "
                               "inputs is preprocessed already; drop one of them.")
        return evaluate_file(path, data, batch_size, threads, given=given)[0]
    if data is None or isinstance(data, str):
        return evaluate_file(path, data, batch_size, threads)[0]
    from edgekit.manifest import layout_of
    from edgekit.runtime.runners import file_runner

    manifest = read_manifest(path.parent)
    verify_files(path.parent, manifest, only=path)
    runner = file_runner(path, threads=threads or 1, layout=layout_of(path, manifest) or "nchw")
    shape = tuple(manifest.spec.input_shape)
    return evaluate_batches(runner, _labelled_batches(data, shape, batch_size), manifest.input.classes,
                            type(data).__name__)


def bench(artifact: ArtifactLike, device: str | Sequence[str] = "local", *, runtime: str = "auto",
          threads: Sequence[int] | None = None, warmup_runs: int | None = None, warmup_seconds: float | None = None,
          runs: int | None = None, min_seconds: float | None = None, cores: str | None = None,
          op_profile: bool = False, stable: bool = False, processes: int | None = None) -> list[DeviceRun]:
    """Latency of every file of an artifact (or one model file) on device profiles ("local", "rpi4", a .yaml, or
    several), as `edgekit bench`, keyword for flag; the figures are also appended to the manifest. A value left
    None takes the default (BenchOptions). Raises EdgekitError when a device could not be benchmarked."""
    from edgekit.benchmark.host import bench_options, bench_target
    from edgekit.devices.profiles import load_profile

    options = bench_options(runtime=runtime, threads=threads, warmup_runs=warmup_runs, warmup_seconds=warmup_seconds,
                            runs=runs, min_seconds=min_seconds, cores=cores, op_profile=op_profile, stable=stable,
                            processes=processes)
    names = [device] if isinstance(device, str) else list(device)
    runs_done, failures = bench_target(_target(artifact), [load_profile(name) for name in names], options)
    if failures:
        raise failures[0][1]
    return runs_done


def check(artifact: ArtifactLike | None = None, data: str | None = None, *, samples: int | None = None,
          max_drop: float = 1.0, relative: bool = False, reference: str = "auto", baseline: str | Path | None = None,
          tolerance: float = 0.2, latency_tolerance: float = 10.0, max_latency_ratio: float | None = None,
          update_baseline: bool = False, pair: tuple[str | Path, str | Path] | None = None,
          preprocess: str | Path | dict[str, Any] | None = None) -> ArtifactCheck:
    """Gate on INT8 accuracy, as `edgekit check`, keyword for flag: the FP32 reference and every INT8 file evaluated
    on the same data (a data source; default the one recorded), against `baseline` (a JSON of reference figures)
    when given. The result (`.passed`, `.verdict`, `.cases`, `.top1`) is also recorded in the manifest; it does not
    raise when a case fails. Instead of an artifact, `pair=(fp32_file, int8_file)` checks two model files, with
    `preprocess` (a YAML file's path or a dict of its keys, as `edgekit.evaluate`) where they record none."""
    from edgekit.gate.baseline import load_baseline
    from edgekit.gate.checks import run_checks
    from edgekit.preprocess import GivenPreprocess

    options = CheckOptions(data=data, samples=samples, max_drop=max_drop, relative=relative, reference=reference,
                           baseline=load_baseline(Path(baseline), create=update_baseline) if baseline else None,
                           tolerance=tolerance, latency_tolerance=latency_tolerance,
                           max_latency_ratio=max_latency_ratio, update_baseline=update_baseline)
    files = (Path(pair[0]), Path(pair[1])) if pair is not None else None
    return run_checks([_target(artifact)] if artifact is not None else [], options, files,
                      GivenPreprocess.of(preprocess))[0]


def int8_report(artifact: ArtifactLike, data: str | None = None, *, images: int = 100,
                formats: Sequence[str] | str | None = None, layer: str | None = None,
                plot: str | Path | None = None, device: str | None = None) -> Int8LayerReport:
    """Where the artifact's INT8 files lose accuracy, as `edgekit int8 report`, keyword for flag: every quantized
    layer's error against the FP32 file of the same format (SQNR median over channels, cosine, clipped share), of
    the layer alone and accumulated up to it, on `images` images of `data` (default: the calibration data).
    `.rows()` ranks the layers worst first; `.to_dict()` is the `--json` output; `plot` (a .png path, or later
    `.plot(path)`) draws SQNR along depth; `device` (a profile name) computes the TFLite files' layers on that
    device's kernels. Reads the files, writes nothing else."""
    from edgekit.benchmark.kept_tensors import int8_report_on

    chosen = formats.split(",") if isinstance(formats, str) else formats
    return int8_report_on(device, _target(artifact), data=data, images=images, formats=chosen, layer=layer,
                          plot=_path(plot))


def train(recipe: str | Path | dict[str, Any], out: str | Path | None = None, *, epochs: int | None = None,
          batch_size: int | None = None, limit_batches: int | None = None, data: str | None = None,
          weights: str | Path | None = None, resume: bool = False, threads: int | None = None,
          deterministic: bool | None = None) -> TrainResult:
    """Train a recipe (a built-in name, a YAML file, or the same content as a dict), as `edgekit train`, keyword
    for flag; writes OUT/best.pt (default runs/RECIPE_NAME) and returns the run's summary. `deterministic` (default:
    the recipe's train.deterministic) gives the same weights whatever else the machine runs."""
    from edgekit.recipe import with_overrides
    from edgekit.training.loop import train_recipe

    loaded = with_overrides(_recipe(recipe), epochs=epochs, batch_size=batch_size, limit_batches=limit_batches,
                            data=data, weights=str(weights) if weights is not None else None)
    return train_recipe(loaded, Path(out) if out is not None else Path("runs") / loaded.name, resume=resume,
                        threads=threads, deterministic=deterministic)


def sweep(recipe: str | Path | dict[str, Any], widths: Sequence[float], resolutions: Sequence[int], *,
          out: str | Path | None = None, device: str | Sequence[str] | None = "local",
          bench_threads: Sequence[int] = (1,), epochs: int | None = None, limit_batches: int | None = None,
          jobs: int = 1) -> SweepResult:
    """The whole pipeline at every width x resolution of a recipe, latency on `device` (None: none), and one
    report, as `edgekit sweep`; returns the points (`.status`, `.accuracy`, `.out`) and the report. Rerunning
    continues an interrupted sweep."""
    from edgekit.devices.profiles import load_profile
    from edgekit.pipeline.sweep import sweep as run_sweep

    names = [] if device is None else [device] if isinstance(device, str) else list(device)
    return run_sweep(_recipe(recipe), list(widths), list(resolutions), out=_path(out),
                     devices=[load_profile(name) for name in names],
                     bench=BenchOptions(threads=tuple(bench_threads)), epochs=epochs, limit_batches=limit_batches,
                     jobs=jobs)


def create_model(name: str, *, width: float = 1.0, resolution: int | None = None, num_classes: int = 1000,
                 in_channels: int = 3, **options: Any) -> nn.Module:
    """A zoo model (`edgekit models` lists them), e.g. create_model("mobilenet_v2", width=0.5, num_classes=10);
    its spec is `model.spec`."""
    from edgekit.models import create

    return create(name, width=width, resolution=resolution, num_classes=num_classes, in_channels=in_channels,
                  **options)


def profile(model: nn.Module | str, *, input_shape: Sequence[int] | str | None = None, width: float = 1.0,
            resolution: int | None = None, num_classes: int = 1000, in_channels: int = 3, fuse: bool = True,
            **options: Any) -> ModelProfile:
    """Layer-by-layer params, MACs and activation memory, as `edgekit profile`: of your own module (give
    `input_shape`) or of a zoo model by name."""
    from edgekit.models.complexity import profile_model, profile_spec
    from edgekit.user_model import parse_input_shape

    if isinstance(model, nn.Module):
        shape = parse_input_shape(input_shape) if input_shape is not None else None
        if shape is None and getattr(model, "spec", None) is None:
            raise EdgekitError("profile needs input_shape for your own model, e.g. input_shape=(1, 3, 224, 224).")
        return profile_model(model, shape, fuse=fuse)
    return profile_spec(model, width=width, resolution=resolution, num_classes=num_classes, in_channels=in_channels,
                        fuse=fuse, **options)


def _recipe(recipe: str | Path | dict[str, Any]) -> Any:
    """A recipe given as a built-in name, a YAML file, or the same content as a dict."""
    from edgekit.recipe import load_recipe, parse_recipe

    if isinstance(recipe, dict):
        return parse_recipe(yaml.safe_dump(recipe, sort_keys=False), "<recipe dict>")
    return load_recipe(recipe)


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


def _target(artifact: ArtifactLike) -> Path:
    return artifact.directory if isinstance(artifact, Artifact) else Path(artifact)


def _model_file(artifact: ArtifactLike, fmt: str | None) -> Path:
    """The model file to run: a file given as is, or the artifact's file of format `fmt`."""
    path = _target(artifact)
    if path.is_file():
        if fmt is not None:
            raise EdgekitError(f"{path} is one model file already: drop format=, or give the artifact directory.")
        return path
    return (artifact if isinstance(artifact, Artifact) else Artifact.open(path)).file(fmt)


def _labelled_batches(data: Any, input_shape: tuple[int, ...], batch_size: int
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(inputs, labels) batches of at most `batch_size` from a Dataset, DataLoader or iterable of pairs."""
    from edgekit.exporting.calibration import _images_of

    what = type(data).__name__
    items: Iterable[Any] = (data[i] for i in range(len(data))) if isinstance(data, torch.utils.data.Dataset) \
        and hasattr(data, "__len__") and not isinstance(data, torch.utils.data.IterableDataset) else data
    inputs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    held = 0
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise EdgekitError(f"evaluation data {what} yields {type(item).__name__}, not (inputs, labels) pairs: "
                               "give labelled data.")
        images = _images_of(item[0], input_shape, what)
        label = np.atleast_1d(np.asarray(item[1].cpu() if isinstance(item[1], torch.Tensor) else item[1]))
        if len(label) != len(images) or not np.issubdtype(label.dtype, np.integer):
            raise EdgekitError(f"evaluation data {what} yields {len(images)} input(s) with labels {label!r}: give "
                               "one integer class index per input.")
        inputs.append(images)
        labels.append(label.astype(np.int64))
        held += len(images)
        if held >= batch_size:
            yield np.concatenate(inputs), np.concatenate(labels)
            inputs, labels, held = [], [], 0
    if held:
        yield np.concatenate(inputs), np.concatenate(labels)
