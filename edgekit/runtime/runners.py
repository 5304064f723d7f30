"""Runners: one `predict(batch) -> logits` for torch, ONNX Runtime and the TFLite interpreter.

Every runner takes NCHW float32 batches; a runner for an NHWC model transposes on the way in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn


class Runner(Protocol):
    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRunner:
    name = "torch"

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.from_numpy(batch)).numpy()


class OnnxRunner:
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        from edgekit.runtime.harness import ort_session_options

        self.session = ort.InferenceSession(str(path), ort_session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.fixed_batch = self.session.get_inputs()[0].shape[0] == 1

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.fixed_batch:
            return np.concatenate([self.session.run(None, {self.input_name: x[None]})[0] for x in batch])
        return self.session.run(None, {self.input_name: batch})[0]


def tflite_interpreter(path: Path, threads: int = 1, delegates: bool = True):  # noqa: ANN201 (runtime-dependent type)
    """The TFLite interpreter from ai_edge_litert, else tflite_runtime, else tensorflow.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # pragma: no cover - devices without ai-edge-litert
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType
        except ImportError:
            from tensorflow.lite.python.interpreter import Interpreter, OpResolverType
    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)


class TFLiteRunner:
    name = "tflite"

    def __init__(self, path: Path, layout: str = "nchw", threads: int = 1) -> None:
        self.interpreter = tflite_interpreter(path, threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.nhwc = layout == "nhwc"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        outputs = []
        for x in batch:
            x = x.transpose(1, 2, 0) if self.nhwc else x
            self.interpreter.set_tensor(self.input["index"], quantize(x[None], self.input))
            self.interpreter.invoke()
            outputs.append(dequantize(self.interpreter.get_tensor(self.output["index"])[0], self.output))
        return np.stack(outputs)


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input for a TFLite tensor: as is for a float tensor, else with the tensor's scale and zero point."""
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.rint(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero_point = detail["quantization"]
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
