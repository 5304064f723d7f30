"""INT8: full-integer graphs for every family, ReLU6 fused with its range kept, formats that agree, bad input."""

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from blocks import MAX_STEPS_OFF, Block, steps_off
from onnx import numpy_helper

from edgekit.core.errors import EdgekitError
from edgekit.exporting.int8_files import export_int8_onnx, export_int8_tflite, tflite_int8_report
from edgekit.exporting.verify import ort_fused_histogram
from edgekit.inspect import inspect_file
from edgekit.models import batchnorm_statistics_from_noise, create
from edgekit.quantization.annotator import QuantSettings
from edgekit.quantization.ptq import QuantizedModel, quantize_ptq
from edgekit.runtime import harness
from edgekit.runtime.parity import compare
from edgekit.runtime.runners import OnnxRunner, TFLiteRunner

RESOLUTION = 32
FULL_INTEGER = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
                "efficientnet_lite0", "regnet_x_200mf", "regnet_y_200mf", "shufflenet_v1", "shufflenet_v2_x0_5"]
WITHOUT_RELU = {"efficientnet_b0"}  # SiLU throughout: nothing to fuse
FLOAT_IN_ORT = ("Conv", "Gemm", "MatMul", "Add")


def _model_with_statistics(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return batchnorm_statistics_from_noise(create(name, resolution=RESOLUTION, num_classes=10))


def _calibration(n: int = 32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, RESOLUTION, RESOLUTION)).astype(np.float32)


@functools.cache
def _quantized(name: str) -> QuantizedModel:
    return quantize_ptq(_model_with_statistics(name), _calibration(), QuantSettings())


@dataclass(frozen=True)
class Exported:
    onnx: Path | None  # written for the default TFLite options only: ONNX takes none of them
    tflite: Path
    report: dict


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Exported]:
    """One INT8 export per family and TFLite options, shared by this file's tests, which only read the files: a
    family's conversion takes up to two minutes on a 2-core machine."""
    made: dict[tuple, Exported] = {}

    def export(name: str, **tflite_options: bool) -> Exported:
        key = (name, tuple(sorted(tflite_options.items())))
        if key not in made:
            out = tmp_path_factory.mktemp(name)
            onnx_path = None
            if not tflite_options:
                onnx_path = out / "m.onnx"
                export_int8_onnx(_quantized(name), (3, RESOLUTION, RESOLUTION), onnx_path)
            export_int8_tflite(_quantized(name), (3, RESOLUTION, RESOLUTION), out / "m.tflite", **tflite_options)
            made[key] = Exported(onnx_path, out / "m.tflite",
                                 tflite_int8_report(out / "m.tflite", tflite_options.get("int8_io", False)))
        return made[key]

    return export


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL_INTEGER)
def test_every_family_exports_full_integer_graphs(name: str, int8_export, monkeypatch) -> None:
    exported = int8_export(name)
    onnx_path, report = exported.onnx, exported.report
    info = inspect_file(exported.tflite)
    ops = info["ops"]
    assert info["layout_transposes"] <= 1  # the input's only, channel shuffles included
    assert report["full_integer"], report
    assert report["interior_quantize_dequantize"] == 0
    assert ops.get("QUANTIZE") == 1 and ops.get("DEQUANTIZE") == 1  # float input and output only
    assert report["separate_clamp_ops"] == 0
    assert sum(report["fused_activations"].values()) > 0 or name in WITHOUT_RELU
    assert report["relu6_range_wasted_max"] == 0.0
    fused = ort_fused_histogram(onnx_path)
    assert not [op for op in FLOAT_IN_ORT if op in fused], fused
    assert fused.get("QLinearConv", 0) > 0
    # ORT's exact mode for CPUs without VNNI (tests/test_int8_x86.py) rewrites every weight: the graph loads
    monkeypatch.setattr(harness, "int8_products_saturate", lambda: True)
    harness.OnnxModel(str(onnx_path), threads=1)



@pytest.mark.slow
@pytest.mark.parametrize("kind", ["residual_relu6", "shuffle_concat", "silu", "sigmoid", "squeeze_excite",
                                  "hardsigmoid", "hard_squeeze_excite"])
