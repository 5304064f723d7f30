"""ShuffleNetV1 (Zhang et al., 2018): pointwise group convs, channel shuffle, scale s and groups g."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from edgekit.models._layers import ConvBNAct, channel_shuffle, make_divisible
from edgekit.models._registry import register

# Output channels of stages 2-4 at 1x for each group count g: the paper's Table 1.
STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
STAGE_REPEATS = (4, 8, 4)


class ShuffleUnit(nn.Module):
    """1x1 GConv -> shuffle -> 3x3 DWConv -> 1x1 GConv; add (stride 1) or concat with 3x3 avg-pool (stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, group_first: bool) -> None:
        super().__init__()
        self.stride = stride
        self.groups = groups if group_first else 1
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        mid = out_channels // 4
        self.branch = nn.Sequential(OrderedDict(
            gconv1=ConvBNAct(in_channels, mid, 1, groups=self.groups),
            dwconv=ConvBNAct(mid, mid, 3, stride, groups=mid, activation=None),
            gconv2=ConvBNAct(mid, branch_out, 1, groups=groups, activation=None),
        ))
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch.gconv1(x)
        if self.groups > 1:
            out = channel_shuffle(out, self.groups)
        out = self.branch.gconv2(self.branch.dwconv(out))
        if self.stride == 2:
            # relu(cat(avgpool(x), out)) written as cat(avgpool(x), relu(out)): the same values, since x comes out
            # of a ReLU, but the ReLU now fuses into the convolution and an INT8 concat needs no requantization.
            return torch.cat((self.shortcut(x), self.relu(out)), 1)
        return self.relu(x + out)


class ShuffleNetV1(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3, groups: int = 3) -> None:
        super().__init__()
        if groups not in STAGE_CHANNELS:
            raise ValueError(f"groups must be one of {', '.join(map(str, STAGE_CHANNELS))}, not {groups!r}")
        # Stage widths stay multiples of 4g so the bottleneck (out/4) splits evenly into g groups.
        stages = [make_divisible(c * width, 4 * groups) for c in STAGE_CHANNELS[groups]]
        # The stem feeds stage 2's concat shortcut, so it must split into g groups too.
        channels = make_divisible(24 * width, math.lcm(4, groups))
        self.conv1 = ConvBNAct(in_channels, channels, 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for index, (out, repeats) in enumerate(zip(stages, STAGE_REPEATS, strict=True)):
            units = []
            for i in range(repeats):
                # The paper: no group conv on stage 2's first pointwise layer, whose input is narrow.
                units.append(ShuffleUnit(channels, out, 2 if i == 0 else 1, groups, group_first=index > 0 or i > 0))
                channels = out
            setattr(self, f"stage{index + 2}", nn.Sequential(*units))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        # global pooling, not x.mean((2, 3)) as torchvision writes it: the same values, and TFLite's converter
        # then keeps the mean in NHWC instead of adding a layout TRANSPOSE before it
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def shufflenet_v1(width: float, num_classes: int, in_channels: int, *, groups: int = 3) -> ShuffleNetV1:
    return ShuffleNetV1(width, num_classes, in_channels, groups)


register("shufflenet_v1", "ShuffleNetV1", 224, shufflenet_v1, "group convs + channel shuffle (groups 1/2/3/4/8)")
