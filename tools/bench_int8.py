"""INT8 benchmark: FP32 vs INT8 latency in ONNX Runtime and the TFLite interpreter, and INT8 accuracy drop.

    python tools/bench_int8.py                                   # MobileNetV2 1.0 at 224 px, one thread
    python tools/bench_int8.py --model mobilenet_v2 --width 0.75 --resolution 160 --threads 2
    python tools/bench_int8.py --checkpoint runs/NAME/best.pt    # also FP32 vs INT8 top-1 on its validation data
    python tools/bench_int8.py --checkpoint runs/NAME/best.pt --qat-epochs 1   # INT8 fine-tuned quantization-aware
    python tools/bench_int8.py --checkpoint runs/NAME/best.pt --per-tensor --max-drop 0.5   # float fallback's cost
    python tools/bench_int8.py --checkpoint runs/NAME/best.pt --per-tensor --equalize       # cross-layer equalization
    python tools/bench_int8.py --reference       # also time ai-edge-quantizer's full-int8 file of the same FP32 model

Latency: median of --runs single-image inferences after --warmup, ONNX Runtime CPU provider and the TFLite
interpreter with XNNPACK, timed by edgekit's bench harness in --rounds interleaved rounds (FP32 and INT8 take
turns, so a noisy machine slows both alike); the speed-up is the median of the per-round ratios, with their range.
The models are exported by edgekit's own pipeline (random weights with BatchNorm
statistics for speed; the checkpoint's weights and data for accuracy). `--reference` adds a yardstick for the
TFLite figure: the same FP32 .tflite quantized full-int8 by ai-edge-quantizer (static int8 weights and
activations), timed in the same rounds, so the speed-up a CPU allows is told apart from what edgekit's graph gets.
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
from edgekit.exporting import export_model  # noqa: E402
from edgekit.models import ModelSpec, batchnorm_statistics_from_noise, build, resolve_spec  # noqa: E402
from edgekit.options import DEFAULT_QAT_LR, Int8Options  # noqa: E402
from edgekit.quantization.options import Int8Plan  # noqa: E402
from edgekit.quantization.qat import schedule_for  # noqa: E402
from edgekit.runtime.harness import measure  # noqa: E402

REFERENCE_CALIBRATION_IMAGES = 16


def _reference_int8(artifact: Path, x: np.ndarray) -> str:
    """ai-edge-quantizer's full-int8 file of edgekit's FP32 .tflite (calibrated on noise: speed does not depend on
    the ranges)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_path=str(artifact / "model.tflite")).get_signature_list()
    signature, names = next(iter(signatures.items()))
    rng = np.random.default_rng(1)
    data = {signature: [{names["inputs"][0]: rng.standard_normal(x.shape).astype(np.float32)}
                        for _ in range(REFERENCE_CALIBRATION_IMAGES)]}
    q = quantizer.Quantizer(str(artifact / "model.tflite"))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    path = artifact / "reference_int8.tflite"
    q.quantize(q.calibrate(data), serialize_to_path=str(path), enable_progress_bar=False,
               enable_progress_report=False)
    return path.name


def _speed_ups(artifact: Path, x: np.ndarray, args: argparse.Namespace) -> list[tuple[str, float, float, list]]:
    """(runtime label, FP32 ms, INT8 ms, per-round FP32/INT8 ratios), every file timed once in interleaved rounds."""
    np.save(artifact / "bench_input.npy", x)
    files = [("onnxruntime", "model.onnx"), ("onnxruntime", "model_int8.onnx"), ("tflite", "model.tflite"),
             ("tflite", "model_int8.tflite")]
    rows = [("onnxruntime", 0, 1), ("tflite", 2, 3)]  # label, FP32 file, INT8 file
    if args.reference:
        files.append(("tflite", _reference_int8(artifact, x)))
        rows.append(("tflite (ai-edge-quantizer)", 2, 4))
    configs = [{"model": str(artifact / name), "runtime": runtime, "threads": args.threads,
                "input": str(artifact / "bench_input.npy")} for runtime, name in files]
    results = measure(configs, warmup_runs=args.warmup, warmup_seconds=0.0, runs=args.runs, min_seconds=0.0,
                      rounds=args.rounds, keep_times=True)
    speed_ups = []
    for label, i, j in rows:
        fp32, int8 = results[i], results[j]
        size = fp32["runs_per_round"]
        ratios = [float(np.median(fp32["times_ms"][k:k + size]) / np.median(int8["times_ms"][k:k + size]))
                  for k in range(0, min(len(fp32["times_ms"]), len(int8["times_ms"])), size)]
        speed_ups.append((label, fp32["steady"]["p50_ms"], int8["steady"]["p50_ms"], ratios))
    return speed_ups


