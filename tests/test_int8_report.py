"""`edgekit int8 report` (issue 41): the per-layer error report finds a layer planted to quantize badly.

The planted model is a small CNN trained here on digits; one convolution's strongest output channel is then scaled
by 64 and the next convolution's weights for that channel by 1/64. Through the ReLU between them the FP32 function
is unchanged, but that channel now sets the per-tensor scale of the layer's output, and every other channel of it
is rounded to a few levels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.data import DataSource, load_split, preprocess_for
from tests.conftest import run_edgekit

PLANT = 64.0
RESOLUTION = 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, 2, 1)
        self.conv3 = nn.Conv2d(32, 32, 3, 2, 1)
        self.conv4 = nn.Conv2d(32, 64, 3, 2, 1)
        self.gate = nn.Conv2d(64, 64, 1)  # a squeeze-excite gate: its sigmoid and multiply are matched too
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv4(x))
        x = x * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True)))
        return self.fc(x.mean((2, 3)))


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    source = DataSource.parse("digits")
    data = load_split(source, "train", RESOLUTION, 1)
    images = preprocess_for(source, RESOLUTION, 1)(data.images)
    return torch.from_numpy(np.ascontiguousarray(images)), data.labels


def _trained() -> Net:
    torch.manual_seed(0)
    images, labels = _digits()
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(6):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(images[batch]), labels[batch]).backward()
            optimizer.step()
    return net.eval()


def _plant(net: Net) -> Net:
    """Scale conv2's strongest channel by PLANT and conv3's weights for it by 1/PLANT: the same function."""
    images, _ = _digits()
    with torch.no_grad():
        strongest = int(torch.relu(net.conv2(torch.relu(net.conv1(images[:256])))).amax((0, 2, 3)).argmax())
        before = net(images[:64])
        net.conv2.weight[strongest] *= PLANT
        net.conv2.bias[strongest] *= PLANT
        net.conv3.weight[:, strongest] /= PLANT
        assert torch.allclose(net(images[:64]), before, atol=1e-4)
    return net


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The trained model as it is, planted, and planted then exported with cross-layer equalization."""
    import edgekit

    root = tmp_path_factory.mktemp("int8-report")
    net = _trained()
    common = {"calibration": "digits", "calib_size": 128, "input_shape": (1, 1, RESOLUTION, RESOLUTION)}
    found = {"plain": edgekit.quantize(net, formats="onnx", out=root / "plain", **common).directory}
    planted = _plant(net)
    found["planted"] = edgekit.quantize(planted, out=root / "planted", **common).directory
    found["equalized"] = edgekit.quantize(planted, formats="onnx", equalize=True, out=root / "equalized",
                                          **common).directory
    return found


def _report(artifact: Path, *args: str) -> dict:
    done = run_edgekit("int8", "report", str(artifact), "--images", "64", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _own_db(row: dict) -> float:
    return row["onnx"]["alone"]["channel_sqnr_db"]


def test_the_planted_layer_is_ranked_first_and_named_with_its_fix(artifacts: dict[str, Path]) -> None:
    report = _report(artifacts["planted"])
    worst = report["layers"][0]
    assert worst["layer"] == "conv2", [row["layer"] for row in report["layers"]]
    assert _own_db(worst) < 10, worst
    assert "--equalize" in worst["hint"]
    assert worst["weight_spread"] > PLANT / 2  # the planted channel's weights stand out across the layer
    # the channel median shows what the tensor-wide SQNR (dominated by the planted channel) hides
    assert worst["onnx"]["alone"]["sqnr_db"] - _own_db(worst) > 15
    # every layer compared in both files: the two converters' INT8 files agree layer by layer
    both = [row for row in report["layers"] if row.get("onnx") and row.get("tflite")]
    assert {row["layer"] for row in both} >= {"conv1", "conv2", "conv3", "conv4", "gate", "fc"}
    assert [row["layer"] for row in report["layers"] if row not in both] == ["input"]  # TFLite has no input op
    assert report["unmatched"] == {"onnx": 0, "tflite": 0}
    for row in both:
        onnx, tflite = row["onnx"]["accumulated"], row["tflite"]["accumulated"]
        if onnx["channel_sqnr_db"] is not None and onnx["channel_sqnr_db"] < 60:
            assert abs(onnx["channel_sqnr_db"] - tflite["channel_sqnr_db"]) < 1.5, row
    assert report["images"] == 64 and report["data"] == "digits"


def test_the_tflite_file_alone_finds_the_planted_layer(artifacts: dict[str, Path]) -> None:
    report = _report(artifacts["planted"], "--format", "tflite")
    assert report["layers"][0]["layer"] == "conv2", [row["layer"] for row in report["layers"]]
    assert all("onnx" not in row and row["tflite"] for row in report["layers"])
    assert "built-in kernels" in report["kernels"]["tflite"]


def test_the_same_layer_is_fine_before_planting_and_after_equalization(artifacts: dict[str, Path]) -> None:
    for name in ("plain", "equalized"):
        rows = {row["layer"]: row for row in _report(artifacts[name])["layers"]}
        assert _own_db(rows["conv2"]) > 25, (name, rows["conv2"])
        assert rows["conv2"]["hint"] == "", (name, rows["conv2"])


def test_the_api_reports_one_layer_and_the_table_names_it(artifacts: dict[str, Path], tmp_path: Path) -> None:
    import edgekit

    report = edgekit.int8_report(artifacts["planted"], layer="conv2", images=16, formats=["onnx"],
                                 plot=tmp_path / "layers.png")
    rows = report.rows()
    assert [row["layer"] for row in rows] == ["conv2"] and report.images == 16
    picture = (tmp_path / "layers.png").read_bytes()
    assert picture.startswith(b"\x89PNG") and len(picture) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers.png"]  # no temporary left beside it
    table = run_edgekit("int8", "report", str(artifacts["planted"]), "--images", "16", "--top", "3")
    assert table.returncode == 0, table.stderr
    assert "conv2" in table.stdout and "3 of " in table.stdout


def test_a_runtime_that_cannot_keep_intermediate_tensors_is_one_line(
        artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """tflite-runtime builds before intermediate tensors could be kept reject the interpreter's keyword."""
    import edgekit
    from edgekit.runtime import harness

    class OldInterpreter:
        def __init__(self, model_path: str, num_threads: int = 1, **kwargs: object) -> None:
            if "experimental_preserve_all_tensors" in kwargs:
                raise TypeError("__init__() got an unexpected keyword argument 'experimental_preserve_all_tensors'")

    class OldRuntime:
        Interpreter = OldInterpreter

    monkeypatch.setattr(harness, "_tflite_module", lambda: ("tflite-runtime", "2.5.0", OldRuntime))
    with pytest.raises(edgekit.EdgekitError, match=r"cannot keep intermediate tensors.*pip install ai-edge-litert"):
        edgekit.int8_report(artifacts["planted"], formats=["tflite"], images=4)
