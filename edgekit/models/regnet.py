"""RegNetX and RegNetY (Radosavovic et al., 2020) from the six design-space numbers. torchvision's layout."""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import numpy as np
import torch
from torch import Tensor, nn

from edgekit.models._layers import ConvBNAct, SqueezeExcitation, make_divisible
from edgekit.models._registry import register

# name: (depth, w_0, w_a, w_m, group_width): pycls's model zoo; Y models add SE with ratio 0.25.
REGNET_X = {
    "200mf": (13, 24, 36.44, 2.49, 8), "400mf": (22, 24, 24.48, 2.54, 16), "600mf": (16, 48, 36.97, 2.24, 24),
    "800mf": (16, 56, 35.73, 2.28, 16), "1_6gf": (18, 80, 34.01, 2.25, 24), "3_2gf": (25, 88, 26.31, 2.25, 48),
}
REGNET_Y = {
    "200mf": (13, 24, 36.44, 2.49, 8), "400mf": (16, 48, 27.89, 2.09, 8), "600mf": (15, 48, 32.54, 2.32, 16),
    "800mf": (14, 56, 38.84, 2.4, 16), "1_6gf": (27, 48, 20.71, 2.65, 24), "3_2gf": (21, 80, 42.63, 2.66, 24),
}
STEM_WIDTH = 32


def generate_stages(
    depth: int, w_0: int, w_a: float, w_m: float, group_width: int, bottleneck_ratio: float = 1.0,
    width: float = 1.0,
) -> list[tuple[int, int, int]]:
    """(width, depth, group width) per stage from the design-space parameters (the paper's eq. 2-4).

    `width` scales the stage widths before the group-compatibility adjustment.
    """
    if depth < 1 or w_a < 0 or w_0 <= 0 or w_m <= 1 or w_0 % 8 != 0 or group_width < 1 or bottleneck_ratio <= 0:
        raise ValueError(
            "invalid RegNet parameters: need depth >= 1, w_0 > 0 and a multiple of 8, w_a >= 0, w_m > 1, "
            "group_width >= 1, bottleneck_ratio > 0"
        )
    widths_cont = np.arange(depth) * w_a + w_0
    exponents = np.round(np.log(widths_cont / w_0) / np.log(w_m))
    block_widths = (np.round(w_0 * np.power(w_m, exponents) / 8) * 8).astype(int).tolist()
    stages: list[list[int]] = []  # [width, depth]
    for w in block_widths:
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    result = []
    for w, d in stages:
        w = make_divisible(w * width, 8) if width != 1.0 else w
        bottleneck = int(w * bottleneck_ratio)
        g = min(group_width, bottleneck)
        w = int(make_divisible(bottleneck, g) / bottleneck_ratio)
        result.append((w, d, g))
    return result


class BottleneckTransform(nn.Sequential):
    def __init__(
        self, width_in: int, width_out: int, stride: int, group_width: int, bottleneck_ratio: float,
        se_ratio: float | None,
    ) -> None:
        w_b = int(round(width_out * bottleneck_ratio))
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["a"] = ConvBNAct(width_in, w_b, 1)
        layers["b"] = ConvBNAct(w_b, w_b, 3, stride, groups=w_b // group_width)
        if se_ratio:
            layers["se"] = SqueezeExcitation(w_b, int(round(se_ratio * width_in)))
        layers["c"] = ConvBNAct(w_b, width_out, 1, activation=None)
        super().__init__(layers)


class ResBottleneckBlock(nn.Module):
    def __init__(
        self, width_in: int, width_out: int, stride: int, group_width: int, bottleneck_ratio: float,
        se_ratio: float | None,
    ) -> None:
        super().__init__()
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = ConvBNAct(width_in, width_out, 1, stride, activation=None)
        self.f = BottleneckTransform(width_in, width_out, stride, group_width, bottleneck_ratio, se_ratio)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.f(x))


class RegNet(nn.Module):
    def __init__(
        self, stages: list[tuple[int, int, int]], num_classes: int = 1000, in_channels: int = 3,
        bottleneck_ratio: float = 1.0, se_ratio: float | None = None, stem_width: int = STEM_WIDTH,
    ) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, stem_width, 3, 2)
        current = stem_width
        trunk: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (w, d, g) in enumerate(stages, start=1):
            stage = nn.Sequential()
            for j in range(d):
                stage.add_module(
                    f"block{i}-{j}",
                    ResBottleneckBlock(current if j == 0 else w, w, 2 if j == 0 else 1, g, bottleneck_ratio, se_ratio),
                )
            trunk[f"block{i}"] = stage
            current = w
        self.trunk_output = nn.Sequential(trunk)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(current, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=(2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.trunk_output(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def regnet(
    width: float, num_classes: int, in_channels: int, *, depth: int, w_0: int, w_a: float, w_m: float,
    group_width: int, bottleneck_ratio: float = 1.0, se_ratio: float = 0.0,
) -> RegNet:
    stages = generate_stages(depth, w_0, w_a, w_m, group_width, bottleneck_ratio, width)
    stem = make_divisible(STEM_WIDTH * width, 8) if width != 1.0 else STEM_WIDTH
    return RegNet(stages, num_classes, in_channels, bottleneck_ratio, se_ratio or None, stem)


for _family, _table, _se in (("x", REGNET_X, 0.0), ("y", REGNET_Y, 0.25)):
    for _size, (_d, _w0, _wa, _wm, _g) in _table.items():
        register(
            f"regnet_{_family}_{_size}", f"RegNet{_family.upper()}", 224, regnet,
            f"depth {_d}, w_0 {_w0}, w_a {_wa}, w_m {_wm}, group width {_g}" + (", SE 0.25" if _se else ""),
            fixed=dict(depth=_d, w_0=_w0, w_a=_wa, w_m=_wm, group_width=_g, se_ratio=_se),
        )
    _d, _w0, _wa, _wm, _g = _table["400mf"]
    register(
        f"regnet_{_family}", f"RegNet{_family.upper()}", 224,
        partial(regnet, depth=_d, w_0=_w0, w_a=_wa, w_m=_wm, group_width=_g, se_ratio=_se),
        "design space: options depth, w_0, w_a, w_m, group_width, bottleneck_ratio" + (", se_ratio" if _se else ""),
        design_space=True,
    )
