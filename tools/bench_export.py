"""Wall time of `edgekit export mobilenet_v2 --width 0.75` per format on this machine (the whole command,
interpreter start-up included). Usage: python tools/bench_export.py [--repeats N]"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {"onnx": "onnx", "tflite": "tflite", "both": "onnx,tflite"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"edgekit export mobilenet_v2 --width 0.75, {args.repeats} runs per row")
    print(f"{'formats':<8} {'median s':>9} {'min s':>7}")
    for label, formats in CASES.items():
        times = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "edgekit", "export", "mobilenet_v2", "--width", "0.75",
                       "--format", formats, "--out", str(Path(tmp) / "a")]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                times.append(time.perf_counter() - start)
        print(f"{label:<8} {statistics.median(times):>9.1f} {min(times):>7.1f}")


if __name__ == "__main__":
    main()