def _weights_with_statistics(spec: ModelSpec, path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(batchnorm_statistics_from_noise(build(spec)).state_dict(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10, help="Interleaved rounds the runs are split into.")
    parser.add_argument("--checkpoint", type=Path, help="Measure accuracy too, on the checkpoint's own data.")
    parser.add_argument("--qat-epochs", type=int, default=0, help="Quantization-aware epochs (needs --checkpoint).")
    parser.add_argument("--qat-lr", type=float, default=DEFAULT_QAT_LR)
    parser.add_argument("--per-tensor", action="store_true", help="Per-tensor weight scales.")
    parser.add_argument("--equalize", action="store_true", help="Cross-layer equalization before calibration.")
    parser.add_argument("--max-drop", type=float, help="Accuracy-aware float fallback (needs --checkpoint).")
    parser.add_argument("--reference", action="store_true",
                        help="Also time ai-edge-quantizer's full-int8 .tflite of the same FP32 model.")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "artifact"
        if args.checkpoint is not None:
            from edgekit.checkpoint import read_trained
            from edgekit.data import DataSource, load_split

            trained = read_trained(args.checkpoint)
            spec, weights, preprocess = trained.spec, args.checkpoint, trained.preprocess
            source = DataSource.parse(trained.data)
            val = load_split(source, "val", spec.resolution, spec.in_channels)
            train = load_split(source, "train", spec.resolution, spec.in_channels)
        else:
            spec = resolve_spec(args.model, width=args.width, resolution=args.resolution)
            weights, preprocess, val, train = _weights_with_statistics(spec, Path(tmp) / "w.pt"), None, None, None
        print(f"{spec.name} width {spec.width:g} at {spec.resolution}px, {args.threads} thread(s), "
              f"{'per-tensor' if args.per_tensor else 'per-channel'} weights"
              f"{', cross-layer equalized' if args.equalize else ''}, torch {torch.__version__}", flush=True)
        schedule = None
        if args.qat_epochs:
            if args.checkpoint is None:
                parser.error("--qat-epochs needs --checkpoint (it fine-tunes on the checkpoint's data)")
            schedule = schedule_for(args.qat_epochs, args.qat_lr, spec, source, trained)
        if args.max_drop is not None and args.checkpoint is None:
            parser.error("--max-drop needs --checkpoint (it measures the drop on the checkpoint's data)")
        options = Int8Plan(Int8Options(per_tensor=args.per_tensor, equalize=args.equalize, max_drop=args.max_drop,
                                       qat_epochs=args.qat_epochs, qat_lr=args.qat_lr), schedule)
        result = export_model(spec, weights=weights, out=out, preprocess=preprocess, data=val,
                              evaluate_accuracy=val is not None, int8=options, calibration_data=train)
        x = np.random.default_rng(0).standard_normal((1, *spec.input_shape)).astype(np.float32)
        with quiet():
            rows = _speed_ups(out, x, args)
        print(f"{'runtime':<26} {'FP32 ms':>8} {'INT8 ms':>8} {'speed-up':>9}  per-round range")
        for runtime, fp32, int8, ratios in rows:
            print(f"{runtime:<26} {fp32:8.2f} {int8:8.2f} {np.median(ratios):8.2f}x  "
                  f"{min(ratios):.2f}x-{max(ratios):.2f}x over {len(ratios)} rounds")
        section = result.manifest["int8"]
        if section["qat"]:
            print(f"quantization-aware: {section['qat']['epochs']} epoch(s) at lr {section['qat']['lr']:g}, "
                  f"{section['qat']['seconds']:.0f} s, loss per epoch {section['qat']['loss']}")
        aware = section["accuracy_aware"]
        if aware:
            print(f"accuracy-aware (--max-drop {aware['budget_pp']:g} pp): {len(aware['float_layers'])} layer(s) "
                  f"in float, {aware['float_macs_share']:.1%} of MACs: "
                  + ", ".join(layer["module"] for layer in aware["float_layers"]))
        accuracy = section["accuracy"]
        if accuracy:
            top1 = accuracy["top1"]
            print(f"top-1 on {accuracy['images']:,} images of {accuracy['data']}: FP32 {top1['torch_fp32']:.2%}, "
                  + ", ".join(f"{k} {v:.2%} ({accuracy['drop_pp'][k]:+.2f} pp)" for k, v in top1.items()
                              if k != "torch_fp32")
                  + f"; ONNX/TFLite agreement {accuracy['onnx_tflite_top1_agreement']:.2%}")
        for warning in section["warnings"]:
            print(f"warning: {warning}")


if __name__ == "__main__":
    main()
