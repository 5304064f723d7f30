"""MobileNetV2 (Sandler et al., 2018): inverted residuals with linear bottlenecks. torchvision's layout."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgekit.models._layers import ConvBNAct, init_weights, make_divisible
from edgekit.models._registry import register

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(
        self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2,
        expansion: int = 6,
    ) -> None:
        super().__init__()
        channels = make_divisible(32 * width)
        self.last_channel = make_divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, 2, activation=nn.ReLU6)]
        for t, c, n, s in SETTING:
            out = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t if t == 1 else expansion))
                channels = out
        layers.append(ConvBNAct(channels, self.last_channel, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(
    width: float, num_classes: int, in_channels: int, *, dropout: float = 0.2, expansion: int = 6
) -> MobileNetV2:
    if isinstance(expansion, bool) or not isinstance(expansion, int) or expansion < 1:
        raise ValueError(f"expansion must be a positive integer, not {expansion!r}")
    return MobileNetV2(width, num_classes, in_channels, dropout, expansion)


register("mobilenet_v2", "MobileNetV2", 224, mobilenet_v2, "inverted residuals, linear bottlenecks, ReLU6")
