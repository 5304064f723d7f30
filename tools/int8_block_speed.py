"""Where INT8 gains and where it does not: a model's blocks, each FP32 and INT8, timed one by one.

    python tools/int8_block_speed.py                                  # MobileNetV2 1.0, 224 px, TFLite, 1 thread
    python tools/int8_block_speed.py --runtime onnxruntime --model mobilenet_v3_large

The model is cut into the latency predictor's units (edgekit/predictor/units.py: the stem, each inverted residual,
the head, the classifier). Each distinct unit is exported twice by edgekit's own paths: FP32, and INT8 through
the same post-training quantization `edgekit export --int8` uses (calibrated on random images: speed does not
depend on the ranges). TFLite units are NHWC with int8 input and output (`--int8-io`), so neither layout
transposes nor QUANTIZE/DEQUANTIZE are timed: each unit runs as it does inside the whole model. ONNX Runtime's INT8
units keep float input and output (QDQ), which the whole model pays once: there the sum understates the speed-up.
All are timed by the bench harness in interleaved rounds (p50).
Figures for the docs, never asserted in tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.core.quiet import quiet  # noqa: E402
from edgekit.exporting.converters import export_onnx, export_tflite  # noqa: E402
from edgekit.exporting.int8_files import export_int8_onnx, export_int8_tflite  # noqa: E402
from edgekit.models import batchnorm_statistics_from_noise, build, resolve_spec  # noqa: E402
from edgekit.predictor.units import cut  # noqa: E402
from edgekit.quantization.annotator import QuantSettings  # noqa: E402
from edgekit.quantization.ptq import capture, convert, prepare_captured  # noqa: E402
from edgekit.runtime.harness import measure  # noqa: E402

CALIBRATION_IMAGES = 16


def _export_pair(module: torch.nn.Module, shape: tuple[int, ...], folder: Path, stem: str, runtime: str,
                 images: np.ndarray) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """FP32 and INT8 files of one unit, and the inputs each takes (NHWC for TFLite images; int8 for TFLite INT8,
    whose units have int8 input and output, as inside the whole model)."""
    example = torch.zeros(1, *shape)
    settings = QuantSettings()  # the product's defaults: per-channel weights, min-max activation ranges
    # prepare_captured, not quantize_ptq: a unit's input is any activation (the classifier's is a vector), not images
    quantized = convert(prepare_captured(capture(module, shape), images, settings), settings, len(images))
    nhwc = runtime == "tflite" and len(shape) == 3
    if runtime == "tflite":
        fp32, int8 = folder / f"{stem}.tflite", folder / f"{stem}_int8.tflite"
        with quiet():
            export_tflite(module, example, fp32, nhwc=nhwc)
            export_int8_tflite(quantized, shape, int8, int8_io=True, nhwc=nhwc)
    else:
        fp32, int8 = folder / f"{stem}.onnx", folder / f"{stem}_int8.onnx"
        export_onnx(module, example, fp32)
        export_int8_onnx(quantized, shape, int8)
    x = np.ascontiguousarray(images[:1].transpose(0, 2, 3, 1) if nhwc else images[:1])
    x_int8 = np.clip(np.round(x * 32), -128, 127).astype(np.int8) if runtime == "tflite" else x
    return fp32, int8, x, x_int8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--runtime", default="tflite", choices=("tflite", "onnxruntime"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    spec = resolve_spec(args.model, width=args.width, resolution=args.resolution)
    torch.manual_seed(0)
    model = batchnorm_statistics_from_noise(build(spec)).eval()
    units = cut(model, spec.input_shape)
    distinct = list({u.signature: u for u in units}.values())
    count = {u.signature: sum(v.signature == u.signature for v in units) for u in distinct}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="edgekit-int8-blocks-") as tmp:
        folder = Path(tmp)
        configs = []
        for i, unit in enumerate(distinct):
            print(f"\rexporting block {i + 1}/{len(distinct)}", end="", file=sys.stderr)
            images = rng.standard_normal((CALIBRATION_IMAGES, *unit.input_shape), np.float32)
            fp32, int8, x, x_int8 = _export_pair(unit.module, unit.input_shape, folder, f"u{i}", args.runtime,
                                                 images)
            for path, array in ((fp32, x), (int8, x_int8)):
                np.save(path.with_suffix(".npy"), array)
                configs.append({"model": str(path), "runtime": args.runtime, "threads": args.threads,
                                "input": str(path.with_suffix(".npy"))})
        print(file=sys.stderr)
        results = measure(configs, warmup_runs=5, warmup_seconds=0.1, runs=args.runs, min_seconds=0.1,
                          rounds=args.rounds)
    print(f"{spec.name} w{spec.width:g} r{spec.resolution}, {args.runtime}, {args.threads} thread(s): each block "
          "FP32 and INT8, p50")
    print(f"{'block':28s} {'kind':32s} {'in':>12s} {'x':>2s} {'FP32 ms':>8s} {'INT8 ms':>8s} {'speed-up':>8s}")
    total_fp32 = total_int8 = 0.0
    for unit, fp32, int8 in zip(distinct, results[0::2], results[1::2], strict=True):
        a, b = fp32["steady"]["p50_ms"], int8["steady"]["p50_ms"]
        n = count[unit.signature]
        total_fp32, total_int8 = total_fp32 + n * a, total_int8 + n * b
        print(f"{unit.name[:28]:28s} {unit.kind[:32]:32s} {'x'.join(map(str, unit.input_shape)):>12s} {n:2d} "
              f"{a:8.3f} {b:8.3f} {a / b:7.2f}x")
    print(f"{'all blocks (sum)':28s} {'':32s} {'':>12s} {'':>2s} {total_fp32:8.3f} {total_int8:8.3f} "
          f"{total_fp32 / total_int8:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
