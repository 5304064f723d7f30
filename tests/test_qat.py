"""Quantization-aware INT8: fine-tuning through the fake-quantizers trains, and exports the full-integer way."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.checkpoint import read_trained
from edgekit.core.errors import EdgekitError
from edgekit.data import DataSource, load_split, preprocess_for
from edgekit.models import create
from edgekit.quantization.annotator import QuantSettings
from edgekit.quantization.ptq import quantize_ptq
from edgekit.quantization.qat import QatSchedule, quantize_qat

RESOLUTION = 32


def _digits(split: str):
    source = DataSource.parse("digits")
    return load_split(source, split, RESOLUTION, 1), preprocess_for(source, RESOLUTION, 1)


def _top1(quantized, data, preprocess) -> float:
    with torch.no_grad():
        predictions = quantized(torch.from_numpy(preprocess(data.images))).argmax(1)
    return float((predictions == data.labels).float().mean())


def test_qat_learns_through_the_fake_quantizers(digits_mobilenet_v2: Path) -> None:
    # a trained network with its classifier re-initialised: post-training INT8 is at chance, so the gain is the
    # fine-tuning's, through the fake-quantized graph
    train, preprocess = _digits("train")
    val, _ = _digits("val")
    model = read_trained(digits_mobilenet_v2).build()
    torch.manual_seed(0)
    classifier = model.classifier[-1]
    torch.nn.init.normal_(classifier.weight, std=0.01)
    torch.nn.init.zeros_(classifier.bias)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    calibration = preprocess(train.images[:64])
    ptq = quantize_ptq(model, calibration, QuantSettings())
    schedule = QatSchedule(epochs=3, lr=0.01, batch_size=64, crop_padding=1)
    steps = []
    qat, record = quantize_qat(model, calibration, train, preprocess, QuantSettings(), schedule,
                               on_step=lambda epoch, step, total, loss: steps.append((epoch, step, total)))
    assert steps[-1] == (3, len(train) // 64, len(train) // 64)
    assert len(record.loss) == 3 and record.loss[-1] < 0.5 * record.loss[0], record.loss
    assert _top1(ptq, val, preprocess) < 0.3
    assert _top1(qat, val, preprocess) > 0.7
    assert qat.settings.qat and record.to_dict()["images_per_epoch"] == len(train) // 64 * 64
    # the float model the caller handed in is untouched
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("schedule, message", [
    (QatSchedule(epochs=0), "positive number of epochs"),
    (QatSchedule(epochs=1, lr=5.0), "small positive rate"),
    (QatSchedule(epochs=1, batch_size=100_000), "fewer than one batch"),
])
def test_qat_bad_schedule_is_refused(schedule: QatSchedule, message: str) -> None:
    train, preprocess = _digits("train")
    model = create("mobilenet_v2", width=0.35, resolution=RESOLUTION, num_classes=10, in_channels=1).eval()
    with pytest.raises(EdgekitError, match=message):
        quantize_qat(model, preprocess(train.images[:16]), train, preprocess, QuantSettings(), schedule)


@pytest.mark.slow
def test_export_qat_from_checkpoint(digits_mobilenet_v2: Path, tmp_path: Path, edgekit_cli) -> None:
    out = tmp_path / "art"
    result = edgekit_cli("export", str(digits_mobilenet_v2), "--int8", "--qat-epochs", "2", "--qat-lr", "0.001",
                         "--eval", "auto", "--calib-size", "256", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    section = json.loads(result.stdout)["int8"]
    assert section["method"] == "quantization-aware"
    qat = section["qat"]
    assert qat["epochs"] == 2 and qat["lr"] == 0.001 and len(qat["loss"]) == 2
    assert all(np.isfinite(qat["loss"]))
    assert qat["augment"] == {"crop_padding": 1, "hflip": False}  # the training run's, from the checkpoint
    assert section["graph"]["tflite"]["full_integer"] and not section["warnings"]
    accuracy = section["accuracy"]
    assert accuracy["onnx_tflite_top1_agreement"] >= 0.99
    assert max(accuracy["drop_pp"].values()) <= 2.0, accuracy


def test_qat_without_training_data_is_refused(tmp_path: Path, edgekit_cli) -> None:
    out = tmp_path / "art"
    result = edgekit_cli("export", "mobilenet_v2", "--width", "0.35", "--resolution", "32", "--num-classes", "10",
                         "--int8", "--qat-epochs", "1", "--out", str(out))
    assert result.returncode == 2 and "--qat-epochs fine-tunes on training data" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
