"""The two converters: torch.onnx.export and litert-torch."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from edgekit.core.errors import EdgekitError
from edgekit.core.quiet import quiet
from edgekit.exporting.layout import nhwc_channel_shuffles

ONNX_OPSET = 18


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, *, dynamic_batch: bool = False,
                nhwc: bool = False) -> None:
    """The FP32 ONNX file (opset 18, the dynamo exporter), checked by onnx's checker. ONNX files take NCHW input:
    `nhwc` is TFLite's (runtime/formats.py's channels_last), accepted for the one exporter signature."""
    import onnx

    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    with quiet():
        program = torch.onnx.export(
            model.eval(), (example,), dynamo=True, opset_version=ONNX_OPSET, input_names=["input"],
            output_names=["logits"], dynamic_shapes=dynamic_shapes, verbose=False,
        )
        program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)


def tflite_ready(graph: torch.fx.GraphModule, example: torch.Tensor,
                 nhwc: bool) -> tuple[nn.Module, torch.Tensor]:
    """What litert-torch converts, from an exported graph: a copy with its channel shuffles in NHWC form
    (edgekit/exporting/layout.py) and, with `nhwc`, channels-last input and output; and the example to match."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet():
        import litert_torch

    module: nn.Module = nhwc_channel_shuffles(graph)[0]
    if nhwc:
        module = litert_torch.to_channel_last_io(module, args=[0]).eval()
        example = example.permute(0, 2, 3, 1).contiguous()
    return module, example


def export_tflite(model: nn.Module, example: torch.Tensor, path: Path, *, nhwc: bool = False,
                  dynamic_batch: bool = False) -> None:
    """The FP32 TFLite file (litert-torch), with channels-last input and output with `nhwc`. TFLite files have a
    batch of 1: `dynamic_batch` is ONNX's, accepted for the one exporter signature."""
    with quiet():
        graph = torch.export.export(model.eval(), (example,)).module()
    module, example = tflite_ready(graph, example, nhwc)
    import litert_torch

    try:
        with quiet():
            edge_model = litert_torch.convert(module, (example,))
            edge_model.export(str(path))
    except Exception as exc:  # the converter's errors come in many types; name the stage and the cause
        raise EdgekitError(f"TFLite conversion failed ({type(exc).__name__}: {str(exc)[:200]}).") from exc