def test_onnx_and_tflite_compute_the_torch_int8_block(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    quantized = quantize_ptq(Block(kind).eval(), images, QuantSettings())
    onnx_path, tflite_path = tmp_path / "b.onnx", tmp_path / "b.tflite"
    export_int8_onnx(quantized, (3, 16, 16), onnx_path)
    export_int8_tflite(quantized, (3, 16, 16), tflite_path)
    assert tflite_int8_report(tflite_path, False)["full_integer"]
    reference = quantized(torch.from_numpy(images[:8])).detach().numpy()
    for path, runner in ((onnx_path, OnnxRunner), (tflite_path, TFLiteRunner)):
        off = steps_off(reference, runner(path).predict(images[:8]))
        assert off <= MAX_STEPS_OFF, f"{path.suffix}: {off:.1f} output steps from the torch int8 model"


@pytest.mark.slow
def test_relu6_is_fused_and_calibrated_after_the_clamp(tmp_path: Path, int8_export) -> None:
    """Ours keeps the whole int8 range for [0, 6]; litert-torch's own quantizer observes before the clamp and
    wastes part of it: the measurement tells the two apart."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgekit.quantization.ptq import QuantizedModel, capture

    ours = int8_export("mobilenet_v2").report
    assert ours["fused_activations"]["RELU6"] == 35 and ours["relu6_range_wasted_max"] == 0.0

    model = _model_with_statistics("mobilenet_v2")
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(capture(model, (3, RESOLUTION, RESOLUTION)), quantizer)
    prepared(torch.from_numpy(_calibration()))
    theirs_model = QuantizedModel(convert_pt2e(prepared, fold_quantize=False), QuantSettings(), 32)
    export_int8_tflite(theirs_model, (3, RESOLUTION, RESOLUTION), tmp_path / "theirs.tflite")
    theirs = tflite_int8_report(tmp_path / "theirs.tflite", False)
    assert theirs["relu6_range_wasted_max"] > 0.05


@pytest.mark.slow
def test_int8_io_has_no_quantize_ops_and_matches_float_io(int8_export) -> None:
    float_io = int8_export("mobilenet_v2").tflite
    exported = int8_export("mobilenet_v2", int8_io=True)
    int8_io, report = exported.tflite, exported.report
    info = inspect_file(int8_io)
    assert "QUANTIZE" not in info["ops"] and "DEQUANTIZE" not in info["ops"]
    assert info["inputs"][0]["dtype"] == "int8" and "quantization" in info["inputs"][0]
    assert report["io_types_ok"] and report["full_integer"]
    batch = _calibration(8)
    a, b = TFLiteRunner(float_io).predict(batch), TFLiteRunner(int8_io).predict(batch)
    assert compare(a, b).max_abs_diff <= info["outputs"][0]["quantization"]["scale"] * 1.01


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2_x0_5"])
def test_int8_nhwc_has_no_layout_transpose_and_matches_nchw(name: str, int8_export) -> None:
    # one quantized model, two TFLite layouts (the ONNX file does not depend on --nhwc)
    nchw, exported = int8_export(name).tflite, int8_export(name, nhwc=True)
    nhwc, report = exported.tflite, exported.report
    info = inspect_file(nhwc)
    assert info["layout_transposes"] == 0 and report["full_integer"]
    assert info["inputs"][0]["shape"] == [1, RESOLUTION, RESOLUTION, 3]
    batch = _calibration(8)
    a, b = TFLiteRunner(nchw).predict(batch), TFLiteRunner(nhwc, layout="nhwc").predict(batch)
    np.testing.assert_array_equal(a, b)  # the same integer arithmetic, only the layout differs


@pytest.mark.parametrize("qat", [False, True])
def test_the_int8_graph_is_in_eval_mode(qat: bool) -> None:
    # convert skips torchao's train-to-eval rewrite: that is only right while capture exports the eval-mode model
    model = _model_with_statistics("mobilenet_v3_small")  # its classifier has dropout
    model.train()
    quantized = quantize_ptq(model, _calibration(8), QuantSettings(qat=qat))
    dropouts = [n for n in quantized.graph.graph.nodes if "dropout" in str(n.target)]
    assert dropouts and all(n.args[2] is False for n in dropouts), [n.args for n in dropouts]
    assert not [n for n in quantized.graph.graph.nodes if "batch_norm" in str(n.target)]  # folded
    x = torch.from_numpy(_calibration(4))
    assert torch.equal(quantized(x), quantized(x))


def test_bad_calibration_input_is_refused() -> None:
    model = create("mobilenet_v2", width=0.35, resolution=RESOLUTION, num_classes=10).eval()
    with pytest.raises(EdgekitError, match="model takes"):
        quantize_ptq(model, np.zeros((16, 1, RESOLUTION, RESOLUTION), np.float32), QuantSettings())
    with pytest.raises(EdgekitError, match="at least"):
        quantize_ptq(model, _calibration(3), QuantSettings())
    bad = _calibration(16)
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(EdgekitError, match="NaN"):
        quantize_ptq(model, bad, QuantSettings())
    with torch.no_grad():
        model.features[0][0].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(EdgekitError, match="features.0.0.weight"):
        quantize_ptq(model, _calibration(16), QuantSettings())


@pytest.mark.slow
def test_export_int8_from_checkpoint(digits_mobilenet_v2: Path, tmp_path: Path, edgekit_cli) -> None:
    out = tmp_path / "art"
    result = edgekit_cli("export", str(digits_mobilenet_v2), "--int8", "--eval", "auto", "--calib-size", "256",
                         "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    section = manifest["int8"]
    assert section["calibration"] == {"method": "minmax", "data": "digits", "split": "digits/train",
                                      "images": 256, "seed": 0}
    for key in ("onnx_int8", "tflite_int8"):
        record = manifest["files"][key]
        assert (out / record["file"]).stat().st_size == record["bytes"]
    accuracy = section["accuracy"]
    assert accuracy["top1"]["torch_fp32"] > 0.8
    assert max(accuracy["drop_pp"].values()) <= 2.0, accuracy
    assert accuracy["onnx_tflite_top1_agreement"] >= 0.99
    assert section["graph"]["tflite"]["full_integer"] and not section["warnings"]
    onnx_model = onnx.load(str(out / "model_int8.onnx"))
    weights = [i for i in onnx_model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 50  # every conv and the classifier hold int8 weights
    sizes = {i.name: numpy_helper.to_array(i).nbytes for i in onnx_model.graph.initializer}
    assert sum(sizes[w.name] for w in weights) > 0.9 * sum(sizes.values())  # no float copy of them left
    runner = OnnxRunner(out / "model_int8.onnx")
    assert runner.predict(np.zeros((1, 1, RESOLUTION, RESOLUTION), np.float32)).shape == (1, 10)
    _a_plain_session_needs_only_what_the_file_states(out / "model_int8.onnx", section, edgekit_cli)


def _a_plain_session_needs_only_what_the_file_states(path: Path, section: dict, edgekit_cli) -> None:
    """The INT8 ONNX file states the session entry it needs where ORT's U8S8 kernels saturate (x86 without VNNI:
    tests/test_int8_x86.py shows the damage under an emulated Haswell); the manifest and `edgekit inspect` show it.
    A plain session given only that entry computes what edgekit's own session computes (to float rounding: the
    thread counts differ)."""
    import onnxruntime as ort

    needs = inspect_file(path)["onnxruntime_needs"]
    assert needs["session_config"] == {"session.x64quantprecision": "1"} and "without VNNI" in needs["when"]
    assert section["graph"]["onnx"]["onnxruntime_needs"] == needs
    shown = edgekit_cli("inspect", str(path))
    assert shown.returncode == 0 and "session.x64quantprecision=1" in shown.stdout
    x = np.random.default_rng(0).uniform(-1, 2, (4, 1, RESOLUTION, RESOLUTION)).astype(np.float32)
    options = ort.SessionOptions()
    for key, value in needs["session_config"].items():
        options.add_session_config_entry(key, value)
    ours = OnnxRunner(path, layout="nchw")
    stated = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for sample in x:
        expected = ours.run(sample[None])
        np.testing.assert_allclose(stated.run(None, {"input": sample[None]})[0], expected, rtol=0, atol=1e-5)
        if not harness.int8_products_saturate():  # a VNNI or ARM CPU: exact with ORT's defaults too
            np.testing.assert_allclose(plain.run(None, {"input": sample[None]})[0], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--int8", "--calib-method", "entropy"], "--calib-method"),  # a typed choice: refused by the parser
    (["--int8-io"], "add --int8"),
    (["--int8", "--calib-size", "0"], "--calib-size 0 is not a positive number of images"),
    (["--int8", "--calib", "nonsense"], "nonsense"),
    (["--int8", "--max-drop", "0.5"], "add --eval"),
    (["--int8", "--max-drop", "-1", "--eval", "digits"], "budget >= 0"),
    (["--max-drop", "0.5"], "add --int8"),
    (["--int8", "--max-drop", "0.5", "--qat-epochs", "1"], "choose one"),
])
def test_int8_cli_bad_input(args: list[str], message: str, tmp_path: Path, edgekit_cli) -> None:
    out = tmp_path / "art"
    result = edgekit_cli("export", "mobilenet_v2", "--width", "0.35", "--resolution", "32", "--num-classes", "10",
                         "--format", "onnx", "--out", str(out), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
