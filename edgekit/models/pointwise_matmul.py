"""1x1 convolutions on small feature maps as matrix products, for training on the CPU.

A stride-1 1x1 convolution is a matrix product: on a channels-last tensor, (N*H*W, C_in) @ (C_in, C_out). On maps
of 4x4 and smaller oneDNN's convolution (forward and both gradients) is the slower way to compute it on a 2-core
AMD EPYC VM with AVX2 and no AVX-512; on 8x8 and larger maps the convolution is as fast or faster.
A net trained at 32 px spends much of each step on such maps. `python tools/bench_train.py --throughput-only`
prints training images/s with edgekit's kernels and with PyTorch's (docs/training.md).

`use_matmul_pointwise` routes only those layers, only while gradients are recorded and only on such maps, through
`F.linear` on a view of the same memory. The module, its parameters and its state dict are unchanged, so
checkpoints, export and evaluation never see it.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

# Feature maps of at most this many pixels (4x4) take the matrix product.
MAX_PIXELS = 16


def _forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    if torch.is_grad_enabled() and h * w <= MAX_PIXELS:
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view when x is channels-last, as training keeps it
        out = F.linear(rows, self.weight.view(self.out_channels, c), self.bias)
        return out.view(n, h, w, self.out_channels).permute(0, 3, 1, 2)  # channels-last again
    return type(self).forward(self, x)


def is_plain_pointwise(module: nn.Module) -> bool:
    """A Conv2d that is a matrix product per pixel: 1x1 kernel, stride 1, no padding, no groups, no dilation."""
    return (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride == (1, 1)
            and module.padding in ((0, 0), "valid") and module.dilation == (1, 1) and module.groups == 1)


def use_matmul_pointwise(model: nn.Module) -> int:
    """Give every plain 1x1 Conv2d of `model` the matrix product on small maps while training; returns how many.
    Only the instances' forward changes: parameters, buffers and the state dict stay as they are."""
    patched = 0
    for module in model.modules():
        if is_plain_pointwise(module):
            module.forward = types.MethodType(_forward, module)
            patched += 1
    return patched
