"""edgekit devices check / bench over real SSH and the real adb client, against an emulated aarch64 device that
tools/arm_device builds and starts (qemu user-mode, an arm64 Debian root, sshd and adbd on 127.0.0.1).

Emulated timings are meaningless: these tests check plumbing, results and outputs, never speed.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_edgekit

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / ".cache" / "arm-device" / "root"
WINDOWS = ["--runs", "3", "--min-seconds", "0", "--warmup-seconds", "0"]
FAST = [*WINDOWS, "--processes", "2"]  # two harness processes on the device, one after another
pytestmark = pytest.mark.slow


def _device_module():
    spec = importlib.util.spec_from_file_location("arm_device", REPO / "tools" / "arm_device" / "device.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: the emulated device must be built and tested there")
        pytest.skip("the emulated aarch64 device needs root (chroot, binfmt_misc, mounts)")
    subprocess.run(["bash", str(REPO / "tools/arm_device/build.sh"), str(ROOT)], check=True, timeout=900)
    module = _device_module()
    state = tmp_path_factory.mktemp("arm-state")
    started = module.start(ROOT, state)
    env = {"EDGEKIT_DEVICES": str(state / "devices"), "ANDROID_ADB_SERVER_PORT": str(started.adb_server_port)}
    yield started, state, env
    module.stop(state)
    assert not any(str(ROOT) in line for line in Path("/proc/self/mounts").read_text().splitlines())


@pytest.fixture
def artifact(digits_artifact: Path) -> Path:
    return digits_artifact


def _leftovers() -> list[str]:
    remote = list((ROOT / "tmp").glob("edgekit-bench.*"))
    adb_dir = ROOT / "data/local/tmp/edgekit"
    remote += list(adb_dir.glob("run.*")) if adb_dir.is_dir() else []
    return [str(p) for p in remote]


def _harness_processes() -> list[str]:
    """Benchmark runs alive on the emulated device (processes rooted in its tree: a local bench that another
    test process runs at the same time is not one)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "root")) == ROOT:
                args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if "harness.py --model" in args:
                    found.append(args)
        except OSError:
            continue
    return found


