"""MobileNetV3 Large and Small (Howard et al., 2019): hard-swish, SE with hard-sigmoid. torchvision's layout."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from edgekit.models._layers import ConvBNAct, SqueezeExcitation, init_weights, make_divisible
from edgekit.models._registry import register


@dataclass(frozen=True)
class BlockConfig:
    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    use_hs: bool
    stride: int


# (in, kernel, expanded, out, SE, activation, stride): the paper's Tables 1 and 2.
LARGE = [
    (16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2), (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2), (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1), (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1), (160, 5, 960, 160, True, "HS", 1),
]
SMALL = [
    (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
]
LAST_CHANNEL = {"large": 1280, "small": 1024}


class InvertedResidual(nn.Module):
    def __init__(self, cnf: BlockConfig, norm_layer: partial[nn.Module]) -> None:
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.in_channels == cnf.out_channels
        act = nn.Hardswish if cnf.use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if cnf.expanded != cnf.in_channels:
            layers.append(ConvBNAct(cnf.in_channels, cnf.expanded, 1, activation=act, norm_layer=norm_layer))
        layers.append(ConvBNAct(
            cnf.expanded, cnf.expanded, cnf.kernel, cnf.stride, groups=cnf.expanded, activation=act,
            norm_layer=norm_layer,
        ))
        if cnf.use_se:
            squeeze = make_divisible(cnf.expanded // 4, 8)
            layers.append(SqueezeExcitation(cnf.expanded, squeeze, scale_activation=nn.Hardsigmoid))
        layers.append(ConvBNAct(cnf.expanded, cnf.out_channels, 1, activation=None, norm_layer=norm_layer))
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x) if self.use_res_connect else self.block(x)


class MobileNetV3(nn.Module):
    def __init__(
        self, arch: str, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2
    ) -> None:
        super().__init__()

        def scale(c: int) -> int:
            return make_divisible(c * width, 8)

        table = LARGE if arch == "large" else SMALL
        blocks = [
            BlockConfig(scale(i), k, scale(e), scale(o), se, act == "HS", s) for i, k, e, o, se, act, s in table
        ]
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        layers: list[nn.Module] = [
            ConvBNAct(in_channels, blocks[0].in_channels, 3, 2, activation=nn.Hardswish, norm_layer=norm_layer)
        ]
        layers += [InvertedResidual(cnf, norm_layer) for cnf in blocks]
        last_conv = 6 * blocks[-1].out_channels
        layers.append(ConvBNAct(blocks[-1].out_channels, last_conv, 1, activation=nn.Hardswish, norm_layer=norm_layer))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last_channel = scale(LAST_CHANNEL[arch])
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3(
    width: float, num_classes: int, in_channels: int, *, arch: str, dropout: float = 0.2
) -> MobileNetV3:
    return MobileNetV3(arch, width, num_classes, in_channels, dropout)


register("mobilenet_v3_large", "MobileNetV3", 224, mobilenet_v3, "hard-swish, SE + hard-sigmoid (Large)",
         fixed=dict(arch="large"))
register("mobilenet_v3_small", "MobileNetV3", 224, mobilenet_v3, "hard-swish, SE + hard-sigmoid (Small)",
         fixed=dict(arch="small"))
