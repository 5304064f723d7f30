"""The CPU training kernels edgekit swaps in for oneDNN's where oneDNN is slow on small feature maps.

Both change only how a layer's forward and gradients are computed while training, never its parameters or state
dict: training (edgekit.training.loop) and its benchmark (tools/bench_train.py) call `use_fast_training_kernels`.
"""

from __future__ import annotations

from torch import nn

from edgekit.models.depthwise_grad import use_fast_depthwise_backward
from edgekit.models.pointwise_matmul import use_matmul_pointwise


def use_fast_training_kernels(model: nn.Module) -> dict[str, int]:
    """Tap-by-tap depthwise weight gradients and matrix-product 1x1 convolutions on small maps; how many of each."""
    return {"depthwise": use_fast_depthwise_backward(model), "pointwise": use_matmul_pointwise(model)}
