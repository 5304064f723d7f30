"""Soak test: many inferences through every runner edgekit evaluates and benchmarks with, RSS sampled throughout.

    .venv/bin/python tools/soak.py ARTIFACT_DIR [--inferences 10000] [--bound-mib 16] [--json]

Evaluation path: TorchRunner (the checkpoint, when the artifact records one), OnnxRunner and TFLiteRunner for
every file, batch 1. Benchmark path: the harness's model objects (set_input + invoke), as `edgekit bench` runs
them on a device. The growth is RSS at the end minus RSS after the first tenth (allocator and runtime warm-up);
the exit code is 1 when any growth exceeds the bound.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.artifact import locate_artifact  # noqa: E402
from edgekit.benchmark.host import input_shape  # noqa: E402
from edgekit.manifest import read_manifest  # noqa: E402
from edgekit.runtime import harness  # noqa: E402
from edgekit.runtime.open import open_model  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class Soak:
    path: str
    inferences: int
    rss_start_mib: float
    rss_settled_mib: float
    rss_end_mib: float
    rss_max_mib: float

    @property
    def growth_mib(self) -> float:
        return self.rss_end_mib - self.rss_settled_mib


def soak(path: str, step: Callable[[], object], inferences: int, samples: int = 50) -> Soak:
    """Call `step` `inferences` times, sampling RSS `samples` times; settled = after the first tenth."""
    every = max(1, inferences // samples)
    start = rss_mib()
    settled = start
    peak = start
    for i in range(1, inferences + 1):
        step()
        if i % every == 0:
            now = rss_mib()
            peak = max(peak, now)
            if i <= inferences // 10:
                settled = now
    return Soak(path, inferences, start, settled, rss_mib(), peak)


def soak_artifact(artifact: Path, inferences: int) -> list[Soak]:
    directory = locate_artifact(artifact)
    manifest = read_manifest(directory)
    files = sorted(directory / r.file for r in manifest.files.values())
    checkpoint = Path((manifest.source or {}).get("weights") or "")
    results = []
    for path in ([checkpoint] if checkpoint.suffix == ".pt" and checkpoint.is_file() else []) + files:
        opened = open_model(path, threads=1)
        spec = opened.spec
        x = np.random.default_rng(0).standard_normal((1, spec.in_channels, spec.resolution, spec.resolution),
                                                     dtype=np.float32)
        results.append(soak(f"eval {opened.runner.name} {path.name}", lambda r=opened.runner, x=x: r.predict(x),
                            inferences))
    for path in files:
        runtime = "tflite" if path.suffix == ".tflite" else "onnxruntime"
        model = harness.open_model(str(path), runtime, 1)
        shape = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in input_shape(model)]
        model.set_input(np.zeros(shape, np.float32))
        results.append(soak(f"bench {runtime} {path.name}", model.invoke, inferences))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--inferences", type=int, default=10_000)
    parser.add_argument("--bound-mib", type=float, default=16.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread per runner, as eval and bench use by default
    results = soak_artifact(args.artifact, args.inferences)
    if args.json:
        print(json.dumps([{**asdict(r), "growth_mib": r.growth_mib} for r in results], indent=2))
    else:
        print(f"{'path':<40} {'inferences':>10} {'start':>8} {'settled':>8} {'end':>8} {'max':>8} {'growth':>8}  (MiB)")
        for r in results:
            print(f"{r.path:<40} {r.inferences:>10,} {r.rss_start_mib:>8.1f} {r.rss_settled_mib:>8.1f} "
                  f"{r.rss_end_mib:>8.1f} {r.rss_max_mib:>8.1f} {r.growth_mib:>+8.1f}")
        print(f"bound: growth <= {args.bound_mib:g} MiB after the first tenth of the inferences")
    return 1 if any(r.growth_mib > args.bound_mib for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
