"""Image folders at deployment resolution: torchvision's transforms, the crop ratio recorded, streaming from disk,
unreadable and empty folders, and calibration on photos without labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.image_folders import photo_folder
from fixtures.imagenet_samples import imagenet_preprocess, sample_photos
from PIL import Image

import edgekit.data
from edgekit.core.errors import EdgekitError
from edgekit.data import DataSource, Preprocess, load_split, preprocess_for
from edgekit.exporting.calibration import calibration_data, calibration_set
from edgekit.folder_images import FolderImages
from edgekit.imagefolder import Transform
from edgekit.models import resolve_spec


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample photos as PNG files (lossless: what the reference transform sees, byte for byte)."""
    root = tmp_path_factory.mktemp("photos")
    for name, photo in sample_photos().items():
        Image.fromarray(np.ascontiguousarray(photo)).save(root / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/{train,val}/CLASS/: two classes of real photos (each photo's random crops), non-square."""
    root = tmp_path_factory.mktemp("labelled")
    photo_folder(root / "raw", crops_per_photo=4, seed=1)
    for split, picks in (("train", slice(0, 3)), ("val", slice(3, 4))):
        for cls in ("chelsea", "coffee"):
            target = root / split / cls
            target.mkdir(parents=True)
            for crop in sorted((root / "raw" / "crops" / cls).glob("*.png"))[picks]:
                (target / crop.name).write_bytes(crop.read_bytes())
    return root


def test_eval_transform_is_torchvisions_resize_and_center_crop(photos: Path) -> None:
    pre = preprocess_for(DataSource.parse(f"imagefolder:{photos}"), 224, 3)
    assert pre.resize == "shorter-side" and pre.crop_ratio == 0.875
    for name, photo in sample_photos().items():
        ours = pre(Transform.of(pre)(photos / f"{name}.png")[None])
        reference = imagenet_preprocess(photo, 224)
        # Pillow resizes in uint8, the reference in float: they differ by at most a grey level or so
        assert ours.shape == reference.shape == (1, 3, 224, 224)
        diff = np.abs(ours - reference)
        assert diff.max() < 1.5 / 255 / 0.224 and diff.mean() < 0.5 / 255 / 0.224, name


def test_crop_ratio_round_trips_and_old_records_keep_squashing(photos: Path) -> None:
    source = DataSource("imagefolder", photos, options={"crop_ratio": 0.75})
    pre = preprocess_for(source, 96, 3)
    again = Preprocess.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre and again.crop_ratio == 0.75 and again.resize == "shorter-side"
    old = {k: v for k, v in pre.to_dict().items() if k not in ("crop_ratio", "resize")}
    legacy = Preprocess.from_dict(old)
    assert legacy.crop_ratio == 1.0 and legacy.resize == "bilinear-antialias"
    # the record decides how the image is brought to size: a tighter crop magnifies, squashing keeps everything
    image = photos / "chelsea.png"  # 451 x 300
    tight, loose, squashed = (Transform.of(p)(image) for p in (pre, preprocess_for(DataSource(
        "imagefolder", photos, options={"crop_ratio": 1.0}), 96, 3), legacy))
    assert tight.shape == loose.shape == squashed.shape == (3, 96, 96)
    assert not np.array_equal(tight, loose) and not np.array_equal(loose, squashed)
    with pytest.raises(ValueError, match="crop_ratio"):
        Preprocess.from_dict({**pre.to_dict(), "crop_ratio": 1.5})


def test_unreadable_images_are_counted_and_all_unreadable_is_one_error(labelled: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    for split in ("train", "val"):
        for cls in ("chelsea", "coffee"):
            (root / split / cls).mkdir(parents=True)
            for f in (labelled / split / cls).glob("*.png"):
                (root / split / cls / f.name).write_bytes(f.read_bytes())
    (root / "train" / "coffee" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (root / "train" / "coffee" / "empty.png").write_bytes(b"")
    train = load_split(DataSource.parse(f"imagefolder:{root}"), "train", 64, 3)
    assert len(train) == 6 and train.skipped == 2 and train.classes == ["chelsea", "coffee"]
    bad = tmp_path / "bad" / "train" / "x"
    bad.mkdir(parents=True)
    for i in range(3):
        (bad / f"{i}.jpg").write_bytes(b"garbage")
    with pytest.raises(EdgekitError, match="none of the 3 images"):
        load_split(DataSource.parse(f"imagefolder:{tmp_path / 'bad'}"), "train", 64, 3)


def test_a_folder_without_class_folders_is_one_clear_error(photos: Path, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    for f in list(photos.glob("*.png"))[:2]:
        (tmp_path / "train" / f.name).write_bytes(f.read_bytes())
    with pytest.raises(EdgekitError, match="has no class folders: put the images in one sub-folder per class"):
        load_split(DataSource.parse(f"imagefolder:{tmp_path}"), "train", 64, 3)


def test_small_folders_load_into_memory_large_ones_stream_with_the_same_images(labelled: Path,
                                                                                monkeypatch) -> None:
    source = DataSource.parse(f"imagefolder:{labelled}")
    memory = load_split(source, "val", 64, 3)
    assert not memory.streamed and memory.images.dtype == torch.uint8
    monkeypatch.setattr(edgekit.data, "MEMORY_BUDGET", 64 * 64 * 3 * (len(memory) - 1))  # one image too many
    streamed = load_split(source, "val", 64, 3)
    assert streamed.streamed and isinstance(streamed.images, FolderImages)
    assert streamed.images.shape == tuple(memory.images.shape)
    assert torch.equal(streamed.images[: len(memory)], memory.images)  # indexing decodes, as parity inputs do
    batches = list(streamed.batches(3))  # DataLoader workers
    assert torch.equal(torch.cat([b for b, _ in batches]), memory.images)
    assert torch.equal(torch.cat([y for _, y in batches]), memory.labels)
    sub = streamed.subset(torch.tensor([1]))
    assert sub.streamed and torch.equal(sub.images[0], memory.images[1])
    forced = load_split(DataSource("imagefolder", labelled, options={"loader": "stream"}), "val", 64, 3)
    assert forced.streamed


def test_training_transform_is_a_seeded_random_resized_crop(photos: Path) -> None:
    files = sorted(photos.glob("*.png"))[:4]
    images = FolderImages(files, [0] * len(files), Transform(80, train=True), seed=3, workers=0)
    first = images[torch.arange(4)]
    assert first.shape == (4, 3, 80, 80) and torch.equal(first, images[torch.arange(4)])  # (seed, index) fixes it
    images.seed = 4
    assert not torch.equal(first, images[torch.arange(4)])
    centre = torch.from_numpy(Transform(80)(files[0]))
    assert not torch.equal(first[0], centre)  # not the evaluation crop


def test_calibration_takes_a_plain_folder_or_other_classes(labelled: Path, tmp_path: Path) -> None:
    spec = resolve_spec("mobilenet_v2", width=0.35, resolution=64, num_classes=1000)
    plain = photo_folder(tmp_path / "mine", crops_per_photo=1)
    data, pre = calibration_data(str(plain), None, spec, None)
    files = [p for p in plain.rglob("*") if p.is_file()]
    assert data is not None and pre is not None and len(data) == len(files) and data.classes == []
    assert pre.resize == "shorter-side" and pre.resolution == 64
    calib = calibration_set(spec, 8, data, pre)
    assert calib.images.shape == (8, 3, 64, 64) and calib.source["data"] == str(plain)
    # an image folder with 2 classes calibrates a 1000-class model: only evaluation needs matching classes
    data, _ = calibration_data(f"imagefolder:{labelled}", None, spec, None)
    assert data is not None and data.classes == ["chelsea", "coffee"] and len(data) == 6
    with pytest.raises(EdgekitError, match="no such folder"):
        calibration_data(str(tmp_path / "nowhere" / "photos"), None, spec, None)


@pytest.mark.slow
def test_imagenet_mobilenet_v2_int8_calibrates_on_a_plain_folder_of_photos(tmp_path: Path, edgekit_cli) -> None:
    from fixtures.imagenet_samples import torchvision_mobilenet_v2

    photos = photo_folder(tmp_path / "my photos", crops_per_photo=2)  # no labels, nested, JPEG and PNG
    out = tmp_path / "art"
    done = edgekit_cli("export", "mobilenet_v2", "--weights", str(torchvision_mobilenet_v2()), "--int8",
                       "--calib", str(photos), "--calib-size", "24", "--format", "tflite", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    calibration = manifest["int8"]["calibration"]
    assert calibration["data"] == str(photos) and calibration["images"] == 24
    assert manifest["int8"]["graph"]["tflite"]["full_integer"] is True
    pre = manifest["input"]["preprocess"]
    assert pre["resize"] == "shorter-side" and pre["crop_ratio"] == 0.875 and pre["resolution"] == 224
