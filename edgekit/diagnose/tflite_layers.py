"""Per-layer INT8 error of a TFLite file against its FP32 twin, read from the files on the TFLite interpreter.

The interpreter keeps intermediate tensors only with its built-in kernels (a delegate such as XNNPACK computes
its partition in its own buffers), so both files run on the built-in kernels here: the figures describe the
file, and a device's XNNPACK kernels are compared with them by the final output. Layers are matched between the
two files op by op (the k-th CONV_2D with the k-th CONV_2D, output shapes equal), since both come from one graph
through one converter; a layer's name is the module path the converter records in its tensor names. Only the
accumulated error is measured: the interpreter cannot be fed a float value in the middle of an INT8 graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.errors import EdgekitError, first_line
from edgekit.diagnose.errors import LayerErrors, channel_gain, kind, name_unnamed, representable, weight_spread
from edgekit.runtime import harness

WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
NOT_A_TWIN = 0.9  # share of the FP32 values outside the INT8 tensor's range beyond which they are other values
NOT_LAYERS = ("QUANTIZE", "DEQUANTIZE", "TRANSPOSE", "PAD", "RESHAPE", "SQUEEZE", "DELEGATE")


def module_path(location: str) -> str | None:
    """The module path in a tensor name litert-torch writes (`pkg.Net/torch.nn...Sequential_features/
    pkg.Block_3/torch.nn.modules.conv.Conv2d_0;...` -> `features.3.0`), None where there is none."""
    parts = location.split(";")[0].split("/")[1:]
    names = []
    for part in parts:
        cls = part.rsplit(".", 1)[-1]
        if "_" not in cls:
            return None
        names.append(cls.split("_", 1)[1])
    return ".".join(names) or None


def _open(path: Path) -> Any:
    try:
        package, version, interpreter = harness.load_tflite(str(path), threads=1, xnnpack=False, keep_tensors=True)
        interpreter.allocate_tensors()
    except TypeError as exc:
        if "preserve_all_tensors" not in str(exc):
            raise
        package, version, _ = harness._tflite_module()  # noqa: SLF001 - which runtime refused
        raise EdgekitError(f"the TFLite runtime here ({package} {version}) cannot keep intermediate tensors, which "
                           "the report reads: pip install ai-edge-litert, or give --format onnx.") from None
    except harness.NoRuntime as exc:
        raise EdgekitError(f"{path} needs a TFLite runtime: {exc}.") from None
    except Exception as exc:  # noqa: BLE001 - any loader failure means the same thing to the user
        raise EdgekitError(f"{path} cannot be loaded ({first_line(exc)[:200]}): export it again.") from None
    return interpreter


def _layer_ops(interpreter: Any, tensors: dict[int, dict]) -> list[dict]:
    return [op for op in interpreter._get_ops_details()  # noqa: SLF001 - the execution plan, from Python
            if op["op_name"] not in NOT_LAYERS and len(op["outputs"])
            and np.dtype(tensors[int(op["outputs"][0])]["dtype"]).kind in "fiu"]


def _name(op: dict, tensors: dict[int, dict]) -> str:
    """The layer's module path (a weighted op's, from its weight's name), `path (kind)` for another op; "" where
    the converter recorded none."""
    if op["op_name"] in WEIGHTED and len(op["inputs"]) > 1:
        found = module_path(tensors[int(op["inputs"][1])]["name"])
        if found:
            return found
    found = module_path(tensors[int(op["outputs"][0])]["name"])
    return f"{found} ({kind(op['op_name'])})" if found else ""


def _weights(interpreter: Any, op: dict, tensors: dict[int, dict]) -> np.ndarray | None:
    """A weighted op's weights as float, [out, in, ...] as ONNX lays them out (a depthwise kernel: [out, 1, ...])."""
    if op["op_name"] not in WEIGHTED or len(op["inputs"]) < 2:
        return None
    detail = tensors[int(op["inputs"][1])]
    values = interpreter.get_tensor(detail["index"]).astype(np.float64)
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64)
    if scales.size > 1:
        axis = int(params.get("quantized_dimension", 0))
        shape = [1] * values.ndim
        shape[axis] = scales.size
        values = (values - np.asarray(params["zero_points"]).reshape(shape)) * scales.reshape(shape)
    elif scales.size == 1:
        values = (values - float(np.asarray(params["zero_points"]).ravel()[0])) * scales[0]
    if op["op_name"] == "DEPTHWISE_CONV_2D":  # [1, kh, kw, out]
        return np.moveaxis(values, -1, 0)
    return np.moveaxis(values, -1, 1) if values.ndim == 4 else values  # CONV_2D: [out, kh, kw, in]


def _input_gain(op: dict, ops_by_output: dict[int, dict], gains: dict[int, np.ndarray | None]
                ) -> np.ndarray | None:
    """The gain the op's input carries: that of the layer before it, through PAD and the like."""
    tensor = int(op["inputs"][0])
    for _ in range(8):
        if tensor in gains:
            return gains[tensor]
        producer = ops_by_output.get(tensor)
        if producer is None or producer["op_name"] not in NOT_LAYERS:
            return None
        tensor = int(producer["inputs"][0])
    return None


# Runs a .tflite file on a device: (path, tensor indices, inputs stacked on axis 0) -> {index: values stacked alike}.
DeviceTensors = Callable[[Path, list[int], np.ndarray], dict[int, np.ndarray]]


