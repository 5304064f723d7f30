"""Fine-tuning from pretrained weights: torchvision's ImageNet MobileNetV2 on a real image folder at 224 px, streamed
from disk, beats the same short run from random weights; the classifier is re-initialised for the new classes and
the backbone can be frozen for the first epochs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FINETUNE_RECIPES, REPO, write_recipe
from fixtures.image_folders import fashion_mnist_folder
from fixtures.imagenet_samples import torchvision_mobilenet_v2
from fixtures.publisher import serving

from edgekit.checkpoint import load_checkpoint
from edgekit.models import build, resolve_spec
from edgekit.models._registry import get_entry
from edgekit.recipe import load_recipe, parse_recipe
from edgekit.training.loop import train_recipe
from edgekit.weights import REGISTRY

CLASSES = ("pullover", "dress", "sneaker", "bag")


@pytest.fixture(scope="module")
def clothes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four Fashion-MNIST classes as 224 px PNG files: 24 training and 16 validation images each."""
    return fashion_mnist_folder(tmp_path_factory.mktemp("clothes"), 24, 16, size=224, classes=CLASSES, seed=0)


def test_every_family_with_published_weights_has_a_224px_fine_tune_recipe() -> None:
    families = {get_entry(m).family for m, _ in REGISTRY}
    recipes = [load_recipe(p.stem) for p in FINETUNE_RECIPES]
    assert {get_entry(r.model.name).family for r in recipes} == families
    for recipe in recipes:
        assert (recipe.model.name, "imagenet") in REGISTRY and recipe.model.weights == "imagenet"
        assert recipe.model.resolution == 224 and "path/to/your" in recipe.data.source
        assert recipe.train.lr < load_recipe("mobilenet_v2_fashion").train.lr and recipe.train.freeze_epochs == 1


@pytest.mark.slow
def test_imagenet_weights_fine_tune_beats_random_weights_on_streamed_224px_photos(
        clothes: Path, tmp_path: Path, edgekit_cli) -> None:
    # the shipped recipe as it is (epoch 1 trains the classifier alone, epoch 2 everything), streamed
    text = (REPO / "recipes" / "mobilenet_v2_finetune.yaml").read_text()
    text = text.replace("loader: auto", "loader: stream\n  workers: 1")
    pretrained_recipe = write_recipe(tmp_path / "pretrained.yaml", text)
    random_recipe = write_recipe(tmp_path / "random.yaml", re.sub(r"\n  weights: .*", "", text))
    common = ["--data", f"imagefolder:{clothes}", "--epochs", "2", "--batch-size", "16", "--json"]
    # `weights: imagenet`, fetched from a loopback stand-in for torchvision's site serving torchvision's own file
    published = tmp_path / "published"
    published.mkdir()
    shutil.copy(torchvision_mobilenet_v2(), published / "mobilenet_v2-b0353104.pth")
    with serving(published) as url:
        done = edgekit_cli("train", str(pretrained_recipe), "--out", str(tmp_path / "pretrained"), *common,
                           env={"EDGEKIT_WEIGHTS_MIRROR": url, "EDGEKIT_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr[-3000:]
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert "predicts 1000 classes, the data has 4: classifier (classifier.1) re-initialised" in said
    assert "train streamed from disk by 1 worker(s) (random-resized-crop + flip)" in said
    tuned = json.loads(done.stdout)
    assert tuned["data_loader"] == {"train": "stream", "val": "stream"}
    assert tuned["weights"]["classifier"] == "re-initialised"
    assert load_checkpoint(tmp_path / "pretrained" / "best.pt")["pretrained"]["classifier"] == "re-initialised"
    done = edgekit_cli("train", str(random_recipe), "--out", str(tmp_path / "random"), *common)
    assert done.returncode == 0, done.stderr[-3000:]
    scratch = json.loads(done.stdout)
    assert scratch["weights"] is None
    print(f"val top-1 after 2 epochs: ImageNet weights {tuned['best_top1']:.2%}, random {scratch['best_top1']:.2%}")
    # chance is 25%; ImageNet features separate these classes after 12 steps, random ones do not yet
    assert tuned["best_top1"] >= scratch["best_top1"] + 0.2, (tuned["best_top1"], scratch["best_top1"])


def test_frozen_epochs_train_the_reinitialised_classifier_only(tmp_path: Path) -> None:
    spec = resolve_spec("mobilenet_v2", width=0.35, resolution=32, num_classes=1000, in_channels=1)
    torch.manual_seed(1)
    source = build(spec).state_dict()
    torch.save(source, tmp_path / "w.pt")
    recipe = parse_recipe(
        "name: frozen\nmodel: {name: mobilenet_v2, width: 0.35, resolution: 32, in_channels: 1, "
        f"weights: {tmp_path / 'w.pt'}}}\ndata: {{source: digits}}\n"
        "train: {epochs: 1, batch_size: 64, limit_batches: 4, freeze_epochs: 1, lr: 0.05}\n")
    result = train_recipe(recipe, tmp_path / "run", threads=2)
    assert result.weights == {"path": str(tmp_path / "w.pt"), "classifier": "re-initialised"}
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["state"]["model"]
    changed = sorted({k.rsplit(".", 1)[0] for k, v in trained.items()
                      if k in source and v.shape == source[k].shape and not torch.equal(v, source[k])})
    assert changed == []  # every backbone weight and BatchNorm statistic is as loaded
    torch.manual_seed(recipe.train.seed)  # the classifier as the run initialised it, for digits' 10 classes
    initial = build(resolve_spec("mobilenet_v2", width=0.35, resolution=32, num_classes=10, in_channels=1))
    head = initial.state_dict()["classifier.1.weight"]
    assert trained["classifier.1.weight"].shape == head.shape and not torch.equal(trained["classifier.1.weight"], head)
