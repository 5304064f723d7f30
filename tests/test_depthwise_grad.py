"""The tap-by-tap depthwise weight gradient computes what PyTorch's own convolution backward computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit.models import build, resolve_spec
from edgekit.models.depthwise_grad import is_plain_depthwise, use_fast_depthwise_backward


@pytest.mark.parametrize("size,kernel,stride,bias", [
    (1, 3, 1, False), (2, 3, 1, False), (2, 3, 2, True), (2, 5, 1, False), (1, 5, 2, True), (3, 3, 2, False),
])
def test_gradients_match_pytorch(size: int, kernel: int, stride: int, bias: bool) -> None:
    torch.manual_seed(0)
    reference = nn.Conv2d(24, 24, kernel, stride, kernel // 2, groups=24, bias=bias)
    fast = nn.Conv2d(24, 24, kernel, stride, kernel // 2, groups=24, bias=bias)
    fast.load_state_dict(reference.state_dict())
    assert use_fast_depthwise_backward(fast) == 1
    x = torch.randn(16, 24, size, size).to(memory_format=torch.channels_last)
    outs, grads = [], []
    for conv in (reference, fast):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        outs.append(out.detach())
        grads.append([xi.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
    torch.testing.assert_close(outs[1], outs[0])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_patched_model_trains_to_the_same_weights_and_keeps_its_state_dict() -> None:
    spec = resolve_spec("mobilenet_v2", width=0.35, resolution=32, num_classes=10, in_channels=1)
    torch.manual_seed(0)
    reference = build(spec).train()
    fast = build(spec).train()
    fast.load_state_dict(reference.state_dict())
    depthwise = sum(is_plain_depthwise(m) for m in fast.modules())
    assert use_fast_depthwise_backward(fast) == depthwise > 0
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    for model in (reference, fast):
        torch.manual_seed(1)  # the classifier's dropout draws the same masks for both
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert list(fast.state_dict()) == list(reference.state_dict())
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_only_plain_depthwise_convolutions_are_patched() -> None:
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1, groups=8),
                          nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16),
                          nn.Conv2d(16, 16, 3, padding=1, groups=16))
    assert use_fast_depthwise_backward(model) == 1
    assert "forward" in vars(model[3]) and not any("forward" in vars(m) for m in model[:3])
