"""Nothing lost: interruption at random points, two writers at once, and a full disk, on the real commands.

Signals land at a random moment (the seed is in every assertion message, so a failure can be replayed with
EDGEKIT_TEST_SEED). Afterwards every earlier result is intact, nothing half-written carries a final name,
temporary files are gone (or removed by the next run), and the work can be continued.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DIGITS_RECIPE, run_edgekit, write_recipe

from edgekit.artifact import changed_files
from edgekit.checkpoint import load_checkpoint
from edgekit.manifest import read_manifest

pytestmark = pytest.mark.slow

LONG = 12  # epochs: about 2 s each after 3-4 s of start-up, so a signal 4-12 s in lands mid-run
SEED = int(os.environ.get("EDGEKIT_TEST_SEED", time.time_ns() % 10_000))


def _start(*args: str, limit_bytes: int | None = None, cwd: Path | None = None) -> subprocess.Popen[str]:
    def limit() -> None:  # a file-size limit stands in for a full disk: writes past it fail with EFBIG
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen([sys.executable, "-m", "edgekit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=limit, cwd=cwd, start_new_session=True)


def _wait(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _hidden(directory: Path) -> list[str]:
    """Dot-entries: temporary files, staging directories and locks (none should outlive a finished command)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) if directory.is_dir() else []


def _artifact_intact(directory: Path) -> dict[str, str]:
    manifest = read_manifest(directory)
    assert changed_files(directory, manifest) == [], f"seed {SEED}"
    return {k: v.sha256 for k, v in manifest.files.items()}


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    # These tests interrupt and resume; the INT8 budget is loose because a 2-epoch point's drop is not their subject
    # (the w0.5 point loses 1.95 pp on one thread, with this code and the code before it alike).
    return write_recipe(tmp_path / "digits.yaml",
                        DIGITS_RECIPE.replace("epochs: 3", "epochs: 5") + "check:\n  max_drop: 5\n")


def _interrupted_codes(sig: int) -> set[int]:
    """How a command may end after `sig`: SIGTERM with exit 130, SIGKILL by the signal. After Ctrl-C a process that
    ends by the signal itself (-SIGINT; a shell shows 130 for both) is as correct as exit 130: one CI run saw it,
    after edgekit had printed its line, and it could not be reproduced here."""
    return {signal.SIGKILL: {-signal.SIGKILL}, signal.SIGINT: {130, -signal.SIGINT}}.get(sig, {130})


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["int", "term", "kill"])
def test_train_interrupted_at_a_random_moment_resumes(tmp_path: Path, sig: int) -> None:
    rng = random.Random(SEED + sig)
    recipe = write_recipe(tmp_path / "long.yaml", DIGITS_RECIPE.replace("epochs: 3", f"epochs: {LONG}"))
    out = tmp_path / "run"
    proc = _start("train", str(recipe), "--out", str(out))
    time.sleep(rng.uniform(4.0, 12.0))  # start-up takes a few seconds; each epoch about two
    proc.send_signal(sig)
    code, _, err = _wait(proc)
    if code == 0:
        pytest.skip(f"seed {SEED}: training finished before the signal")
    assert code in _interrupted_codes(sig), f"seed {SEED}: {err[-1500:]}"
    if sig != signal.SIGKILL:
        assert "interrupted" in err and "Traceback" not in err, f"seed {SEED}: {err[-1500:]}"
        assert not [n for n in _hidden(tmp_path) if n.endswith(".lock")], f"seed {SEED}"
    if (out / "last.pt").exists():
        saved = load_checkpoint(out / "last.pt")  # loadable: never half-written
        epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert epochs[: saved["epoch"]] == list(range(1, saved["epoch"] + 1)), f"seed {SEED}"

    code, _, err = _wait(_start("train", str(recipe), "--out", str(out), "--resume"))
    assert code == 0, f"seed {SEED}: {err[-1500:]}"
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, LONG + 1)), f"seed {SEED}"
    assert load_checkpoint(out / "last.pt")["epoch"] == LONG
    assert _hidden(out) == [] and _hidden(tmp_path) == [], f"seed {SEED}: stale temporary files left"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, digits_mobilenet_v2: Path) -> Path:
    out = tmp_path_factory.mktemp("exported") / "mv2"
    done = run_edgekit("export", str(digits_mobilenet_v2), "--format", "onnx", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["int", "kill"])
def test_export_interrupted_over_an_artifact_keeps_one_whole_artifact(
    tmp_path: Path, exported: Path, digits_mobilenet_v2: Path, sig: int,
) -> None:
    rng = random.Random(SEED + sig)
    out = tmp_path / "mv2"
    shutil.copytree(exported, out)
    before = _artifact_intact(out)
    proc = _start("export", str(digits_mobilenet_v2), "--int8", "--force", "--out", str(out))
    time.sleep(rng.uniform(3.0, 25.0))
    proc.send_signal(sig)
    code, _, err = _wait(proc)
    after = _artifact_intact(out)  # the old artifact or the new one, whole; never a mixture or nothing
    if code == 0:
        assert "onnx_int8" in after, f"seed {SEED}"
    else:
        assert after == before, f"seed {SEED}: {err[-1500:]}"
        assert code in _interrupted_codes(sig), f"seed {SEED}: {err[-1500:]}"
    if sig == signal.SIGINT:
        assert _hidden(tmp_path) == [], f"seed {SEED}: {_hidden(tmp_path)}"
    # the next export into the same place removes what a killed one left, and succeeds
    code, _, err = _wait(_start("export", str(digits_mobilenet_v2), "--format", "onnx", "--force", "--out", str(out)))
    assert code == 0, err
    assert _hidden(tmp_path) == [], f"seed {SEED}: {_hidden(tmp_path)}"


