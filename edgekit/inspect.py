"""What is inside an .onnx or .tflite file: inputs, outputs, quantization, op histogram, size."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.runtime.formats import format_of
from edgekit.runtime.harness import EXACT_INT8_METADATA

EXACT_INT8_WHEN = ("x86 CPUs without VNNI (no avx512_vnni or avx_vnni flag), where ONNX Runtime's default U8S8 "
                   "kernels saturate int8 products and the file computes a worse network")


def inspect_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EdgekitError(f"{path} does not exist: give an .onnx or .tflite file.")
    fmt = format_of(path)
    info = fmt.behaviour("inspector")(path)
    return {"file": str(path), "format": fmt.name, "bytes": path.stat().st_size, **info}


def inspect_onnx(path: Path) -> dict[str, Any]:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types for a damaged file
        raise EdgekitError(f"{path} is not a valid ONNX model ({type(exc).__name__}): re-export it.") from None
    elem = onnx.TensorProto.DataType.Name

    def tensor(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": elem(t.elem_type).lower()}

    initializers = {i.name for i in model.graph.initializer}
    stated = {p.key: p.value for p in model.metadata_props}
    needs = {}
    if EXACT_INT8_METADATA in stated:  # an edgekit INT8 file: what a session needs where int8 products saturate
        with contextlib.suppress(ValueError):
            needs = {"when": EXACT_INT8_WHEN, "session_config": json.loads(stated[EXACT_INT8_METADATA])}
    return {
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "inputs": [tensor(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [tensor(v) for v in model.graph.output],
        "ops": dict(Counter(n.op_type for n in model.graph.node).most_common()),
        **({"onnxruntime_needs": needs} if needs else {}),
    }


def inspect_tflite(path: Path) -> dict[str, Any]:
    from edgekit.runtime.runners import tflite_interpreter

    try:
        interpreter = tflite_interpreter(path, delegates=False)
    except (ValueError, RuntimeError) as exc:
        raise EdgekitError(f"{path} is not a valid TFLite model ({str(exc).splitlines()[0]}): re-export it.") from None

    def tensor(d: dict[str, Any]) -> dict[str, Any]:
        scale, zero_point = d.get("quantization", (0.0, 0))
        out = {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": d["dtype"].__name__}
        if scale:
            out["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
        return out

    details = interpreter._get_ops_details()
    ops = Counter(op["op_name"] for op in details)
    interpreter.allocate_tensors()
    layout = 0  # TRANSPOSEs that only move channels between NCHW and NHWC (channel shuffles are not counted)
    for op in details:
        if op["op_name"] == "TRANSPOSE":
            with contextlib.suppress(ValueError):
                perm = [int(v) for v in interpreter.get_tensor(op["inputs"][1])]
                layout += perm in ([0, 2, 3, 1], [0, 3, 1, 2])
    from edgekit.runtime.tflite_metadata import read_metadata

    try:
        metadata = read_metadata(path)
    except Exception:  # noqa: BLE001 - damaged metadata leaves the model itself usable; say there is none
        metadata = None
    return {
        "layout_transposes": layout,
        "metadata": metadata.to_dict() if metadata is not None else None,
        "inputs": [tensor(d) for d in interpreter.get_input_details()],
        "outputs": [tensor(d) for d in interpreter.get_output_details()],
        "ops": dict(ops.most_common()),
    }
