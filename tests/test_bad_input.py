"""The bad-input matrix: every verb, fed malformed arguments and damaged files.

Each case must end with one line on stderr that starts with `error:`, exit code 2 (bad input), no traceback,
and nothing created, changed or removed under the working directory (which holds every input file).
The cases run in-process through the console script's `main()`, the same code path as the installed command.
"""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from edgekit.cli.main import main

RECIPE = """\
name: tiny
model:
  name: mobilenet_v2
  width: 0.35
  resolution: 32
  in_channels: 1
data:
  source: digits
train:
  epochs: 1
"""


USER_MODELS = """\
import torch
from torch import nn


def build_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def not_a_module():
    return {"conv": 3}


def raises():
    raise ValueError("needs a config file")
"""


class Evil:
    """Unpickling this runs a shell command: what a booby-trapped checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def _write(root: Path, name: str, content: str | bytes) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def _edit_manifest(art: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((art / "manifest.json").read_text())
    change(manifest)
    (art / "manifest.json").write_text(json.dumps(manifest))


def _set(path: list[str], value: object) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, digits_mobilenet_v2: Path, digits_artifact: Path) -> Path:
    """Every damaged input the cases name, built once; each case works on its own copy."""
    root = tmp_path_factory.mktemp("bad-inputs")
    shutil.copy(digits_mobilenet_v2, root / "good.pt")
    shutil.copytree(digits_artifact, root / "art", ignore=shutil.ignore_patterns(".*"))
    ckpt = torch.load(digits_mobilenet_v2, weights_only=True)
    good = (root / "good.pt").read_bytes()
    onnx = (root / "art" / "model.onnx").read_bytes()
    tflite = (root / "art" / "model.tflite").read_bytes()

    _write(root, "recipe.yaml", RECIPE)
    _write(root, "user_models.py", USER_MODELS)  # issue 32: the user's own model, as MODULE:CALLABLE
    _write(root, "user_broken.py", "raise RuntimeError('no GPU here')\n")
    for module in ("user_models.py", "user_broken.py"):  # compiled now: importing them writes no __pycache__
        py_compile.compile(str(root / module), doraise=True)
    _write(root, "junk.pt2", b"PK\x03\x04 not a program")
    _write(root, "empty.yaml", "")
    _write(root, "broken.yaml", "name: x\nmodel: [1, 2\n")
    _write(root, "list.yaml", "- 1\n- 2\n")
    _write(root, "unknown-key.yaml", RECIPE.replace("  width: 0.35", "  width: 0.35\n  depth: 2"))
    _write(root, "nan-width.yaml", RECIPE.replace("width: 0.35", "width: .nan"))
    _write(root, "huge.yaml", RECIPE.replace("resolution: 32", "resolution: 100000"))
    _write(root, "negative-epochs.yaml", RECIPE.replace("epochs: 1", "epochs: -3"))
    _write(root, "string-lr.yaml", RECIPE + "  lr: fast\n")
    _write(root, "unknown-model.yaml", RECIPE.replace("mobilenet_v2", "resnet50"))
    _write(root, "missing-data.yaml", RECIPE.replace("source: digits", "source: imagefolder:nowhere"))
    _write(root, "python-tag.yaml", "!!python/object/apply:os.system ['touch pwned']\n")
    _write(root, "binary.yaml", b"\x00\x01\x02garbage")
    _write(root, "truncated.pt", good[: len(good) // 3])
    _write(root, "empty.pt", b"")
    _write(root, "text.pt", "not a checkpoint\n")
    torch.save(Evil(root / "pwned"), root / "evil.pt")
    torch.save([1, 2, 3], root / "list.pt")
    nan_state = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
                 for k, v in ckpt["model"].items()}
    torch.save({**ckpt, "model": nan_state}, root / "nan.pt")
    torch.save({**ckpt, "spec": {**ckpt["spec"], "width": float("inf")}}, root / "bad-spec.pt")
    torch.save({**ckpt, "spec": {**ckpt["spec"], "name": "mobilenet_v1"}}, root / "wrong-arch.pt")
    torch.save({k: v for k, v in ckpt["model"].items() if "classifier" not in k}, root / "headless.pt")
    torch.save(ckpt["model"], root / "state_dict.pt")
    _write(root, "truncated.onnx", onnx[: len(onnx) // 2])
    _write(root, "truncated.tflite", tflite[: len(tflite) // 2])
    _write(root, "empty.onnx", b"")
    _write(root, "model.bin", b"\x00" * 64)
    # Issue 43: a model file made elsewhere (no manifest) and the preprocessing a user gives for it.
    _write(root, "bare/model.onnx", onnx)
    _write(root, "labels-letters.txt", "".join(f"{k}\n" for k in "abcdefghij"))
    _write(root, "pre-unknown-key.yaml", "mean: [0.5]\nstd: [0.5]\nnormalise: true\n")
    _write(root, "pre-crop-ratio.yaml", "crop_ratio: 2\n")
    _write(root, "pre-input-range.yaml", "input_range: [1, 0]\n")
    _write(root, "pre-resolution.yaml", "resolution: 224\n")
    _write(root, "pre-labels-missing.yaml", "labels: nowhere.txt\n")
    _write(root, "pre-nan-mean.yaml", "mean: [.nan]\n")
    _write(root, "pre-resize.yaml", "resize: bicubic\n")

    def artifact(name: str, change: Callable[[Path], None]) -> None:
        shutil.copytree(root / "art", root / name)
        change(root / name)

    artifact("art-edited", lambda a: (a / "model_int8.onnx").write_bytes(b"\x00" * 100))
    artifact("art-missing-file", lambda a: (a / "model_int8.tflite").unlink())
    artifact("art-bad-json", lambda a: (a / "manifest.json").write_text("{not json"))
    artifact("art-no-spec", lambda a: _edit_manifest(a, lambda m: m.pop("spec")))
    artifact("art-traversal", lambda a: _edit_manifest(a, _set(["files", "onnx", "file"], "../../etc/passwd")))
    artifact("art-nan-std", lambda a: _edit_manifest(a, _set(["input", "preprocess", "std"], [0.0])))
    artifact("art-version", lambda a: _edit_manifest(a, _set(["manifest_version"], 99)))
    artifact("art-fp32-only", lambda a: [(a / f).unlink() for f in ("model_int8.onnx", "model_int8.tflite")]
             and _edit_manifest(a, lambda m: [m["files"].pop(k) for k in ("onnx_int8", "tflite_int8")]))
    (root / "art-empty").mkdir()
    # Issue 41: an artifact calibrated on noise (a zoo model exported without --calib records no data)
    artifact("art-noise-calibrated", lambda a: _edit_manifest(a, _set(["int8", "calibration"], {
        "method": "minmax", "data": None, "images": 512, "note": "standard-normal noise: plumbing only"})))

    _write(root, "baseline-bad-json.json", "{")
    _write(root, "baseline-unknown.json", json.dumps({"edgekit_baseline": 1, "models": {}, "extra": 1}))
    _write(root, "baseline-nan.json", json.dumps(
        {"edgekit_baseline": 1, "models": {"x": {"accuracy": {"onnx_int8": "high"}}}}))
    _write(root, "devices/broken.yaml", "name: broken\ntransport: [ssh\n")
    _write(root, "devices/unknown-key.yaml", "name: unknown-key\ntransport: local\nturbo: true\n")
    _write(root, "devices/bad-transport.yaml", "name: bad-transport\ntransport: carrier-pigeon\n")
    _write(root, "devices/no-host.yaml", "name: no-host\ntransport: ssh\nssh:\n  user: pi\n")
    _write(root, "devices/bad-threads.yaml", "name: bad-threads\ntransport: local\nthreads: [0]\n")
    _write(root, "home/predictors/local-onnxruntime-fp32-t1.json", "{not json")  # EDGEKIT_HOME=home
    # Issue 30's classes: paths from names, option injection, crashes on odd bytes and depth, unbounded options.
    for tag, name in (("traversal", "../escaped"), ("absolute", str(root / "abs")), ("slash", "a/b"),
                      ("dot", ".."), ("dash", "-rf")):
        _write(root, f"name-{tag}.yaml", RECIPE.replace("name: tiny", f"name: '{name}'"))
    _write(root, "deep.yaml", RECIPE + "extra: " + "[" * 20000 + "]" * 20000 + "\n")
    _write(root, "deep-block.yaml", RECIPE + "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n")
    _write(root, "devices/dash-host.yaml",
           "name: dash-host\ntransport: ssh\nssh: {host: '-oProxyCommand=touch pwned'}\n")
    _write(root, "devices/dash-user.yaml", "name: dash-user\ntransport: ssh\nssh: {host: h, user: '-oX=y'}\n")
    _write(root, "devices/text-port.yaml", "name: text-port\ntransport: ssh\nssh: {host: h, port: twenty-two}\n")
    _write(root, "devices/text-timeout.yaml",
           "name: text-timeout\ntransport: ssh\nssh: {host: h, connect_timeout_s: soon}\n")
    _write(root, "devices/binary.yaml", b"name: binary\ntransport: local\n\xff\xfe\x00")
    _write(root, "devices/deep.yaml", "name: deep\ntransport: local\nx: " + "[" * 5000 + "]" * 5000 + "\n")
    artifact("art-binary-manifest", lambda a: (a / "manifest.json").write_bytes(b"\xff\xfe{\x00\x01"))
    artifact("art-deep-manifest", lambda a: (a / "manifest.json").write_text("[" * 100000 + "]" * 100000))
    _write(root, "report-dir/notes.txt", "the user's own notes\n")
    # Issue 32: image folders without classes or readable images, calibration folders without images.
    _write(root, "flat/train/photo.png", _png_bytes())
    _write(root, "unreadable/train/cat/1.jpg", b"\xff\xd8 not a jpeg")
    _write(root, "unreadable/train/cat/2.png", b"")
    _write(root, "no-images/notes.txt", "no photos here\n")
    _write(root, "crop-ratio.yaml", RECIPE.replace("source: digits", "source: digits\n  crop_ratio: 1.5"))
    _write(root, "freeze.yaml", RECIPE + "  freeze_epochs: -1\n")
    return root


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, format="PNG")
    return buffer.getvalue()


# (id, argv). Paths are relative to the case's working directory, a copy of `inputs`.
CASES: list[tuple[str, list[str]]] = [
    ("models-unknown-family", ["models", "--family", "resnet"]),
    ("models-extra-argument", ["models", "mobilenet_v2"]),
    ("unknown-verb", ["frobnicate"]),
    ("profile-unknown-model", ["profile", "resnet50"]),
    ("profile-negative-width", ["profile", "mobilenet_v2", "--width", "-1"]),
    ("profile-nan-width", ["profile", "mobilenet_v2", "--width", "nan"]),
    ("profile-inf-width", ["profile", "mobilenet_v2", "--width", "inf"]),
    ("profile-text-width", ["profile", "mobilenet_v2", "--width", "wide"]),
    ("profile-zero-resolution", ["profile", "mobilenet_v2", "--resolution", "0"]),
    ("profile-absurd-resolution", ["profile", "mobilenet_v2", "--resolution", "100000"]),
    ("profile-inf-res-mult", ["profile", "mobilenet_v2", "--res-mult", "inf"]),
    ("profile-resolution-and-mult", ["profile", "mobilenet_v2", "--resolution", "160", "--res-mult", "0.5"]),
    ("profile-zero-classes", ["profile", "mobilenet_v2", "--num-classes", "0"]),
    ("profile-absurd-classes", ["profile", "mobilenet_v2", "--num-classes", "1000000000"]),
    ("profile-zero-channels", ["profile", "mobilenet_v2", "--in-channels", "0"]),
    ("profile-option-not-pair", ["profile", "mobilenet_v2", "-o", "groups"]),
    ("profile-unknown-option", ["profile", "mobilenet_v2", "-o", "depth=3"]),
    ("profile-bad-option-value", ["profile", "shufflenet_v1", "-o", "groups=5"]),
    ("train-missing-recipe", ["train", "nowhere.yaml"]),
    ("train-directory-recipe", ["train", "art"]),
    ("train-empty-recipe", ["train", "empty.yaml"]),
    ("train-broken-yaml", ["train", "broken.yaml"]),
    ("train-list-yaml", ["train", "list.yaml"]),
    ("train-unknown-key", ["train", "unknown-key.yaml"]),
    ("train-nan-width", ["train", "nan-width.yaml"]),
    ("train-absurd-resolution", ["train", "huge.yaml"]),
    ("train-negative-epochs", ["train", "negative-epochs.yaml"]),
    ("train-string-lr", ["train", "string-lr.yaml"]),
    ("train-unknown-model", ["train", "unknown-model.yaml"]),
    ("train-python-tag", ["train", "python-tag.yaml"]),
    ("train-binary-recipe", ["train", "binary.yaml"]),
    ("train-checkpoint-as-recipe", ["train", "good.pt"]),
    ("train-missing-imagefolder", ["train", "missing-data.yaml", "--out", "runs/x"]),
    ("train-unknown-data", ["train", "recipe.yaml", "--data", "imagenet-22k", "--out", "runs/x"]),
    ("train-zero-epochs", ["train", "recipe.yaml", "--epochs", "0"]),
    ("train-zero-batch", ["train", "recipe.yaml", "--batch-size", "0"]),
    ("eval-missing", ["eval", "nowhere.pt"]),
    ("eval-unknown-format", ["eval", "model.bin"]),
    ("eval-truncated-checkpoint", ["eval", "truncated.pt"]),
    ("eval-empty-checkpoint", ["eval", "empty.pt"]),
    ("eval-text-checkpoint", ["eval", "text.pt"]),
    ("eval-malicious-pickle", ["eval", "evil.pt"]),
    ("eval-not-a-dict", ["eval", "list.pt"]),
    ("eval-state-dict-not-checkpoint", ["eval", "state_dict.pt"]),
    ("eval-nan-weights", ["eval", "nan.pt"]),
    ("eval-damaged-spec", ["eval", "bad-spec.pt"]),
    ("eval-wrong-architecture", ["eval", "wrong-arch.pt"]),
    ("eval-onnx-without-manifest", ["eval", "truncated.onnx"]),
    ("eval-edited-onnx", ["eval", "art-edited/model_int8.onnx"]),
    ("eval-other-classes", ["eval", "good.pt", "--data", "fashion-mnist"]),
    ("eval-zero-batch", ["eval", "good.pt", "--batch-size", "0"]),
    ("eval-zero-threads", ["eval", "good.pt", "--threads", "0"]),
    ("eval-nan-std-manifest", ["eval", "art-nan-std/model.onnx"]),
    ("export-unknown-model", ["export", "resnet50"]),
    ("export-truncated-checkpoint", ["export", "truncated.pt"]),
    ("export-malicious-pickle", ["export", "evil.pt"]),
    ("export-nan-weights", ["export", "nan.pt", "--out", "out"]),
    ("export-zero-width", ["export", "mobilenet_v2", "--width", "0", "--out", "out"]),
    ("export-weights-missing-keys", ["export", "mobilenet_v2", "--weights", "headless.pt", "--width", "0.5",
                                     "--resolution", "32", "--in-channels", "1", "--num-classes", "10",
                                     "--out", "out"]),
    ("export-weights-wrong-width", ["export", "mobilenet_v2", "--weights", "state_dict.pt", "--num-classes", "10",
                                    "--out", "out"]),
    ("export-weights-other-model", ["export", "mobilenet_v1", "--weights", "good.pt", "--out", "out"]),
    ("export-checkpoint-and-width", ["export", "good.pt", "--width", "1.0", "--out", "out"]),
    ("export-over-existing", ["export", "good.pt", "--out", "art"]),
    ("export-zero-calibration", ["export", "good.pt", "--int8", "--calib-size", "0", "--out", "out"]),
    ("export-calibration-folder-missing", ["export", "good.pt", "--int8", "--calib", "nowhere/photos",
                                           "--out", "out"]),
    ("inspect-missing", ["inspect", "nowhere.onnx"]),
    ("inspect-truncated-onnx", ["inspect", "truncated.onnx"]),
    ("inspect-empty-onnx", ["inspect", "empty.onnx"]),
    ("inspect-truncated-tflite", ["inspect", "truncated.tflite"]),
    ("inspect-unknown-format", ["inspect", "model.bin"]),
    ("inspect-verify-no-manifest", ["inspect", "--verify", "art-empty"]),
    ("inspect-verify-bad-json", ["inspect", "--verify", "art-bad-json"]),
    ("inspect-verify-traversal", ["inspect", "--verify", "art-traversal"]),
    ("bench-missing", ["bench", "nowhere"]),
    ("bench-unknown-format", ["bench", "model.bin"]),
    ("bench-truncated-tflite", ["bench", "truncated.tflite"]),
    ("bench-edited-file", ["bench", "art-edited"]),
    ("bench-unknown-device", ["bench", "art", "--device", "pi-zero"]),
    ("bench-zero-threads", ["bench", "art", "--threads", "0"]),
    ("bench-bad-threads", ["bench", "art", "--threads", "1,many"]),
    ("bench-zero-runs", ["bench", "art", "--runs", "0"]),
    ("bench-zero-processes", ["bench", "art", "--processes", "0"]),
    ("bench-bad-cores", ["bench", "art", "--cores", "zz"]),
    ("bench-unknown-runtime", ["bench", "art", "--runtime", "tensorrt"]),
    ("bench-no-manifest-spec", ["bench", "art-no-spec"]),
    ("devices-check-unknown", ["devices", "check", "pi-zero"]),
    ("devices-broken-yaml", ["devices", "check", "broken"]),
    ("devices-unknown-key", ["devices", "check", "unknown-key"]),
    ("devices-bad-transport", ["devices", "check", "bad-transport"]),
    ("devices-ssh-without-host", ["devices", "check", "no-host"]),
    ("devices-zero-threads", ["devices", "check", "bad-threads"]),
    ("check-missing", ["check", "nowhere"]),
    ("check-empty-directory", ["check", "art-empty"]),
    ("check-fp32-only", ["check", "art-fp32-only"]),
    ("check-edited-file", ["check", "art-edited"]),
    ("check-missing-file", ["check", "art-missing-file"]),
    ("check-bad-manifest-json", ["check", "art-bad-json"]),
    ("check-manifest-without-spec", ["check", "art-no-spec"]),
    ("check-manifest-traversal", ["check", "art-traversal"]),
    ("check-manifest-version", ["check", "art-version"]),
    ("check-nan-max-drop", ["check", "art", "--max-drop", "nan"]),
    ("check-negative-max-drop", ["check", "art", "--max-drop", "-1"]),
    ("check-zero-samples", ["check", "art", "--samples", "0"]),
    ("check-baseline-bad-json", ["check", "art", "--baseline", "baseline-bad-json.json"]),
    ("check-baseline-unknown-key", ["check", "art", "--baseline", "baseline-unknown.json"]),
    ("check-baseline-not-numbers", ["check", "art", "--baseline", "baseline-nan.json"]),
    ("check-baseline-missing", ["check", "art", "--baseline", "nowhere.json"]),
    ("check-update-without-baseline", ["check", "art", "--update-baseline"]),
    ("check-other-classes", ["check", "art", "--data", "fashion-mnist"]),
    ("check-unknown-reference", ["check", "art", "--reference", "tensorrt"]),
    ("check-latency-never-measured", ["check", "art", "--max-latency-ratio", "1.5"]),
    ("report-missing", ["report", "nowhere"]),
    ("report-bad-manifest", ["report", "art-bad-json"]),
    ("report-unmeasured-latency", ["report", "art", "--latency", "rpi9/tflite/1t"]),
    ("report-out-is-a-file", ["report", "art", "--out", "recipe.yaml"]),
    ("sweep-missing-recipe", ["sweep", "nowhere.yaml", "--width", "0.5"]),
    ("sweep-no-widths", ["sweep", "recipe.yaml"]),
    ("sweep-bad-widths", ["sweep", "recipe.yaml", "--width", "0.5,wide"]),
    ("sweep-zero-width", ["sweep", "recipe.yaml", "--width", "0"]),
    ("sweep-zero-jobs", ["sweep", "recipe.yaml", "--width", "0.5", "--jobs", "0"]),
    ("sweep-unknown-key", ["sweep", "unknown-key.yaml", "--width", "0.5"]),
    ("sweep-unknown-device", ["sweep", "recipe.yaml", "--width", "0.5", "--device", "pi-zero"]),
    ("sweep-zero-bench-threads", ["sweep", "recipe.yaml", "--width", "0.5", "--resolution", "32",
                                  "--bench-threads", "0"]),
    ("sweep-bad-bench-threads", ["sweep", "recipe.yaml", "--width", "0.5", "--resolution", "32",
                                 "--bench-threads", "1,many"]),
    ("run-misspelt-builtin-recipe", ["run", "mobilenet_v2_fashon"]),
    ("export-unknown-format", ["export", "mobilenet_v2", "--format", "pte"]),
    ("export-negative-qat-epochs", ["export", "mobilenet_v2", "--int8", "--qat-epochs", "-1"]),
    ("export-qat-lr-one", ["export", "good.pt", "--int8", "--qat-epochs", "1", "--qat-lr", "1"]),
    ("export-calib-size-zero", ["export", "mobilenet_v2", "--int8", "--calib-size", "0"]),
    ("guidelines-two-threads", ["guidelines", "--threads", "1,2"]),
    ("run-missing-recipe", ["run", "nowhere.yaml"]),
    ("run-unknown-key", ["run", "unknown-key.yaml"]),
    ("run-missing-imagefolder", ["run", "missing-data.yaml", "--out", "runs/x"]),
    ("run-zero-epochs", ["run", "recipe.yaml", "--epochs", "0"]),
    ("latency-calibrate-with-target", ["latency", "calibrate", "art"]),
    ("bench-family-is-not-a-bench-option", ["bench", "art", "--family", "MobileNetV2"]),
    ("guidelines-with-target", ["guidelines", "art"]),
    ("latency-calibrate-unknown-family", ["latency", "calibrate", "--family", "AlexNet"]),
    ("latency-calibrate-bad-resolutions", ["latency", "calibrate", "--resolution", "8"]),
    ("latency-calibrate-bad-widths", ["latency", "calibrate", "--width", "wide"]),
    ("latency-calibrate-two-threads", ["latency", "calibrate", "--threads", "1,2"]),
    ("latency-predict-no-table", ["latency", "predict", "mobilenet_v2", "--threads", "2"]),
    ("latency-predict-damaged-table", ["latency", "predict", "mobilenet_v2"]),
    ("latency-predict-unknown-model", ["latency", "predict", "mobilenet_v9"]),
    ("latency-predict-zero-width", ["latency", "predict", "mobilenet_v2", "--width", "0"]),
    ("latency-predict-unknown-runtime", ["latency", "predict", "mobilenet_v2", "--runtime", "tensorrt"]),
    ("latency-predict-unknown-device", ["latency", "predict", "mobilenet_v2", "--device", "pi-zero"]),
    ("latency-predict-int8-onnxruntime", ["latency", "predict", "mobilenet_v2", "--int8", "--runtime", "onnxruntime"]),
    ("latency-calibrate-int8-onnxruntime", ["latency", "calibrate", "--int8", "--runtime", "onnxruntime"]),
    ("latency-predict-int8-no-table", ["latency", "predict", "mobilenet_v2", "--int8"]),
    ("latency-search-no-budget", ["latency", "search"]),
    ("latency-search-negative-budget", ["latency", "search", "--latency-ms", "-1"]),
    ("latency-search-nan-budget", ["latency", "search", "--latency-ms", "nan"]),
    ("latency-search-unknown-family", ["latency", "search", "--latency-ms", "5", "--family", "AlexNet"]),
    ("latency-search-unknown-metric", ["latency", "search", "--latency-ms", "5", "--metric", "speed"]),
    ("latency-search-bad-widths", ["latency", "search", "--latency-ms", "5", "--width", "0.5,wide"]),
    ("latency-search-bad-resolutions", ["latency", "search", "--latency-ms", "5", "--resolution", "4000"]),
    ("latency-search-missing-recipe", ["latency", "search", "--latency-ms", "5", "--recipe", "nowhere.yaml"]),
    ("latency-search-damaged-table", ["latency", "search", "--latency-ms", "5", "--family", "mobilenet_v2"]),
    ("latency-score-unknown-format", ["latency", "score", "--formats", "int4-tflite"]),
    ("latency-score-two-formats-one-out", ["latency", "score", "--formats", "fp32-onnxruntime,fp32-tflite",
                                           "--out", "score.json"]),
    ("latency-score-no-table", ["latency", "score", "--threads", "2", "--family", "mobilenet_v2"]),
    ("latency-score-damaged-table", ["latency", "score", "--family", "mobilenet_v2"]),
    ("latency-score-measured-not-a-score", ["latency", "score", "--measured", "good.pt"]),
    ("latency-score-calibrate-and-measured", ["latency", "score", "--calibrate", "--measured", "good.pt"]),
    ("latency-score-unknown-family", ["latency", "score", "--family", "AlexNet"]),
    # A recipe's name is a directory: one safe path component or refused (train and run).
    *[(f"{verb}-recipe-name-{tag}", [verb, f"name-{tag}.yaml", "--epochs", "1"])
      for verb in ("train", "run") for tag in ("traversal", "absolute", "slash", "dot", "dash")],
    ("train-deep-recipe", ["train", "deep.yaml"]),
    ("run-deep-block-recipe", ["run", "deep-block.yaml"]),
    ("sweep-deep-recipe", ["sweep", "deep.yaml", "--width", "0.5", "--resolution", "32"]),
    # Device profiles: option injection through host or user, non-numeric numbers, bytes, depth.
    *[(f"devices-check-{name}", ["devices", "check", name])
      for name in ("dash-host", "dash-user", "text-port", "text-timeout", "binary", "deep")],
    ("bench-dash-host", ["bench", "art", "--device", "dash-host"]),
    ("bench-missing-file", ["bench", "art-missing-file"]),
    # A binary or absurdly deep manifest.json, in every verb that reads one.
    *[(f"{verb}-{art}", [*argv, art]) for art in ("art-binary-manifest", "art-deep-manifest")
      for verb, argv in (("inspect-verify", ["inspect", "--verify"]), ("eval", ["eval"]), ("bench", ["bench"]),
                         ("check", ["check"]), ("report", ["report"]))],
    ("eval-binary-manifest-file", ["eval", "art-binary-manifest/model.onnx"]),
    ("export-text-checkpoint", ["export", "text.pt", "--out", "out"]),
    # Issue 43: any model file, with the preprocessing the user gives (a YAML file or flags).
    ("eval-file-without-manifest-or-preprocessing", ["eval", "bare/model.onnx", "--data", "digits"]),
    *[(f"eval-preprocess-{name}", ["eval", "bare/model.onnx", "--data", "digits", "--preprocess", f"{name}.yaml"])
      for name in ("pre-unknown-key", "pre-crop-ratio", "pre-input-range", "pre-resolution", "pre-labels-missing",
                   "pre-nan-mean", "pre-resize", "list", "broken", "binary", "nowhere")],
    ("eval-preprocess-zero-std", ["eval", "bare/model.onnx", "--data", "digits", "--std", "0"]),
    ("eval-preprocess-mean-per-channel-count", ["eval", "bare/model.onnx", "--data", "digits", "--mean", "0.1,0.2"]),
    ("eval-preprocess-text-mean", ["eval", "bare/model.onnx", "--data", "digits", "--mean", "grey"]),
    ("eval-preprocess-layout", ["eval", "bare/model.onnx", "--data", "digits", "--mean", "0.5", "--layout", "hwc"]),
    ("eval-preprocess-labels-count", ["eval", "bare/model.onnx", "--data", "digits", "--labels", "recipe.yaml"]),
    ("eval-preprocess-labels-miss-a-class", ["eval", "bare/model.onnx", "--data", "digits", "--labels",
                                             "labels-letters.txt"]),
    ("eval-preprocess-for-a-checkpoint", ["eval", "good.pt", "--mean", "0.5"]),
    ("check-nothing-to-check", ["check"]),
    ("check-artifact-and-pair", ["check", "art", "--pair", "art/model.onnx", "art/model_int8.tflite"]),
    ("check-artifact-with-preprocessing", ["check", "art", "--mean", "0.5"]),
    ("check-pair-without-preprocessing", ["check", "--pair", "bare/model.onnx", "art/model_int8.tflite"]),
    ("check-pair-missing-file", ["check", "--pair", "art/model.onnx", "nowhere.tflite"]),
    ("check-pair-bad-preprocessing", ["check", "--pair", "bare/model.onnx", "art/model_int8.tflite", "--data",
                                      "digits", "--preprocess", "pre-unknown-key.yaml"]),
    ("export-weights-text", ["export", "mobilenet_v2", "--weights", "text.pt", "--out", "out"]),
    # Family options: NaN, huge and wrong-typed values are refused at once (a depth of ten million used to hang).
    ("profile-nan-phi", ["profile", "efficientnet", "-o", "phi=nan"]),
    ("profile-huge-phi", ["profile", "efficientnet", "-o", "phi=1e9"]),
    ("profile-huge-depth", ["profile", "regnet_y", "-o", "depth=10000000"]),
    ("profile-fractional-depth", ["profile", "regnet_y", "-o", "depth=2.5"]),
    ("profile-huge-groups", ["profile", "shufflenet_v1", "-o", "groups=1e9"]),
    ("profile-text-w-m", ["profile", "regnet_x", "-o", "w_m=steep"]),
    # Outputs where nothing can be written.
    ("export-out-in-proc", ["export", "good.pt", "--out", "/proc/x"]),
    ("train-out-in-proc", ["train", "recipe.yaml", "--out", "/proc/x"]),
    ("train-deterministic-more-threads-than-cores", ["train", "recipe.yaml", "--deterministic", "--threads", "4096",
                                                     "--out", "runs/x"]),
    ("sweep-absurd-resolution", ["sweep", "recipe.yaml", "--width", "0.5", "--resolution", "100000"]),
    # Conflicting flags and checkpoint: refused, naming both values (it exported the checkpoint's model silently).
    ("export-width-against-checkpoint", ["export", "mobilenet_v2", "--width", "0.75", "--weights", "good.pt",
                                         "--out", "out"]),
    ("export-resolution-against-checkpoint", ["export", "mobilenet_v2", "--resolution", "64", "--weights",
                                              "good.pt", "--out", "out"]),
    # A failed check writes nothing: outputs are checked before the manifest is touched.
    ("check-junit-is-a-directory", ["check", "art", "--junit", "art"]),
    ("check-markdown-under-a-file", ["check", "art", "--markdown", "good.pt/summary.md"]),
    ("check-baseline-under-a-file", ["check", "art", "--baseline", "good.pt/b.json", "--update-baseline"]),
    ("report-out-holds-other-files", ["report", "art", "--out", "report-dir"]),
    # Issue 32: image folders, pretrained weights for fine-tuning, calibration folders.
    ("train-imagefolder-no-classes", ["train", "recipe.yaml", "--data", "imagefolder:flat", "--out", "runs/x"]),
    ("train-imagefolder-all-unreadable", ["train", "recipe.yaml", "--data", "imagefolder:unreadable",
                                          "--out", "runs/x"]),
    ("train-weights-do-not-fit", ["train", "recipe.yaml", "--weights", "good.pt", "--out", "runs/x"]),
    ("train-weights-missing", ["train", "recipe.yaml", "--weights", "nowhere.pt", "--out", "runs/x"]),
    ("train-weights-not-a-state-dict", ["train", "recipe.yaml", "--weights", "list.pt", "--out", "runs/x"]),
    # Issue 43: weights by name, refused before any download (the recipe's model is width 0.35)
    ("train-weights-name-other-width", ["train", "recipe.yaml", "--weights", "imagenet", "--out", "runs/x"]),
    ("export-weights-name-unpublished", ["export", "mobilenet_v1", "--weights", "imagenet", "--out", "out"]),
    ("export-weights-name-other-width", ["export", "mobilenet_v2", "--weights", "imagenet", "--width", "0.5",
                                         "--out", "out"]),
    ("weights-model-without-any", ["weights", "shufflenet_v1"]),
    ("weights-unknown-model", ["weights", "mobilenet_v9"]),
    ("train-crop-ratio-out-of-range", ["train", "crop-ratio.yaml", "--out", "runs/x"]),
    ("train-negative-freeze-epochs", ["train", "freeze.yaml", "--out", "runs/x"]),
    ("export-calibration-folder-without-images", ["export", "good.pt", "--int8", "--calib", "no-images",
                                                  "--out", "out"]),
    # Issue 32: the user's own model (MODULE:CALLABLE, a .pt2 program), each way it can be wrong.
    *[(f"export-user-{tag}", ["export", *argv, "--out", "out"]) for tag, argv in (
        ("module-not-found", ["no_such_pkg.models:build_net", "--input-shape", "1,3,32,32"]),
        ("module-import-raises", ["user_broken:build_net", "--input-shape", "1,3,32,32"]),
        ("callable-missing", ["user_models:build_resnet", "--input-shape", "1,3,32,32"]),
        ("callable-not-a-module", ["user_models:not_a_module", "--input-shape", "1,3,32,32"]),
        ("callable-raises", ["user_models:raises", "--input-shape", "1,3,32,32"]),
        ("no-input-shape", ["user_models:build_net"]),
        ("input-shape-malformed", ["user_models:build_net", "--input-shape", "1,3,x,32"]),
        ("input-shape-batch", ["user_models:build_net", "--input-shape", "8,3,32,32"]),
        ("input-shape-mismatch", ["user_models:build_net", "--input-shape", "1,1,32,32"]),
        ("weights-do-not-fit", ["user_models:build_net", "--input-shape", "1,3,32,32", "--weights", "good.pt"]),
        ("weights-missing", ["user_models:build_net", "--input-shape", "1,3,32,32", "--weights", "nowhere.pt"]),
        ("width", ["user_models:build_net", "--input-shape", "1,3,32,32", "--width", "0.5"]),
        ("not-a-program", ["junk.pt2"]),
        ("program-missing", ["nowhere.pt2"]),
        ("zoo-model-with-input-shape", ["mobilenet_v2", "--input-shape", "1,3,32,32"]),
    )],
    # Issue 41: the per-layer INT8 report.
    *[(f"int8-report-{tag}", ["int8", "report", *argv]) for tag, argv in (
        ("no-int8-file", ["art-fp32-only"]),
        ("unknown-layer", ["art", "--layer", "features.99.conv", "--images", "4"]),
        ("no-calibration-data", ["art-noise-calibrated"]),
        ("unknown-format", ["art", "--format", "coreml"]),
        ("format-not-exported", ["art-missing-file", "--format", "tflite"]),
        ("no-images", ["art", "--images", "0"]),
        ("edited-file", ["art-edited"]),
        ("missing-artifact", ["nowhere"]),
        ("data-folder-without-images", ["art", "--data", "no-images"]),
        ("plot-folder-missing", ["art", "--plot", "nowhere/layers.png"]),
        ("plot-not-png", ["art", "--plot", "layers.jpg"]),
        ("device-onnx", ["art", "--device", "local", "--format", "onnx"]),
        ("unknown-device", ["art", "--device", "pi-zero", "--images", "4"]),
    )],
]


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under root with its inode, size and mtime: a write in place or a rename both show."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        state[str(path.relative_to(root))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return state


def run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
             ) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgekit", *argv])
    with pytest.raises(SystemExit) as stopped:
        main()
    out, err = capsys.readouterr()
    return int(stopped.value.code or 0), out, err


@pytest.mark.parametrize(("argv"), [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    argv: list[str], inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    shutil.copytree(inputs, work, copy_function=os.link)  # hard links: cheap, and the snapshot sees any write
    monkeypatch.chdir(work)
    monkeypatch.setenv("EDGEKIT_DEVICES", str(work / "devices"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("EDGEKIT_HOME", str(work / "home"))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    before = _snapshot(work)

    code, out, err = run_main(argv, monkeypatch, capsys)

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    assert ": " in lines[0][len("error: "):] or ". See `" in lines[0], f"no fix named: {lines[0]}"
    assert _snapshot(work) == before, "the refused command changed the working directory"
    assert not (work / "pwned").exists()


def test_malicious_pickle_never_runs(inputs: Path, tmp_path: Path) -> None:
    """Loading goes through torch.load(weights_only=True): the payload's os.system is never called."""
    from edgekit.checkpoint import load_checkpoint
    from edgekit.core.errors import EdgekitError

    marker = tmp_path / "pwned"
    torch.save(Evil(marker), tmp_path / "evil.pt")
    with pytest.raises(EdgekitError, match="not a loadable weights file"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the trap is real: unrestricted unpickling runs it
    assert marker.exists()


def test_unexpected_error_is_one_line_exit_3_and_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import edgekit.models.complexity

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(edgekit.models.complexity, "profile_spec", broken)
    code, _, err = run_main(["profile", "mobilenet_v2"], monkeypatch, capsys)
    assert code == 3
    assert [line for line in err.splitlines() if line.strip()] == [
        "error: unexpected ZeroDivisionError: division by zero. This is a bug in edgekit: rerun with "
        "`edgekit --debug ...` for the traceback and report it."
    ]
    monkeypatch.setattr(sys, "argv", ["edgekit", "--debug", "profile", "mobilenet_v2"])
    with pytest.raises(ZeroDivisionError):
        main()
