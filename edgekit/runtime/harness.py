"""The on-device benchmark harness: one self-contained script, numpy plus whichever runtime the device has.

edgekit copies this file to the device (or runs it locally) and reads the JSON it prints. It imports nothing from
edgekit, so it runs wherever python3 and numpy do. The measurement follows TFLite's benchmark_model: model load,
first inference, warm-up (at least --warmup-runs and --warmup-seconds), then steady state (at least --runs and
--min-seconds), with every configuration's steady-state runs interleaved in rounds so that drift (thermal
throttling, a background job) hits all of them alike instead of the last one. With --processes N the timing runs in
N fresh processes, one after another, each timing every configuration for its share of the runs: what varies from
one invocation to the next is the process (its memory layout, the core it lands on, the machine's state while it
runs), so each configuration's per-process medians are what an interval for it is built from.

    python3 harness.py --model m.tflite --input m.npy --threads 1,2 --json-out result.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HARNESS_VERSION = 3

# The harness's own copy of edgekit's format table (edgekit/runtime/formats.py, which a test holds it to): it runs
# where edgekit is not installed. Model file suffix -> runtime, and per runtime the (package, module) that provide it.
SUFFIX_RUNTIME = {".tflite": "tflite", ".onnx": "onnxruntime"}
RUNTIME_PACKAGES = {
    "tflite": (("ai-edge-litert", "ai_edge_litert"), ("tflite-runtime", "tflite_runtime"),
               ("tensorflow", "tensorflow")),
    "onnxruntime": (("onnxruntime", "onnxruntime"),),
}


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip("\x00\n ")
    except OSError:
        return None


def _cpu_model() -> str | None:
    model = _read("/sys/firmware/devicetree/base/model")
    if model:
        return model
    text = _read("/proc/cpuinfo") or ""
    for key in ("Model", "model name", "Hardware"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or None


def _cpu_parts() -> list[str]:
    """ARM 'CPU part' ids per core (0xd08 = Cortex-A72, ...): how big.LITTLE cores tell apart."""
    text = _read("/proc/cpuinfo") or ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("CPU part")]


# The instructions INT8 and FP16 kernels (XNNPACK, ONNX Runtime) use where a CPU has them, as /proc/cpuinfo
# names them: x86 "flags", ARM "Features".
CPU_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                "asimd", "asimdhp", "asimddp", "i8mm", "sve")
# 8-bit dot products (x86 VNNI/AMX, ARM SDOT/SMMLA): without them INT8 convolutions widen to 16 bits and often
# run no faster than FP32, so an INT8/FP32 speed-up below 1 is the CPU's, not the file's.
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def _cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU's feature flags (x86 "flags", ARM "Features" in /proc/cpuinfo); None where none can be read."""
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    flags: set[str] = set()
    for line in (text or "").splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags or None


def cpu_features(cpuinfo: str | None = None) -> dict:
    """The CPU features that matter to INT8 and FP16 kernels, and whether it has 8-bit dot products (None where
    /proc/cpuinfo lists no flags)."""
    flags = _cpu_flags(cpuinfo)
    if flags is None:
        return {"flags": [], "int8_dot_product": None}
    return {"flags": [f for f in CPU_FEATURES if f in flags],
            "int8_dot_product": any(f in flags for f in INT8_DOT_PRODUCT)}


def _governors() -> list[str]:
    found = []
    for cpu in range(os.cpu_count() or 1):
        governor = _read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
        if governor:
            found.append(governor)
    return sorted(set(found))


def _temperature_c() -> float | None:
    text = _read("/sys/class/thermal/thermal_zone0/temp")
    try:
        return int(text) / 1000.0 if text else None
    except ValueError:
        return None


def _per_cpu_ints(name: str) -> list[int]:
    """One cpufreq figure (scaling_cur_freq, cpuinfo_max_freq, ...) per core that exposes it."""
    found = []
    for cpu in range(os.cpu_count() or 1):
        text = _read(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}")
        if text and text.isdigit():
            found.append(int(text))
    return found


