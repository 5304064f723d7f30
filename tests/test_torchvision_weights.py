"""torchvision's ImageNet MobileNetV2 checkpoint loads strictly into our module and classifies real photos."""

import pytest
import torch
from fixtures.imagenet_samples import imagenet_preprocess, torchvision_mobilenet_v2

from edgekit.models import create

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def mobilenet_v2_imagenet():
    model = create("mobilenet_v2")
    state = torch.load(torchvision_mobilenet_v2(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize(("image", "classes"), [("chelsea", CATS), ("coffee", COFFEE)])
def test_classifies_real_photos(mobilenet_v2_imagenet, image, classes):
    from skimage import data

    x = torch.from_numpy(imagenet_preprocess(getattr(data, image)()))
    with torch.no_grad():
        probs = mobilenet_v2_imagenet(x).softmax(-1)[0]
    top1 = int(probs.argmax())
    assert top1 in classes, f"{image}: top-1 class {top1} ({probs.max():.2f})"


def test_checkpoint_has_exactly_our_parameters():
    state = torch.load(torchvision_mobilenet_v2(), map_location="cpu", weights_only=True)
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 3_504_872
