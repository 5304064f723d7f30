"""A committed JSON of reference figures per model, that `edgekit check --baseline` compares against.

    {"edgekit_baseline": 1,
     "models": {"mobilenet_v2-w0.75-r32@fashion-mnist": {
         "data": "fashion-mnist (2000 seeded samples)", "samples": 2000,
         "accuracy": {"torch": 0.9205, "onnx_int8": 0.92, "tflite_int8": 0.92},
         "latency_ms": {"local/tflite/1t/model_int8.tflite": 0.41},
         "latency_ci_ms": {"local/tflite/1t/model_int8.tflite": [0.40, 0.43]}}}}

Latency keys are device/runtime/threads/file; latency is optional, and so is each p50's interval (`edgekit bench`
records it; --update-baseline writes it), which widens the interval a check compares against. An interval that
does not hold its p50 (the p50 edited by hand) is ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.core.files import write_output

VERSION = 1


@dataclass
class BaselineEntry:
    accuracy: dict[str, float]
    latency_ms: dict[str, float] = field(default_factory=dict)
    samples: int | None = None
    data: str = ""
    latency_ci_ms: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        found = {"data": self.data, "samples": self.samples, "accuracy": self.accuracy,
                 "latency_ms": self.latency_ms}
        return {**found, "latency_ci_ms": self.latency_ci_ms} if self.latency_ci_ms else found


@dataclass
class Baseline:
    path: Path
    models: dict[str, BaselineEntry]

    def entry(self, key: str) -> BaselineEntry:
        if key not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise EdgekitError(
                f"{self.path} has no entry for {key} (it has: {known}): add it with --update-baseline."
            )
        return self.models[key]

    def set(self, key: str, entry: BaselineEntry) -> None:
        self.models[key] = entry

    def save(self) -> None:
        data = {"edgekit_baseline": VERSION, "models": {k: self.models[k].to_dict() for k in sorted(self.models)}}
        write_output(self.path, json.dumps(data, indent=2) + "\n")


def load_baseline(path: Path, create: bool = False) -> Baseline:
    """Read and validate a baseline; with `create` (--update-baseline) a missing file starts empty."""
    if not path.exists():
        if create:
            return Baseline(path, {})
        raise EdgekitError(f"baseline {path} does not exist: create it with --update-baseline.")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        reason = str(exc)[:200] or "nested too deep"
        raise EdgekitError(f"baseline {path} is not readable JSON ({reason}): fix it, or rewrite it with "
                           "--update-baseline after moving it away.") from None
    if not isinstance(data, dict) or data.get("edgekit_baseline") != VERSION \
            or not isinstance(data.get("models"), dict):
        raise EdgekitError(f"{path} is not an edgekit v{VERSION} baseline (an object with \"edgekit_baseline\": "
                           f"{VERSION} and \"models\"): see docs/check.md for the format.")
    models = {}
    for key, raw in data["models"].items():
        models[key] = _entry(path, key, raw)
    return Baseline(path, models)


def _entry(path: Path, key: str, raw: Any) -> BaselineEntry:
    def bad(what: str) -> EdgekitError:
        return EdgekitError(f"{path}: models.{key}: {what}: see docs/check.md for the format.")

    if not isinstance(raw, dict):
        raise bad("expected an object")
    unknown = set(raw) - {"data", "samples", "accuracy", "latency_ms", "latency_ci_ms"}
    if unknown:
        raise bad(f"unknown key {sorted(unknown)[0]!r}")
    accuracy, latency = raw.get("accuracy", {}), raw.get("latency_ms", {})
    for name, table, lo, hi in (("accuracy", accuracy, 0.0, 1.0), ("latency_ms", latency, 0.0, math.inf)):
        if not isinstance(table, dict):
            raise bad(f"{name} must map names to numbers")
        for k, v in table.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not (lo <= v <= hi) or \
                    (name == "latency_ms" and v == 0):
                raise bad(f"{name}.{k} is {v!r}: expected a number {'in [0, 1]' if hi == 1.0 else 'above 0'}")
    intervals = raw.get("latency_ci_ms", {})
    if not isinstance(intervals, dict):
        raise bad("latency_ci_ms must map latency keys to [low, high] in ms")
    for k, v in intervals.items():
        if not (isinstance(v, list) and len(v) == 2 and all(
                isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < math.inf for x in v)
                and v[0] <= v[1]):
            raise bad(f"latency_ci_ms.{k} is {v!r}: expected [low, high] in ms, low <= high")
    samples = raw.get("samples")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
        raise bad(f"samples is {samples!r}: expected a positive integer or null")
    return BaselineEntry({k: float(v) for k, v in accuracy.items()}, {k: float(v) for k, v in latency.items()},
                         samples, str(raw.get("data", "")), {k: [float(x) for x in v] for k, v in intervals.items()})
