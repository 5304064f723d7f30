"""edgekit bench on this machine, device profiles, and the benchmark_model parser (on text in the tool's formats)."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_edgekit_without_torch

from edgekit.benchmark import benchmark_model
from edgekit.benchmark.host import result_warnings, vs_this_machine
from edgekit.core.errors import EdgekitError
from edgekit.devices.profiles import find_profiles, load_profile, read_profile
from edgekit.runtime import harness

REPO = Path(__file__).resolve().parents[1]
WINDOWS = ["--runs", "5", "--min-seconds", "0", "--warmup-seconds", "0"]
FAST = [*WINDOWS, "--processes", "2"]


@pytest.fixture
def artifact(digits_artifact: Path) -> Path:
    return digits_artifact


# --- the harness --------------------------------------------------------------------------------------------------


def test_harness_meets_both_minimums_and_interleaves(artifact: Path, tmp_path: Path):
    x = np.zeros((1, 1, 32, 32), np.float32)
    np.save(tmp_path / "x.npy", x)
    configs = [{"model": str(artifact / name), "input": str(tmp_path / "x.npy"), "runtime": "auto", "threads": 1}
               for name in ("model_int8.tflite", "model_int8.onnx")]
    results = harness.measure(configs, warmup_runs=3, warmup_seconds=0.0, runs=7, min_seconds=0.3, rounds=2,
                              keep_times=True)
    for r in results:
        s = r["steady"]
        assert len(r["times_ms"]) == s["count"] and min(r["times_ms"]) == s["min_ms"]
        assert r["runs_per_round"] == 4 and len(r["times_ms"]) % 4 == 0
        assert s["count"] >= 7 and s["mean_ms"] * s["count"] >= 300
        assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert r["warmup"]["count"] >= 3 and r["load_ms"] > 0 and r["first_ms"] > 0
    # Rounds of ceil(7 / 2) = 4 runs: each configuration's count is a multiple of 4.
    assert all(r["steady"]["count"] % 4 == 0 for r in results)
    for r in results:  # one median per round, of the wall clock's times
        per = r["runs_per_round"]
        assert r["clock"] == "wall" and len(r["round_p50_ms"]) == r["steady"]["count"] // per
        times = r["times_ms"]
        assert r["round_p50_ms"] == [float(np.median(times[i:i + per])) for i in range(0, len(times), per)]


def test_stable_clock_is_the_threads_cpu_time_at_one_thread(artifact: Path, tmp_path: Path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 32, 32), np.float32))
    configs = [{"model": str(artifact / "model.onnx"), "input": str(tmp_path / "x.npy"), "runtime": "auto",
                "threads": t} for t in (1, 2)]
    one, two = harness.measure(configs, warmup_runs=3, warmup_seconds=0.0, runs=20, min_seconds=0.0, rounds=4,
                               keep_times=True, clock="cpu")
    # At one thread the model runs on the calling thread: its CPU time is at most the wall time of each run,
    # and the figures are of it. With a thread pool, CPU time is not a latency: the wall clock stays.
    assert one["clock"] == "cpu" and two["clock"] == "wall"
    assert all(c <= w + 0.05 for c, w in zip(one["cpu_times_ms"], one["times_ms"], strict=True))
    assert one["steady"]["min_ms"] == min(one["cpu_times_ms"]) and two["steady"]["min_ms"] == min(two["times_ms"])
    assert sum(one["cpu_times_ms"]) > 0.5 * sum(one["times_ms"])  # it did count the model's work


def test_xnnpack_delegation_is_read_from_the_execution_plan(artifact: Path):
    with_xnnpack = harness.TFLiteModel(str(artifact / "model_int8.tflite"), 1)
    without = harness.TFLiteModel(str(artifact / "model_int8.tflite"), 1, xnnpack=False)
    d = with_xnnpack.delegation
    assert d["partitions"] == 1 and d["delegated"] == d["nodes"] > 20 and d["left_on_cpu"] == []
    assert without.delegation["delegated"] == 0


def test_harness_probe_reports_this_machine():
    info = harness.probe()
    assert info["arch"] and info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "ai-edge-litert" in info["runtimes"] and "onnxruntime" in info["runtimes"]


# --- edgekit bench locally ----------------------------------------------------------------------------------------


def test_bench_local_records_every_file_in_the_manifest(artifact: Path, tmp_path: Path, edgekit_cli):
    work = tmp_path / "a"
    shutil.copytree(artifact, work)
    before = json.loads((work / "manifest.json").read_text())
    done = edgekit_cli("bench", str(work), "--threads", "1,2", *WINDOWS, "--json")  # 6 processes
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    results = runs[0]["results"]
    assert {(r["file"], r["threads"]) for r in results} == {
        (f, t) for f in ("model.onnx", "model.tflite", "model_int8.onnx", "model_int8.tflite") for t in (1, 2)}
    for r in results:
        # the outputs of 8 digits validation images against this machine's, once per file (at its first thread
        # count); its other thread counts compare their timed input
        check, compared = r["vs_this_machine"], 8 if r["threads"] == 1 else 1
        assert check["inputs"] == compared and check["matches"] and check["argmax_agree"] == compared
        assert r["steady"]["count"] >= 5
        rep = r["repeat"]  # 6 processes: an interval of 96.9% from the slowest to the fastest process's median
        assert rep["unit"] == "process" and rep["count"] == 6 and len(rep["p50s_ms"]) == 6
        assert rep["p50_ci_ms"] == [min(rep["p50s_ms"]), max(rep["p50s_ms"])]
        assert rep["ci_level"] == 0.9688 and rep["repeatable"] == (rep["noise_pct"] <= 5)
        assert r["steady"]["count"] == 6  # --runs 5 over 6 processes: one run each
    after = json.loads((work / "manifest.json").read_text())
    assert {k: v for k, v in after.items() if k != "bench"} == before
    assert len(after["bench"]) == 8
    hashes = {f["file"]: f["sha256"] for f in before["files"].values()}
    for entry in after["bench"]:
        assert entry["device"]["name"] == "local" and entry["sha256"] == hashes[entry["file"]]
    # A second run appends; nothing earlier is lost. --stable times it by the thread's CPU time, and says so.
    done = edgekit_cli("bench", str(work / "model_int8.tflite"), *FAST, "--stable")
    assert done.returncode == 0, done.stderr
    assert "latency (ms)" in done.stdout and "model_int8.tflite" in done.stdout and "p50 CI" in done.stdout
    assert "1 (cpu)" in done.stdout
    bench = json.loads((work / "manifest.json").read_text())["bench"]
    assert len(bench) == 9 and bench[-1]["clock"] == "cpu" and bench[-1]["settings"]["clock"] == "cpu"
    assert all(e["settings"]["clock"] == "wall" and e["clock"] == "wall" for e in bench[:8])


def test_a_device_that_computes_something_else_is_caught_on_its_check_inputs():
    references = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], np.float32)
    same = vs_this_machine([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], references, step=0.0)
    assert same["matches"] and same["argmax_agree"] == 2 and same["inputs"] == 2
    # within one INT8 output step of the host: still the same computation
    assert vs_this_machine([[0.1, 0.9, 0.0], [0.8, 0.1, 0.104]], references, step=0.004)["matches"]
    other = vs_this_machine([[0.1, 0.9, 0.0], [0.1, 0.8, 0.1]], references, step=0.004)
    assert not other["matches"] and other["argmax_agree"] == 1 and not other["argmax_matches"]
    result = {"runtime_kind": "onnxruntime", "steady": {"p50_ms": 1.0}, "vs_this_machine": other}
    warning = " ".join(result_warnings(result))
    assert "differ from this machine's on the same 2 inputs" in warning and "same on 1 of 2" in warning


# A lean install, without torch: the interpreter is told that torch does not exist, as it would be without the package.


def test_bench_of_exported_files_needs_no_torch(artifact: Path, tmp_path: Path):
    """An edgekit artifact (its manifest names a dataset) and a bare .onnx with no manifest, benchmarked where torch
    is not installed."""
    bare = tmp_path / "bare" / "model.onnx"
    bare.parent.mkdir()
    shutil.copy(artifact / "model.onnx", bare)
    for target in (artifact, bare):
        done = run_edgekit_without_torch("bench", str(target), "--runtime", "onnxruntime", *FAST, "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "torch imported: False" in done.stderr
        results = json.loads(done.stdout)["runs"][0]["results"]
        assert results and all(r["steady"]["p50_ms"] > 0 for r in results)


def test_bench_op_profile_sums_onnx_nodes_by_type(artifact: Path, edgekit_cli, tmp_path: Path):
    onnx = tmp_path / "m.onnx"
    shutil.copyfile(artifact / "model_int8.onnx", onnx)
    done = edgekit_cli("bench", str(onnx), "--op-profile", *FAST, "--json")
    assert done.returncode == 0, done.stderr
    profile = json.loads(done.stdout)["runs"][0]["results"][0]["op_profile"]
    assert next(iter(profile["by_op_type_ms"])) == "QLinearConv"
    assert profile["top_nodes"] and all(n["ms"] >= 0 for n in profile["top_nodes"])


@pytest.mark.parametrize("args, message", [
    (["missing.tflite"], "does not exist"),
    (["{artifact}", "--device", "nowhere"], "unknown device 'nowhere'"),
    (["{artifact}", "--threads", "0"], "--threads"),
    (["{artifact}", "--runtime", "tvm"], "--runtime"),
    (["{artifact}", "--cores", "zz"], "not a CPU mask"),
    (["{artifact}", "--processes", "0"], "--processes 0: give 1 to 100"),
    (["{corrupt}"], "cannot be loaded"),
])
def test_bench_bad_input_is_one_line_exit_2_and_changes_nothing(artifact, tmp_path, edgekit_cli, args, message):
    corrupt = tmp_path / "c" / "model.tflite"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"TFL3 but truncated")
    manifest = (artifact / "manifest.json").read_bytes()
    argv = [a.format(artifact=artifact, corrupt=corrupt) for a in args]
    done = edgekit_cli("bench", *argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (artifact / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in corrupt.parent.iterdir()) == ["model.tflite"]


# --- device profiles ----------------------------------------------------------------------------------------------


def test_shipped_profiles_parse():
    found = find_profiles()
    for name in ("local", "rpi4", "rpi5", "pixel-7"):
        assert found[name].parent == REPO / "devices"
        profile = read_profile(found[name])
        assert profile.name == name
    assert load_profile("pixel-7").cores == "c0" and load_profile("rpi4").ssh.user == "pi"


@pytest.mark.parametrize("text, message", [
    ("transport: ssh\nssh: {host: pi}\nthread: 4\n", "unknown key thread"),
    ("transport: ssh\nssh: {host: pi, hostname: x}\n", "unknown key hostname in ssh"),
    ("transport: serial\n", "transport must be one of"),
    ("transport: ssh\n", "needs ssh: {host: NAME}"),
    ("transport: local\nthreads: [1, 0]\n", "threads must be"),
    ("transport: adb\ncores: xyz\n", "not a CPU mask"),
    ("transport: [\n", "not valid YAML at line"),
])
def test_bad_profiles_name_the_problem(tmp_path, text, message):
    path = tmp_path / "board.yaml"
    path.write_text(text)
    with pytest.raises(EdgekitError, match=message.replace("[", r"\[").replace("{", r"\{")):
        load_profile(str(path))


def test_user_profiles_come_first(tmp_path, monkeypatch):
    (tmp_path / "rpi4.yaml").write_text("transport: ssh\nssh: {host: my-pi}\n")
    monkeypatch.setenv("EDGEKIT_DEVICES", str(tmp_path))
    assert load_profile("rpi4").ssh.host == "my-pi"


# --- benchmark_model's output -------------------------------------------------------------------------------------

# The formats TFLite's benchmark_model prints (stderr with INFO: prefixes, or logcat), as seen in its releases.
OUTPUTS = Path(__file__).parent / "data" / "benchmark_model"
OUTPUT_WITH_OP_PROFILE = (OUTPUTS / "xnnpack_op_profile.txt").read_text()

OUTPUT_LOGCAT_WITH_PERCENTILES = (OUTPUTS / "logcat_percentiles.txt").read_text()

OUTPUT_OLD_MEMORY_LINE = (OUTPUTS / "old_memory_line.txt").read_text()


def test_benchmark_model_parse_with_op_profile():
    r = benchmark_model.parse(OUTPUT_WITH_OP_PROFILE)
    assert r["load_ms"] == pytest.approx(17.187) and r["first_ms"] == pytest.approx(31.802)
    assert r["warmup"] == {"count": 27, "mean_ms": pytest.approx(18.7313)}
    s = r["steady"]
    assert s["count"] == 55 and s["mean_ms"] == pytest.approx(18.2561) and s["std_ms"] == pytest.approx(0.981)
    assert (s["min_ms"], s["max_ms"]) == (pytest.approx(17.902), pytest.approx(25.110))
    assert r["memory_overall_mb"] == pytest.approx(46.0859) and r["memory_peak_mb"] == pytest.approx(51.2305)
    assert r["delegation"] == {"known": True, "delegated": 66, "nodes": 66, "delegate": "TfLiteXNNPackDelegate",
                               "partitions": 1}
    assert r["op_profile"]["by_op_type_ms"] == {"TfLiteXNNPackDelegate": 17.95, "QUANTIZE": 0.088}
    assert r["op_profile"]["top_nodes"][0] == {"node": "[StatefulPartitionedCall:0]:66",
                                               "op": "TfLiteXNNPackDelegate", "ms": 17.95}


def test_benchmark_model_parse_logcat_and_old_formats():
    r = benchmark_model.parse(OUTPUT_LOGCAT_WITH_PERCENTILES)
    assert r["steady"]["count"] == 25 and r["steady"]["p50_ms"] == pytest.approx(141.253)
    assert r["delegation"]["delegated"] == 64 and r["delegation"]["partitions"] == 2
    assert r["memory_init_mb"] == pytest.approx(54.2852)
    old = benchmark_model.parse(OUTPUT_OLD_MEMORY_LINE)
    assert old["memory_overall_mb"] == pytest.approx(138.809) and old["steady"]["p50_ms"] is None


def test_benchmark_model_failure_is_reported():
    with pytest.raises(benchmark_model.BenchmarkOutputError, match="no timing summary"):
        benchmark_model.parse("STARTING!\nERROR: Could not open 'm0.tflite'.\nAborted")


def test_benchmark_model_command_pins_cores():
    argv = benchmark_model.command("/d/benchmark_model", "/d/m0.tflite", 2, 1.0, 1, 50, 1.0, "c0", True)
    assert argv[:2] == ["taskset", "c0"] and "--num_threads=2" in argv and "--enable_op_profiling=true" in argv
