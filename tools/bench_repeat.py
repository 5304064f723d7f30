"""How well a latency measurement agrees with itself: the same models, each exported to two files and loaded apart,
timed by several methods side by side in one run; per method, the share of models whose two copies agree.

    python tools/bench_repeat.py [--models 40] [--runtime onnxruntime] [--cache DIR] [--out bench_repeat.json]
    python tools/bench_repeat.py --runtime tflite --precision int8   # the full-integer file edgekit's export makes

Methods (each a harness run over every file, rounds interleaved as `edgekit bench` runs them):
- one process, 1 thread, unpinned: every estimator below from the same runs;
- one process, 1 thread, pinned to one core (os.sched_setaffinity, the harness's --cores);
- per-model processes: each file in a harness process of its own, one after another;
- one process at 2 threads (wall clock only: a thread pool's CPU time is not a latency);
- one process, 1 thread, OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1 in the environment.
Estimators: the wall clock's p50 (what `edgekit bench` reported before --stable), min, p10, the median and the
minimum of the per-round medians; the same of the calling thread's CPU time (time.thread_time).

A model agrees with itself when its two copies' figures are within 5% (|a / b - 1|). The goal (issue 31): 95% of
models within 5%.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekit.benchmark.host import model_files
from edgekit.models import build, get_entry, list_models, resolve_spec
from edgekit.predictor.calibrate import LARGEST, point_key
from edgekit.predictor.measure import export_all
from edgekit.runtime import harness

AGAIN = " again"
RUNS = [60, 20]  # runs and rounds per configuration (main sets them)
# The calibration's windows (edgekit/predictor/measure.py CALIBRATION_OPTIONS): --runs and --rounds change them.
WINDOWS = ["--warmup-runs", "3", "--warmup-seconds", "0.1", "--min-seconds", "0"]


def _models(count: int, width: float, resolution: int) -> dict[str, torch.nn.Module]:
    names = [n for n in list_models() if not get_entry(n).design_space and n not in LARGEST]
    picked = names[::max(1, len(names) // count)][:count]
    models = {}
    for name in picked:
        spec = resolve_spec(name, width=width, resolution=resolution)
        torch.manual_seed(0)
        models[point_key(spec)] = build(spec).eval()
    return models


def _harness(files: list[tuple[Path, Path]], threads: int, extra: list[str] = (), env: dict | None = None) -> list:
    argv = [sys.executable, harness.__file__, "--threads", str(threads), "--keep-times", *WINDOWS, *extra,
            "--runs", str(RUNS[0]), "--rounds", str(RUNS[1])]
    for model, x in files:
        argv += ["--model", str(model), "--input", str(x)]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([*argv, "--json-out", out.name], check=True, env={**os.environ, **(env or {})})
        return json.loads(Path(out.name).read_text())["results"]


def _estimates(result: dict) -> dict[str, float]:
    per = result["runs_per_round"]
    found = {}
    for clock, times in (("wall", result["times_ms"]), ("cpu", result["cpu_times_ms"])):
        t = np.asarray(times)
        rounds = [float(np.median(t[i:i + per])) for i in range(0, len(t), per)]
        found.update({f"{clock} p50": float(np.median(t)), f"{clock} min": float(t.min()),
                      f"{clock} p10": float(np.percentile(t, 10)), f"{clock} p25": float(np.percentile(t, 25)),
                      f"{clock} median of round medians": float(np.median(rounds)),
                      f"{clock} min of round medians": float(min(rounds))})
    return found


def _agreement(figures: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per estimator: the share of models within 5% and 10% of their twin, the median and p90 disagreement."""
    keys = [k for k in figures if not k.endswith(AGAIN) and k + AGAIN in figures]
    out = {}
    for est in next(iter(figures.values())):
        diffs = sorted(abs(figures[k + AGAIN][est] / figures[k][est] - 1) * 100 for k in keys)
        out[est] = {"models": len(diffs), "within_5pct": sum(d <= 5 for d in diffs) / len(diffs),
                    "within_10pct": sum(d <= 10 for d in diffs) / len(diffs),
                    "median_pct": statistics.median(diffs), "p90_pct": diffs[int(0.9 * (len(diffs) - 1))]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=40, help="distinct models, each timed from two files")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "tflite"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"),
                        help="int8: full-integer TFLite as edgekit's INT8 export makes it (needs --runtime tflite)")
    parser.add_argument("--methods", default="one,pinned,per-model,threads2,omp1",
                        help="which of one, pinned, per-model, threads2, omp1 to run")
    parser.add_argument("--runs", type=int, default=60, help="timed runs per file (default 60, as calibration)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds they are spread over (default 20)")
    parser.add_argument("--cache", type=Path, help="keep the exported models here, for a faster rerun")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = parser.parse_args(argv)
    RUNS[:] = [args.runs, args.rounds]
    if args.precision == "int8" and args.runtime != "tflite":
        parser.error("--precision int8 times the INT8 TFLite file: add --runtime tflite.")

    models = _models(args.models, args.width, args.resolution)
    with tempfile.TemporaryDirectory(prefix="bench-repeat-") as tmp:
        folder = args.cache or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        names = export_all([], models, folder, args.runtime, precision=args.precision)
        keys = {name: key for name, (_, key) in names.items()}
        for name, key in list(keys.items()):  # the twin: the same bytes, a file of its own, loaded apart
            twin = f"again-{name}"
            shutil.copyfile(folder / name, folder / twin)
            keys[twin] = key + AGAIN
        files = []
        # in a fixed shuffled order, as a calibration deals them: a model's twin is not its neighbour
        for name in sorted(keys, key=lambda n: hashlib.sha256(n.encode()).digest()):
            f = model_files(folder / name)[0]
            np.save(folder / f"{name}.npy", f.input)
            files.append((folder / name, folder / f"{name}.npy"))
        methods = {
            "one process": lambda: _harness(files, 1),
            "pinned to one core": lambda: _harness(files, 1, ["--cores", format(1 << (os.cpu_count() or 1) - 1, "x")]),
            "per-model processes": lambda: [r for f in files for r in _harness([f], 1)],
            "2 threads": lambda: _harness(files, 2),
            "OMP/MKL_NUM_THREADS=1": lambda: _harness(files, 1, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
        }
        wanted = {"one": "one process", "pinned": "pinned to one core", "per-model": "per-model processes",
                  "threads2": "2 threads", "omp1": "OMP/MKL_NUM_THREADS=1"}
        report = {}
        load = os.getloadavg()
        for short in args.methods.split(","):
            label = wanted[short]
            start = time.perf_counter()
            results = methods[label]()
            seconds = time.perf_counter() - start
            by_key = {keys[Path(r["model"]).name]: _estimates(r) for r in results}
            if label == "2 threads":  # a pool's CPU time sums its threads: not a latency
                by_key = {k: {e: v for e, v in est.items() if e.startswith("wall")} for k, est in by_key.items()}
            report[label] = {"seconds": seconds, "agreement": _agreement(by_key), "figures": by_key}
            print(f"{label}: {seconds:.0f} s", file=sys.stderr)

    print(f"\n{len(models)} models ({args.precision} {args.runtime}, width {args.width:g}, {args.resolution} px), "
          f"each from two files, {args.runs} runs in {args.rounds} rounds; load average before: {load[0]:.1f}, after: "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'method':24s} {'estimator':32s} {'<=5%':>6s} {'<=10%':>6s} {'median':>7s} {'p90':>6s}")
    for label, done in report.items():
        for est, a in done["agreement"].items():
            print(f"{label:24s} {est:32s} {a['within_5pct']:6.0%} {a['within_10pct']:6.0%} "
                  f"{a['median_pct']:6.1f}% {a['p90_pct']:5.1f}%")
    if args.out:
        args.out.write_text(json.dumps({"runtime": args.runtime, "precision": args.precision, "width": args.width,
                                        "resolution": args.resolution,
                                        "methods": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
