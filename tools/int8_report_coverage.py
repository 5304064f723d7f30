"""How much of each zoo family `edgekit int8 report` can compare: quantized tensors with and without an FP32 twin.

    python tools/int8_report_coverage.py                     # the default families, random weights, 64 px
    python tools/int8_report_coverage.py --models mobilenet_v3_small,efficientnet_b0

Each model is exported with --int8 (calibrated on 32 digits images) and reported on 8 images. Printed per model:
the layers reported, how many were compared in both files, the tensors without a twin per format, and the largest
difference between the ONNX and TFLite accumulated SQNR of one layer (random weights: a plumbing figure, not an
accuracy one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgekit  # noqa: E402

MODELS = ("mobilenet_v2", "mobilenet_v3_small", "shufflenet_v1", "shufflenet_v2_x0_5", "efficientnet_b0",
          "regnet_x_200mf")
WIDTH = {"mobilenet_v2": 0.5, "mobilenet_v3_small": 0.5, "shufflenet_v1": 0.5, "efficientnet_b0": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    print(f"{'model':22s} {'layers':>6s} {'both':>5s} {'no twin (onnx, tflite)':>24s} {'max dB apart':>12s}")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            artifact = edgekit.quantize(name, calibration="digits", calib_size=32, resolution=64, num_classes=10,
                                        width=WIDTH.get(name), out=Path(tmp) / name)
            report = edgekit.int8_report(artifact, images=8)
        rows = report.rows()
        both = [r for r in rows if r.get("onnx") and r.get("tflite")]
        apart = [abs(r["onnx"]["accumulated"]["channel_sqnr_db"] - r["tflite"]["accumulated"]["channel_sqnr_db"])
                 for r in both if r["onnx"]["accumulated"]["channel_sqnr_db"] is not None
                 and r["tflite"]["accumulated"]["channel_sqnr_db"] is not None]
        missing = f"{report.unmatched.get('onnx', 0)}, {report.unmatched.get('tflite', 0)}"
        print(f"{name:22s} {len(rows):6d} {len(both):5d} {missing:>24s} {max(apart, default=0.0):12.2f}",
              flush=True)


if __name__ == "__main__":
    main()