def _rss_mb() -> float | None:
    text = _read("/proc/self/statm")
    if not text:
        return None
    return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _throttled() -> int | None:
    """The Raspberry Pi firmware's throttle bits (vcgencmd get_throttled), None where there is no such tool."""
    import subprocess

    try:
        done = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5)
        return int(done.stdout.strip().split("=")[1], 16)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def device_state() -> dict:
    return {
        "throttled": _throttled(),
        "cpu_model": _cpu_model(),
        "cpu_parts": _cpu_parts(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "governors": _governors(),
        "temperature_c": _temperature_c(),
        "frequencies_khz": _per_cpu_ints("scaling_cur_freq"),
        "max_frequencies_khz": _per_cpu_ints("cpuinfo_max_freq"),
    }


def _mem_available_mb() -> float | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return None


def probe() -> dict:
    """What this device is and which runtimes it has: `edgekit devices check` prints it."""
    runtimes = {}
    for name, module in (package for packages in RUNTIME_PACKAGES.values() for package in packages):
        try:
            imported = __import__(module)
            runtimes[name] = getattr(imported, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - a broken install is as good as none here
            continue
    free = None
    try:
        stat = os.statvfs(os.getcwd())
        free = stat.f_bavail * stat.f_frsize / 2**20
    except OSError:
        pass
    return {
        "arch": platform.machine(),
        "system": platform.system(),
        "mem_available_mb": _mem_available_mb(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "runtimes": runtimes,
        "free_mb": free,
        **device_state(),
    }


# --- runtimes ---------------------------------------------------------------------------------------------------


class NoRuntime(ImportError):
    """This machine has no package for the runtime a model needs."""


def _tflite_module() -> tuple[str, str, object]:
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter
        return "ai-edge-litert", getattr(ai_edge_litert, "__version__", "unknown"), interpreter
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime import interpreter
        return "tflite-runtime", getattr(tflite_runtime, "__version__", "unknown"), interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf
        return "tensorflow", tf.__version__, tf.lite
    except ImportError:
        raise NoRuntime("no TFLite runtime on this machine: pip install ai-edge-litert (or tflite-runtime)") from None


def load_tflite(path: str, threads: int, xnnpack: bool = True, keep_tensors: bool = False
                ) -> tuple[str, str, object]:
    """(package, version, interpreter) for a .tflite file, from ai-edge-litert, else tflite-runtime, else
    tensorflow; xnnpack=False keeps the default delegates out (TFLite's built-in kernels). keep_tensors keeps
    every intermediate tensor readable after invoke (only the built-in kernels keep them: give xnnpack=False)."""
    runtime, version, module = _tflite_module()
    kwargs = {"model_path": path, "num_threads": threads}
    if keep_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    resolver = getattr(module, "OpResolverType", None)
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = (
            resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return runtime, version, module.Interpreter(**kwargs)


def kept_tensors(path: str, inputs: np.ndarray, indices: list[int]) -> dict[str, np.ndarray]:
    """The values of a .tflite file's tensors `indices` for each input (stacked on axis 0, in the file's layout,
    float), on TFLite's built-in kernels with every intermediate tensor kept (a delegate keeps none): arrays
    "t<index>" stacked like the inputs."""
    _, _, interpreter = load_tflite(path, threads=1, xnnpack=False, keep_tensors=True)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    values: dict[int, list] = {i: [] for i in indices}
    for x in inputs:
        interpreter.set_tensor(detail["index"], quantize(np.ascontiguousarray(x), detail))
        interpreter.invoke()
        for i in indices:
            values[i].append(np.array(interpreter.get_tensor(i)))
    return {f"t{i}": np.stack(v) for i, v in values.items()}


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float array as the value of a tensor described by `detail` (TFLite's {"dtype", "quantization": (scale,
    zero_point)}): cast for a float tensor, else round(x / scale) + zero_point, rounding half to even as ONNX's
    QuantizeLinear and XNNPACK do, clipped to the dtype's range (int8, uint8, int16, ...). An integer tensor
    without a scale (ids, masks) takes the values as they are."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.asarray(x, dtype=dtype)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        return np.asarray(x).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(x) / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    """A tensor's value as float32: (y - zero_point) * scale for a quantized tensor, else the values cast."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return np.asarray(y).astype(np.float32)
    return (np.asarray(y).astype(np.float32) - zero_point) * np.float32(scale)


def _delegated(interpreter: object) -> dict:
    """How many of the graph's nodes a delegate (XNNPACK) took, and in how many partitions."""
    try:
        ops = interpreter._get_ops_details()  # noqa: SLF001 - the only view of the execution plan from Python
    except Exception:  # noqa: BLE001
        return {"known": False}
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op for op in nodes for t in op["outputs"]}
    taken: set[int] = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [int(t) for t in delegate["outputs"]]
        while stack:
            op = producer.get(stack.pop())
            if op is None or op["index"] in taken:
                continue
            taken.add(op["index"])
            stack.extend(int(t) for t in op["inputs"] if int(t) not in boundary)
    left = sorted({op["op_name"] for op in nodes if op["index"] not in taken})
    return {"known": True, "nodes": len(nodes), "delegated": len(taken), "partitions": len(delegates),
            "left_on_cpu": left}


class TFLiteModel:
    """One .tflite file: set_input takes float values in the file's own layout (quantized here for an int8 input),
    output_value gives float32 (dequantized for an int8 output)."""

    def __init__(self, path: str, threads: int, xnnpack: bool = True) -> None:
        self.runtime, self.version, self.interpreter = load_tflite(path, threads, xnnpack)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.delegation = _delegated(self.interpreter) if xnnpack else {"known": True, "delegated": 0}

    def input_shape(self) -> list:
        return [int(d) for d in self.input["shape"]]

    def set_input(self, x: np.ndarray) -> None:
        self.interpreter.set_tensor(self.input["index"], quantize(x, self.input))

    def invoke(self) -> None:
        self.interpreter.invoke()

    def output_value(self) -> np.ndarray:
        return dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)


