"""The optimiser and its schedule, shared by training and quantization-aware fine-tuning: parameter groups with
weight decay on conv/linear weights only, a warm-up + cosine schedule, the step that refuses a non-finite loss, and
the weights' exponential moving average.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from edgekit.core.errors import EdgekitError


class ModelEma:
    """Exponential moving average of weights and buffers, with TF's warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.state[key].lerp_(value.detach(), 1 - decay)
            else:
                self.state[key].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "state": self.state}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.updates = int(saved["updates"])
        for key, value in saved["state"].items():
            self.state[key].copy_(value)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only; BatchNorm parameters and biases are not decayed."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def warmup_cosine(warmup_steps: int, total_steps: int):  # noqa: ANN201 (a LambdaLR factor)
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, what: str, where: str, fix: str) -> None:
    """Backpropagate `loss` and step; a non-finite loss stops training with where it happened and what to change."""
    if not torch.isfinite(loss):
        raise EdgekitError(f"the {what} became {loss.item()} at {where}: {fix}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
