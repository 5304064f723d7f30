"""MobileNetV1 (Howard et al., 2017): a stem conv then 13 depthwise-separable blocks, alpha and rho."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from edgekit.models._layers import ConvBNAct, init_weights, make_divisible
from edgekit.models._registry import register

# (output channels, stride) of each depthwise-separable block: the paper's Table 1.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: type[nn.Module]) -> None:
        super().__init__(OrderedDict(
            dw=ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels, activation=activation),
            pw=ConvBNAct(in_channels, out_channels, 1, activation=activation),
        ))


class MobileNetV1(nn.Module):
    def __init__(
        self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
        activation: str = "relu", dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
        act = ACTIVATIONS[activation]
        channels = make_divisible(32 * width)
        layers: list[nn.Module] = [ConvBNAct(in_channels, channels, 3, 2, activation=act)]
        for out, stride in BLOCKS:
            out = make_divisible(out * width)
            layers.append(DepthwiseSeparable(channels, out, stride, act))
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v1(
    width: float, num_classes: int, in_channels: int, *, activation: str = "relu", dropout: float = 0.0
) -> MobileNetV1:
    return MobileNetV1(width, num_classes, in_channels, activation, dropout)


register("mobilenet_v1", "MobileNetV1", 224, mobilenet_v1, "depthwise-separable stack (BN + ReLU, ReLU6 option)")
