"""edgekit's CPU training kernels (tap-by-tap depthwise weight gradients, 1x1 convolutions as matrix products)
compute what PyTorch's own convolutions compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.models import build, resolve_spec
from edgekit.models.depthwise_grad import is_plain_depthwise, use_fast_depthwise_backward
from edgekit.models.pointwise_matmul import is_plain_pointwise, use_matmul_pointwise
from edgekit.models.training_kernels import use_fast_training_kernels


def _assert_same_outputs_and_gradients(reference: nn.Conv2d, fast: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """One forward and backward through each; outputs and the input, weight and bias gradients agree. Returns the
    fast layer's output."""
    outs, grads = [], []
    for conv in (reference, fast):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        outs.append(out.detach())
        grads.append([xi.grad, conv.weight.grad] + ([conv.bias.grad] if conv.bias is not None else []))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    return outs[1]


@pytest.mark.parametrize("size,kernel,stride,bias", [
    (1, 3, 1, False), (2, 3, 1, False), (2, 3, 2, True), (2, 5, 1, False), (1, 5, 2, True), (3, 3, 2, False),
])
def test_gradients_match_pytorch(size: int, kernel: int, stride: int, bias: bool) -> None:
    torch.manual_seed(0)
    reference = nn.Conv2d(24, 24, kernel, stride, kernel // 2, groups=24, bias=bias)
    fast = nn.Conv2d(24, 24, kernel, stride, kernel // 2, groups=24, bias=bias)
    fast.load_state_dict(reference.state_dict())
    assert use_fast_depthwise_backward(fast) == 1
    _assert_same_outputs_and_gradients(reference, fast, torch.randn(16, 24, size, size).to(
        memory_format=torch.channels_last))


def test_a_patched_model_computes_the_same_gradients_and_keeps_its_state_dict() -> None:
    # One step's gradients, not weights after several steps: batch norm over 8 images on 1x1 maps divides by
    # near-zero variances, so float rounding differences grow chaotically from the second step on.
    spec = resolve_spec("mobilenet_v2", width=0.35, resolution=32, num_classes=10, in_channels=1)
    torch.manual_seed(0)
    reference = build(spec).train().to(memory_format=torch.channels_last)
    fast = build(spec).train().to(memory_format=torch.channels_last)
    fast.load_state_dict(reference.state_dict())
    depthwise = sum(is_plain_depthwise(m) for m in fast.modules())
    pointwise = sum(is_plain_pointwise(m) for m in fast.modules())
    assert use_fast_training_kernels(fast) == {"depthwise": depthwise, "pointwise": pointwise}
    assert depthwise > 0 and pointwise > 0
    x = torch.randn(8, 1, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,))
    losses = []
    for model in (reference, fast):
        torch.manual_seed(1)  # the classifier's dropout draws the same masks for both
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    # Relative to all gradients together: some are zero in exact arithmetic (a batch norm's shift ahead of a 1x1
    # convolution and another batch norm), and their float residue differs between any two kernels.
    got = torch.cat([p.grad.flatten() for p in fast.parameters()])
    want = torch.cat([p.grad.flatten() for p in reference.parameters()])
    assert float((got - want).norm() / want.norm()) < 1e-4
    assert list(fast.state_dict()) == list(reference.state_dict())


def test_only_plain_depthwise_convolutions_are_patched() -> None:
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1, groups=8),
                          nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16))
    assert use_fast_depthwise_backward(model) == 1
    assert "forward" in vars(model[3]) and not any("forward" in vars(m) for m in model[:3])


@pytest.mark.parametrize("size,bias,channels_last", [(1, False, True), (2, True, True), (4, False, True),
                                                     (2, True, False), (8, True, True)])
def test_pointwise_matches_pytorch(size: int, bias: bool, channels_last: bool) -> None:
    torch.manual_seed(0)
    reference = nn.Conv2d(24, 40, 1, bias=bias)
    fast = nn.Conv2d(24, 40, 1, bias=bias)
    fast.load_state_dict(reference.state_dict())
    assert use_matmul_pointwise(fast) == 1
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = _assert_same_outputs_and_gradients(reference, fast, torch.randn(16, 24, size, size).to(memory_format=fmt))
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)  # the layout training keeps


def test_only_plain_pointwise_convolutions_are_patched() -> None:
    model = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1, stride=2), nn.Conv2d(8, 8, 1, groups=2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1, padding=1))
    assert use_matmul_pointwise(model) == 1
    assert "forward" in vars(model[0]) and not any("forward" in vars(m) for m in model[1:])
