"""The user's own model (issue 32): a network defined here, not in the zoo, exported and INT8-quantized through the
Python API and the `module:callable` CLI with the zoo's guarantees (parity, full-integer TFLite with ReLU6 fused,
the manifest), then evaluated, checked and benched from its artifact; a saved torch.export program (.pt2); an op
the INT8 path cannot keep integer, named with the reason; and bad input refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SHAPE = (1, 3, 32, 32)


class TinyNet(nn.Module):
    """What a user brings: conv + BN + ReLU6, a depthwise block with a residual add, pooling and a linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.block(x)
        return self.head(torch.flatten(self.pool(self.down(x)), 1))


def build_net() -> nn.Module:
    """`edgekit export test_user_model:build_net`: the module:callable the CLI test names."""
    return TinyNet()


class Digits(torch.utils.data.Dataset):
    """A user's Dataset: preprocessed (image, label) pairs, as edgekit's own `digits` source preprocesses them."""

    def __init__(self, split: str) -> None:
        from edgekit.data import DataSource, load_split, preprocess_for

        source = DataSource.parse("digits")
        data = load_split(source, split, SHAPE[2], SHAPE[1])
        self.images = torch.from_numpy(preprocess_for(source, SHAPE[2], SHAPE[1])(data.images))
        self.labels = data.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyNet, Path]:
    """TinyNet trained a few epochs on digits, and its state_dict saved as a user would."""
    torch.manual_seed(0)
    model = TinyNet()
    data = Digits("train")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(5):
        order = torch.randperm(len(data))
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(data.images[batch]), data.labels[batch]).backward()
            optimizer.step()
    path = tmp_path_factory.mktemp("user-model") / "tinynet.pt"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def _tflite_is_full_integer(path: Path) -> None:
    """The INT8 TFLite file itself: no float op inside, every ReLU6 fused into its convolution."""
    from edgekit.exporting.int8_files import tflite_int8_report
    from edgekit.inspect import inspect_file

    report = tflite_int8_report(path, int8_io=False)
    assert report["full_integer"] and not report["float_ops"], report
    assert report["fused_activations"]["RELU6"] == 3 and report["separate_clamp_ops"] == 0, report
    ops = inspect_file(path)["ops"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "FULLY_CONNECTED"} <= set(ops), ops
    assert "RELU6" not in ops and "GELU" not in ops, ops


def _assert_int8_artifact(manifest: dict, source: str) -> None:
    assert manifest["spec"]["family"] == "custom" and manifest["spec"]["num_classes"] == 10
    assert manifest["spec"]["options"] == {"source": source, "input_shape": list(SHAPE[1:])}
    assert manifest["input"]["shape_nchw"] == list(SHAPE)
    assert all(r["passed"] for r in manifest["parity"]["results"].values()), manifest["parity"]
    section = manifest["int8"]
    assert section["graph"]["tflite"]["full_integer"], section["graph"]["tflite"]
    assert section["unquantized_ops"] == [] and section["warnings"] == [], section["warnings"]
    assert set(manifest["files"]) == {"onnx", "tflite", "onnx_int8", "tflite_int8"}


@pytest.mark.slow
def test_python_api_quantizes_evaluates_checks_and_benches_a_user_model(trained, tmp_path: Path) -> None:
    import edgekit

    model, _ = trained
    with warnings.catch_warnings():
        warnings.simplefilter("error", edgekit.EdgekitWarning)  # a clean model warns about nothing
        artifact = edgekit.quantize(model, calibration=Digits("train"), calib_size=256, input_shape=SHAPE,
                                    evaluate_on="digits", out=tmp_path / "api")
    manifest = artifact.manifest
    _assert_int8_artifact(manifest, "python object")
    assert manifest.int8["calibration"]["data"] == "Digits" and manifest.int8["calibration"]["images"] == 256
    assert artifact.full_integer and artifact.file() == tmp_path / "api" / "model_int8.tflite"
    _tflite_is_full_integer(artifact.file("tflite_int8"))
    accuracy = manifest.int8["accuracy"]
    deployed = accuracy["top1"]["tflite_int8"]
    assert accuracy["top1"]["torch_fp32"] > 0.3 and accuracy["drop_pp"]["tflite_int8"] < 2, accuracy  # chance: 0.1

    # The user's own labelled DataLoader gives the same figure as edgekit's data source: same images, same inputs.
    loader = torch.utils.data.DataLoader(Digits("val"), batch_size=100)
    assert edgekit.evaluate(artifact, loader).top1 == pytest.approx(deployed, abs=1e-12)
    assert edgekit.evaluate(artifact.directory, "digits", format="onnx").top1 == pytest.approx(
        manifest.accuracy["top1"]["onnx"], abs=1e-12)

    result = edgekit.check(artifact, samples=200)
    assert result.passed and {"onnx_int8", "tflite_int8"} <= set(result.top1), result.to_dict()
    runs = edgekit.bench(artifact.directory / "model_int8.tflite", threads=[1], runs=3, min_seconds=0.05,
                         warmup_seconds=0.05)
    assert runs[0].results[0]["steady"]["p50_ms"] > 0
    recorded = edgekit.Artifact.open(artifact.directory).manifest
    assert recorded.check and recorded.bench[0]["file"] == "model_int8.tflite"