def test_bench_killed_at_a_random_moment_keeps_the_manifest(tmp_path: Path, exported: Path) -> None:
    rng = random.Random(SEED)
    out = tmp_path / "mv2"
    shutil.copytree(exported, out)
    done = run_edgekit("bench", str(out), "--runs", "5", "--min-seconds", "0", "--warmup-seconds", "0")
    assert done.returncode == 0, done.stderr
    records = read_manifest(out).bench
    proc = _start("bench", str(out), "--threads", "1,2", "--min-seconds", "2", "--warmup-seconds", "0.5")
    time.sleep(rng.uniform(2.0, 8.0))
    proc.send_signal(signal.SIGKILL)
    _wait(proc)
    after = read_manifest(out)  # valid JSON, and the earlier measurements are all still there
    assert after.bench[: len(records)] == records, f"seed {SEED}"
    _artifact_intact(out)


def test_sweep_interrupted_stops_its_points_and_continues(tmp_path: Path, recipe: Path) -> None:
    rng = random.Random(SEED)
    out = tmp_path / "sweep"
    # ONNX only: interrupting and resuming the sweep is the subject, not TFLite conversion
    recipe.write_text(recipe.read_text() + "export:\n  formats: [onnx]\n")
    args = ("sweep", str(recipe), "--width", "0.25,0.5", "--resolution", "32", "--epochs", "2", "--out", str(out))
    proc = _start(*args)
    time.sleep(rng.uniform(8.0, 20.0))
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
    code, _, err = _wait(proc)
    assert code in (0, 130), f"seed {SEED}: {err[-1500:]}"
    assert not _orphans(out), f"seed {SEED}: a point's process outlived the sweep"
    code, out_text, err = _wait(_start(*args, "--json"))
    assert code == 0, f"seed {SEED}: {err[-1500:]}"
    points = json.loads(out_text)["points"]
    assert [p["status"] for p in points] == ["passed", "passed"], f"seed {SEED}: {points}"


def test_sweep_killed_takes_its_points_down_with_it(tmp_path: Path, recipe: Path) -> None:
    out = tmp_path / "sweep"
    proc = _start("sweep", str(recipe), "--width", "0.25", "--resolution", "32", "--epochs", "50",
                  "--out", str(out))
    deadline = time.time() + 120
    while time.time() < deadline and not _orphans(out):
        time.sleep(0.5)
    assert _orphans(out), "the sweep never started its point"
    proc.kill()  # SIGKILL: no handler runs in the sweep itself
    _wait(proc)
    deadline = time.time() + 30
    while time.time() < deadline and _orphans(out):
        time.sleep(0.5)
    assert not _orphans(out), "the point's `edgekit run` kept running after the sweep was killed"


def _orphans(out: Path) -> list[int]:
    """Pids of `edgekit run` processes writing under `out`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"run" in cmdline and any(str(out).encode() in part for part in cmdline):
                pids.append(int(proc.name))
    return pids


def test_two_exports_into_one_directory_never_interleave(tmp_path: Path, digits_mobilenet_v2: Path) -> None:
    out = tmp_path / "mv2"
    procs = [_start("export", str(digits_mobilenet_v2), "--format", "onnx", "--out", str(out)) for _ in range(2)]
    results = [_wait(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    assert "being written by another edgekit process" in loser or "already exists" in loser, loser
    _artifact_intact(out)
    assert _hidden(tmp_path) == []


def test_two_trainings_into_one_directory_never_interleave(tmp_path: Path, recipe: Path) -> None:
    out = tmp_path / "run"
    procs = [_start("train", str(recipe), "--out", str(out)) for _ in range(2)]
    results = [_wait(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [(c, e[-500:]) for c, _, e in results]
    loser = next(err for code, _, err in results if code == 2)
    assert "being written by another edgekit process" in loser or "training run" in loser, loser
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4, 5]
    assert _hidden(out) == [] and _hidden(tmp_path) == []


def test_full_disk_during_export_keeps_the_previous_artifact(
    tmp_path: Path, exported: Path, digits_mobilenet_v2: Path,
) -> None:
    out = tmp_path / "mv2"
    shutil.copytree(exported, out)
    before = _artifact_intact(out)
    code, _, err = _wait(_start("export", str(digits_mobilenet_v2), "--int8", "--force", "--out", str(out),
                                limit_bytes=256 * 1024))
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in err, err[-2000:]
    assert _artifact_intact(out) == before
    assert _hidden(tmp_path) == []


def test_full_disk_during_training_keeps_the_last_checkpoint(tmp_path: Path, recipe: Path) -> None:
    out = tmp_path / "run"
    first = _start("train", str(recipe), "--out", str(out))
    metrics = out / "metrics.jsonl"
    while first.poll() is None and not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    assert _wait(first)[0] == 130
    saved = (out / "last.pt").read_bytes()
    code, _, err = _wait(_start("train", str(recipe), "--out", str(out), "--resume", limit_bytes=64 * 1024))
    assert code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "previous checkpoint is intact" in lines[0], err[-2000:]
    assert (out / "last.pt").read_bytes() == saved
    assert _hidden(out) == [] and _hidden(tmp_path) == []


def test_soak_runners_hold_their_memory(exported: Path) -> None:
    """tools/soak.py on the digits artifact: 2,000 inferences per runner, RSS within the stated 16 MiB bound."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import torch
    from soak import soak_artifact

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = soak_artifact(exported, 2000)
    finally:
        torch.set_num_threads(threads)
    assert len(results) == 3  # the checkpoint through torch, model.onnx for eval and for the bench harness
    for r in results:
        assert r.inferences == 2000 and r.growth_mib <= 16.0, r
