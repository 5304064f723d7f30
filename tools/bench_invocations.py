"""How well `edgekit bench` agrees with itself across separate invocations, as a user or CI runs it.

    python tools/bench_invocations.py [--invocations 5] [--out bench_invocations.json] [-- BENCH FLAGS...]

Exports four models at 224 px (MobileNetV2, MobileNetV3-Small, ShuffleNetV2 x1.0, EfficientNet-Lite0; random
weights, FP32 and INT8, ONNX and TFLite: 16 files of 1.5-7 ms on a 2-core x86 VM) into a cache folder, then runs
`edgekit bench DIR --threads 1` once per artifact directory, round after round (the four directories one after
another, then again). For every pair of invocations it counts the files whose two p50s are
within 5% and whose two printed intervals overlap (issue 40's goals: 95% of files each). It also prints each
file's p50 divided by the geometric mean of the p50s of the other files timed in the same invocation: when the
whole machine slows down for a while (a shared VM), every file of an invocation moves together, and that ratio
shows how much of the disagreement such a slowdown explains.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = [
    ("mobilenet_v2", ["--resolution", "224"]),
    ("mobilenet_v3_small", ["--resolution", "224"]),
    ("shufflenet_v2_x1_0", ["--resolution", "224"]),
    ("efficientnet_lite0", ["--resolution", "224"]),
]
EDGEKIT = [sys.executable, "-m", "edgekit"]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def export_all(cache: Path) -> list[Path]:
    directories = []
    for name, options in MODELS:
        out = cache / f"{name}-{'-'.join(options[1::2])}"
        if not (out / "manifest.json").is_file():
            print(f"exporting {out.name}", file=sys.stderr)
            subprocess.run([*EDGEKIT, "export", name, *options, "--int8", "--out", str(out), "--force"],
                           check=True, capture_output=True, text=True)
        directories.append(out)
    return directories


def bench_once(directory: Path, flags: list[str]) -> dict[str, tuple[float, float, float]]:
    """One `edgekit bench` invocation: {file: (p50, interval low, interval high)}."""
    done = subprocess.run([*EDGEKIT, "bench", str(directory), "--threads", "1", "--json", *flags],
                          check=True, capture_output=True, text=True)
    figures = {}
    for result in json.loads(done.stdout)["runs"][0]["results"]:
        p50 = result["steady"]["p50_ms"]
        low, high = result.get("repeat", {}).get("p50_ci_ms", [p50, p50])
        figures[f"{directory.name}/{result['file']}"] = (p50, low, high)
    return figures


def agreement(invocations: list[dict[str, tuple[float, float, float]]]) -> dict[str, float]:
    within = overlap = pairs = 0
    worst = 0.0
    for a, b in itertools.combinations(invocations, 2):
        for name in a:
            (pa, la, ha), (pb, lb, hb) = a[name], b[name]
            off = abs(pa / pb - 1)
            worst = max(worst, off)
            within += off <= 0.05
            overlap += la <= hb and lb <= ha
            pairs += 1
    return {"pairs": pairs, "within_5pct": within / pairs, "intervals_overlap": overlap / pairs, "worst": worst}


def relative(invocations: list[dict[str, tuple[float, float, float]]]) -> list[dict[str, tuple[float, float, float]]]:
    """Each p50 over the geometric mean of its directory's p50s in the same invocation (intervals scaled alike)."""
    out = []
    for figures in invocations:
        scaled = {}
        for directory in {name.split("/")[0] for name in figures}:
            names = [n for n in figures if n.startswith(directory + "/")]
            mean = math.exp(statistics.mean(math.log(figures[n][0]) for n in names))
            scaled.update({n: tuple(v / mean for v in figures[n]) for n in names})
        out.append(scaled)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invocations", type=int, default=5, help="rounds of one invocation per directory")
    parser.add_argument("--cache", type=Path, default=Path("bench_invocations_models"))
    parser.add_argument("--out", type=Path, help="write every figure as JSON")
    parser.add_argument("flags", nargs="*", help="edgekit bench flags (after --), e.g. -- --stable")
    args = parser.parse_args()
    directories = export_all(args.cache)
    invocations: list[dict[str, tuple[float, float, float]]] = []
    seconds = []
    for round_ in range(args.invocations):
        figures: dict[str, tuple[float, float, float]] = {}
        for directory in directories:
            start = time.perf_counter()
            figures.update(bench_once(directory, args.flags))
            seconds.append(time.perf_counter() - start)
        invocations.append(figures)
        print(f"round {round_ + 1}/{args.invocations} done", file=sys.stderr)
    absolute, scaled = agreement(invocations), agreement(relative(invocations))
    print(f"machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores; edgekit bench --threads 1 "
          f"{' '.join(args.flags)}")
    print(f"{len(invocations[0])} files, {args.invocations} invocations each ({absolute['pairs']} file pairs); "
          f"one invocation (4 files) took {statistics.median(seconds):.1f} s (median)")
    for label, figures in (("p50", absolute), ("p50 / same invocation's mean", scaled)):
        print(f"  {label}: within 5% {figures['within_5pct']:.0%}, intervals overlap "
              f"{figures['intervals_overlap']:.0%}, worst {figures['worst']:.1%}")
    for name in sorted(invocations[0]):
        values = [figures[name][0] for figures in invocations]
        print(f"  {name:45s} p50 {statistics.median(values):7.3f} ms, spread {max(values) / min(values) - 1:6.1%}")
    if args.out:
        args.out.write_text(json.dumps({"flags": args.flags, "invocations": invocations,
                                        "agreement": absolute, "relative_agreement": scaled}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
