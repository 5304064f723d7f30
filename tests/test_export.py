"""FP32 export to ONNX and TFLite: every family, parity, the manifest, --nhwc, weights, and bad input."""

import json
from pathlib import Path

import pytest
import torch

from edgekit.core.errors import EdgekitError
from edgekit.core.files import sha256_file
from edgekit.exporting import export_model
from edgekit.inspect import inspect_file
from edgekit.models import create, resolve_spec

pytestmark = pytest.mark.slow

# One model per family, small enough to convert quickly; 64 px keeps every stage at least 2x2.
FAMILY_MODELS = [
    ("mobilenet_v1", {"width": 0.25}), ("mobilenet_v2", {"width": 0.35}), ("mobilenet_v3_large", {"width": 0.5}),
    ("mobilenet_v3_small", {}), ("shufflenet_v1", {"width": 0.5, "groups": 3}), ("shufflenet_v2_x0_5", {}),
    ("efficientnet_b0", {"width": 0.5}), ("efficientnet_lite0", {"width": 0.5}), ("regnet_x_200mf", {}),
    ("regnet_y_200mf", {}),
]


@pytest.mark.parametrize(("name", "kwargs"), FAMILY_MODELS, ids=[n for n, _ in FAMILY_MODELS])
def test_every_family_exports_with_parity(tmp_path, name, kwargs):
    spec = resolve_spec(name, resolution=64, num_classes=10, **kwargs)
    result = export_model(spec, out=tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest.to_dict()))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.json", "model.onnx", "model.tflite"]
    for fmt in ("onnx", "tflite"):
        parity = manifest["parity"]["results"][fmt]
        assert parity["passed"] and parity["max_rel_diff"] < 1e-3 and parity["min_cosine"] > 0.9999
        assert manifest["files"][fmt]["sha256"] == sha256_file(tmp_path / "a" / f"model.{fmt}")
        assert manifest["ops"][fmt]["unexpected"] == []
    tflite_ops = manifest["ops"]["tflite"]
    # at most the input's NCHW->NHWC TRANSPOSE, channel shuffles included (edgekit/exporting/layout.py)
    assert tflite_ops["layout_transposes"] <= 1 and tflite_ops["warnings"] == []
    assert tflite_ops["histogram"]["CONV_2D"] >= 1 and tflite_ops["histogram"]["FULLY_CONNECTED"] >= 1
    model = create(name, **kwargs, num_classes=10)
    assert manifest["complexity"]["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2_x0_5", "shufflenet_v1"])
def test_nhwc_tflite_has_no_layout_transpose(tmp_path, name):
    spec = resolve_spec(name, width=0.35 if name == "mobilenet_v2" else 0.5, resolution=64, num_classes=10)
    manifest = export_model(spec, formats=["tflite"], nhwc=True, out=tmp_path / "a").manifest.to_dict()
    assert manifest["ops"]["tflite"]["layout_transposes"] == 0
    # a channel shuffle's own TRANSPOSE (of its 5-D view) is the only kind left
    transposes = manifest["ops"]["tflite"]["histogram"].get("TRANSPOSE", 0)
    assert transposes == {"mobilenet_v2": 0, "shufflenet_v2_x0_5": 16, "shufflenet_v1": 15}[name]
    assert manifest["input"]["layout"] == {"tflite": "nhwc"}
    info = inspect_file(tmp_path / "a" / "model.tflite")
    assert info["inputs"][0]["shape"] == [1, 64, 64, 3]
    assert manifest["parity"]["results"]["tflite"]["passed"]


def test_onnx_dynamic_batch_and_checker(tmp_path):
    spec = resolve_spec("mobilenet_v3_small", width=0.5, resolution=64, num_classes=5)
    export_model(spec, formats=["onnx"], dynamic_batch=True, out=tmp_path / "a")
    info = inspect_file(tmp_path / "a" / "model.onnx")
    assert info["opset"] >= 17
    assert isinstance(info["inputs"][0]["shape"][0], str)  # a named dynamic axis
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "a" / "model.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.zeros((4, 3, 64, 64), np.float32)})[0]
    assert out.shape == (4, 5)


def test_torchvision_weights_export_with_their_hash(tmp_path):
    from fixtures.imagenet_samples import torchvision_mobilenet_v2

    weights = torchvision_mobilenet_v2()
    spec = resolve_spec("mobilenet_v2", resolution=96)
    manifest = export_model(spec, weights=weights, formats=["onnx"], out=tmp_path / "a").manifest.to_dict()
    assert manifest["source"]["sha256"] == sha256_file(weights)
    assert manifest["source"]["pretrained"] is True
    # Real weights give large logits: parity holds at scale, not just for near-zero random outputs.
    assert manifest["parity"]["results"]["onnx"]["max_rel_diff"] < 1e-4


