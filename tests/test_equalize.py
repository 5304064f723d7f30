"""Cross-layer equalization: exact (the float function is unchanged), balanced ranges, ReLU6 pairs left alone."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchao.quantization.pt2e.utils import _fuse_conv_bn_

from edgekit.models import batchnorm_statistics_from_noise, create
from edgekit.quantization.equalize import equalization_pairs, equalize, parameter
from edgekit.quantization.ptq import capture

RESOLUTION = 32


def _folded(model: nn.Module) -> torch.fx.GraphModule:
    graph = capture(model.eval(), (3, RESOLUTION, RESOLUTION))
    _fuse_conv_bn_(graph)
    return graph


def _channel_ranges(graph: torch.fx.GraphModule, node: torch.fx.Node) -> torch.Tensor:
    weight = parameter(graph, node.args[1])
    return weight.detach().reshape(weight.shape[0], -1).abs().amax(1)


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "mobilenet_v1", "regnet_x_200mf", "shufflenet_v1"])
def test_equalization_keeps_the_function_and_evens_out_channel_ranges(name: str) -> None:
    torch.manual_seed(0)
    graph = _folded(batchnorm_statistics_from_noise(create(name, resolution=RESOLUTION, num_classes=10)))
    x = torch.randn(4, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        before = graph(x)
    pairs = equalization_pairs(graph)
    spread = [float(r.max() / r.min()) for r in (_channel_ranges(graph, first) for first, _ in pairs)]
    assert equalize(graph) == len(pairs) >= 10
    with torch.no_grad():
        after = graph(x)
    assert (after - before).abs().max() <= 1e-4 * before.abs().max()
    evened = [float(r.max() / r.min()) for r in (_channel_ranges(graph, first) for first, _ in pairs)]
    assert sum(evened) < 0.9 * sum(spread), (spread, evened)


class _Pair(nn.Module):
    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.first, self.second = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.activation(self.first(x))).mean((2, 3))


def test_only_scale_equivariant_pairs_are_equalized() -> None:
    # relu(x / s) = relu(x) / s, but min(x / s, 6) != min(x, 6) / s: a ReLU6 pair would change the model
    assert len(equalization_pairs(_folded(_Pair(nn.ReLU())))) == 1
    assert len(equalization_pairs(_folded(_Pair(nn.Identity())))) == 1
    assert equalization_pairs(_folded(_Pair(nn.ReLU6()))) == []


@pytest.mark.slow
def test_export_equalize_records_the_pairs(tmp_path: Path, edgekit_cli) -> None:
    out = tmp_path / "art"
    result = edgekit_cli("export", "shufflenet_v2_x0_5", "--resolution", "32", "--num-classes", "10", "--int8",
                         "--per-tensor", "--equalize", "--format", "tflite", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    section = json.loads(result.stdout)["int8"]
    assert section["scheme"]["equalization"].startswith("cross-layer, 35 convolution pair(s)")
    assert section["graph"]["tflite"]["full_integer"]