@pytest.mark.parametrize("name", ["emulated-ssh", "emulated-adb"])
def test_devices_check_probes_the_aarch64_device(device, name):
    _, _, env = device
    done = run_edgekit("devices", "check", name, "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["ok"] and checks["arch"]["detail"] == "aarch64"
    assert report["info"]["runtimes"].keys() >= {"ai-edge-litert", "onnxruntime"}
    assert "Raspberry Pi 4" in report["info"]["cpu_model"]
    assert report["info"]["cpu_features"].keys() == {"flags", "int8_dot_product"}  # whatever qemu shows of the CPU
    if name == "emulated-adb":
        assert checks["abi"]["detail"] == "arm64-v8a"
    assert _leftovers() == []


def test_bench_over_ssh_and_adb_matches_this_machine(device, artifact, tmp_path):
    _, _, env = device
    work = tmp_path / "mv2"
    shutil.copytree(artifact, work)
    done = run_edgekit("bench", str(work), "--device", "emulated-ssh,emulated-adb", *FAST, "--json", env=env)
    assert done.returncode == 0, done.stderr
    runs = {r["device"]: r for r in json.loads(done.stdout)["runs"]}
    assert runs.keys() == {"emulated-ssh", "emulated-adb"}
    for run in runs.values():
        assert run["info"]["arch"] == "aarch64"
        assert {r["file"] for r in run["results"]} == {"model.onnx", "model.tflite", "model_int8.onnx",
                                                       "model_int8.tflite"}
        for r in run["results"]:
            s = r["steady"]
            assert s["count"] >= 3 and 0 < s["min_ms"] <= s["p50_ms"] <= s["max_ms"] and r["load_ms"] > 0
            assert r["repeat"]["unit"] == "process" and len(r["repeat"]["p50s_ms"]) == 2  # two device processes
            # The aarch64 kernels compute what the x86 ones do, on a real digits sample.
            assert r["vs_this_machine"]["matches"] and r["vs_this_machine"]["argmax_matches"], r
            assert r["vs_this_machine"]["inputs"] == 8  # eight digits validation images, each compared
            if r["runtime_kind"] == "tflite":
                assert r["delegation"]["delegated"] == r["delegation"]["nodes"]
    manifest = json.loads((work / "manifest.json").read_text())
    assert {(e["device"]["name"], e["device"]["arch"]) for e in manifest["bench"]} == {
        ("emulated-ssh", "aarch64"), ("emulated-adb", "aarch64")}
    assert _leftovers() == []


@pytest.mark.parametrize("name", ["emulated-ssh", "emulated-adb"])
def test_remote_paths_never_reach_a_shell_unquoted(device, artifact, tmp_path, name):
    _, state, env = device
    odd = tmp_path / "we ird; $(touch PWNED) 'q' \"dq\" `touch PWNED`"
    odd.mkdir()
    model = odd / "m $(touch PWNED);touch PWNED.tflite"
    shutil.copyfile(artifact / "model_int8.tflite", model)
    done = run_edgekit("bench", str(model), "--device", name, *FAST, "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for where in (ROOT, ROOT / "root", ROOT / "tmp", ROOT / "data/local/tmp", tmp_path, odd):
        assert not (where / "PWNED").exists(), where
    assert _leftovers() == []
    # no credentials in what edgekit prints or records: the key and ssh config stay out of results
    secrets = [str(state / "id_ed25519"), (state / "id_ed25519").read_text().splitlines()[1]]
    assert not any(s in done.stdout + done.stderr for s in secrets)


def test_a_fleet_benchmarked_at_once_loses_no_result(device, artifact, tmp_path):
    """Three bench processes (ssh, adb, this machine) write one manifest at the same time: all results stay."""
    _, _, env = device
    work = tmp_path / "fleet"
    shutil.copytree(artifact, work, ignore=shutil.ignore_patterns(".*"))
    procs = [subprocess.Popen([sys.executable, "-m", "edgekit", "bench", str(work), "--device", name, *FAST],
                              env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("emulated-ssh", "emulated-adb", "local")]
    for proc in procs:
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-2000:]
    manifest = json.loads((work / "manifest.json").read_text())
    files = {f for f in os.listdir(work) if f.endswith((".tflite", ".onnx"))}
    for name in ("emulated-ssh", "emulated-adb", "local"):
        measured = {Path(e["file"]).name for e in manifest["bench"] if e["device"]["name"] == name}
        assert measured == files, (name, measured)
    assert _leftovers() == []


def _ssh_profile(tmp_path: Path, state: Path, **changes: str) -> Path:
    config = (state / "ssh_config").read_text()
    for old, new in changes.items():
        config = config.replace(old, new)
    (tmp_path / "ssh_config").write_text(config)
    profile = tmp_path / "board.yaml"
    profile.write_text(f"transport: ssh\nssh:\n  host: edgekit-emulated\n  config_file: {tmp_path / 'ssh_config'}\n"
                       "  connect_timeout_s: 5\n")
    return profile


def test_unknown_host_key_is_refused_with_an_instruction(device, tmp_path):
    _, state, env = device
    (tmp_path / "empty_known_hosts").write_text("")
    profile = _ssh_profile(tmp_path, state, **{str(state / "known_hosts"): str(tmp_path / "empty_known_hosts")})
    done = run_edgekit("devices", "check", str(profile), "--json", env=env)
    detail = json.loads(done.stdout)["checks"][0]["detail"]
    assert done.returncode == 1 and "not in your known_hosts" in detail and "ssh edgekit-emulated" in detail


def test_wrong_key_is_a_refused_login(device, tmp_path):
    _, state, env = device
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    profile = _ssh_profile(tmp_path, state, **{str(state / "id_ed25519"): str(tmp_path / "other")})
    done = run_edgekit("devices", "check", str(profile), "--json", env=env)
    assert done.returncode == 1 and "refused the login" in json.loads(done.stdout)["checks"][0]["detail"]


def test_unreachable_host_fails_fast_and_clearly(device, tmp_path, artifact):
    _, state, env = device
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tmp_path / "gone.yaml"
    profile.write_text(f"transport: ssh\nssh: {{host: 127.0.0.1, port: {port}, connect_timeout_s: 5}}\n")
    done = run_edgekit("bench", str(artifact / "model_int8.tflite"), "--device", str(profile), *FAST, env=env)
    assert done.returncode == 1 and "cannot reach 127.0.0.1" in done.stderr and "Traceback" not in done.stderr


def test_a_hung_run_is_killed_on_the_device_and_cleaned_up(device, artifact, tmp_path):
    _, state, env = device
    profile = tmp_path / "slow.yaml"
    profile.write_text((state / "devices" / "emulated-ssh.yaml").read_text().replace("timeout_s: 600",
                                                                                   "timeout_s: 8"))
    done = run_edgekit("bench", str(artifact / "model.tflite"), "--device", str(profile), "--runs", "100000",
                       "--min-seconds", "0", "--warmup-seconds", "0", env=env, timeout=120)
    assert done.returncode == 1 and "ran past its time limit" in done.stderr
    assert _harness_processes() == [] and _leftovers() == []


def test_a_device_without_numpy_says_what_to_install(device, artifact, tmp_path):
    _, state, env = device
    profile = tmp_path / "bare.yaml"
    profile.write_text((state / "devices" / "emulated-adb.yaml").read_text() + "python: python3 -S\n")
    done = run_edgekit("bench", str(artifact / "model_int8.tflite"), "--device", str(profile), *FAST, env=env)
    assert done.returncode == 1 and "has no numpy" in done.stderr and "pip install numpy" in done.stderr
    assert _leftovers() == []


def test_adb_serial_not_connected_and_no_device(device, artifact, tmp_path):
    _, _, env = device
    profile = tmp_path / "phone.yaml"
    profile.write_text("transport: adb\nadb: {serial: 127.0.0.1:1}\n")
    done = run_edgekit("bench", str(artifact / "model_int8.tflite"), "--device", str(profile), *FAST, env=env)
    assert done.returncode == 1 and "127.0.0.1:1 is not connected" in done.stderr
    # A fresh adb server (its own port) sees no device at all.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        lonely = {**env, "ANDROID_ADB_SERVER_PORT": str(s.getsockname()[1])}
    profile.write_text("transport: adb\n")
    try:
        done = run_edgekit("devices", "check", str(profile), "--json", env=lonely)
        assert done.returncode == 1
        assert "no adb device is connected" in json.loads(done.stdout)["checks"][0]["detail"]
    finally:
        subprocess.run(["adb", "kill-server"], env={**os.environ, **lonely}, capture_output=True, timeout=60)


def test_benchmark_model_binary_missing_is_named(device, artifact, tmp_path):
    _, state, env = device
    profile = tmp_path / "phone.yaml"
    profile.write_text((state / "devices" / "emulated-adb.yaml").read_text().replace(
        "adb:\n", f"adb:\n  benchmark_model: {tmp_path / 'benchmark_model'}\n"))
    done = run_edgekit("bench", str(artifact / "model_int8.tflite"), "--device", str(profile), *FAST, env=env)
    assert done.returncode == 1 and "benchmark_model binary" in done.stderr and "does not exist" in done.stderr


def test_bench_guidelines_over_ssh(device, tmp_path):
    """The guideline models travel to the aarch64 board and back like any bench (plumbing: timings are emulated)."""
    _, _, env = device
    done = run_edgekit("guidelines", "--device", "emulated-ssh", "--only", "G2", "--size", "28",
                       "--channel-scale", "0.25", *WINDOWS, "--out", str(tmp_path / "g"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["device"]["info"]["arch"] == "aarch64"
    assert len(result["cases"]) == 4 * 3 and all(c["p50_ms"] > 0 for c in result["cases"])
    assert _leftovers() == []


def test_predictor_verbs_over_ssh(device, tmp_path):
    """Calibrate, predict and search against the aarch64 board (plumbing: emulated timings are not device timings)."""
    _, _, env = device
    env = {**env, "EDGEKIT_HOME": str(tmp_path / "home")}
    grid = ["--family", "mobilenet_v2", "--width", "0.35", "--resolution", "32"]
    done = run_edgekit("latency", "calibrate", "--device", "emulated-ssh", *grid, *WINDOWS, "--json", env=env)
    assert done.returncode == 0, done.stderr
    calibration = json.loads(done.stdout)
    assert calibration["device"] == "emulated-ssh" and calibration["units"] >= 15
    # ONNX Runtime's per-node profile, taken on the board, put every unit's time in context
    assert calibration["runtime"] == "onnxruntime" and calibration["units_in_context"] == calibration["units"]
    table = json.loads(Path(calibration["table"]).read_text())
    assert table["info"]["arch"] == "aarch64" and all(u["ms"] > 0 for u in table["units"].values())
    done = run_edgekit("latency", "predict", "mobilenet_v2",
                       "--width", "0.35", "--resolution", "32", "--device", "emulated-ssh",
                       "--json", env=env)
    assert done.returncode == 0, done.stderr
    prediction = json.loads(done.stdout)
    assert prediction["measured_fraction"] == 1.0 and prediction["measured_ms"] > 0
    done = run_edgekit("latency", "search", "--device",
                       "emulated-ssh", "--latency-ms", "100000", "--family", "mobilenet_v2",
                       "--width", "0.35", "--resolution", "32", "--out", str(tmp_path / "s"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["within_budget"] == 1
    assert _leftovers() == []


def test_run_measures_the_recipe_on_the_emulated_board_and_here(device, tmp_path):
    """`edgekit run` ends on the device: both devices' figures land in report.json, and a second run skips them."""
    _, _, env = device
    from tests.conftest import DIGITS_RECIPE

    recipe = tmp_path / "r.yaml"
    recipe.write_text(DIGITS_RECIPE.replace("epochs: 3", "epochs: 1\n  limit_batches: 4")
                      + "export:\n  formats: [tflite]\ndevices: [emulated-ssh, local]\n"
                      + "bench:\n  threads: [1]\n  runs: 3\n  min_seconds: 0\n  warmup_seconds: 0\n"
                      + "check:\n  max_drop: 100\n  max_latency_ms: {emulated-ssh: 100000, local: 100000}\n")
    out = tmp_path / "run"
    first = run_edgekit("run", str(recipe), "--out", str(out), "--json", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["train", "export", "check", "bench", "latency check"]
    measured = {(r["device"], r["format"]) for r in report["latency"]}
    assert measured == {(d, f) for d in ("emulated-ssh", "local") for f in ("tflite", "tflite_int8")}
    assert all(r["p50_ms"] > 0 for r in report["latency"])
    assert {s["device"] for s in report["int8_speedup"]} == {"emulated-ssh", "local"}
    assert report["check"]["passed"] and any(c["metric"] == "latency on emulated-ssh" for c in report["check"]["cases"])
    second = run_edgekit("run", str(recipe), "--out", str(out), "--json", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert {s["name"]: s["status"] for s in json.loads(second.stdout)["stages"]}["bench"] == "up to date"
    assert not _leftovers()


@pytest.mark.parametrize("name", ["emulated-ssh", "emulated-adb"])
def test_int8_report_on_the_device_agrees_with_the_host(device, artifact, tmp_path, name):
    """The INT8 and FP32 TFLite files run on the aarch64 board's own kernels, their layers read back: the same
    layers, with figures close to the host's; nothing is left on the device."""
    _, _, env = device
    here = run_edgekit("int8", "report", str(artifact), "--format", "tflite", "--images", "4", "--json", env=env)
    there = run_edgekit("int8", "report", str(artifact), "--device", name, "--images", "4", "--json", env=env)
    assert here.returncode == 0, here.stderr
    assert there.returncode == 0, there.stderr
    mine, theirs = json.loads(here.stdout), json.loads(there.stdout)
    assert theirs["device"] == name and name in theirs["kernels"]["tflite"] and mine["device"] is None
    by_layer = {row["layer"]: row["tflite"]["accumulated"] for row in theirs["layers"]}
    assert len(by_layer) == len(mine["layers"]) > 20
    for row in mine["layers"]:
        # The board's kernels round a requantization a step apart from x86's in places (the bench's outputs agree
        # to a step); over a layer's tensor that moves its SQNR by up to about 1 dB here. A kernel computing
        # something else would be tens of dB off.
        host, board = row["tflite"]["accumulated"], by_layer[row["layer"]]
        assert board["cosine"] == pytest.approx(host["cosine"], abs=3e-3), row["layer"]
        if host["sqnr_db"] is None:  # an exact layer (no error to measure) stays exact
            assert board["sqnr_db"] is None, row["layer"]
        else:
            assert board["sqnr_db"] == pytest.approx(host["sqnr_db"], abs=1.5), row["layer"]
    assert _leftovers() == []
    refused = run_edgekit("int8", "report", str(artifact), "--device", name, "--format", "onnx", env=env)
    assert refused.returncode == 2 and "give --format tflite" in refused.stderr
    assert "Traceback" not in refused.stderr