def int8_products_saturate() -> bool:
    """True on x86 CPUs without VNNI, where ONNX Runtime's U8S8 kernels add pairs of 8-bit products in a
    saturating int16 (vpmaddubsw): full-range int8 weights then give wrong outputs, worst in efficient models.
    Where the flags can't be read (no /proc/cpuinfo), an x86 CPU is assumed to be one of them."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    flags = _cpu_flags()
    return flags is None or not {"avx512_vnni", "avx_vnni"} & flags


# The session config entry that keeps ORT's int8 products exact on those CPUs (the slower U8U8 path for weights
# outside [-64, 64]). edgekit's INT8 ONNX files carry it in their metadata (EXACT_INT8_METADATA) for other runners.
EXACT_INT8_CONFIG = {"session.x64quantprecision": "1"}
EXACT_INT8_METADATA = "onnxruntime_session_config_x86_without_vnni"


def ort_session_options(threads: int, exact_int8: bool | None = None):  # noqa: ANN201 (ort.SessionOptions)
    """Session options edgekit runs every ONNX model with: on CPUs whose int8 products saturate (`exact_int8`,
    read from the CPU when not given), ORT's exact (slower) U8U8 path for weights outside [-64, 64]."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if int8_products_saturate() if exact_int8 is None else exact_int8:
        for key, value in EXACT_INT8_CONFIG.items():
            options.add_session_config_entry(key, value)
    return options


