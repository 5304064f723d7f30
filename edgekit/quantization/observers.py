"""Calibration observers beyond torchao's min-max and histogram (MSE) ones."""

from __future__ import annotations

import torch
from torchao.quantization.pt2e.observer import HistogramObserver

PERCENTILE = 99.99


class PercentileObserver(HistogramObserver):
    """Clips the range to the 0.01th and 99.99th percentiles of everything observed (TensorRT's and NNCF's
    percentile calibration): one outlier no longer stretches the scale of a whole tensor."""

    def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
        total = self.histogram.sum()
        if total <= 0:
            return self.min_val, self.max_val
        cumulative = torch.cumsum(self.histogram, dim=0) / total
        tail = (100.0 - PERCENTILE) / 100.0
        bin_width = (self.max_val - self.min_val) / self.bins
        low_bin = int(torch.searchsorted(cumulative, torch.tensor(tail)).item())
        high_bin = int(torch.searchsorted(cumulative, torch.tensor(1.0 - tail)).item())
        low = self.min_val + bin_width * low_bin
        high = self.min_val + bin_width * (high_bin + 1)
        return torch.minimum(low, torch.zeros_like(low)), torch.maximum(high, torch.zeros_like(high))
