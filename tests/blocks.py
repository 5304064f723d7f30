"""Small blocks of the families' op patterns, for comparing INT8 files with the torch reference step by step."""

from collections.abc import Callable

import numpy as np
import torch
from torch import nn


class Block(nn.Module):
    """One op pattern of the families between two convolutions, small enough that the formats' rounding can be
    compared step by step (whole random networks amplify one-step differences into noise)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.stem, self.head = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 10, 1)
        self.reduce, self.expand = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.inner = nn.Conv2d(16, 16, 3, padding=1, groups=16)

    def _excite(self, y: torch.Tensor, gate: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return y * gate(self.expand(torch.relu(self.reduce(y.mean((2, 3), keepdim=True)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        if self.kind == "residual_relu6":
            y = nn.functional.relu6(y)
            y = y + nn.functional.relu6(self.inner(y))
        elif self.kind == "shuffle_concat":
            a, b = torch.relu(y).chunk(2, dim=1)
            y = torch.cat([a, torch.relu(self.inner(y))[:, 8:]], dim=1)
            y = y.view(-1, 2, 8, *y.shape[2:]).transpose(1, 2).reshape(y.shape)
        elif self.kind == "silu":
            y = nn.functional.silu(y)
        elif self.kind == "sigmoid":
            y = torch.sigmoid(y)
        elif self.kind == "squeeze_excite":
            y = self._excite(torch.relu(y), torch.sigmoid)
        elif self.kind == "hardsigmoid":
            y = nn.functional.hardsigmoid(y)
        elif self.kind == "hard_squeeze_excite":
            y = self._excite(nn.functional.hardswish(y), nn.functional.hardsigmoid)
        return self.head(y).mean((2, 3))


# The two runtimes round a requantization, a sigmoid lookup or an ADD rescale independently, so an output may
# sit a few quantization steps from the torch int8 reference; a wrong scale, layout or op is off by hundreds.
MAX_STEPS_OFF = 4.5


def steps_off(reference: np.ndarray, output: np.ndarray) -> float:
    """The largest distance of `output` from `reference`, in the reference's output quantization steps."""
    step = np.diff(np.unique(reference)).min()
    assert np.ptp(reference) > 20 * step  # the block's output is not degenerate
    return float(np.abs(output - reference).max() / step)
