"""`edgekit bench`: push the models and the harness to a device, run it, read the figures back, record them.

One device run: make a temp dir on the device, push harness + models + inputs, probe what the device has, run the
harness (or benchmark_model on a phone that has no Python), read its JSON, remove the temp dir whatever happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import verify_files
from edgekit.benchmark import benchmark_model
from edgekit.benchmark.repeat import (
    DEFAULT_PROCESSES,
    MAX_PROCESSES,
    STABLE_PROCESSES,
    repeat_warning,
    repeatability,
)
from edgekit.core.errors import EdgekitError
from edgekit.core.files import sha256_file
from edgekit.core.optional import installed
from edgekit.devices.probe import adb_properties, device_json, probe_device, remote_argv
from edgekit.devices.profiles import DeviceProfile
from edgekit.devices.transports import DeviceError, Transport, connect
from edgekit.manifest import MANIFEST, Manifest, layout_of, read_manifest, update_manifest
from edgekit.runtime.formats import RUNTIMES, SUFFIXES, TFLITE, for_runtime, format_of, is_model_file
from edgekit.runtime.runners import file_runner


@dataclass(frozen=True)
class BenchOptions:
    """How `edgekit bench` times the files: the runtime (auto: each file's own), thread counts (None: the device
    profile's), warm-up and timed runs (each at least so many and at least so many seconds), interleaved rounds,
    the fresh harness processes they run in one after another (each with its share of the runs: the interval is
    over their medians, docs/bench.md), the cores to pin to, per-operator profiling, and --stable (1-thread runs
    timed by the thread's CPU time)."""

    runtime: str = "auto"
    threads: tuple[int, ...] | None = None  # None: the device profile's
    warmup_runs: int = 1
    warmup_seconds: float = 1.0
    runs: int = 50
    min_seconds: float = 1.0
    rounds: int = 5
    processes: int = DEFAULT_PROCESSES
    cores: str | None = None  # None: the device profile's
    op_profile: bool = False
    all_nodes: bool = False  # with op_profile: every node's time in run order, not only the slowest (ONNX Runtime)
    stable: bool = False  # time 1-thread runs by the thread's CPU time (stable_options; docs/bench.md)
    keep_times: bool = False  # every run's times in the results (tools/bench_repeat.py)

    @property
    def clock(self) -> str:
        return "cpu" if self.stable else "wall"

    def __post_init__(self) -> None:
        if self.runtime != "auto" and self.runtime not in RUNTIMES:
            raise EdgekitError(f"--runtime {self.runtime!r}: use {', '.join(RUNTIMES)} or auto.")
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise EdgekitError(f"--processes {self.processes}: give 1 to {MAX_PROCESSES} (each process takes its "
                               "share of --runs; 1 times every file in one process, whose interval covers only it).")
        if self.runs < 1 or self.warmup_runs < 0 or self.min_seconds < 0 or self.warmup_seconds < 0:
            raise EdgekitError("a run count or time is out of range: give --runs >= 1, and --warmup, "
                               "--warmup-seconds, --min-seconds >= 0.")
        if self.threads is not None and (not self.threads or min(self.threads) < 1):
            raise EdgekitError(f"--threads {self.threads}: give thread counts of at least 1, e.g. --threads 1,2.")


def bench_options(*, runtime: str = "auto", threads: tuple[int, ...] | None = None, warmup_runs: int | None = None,
                  warmup_seconds: float | None = None, runs: int | None = None, min_seconds: float | None = None,
                  cores: str | int | None = None, op_profile: bool = False, stable: bool = False,
                  processes: int | None = None) -> BenchOptions:
    """BenchOptions from `edgekit bench`'s flags or the API's keywords: a value not given (None) keeps
    BenchOptions' default, which lives there only; `stable` raises the run counts (stable_options)."""
    from edgekit.devices.profiles import parse_cores

    given = {"warmup_runs": warmup_runs, "warmup_seconds": warmup_seconds, "runs": runs, "min_seconds": min_seconds,
             "processes": processes}
    options = BenchOptions(runtime=runtime, threads=tuple(threads) if threads is not None else None,
                           cores=parse_cores(cores), op_profile=op_profile,
                           **{k: v for k, v in given.items() if v is not None})
    return stable_options(options) if stable else options


# --stable: at least this many timed runs in at least this many rounds. Each round's median is one look at the
# latency; more of them make the p50 repeat and its interval narrow (tools/bench_repeat.py, docs/bench.md).
STABLE_RUNS = 400
STABLE_ROUNDS = 80


def stable_options(options: BenchOptions) -> BenchOptions:
    """`options` for figures that repeat on a shared machine: the thread's CPU time at one thread, and at least
    STABLE_RUNS runs in STABLE_ROUNDS rounds over STABLE_PROCESSES processes (fewer when the user asked for
    fewer: one process stays one)."""
    processes = options.processes if options.processes != DEFAULT_PROCESSES else STABLE_PROCESSES
    return dataclasses.replace(options, stable=True, runs=max(options.runs, STABLE_RUNS),
                               rounds=max(options.rounds, STABLE_ROUNDS), processes=processes)


# Inputs whose outputs each device returns, to compare with this machine's (the first is also the timed one).
CHECK_IMAGES = 8


@dataclass
class ModelFile:
    path: Path
    runtime: str
    checks: np.ndarray  # CHECK_IMAGES inputs stacked on axis 0, whose outputs the device returns
    references: np.ndarray  # this machine's outputs for `checks`, to check the device computes the same
    output_step: float  # about one quantization step of the output for INT8 graphs, 0 for float ones
    artifact: Path | None = None

    @property
    def input(self) -> np.ndarray:
        """The timed input: the first of the checks."""
        return self.checks[0]

    @property
    def label(self) -> str:
        return self.path.name


@dataclass
class DeviceRun:
    device: str
    transport: str
    info: dict[str, Any]
    results: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)


# --- what to run ------------------------------------------------------------------------------------------------


def _inputs_for(path: Path, manifest: Manifest | None, shape: tuple[int, ...], count: int) -> np.ndarray:
    """`count` inputs in the file's own layout, stacked on axis 0: real preprocessed validation samples when the
    manifest names a dataset, else random values in the model's input range."""
    record = manifest.input if manifest is not None else None
    nhwc = layout_of(path, manifest) == "nhwc" or (
        record is None and len(shape) == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3))
    preprocess = record.preprocess if record is not None else None
    if preprocess and record is not None and record.data and installed("torch"):  # datasets load with torch
        from edgekit.data import DataSource, load_split

        pre = record.preprocessing()
        images = load_split(DataSource.parse(record.data), "val", pre.resolution, pre.channels,
                            preprocess=pre).images[:count]
        x = pre(images)
    else:
        rng = np.random.default_rng(0)
        nchw = (count * shape[0], shape[3], shape[1], shape[2]) if nhwc else (count * shape[0], *shape[1:])
        if preprocess:  # the range of a normalised [0, 1] image, per channel
            mean = np.asarray(preprocess["mean"], np.float32).reshape(1, -1, 1, 1)
            std = np.asarray(preprocess["std"], np.float32).reshape(1, -1, 1, 1)
            x = (rng.random(nchw, dtype=np.float32) - mean) / std
        else:
            x = rng.uniform(-1.0, 1.0, nchw).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if nhwc else x, dtype=np.float32)
    x = x[: max(1, len(x) // shape[0]) * shape[0]]
    return x.reshape(-1, shape[0], *x.shape[1:])  # each input with the file's own batch


def model_files(target: Path, runtime: str = "auto", checks: int = CHECK_IMAGES) -> list[ModelFile]:
    """The files to benchmark: every .tflite/.onnx of an artifact directory, or the one file given, each with
    `checks` inputs whose outputs the device returns (1 where only timing matters: calibration units)."""
    if target.is_dir():
        manifest = read_manifest(target)
        verify_files(target, manifest)  # a listed file missing or changed: the artifact is broken as a whole
        paths = sorted(p for p in target.iterdir() if is_model_file(p) and not p.name.startswith("."))
        artifact: Path | None = target
    elif target.is_file():
        if not is_model_file(target):
            raise EdgekitError(f"{target}: edgekit benchmarks {' and '.join(SUFFIXES)} files, or an artifact "
                               "directory.")
        paths = [target]
        has_manifest = (target.parent / MANIFEST).is_file()
        manifest = read_manifest(target.parent) if has_manifest else None
        artifact = target.parent if has_manifest else None
    else:
        raise EdgekitError(f"{target} does not exist: give an artifact directory (edgekit export --out DIR), "
                           "a .tflite or an .onnx file.")
    if runtime != "auto":
        paths = [p for p in paths if format_of(p).runtime == runtime]
    if not paths:
        raise EdgekitError(f"{target} holds no {'model' if runtime == 'auto' else runtime} file to benchmark: "
                           "export one first (edgekit export ...).")
    files = []
    for path in paths:
        if manifest is not None and artifact != target:
            verify_files(path.parent, manifest, only=path)
        runner = file_runner(path)
        shape = tuple(int(d) if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in runner.input_shape)
        inputs = _inputs_for(path, manifest, shape, checks)
        references = np.stack([runner.run(x) for x in inputs])  # in the file's own layout, as on the device
        # INT8 graphs: x86 and ARM kernels may round a step apart, so outputs are compared to a step.
        step = 2 * float(np.abs(references).max()) / 255 if runner.quantized else 0.0
        files.append(ModelFile(path, format_of(path).runtime, inputs, references, step, artifact))
    return files


def input_shape(model: Any) -> list[Any]:
    """A model's input shape, in the file's layout: a runner's, or a harness model's."""
    shape = model.input_shape
    return list(shape() if callable(shape) else shape)


# --- one device ---------------------------------------------------------------------------------------------------


def _check_runtimes(files: list[ModelFile], info: dict[str, Any], where: str) -> list[ModelFile]:
    have = info.get("runtimes", {})
    usable = [f for f in files if any(p in have for p in for_runtime(f.runtime).packages)]
    if not usable:
        wanted = sorted({f.runtime for f in files})
        raise DeviceError(f"{where} has no runtime for {', '.join(wanted)}: install ai-edge-litert (or "
                          "tflite-runtime) and/or onnxruntime with pip on the device.")
    return usable


def run_harness(profile: DeviceProfile, transport: Transport, files: list[ModelFile],
                options: BenchOptions) -> DeviceRun:
    where = getattr(transport, "where", profile.name)
    workdir = transport.make_temp_dir()
    try:
        info = probe_device(profile, transport, workdir)
        warnings = []
        usable = _check_runtimes(files, info, where)
        skipped = sorted({f.runtime for f in files} - {f.runtime for f in usable})
        if skipped:
            warnings.append(f"{profile.name} has no {', '.join(skipped)}: those files were skipped.")
        argv = [*transport.python, f"{workdir}/harness.py"]
        with tempfile.TemporaryDirectory(prefix="edgekit-inputs-") as local:
            for i, f in enumerate(usable):
                remote_model = f"{workdir}/m{i}{format_of(f.path).suffix}"
                np.save(Path(local) / f"i{i}.npy", f.input)
                np.save(Path(local) / f"c{i}.npy", f.checks)
                transport.push(f.path, remote_model)
                for name in (f"i{i}.npy", f"c{i}.npy"):
                    transport.push(Path(local) / name, f"{workdir}/{name}")
                argv += ["--model", remote_model, "--input", f"{workdir}/i{i}.npy",
                         "--check-input", f"{workdir}/c{i}.npy"]
        threads = options.threads or profile.threads
        cores = options.cores if options.cores is not None else profile.cores
        argv += ["--threads", ",".join(map(str, threads)), "--warmup-runs", str(options.warmup_runs),
                 "--warmup-seconds", str(options.warmup_seconds), "--runs", str(options.runs),
                 "--min-seconds", str(options.min_seconds), "--rounds", str(options.rounds),
                 "--processes", str(options.processes), "--clock", options.clock,
                 *(["--keep-times"] if options.keep_times else [])]
        if cores:
            argv += ["--cores", cores]
        if options.op_profile:
            argv += ["--op-profile", workdir, *(["--all-nodes"] if options.all_nodes else [])]
        done = transport.run(remote_argv(profile, argv, profile.timeout_s), profile.timeout_s + 30)
        report = device_json(done, where, "the benchmark")
    finally:
        with contextlib.suppress(EdgekitError):
            transport.remove_dir(workdir)
    by_name = {f"m{i}{format_of(f.path).suffix}": f for i, f in enumerate(usable)}
    results = []
    for r in report["results"]:
        f = by_name[r.pop("model")]
        results.append(_finish(r, f, options.op_profile))
    info.update(before=report["before"], after=report["after"], peak_rss_mb=report["peak_rss_mb"],
                cores_pinned=report["cores_pinned"])
    return DeviceRun(profile.name, profile.transport, info, results, warnings)


def _finish(result: dict[str, Any], f: ModelFile, profiled: bool) -> dict[str, Any]:
    output = result.pop("output", [])
    outputs = result.pop("check_outputs", None) or ([output] if output else [])  # benchmark_model returns none
    if outputs:
        result["vs_this_machine"] = vs_this_machine(outputs, f.references, f.output_step)
    result.update(file=f.label, sha256=sha256_file(f.path), runtime_kind=f.runtime, profiled=profiled)
    processes, rounds = result.pop("process_p50_ms", None), result.pop("round_p50_ms", None)
    if processes and len(processes) > 1:  # the harness's looks (benchmark_model gives one pooled figure)
        result["repeat"] = repeatability(processes, result["steady"]["p50_ms"], unit="process")
    elif rounds:
        result["repeat"] = repeatability(rounds, result["steady"]["p50_ms"], unit="round")
    return result


def vs_this_machine(outputs: list[list[float]], references: np.ndarray, step: float) -> dict[str, Any]:
    """How the device's outputs for the check inputs compare with this machine's: the largest difference against a
    tolerance (about a quantization step for INT8 graphs, whose x86 and ARM kernels may round a step apart), and
    on how many inputs the top class agrees."""
    diffs, agree = [], 0
    for output, reference in zip(outputs, references):  # noqa: B905 - the device may return fewer
        got = np.asarray(output, dtype=np.float32)
        want = reference.reshape(-1)[: got.size]
        diffs.append(float(np.abs(got - want).max()))
        agree += int(got.argmax() == want.argmax())
    tolerance = max(2 * step, 1e-3 * float(np.abs(references).max()), 1e-5)
    return {"inputs": len(diffs), "max_abs_diff": max(diffs), "tolerance": tolerance,
            "matches": max(diffs) <= tolerance, "argmax_agree": agree, "argmax_matches": agree == len(diffs)}


def run_benchmark_model(profile: DeviceProfile, transport: Transport, files: list[ModelFile],
                        options: BenchOptions) -> DeviceRun:
    """An Android phone without Python: TFLite's benchmark_model binary, given in the profile."""
    assert profile.adb is not None and profile.adb.benchmark_model
    binary = Path(profile.adb.benchmark_model).expanduser()
    if not binary.is_file():
        raise EdgekitError(f"benchmark_model binary {binary} (adb: benchmark_model: in {profile.source}) does not "
                           "exist: build it for arm64 (TFLite's tools/benchmark) and give its path.")
    where = getattr(transport, "where", profile.name)
    tflite = [f for f in files if f.runtime == TFLITE.runtime]
    warnings = [] if len(tflite) == len(files) else [
        "benchmark_model runs .tflite only: the .onnx files were skipped (give the phone Python to run them)."]
    if not tflite:
        raise DeviceError(f"{where} runs benchmark_model, which needs a .tflite file: export one.")
    workdir = transport.make_temp_dir()
    results = []
    try:
        transport.push(binary, f"{workdir}/benchmark_model")
        transport.run(["chmod", "755", f"{workdir}/benchmark_model"], 60)
        info = adb_properties(transport)
        for i, f in enumerate(tflite):
            remote = f"{workdir}/m{i}{TFLITE.suffix}"
            transport.push(f.path, remote)
            for threads in options.threads or profile.threads:
                argv = benchmark_model.command(
                    f"{workdir}/benchmark_model", remote, threads, options.warmup_seconds, options.warmup_runs,
                    options.runs, options.min_seconds, options.cores or profile.cores, options.op_profile)
                done = transport.run(remote_argv(profile, argv, profile.timeout_s), profile.timeout_s + 30)
                try:
                    parsed = benchmark_model.parse(done.stdout + "\n" + done.stderr)
                except benchmark_model.BenchmarkOutputError as exc:
                    raise DeviceError(f"benchmark_model failed on {where}: {exc}") from None
                parsed.update(runtime="benchmark_model", runtime_version=None, threads=threads)
                results.append(_finish(parsed, f, options.op_profile))
    finally:
        with contextlib.suppress(EdgekitError):
            transport.remove_dir(workdir)
    return DeviceRun(profile.name, profile.transport, info, results, warnings)


def bench_device(profile: DeviceProfile, files: list[ModelFile], options: BenchOptions) -> DeviceRun:
    transport = connect(profile)
    if profile.transport == "adb" and profile.adb and profile.adb.benchmark_model:
        run = run_benchmark_model(profile, transport, files, options)
    else:
        run = run_harness(profile, transport, files, options)
    run.warnings += device_warnings(profile, run)
    return run


# --- what the figures say -----------------------------------------------------------------------------------------


def device_warnings(profile: DeviceProfile, run: DeviceRun) -> list[str]:
    warnings = []
    info = run.info
    if profile.arch and info.get("arch") and info["arch"] != profile.arch:
        warnings.append(f"{profile.name} reports arch {info['arch']}, its profile says {profile.arch}: "
                        "is the profile pointing at the right device?")
    before, after = info.get("before", {}), info.get("after", {})
    governors = after.get("governors") or []
    if governors and governors != ["performance"]:
        warnings.append(f"CPU governor is {'/'.join(governors)}, not performance: timings vary with frequency "
                        "scaling (echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor).")
    throttled = after.get("throttled")
    if throttled and (throttled & 0xF or throttled != before.get("throttled")):
        warnings.append(f"the device throttled during the run (get_throttled=0x{throttled:x}): cool it, or add a "
                        "heatsink/fan, and run again.")
    temp = after.get("temperature_c")
    if temp is not None and temp >= 80:
        warnings.append(f"the SoC reached {temp:.0f} C: it is likely to throttle.")
    for r in run.results:
        r["warnings"] = result_warnings(r)
    spiky = [r for r in run.results if r["steady"]["p50_ms"] and r["steady"]["max_ms"] > 3 * r["steady"]["p50_ms"]]
    if spiky:
        worst = max(spiky, key=lambda r: r["steady"]["max_ms"] / r["steady"]["p50_ms"])
        s = worst["steady"]
        warnings.append(f"outliers in {len(spiky)} of {len(run.results)} configurations (worst: {worst['file']} "
                        f"x{worst['threads']}, max {s['max_ms']:.2f} ms against a median of {s['p50_ms']:.2f} ms): "
                        "background load or throttling; see the max and p99 columns.")
    return warnings


def result_warnings(r: dict[str, Any]) -> list[str]:
    warnings = []
    delegation = r.get("delegation", {})
    if r["runtime_kind"] == TFLITE.runtime and delegation.get("known") and "nodes" in delegation:
        if delegation.get("delegated", 0) == 0:
            warnings.append("XNNPACK took none of the graph: it ran on TFLite's reference kernels.")
        elif delegation["delegated"] < delegation["nodes"]:
            left = ", ".join(delegation.get("left_on_cpu", [])) or "some ops"
            warnings.append(f"XNNPACK took {delegation['delegated']} of {delegation['nodes']} nodes in "
                            f"{delegation['partitions']} partitions; {left} ran outside it.")
    warnings += r.get("delegate_warnings", [])
    noisy = repeat_warning(r)
    if noisy:
        warnings.append(noisy)
    check = r.get("vs_this_machine")
    if check and not check["matches"]:
        warnings.append(f"the device's outputs differ from this machine's on the same {check['inputs']} inputs (max "
                        f"abs diff {check['max_abs_diff']:.3g} > {check['tolerance']:.3g}; top class the same on "
                        f"{check['argmax_agree']} of {check['inputs']}): check the runtime versions.")
    return warnings


# --- the manifest ----------------------------------------------------------------------------------------------------


def record(runs: list[DeviceRun], options: BenchOptions) -> list[Path]:
    """Append every run to its artifact's manifest (under a lock, written atomically); returns the manifests."""
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    by_artifact: dict[Path, list[dict[str, Any]]] = {}
    for run in runs:
        device = {"name": run.device, "transport": run.transport,
                  **{k: run.info.get(k) for k in ("arch", "cpu_model", "cpu_features", "cores", "python", "runtimes",
                                                  "abi")
                     if run.info.get(k) is not None},
                  "governors": run.info.get("after", {}).get("governors"),
                  "temperature_c": run.info.get("after", {}).get("temperature_c")}
        for r in run.results:
            entry = {"time": when, "device": device, "cores_pinned": run.info.get("cores_pinned"),
                     "settings": {"warmup_runs": options.warmup_runs, "warmup_seconds": options.warmup_seconds,
                                  "runs": options.runs, "min_seconds": options.min_seconds,
                                  "rounds": options.rounds, "processes": options.processes,
                                  "clock": options.clock},
                     **r, "warnings": run.warnings + r.get("warnings", [])}
            artifact = r.get("_artifact")
            if artifact is not None:
                by_artifact.setdefault(artifact, []).append({k: v for k, v in entry.items() if k != "_artifact"})
    for artifact, entries in by_artifact.items():
        update_manifest(artifact, lambda manifest, entries=entries: manifest.bench.extend(entries))
    return [a / MANIFEST for a in by_artifact]


def bench_target(target: Path, profiles: list[DeviceProfile], options: BenchOptions,
          on_done: Callable[[DeviceRun | EdgekitError, DeviceProfile], None] | None = None,
          ) -> tuple[list[DeviceRun], list[tuple[DeviceProfile, EdgekitError]]]:
    """Benchmark `target` on every device, concurrently; a failing device doesn't stop the others."""
    files = model_files(target, options.runtime)
    runs: list[DeviceRun] = []
    failures: list[tuple[DeviceProfile, EdgekitError]] = []

    def one(profile: DeviceProfile) -> DeviceRun | EdgekitError:
        try:
            run = bench_device(profile, files, options)
        except EdgekitError as exc:
            return exc
        artifact_of = {f.label: f.artifact for f in files}
        for r in run.results:
            r["_artifact"] = artifact_of.get(r["file"])
        return run

    with ThreadPoolExecutor(max_workers=max(1, len(profiles))) as pool:
        for profile, outcome in zip(profiles, pool.map(one, profiles), strict=True):
            if on_done:
                on_done(outcome, profile)
            if isinstance(outcome, EdgekitError):
                failures.append((profile, outcome))
            else:
                runs.append(outcome)
    record(runs, options)
    for run in runs:
        for r in run.results:
            r.pop("_artifact", None)
    return runs, failures
