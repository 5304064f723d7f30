"""Pretrained weights by name (`--weights imagenet`): fetched from a loopback HTTP server standing in for the
publisher (EDGEKIT_WEIGHTS_MIRROR), checked against the registry's sha256, cached in EDGEKIT_HOME, resumed after a
download that stopped midway, refused when corrupted, and found offline in a pre-filled cache.

MobileNetV2 goes through the real registry entry with torchvision's own file (the one the test environment
installs), so its hash is the published one. MobileNetV3-Small and ShuffleNetV2 x0.5 are served as state dicts of
edgekit's own models (torchvision's module names) under registry entries this test points at them, as the
published files cannot be downloaded here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fixtures.imagenet_samples import torchvision_mobilenet_v2
from fixtures.publisher import Publisher, serving

from edgekit import weights as published_weights
from edgekit.core.errors import EdgekitError
from edgekit.models import create


@pytest.fixture
def publisher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A loopback server for a folder of weights files; EDGEKIT_HOME and the mirror point at this test's own."""
    root = tmp_path / "published"
    root.mkdir()
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEKIT_OFFLINE", raising=False)
    with serving(root) as url:
        monkeypatch.setenv("EDGEKIT_WEIGHTS_MIRROR", url)
        yield root


def _serve_own(root: Path, model: str, monkeypatch: pytest.MonkeyPatch) -> tuple[published_weights.Published, dict]:
    """A state dict of edgekit's `model` served under a registry entry whose sha256 is that file's."""
    torch.manual_seed(0)
    state = create(model).state_dict()
    path = root / f"{model}-test.pth"
    torch.save(state, path)
    entry = published_weights.Published(model, "imagenet", path.name, 50.0, 224, 256, "bilinear",
                                        sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setitem(published_weights.REGISTRY, (model, "imagenet"), entry)
    return entry, state


def test_three_families_by_name_are_downloaded_checked_cached_and_loaded(publisher: Path, edgekit_cli,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # MobileNetV2: the real registry entry and torchvision's real file
    (publisher / "mobilenet_v2-b0353104.pth").write_bytes(torchvision_mobilenet_v2().read_bytes())
    path = published_weights.weights_file("imagenet", "mobilenet_v2", 1.0)
    assert path.parent == Path(os.environ["EDGEKIT_HOME"]) / "weights"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == published_weights.published("mobilenet_v2").sha256
    model = create("mobilenet_v2")
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)

    for name in ("mobilenet_v3_small", "shufflenet_v2_x0_5"):
        _, state = _serve_own(publisher, name, monkeypatch)
        loaded = torch.load(published_weights.weights_file("imagenet", name, 1.0), weights_only=True)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)

    # cached: asking again sends nothing to the server
    before = len(Publisher.requests)
    published_weights.weights_file("imagenet", "mobilenet_v2", 1.0)
    assert len(Publisher.requests) == before

    # and the CLI exports by name, recording the checked file it loaded
    done = edgekit_cli("export", "mobilenet_v2", "--weights", "imagenet", "--format", "onnx", "--out",
                       str(publisher.parent / "art"), "--json", env={k: os.environ[k] for k in (
                           "EDGEKIT_HOME", "EDGEKIT_WEIGHTS_MIRROR")})
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((publisher.parent / "art" / "manifest.json").read_text())
    assert manifest["source"]["sha256"] == published_weights.published("mobilenet_v2").sha256
    # the preprocessing the weights were trained with is recorded, so the file evaluates without flags
    pre = manifest["input"]["preprocess"]
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["resize"] == "shorter-side" and pre["crop_ratio"] == 224 / 256


def test_a_download_cut_midway_fails_with_one_line_and_the_next_run_resumes(publisher: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    entry, _ = _serve_own(publisher, "mobilenet_v3_small", monkeypatch)
    Publisher.cut_next = 1
    with pytest.raises(EdgekitError, match="run the command again to resume"):
        published_weights.fetch(entry, progress=lambda done, total: None)
    cache = published_weights.cache_dir()
    assert not (cache / entry.file).exists() and (cache / f"{entry.file}.partial").is_file()
    path = published_weights.fetch(entry, progress=lambda done, total: None)
    assert Publisher.requests[-1][1] is not None  # the second request asked for the rest only
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert not (cache / f"{entry.file}.partial").exists()


def test_a_corrupted_download_is_refused_and_removed(publisher: Path, edgekit_cli) -> None:
    good = torchvision_mobilenet_v2().read_bytes()
    (publisher / "mobilenet_v2-b0353104.pth").write_bytes(good[:-100] + bytes(100))
    out = publisher.parent / "art"
    done = edgekit_cli("export", "mobilenet_v2", "--weights", "imagenet", "--format", "onnx", "--out", str(out),
                       env={k: os.environ[k] for k in ("EDGEKIT_HOME", "EDGEKIT_WEIGHTS_MIRROR")})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "is not the published file" in done.stderr, done.stderr
    assert not out.exists()
    assert [p.name for p in published_weights.cache_dir().iterdir() if not p.name.startswith(".")] == []


def test_offline_uses_a_prefilled_cache_and_names_the_file_when_it_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EDGEKIT_OFFLINE", "1")
    monkeypatch.setenv("EDGEKIT_WEIGHTS_MIRROR", "http://127.0.0.1:9/")  # nothing listens: any request would fail
    with pytest.raises(EdgekitError, match="mobilenet_v2-b0353104.pth"):
        published_weights.weights_file("imagenet", "mobilenet_v2", 1.0)
    cache = published_weights.cache_dir()
    (cache / "mobilenet_v2-b0353104.pth").write_bytes(torchvision_mobilenet_v2().read_bytes())
    assert published_weights.weights_file("imagenet", "mobilenet_v2", 1.0) == cache / "mobilenet_v2-b0353104.pth"


@pytest.mark.parametrize("argv, message", [
    (["export", "mobilenet_v1", "--weights", "imagenet"], "mobilenet_v1 has no published imagenet weights"),
    (["export", "mobilenet_v2", "--weights", "imagenet", "--width", "0.5"], "for width 1.0, not 0.5"),
    (["weights", "regnet_x_200mf"], "regnet_x_200mf has no published imagenet weights"),
    (["weights", "mobilenet_v9"], "unknown model 'mobilenet_v9'"),
])
def test_weights_names_without_published_files_are_refused(argv, message, tmp_path: Path, edgekit_cli) -> None:
    done = edgekit_cli(*argv, "--out", str(tmp_path / "out")) if argv[0] == "export" else edgekit_cli(*argv)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "out").exists()


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path: Path, edgekit_cli) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("a file where the edgekit home should be")
    done = edgekit_cli("export", "mobilenet_v2", "--weights", "imagenet", "--format", "onnx", "--out",
                       str(tmp_path / "out"), env={"EDGEKIT_HOME": str(blocker)})
    assert done.returncode == 2 and "cannot write the weights cache" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_the_registry_lists_every_entry_and_builds_each_model() -> None:
    rows = published_weights.listed()
    assert len(rows) == len(published_weights.REGISTRY) and all(r["top1"] > 50 for r in rows)
    whole = [e for e in published_weights.REGISTRY.values() if len(e.sha256) == 64]
    assert len(whole) == 2  # a whole digest must be the file named after its leading digits
    for entry in whole:
        assert entry.sha256.startswith(entry.file.rsplit("-", 1)[1].removesuffix(".pth"))
    for model in {m for m, _ in published_weights.REGISTRY}:
        create(model)  # every entry names a zoo model
