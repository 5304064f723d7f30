"""Post-training INT8 in torch (PT2E): capture the graph, observe calibration images, convert.

The converted graph is the one quantized model that the export package writes as ONNX and TFLite, and the
fake-quantized torch reference both files are compared with.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.fx import GraphModule, Node

from edgekit.core.errors import EdgekitError
from edgekit.core.quiet import quiet
from edgekit.quantization.annotator import EdgeQuantizer, QuantSettings
from edgekit.quantization.equalize import equalize

CALIBRATION_BATCH = 32
MIN_CALIBRATION = 8


@dataclass
class QuantizedModel:
    """A calibrated, converted PT2E graph: runs in torch with the exact int8 rounding of the exported files."""

    graph: GraphModule
    settings: QuantSettings
    calibration_images: int
    equalized_pairs: int = 0  # convolution pairs cross-layer equalized before calibration

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.graph(batch)


def _check_images(images: np.ndarray, model_input: tuple[int, ...]) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model_input):
        raise EdgekitError(
            f"calibration images have shape {tuple(images.shape[1:])} but the model takes {tuple(model_input)}: "
            "calibrate with data at the model's resolution and channels (the checkpoint's own data)."
        )
    if len(images) < MIN_CALIBRATION:
        raise EdgekitError(
            f"only {len(images)} calibration images: give at least {MIN_CALIBRATION} (a few hundred is typical)."
        )
    if not np.isfinite(images).all():
        raise EdgekitError("calibration images contain NaN or Inf: check the data and its preprocessing.")


def _check_weights(model: nn.Module) -> None:
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise EdgekitError(f"weight {name} contains NaN or Inf: the checkpoint is damaged or training diverged.")


def capture(model: nn.Module, input_shape: tuple[int, ...]) -> GraphModule:
    """torch.export the eval-mode model with a dynamic batch axis (calibration runs in batches)."""
    example = torch.zeros((2, *input_shape))
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},)).module()


def prepare(model: nn.Module, images: np.ndarray, settings: QuantSettings,
            skip: Callable[[Node], bool] | None = None) -> GraphModule:
    """Check the inputs, capture the model with its BatchNorm folded, insert observers (or, with
    `settings.qat`, fake-quantizers) and let them see the calibration images. Nodes for which `skip` is true
    stay in float."""
    input_shape = tuple(int(d) for d in images.shape[1:])
    spec = getattr(model, "spec", None)
    _check_images(images, spec.input_shape if spec is not None else input_shape)
    _check_weights(model)
    # the captured graph shares its parameters with `model`: fine-tuning would change the caller's model
    return prepare_captured(capture(copy.deepcopy(model), input_shape), images, settings, skip)


def prepare_captured(graph: GraphModule, images: np.ndarray, settings: QuantSettings,
                     skip: Callable[[Node], bool] | None = None) -> GraphModule:
    """`prepare` on a graph from `capture`, which it changes in place: pass a copy to prepare one twice."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    equalized = 0
    with quiet():
        if settings.qat or settings.equalize:
            # BN folded once with its running statistics, as post-training does, so the fine-tuned graph is the
            # exported one: no train/eval BN switch and no re-folding after training. Equalization needs the
            # folded weights too.
            _fuse_conv_bn_(graph)
        if settings.equalize:
            equalized = equalize(graph)
        if settings.qat:
            prepared = prepare_qat_pt2e(graph, EdgeQuantizer(settings, skip))
        else:
            prepared = prepare_pt2e(graph, EdgeQuantizer(settings, skip))
    prepared.edgekit_equalized_pairs = equalized
    with torch.no_grad():
        for start in range(0, len(images), CALIBRATION_BATCH):
            prepared(torch.from_numpy(np.ascontiguousarray(images[start:start + CALIBRATION_BATCH])))
    return prepared


def convert(prepared: GraphModule, settings: QuantSettings, calibration_images: int) -> QuantizedModel:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    equalized = getattr(prepared, "edgekit_equalized_pairs", 0)
    with quiet():
        # No move_exported_model_to_eval: `capture` exports the eval-mode model, so dropout and batchnorm are
        # already their eval forms, and torchao's pattern rewrite (1-2 s a call) would replace them with themselves
        converted = convert_pt2e(prepared, fold_quantize=False)
    return QuantizedModel(graph=converted, settings=settings, calibration_images=calibration_images,
                          equalized_pairs=equalized)


def quantize_ptq(model: nn.Module, images: np.ndarray, settings: QuantSettings) -> QuantizedModel:
    """Fold BN, observe the calibration images, convert: int8 weights and activations as `settings` say."""
    return convert(prepare(model, images, settings), settings, len(images))
