"""Read back the latency figures `edgekit bench` appended to a manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.benchmark.repeat import Figure

if TYPE_CHECKING:
    from edgekit.manifest import Manifest


@dataclass(frozen=True)
class LatencyKey:
    device: str
    runtime: str  # "tflite" or "onnxruntime": the runtime kind, not its version
    threads: int
    file: str

    @property
    def label(self) -> str:
        return f"{self.device}/{self.runtime}/{self.threads}t/{self.file}"

    @property
    def setting(self) -> str:
        """The device, runtime and threads without the file: where two files' latencies compare."""
        return f"{self.device} {self.runtime} x{self.threads}"


def latest_latencies(manifest: Manifest) -> dict[LatencyKey, dict[str, Any]]:
    """The newest bench entry per device, runtime, threads and file, for files still as they were measured.

    An entry whose sha256 is not the current file's measured an earlier export and is left out.
    """
    current = {rec.file: rec.sha256 for rec in manifest.files.values()}
    latest: dict[LatencyKey, dict[str, Any]] = {}
    for entry in manifest.bench:
        if current.get(entry.get("file")) != entry.get("sha256") or "p50_ms" not in entry.get("steady", {}):
            continue
        key = LatencyKey(entry["device"]["name"], entry.get("runtime_kind") or entry["runtime"],
                         int(entry["threads"]), entry["file"])
        if key not in latest or entry.get("time", "") >= latest[key].get("time", ""):
            latest[key] = entry
    return latest


def latest_p50(manifest: Manifest) -> dict[LatencyKey, float]:
    """The steady-state median (ms) of each newest entry."""
    return {key: entry["steady"]["p50_ms"] for key, entry in latest_latencies(manifest).items()}


def latest_figures(manifest: Manifest) -> dict[LatencyKey, Figure]:
    """The steady-state median of each newest entry with its interval (edgekit/benchmark/repeat.py), where recorded."""
    return {key: Figure.of(entry) for key, entry in latest_latencies(manifest).items()}