@pytest.mark.slow
def test_module_callable_cli_exports_checks_and_benches(trained, tmp_path: Path) -> None:
    """As a user runs it: the console script, from the directory that holds the module (it is on the path then, as
    with `python -m`), the weights from a state_dict file."""
    _, weights = trained
    script = Path(sys.executable).with_name("edgekit")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def edgekit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=HERE, env=env, timeout=600,
                              check=False)

    out = tmp_path / "cli"
    done = edgekit("export", "test_user_model:build_net", "--input-shape", "1,3,32,32", "--weights", str(weights),
                   "--int8", "--calib", "digits", "--calib-size", "256", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    _assert_int8_artifact(manifest, "test_user_model:build_net")
    assert manifest["spec"]["name"] == "build_net" and manifest["source"]["weights"] == str(weights)
    _tflite_is_full_integer(out / "model_int8.tflite")

    checked = edgekit("check", str(out), "--data", "digits", "--samples", "200", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["passed"]
    benched = edgekit("bench", str(out / "model_int8.tflite"), "--threads", "1", "--runs", "3", "--min-seconds",
                      "0.05", "--warmup-seconds", "0.05", "--json")
    assert benched.returncode == 0, benched.stderr
    assert json.loads(benched.stdout)["runs"][0]["results"][0]["steady"]["p50_ms"] > 0
    for args in (("inspect", "--verify", str(out)), ("report", str(out), "--out", str(tmp_path / "report"))):
        assert edgekit(*args).returncode == 0, args


def test_saved_program_exports_with_its_recorded_shape(tmp_path: Path) -> None:
    """A torch.export program (.pt2): its input shape comes from the program, here a non-square one."""
    import edgekit

    torch.manual_seed(0)
    model = TinyNet(classes=5).eval()
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 24, 40),)), str(path))
    artifact = edgekit.export(path, formats=["onnx"], out=tmp_path / "pt2")
    spec = artifact.manifest.spec
    assert (spec.name, spec.num_classes, list(spec.options["input_shape"])) == ("net", 5, [3, 24, 40])
    assert artifact.manifest.parity["results"]["onnx"]["passed"]
    from edgekit.runtime.runners import OnnxRunner

    x = np.random.default_rng(0).standard_normal((2, 3, 24, 40)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(OnnxRunner(artifact.file("onnx")).predict(x), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(edgekit.EdgekitError, match="captured for input 1x3x24x40"):
        edgekit.export(path, input_shape=(1, 3, 32, 32), out=tmp_path / "other")


def test_an_op_the_int8_path_cannot_keep_integer_is_named_with_the_reason(tmp_path: Path) -> None:
    """GELU has no INT8 rule in edgekit's quantizer: a warning and the manifest say which op, where and why."""
    import edgekit

    model = TinyNet()
    model.stem[2] = nn.GELU()
    calibration = [np.random.default_rng(i).standard_normal(SHAPE[1:]).astype(np.float32) for i in range(16)]
    with pytest.warns(edgekit.EdgekitWarning, match=r"aten\.gelu \(stem\.2\) is not quantized: edgekit's INT8 "
                                                    r"quantizer has no rule for it"):
        artifact = edgekit.quantize(model, calibration=calibration, input_shape=SHAPE, formats=["onnx"],
                                    out=tmp_path / "gelu")
    islands = artifact.manifest.int8["unquantized_ops"]
    assert [(i["op"], i["modules"]) for i in islands] == [("aten.gelu", ["stem.2"])]
    assert "runs in float" in islands[0]["why"]
    assert any("aten.gelu" in w for w in artifact.warnings)
    assert any("ONNX Runtime leaves" in w for w in artifact.warnings)  # the ONNX file's own float island


def test_bad_python_input_is_one_clear_error(tmp_path: Path) -> None:
    import edgekit

    cases = [
        (lambda: edgekit.export(TinyNet(), out=tmp_path / "a"), "needs its input shape: give --input-shape"),
        (lambda: edgekit.export(TinyNet(), input_shape=(1, 1, 32, 32), out=tmp_path / "a"),
         r"TinyNet does not run on a 1x1x32x32 input \(RuntimeError"),
        (lambda: edgekit.export(TinyNet(), input_shape="1,3,thirty", out=tmp_path / "a"), "is malformed"),
        (lambda: edgekit.export(TinyNet(), input_shape=(4, 3, 32, 32), out=tmp_path / "a"), "has batch 4"),
        (lambda: edgekit.export(TinyNet(), input_shape=SHAPE, width=0.5, out=tmp_path / "a"),
         "--width cannot change your own model"),
        (lambda: edgekit.quantize(TinyNet(), calibration=[np.zeros((3, 16, 16), np.float32)], input_shape=SHAPE,
                                  out=tmp_path / "a"), "yields float32 1x3x16x16, not images of 3x32x32"),
        (lambda: edgekit.quantize(TinyNet(), calibration=[np.zeros(SHAPE[1:], np.uint8)], input_shape=SHAPE,
                                  out=tmp_path / "a"), "give preprocessed float NCHW inputs"),
        (lambda: edgekit.quantize(TinyNet(), calibration=[], input_shape=SHAPE, out=tmp_path / "a"),
         "yielded no images"),
        (lambda: edgekit.quantize(TinyNet(), calibration=42, input_shape=SHAPE, out=tmp_path / "a"),
         "neither a data source name"),
        (lambda: edgekit.quantize(TinyNet(), calibration="digits", input_shape=(1, 3, 32, 48), out=tmp_path / "a"),
         "data sources give square ones"),
        (lambda: edgekit.export(TinyNet(), input_shape=SHAPE, calibration="digits", out=tmp_path / "a"),
         r"--calib \(calibration=\) applies to INT8 export: add --int8 \(int8=True in Python\)"),
        (lambda: edgekit.export(nn.Conv2d(3, 4, 3), input_shape=SHAPE, out=tmp_path / "a"),
         r"returns a \(1, 4, 30, 30\) tensor .* edgekit exports classifiers"),
        (lambda: edgekit.profile(TinyNet()), "needs input_shape"),
        (lambda: edgekit.export(TinyNet(), input_shape=SHAPE, formats=["pte"], out=tmp_path / "a"),
         "unknown format pte: choose from onnx, tflite"),
        (lambda: edgekit.export(TinyNet(), input_shape=SHAPE, int8=edgekit.Int8Options(), per_tensor=True,
                                out=tmp_path / "a"), "either as int8=Int8Options"),
        (lambda: edgekit.quantize(TinyNet(), calibration="digits", input_shape=SHAPE, calib_method="entropy",
                                  out=tmp_path / "a"), "unknown calibration method 'entropy'"),
        (lambda: edgekit.sweep("mobilenet_v2_fashion", [0.5], [32], jobs=0, out=tmp_path / "a"),
         "--jobs 0: give at least 1 point at a time"),
        (lambda: edgekit.sweep("mobilenet_v2_fashion", [], [32], out=tmp_path / "a"), "at least one --width"),
        (lambda: edgekit.bench(tmp_path, device="rpi5x"), "did you mean rpi5"),
    ]
    for call, message in cases:
        with pytest.raises(edgekit.EdgekitError, match=message):
            call()
    assert not (tmp_path / "a").exists()
    # A model torch.export cannot capture (data-dependent control flow) is refused before any file is written.

    class Branchy(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) if x.sum() > 0 else -super().forward(x)

    with pytest.raises(edgekit.EdgekitError, match="torch.export cannot capture Branchy"):
        edgekit.export(Branchy(), input_shape=SHAPE, out=tmp_path / "a")
    assert not (tmp_path / "a").exists()