# ONNX Runtime's input types, as numpy dtypes (an int8 ONNX input carries no scale here: values are cast).
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
              "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class OnnxModel:
    """One .onnx file on ONNX Runtime's CPU provider: set_input casts to the input's type, output_value is float32."""

    def __init__(self, path: str, threads: int, profile_dir: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise NoRuntime("no ONNX Runtime on this machine: pip install onnxruntime") from None

        self.runtime, self.version = "onnxruntime", ort.__version__
        exact_int8 = int8_products_saturate()
        options = ort_session_options(threads, exact_int8)
        if profile_dir:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(profile_dir, f"ort_t{threads}")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.feed: dict = {}
        self.result: list = []
        self.delegation = {"known": True, "provider": self.session.get_providers()[0],
                           "exact_int8": exact_int8}

    def input_shape(self) -> list:
        return list(self.input.shape)

    def set_input(self, x: np.ndarray) -> None:
        self.feed = {self.input.name: np.asarray(x, dtype=ORT_DTYPES.get(self.input.type, np.float32))}

    def invoke(self) -> None:
        self.result = self.session.run(None, self.feed)

    def output_value(self) -> np.ndarray:
        return np.asarray(self.result[0], dtype=np.float32)


def open_model(path: str, runtime: str, threads: int, profile_dir: str | None = None):  # noqa: ANN201
    if runtime == "auto":
        runtime = SUFFIX_RUNTIME.get(os.path.splitext(path)[1].lower(), "tflite")
    if runtime == "onnxruntime":
        return OnnxModel(path, threads, profile_dir)
    return TFLiteModel(path, threads)


# --- measurement ------------------------------------------------------------------------------------------------


def summarize(times_ms: list[float]) -> dict:
    values = np.asarray(times_ms, dtype=np.float64)
    return {
        "count": int(values.size),
        "mean_ms": float(values.mean()),
        "std_ms": float(values.std()),
        "min_ms": float(values.min()),
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
    }


def _timed(model: object) -> float:
    start = time.perf_counter()
    model.invoke()
    return (time.perf_counter() - start) * 1000.0


def _timed_both(model: object) -> tuple[float, float]:
    """One run's wall time and the calling thread's CPU time, in ms. At one thread both runtimes compute on the
    calling thread, so its CPU time is the model's cost without the time other processes took the core."""
    cpu = time.thread_time()
    start = time.perf_counter()
    model.invoke()
    wall = time.perf_counter() - start
    return wall * 1000.0, (time.thread_time() - cpu) * 1000.0


CLOCKS = ("wall", "cpu")


def clock_for(clock: str, threads: int) -> str:
    """The clock a configuration is timed by: "cpu" (the thread's CPU time) only at one thread; with a thread
    pool the work runs on other threads too, and their summed CPU time (spinning included) is not a latency."""
    return "cpu" if clock == "cpu" and threads == 1 else "wall"


def _round_medians(times: list[float], bounds: list[int]) -> list[float]:
    medians, start = [], 0
    for end in bounds:
        if end > start:
            medians.append(float(np.median(times[start:end])))
        start = end
    return medians


def measure(configs: list[dict], warmup_runs: int, warmup_seconds: float, runs: int, min_seconds: float,
            rounds: int, profile_dir: str | None = None, keep_times: bool = False,
            all_nodes: bool = False, clock: str = "wall") -> list[dict]:
    """Load, first inference and warm-up per configuration, then interleaved steady-state rounds.

    Every run is timed by the wall clock and by the calling thread's CPU time; `clock` picks the one the figures
    ("steady", "round_p50_ms": each round's median, in round order) are of (see clock_for). keep_times adds each
    configuration's steady-state times in run order ("times_ms", and "cpu_times_ms"), round after round, and the
    runs each round gives it ("runs_per_round"). all_nodes: the profile (profile_dir) lists every node, in the
    order they ran, not only the slowest.
    """
    results = []
    models = []
    for config in configs:
        rss_before = _rss_mb()
        start = time.perf_counter()
        model = open_model(config["model"], config["runtime"], config["threads"], profile_dir)
        load_ms = (time.perf_counter() - start) * 1000.0
        model.set_input(np.load(config["input"]))
        first_ms = _timed(model)
        output = model.output_value()
        rss_after = _rss_mb()
        warm = []
        deadline = time.perf_counter() + warmup_seconds
        while len(warm) < warmup_runs or time.perf_counter() < deadline:
            warm.append(_timed(model))
        models.append(model)
        results.append({
            "model": os.path.basename(config["model"]),
            "runtime": model.runtime,
            "runtime_version": model.version,
            "threads": config["threads"],
            "delegation": model.delegation,
            "load_ms": load_ms,
            "first_ms": first_ms,
            "warmup": {"count": len(warm), "mean_ms": float(np.mean(warm))},
            "rss_load_mb": None if rss_before is None else rss_after - rss_before,
            "output": output.reshape(-1)[:1000].tolist(),
            "clock": clock_for(clock, config["threads"]),
            "_times": [],
            "_cpu": [],
            "_bounds": [],
        })
    # Each round gives every configuration an equal share of runs; stop once all meet both minimums.
    per_round = max(1, math.ceil(runs / max(1, rounds)))
    spent = [0.0] * len(models)
    while True:
        pending = [i for i, r in enumerate(results) if len(r["_times"]) < runs or spent[i] < min_seconds * 1000.0]
        if not pending:
            break
        for i in pending:
            for _ in range(per_round):
                wall, cpu = _timed_both(models[i])
                results[i]["_times"].append(wall)
                results[i]["_cpu"].append(cpu)
                spent[i] += wall
            results[i]["_bounds"].append(len(results[i]["_times"]))
    for model, result in zip(models, results):  # noqa: B905 - runs on Pythons before 3.10
        wall, cpu, bounds = result.pop("_times"), result.pop("_cpu"), result.pop("_bounds")
        times = cpu if result["clock"] == "cpu" else wall
        result["steady"] = summarize(times)
        result["round_p50_ms"] = _round_medians(times, bounds)
        if keep_times:
            result["times_ms"], result["cpu_times_ms"], result["runs_per_round"] = wall, cpu, per_round
        if profile_dir and isinstance(model, OnnxModel):
            result["op_profile"] = _onnx_op_profile(model.session.end_profiling(), all_nodes=all_nodes)
    for config, model, result in zip(configs, models, results):  # noqa: B905
        if config.get("checks"):  # after the timing, which they would disturb
            result["check_outputs"] = check_outputs(model, np.load(config["checks"]))
    return results


def check_outputs(model: object, inputs: np.ndarray) -> list[list[float]]:
    """The model's output (its first 1000 values) for each input stacked along axis 0, to compare with the host's:
    whether this device's kernels compute what the host's do, on several real images."""
    outputs = []
    for x in inputs:
        model.set_input(x)
        model.invoke()
        outputs.append(model.output_value().reshape(-1)[:1000].tolist())
    return outputs


def _onnx_op_profile(path: str, top: int = 10, all_nodes: bool = False) -> dict:
    """ONNX Runtime's per-node trace, summed by op type and by node (mean ms per inference); with all_nodes,
    also every node in the order it ran ("nodes": [name, ms])."""
    with open(path, encoding="utf-8") as f:
        events = json.load(f)
    os.remove(path)
    runs = sum(1 for e in events if e.get("name") == "model_run") or 1
    by_type: dict[str, float] = {}
    by_node: dict[str, list] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        op = event.get("args", {}).get("op_name", "?")
        ms = event.get("dur", 0) / 1000.0 / runs
        by_type[op] = by_type.get(op, 0.0) + ms
        node = by_node.setdefault(event["name"][: -len("_kernel_time")], [op, 0.0])
        node[1] += ms
    nodes = sorted(by_node.items(), key=lambda item: -item[1][1])[:top]
    profile = {"by_op_type_ms": dict(sorted(by_type.items(), key=lambda item: -item[1])),
               "top_nodes": [{"node": name, "op": op, "ms": ms} for name, (op, ms) in nodes]}
    if all_nodes:  # a dict keeps the order nodes first ran in
        profile["nodes"] = [[name, ms] for name, (_, ms) in by_node.items()]
    return profile


def _set_cores(mask: str | None) -> list[int] | None:
    if not mask:
        return None
    value = int(mask, 16)
    cores = [bit for bit in range(value.bit_length()) if value >> bit & 1]
    os.sched_setaffinity(0, cores)
    return cores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", action="store_true", help="print what this device has and exit")
    parser.add_argument("--model", action="append", default=[], help="a .tflite or .onnx file (repeatable)")
    parser.add_argument("--input", action="append", default=[], help="an .npy input per --model, in its layout")
    parser.add_argument("--check-input", action="append", default=[],
                        help="an .npy of inputs stacked on axis 0 per --model: their outputs come back to compare")
    parser.add_argument("--runtime", default="auto", choices=["auto", *RUNTIME_PACKAGES])
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--warmup-runs", type=int, default=1)
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1,
                        help="time in this many fresh processes, one after another, each with its share of the runs")
    parser.add_argument("--clock", default="wall", choices=CLOCKS,
                        help="time runs by the wall clock, or (at one thread) by the thread's CPU time")
    parser.add_argument("--keep-times", action="store_true", help="every run's times in the JSON")
    parser.add_argument("--cores", help="hex CPU mask to pin to, e.g. f0 for the big cores of a 4+4 SoC")
    parser.add_argument("--op-profile", help="directory for ONNX Runtime's per-operator profile")
    parser.add_argument("--all-nodes", action="store_true", help="the profile lists every node, in run order")
    parser.add_argument("--json-out", help="write the JSON here instead of stdout")
    parser.add_argument("--kept-tensors", metavar="NPZ",
                        help="instead of timing: write the values of --tensor-ids of the one --model (a .tflite) "
                             "for each of the --input's inputs (stacked on axis 0) into this .npz")
    parser.add_argument("--tensor-ids", default="", help="comma-separated tensor indices, with --kept-tensors")
    args = parser.parse_args(argv)
    try:
        report = probe() if args.probe else _kept(parser, args) if args.kept_tensors else _bench(parser, args)
    except NoRuntime as exc:
        raise SystemExit(str(exc)) from None
    text = json.dumps(report)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)