def test_existing_artifact_is_kept_without_force_and_replaced_with_it(tmp_path):
    spec = resolve_spec("mobilenet_v3_small", width=0.35, resolution=64, num_classes=3)
    export_model(spec, formats=["onnx"], out=tmp_path / "a")
    before = sha256_file(tmp_path / "a" / "manifest.json")
    with pytest.raises(EdgekitError, match="already exists: pass --force"):
        export_model(spec, formats=["onnx"], out=tmp_path / "a")
    assert sha256_file(tmp_path / "a" / "manifest.json") == before
    export_model(spec, formats=["tflite"], out=tmp_path / "a", force=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.json", "model.tflite"]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no staging or backup left behind


def test_failed_export_leaves_nothing_and_keeps_previous(tmp_path, monkeypatch):
    spec = resolve_spec("mobilenet_v3_small", width=0.35, resolution=64, num_classes=3)
    export_model(spec, formats=["onnx"], out=tmp_path / "a")
    before = sha256_file(tmp_path / "a" / "model.onnx")
    import edgekit.exporting.converters as converters  # the format table's TFLite exporter

    def broken(*args, **kwargs):
        raise EdgekitError("TFLite conversion failed (simulated).")

    monkeypatch.setattr(converters, "export_tflite", broken)
    with pytest.raises(EdgekitError, match="simulated"):
        export_model(spec, out=tmp_path / "a", force=True)
    assert sha256_file(tmp_path / "a" / "model.onnx") == before
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_parity_failure_writes_no_artifact(tmp_path, monkeypatch):
    import edgekit.runtime.runners as runners  # the format table's ONNX runner

    class WrongRunner(runners.OnnxRunner):
        def predict(self, batch):
            return super().predict(batch)[:, ::-1].copy()

    monkeypatch.setattr(runners, "OnnxRunner", WrongRunner)
    spec = resolve_spec("mobilenet_v3_small", width=0.35, resolution=64, num_classes=3)
    with pytest.raises(EdgekitError, match="onnx output disagrees with torch"):
        export_model(spec, formats=["onnx"], out=tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_bad_weights(tmp_path):
    spec = resolve_spec("mobilenet_v2", width=0.35, resolution=64, num_classes=3)
    other = _save(tmp_path / "other.pt", create("mobilenet_v3_small").state_dict())
    with pytest.raises(EdgekitError, match=r"does not fit mobilenet_v2 \(missing: .*unexpected: "):
        export_model(spec, weights=other, out=tmp_path / "a")
    wrong_classes = _save(tmp_path / "w.pt", create("mobilenet_v2", width=0.35, num_classes=7).state_dict())
    with pytest.raises(EdgekitError, match="wrong shape: classifier.1.weight"):
        export_model(spec, weights=wrong_classes, out=tmp_path / "a")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(_save(tmp_path / "ok.pt", create("mobilenet_v2", width=0.35).state_dict()).read_bytes()[:999])
    with pytest.raises(EdgekitError, match="corrupt or not a PyTorch file"):
        export_model(spec, weights=corrupt, out=tmp_path / "a")
    with pytest.raises(EdgekitError, match="does not exist"):
        export_model(spec, weights=tmp_path / "missing.pt", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    evil = _save(tmp_path / "evil.pt", {"model": _Evil()})
    spec = resolve_spec("mobilenet_v2", width=0.35, resolution=64)
    with pytest.raises(EdgekitError, match="not a loadable weights file"):
        export_model(spec, weights=evil, out=tmp_path / "a")


def test_cli_export_and_inspect(tmp_path, edgekit_cli):
    out = tmp_path / "art"
    result = edgekit_cli("export", "mobilenet_v2", "--width", "0.35", "--resolution", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "random weights" in result.stderr
    assert "model.tflite" in result.stdout and "CONV_2D" in result.stdout
    assert "absl" not in result.stderr and "XNNPACK" not in result.stderr  # converters' chatter kept out
    again = edgekit_cli("export", "mobilenet_v2", "--width", "0.35", "--resolution", "64", "--out", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    info = json.loads(edgekit_cli("inspect", str(out / "model.tflite"), "--json").stdout)
    assert info["format"] == "tflite" and info["ops"]["DEPTHWISE_CONV_2D"] == 17
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = edgekit_cli("inspect", str(bad))
    assert result.returncode == 2 and "not a valid ONNX model" in result.stderr and "Traceback" not in result.stderr


def test_cli_unwritable_output_and_bad_format(tmp_path, edgekit_cli):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = edgekit_cli("export", "mobilenet_v2", "--resolution", "64", "--out", str(blocker / "sub"))
    assert result.returncode == 2 and "cannot write to" in result.stderr and "Traceback" not in result.stderr
    result = edgekit_cli("export", "mobilenet_v2", "--format", "tflite,coreml")
    assert result.returncode == 2 and "unknown format coreml" in result.stderr
