"""A faster weight gradient for depthwise convolutions on tiny feature maps, for training on the CPU.

oneDNN (PyTorch's CPU convolution backend) computes a depthwise convolution's weight gradient very slowly when the
feature map is 2x2 or smaller: on a 2-core AMD EPYC VM, 36 ms for MobileNetV2 x0.75's last 3x3 depthwise layer at
32 px (batch 128, 720 channels on 1x1), against 0.9 ms for the same gradient as nine multiply-sums, one per kernel
tap; at 4x4 and larger oneDNN is fast again (0.3 ms at 4x4). A net trained at 32 px (Fashion-MNIST, CIFAR) ends on
such maps, and those layers took half of each training step. `python tools/bench_train.py --throughput-only` shows
the difference (docs/training.md).

`use_fast_depthwise_backward` routes only those layers, and only while they see such maps, through a function that
keeps oneDNN's forward and input gradient and sums the weight gradient tap by tap. The module, its parameters and
its state dict are unchanged, so checkpoints, export and evaluation never see it.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Feature maps of at most this many pixels (2x2) take the tap-by-tap weight gradient.
MAX_PIXELS = 4


class _DepthwiseConv(torch.autograd.Function):
    """F.conv2d for a depthwise convolution (groups == channels), with the weight gradient summed per tap."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding, 1, x.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(stride), list(padding), [1, 1], False, [0, 0], x.shape[1],
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = tap_weight_grad(grad, x, weight.shape[-2:], stride, padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


def tap_weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: tuple[int, int] | torch.Size,
                    stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """A depthwise convolution's weight gradient, one multiply-sum over (batch, rows, columns) per kernel tap."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh, ow = grad.shape[-2:]
    padded = F.pad(x, (pw, pw, ph, ph))
    out = grad.new_empty(x.shape[1], 1, kh, kw)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            out[:, 0, i, j] = (grad * window).sum((0, 2, 3))
    return out


def _forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and self.weight.requires_grad and x.shape[-2] * x.shape[-1] <= MAX_PIXELS:
        return _DepthwiseConv.apply(x, self.weight, self.bias, self.stride, self.padding)
    return type(self).forward(self, x)


def is_plain_depthwise(module: nn.Module) -> bool:
    """A Conv2d with one filter per channel, no dilation, numeric zero padding: what _DepthwiseConv computes."""
    return (type(module) is nn.Conv2d and module.groups == module.in_channels == module.out_channels > 1
            and module.dilation == (1, 1) and module.padding_mode == "zeros" and not isinstance(module.padding, str))


def use_fast_depthwise_backward(model: nn.Module) -> int:
    """Give every plain depthwise Conv2d of `model` the tap-by-tap weight gradient on tiny maps; returns how many.
    Only the instances' forward changes: parameters, buffers and the state dict stay as they are."""
    patched = 0
    for module in model.modules():
        if is_plain_depthwise(module):
            module.forward = types.MethodType(_forward, module)
            patched += 1
    return patched