def _kept(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    if len(args.model) != 1 or len(args.input) != 1:
        parser.error("--kept-tensors takes one --model and one --input")
    indices = [int(i) for i in args.tensor_ids.split(",") if i]
    arrays = kept_tensors(args.model[0], np.load(args.input[0]), indices)
    np.savez(args.kept_tensors, **arrays)
    return {"harness": HARNESS_VERSION, "arch": platform.machine(), "tensors": len(arrays)}


def _bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """Measure every --model at every --threads count: the JSON main prints."""
    if len(args.input) != len(args.model) or args.check_input and len(args.check_input) != len(args.model):
        parser.error("give one --input (and --check-input, if any) per --model")
    if args.processes > 1:
        return _bench_in_processes(args)
    cores = _set_cores(args.cores)
    threads = [int(t) for t in args.threads.split(",")]
    checks = args.check_input or [None] * len(args.model)
    # A file's check outputs once, at its first thread count: its other configurations compare their timed input.
    configs = [{"model": m, "input": i, "checks": c if t == threads[0] else None, "runtime": args.runtime, "threads": t}
               for m, i, c in zip(args.model, args.input, checks) for t in threads]  # noqa: B905
    before = device_state()
    results = measure(configs, args.warmup_runs, args.warmup_seconds, args.runs, args.min_seconds,
                      args.rounds, args.op_profile, keep_times=args.keep_times, all_nodes=args.all_nodes,
                      clock=args.clock)
    return {"harness": HARNESS_VERSION, "arch": platform.machine(), "python": platform.python_version(),
            "cores_pinned": cores, "before": before, "after": device_state(),
            "peak_rss_mb": _peak_rss_mb(), "results": results}


def _child_argv(args: argparse.Namespace, first: bool) -> list[str]:
    """A child harness's command line: every setting, with its share of the warm-up and steady-state budget; the
    first child also profiles and computes the check outputs."""
    share = args.processes
    argv = [sys.executable, os.path.abspath(__file__), "--processes", "1", "--keep-times", "--runtime", args.runtime,
            "--threads", args.threads, "--clock", args.clock, "--warmup-runs", str(args.warmup_runs),
            "--warmup-seconds", str(args.warmup_seconds / share), "--runs", str(math.ceil(args.runs / share)),
            "--min-seconds", str(args.min_seconds / share), "--rounds", str(math.ceil(args.rounds / share))]
    for model, x in zip(args.model, args.input):  # noqa: B905 - runs on Pythons before 3.10
        argv += ["--model", model, "--input", x]
    if args.cores:
        argv += ["--cores", args.cores]
    if first and args.op_profile:  # one process profiles: the profiler's cost stays out of the others' figures
        argv += ["--op-profile", args.op_profile, *(["--all-nodes"] if args.all_nodes else [])]
    if first:  # and computes the check outputs (merge_processes keeps the first process's)
        for x in args.check_input:
            argv += ["--check-input", x]
    return argv


def _bench_in_processes(args: argparse.Namespace) -> dict:
    """Run --processes child harnesses one after another and merge their reports (merge_processes). Each child
    prints its JSON as its last line of stdout (no temp file: a phone's shell may have no writable /tmp)."""
    reports = []
    for k in range(args.processes):
        done = subprocess.run(_child_argv(args, first=k == 0), capture_output=True, text=True)
        if done.returncode != 0:  # the child's own message (a missing runtime, a bad file) is the one to show
            sys.stderr.write(done.stderr)
            raise SystemExit(done.returncode)
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return merge_processes(reports, keep_times=args.keep_times)


def merge_processes(reports: list[dict], keep_times: bool = False) -> dict:
    """One report from the children's (each with --keep-times, the same configurations in the same order): every
    run pooled into "steady" and the rounds, plus each configuration's per-process p50s ("process_p50_ms").
    Load and first-inference times are the first process's; the device state is from before the first and after
    the last."""
    results = []
    for parts in zip(*(report["results"] for report in reports)):  # noqa: B905
        head = parts[0]
        wall = [t for part in parts for t in part["times_ms"]]
        cpu = [t for part in parts for t in part["cpu_times_ms"]]
        warm = sum(part["warmup"]["count"] for part in parts)
        merged = {k: v for k, v in head.items() if k not in ("times_ms", "cpu_times_ms", "runs_per_round")}
        merged.update(
            warmup={"count": warm,
                    "mean_ms": sum(p["warmup"]["mean_ms"] * p["warmup"]["count"] for p in parts) / max(1, warm)},
            steady=summarize(cpu if head["clock"] == "cpu" else wall),
            round_p50_ms=[m for part in parts for m in part["round_p50_ms"]],
            process_p50_ms=[part["steady"]["p50_ms"] for part in parts])
        if keep_times:
            merged.update(times_ms=wall, cpu_times_ms=cpu, runs_per_round=head["runs_per_round"])
        results.append(merged)
    first, last = reports[0], reports[-1]
    return {**first, "after": last["after"], "peak_rss_mb": max(r["peak_rss_mb"] for r in reports),
            "processes": len(reports), "results": results}


if __name__ == "__main__":
    main()
