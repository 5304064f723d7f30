"""TFLite's `benchmark_model` binary on Android: the command line edgekit runs and a parser for what it prints.

The parser reads the tool's own log lines, with or without a logcat/INFO prefix, in the formats its releases print:
  count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798 [p5=.. median=.. p95=..]
  Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): ...
  Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
  Replacing 66 out of 66 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions ...
and, with --enable_op_profiling, its "Summary by node type" and "Top by Computation Time" tables.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
_COUNT = re.compile(r"count=(\d+)(.*)$")
_FIELD = re.compile(rf"(\w+)={_NUMBER}")
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
    rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}")
_MEMORY = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                     rf"init={_NUMBER} overall={_NUMBER}")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUMBER}")
_REPLACING = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\) node, yielding (\d+) partition")
_NOT_DELEGATED = re.compile(r"will not be executed by the delegate|failed to apply", re.IGNORECASE)


class BenchmarkOutputError(ValueError):
    """benchmark_model's output lacked the figures edgekit needs (it failed, or its format changed)."""


def _strip_prefix(line: str) -> str:
    # logcat ("I tflite  : ...") and stderr ("INFO: ...") prefixes.
    for marker in ("tflite  : ", "tflite: ", "INFO: "):
        if marker in line:
            return line.split(marker, 1)[1]
    return line.strip()


def _section_rows(lines: list[str], title: str) -> list[list[str]]:
    """The tab-separated rows of one op-profiling table, header excluded."""
    rows: list[list[str]] = []
    inside = False
    for line in lines:
        if title in line:
            inside, rows = True, []
            continue
        if not inside:
            continue
        if line.startswith("=====") or not line.strip():
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().split("\t") if c.strip()]
        if cells and not cells[0].startswith("["):
            rows.append(cells)
    return rows


def parse(output: str) -> dict[str, Any]:
    """Figures from benchmark_model's output, in ms and MB, in the shape the Python harness reports."""
    lines = [_strip_prefix(line) for line in output.replace("\r", "").splitlines()]
    counts = []
    result: dict[str, Any] = {}
    for line in lines:
        if match := _COUNT.search(line):
            counts.append({"count": int(match.group(1)),
                           **{k: float(v) for k, v in _FIELD.findall(match.group(2))}})
        elif match := _TIMINGS.search(line):
            init, first, warmup, inference = (float(v) / 1000.0 for v in match.groups())
            result.update(load_ms=init, first_ms=first, warmup_mean_ms=warmup, inference_mean_ms=inference)
        elif match := _MEMORY.search(line):
            result["memory_init_mb"], result["memory_overall_mb"] = float(match.group(1)), float(match.group(2))
        elif match := _PEAK.search(line):
            result["memory_peak_mb"] = float(match.group(1))
        elif match := _REPLACING.search(line):
            result["delegation"] = {"known": True, "delegated": int(match.group(1)), "nodes": int(match.group(2)),
                                    "delegate": match.group(3), "partitions": int(match.group(4))}
        elif _NOT_DELEGATED.search(line):
            result.setdefault("delegate_warnings", []).append(line.strip())
    if "inference_mean_ms" not in result or len(counts) < 2:
        tail = " | ".join(line for line in lines[-3:] if line)
        raise BenchmarkOutputError(f"benchmark_model printed no timing summary (last lines: {tail!r})")
    warm, steady = counts[-2], counts[-1]
    us = 1000.0
    result["warmup"] = {"count": warm["count"], "mean_ms": result.pop("warmup_mean_ms")}
    result["steady"] = {
        "count": steady["count"],
        "mean_ms": steady.get("avg", result["inference_mean_ms"] * us) / us,
        "std_ms": steady.get("std", 0.0) / us,
        "min_ms": steady["min"] / us,
        "p50_ms": steady["median"] / us if "median" in steady else None,
        "p90_ms": None,
        "p99_ms": None,
        "max_ms": steady["max"] / us,
    }
    result.pop("inference_mean_ms")
    by_type = _section_rows(lines, "Summary by node type")
    if by_type:
        top = _section_rows(lines, "Top by Computation Time")
        result["op_profile"] = {
            "by_op_type_ms": {row[0]: float(row[2]) for row in by_type},
            "top_nodes": [{"node": row[-1], "op": row[0], "ms": float(row[3])} for row in top],
        }
    return result


def command(binary: str, graph: str, threads: int, warmup_seconds: float, warmup_runs: int, runs: int,
            min_seconds: float, cores: str | None, op_profile: bool) -> list[str]:
    """The argv edgekit runs on the phone (paths are ones edgekit chose on the device)."""
    argv = [binary, f"--graph={graph}", f"--num_threads={threads}", "--use_xnnpack=true",
            f"--warmup_runs={warmup_runs}", f"--warmup_min_secs={warmup_seconds:g}",
            f"--num_runs={runs}", f"--min_secs={min_seconds:g}", "--report_peak_memory_footprint=true"]
    if op_profile:
        argv.append("--enable_op_profiling=true")
    return ["taskset", cores, *argv] if cores else argv
