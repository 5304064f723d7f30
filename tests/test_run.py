"""`edgekit run`: the whole pipeline on real data, then again with every stage up to date."""

import json

import pytest
from conftest import CONVERGED_DIGITS_RECIPE, DIGITS_RECIPE, write_recipe

# The bench stage at test speed (timings are not what these tests check).
FAST_BENCH = "bench:\n  runs: 3\n  min_seconds: 0\n  warmup_seconds: 0\n"


@pytest.mark.slow
def test_run_trains_exports_checks_and_skips_what_is_up_to_date(tmp_path, edgekit_cli):
    recipe = write_recipe(tmp_path / "r.yaml", CONVERGED_DIGITS_RECIPE + "check:\n  max_drop: 1.5\n" + FAST_BENCH)
    out = tmp_path / "run"
    first = edgekit_cli("run", str(recipe), "--out", str(out), "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(first.stdout)
    assert [(s["name"], s["status"]) for s in report["stages"]] == [("train", "ran"), ("export", "ran"),
                                                                    ("check", "ran"), ("bench", "ran")]
    # the bench stage: every exported file on this machine (the recipe's default devices: [local])
    assert {r["format"] for r in report["latency"] if r["device"] == "local"} == {
        "onnx", "tflite", "onnx_int8", "tflite_int8"}
    assert {(s["runtime"], s["format"]) for s in report["int8_speedup"]} == {
        ("onnxruntime", "onnx_int8"), ("tflite", "tflite_int8")}
    assert report["check"]["passed"]
    assert set(report["accuracy"]) == {"torch", "onnx", "tflite", "torch_int8", "onnx_int8", "tflite_int8"}
    assert report["accuracy"]["torch"] > 0.7
    # FP32 conversions keep the accuracy: at most one of 359 images may flip on a near-tie
    for fmt in ("onnx", "tflite"):
        assert abs(report["accuracy"][fmt] - report["accuracy"]["torch"]) <= 1 / 359 + 1e-9
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert manifest["input"]["preprocess"]["channels"] == 1 and manifest["input"]["data"] == "digits"
    assert manifest["parity"]["inputs"].startswith("the first 16 images of digits/val")
    assert manifest["int8"]["calibration"]["data"] == "digits" and manifest["int8"]["graph"]["tflite"]["full_integer"]
    for fmt in ("onnx", "tflite"):  # INT8 stays within the budget and agrees with the int8 torch graph
        assert report["check"]["drop_pp"][f"{fmt}_int8"] <= 1.5
        assert (out / "export" / f"model_int8.{fmt}").is_file()

    # the exported files, evaluated on their own, reproduce the recorded accuracy
    for fmt in ("onnx", "tflite"):
        evaluated = edgekit_cli("eval", str(out / "export" / f"model.{fmt}"), "--json")
        assert evaluated.returncode == 0, evaluated.stderr
        assert json.loads(evaluated.stdout)["top1"] == pytest.approx(report["accuracy"][fmt])

    mtime = (out / "export" / "model.onnx").stat().st_mtime_ns
    second = edgekit_cli("run", str(recipe), "--out", str(out), "--json")
    assert second.returncode == 0, second.stderr
    stages = {s["name"]: s["status"] for s in json.loads(second.stdout)["stages"]}
    assert stages == {"train": "up to date", "export": "up to date", "check": "ran", "bench": "up to date"}
    assert (out / "export" / "model.onnx").stat().st_mtime_ns == mtime

    # a latency budget no file can meet fails the run (exit 1), decided on the figures already measured
    plain = recipe.read_text()
    recipe.write_text(plain.replace("check:\n", "check:\n  max_latency_ms: {local: 0.00001}\n"))
    over_budget = edgekit_cli("run", str(recipe), "--out", str(out))
    assert over_budget.returncode == 1, over_budget.stderr[-2000:]
    assert "latency on local" in over_budget.stderr
    gate = json.loads((out / "report.json").read_text())
    assert gate["check"]["passed"] is False and gate["check"]["inconclusive"] == []
    budgets = [c for c in gate["check"]["cases"] if c["metric"] == "latency on local"]
    assert {c["format"] for c in budgets} == {"onnx_int8", "tflite_int8"}
    assert not any(c["passed"] or c["inconclusive"] for c in budgets)
    recipe.write_text(plain)

    # the gate: a format whose recorded accuracy is 3 pp under torch's fails the 1.5 pp budget with exit 1
    manifest_path = out / "export" / "manifest.json"
    manifest["accuracy"]["top1"]["onnx"] = manifest["accuracy"]["top1"]["torch"] - 0.03
    manifest_path.write_text(json.dumps(manifest))
    gated = edgekit_cli("run", str(recipe), "--out", str(out))
    assert gated.returncode == 1
    assert "accuracy drop over budget (onnx 3.00 pp > 1.5 pp)" in gated.stderr
    assert json.loads((out / "report.json").read_text())["check"]["passed"] is False

    # changed export settings re-export: ONNX only, INT8 fine-tuned quantization-aware for one epoch
    recipe.write_text(recipe.read_text() + "export:\n  formats: [onnx]\nint8:\n  qat_epochs: 1\n  qat_lr: 0.001\n")
    third = edgekit_cli("run", str(recipe), "--out", str(out), "--json")
    assert third.returncode == 0, third.stderr
    assert {s["name"]: s["status"] for s in json.loads(third.stdout)["stages"]}["export"] == "ran"
    assert not (out / "export" / "model.tflite").exists() and not (out / "export" / "model_int8.tflite").exists()
    assert (out / "export" / "model_int8.onnx").is_file()
    section = json.loads((out / "export" / "manifest.json").read_text())["int8"]
    assert section["method"] == "quantization-aware" and section["qat"]["epochs"] == 1
    assert json.loads(third.stdout)["check"]["drop_pp"]["onnx_int8"] <= 1.5

    # export.int8: false skips the INT8 stage; the new artifact holds no INT8 file
    recipe.write_text(recipe.read_text().replace("  formats: [onnx]\n", "  formats: [onnx]\n  int8: false\n"))
    fourth = edgekit_cli("run", str(recipe), "--out", str(out), "--json")
    assert fourth.returncode == 0, fourth.stderr
    assert {s["name"]: s["status"] for s in json.loads(fourth.stdout)["stages"]}["export"] == "ran"
    assert set(json.loads(fourth.stdout)["accuracy"]) == {"torch", "onnx"}
    assert not (out / "export" / "model_int8.onnx").exists()


def test_run_refuses_conflicting_int8_settings_before_any_work(tmp_path, edgekit_cli):
    recipe = write_recipe(tmp_path / "r.yaml", DIGITS_RECIPE + "int8:\n  max_drop: 0.5\n  qat_epochs: 1\n")
    result = edgekit_cli("run", str(recipe), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "two ways to the same end" in result.stderr
    assert not (tmp_path / "run").exists()


def test_run_refuses_a_directory_of_another_recipe(tmp_path, edgekit_cli):
    recipe = write_recipe(tmp_path / "r.yaml", DIGITS_RECIPE)
    out = tmp_path / "run"
    assert edgekit_cli("train", str(recipe), "--epochs", "1", "--out", str(out)).returncode == 0
    result = edgekit_cli("run", str(recipe), "--out", str(out))
    assert result.returncode == 2 and "different recipe" in result.stderr
