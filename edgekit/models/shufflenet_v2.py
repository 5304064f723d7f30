"""ShuffleNetV2 (Ma et al., 2018): channel split, shuffle, concat. torchvision's layout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgekit.models._layers import channel_shuffle, make_divisible
from edgekit.models._registry import register

STAGE_REPEATS = (4, 8, 4)
# Output channels of stages 2-4 and conv5 for each published width: the paper's Table 5.
STAGE_CHANNELS = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
STEM_CHANNELS = 24


def stage_channels(width: float) -> tuple[int, ...]:
    """The paper's table for its four widths; other widths scale the 1.0x row (multiples of 8)."""
    for published, channels in STAGE_CHANNELS.items():
        if abs(width - published) < 1e-9:
            return channels
    stages = tuple(make_divisible(c * width, 8) for c in STAGE_CHANNELS[1.0][:3])
    return stages + (2048 if width > 1.5 else 1024,)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False, groups=channels)


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch = out_channels // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(in_channels, stride), nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_channels if stride > 1 else branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
            _depthwise(branch, stride), nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        *stages, last = stage_channels(width)
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, STEM_CHANNELS, 3, 2, 1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = STEM_CHANNELS
        for index, (out, repeats) in enumerate(zip(stages, STAGE_REPEATS, strict=True)):
            units = [InvertedResidual(channels, out, 2)] + [InvertedResidual(out, out, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{index + 2}", nn.Sequential(*units))
            channels = out
        self.conv5 = nn.Sequential(
            nn.Conv2d(channels, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        # global pooling, not x.mean((2, 3)) as torchvision writes it: the same values, and TFLite's converter
        # then keeps the mean in NHWC instead of adding a layout TRANSPOSE before it
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def shufflenet_v2(width: float, num_classes: int, in_channels: int) -> ShuffleNetV2:
    return ShuffleNetV2(width, num_classes, in_channels)


for _w, _suffix in ((0.5, "x0_5"), (1.0, "x1_0"), (1.5, "x1_5"), (2.0, "x2_0")):
    register(
        f"shufflenet_v2_{_suffix}", "ShuffleNetV2", 224, shufflenet_v2,
        f"channel split + shuffle, {_w}x", base_width=_w,
    )
