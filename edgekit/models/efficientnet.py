"""EfficientNet B0-B7 and any compound-scaling phi (Tan & Le, 2019), and EfficientNet-Lite0-4.

B-models use torchvision's layout (MBConv with SE + SiLU, stochastic depth). Lite models follow TensorFlow's
efficientnet_lite_builder: ReLU6, no SE, stem (32) and head (1280) and the first and last stages' depth fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import Tensor, nn

from edgekit.models._layers import ConvBNAct, SqueezeExcitation, StochasticDepth, init_weights, make_divisible
from edgekit.models._registry import register

# (expand ratio, kernel, stride, in, out, repeats): the B0 baseline, the paper's Table 1.
BASELINE = [
    (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
]
# name: (width coefficient, depth coefficient, resolution, dropout)
B_MODELS = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
}
LITE_MODELS = {
    "lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3), "lite4": (1.4, 1.8, 300, 0.3),
}
# Compound scaling (the paper's eq. 3): depth alpha^phi, width beta^phi, resolution gamma^phi.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15


def compound_coefficients(phi: float) -> tuple[float, float, int]:
    """(width, depth, resolution) for compound coefficient phi; resolution rounded to a multiple of 8."""
    return BETA**phi, ALPHA**phi, int(round(224 * GAMMA**phi / 8) * 8)


@dataclass(frozen=True)
class MBConvConfig:
    expand_ratio: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    repeats: int


class MBConv(nn.Module):
    def __init__(
        self, cnf: MBConvConfig, stochastic_depth_prob: float, norm_layer: partial[nn.Module],
        activation: type[nn.Module], use_se: bool,
    ) -> None:
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.in_channels == cnf.out_channels
        expanded = make_divisible(cnf.in_channels * cnf.expand_ratio, 8)
        layers: list[nn.Module] = []
        if expanded != cnf.in_channels:
            layers.append(ConvBNAct(cnf.in_channels, expanded, 1, activation=activation, norm_layer=norm_layer))
        layers.append(ConvBNAct(
            expanded, expanded, cnf.kernel, cnf.stride, groups=expanded, activation=activation, norm_layer=norm_layer
        ))
        if use_se:
            squeeze = max(1, cnf.in_channels // 4)
            layers.append(SqueezeExcitation(expanded, squeeze, activation=partial(nn.SiLU, inplace=True)))
        layers.append(ConvBNAct(expanded, cnf.out_channels, 1, activation=None, norm_layer=norm_layer))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)
        self.out_channels = cnf.out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + self.stochastic_depth(out) if self.use_res_connect else out


class EfficientNet(nn.Module):
    def __init__(
        self,
        width: float = 1.0,
        depth: float = 1.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.2,
        stochastic_depth_prob: float = 0.2,
        lite: bool = False,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        activation = nn.ReLU6 if lite else nn.SiLU
        norm_layer = partial(nn.BatchNorm2d, eps=bn_eps) if bn_eps == 1e-5 else partial(
            nn.BatchNorm2d, eps=bn_eps, momentum=0.01
        )
        last = len(BASELINE) - 1
        stages = []
        for index, (t, k, s, c_in, c_out, n) in enumerate(BASELINE):
            fixed_depth = lite and index in (0, last)
            stages.append(MBConvConfig(
                t, k, s, make_divisible(c_in * width), make_divisible(c_out * width),
                n if fixed_depth else int(math.ceil(n * depth)),
            ))
        stem = 32 if lite else stages[0].in_channels
        stages[0] = replace(stages[0], in_channels=stem)
        layers: list[nn.Module] = [ConvBNAct(in_channels, stem, 3, 2, activation=activation, norm_layer=norm_layer)]
        total_blocks = sum(cnf.repeats for cnf in stages)
        block_id = 0
        for cnf in stages:
            blocks: list[nn.Module] = []
            for i in range(cnf.repeats):
                block_cnf = cnf if i == 0 else replace(cnf, in_channels=cnf.out_channels, stride=1)
                sd_prob = stochastic_depth_prob * block_id / total_blocks
                blocks.append(MBConv(block_cnf, sd_prob, norm_layer, activation, use_se=not lite))
                block_id += 1
            layers.append(nn.Sequential(*blocks))
        head = 1280 if lite else 4 * stages[-1].out_channels
        layers.append(ConvBNAct(stages[-1].out_channels, head, 1, activation=activation, norm_layer=norm_layer))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(head, num_classes))
        init_weights(self, linear="uniform")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet(
    width: float, num_classes: int, in_channels: int, *, depth: float = 1.0, lite: bool = False,
    dropout: float = 0.2, stochastic_depth_prob: float = 0.2, bn_eps: float = 1e-5,
) -> EfficientNet:
    if not 0 <= stochastic_depth_prob < 1:
        raise ValueError(f"stochastic_depth_prob must be in [0, 1), not {stochastic_depth_prob!r}")
    return EfficientNet(width, depth, num_classes, in_channels, dropout, stochastic_depth_prob, lite, bn_eps)


def efficientnet_phi(
    width: float, num_classes: int, in_channels: int, *, phi: float = 0.0, dropout: float = 0.2,
    stochastic_depth_prob: float = 0.2,
) -> EfficientNet:
    w, d, _ = compound_coefficients(phi)
    return efficientnet(
        width * w, num_classes, in_channels, depth=d, dropout=dropout, stochastic_depth_prob=stochastic_depth_prob
    )


for _name, (_w, _d, _r, _drop) in B_MODELS.items():
    register(
        f"efficientnet_{_name}", "EfficientNet", _r, partial(efficientnet, dropout=_drop),
        f"MBConv + SE + SiLU, width {_w} depth {_d}", base_width=_w,
        # torchvision's B5-B7 (ported from TensorFlow) use BN eps 1e-3.
        fixed=dict(depth=_d, bn_eps=1e-3 if _name in ("b5", "b6", "b7") else 1e-5),
    )
for _name, (_w, _d, _r, _drop) in LITE_MODELS.items():
    register(
        f"efficientnet_{_name}", "EfficientNet-Lite", _r, partial(efficientnet, dropout=_drop),
        f"MBConv + ReLU6, no SE, width {_w} depth {_d}", base_width=_w,
        fixed=dict(depth=_d, lite=True, bn_eps=1e-3),
    )
register(
    "efficientnet", "EfficientNet", 224, efficientnet_phi,
    f"compound scaling: option phi (depth {ALPHA}^phi, width {BETA}^phi, resolution {GAMMA}^phi)",
    resolution_fn=lambda options: compound_coefficients(options["phi"])[2], design_space=True,
)
