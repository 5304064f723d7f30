"""`edgekit run`: the whole pipeline on real data, then again with every stage up to date."""

import json

import pytest
from conftest import DIGITS_RECIPE, write_recipe


@pytest.mark.slow
def test_run_trains_exports_checks_and_skips_what_is_up_to_date(tmp_path, edgekit_cli):
    recipe = write_recipe(tmp_path / "r.yaml", DIGITS_RECIPE + "check:\n  max_drop: 0.5\n")
    out = tmp_path / "run"
    first = edgekit_cli("run", str(recipe), "--out", str(out), "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(first.stdout)
    assert [(s["name"], s["status"]) for s in report["stages"]] == [("train", "ran"), ("export", "ran"),
                                                                    ("check", "ran")]
    assert report["check"]["passed"] and set(report["accuracy"]) == {"torch", "onnx", "tflite"}
    assert report["accuracy"]["torch"] > 0.7
    # FP32 conversions keep the accuracy: at most one of 359 images may flip on a near-tie
    for fmt in ("onnx", "tflite"):
        assert abs(report["accuracy"][fmt] - report["accuracy"]["torch"]) <= 1 / 359 + 1e-9
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["input"]["preprocess"]["channels"] == 1 and manifest["input"]["data"] == "digits"
    assert manifest["parity"]["inputs"].startswith("the first 16 images of digits/val")

    # the exported files, evaluated on their own, reproduce the recorded accuracy
    for fmt in ("onnx", "tflite"):
        evaluated = edgekit_cli("eval", str(out / "export" / f"model.{fmt}"), "--json")
        assert evaluated.returncode == 0, evaluated.stderr
        assert json.loads(evaluated.stdout)["top1"] == pytest.approx(report["accuracy"][fmt])

    mtime = (out / "export" / "model.onnx").stat().st_mtime_ns
    second = edgekit_cli("run", str(recipe), "--out", str(out), "--json")
    assert second.returncode == 0, second.stderr
    stages = {s["name"]: s["status"] for s in json.loads(second.stdout)["stages"]}
    assert stages == {"train": "up to date", "export": "up to date", "check": "ran"}
    assert (out / "export" / "model.onnx").stat().st_mtime_ns == mtime

    # the gate: a format whose recorded accuracy is 2 pp under torch's fails the 0.5 pp budget with exit 1
    manifest_path = out / "export" / "manifest.json"
    manifest["accuracy"]["top1"]["onnx"] = manifest["accuracy"]["top1"]["torch"] - 0.02
    manifest_path.write_text(json.dumps(manifest))
    gated = edgekit_cli("run", str(recipe), "--out", str(out))
    assert gated.returncode == 1
    assert "accuracy drop over budget (onnx 2.00 pp > 0.5 pp)" in gated.stderr
    assert json.loads((out / "report.json").read_text())["check"]["passed"] is False

    # a changed export setting re-exports
    recipe.write_text(recipe.read_text() + "export:\n  formats: [onnx]\n")
    third = edgekit_cli("run", str(recipe), "--out", str(out), "--json")
    assert third.returncode == 0, third.stderr
    assert {s["name"]: s["status"] for s in json.loads(third.stdout)["stages"]}["export"] == "ran"
    assert not (out / "export" / "model.tflite").exists()


def test_run_refuses_a_directory_of_another_recipe(tmp_path, edgekit_cli):
    recipe = write_recipe(tmp_path / "r.yaml", DIGITS_RECIPE)
    out = tmp_path / "run"
    assert edgekit_cli("train", str(recipe), "--epochs", "1", "--out", str(out)).returncode == 0
    result = edgekit_cli("run", str(recipe), "--out", str(out))
    assert result.returncode == 2 and "different recipe" in result.stderr
