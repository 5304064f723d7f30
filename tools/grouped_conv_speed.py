"""How fast a runtime runs a 3x3 grouped convolution per MAC, by channels per group (the RegNets' group widths).

    python tools/grouped_conv_speed.py                          # ONNX Runtime, 1 thread
    python tools/grouped_conv_speed.py --runtime tflite --threads 2

Each convolution (C channels in and out, H x H, groups = C / group width) is exported by edgekit's own exporter
and timed by the bench harness in interleaved rounds (p50). The figures show why the latency predictor records a
unit's channel alignment and group width (docs/predictor.md, "Kernel paths"): per-MAC speed is not smooth in the
group width. Figures for the docs, never asserted in tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.predictor.measure import FORMATS, export  # noqa: E402
from edgekit.runtime.harness import measure  # noqa: E402

SHAPES = ((192, 28), (384, 14))  # (channels, spatial size): RegNet stage 2 and 3 shapes at 224 px
GROUP_WIDTHS = (8, 16, 24, 32, 48, 64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="onnxruntime", choices=sorted(FORMATS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    cases = [(c, h, g) for c, h in SHAPES for g in GROUP_WIDTHS if c % g == 0]
    with tempfile.TemporaryDirectory(prefix="edgekit-gconv-") as tmp:
        configs = []
        for c, h, g in cases:
            torch.manual_seed(0)
            conv = torch.nn.Conv2d(c, c, 3, 1, 1, groups=c // g, bias=False)
            path = Path(tmp) / f"c{c}_h{h}_g{g}.{FORMATS[args.runtime]}"
            export(conv, torch.zeros(1, c, h, h), path, FORMATS[args.runtime])
            np.save(path.with_suffix(".npy"), np.random.default_rng(0).standard_normal((1, c, h, h), np.float32))
            configs.append({"model": str(path), "runtime": args.runtime, "threads": args.threads,
                            "input": str(path.with_suffix(".npy"))})
        results = measure(configs, warmup_runs=5, warmup_seconds=0.1, runs=args.runs, min_seconds=0.1,
                          rounds=args.rounds)
    print(f"3x3 grouped convolution, {args.runtime}, {args.threads} thread(s), p50 of {args.rounds} interleaved "
          "rounds")
    print(f"{'channels':>8s} {'size':>5s} {'ch/group':>8s} {'MACs (M)':>9s} {'ms':>8s} {'GMAC/s':>7s} "
          f"{'per MAC vs 16':>13s}")
    speed: dict[tuple[int, int], float] = {}
    rows = []
    for (c, h, g), result in zip(cases, results, strict=True):
        ms = result["steady"]["p50_ms"]
        macs = c * g * 9 * h * h
        speed[(c, g)] = macs / ms / 1e6
        rows.append((c, h, g, macs, ms))
    for c, h, g, macs, ms in rows:
        print(f"{c:8d} {h:5d} {g:8d} {macs / 1e6:9.1f} {ms:8.3f} {speed[(c, g)]:7.1f} "
              f"{speed[(c, 16)] / speed[(c, g)]:12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
