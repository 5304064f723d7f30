"""Accuracy-aware INT8 (--max-drop): layers kept in float stay float in the files, and the budget holds there."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from blocks import MAX_STEPS_OFF, steps_off
from torch import nn

from edgekit.core.errors import EdgekitError
from edgekit.exporting.int8_files import export_int8_onnx, export_int8_tflite, tflite_int8_report
from edgekit.exporting.verify import ort_fused_histogram
from edgekit.models import batchnorm_statistics_from_noise, create
from edgekit.quantization import fallback
from edgekit.quantization.annotator import QuantSettings
from edgekit.quantization.ptq import convert, prepare
from edgekit.runtime.runners import OnnxRunner, TFLiteRunner

RESOLUTION = 32


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return batchnorm_statistics_from_noise(create("mobilenet_v2", width=0.35, resolution=RESOLUTION,
                                                  num_classes=10))


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, RESOLUTION, RESOLUTION)).astype(np.float32)


class _Separable(nn.Module):
    """Stem, depthwise and pointwise convolutions with ReLU6 (nn.ReLU6, as the zoo builds them) between."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.depthwise = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.head, self.relu6 = nn.Conv2d(16, 10, 1), nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu6(self.depthwise(self.relu6(self.stem(x))))).mean((2, 3))


@pytest.mark.slow
def test_a_float_layer_stays_float_in_onnx_runtime_and_tflite(tmp_path: Path) -> None:
    # Both runtimes quantize any op they find between a DEQUANTIZE and a QUANTIZE, float weights and all. So a
    # float layer takes a float input, and the stem that feeds the float depthwise convolution outputs float too
    torch.manual_seed(0)
    images = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    settings = QuantSettings()
    depthwise = "conv2d_1"
    quantized = convert(prepare(_Separable().eval(), images, settings, skip=lambda n: n.name == depthwise),
                        settings, len(images))
    assert fallback.runtime_float_layers(quantized) == {"conv2d", depthwise}
    onnx_path, tflite_path = tmp_path / "b.onnx", tmp_path / "b.tflite"
    export_int8_onnx(quantized, (3, 16, 16), onnx_path)
    export_int8_tflite(quantized, (3, 16, 16), tflite_path)
    report = tflite_int8_report(tflite_path, int8_io=False)
    assert set(report["float_ops"]) == {"CONV_2D", "DEPTHWISE_CONV_2D"}, report
    fused = ort_fused_histogram(onnx_path)
    assert fused.get("Conv", 0) + fused.get("FusedConv", 0) == 2 and fused["QLinearConv"] == 1, fused
    reference = quantized(torch.from_numpy(images[:8])).detach().numpy()
    for path, runner in ((onnx_path, OnnxRunner), (tflite_path, TFLiteRunner)):
        off = steps_off(reference, runner(path).predict(images[:8]))
        assert off <= MAX_STEPS_OFF, f"{path.suffix}: {off:.1f} output steps from the torch int8 model"


def test_an_unreachable_budget_names_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    layers = fallback.weighted_layers
    monkeypatch.setattr(fallback, "weighted_layers", lambda graph: layers(graph)[:2])  # a short search
    monkeypatch.setattr(fallback, "MAX_FLOAT_LAYERS", 1)
    images, labels = _images(64), np.arange(64) % 10
    with pytest.raises(EdgekitError, match=r"no float fallback reaches the --max-drop budget.*--qat-epochs 1"):
        # a budget of -100 pp asks INT8 to be 100 pp better than float: nothing reaches it
        fallback.quantize_within_budget(_model(), _images(32), images, labels, QuantSettings(), -100.0)


def _with_an_outlier_channel(checkpoint: Path, out: Path) -> Path:
    """The trained model with one output channel of its stem 300 times larger (BatchNorm's scale and shift).

    Per-tensor INT8 then gives the stem one scale set by that channel, and the other channels' weights round to
    a few steps. Per-tensor weights alone cost a small digits model nothing on some machines and a point on
    others (training rounds differently per CPU); this channel makes the loss certain."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for key in ("features.0.1.weight", "features.0.1.bias"):
        saved["model"][key][0] *= 300.0
    torch.save(saved, out)
    return out


@pytest.mark.slow
def test_export_max_drop_keeps_the_budget_in_the_files(digits_mobilenet_v2: Path, tmp_path: Path,
                                                       edgekit_cli) -> None:
    out = tmp_path / "art"
    checkpoint = _with_an_outlier_channel(digits_mobilenet_v2, tmp_path / "outlier.pt")
    result = edgekit_cli("export", str(checkpoint), "--int8", "--per-tensor", "--max-drop", "0.3",
                         "--eval", "auto", "--calib-size", "256", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    section = json.loads(result.stdout)["int8"]
    aware = section["accuracy_aware"]
    first = aware["trials"][0]["drop_pp"]
    # per-tensor weights cost this model over the budget: the fallback has work to do
    assert set(first) == {"onnx_int8", "tflite_int8"} and max(first.values()) > 0.3, aware["trials"]
    assert section["accuracy"]["drop_pp"]["onnx_int8"] <= 0.3 and section["accuracy"]["drop_pp"]["tflite_int8"] <= 0.3
    chosen = [layer for layer in aware["float_layers"] if layer["why"].startswith("chosen")]
    assert 1 <= len(chosen) == len(aware["trials"]) - 1
    # the ranking the search went by is the user's to see: every weighted layer, most sensitive first
    ranking = aware["ranking"]
    assert [r["recovered_pp"] for r in ranking] == sorted((r["recovered_pp"] for r in ranking), reverse=True)
    assert {r["module"] for r in ranking[:len(chosen)]} == {layer["module"] for layer in chosen}
    assert len(ranking) >= 50  # MobileNetV2's convolutions and classifier
    assert section["float_layers"] == aware["float_layers"] and 0 < aware["float_macs_share"] < 0.5
    tflite = section["graph"]["tflite"]
    assert not tflite["full_integer"] and tflite["interior_quantize_dequantize"] > 0
    assert not section["warnings"]  # float layers that were asked for are not a warning
