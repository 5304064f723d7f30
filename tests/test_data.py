"""Datasets from real files, the shared preprocessing, and augmentation."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgekit.core.errors import EdgekitError
from edgekit.data import (
    FASHION_MNIST_ENV,
    DataSource,
    Preprocess,
    augment,
    fit_images,
    load_split,
    preprocess_for,
    seeded_split,
)


def test_fashion_mnist_is_the_real_dataset():
    train = load_split(DataSource.parse("fashion-mnist"), "train", 28, 1)
    val = load_split(DataSource.parse("fashion-mnist"), "val", 32, 3)
    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert val.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(train.labels).tolist() == [6_000] * 10  # Fashion-MNIST is balanced
    assert train.classes[0] == "t-shirt/top" and train.classes[9] == "ankle boot"
    assert torch.equal(val.images[:, 0], val.images[:, 2])  # grayscale replicated into 3 channels
    # the training split's pixel statistics are the ones the preprocessing normalizes with
    pre = preprocess_for(DataSource.parse("fashion-mnist"), 28, 1)
    x = pre(train.images[:20_000])
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.02


def test_missing_fashion_mnist_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(EdgekitError, match="apt-get install dataset-fashion-mnist"):
        load_split(DataSource.parse("fashion-mnist"), "train", 32, 1)


def test_fashion_mnist_from_a_copied_folder_and_a_corrupt_file(tmp_path):
    src = Path("/usr/share/datasets/fashion-mnist")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    val = load_split(DataSource.parse(f"fashion-mnist:{tmp_path}"), "val", 32, 1)
    assert len(val) == 10_000
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0c\x01garbage"))
    with pytest.raises(EdgekitError, match="corrupt"):
        load_split(DataSource.parse(f"fashion-mnist:{tmp_path}"), "val", 32, 1)


def test_digits_split_is_seeded_and_disjoint():
    train = load_split(DataSource.parse("digits"), "train", 32, 1)
    val = load_split(DataSource.parse("digits"), "val", 32, 1)
    assert len(train) + len(val) == 1_797 and len(val) == 359
    again = load_split(DataSource.parse("digits"), "val", 32, 1)
    assert torch.equal(val.images, again.images)
    a, b = seeded_split(100, 0.2, seed=0)
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) + len(b) == 100


def _png(path: Path, color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 14), color).save(path)


def test_imagefolder_reads_classes_and_skips_a_corrupt_image(tmp_path):
    for split in ("train", "val"):
        for i in range(3):
            _png(tmp_path / split / "cat" / f"{i}.png", (200, 10, 10))
            _png(tmp_path / split / "dog" / f"{i}.jpg", (10, 10, 200))
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    train = load_split(DataSource.parse(f"imagefolder:{tmp_path}"), "train", 32, 3)
    assert train.classes == ["cat", "dog"] and len(train) == 6 and train.skipped == 1
    assert train.images.shape == (6, 3, 32, 32)
    cat = train.images[train.labels == 0].float().mean((0, 2, 3))
    assert cat[0] > 150 and cat[2] < 50  # red stays in the red channel: RGB order
    gray = load_split(DataSource.parse(f"imagefolder:{tmp_path}"), "val", 32, 1)
    assert gray.images.shape == (6, 1, 32, 32)


@pytest.mark.parametrize(("layout", "message"), [
    ("missing", "does not exist"), ("no-train", "no train/ folder"), ("empty", "holds no images"),
    ("all-corrupt", "could be read"),
])
def test_imagefolder_bad_layouts(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "no-train":
        (root / "val").mkdir(parents=True)
    elif layout == "empty":
        (root / "train" / "cat").mkdir(parents=True)
    elif layout == "all-corrupt":
        (root / "train" / "cat").mkdir(parents=True)
        (root / "train" / "cat" / "a.png").write_bytes(b"nope")
    with pytest.raises(EdgekitError, match=message):
        load_split(DataSource.parse(f"imagefolder:{root}"), "train", 32, 3)


def test_unknown_source_is_refused():
    with pytest.raises(EdgekitError, match="unknown dataset 'cifar10'"):
        DataSource.parse("cifar10")
    with pytest.raises(EdgekitError, match="imagefolder needs a path"):
        DataSource.parse("imagefolder:")


def test_preprocess_record_round_trips_and_normalizes():
    pre = Preprocess(resolution=32, channels=3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    assert Preprocess.from_dict(pre.to_dict()) == pre
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    x = pre(images)
    assert x.dtype == np.float32 and x.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(x[0, :, 0, 0], [(1 - 0.5) / 0.2, (1 - 0.4) / 0.2, (1 - 0.3) / 0.2], rtol=1e-6)


def test_preprocess_in_numpy_is_bit_for_bit_its_torch_form():
    """Exported files are judged with the numpy form (no torch needed), training and torch evaluation with the
    tensor form: both must give the same float32 inputs, or FP32 and INT8 accuracies would not compare."""
    pre = Preprocess(resolution=32, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    np.testing.assert_array_equal(pre(images), pre.tensor(torch.from_numpy(images)).numpy())


def test_resize_is_antialiased_bilinear_and_keeps_uint8():
    images = torch.zeros((1, 1, 28, 28), dtype=torch.uint8)
    images[..., ::2] = 255  # a stripe pattern finer than the output grid
    small = fit_images(images, 14, 1)
    assert small.dtype == torch.uint8 and small.shape == (1, 1, 14, 14)
    assert 100 < float(small.float().mean()) < 155  # averaged, not aliased to all-black or all-white


def test_augment_crops_and_flips_reproducibly():
    images = torch.arange(2 * 16, dtype=torch.uint8).view(2, 1, 4, 4).repeat(8, 1, 1, 1)
    a = augment(images, torch.Generator().manual_seed(3), padding=1, hflip=True)
    b = augment(images, torch.Generator().manual_seed(3), padding=1, hflip=True)
    assert torch.equal(a, b) and a.shape == images.shape
    assert not torch.equal(a, images)
    unchanged = augment(images, torch.Generator().manual_seed(3), padding=0, hflip=False)
    assert torch.equal(unchanged, images)
    # every augmented image is a shifted (and maybe mirrored) window of the zero-padded original
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    for img, src in zip(a, padded, strict=True):
        windows = [src[:, y:y + 4, x:x + 4] for y in range(3) for x in range(3)]
        windows += [w.flip(2) for w in windows]
        assert any(torch.equal(img, w) for w in windows)
