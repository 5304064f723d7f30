"""manifest.json as a typed record: read what an export writes, write back the same JSON, refuse damage."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edgekit.core.errors import EdgekitError
from edgekit.manifest import MANIFEST, FileRecord, Manifest, read_manifest, update_manifest

RECORD = {
    "manifest_version": 1,
    "created": "2026-12-07T00:00:00Z",
    "spec": None,  # the fixture fills in a complete spec record
    "input": {"layout": {"onnx": "nchw", "tflite": "nhwc"}, "shape_nchw": [1, 1, 32, 32], "dtype": "float32",
              "dynamic_batch": {"onnx": False, "tflite": False},
              "preprocess": None,  # the fixture fills in a real record
              "data": "digits", "classes": [str(i) for i in range(10)]},
    "source": {"weights": "best.pt", "sha256": "ab" * 32, "pretrained": True},
    "complexity": {"params": 1000, "macs": 20000},
    "files": {"onnx": {"file": "model.onnx", "bytes": 10, "sha256": "00" * 32},
              "tflite_int8": {"file": "model_int8.tflite", "bytes": 5, "sha256": "11" * 32}},
    "parity": {"reference": "torch", "results": {}},
    "ops": {"onnx": {"histogram": {"Conv": 3}, "warnings": []}},
    "accuracy": {"data": "digits", "images": 100, "top1": {"torch": 0.9, "onnx": 0.9}},
    "int8": {"accuracy": {"top1": {"tflite_int8": 0.89}}, "warnings": []},
    "export": {"onnx_opset": 18},
    "tools": {"torch": "2.13.0"},
    "bench": [{"file": "model.onnx", "p50_ms": 1.0}],
    "a_section_of_a_newer_edgekit": {"kept": True},
}


@pytest.fixture
def record() -> dict:
    """RECORD as an export writes it: the spec's options complete, the preprocessing a real record, JSON types."""
    from edgekit.data import Preprocess
    from edgekit.models import resolve_spec

    data = copy.deepcopy(RECORD)
    data["spec"] = resolve_spec("mobilenet_v2", width=0.5, resolution=32, num_classes=10, in_channels=1).to_dict()
    data["input"]["preprocess"] = Preprocess(resolution=32, channels=1, mean=(0.5,), std=(0.25,)).to_dict()
    return json.loads(json.dumps(data))


def test_a_manifest_reads_into_typed_fields_and_writes_back_the_same_json(record: dict) -> None:
    manifest = Manifest.from_dict(record)
    assert manifest.spec.name == "mobilenet_v2" and manifest.spec.width == 0.5
    assert manifest.files["tflite_int8"] == FileRecord("model_int8.tflite", 5, "11" * 32)
    assert manifest.input.layout["tflite"] == "nhwc" and manifest.input.classes[3] == "3"
    assert manifest.input.preprocessing().resolution == 32
    assert manifest.format_of_file() == {"model.onnx": "onnx", "model_int8.tflite": "tflite_int8"}
    # unknown sections included: a newer edgekit's record survives a rewrite
    assert json.loads(json.dumps(manifest.to_dict())) == record


def test_sections_later_verbs_write_are_absent_until_they_run(record: dict) -> None:
    del record["bench"]
    written = Manifest.from_dict(record).to_dict()
    assert "bench" not in written and "check" not in written and "run" not in written


def test_dict_access_still_works_for_one_release_with_a_warning(record: dict) -> None:
    manifest = Manifest.from_dict(record)
    with pytest.warns(DeprecationWarning, match="read its attributes"):
        assert manifest["int8"]["accuracy"]["top1"]["tflite_int8"] == 0.89


@pytest.mark.parametrize(("damage", "message"), [
    (lambda r: r.update(manifest_version=2), "not an edgekit v1 manifest"),
    (lambda r: r.pop("files"), "lacks its files or input section"),
    (lambda r: r.update(input=[]), "lacks its files or input section"),
    (lambda r: r["files"]["onnx"].update(file="../escape.onnx"), "not a plain file name"),
    (lambda r: r["files"]["onnx"].update(bytes="ten"), "not a plain file name"),
    (lambda r: r["input"]["preprocess"].update(mean="grey"), "damaged preprocessing"),
    (lambda r: r["spec"].update(width="wide"), "export the model again"),
])
def test_a_damaged_manifest_is_refused_with_the_fix(record: dict, damage, message: str) -> None:
    damage(record)
    with pytest.raises(EdgekitError, match=message):
        Manifest.from_dict(record, "art/manifest.json")


def test_update_rewrites_under_the_lock_and_keeps_everything_else(record: dict, tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps(record))
    update_manifest(tmp_path, lambda m: m.bench.append({"file": "model_int8.tflite", "p50_ms": 0.5}))
    after = json.loads((tmp_path / MANIFEST).read_text())
    assert [b["file"] for b in after["bench"]] == ["model.onnx", "model_int8.tflite"]
    assert {k: v for k, v in after.items() if k != "bench"} == {k: v for k, v in record.items() if k != "bench"}
    assert read_manifest(tmp_path).bench[-1]["p50_ms"] == 0.5