def _run_here(fp32: Any, int8: Any, f_input: dict, q_input: dict, inputs: list[np.ndarray]
              ) -> Iterator[tuple[Callable[[int], np.ndarray], Callable[[int], np.ndarray]]]:
    for x in inputs:
        fp32.set_tensor(f_input["index"], x)
        int8.set_tensor(q_input["index"], harness.quantize(x, q_input))
        fp32.invoke()
        int8.invoke()
        yield fp32.get_tensor, int8.get_tensor


def _run_there(device: DeviceTensors, fp32_path: Path, int8_path: Path, inputs: list[np.ndarray],
               pairs: list) -> Iterator[tuple[Callable[[int], np.ndarray], Callable[[int], np.ndarray]]]:
    stacked = np.stack(inputs)
    f_values = device(fp32_path, sorted({entry[1] for entry in pairs}), stacked)
    q_values = device(int8_path, sorted({entry[2] for entry in pairs}), stacked)
    for k in range(len(inputs)):
        yield (lambda i, k=k: f_values[i][k]), (lambda i, k=k: q_values[i][k])


def tflite_layer_errors(fp32_path: Path, int8_path: Path, images: Iterable[np.ndarray], equalized: bool = False,
                        on_image: Callable[[], None] = lambda: None,
                        device: DeviceTensors | None = None) -> tuple[list[LayerErrors], int]:
    """The accumulated error of each quantized op of `int8_path` against `fp32_path` over `images` (NCHW,
    batch 1 each); `equalized`: the export rescaled convolution pairs, which the FP32 file did not. `device`: the
    files run there (their tensors read back) instead of here. Returns the layers in execution order and the
    count of quantized ops with no FP32 twin."""
    fp32, int8 = _open(fp32_path), _open(int8_path)
    f_tensors = {t["index"]: t for t in fp32.get_tensor_details()}
    q_tensors = {t["index"]: t for t in int8.get_tensor_details()}
    f_ops = [op for op in _layer_ops(fp32, f_tensors)]
    q_ops = [op for op in _layer_ops(int8, q_tensors)
             if np.dtype(q_tensors[int(op["outputs"][0])]["dtype"]) in (np.int8, np.uint8, np.int16)]
    if not q_ops:
        raise EdgekitError(f"{int8_path} has no quantized layers to report on: give an INT8 file "
                           "(edgekit export ... --int8 writes model_int8.tflite).")
    by_kind: dict[str, list[dict]] = {}
    for op in f_ops:
        by_kind.setdefault(op["op_name"], []).append(op)
    seen: dict[str, int] = {}
    ops_by_output = {int(t): op for op in int8._get_ops_details() for t in op["outputs"]}  # noqa: SLF001
    gains: dict[int, np.ndarray | None] = {}
    unnamed: set[int] = set()
    pairs: list[tuple[LayerErrors, int, int, dict, np.ndarray | None]] = []
    unmatched = 0
    for op in q_ops:
        k = seen.get(op["op_name"], 0)
        seen[op["op_name"]] = k + 1
        twins = by_kind.get(op["op_name"], [])
        out = q_tensors[int(op["outputs"][0])]
        if k >= len(twins) or list(f_tensors[int(twins[k]["outputs"][0])]["shape"]) != list(out["shape"]):
            unmatched += 1
            continue
        layer = LayerErrors(name=_name(op, q_tensors), op=op["op_name"], node=f"op {op['index']}",
                            index=len(pairs))
        if not layer.name:
            unnamed.add(layer.index)
        scale, zero_point = out["quantization"]
        layer.activation_range = representable(scale, zero_point, np.dtype(out["dtype"])) if scale else None
        weights = _weights(int8, op, q_tensors)
        layer.weight_spread = weight_spread(weights) if weights is not None else None
        theirs = _weights(fp32, twins[k], f_tensors)
        gain = channel_gain(weights, theirs, _input_gain(op, ops_by_output, gains)) \
            if equalized and weights is not None and theirs is not None else None
        gains[int(out["index"])] = gain
        pairs.append((layer, int(twins[k]["outputs"][0]), int(out["index"]), out, gain))

    name_unnamed([entry[0] for entry in pairs], unnamed)
    f_input, q_input = fp32.get_input_details()[0], int8.get_input_details()[0]
    inputs = []
    for image in images:
        image = image[None] if image.ndim == 3 else image
        if list(f_input["shape"][1:]) != list(image.shape[1:]):  # a channels-last file (--nhwc)
            image = image.transpose(0, 2, 3, 1)
        inputs.append(np.ascontiguousarray(image, dtype=np.float32))
    if device is None:
        values = _run_here(fp32, int8, f_input, q_input, inputs)
    else:
        values = _run_there(device, fp32_path, int8_path, inputs, pairs)
    for get_fp32, get_int8 in values:
        for layer, reference, quantized, detail, gain in pairs:
            expected = get_fp32(reference) * (gain if gain is not None else 1.0)  # channels last
            layer.accumulated.add(expected, harness.dequantize(get_int8(quantized), detail),
                                  layer.activation_range, channels_last=True)
        on_image()
    # A converter may fuse a neighbour into one file's op and not the other's (the FP32 file folds hard-sigmoid's
    # +3 into the convolution before it): the "twin" then holds another value, almost all outside the range the
    # INT8 tensor represents. Such a pair is not compared; it counts as one without a twin.
    layers = [entry[0] for entry in pairs]
    kept = [layer for layer in layers if layer.accumulated.clipped_share <= NOT_A_TWIN]
    return kept, unmatched + len(layers) - len(kept)
