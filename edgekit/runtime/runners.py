"""Runners: one `predict(batch) -> logits` for torch, ONNX Runtime and the TFLite interpreter.

Every runner takes NCHW float32 batches; a runner for an NHWC model transposes on the way in. The ONNX and TFLite
runners wrap the on-device harness's model classes (harness.OnnxModel, harness.TFLiteModel), so this machine and a
device load, configure, quantize inputs and dequantize outputs the same way: `run` is one input in the file's own
layout, as the harness runs it on a device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgekit.core.errors import EdgekitError, first_line
from edgekit.runtime import harness
from edgekit.runtime.formats import ONNX, format_of

if TYPE_CHECKING:
    from torch import nn

    from edgekit.core.threads import ThreadGovernor

# One quantize/dequantize for every runtime: the harness's (the device runs it too).
quantize = harness.quantize
dequantize = harness.dequantize


class Runner(Protocol):
    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRunner:
    """A torch model in eval mode. With a `governor` (edgekit.core.threads.ThreadGovernor), torch's thread count
    follows the cores other processes leave free, batch by batch, as in training."""

    name = "torch"

    def __init__(self, model: nn.Module, governor: ThreadGovernor | None = None) -> None:
        self.model = model.eval()
        self.governor = governor

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self.governor is not None:
            self.governor.poll()
        with torch.no_grad():
            return self.model(torch.from_numpy(batch)).numpy()

    def close(self) -> None:
        """Give torch's thread count back to what it was (the governor sets it for the whole process)."""
        if self.governor is not None:
            self.governor.restore()


class OnnxRunner:
    name = ONNX.runtime

    def __init__(self, path: Path, threads: int = 1, layout: str = "nchw") -> None:
        self.path = Path(path)
        self.nhwc = layout == "nhwc"  # edgekit exports NCHW ONNX; a file converted from Keras may take NHWC
        self.model = harness.OnnxModel(str(path), threads)
        self.session = self.model.session
        self.input_name = self.model.input.name
        self.fixed_batch = self.model.input.shape[0] == 1

    @property
    def input_shape(self) -> list:
        """The file's input shape; a dynamic dimension is its name (a str) or None."""
        return self.model.input_shape()

    @property
    def quantized(self) -> bool:
        """An INT8 graph (QDQ or QLinear ops)."""
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        return any(node.op_type.startswith(("QLinear", "Quantize", "Dequantize", "QGemm")) for node in graph.node)

    def run(self, x: np.ndarray) -> np.ndarray:
        """One input as the file takes it (its own layout and batch), the output as float32."""
        self.model.set_input(x)
        self.model.invoke()
        return self.model.output_value()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.nhwc:
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        if self.fixed_batch:
            return np.concatenate([self.run(x[None]) for x in batch])
        return self.run(batch)


def tflite_interpreter(path: Path, threads: int = 1, delegates: bool = True):  # noqa: ANN201 (runtime-dependent type)
    """The TFLite interpreter from ai_edge_litert, else tflite_runtime, else tensorflow.lite (not yet allocated)."""
    return harness.load_tflite(str(path), threads, xnnpack=delegates)[2]


class TFLiteRunner:
    name = "tflite"

    def __init__(self, path: Path, layout: str = "nchw", threads: int = 1) -> None:
        self.path = Path(path)
        self.model = harness.TFLiteModel(str(path), threads)
        self.interpreter = self.model.interpreter
        self.input, self.output = self.model.input, self.model.output
        self.nhwc = layout == "nhwc"

    @property
    def input_shape(self) -> list:
        return self.model.input_shape()

    @property
    def quantized(self) -> bool:
        """An INT8 graph: any 8-bit tensor."""
        return any(t["dtype"] in (np.int8, np.uint8) for t in self.interpreter.get_tensor_details())

    def run(self, x: np.ndarray) -> np.ndarray:
        """One input as the file takes it (its own layout, batch 1), quantized for an int8 input; the output
        dequantized to float32."""
        self.model.set_input(x)
        self.model.invoke()
        return self.model.output_value()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.run((x.transpose(1, 2, 0) if self.nhwc else x)[None])[0] for x in batch])


def file_runner(path: Path, threads: int = 1, layout: str = "nchw") -> OnnxRunner | TFLiteRunner:
    """The runner for a model file, by its format (`layout`: the TFLite file's, "nchw" or "nhwc"). An unknown
    suffix, a missing runtime or a file its runtime cannot load is one EdgekitError."""
    from edgekit.core.quiet import quiet

    fmt = format_of(path)
    try:
        with quiet():
            return fmt.behaviour("runner")(path, threads=threads, layout=layout)
    except harness.NoRuntime as exc:
        raise EdgekitError(f"{path} needs {fmt.runtime}: {exc}.") from None
    except Exception as exc:  # noqa: BLE001 - any loader failure means the same thing to the user
        raise EdgekitError(f"{path} cannot be loaded ({first_line(exc)[:200]}): it is corrupt or not a model; "
                           "export it again.") from None
