"""Any model file, no manifest needed (issue 43): a Keras-made INT8 .tflite and an ONNX file from a plain
`torch.onnx.export` of the user's own network, judged on an image folder with the preprocessing given by flags or
a YAML file. edgekit's top-1 must equal an independent computation: the runtime called directly, the images
read and normalized here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_edgekit, run_edgekit_without_torch
from fixtures.image_folders import _slug, fashion_mnist_folder
from PIL import Image
from torch import nn

from edgekit.data import FASHION_MNIST_CLASSES

KERAS_INT8 = Path(__file__).parent / "data" / "keras_fashion_int8.tflite"  # tools/make_keras_tflite.py


def _eval(model: Path, *args: str) -> dict:
    done = run_edgekit("eval", str(model), *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_keras_int8_tflite_without_manifest(tmp_path: Path) -> None:
    folder = fashion_mnist_folder(tmp_path / "fashion", train_per_class=1, val_per_class=20, size=32)
    model = tmp_path / "from_keras" / "model.tflite"  # nothing beside it
    model.parent.mkdir()
    shutil.copy(KERAS_INT8, model)
    # The model's outputs in the dataset's order; the class folders sort differently, so names must map them.
    names = [_slug(name) for name in FASHION_MNIST_CLASSES]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(names) + "\n")
    assert sorted(names) != names

    got = _eval(model, "--data", f"imagefolder:{folder}", "--mean", "0.5", "--std", "0.5", "--labels", str(labels))

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and list(inp["shape"]) == [1, 32, 32, 1]  # full-integer, NHWC
    scale, zero_point = inp["quantization"]
    correct = total = 0
    for class_dir in sorted((folder / "val").iterdir()):
        for image in sorted(class_dir.glob("*.png")):
            x = np.asarray(Image.open(image).convert("L"), np.float32)[None, :, :, None] / 255
            x = (x - 0.5) / 0.5
            interpreter.set_tensor(inp["index"],
                                   np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8))
            interpreter.invoke()
            correct += int(np.argmax(interpreter.get_tensor(out["index"])[0])) == names.index(class_dir.name)
            total += 1
    assert got["images"] == total == 200
    assert got["top1"] == correct / total
    assert got["top1"] > 0.5  # a trained model (chance is 0.1), so the equality means something

    # where torch is not installed, the same evaluation, decoded without it, gives the same figures
    done = run_edgekit_without_torch("eval", str(model), "--data", f"imagefolder:{folder}", "--mean", "0.5", "--std",
                                     "0.5", "--labels", str(labels), "--json")
    assert done.returncode == 0 and "torch imported: False" in done.stderr, done.stderr[-3000:]
    assert json.loads(done.stdout) == got


def _digits_folder(root: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits at `size` px (8: as they come): every 5th image in ROOT/val/DIGIT/*.png (one per
    class in train/); returns the other images and labels, for training."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack([np.asarray(Image.fromarray((im * 255 / 16).round().astype(np.uint8)).resize(
        (size, size), Image.Resampling.NEAREST)) for im in digits.images])
    held = np.arange(len(images)) % 5 == 0
    for index in np.flatnonzero(held):
        folder = root / "val" / str(digits.target[index])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index]).save(folder / f"{index}.png")
    for digit in range(10):
        (root / "train" / str(digit)).mkdir(parents=True, exist_ok=True)
        shutil.copy(next((root / "val" / str(digit)).glob("*.png")), root / "train" / str(digit) / "0.png")
    return images[~held], digits.target[~held]


def test_an_onnx_file_from_a_plain_torch_onnx_export(tmp_path: Path) -> None:
    images, targets = _digits_folder(tmp_path / "digits", size=8)
    mean, std = 0.25, 0.35
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    x = (torch.from_numpy(images).float()[:, None] / 255 - mean) / std
    y = torch.from_numpy(targets)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    model = tmp_path / "mine" / "net.onnx"
    model.parent.mkdir()
    torch.onnx.export(net.eval(), (torch.zeros(1, 1, 8, 8),), str(model))  # the user's own export, no edgekit
    pre = tmp_path / "pre.yaml"
    pre.write_text(f"mean: [{mean}]\nstd: [{std}]\nresize: squash\n")

    got = _eval(model, "--data", f"imagefolder:{tmp_path / 'digits'}", "--preprocess", str(pre))

    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = total = 0
    for class_dir in sorted((tmp_path / "digits" / "val").iterdir()):
        for image in sorted(class_dir.glob("*.png")):
            x1 = (np.asarray(Image.open(image), np.float32)[None, None] / 255 - mean) / std
            correct += int(np.argmax(session.run(None, {name: x1.astype(np.float32)})[0])) == int(class_dir.name)
            total += 1
    assert got["images"] == total > 300
    assert got["top1"] == correct / total
    assert got["top1"] > 0.8
    import edgekit  # the Python API, the same keys as a dict

    api = edgekit.evaluate(model, f"imagefolder:{tmp_path / 'digits'}",
                           preprocess={"mean": [mean], "std": [std], "resize": "squash"})
    assert (api.count, api.top1) == (total, correct / total)

    # An INT8 file made elsewhere too (ONNX Runtime's own static quantization), checked against the FP32 file.
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: x[i:i + 1].numpy()} for i in range(0, 256, 2)])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    int8 = tmp_path / "mine" / "net_int8.onnx"
    quantize_static(str(model), str(int8), Calibration(), quant_format=QuantFormat.QDQ)
    done = run_edgekit("check", "--pair", str(model), str(int8), "--data", f"imagefolder:{tmp_path / 'digits'}",
                       "--preprocess", str(pre), "--max-drop", "100", "--json")
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["top1"]["onnx"] == correct / total and result["images"] == total
    assert result["top1"]["onnx_int8"] > 0.8
    assert [(c["format"], c["metric"]) for c in result["cases"]] == [("onnx_int8", "accuracy drop")]
    assert result["cases"][0]["value"] == pytest.approx((result["top1"]["onnx"] - result["top1"]["onnx_int8"]) * 100,
                                                        abs=1e-3)
    assert not (model.parent / "manifest.json").exists()  # nothing recorded beside files made elsewhere
    api_check = edgekit.check(pair=(model, int8), data=f"imagefolder:{tmp_path / 'digits'}", max_drop=100,
                              preprocess={"mean": [mean], "std": [std], "resize": "squash"})
    assert api_check.top1 == result["top1"] and api_check.passed


def test_an_onnx_file_with_channels_last_input(tmp_path: Path) -> None:
    """An ONNX file taking NHWC input (as Keras converts to ONNX): the layout is read from its input shape, and it
    scores exactly as the same weights exported with NCHW input."""
    import edgekit

    images, targets = _digits_folder(tmp_path / "digits", size=8)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 10))
    x, y = (torch.from_numpy(images).float()[:, None] / 255 - 0.25) / 0.35, torch.from_numpy(targets)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(40):  # trained a little: the layouts must agree on varied predictions, not one constant class
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    net.eval()

    class ChannelsLast(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return net(x.permute(0, 3, 1, 2))

    files = {"nchw": tmp_path / "nchw" / "net.onnx", "nhwc": tmp_path / "nhwc" / "net.onnx"}
    for layout, module, example in (("nchw", net, torch.zeros(1, 1, 8, 8)),
                                    ("nhwc", ChannelsLast(), torch.zeros(1, 8, 8, 1))):
        files[layout].parent.mkdir()
        torch.onnx.export(module, (example,), str(files[layout]))
    scores = {layout: edgekit.evaluate(path, f"imagefolder:{tmp_path / 'digits'}",
                                       preprocess={"mean": [0.25], "std": [0.35]}) for layout, path in files.items()}
    assert scores["nhwc"].count == scores["nchw"].count > 300
    assert np.array_equal(scores["nhwc"].confusion, scores["nchw"].confusion)
    assert len(set(scores["nchw"].confusion.argmax(1))) > 1  # not a constant prediction, which any layout gives


@pytest.mark.parametrize("as_flags", [False, True])
def test_given_preprocessing_means_what_it_says(tmp_path: Path, as_flags: bool) -> None:
    """input_range, mean and std in the model's units become the one Preprocess every runtime applies."""
    from edgekit.preprocess import SQUASH, GivenPreprocess

    record = {"mean": "123.675,116.28,103.53", "std": "58.395,57.12,57.375", "input_range": "0,255",
              "resize": "squash", "crop_ratio": 0.875, "layout": "nhwc"}
    if as_flags:
        given = GivenPreprocess.load(None, record)
    else:
        path = tmp_path / "pre.yaml"
        path.write_text("mean: [123.675, 116.28, 103.53]\nstd: [58.395, 57.12, 57.375]\ninput_range: [0, 255]\n"
                        "resize: squash\ncrop_ratio: 0.875\nlayout: nhwc\n")
        given = GivenPreprocess.load(path)
    pre = given.resolve("model.tflite", 3, 224)
    assert (pre.resize, pre.crop_ratio, pre.layout, pre.resolution) == (SQUASH, 0.875, "nhwc", 224)
    pixels = np.stack([np.full((1, 1), v, np.uint8) for v in (0, 128, 255)])[None]  # one pixel per channel
    want = (pixels.astype(np.float64) - np.array([123.675, 116.28, 103.53]).reshape(1, 3, 1, 1)) / np.array(
        [58.395, 57.12, 57.375]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(pre(pixels), want, rtol=1e-5, atol=1e-5)
    # one value serves every channel; a flag overrides the file's key, and the file's other keys stay
    assert GivenPreprocess.load(None, {"mean": "0.5", "std": "0.5"}).resolve("m", 3, 32).mean == (0.5, 0.5, 0.5)
    if not as_flags:
        both = GivenPreprocess.load(tmp_path / "pre.yaml", {"mean": "0,0,0"})
        assert both.mean == (0.0, 0.0, 0.0) and both.std == (58.395, 57.12, 57.375)
