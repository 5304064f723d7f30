"""The NHWC rewrite of channel shuffles for TFLite: exact on float and PT2E-quantized graphs, and only shuffles."""

import numpy as np
import pytest
import torch

from edgekit.exporting.layout import nhwc_channel_shuffles
from edgekit.models import batchnorm_statistics_from_noise, create
from edgekit.quantization.annotator import QuantSettings
from edgekit.quantization.ptq import capture, quantize_ptq

aten = torch.ops.aten


def _model(name: str, **options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return batchnorm_statistics_from_noise(create(name, resolution=32, num_classes=10, **options)).eval()


def _ops(graph: torch.fx.GraphModule, target: object) -> list[torch.fx.Node]:
    return [n for n in graph.graph.nodes if n.op == "call_function" and n.target is target]


@pytest.mark.parametrize(("name", "options", "shuffles"), [
    ("shufflenet_v2_x0_5", {}, 16), ("shufflenet_v1", {"groups": 3}, 15), ("shufflenet_v1", {"groups": 8}, 15),
])
def test_float_shuffles_are_rewritten_exactly(name: str, options: dict, shuffles: int) -> None:
    model = _model(name, **options)
    graph = capture(model, model.spec.input_shape)
    rewritten, count = nhwc_channel_shuffles(graph)
    assert count == shuffles
    # every shuffle's transpose now works on the last two axes of an NHWC view
    assert all(tuple(n.args[1:]) == (3, 4) for n in _ops(rewritten, aten.transpose.int))
    assert len(_ops(rewritten, aten.permute.default)) == 2 * shuffles
    assert len(_ops(rewritten, aten.transpose.int)) == shuffles  # the old chains are gone
    x = torch.randn(3, *model.spec.input_shape)
    # the same values in the same order; only float rounding differs, as torch runs the convolution after a
    # shuffle on the channels-last strides the permute leaves
    torch.testing.assert_close(rewritten(x), graph(x), rtol=1e-4, atol=1e-5)
    assert not _ops(graph, aten.permute.default)  # the original graph is left as it was


def test_quantized_shuffles_keep_their_quantization() -> None:
    model = _model("shufflenet_v2_x0_5")
    images = np.random.default_rng(0).standard_normal((16, *model.spec.input_shape)).astype(np.float32)
    quantized = quantize_ptq(model, images, QuantSettings())
    rewritten, count = nhwc_channel_shuffles(quantized.graph)
    assert count == 16
    quantize = torch.ops.quantized_decomposed.quantize_per_tensor.default
    for node in _ops(rewritten, aten.permute.default) + _ops(rewritten, aten.transpose.int):
        assert [u.target for u in node.users] == [quantize]  # every new step stays int8 in the TFLite graph
    x = torch.from_numpy(images[:4])
    torch.testing.assert_close(rewritten(x), quantized.graph(x), rtol=0, atol=0)


def test_models_without_shuffles_are_unchanged() -> None:
    model = _model("mobilenet_v2", width=0.35)
    graph = capture(model, model.spec.input_shape)
    rewritten, count = nhwc_channel_shuffles(graph)
    assert count == 0
    assert [n.target for n in rewritten.graph.nodes] == [n.target for n in graph.graph.nodes]
