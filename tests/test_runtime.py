"""The runtime package: one format table, one quantize/dequantize, host runners that wrap the device harness."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import onnx
import pytest
from ai_edge_litert import schema_py_generated as schema
from onnx import TensorProto, helper

from edgekit.core.errors import EdgekitError
from edgekit.runtime import harness
from edgekit.runtime.formats import (
    DEPLOY_ORDER,
    FORMATS,
    INT8_NAMES,
    for_runtime,
    format_of,
    is_model_file,
    runtime_for,
)
from edgekit.runtime.runners import OnnxRunner, TFLiteRunner, dequantize, file_runner, quantize

# --- the format table -----------------------------------------------------------------------------------------------


def test_format_of_knows_each_suffix_in_any_case():
    assert format_of(Path("a/model_int8.onnx")) is FORMATS["onnx"]
    assert format_of(Path("MODEL.TFLITE")) is FORMATS["tflite"]
    assert runtime_for(Path("m.onnx")) == "onnxruntime" and runtime_for(Path("m.tflite")) == "tflite"
    assert for_runtime("tflite").suffix == ".tflite" and for_runtime("onnxruntime").name == "onnx"
    assert is_model_file(Path("x.Onnx")) and not is_model_file(Path("x.pt"))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_exports_runs_and_describes_itself_through_its_row(fmt, tmp_path):
    """The table's behaviour is all a caller needs: export a torch model, run the file, describe it."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 5)).eval()
    row = FORMATS[fmt]
    path = tmp_path / f"m{row.suffix}"
    example = torch.zeros(1, 3, 16, 16)
    row.behaviour("exporter")(model, example, path, nhwc=False, dynamic_batch=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    runner = row.behaviour("runner")(path, threads=1, layout="nchw")
    np.testing.assert_allclose(runner.predict(x), model(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    info = row.behaviour("inspector")(path)
    assert info["inputs"][0]["shape"] == [1, 3, 16, 16] and info["outputs"][0]["shape"] == [1, 5]
    assert row.int8_name == f"{fmt}_int8" and row.int8_name in DEPLOY_ORDER and fmt in DEPLOY_ORDER

    # INT8: the row's writer turns edgekit's quantized graph into a file whose runner agrees with that graph
    from edgekit.quantization.ptq import QuantSettings, quantize_ptq
    from edgekit.runtime.parity import compare

    quantized = quantize_ptq(model, np.random.default_rng(1).random((16, 3, 16, 16), dtype=np.float32),
                             QuantSettings())
    written = row.behaviour("int8_writer")(quantized, (3, 16, 16), tmp_path / f"m_int8{row.suffix}")
    expected = quantized.graph(torch.from_numpy(x)).detach().numpy()
    assert compare(expected, written.runner.predict(x)).min_cosine > 0.99
    assert written.graph["histogram"]


def test_the_deploy_order_puts_int8_first_and_follows_each_rows_rank():
    assert DEPLOY_ORDER == ("tflite_int8", "onnx_int8", "tflite", "onnx")
    assert [k for k in DEPLOY_ORDER if k in INT8_NAMES] == [f.int8_name for f in sorted(
        FORMATS.values(), key=lambda f: f.deploy_rank)]


@pytest.mark.parametrize("name", ["model.bin", "model", "model.onnx.bak"])
def test_an_unknown_suffix_is_one_clear_error(name):
    with pytest.raises(EdgekitError, match=r"unknown model format .*: give a \.onnx or \.tflite file"):
        format_of(Path(name))
    with pytest.raises(EdgekitError, match=r"give a \.pt, \.onnx or \.tflite file"):
        format_of(Path(name), also=(".pt",))
    with pytest.raises(EdgekitError, match="unknown runtime 'tvm': use onnxruntime or tflite"):
        for_runtime("tvm")


def test_the_harness_copy_of_the_table_agrees():
    """The harness can't import edgekit, so it keeps its own copy: the same suffixes, runtimes and packages."""
    assert {f.suffix: f.runtime for f in FORMATS.values()} == harness.SUFFIX_RUNTIME
    assert {rt: tuple(p for p, _ in packages) for rt, packages in harness.RUNTIME_PACKAGES.items()} == {
        f.runtime: f.packages for f in FORMATS.values()}


def test_the_harness_imports_nothing_but_numpy_and_runtimes():
    tree = ast.parse(Path(harness.__file__).read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    runtimes = {module for packages in harness.RUNTIME_PACKAGES.values() for _, module in packages}
    assert roots - runtimes - set(sys.stdlib_module_names) == {"numpy"}


def test_the_harness_runs_as_a_plain_script(tmp_path):
    copy = tmp_path / "harness.py"  # as pushed to a device: one file, outside any package
    copy.write_bytes(Path(harness.__file__).read_bytes())
    done = subprocess.run([sys.executable, "-I", str(copy), "--probe"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"runtimes"' in done.stdout
    onnx_path = _onnx_file(tmp_path / "m.onnx", qdq=True)
    tflite_path = _tflite_file(tmp_path / "M.TFLITE", schema.BuiltinOperator.DEQUANTIZE,
                               (schema.TensorType.INT8, schema.TensorType.FLOAT32), ((0.1, 0), None))
    np.save(tmp_path / "x.npy", np.full((1, 3, 4, 4), 0.75, np.float32))
    np.save(tmp_path / "y.npy", np.full((1, 4, 4, 3), 0.26, np.float32))
    done = subprocess.run([sys.executable, "-I", str(copy), "--model", str(onnx_path), "--input", "x.npy",
                           "--model", str(tflite_path), "--input", "y.npy", "--runs", "2", "--min-seconds", "0",
                           "--warmup-seconds", "0"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert [r["runtime"] for r in results] == ["onnxruntime", "ai-edge-litert"]
    assert results[0]["output"][0] == 1.0 and results[1]["output"][0] == pytest.approx(0.3)  # 0.75 -> 2 steps (even)
    # In fresh processes, one after another, the copy runs itself: every run pooled, each process's median kept;
    # the first process also returns the outputs of the check inputs (stacked on axis 0).
    np.save(tmp_path / "cx.npy", np.stack([np.full((1, 3, 4, 4), v, np.float32) for v in (0.75, 0.25)]))
    np.save(tmp_path / "cy.npy", np.stack([np.full((1, 4, 4, 3), v, np.float32) for v in (0.26, 0.0)]))
    done = subprocess.run([sys.executable, "-I", str(copy), "--model", str(onnx_path), "--input", "x.npy",
                           "--model", str(tflite_path), "--input", "y.npy", "--runs", "6", "--rounds", "3",
                           "--min-seconds", "0", "--warmup-seconds", "0", "--processes", "3",
                           "--check-input", "cx.npy", "--check-input", "cy.npy"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["processes"] == 3
    for r, single in zip(report["results"], results, strict=True):
        assert r["output"] == single["output"] and len(r["process_p50_ms"]) == 3
        assert r["steady"]["count"] == 6 and len(r["round_p50_ms"]) == 3  # 2 runs in 1 round per process
        assert min(r["process_p50_ms"]) <= r["steady"]["p50_ms"] <= max(r["process_p50_ms"])
        assert "times_ms" not in r
        assert len(r["check_outputs"]) == 2 and r["check_outputs"][0] == single["output"]
        assert r["check_outputs"][1] != r["check_outputs"][0]  # each input ran on its own


# --- one quantize/dequantize ----------------------------------------------------------------------------------------


def test_the_runners_quantize_is_the_harness_one():
    assert quantize is harness.quantize and dequantize is harness.dequantize


@pytest.mark.parametrize(("dtype", "zero_point"), [(np.int8, -3), (np.uint8, 128), (np.int16, 0)])
def test_quantize_rounds_half_to_even_and_clips(dtype, zero_point):
    detail = {"dtype": dtype, "quantization": (0.5, zero_point)}
    info = np.iinfo(dtype)
    x = np.array([0.25, 0.75, 1.25, -0.25, -0.75, 0.3, 1e9, -1e9], np.float32)  # steps 0.5, 1.5, 2.5, ...
    q = quantize(x, detail)
    assert q.dtype == dtype
    expected = np.clip(np.array([0, 2, 2, 0, -2, 1, 10**9, -(10**9)]) + zero_point, info.min, info.max)
    np.testing.assert_array_equal(q.astype(np.int64), expected)
    assert q.max() == info.max and q.min() == info.min  # saturates, never wraps
    y = dequantize(q, detail)
    assert y.dtype == np.float32
    inside = np.abs(x) < 10
    assert np.abs(y[inside] - x[inside]).max() <= 0.25 + 1e-6  # half a step


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float_tensors_are_cast_not_quantized(dtype):
    x = np.array([0.1, -2.5], np.float32)
    detail = {"dtype": dtype, "quantization": (0.0, 0)}
    assert quantize(x, detail).dtype == dtype
    assert dequantize(quantize(x, detail), detail).dtype == np.float32
    np.testing.assert_allclose(dequantize(quantize(x, detail), detail), x, rtol=1e-3)


def test_an_integer_tensor_without_a_scale_keeps_its_values():
    detail = {"dtype": np.int32, "quantization": (0.0, 0)}
    np.testing.assert_array_equal(quantize(np.array([3, 7]), detail), [3, 7])
    np.testing.assert_array_equal(dequantize(np.array([3, 7], np.int32), detail), [3.0, 7.0])


# --- runners wrap the harness ----------------------------------------------------------------------------------------


def _tflite_file(path: Path, op: int, types: tuple[int, int], quant: tuple, shape=(1, 4, 4, 3)) -> Path:
    """A one-op .tflite (QUANTIZE or DEQUANTIZE), built from the schema: no converter needed."""
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = op
    code.version = 1
    tensors = []
    for i, (kind, q) in enumerate(zip(types, quant, strict=True)):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = np.array(shape, np.int32), kind, i + 1, f"t{i}"
        if q is not None:
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [q[0]], [q[1]]
        tensors.append(t)
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, [0], [1]
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = tensors, [0], [1], [operator]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [graph]
    model.buffers = [schema.BufferT() for _ in range(3)]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


TFLITE_INT = {np.int8: (schema.TensorType.INT8, 0.05, -3), np.uint8: (schema.TensorType.UINT8, 0.05, 128),
              np.int16: (schema.TensorType.INT16, 0.001, 0)}


@pytest.mark.parametrize("dtype", list(TFLITE_INT))
def test_tflite_runner_and_harness_agree_on_int_io(tmp_path, dtype):
    kind, scale, zero_point = TFLITE_INT[dtype]
    rng = np.random.default_rng(0)
    # values a third of a step off the grid (no ties, where TFLite's kernel and numpy may round apart), and some
    # beyond the range, to be clipped
    steps = rng.integers(-300, 300, (2, 3, 4, 4)) + rng.choice([-0.3, 0.3], (2, 3, 4, 4))
    batch = (steps * scale).astype(np.float32)
    # int input -> DEQUANTIZE: the file sees the harness's quantize; float input -> QUANTIZE: TFLite's
    # quantization read back through the harness's dequantize
    into = _tflite_file(tmp_path / "in.tflite", schema.BuiltinOperator.DEQUANTIZE,
                        (kind, schema.TensorType.FLOAT32), ((scale, zero_point), None))
    out_of = _tflite_file(tmp_path / "out.tflite", schema.BuiltinOperator.QUANTIZE,
                          (schema.TensorType.FLOAT32, kind), (None, (scale, zero_point)))
    detail = {"dtype": dtype, "quantization": (scale, zero_point)}
    expected = np.stack([dequantize(quantize(x.transpose(1, 2, 0), detail), detail) for x in batch])
    for path in (into, out_of):
        runner = TFLiteRunner(path, layout="nhwc")
        assert runner.quantized is (dtype is not np.int16)  # 8-bit tensors mark an INT8 graph
        got = runner.predict(batch)
        np.testing.assert_array_equal(got, expected)
        model = harness.TFLiteModel(str(path), 1)
        model.set_input(batch[:1].transpose(0, 2, 3, 1))
        model.invoke()
        np.testing.assert_array_equal(model.output_value(), got[:1])
    assert runner.input_shape == [1, 4, 4, 3]


def _onnx_file(path: Path, qdq: bool) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    if qdq:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.5]),
                 helper.make_tensor("z", TensorProto.INT8, [], [-3])]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    else:
        inits, nodes = [], [helper.make_node("Relu", ["x"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_onnx_runner_matches_the_harness_and_ort_rounds_as_the_harness_does(tmp_path):
    # exact ties (k + 0.5 steps) included: ONNX's QuantizeLinear rounds them half to even, as harness.quantize
    batch = (np.arange(2 * 48).reshape(2, 3, 4, 4) * 0.25 - 12).astype(np.float32)
    runner = OnnxRunner(_onnx_file(tmp_path / "qdq.onnx", qdq=True))
    assert runner.fixed_batch and runner.quantized and runner.input_shape == [1, 3, 4, 4]
    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    np.testing.assert_array_equal(runner.predict(batch), dequantize(quantize(batch, detail), detail))
    relu = OnnxRunner(_onnx_file(tmp_path / "relu.onnx", qdq=False))
    assert not relu.quantized
    model = harness.OnnxModel(str(tmp_path / "relu.onnx"), 1)
    model.set_input(batch[1:])
    model.invoke()
    np.testing.assert_array_equal(relu.predict(batch)[1:], model.output_value())


def test_file_runner_picks_by_format_and_refuses_bad_files(tmp_path):
    assert isinstance(file_runner(_onnx_file(tmp_path / "m.onnx", qdq=False)), OnnxRunner)
    tflite = _tflite_file(tmp_path / "m.tflite", schema.BuiltinOperator.DEQUANTIZE,
                          (schema.TensorType.INT8, schema.TensorType.FLOAT32), ((0.1, 0), None))
    assert isinstance(file_runner(tflite), TFLiteRunner)
    with pytest.raises(EdgekitError, match="unknown model format"):
        file_runner(tmp_path / "m.bin")
    for name, data in (("bad.onnx", b"\x00not onnx"), ("bad.tflite", b"TFL3 but truncated")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(EdgekitError, match="cannot be loaded .*: it is corrupt or not a model"):
            file_runner(tmp_path / name)


def test_a_checkpoint_evaluates_under_the_thread_governor(digits_mobilenet_v2):
    """edgekit eval of a checkpoint runs torch as training does: --threads as given, else the cores other
    processes leave free (re-checked as it goes)."""
    import torch

    from edgekit.runtime.open import open_model

    before = torch.get_num_threads()
    try:
        pinned = open_model(digits_mobilenet_v2, threads=1)
        batch = np.zeros((2, *pinned.spec.input_shape), np.float32)
        assert pinned.runner.predict(batch).shape == (2, pinned.spec.num_classes)
        assert torch.get_num_threads() == 1 and pinned.runner.governor.used == [1]
        pinned.runner.close()
        assert torch.get_num_threads() == before, "the caller's thread count is given back"
        torch.set_num_threads(before + 3)  # a count the governor would not choose on this machine
        governed = open_model(digits_mobilenet_v2).runner
        assert governed.governor.requested is None and governed.governor.threads <= governed.governor.budget
        assert torch.get_num_threads() == governed.governor.threads != before + 3  # the governor's own count
        assert governed.predict(batch).shape == (2, pinned.spec.num_classes)
        governed.close()
        assert torch.get_num_threads() == before + 3
    finally:
        torch.set_num_threads(before)


X86_NO_VNNI = "processor : 0\nflags : fpu sse2 avx avx2 fma f16c\n"
X86_VNNI = "flags : fpu avx2 fma avx512f avx512_vnni\n"
PI4 = "processor : 0\nFeatures : fp asimd evtstrm crc32 cpuid\nCPU part : 0xd08\n"  # Cortex-A72
PI5 = "Features : fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"


@pytest.mark.parametrize(("cpuinfo", "flags", "dot"), [
    (X86_NO_VNNI, ["avx2", "fma", "f16c"], False),
    (X86_VNNI, ["avx2", "fma", "avx512f", "avx512_vnni"], True),
    (PI4, ["asimd"], False),
    (PI5, ["asimd", "asimdhp", "asimddp"], True),
    ("", [], None),
], ids=["x86-avx2", "x86-vnni", "cortex-a72", "cortex-a76", "unreadable"])
def test_the_harness_names_the_cpu_features_int8_kernels_use(cpuinfo, flags, dot):
    from edgekit.runtime.harness import cpu_features

    assert cpu_features(cpuinfo) == {"flags": flags, "int8_dot_product": dot}


def test_an_int8_slowdown_on_a_cpu_without_dot_products_is_called_the_cpus():
    from edgekit.pipeline.run import speedup_caveat

    row = {"device": "local", "runtime": "tflite", "threads": 1, "format": "tflite_int8", "speedup": 0.89}
    assert "INT8 below 1x on local: its CPU has no 8-bit dot products" in speedup_caveat(
        [{**row, "int8_dot_product": False}])
    assert speedup_caveat([{**row, "int8_dot_product": True}]) is None  # a real slowdown is not explained away
    assert speedup_caveat([{**row, "int8_dot_product": None}]) is None  # unknown CPU: nothing claimed
    assert speedup_caveat([{**row, "speedup": 1.9, "int8_dot_product": False}]) is None
