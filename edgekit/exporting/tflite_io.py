"""Float input/output for a full-integer TFLite model: one QUANTIZE at the input, one DEQUANTIZE at the output.

litert-torch makes a PT2E graph's model inputs and outputs int8 (what `--int8-io` asks for). Without it, users
feed float images as with the FP32 model, so the float edges are added here by editing the flatbuffer: the
int8 tensors keep their scale and zero point and become internal, the new float tensors take their place in
the subgraph and the signature.
"""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

BuiltinOperator = schema.BuiltinOperator
TensorType = schema.TensorType


def _opcode_index(model: schema.ModelT, builtin: int) -> int:
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _float_twin(model: schema.ModelT, subgraph: schema.SubGraphT, index: int) -> int:
    """Append a float32 tensor shaped like tensor `index`, give it that tensor's name, return its index."""
    int8 = subgraph.tensors[index]
    twin = schema.TensorT()
    twin.shape = int8.shape
    twin.shapeSignature = int8.shapeSignature
    twin.type = TensorType.FLOAT32
    twin.name = int8.name
    int8.name = (int8.name or b"") + b"_int8" if isinstance(int8.name, bytes) else f"{int8.name}_int8"
    model.buffers.append(schema.BufferT())
    twin.buffer = len(model.buffers) - 1
    subgraph.tensors.append(twin)
    return len(subgraph.tensors) - 1


def _op(opcode: int, inputs: list[int], outputs: list[int]) -> schema.OperatorT:
    op = schema.OperatorT()
    op.opcodeIndex = opcode
    op.inputs = inputs
    op.outputs = outputs
    return op


def add_float_io(model_bytes: bytes) -> bytes:
    """Return the model with float32 inputs and outputs around its int8 ones (others are left alone)."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    renamed: dict[int, int] = {}
    for subgraph in model.subgraphs[:1]:
        quantize = _opcode_index(model, BuiltinOperator.QUANTIZE)
        dequantize = _opcode_index(model, BuiltinOperator.DEQUANTIZE)
        for position, index in enumerate(list(subgraph.inputs)):
            if subgraph.tensors[index].type != TensorType.INT8:
                continue
            twin = _float_twin(model, subgraph, index)
            subgraph.operators.insert(0, _op(quantize, [twin], [index]))
            subgraph.inputs[position] = renamed[index] = twin
        for position, index in enumerate(list(subgraph.outputs)):
            if subgraph.tensors[index].type != TensorType.INT8:
                continue
            twin = _float_twin(model, subgraph, index)
            subgraph.operators.append(_op(dequantize, [index], [twin]))
            subgraph.outputs[position] = renamed[index] = twin
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex != 0:
            continue
        for entry in list(signature.inputs or []) + list(signature.outputs or []):
            entry.tensorIndex = renamed.get(entry.tensorIndex, entry.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
