"""Training on real data through the real command line: records, resume, DDP, recipes, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import DIGITS_RECIPE, RECIPES, write_recipe

from edgekit.checkpoint import load_checkpoint
from edgekit.core.errors import EdgekitError
from edgekit.recipe import load_recipe
from edgekit.training.loop import train_recipe
from edgekit.training.prepare import prepare_training


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_writes_checkpoints_metrics_and_a_summary(tmp_path, digits_recipe, edgekit_cli):
    out = tmp_path / "run"
    result = edgekit_cli("train", str(digits_recipe), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "epoch   3/3" in result.stderr and "best val top-1" in result.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["loss"] < rows[0]["loss"]
    best = load_checkpoint(out / "best.pt")  # weights_only=True
    assert best["spec"]["name"] == "mobilenet_v1" and best["preprocess"]["channels"] == 1
    assert best["val"]["top1"] == max(max(r["val_top1"], r["ema_top1"] or 0) for r in rows)
    assert best["val"]["top1"] > 0.7  # real learning on real digits, far above the 10% of chance
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_top1"] == best["val"]["top1"] and summary["epochs"] == 3
    # evaluating the checkpoint again applies the recorded preprocessing and finds the same accuracy
    evaluated = edgekit_cli("eval", str(out / "best.pt"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["top1"] == pytest.approx(best["val"]["top1"])


def _train_process(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgekit", "train", str(recipe), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupt_after_first_epoch(proc: subprocess.Popen, out: Path, sig: int) -> None:
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") >= 1:
            proc.send_signal(sig)
            return
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    pytest.fail(f"training never finished its first epoch: {proc.communicate()[1][-2000:]}")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, digits_recipe, edgekit_cli, sig):
    recipe = digits_recipe
    straight = edgekit_cli("train", str(recipe), "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    out = tmp_path / "interrupted"
    proc = _train_process(recipe, out)
    _interrupt_after_first_epoch(proc, out, sig)
    _, stderr = proc.communicate(timeout=120)
    saved = load_checkpoint(out / "last.pt")
    assert saved["epoch"] < 3, "the interruption came too late to test anything"
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert f"saved after epoch {saved['epoch']}" in stderr and "--resume" in stderr
        assert "Traceback" not in stderr
    assert not list(out.glob(".*.tmp")), "an interrupted write left a temp file"

    resumed = edgekit_cli("train", str(recipe), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {saved['epoch']}" in resumed.stderr
    assert _same_weights(tmp_path / "straight" / "last.pt", out / "last.pt")
    assert _same_weights(tmp_path / "straight" / "best.pt", out / "best.pt")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_deterministic_runs_give_the_same_weights_beside_a_busy_process(tmp_path, digits_recipe, edgekit_cli):
    # Every core this process may use (not the test runner's split), so that the default governor would move the
    # thread count under load; --deterministic keeps it, and the weights.
    cores = len(os.sched_getaffinity(0))
    env = {"OMP_NUM_THREADS": str(cores)}
    quiet = edgekit_cli("train", str(digits_recipe), "--deterministic", "--epochs", "2", "--out",
                        str(tmp_path / "quiet"), env=env)
    assert quiet.returncode == 0, quiet.stderr
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = edgekit_cli("train", str(digits_recipe), "--deterministic", "--epochs", "2", "--out",
                             str(tmp_path / "loaded"), env=env)
    finally:
        busy.kill()
        busy.wait()
    assert loaded.returncode == 0, loaded.stderr
    assert _same_weights(tmp_path / "quiet" / "last.pt", tmp_path / "loaded" / "last.pt")
    for run in ("quiet", "loaded"):
        threads = json.loads((tmp_path / run / "summary.json").read_text())["threads"]
        assert threads["deterministic"] is True and threads["used"] == [cores], threads


def test_deterministic_refuses_what_it_cannot_hold(digits_recipe, monkeypatch):
    recipe = load_recipe(digits_recipe)
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(EdgekitError, match=rf"--threads {cores + 1} with --deterministic: .* {cores} core"):
        train_recipe(recipe, Path("unused"), threads=cores + 1, deterministic=True)
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun
    with pytest.raises(EdgekitError, match="--deterministic with 2 data-parallel processes"):
        train_recipe(recipe, Path("unused"), deterministic=True)


def test_an_existing_run_is_never_overwritten(tmp_path, digits_recipe, edgekit_cli):
    out = tmp_path / "run"
    assert edgekit_cli("train", str(digits_recipe), "--epochs", "1", "--out", str(out)).returncode == 0
    before = (out / "best.pt").read_bytes()
    again = edgekit_cli("train", str(digits_recipe), "--epochs", "1", "--out", str(out))
    assert again.returncode == 2
    assert "already holds a training run (epoch 1/1): pass --resume" in again.stderr
    changed = edgekit_cli("train", str(digits_recipe), "--epochs", "3", "--out", str(out), "--resume")
    assert changed.returncode == 2 and "different recipe" in changed.stderr
    assert (out / "best.pt").read_bytes() == before


def test_two_process_ddp_run_agrees_across_ranks(tmp_path, digits_recipe):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "edgekit", "train", str(digits_recipe),
         "--batch-size", "16", "--out", str(out), "--json"],  # 2 x 16: the single-process batch of 32
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # only rank 0 prints
    assert summary["world_size"] == 2
    assert summary["rank_weight_sha256"][0] == summary["rank_weight_sha256"][1]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert load_checkpoint(out / "best.pt")["val"]["top1"] > 0.5


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, digits_recipe, monkeypatch):
    out = tmp_path / "run"
    recipe = load_recipe(digits_recipe)  # epoch 1 writes best.pt and last.pt; the disk fills in epoch 2
    real_save = torch.save
    calls = []

    def disk_fills_after_epoch_one(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) <= 2:
            return real_save(obj, f, *args, **kwargs)
        real_save({"partial": True}, f)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_fills_after_epoch_one)
    with pytest.raises(EdgekitError, match="No space left on device.*previous checkpoint is intact"):
        train_recipe(recipe, out)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert load_checkpoint(out / "best.pt")["epoch"] == 1
    assert not list(out.glob(".*.tmp")), "the failed write left a temp file"
    monkeypatch.setattr(torch, "save", real_save)  # space freed: the run continues from epoch 1
    assert train_recipe(recipe, out, resume=True).resumed_from == 1
    assert load_checkpoint(out / "last.pt")["epoch"] == 3


def test_class_count_mismatch_is_one_clear_line(tmp_path, edgekit_cli):
    text = DIGITS_RECIPE.replace("in_channels: 1", "in_channels: 1\n  num_classes: 5")
    recipe = write_recipe(tmp_path / "r.yaml", text)
    result = edgekit_cli("train", str(recipe), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "model.num_classes is 5 but digits has 10 classes" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_missing_dataset_is_one_clear_line(tmp_path, digits_recipe, edgekit_cli):
    result = edgekit_cli("train", str(digits_recipe), "--data", "fashion-mnist", "--out", str(tmp_path / "run"),
                         env={"EDGEKIT_FASHION_MNIST": str(tmp_path / "nowhere")})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in result.stderr


def test_imagefolder_with_a_corrupt_image_trains_and_warns(tmp_path, edgekit_cli):
    from PIL import Image

    for split in ("train", "val"):
        for label, color in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            for i in range(8):
                path = tmp_path / "data" / split / label / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40, 40), tuple(min(255, c + 3 * i) for c in color)).save(path)
    (tmp_path / "data" / "train" / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    recipe = write_recipe(tmp_path / "r.yaml", DIGITS_RECIPE.replace("in_channels: 1", "in_channels: 3"))
    result = edgekit_cli("train", str(recipe), "--data", f"imagefolder:{tmp_path / 'data'}", "--epochs", "1",
                         "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable image(s)" in result.stderr
    assert load_checkpoint(tmp_path / "run" / "best.pt")["classes"] == ["blue", "red"]


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_trains_a_short_epoch(tmp_path, recipe, edgekit_cli):
    result = edgekit_cli("train", str(recipe), "--epochs", "1", "--limit-batches", "2", "--batch-size", "16",
                         "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 1 and Path(summary["best_checkpoint"]).is_file()
    assert load_recipe(recipe).model.name == summary["model"]["name"]


def test_export_refuses_a_checkpoint_of_another_architecture(tmp_path, digits_recipe, edgekit_cli):
    out = tmp_path / "run"
    assert edgekit_cli("train", str(digits_recipe), "--epochs", "1", "--out", str(out)).returncode == 0
    result = edgekit_cli("export", "mobilenet_v2", "--weights", str(out / "best.pt"), "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "holds a mobilenet_v1, not a mobilenet_v2" in result.stderr
    assert not (tmp_path / "x").exists()



def test_resume_restores_a_metrics_line_a_kill_lost(tmp_path):
    """A kill between writing last.pt and appending its metrics line: the resumed run puts the line back."""
    from edgekit.training.rundir import read_metrics, trim_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"epoch": e, "loss": 1.0 / e}) + "\n" for e in (1, 2, 3, 4)))
    trim_metrics(path, 5, {"epoch": 5, "loss": 0.2})
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    trim_metrics(path, 3, {"epoch": 3, "loss": 0.33})  # lines past the checkpoint go; its own line stays
    assert [(r["epoch"], r["loss"]) for r in read_metrics(path)] == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]


def test_prepare_training_takes_the_class_count_from_the_data(digits_recipe):
    prep = prepare_training(load_recipe(digits_recipe))
    assert prep.spec.num_classes == len(prep.train.classes) == 10
    assert (prep.spec.name, prep.spec.resolution, prep.spec.in_channels) == ("mobilenet_v1", 32, 1)
    assert prep.source.label == "digits" and len(prep.train) > 0 and len(prep.val) > 0
    five = DIGITS_RECIPE.replace("in_channels: 1", "in_channels: 1\n  num_classes: 5")
    with pytest.raises(EdgekitError, match="model.num_classes is 5 but digits has 10 classes"):
        prepare_training(load_recipe(write_recipe(digits_recipe.with_name("five.yaml"), five)))
