"""Hardening beyond the bad-input matrix: device profiles as code, option injection, whole-or-nothing reports and
a resume command that resumes."""

from __future__ import annotations

import errno
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DIGITS_RECIPE, run_edgekit, write_recipe

from edgekit import builtin
from edgekit.core.errors import EdgekitError
from edgekit.devices import transports
from edgekit.devices.profiles import find_profiles, load_profile, profile_from_dict

EVIL_LOCAL = "name: local\ntransport: local\npython: \"sh -c 'touch pwned'; python3\"\n"


def test_a_working_directory_profile_never_replaces_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "local.yaml").write_text(EVIL_LOCAL)
    (tmp_path / "devices" / "board.yaml").write_text("name: board\ntransport: local\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEKIT_DEVICES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))

    shadowed: list[Path] = []
    found = find_profiles(shadowed)
    assert found["local"] == builtin.DEVICES / "local.yaml" and shadowed == [tmp_path / "devices" / "local.yaml"]
    assert found["board"] == tmp_path / "devices" / "board.yaml"  # a new name from ./devices is fine
    assert load_profile("local").python == "python3"
    assert "touch pwned" in load_profile("./devices/local.yaml").python  # asked for by path: used

    monkeypatch.setenv("EDGEKIT_DEVICES", str(tmp_path / "devices"))  # asked for by the environment: used
    assert "touch pwned" in load_profile("local").python


def test_devices_lists_the_good_profiles_and_says_which_are_bad_and_where_each_came_from(tmp_path: Path):
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "board.yaml").write_text("name: board\ntransport: local\n")
    (devices / "port.yaml").write_text("name: port\ntransport: ssh\nssh: {host: h, port: twenty-two}\n")
    (devices / "bytes.yaml").write_bytes(b"name: bytes\n\xff\xfe\n")
    (devices / "local.yaml").write_text(EVIL_LOCAL)
    done = run_edgekit("devices", cwd=tmp_path, env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert done.returncode == 0, done.stderr
    assert "board" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, done.stderr
    assert any("port.yaml" in w and "whole number" in w for w in warnings)
    assert any("bytes.yaml" in w and "UTF-8" in w for w in warnings)
    assert any("local.yaml is ignored" in w and "--device" in w for w in warnings)
    listed = json.loads(run_edgekit("devices", "--json", cwd=tmp_path,
                                    env={"XDG_CONFIG_HOME": str(tmp_path / "config")}).stdout)
    assert {row["name"] for row in listed} >= {"local", "board", "rpi4"}
    assert next(row for row in listed if row["name"] == "local")["file"] == str(builtin.DEVICES / "local.yaml")
    assert next(row for row in listed if row["name"] == "board")["file"] == str(devices / "board.yaml")


@pytest.mark.parametrize("field, value", [("host", "-oProxyCommand=touch pwned"), ("host", "--"), ("user", "-l"),
                                          ("key", "-i"), ("host", "pi\nProxyCommand x")])
def test_ssh_fields_that_read_as_options_are_refused(field: str, value: str) -> None:
    section = {"host": "pi.local", field: value}
    with pytest.raises(EdgekitError, match="must not start with '-'"):
        profile_from_dict({"name": "x", "transport": "ssh", "ssh": section}, Path("x.yaml"))


def test_ssh_and_scp_end_their_options_before_the_destination(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], timeout: float, what: str) -> transports.Completed:
        calls.append(argv)
        return transports.Completed(0, "", "")

    monkeypatch.setattr(transports, "_run", fake_run)
    profile = profile_from_dict({"name": "pi", "transport": "ssh", "ssh": {"host": "pi.local", "user": "pi",
                                                                            "port": 2222}}, Path("pi.yaml"))
    ssh = transports.connect(profile)
    ssh.run(["echo", "-n", "x"], 10)
    ssh.push(tmp_path / "-model.tflite", "/tmp/edgekit-bench.abc/m.tflite")
    for argv in calls:
        cut = argv.index("--")
        assert all(not a.startswith("pi@") for a in argv[:cut]), argv  # nothing before `--` is the destination
    assert calls[0][calls[0].index("--") + 1] == "pi@pi.local"
    assert calls[1][-2:] == [str(tmp_path / "-model.tflite"), "pi@pi.local:/tmp/edgekit-bench.abc/m.tflite"]


def test_a_report_that_fails_midway_leaves_the_previous_one_as_it_was(digits_artifact: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.report import render

    out = tmp_path / "report"
    render.write_report([digits_artifact], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "report.json" in before

    def full_disk(report: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(render, "html_page", full_disk)
    with pytest.raises(OSError):
        render.write_report([digits_artifact], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a staging directory was left behind"


@pytest.mark.slow
def test_the_printed_resume_command_resumes(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "digits.yaml", DIGITS_RECIPE)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "train", str(recipe), "--epochs", "4",
                             "--limit-batches", "6", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "metrics.jsonl").exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    command = stderr.split("continue it with `", 1)[1].split("`", 1)[0]
    assert "--epochs 4" in command and "--limit-batches 6" in command and "--resume" in command
    argv = shlex.split(command)
    assert argv[0] == "edgekit"
    resumed = run_edgekit(*argv[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 4


def test_a_recipe_name_is_checked_where_recipes_are_read() -> None:
    from edgekit.recipe import parse_recipe

    for name in ("../x", "/abs", "a/b", "..", ".hidden", "-rf", "x" * 101, ""):
        with pytest.raises(EdgekitError, match="name"):
            parse_recipe(DIGITS_RECIPE.replace("name: digits-smoke", f"name: '{name}'"))
    assert parse_recipe(DIGITS_RECIPE.replace("digits-smoke", "mobilenet_v2-0.75+qat")).name.endswith("+qat")
