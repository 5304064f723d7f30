"""The wheel users install: built from this checkout, installed into a fresh virtual environment outside the
repository, and run from a directory outside it. Device profiles and recipes must come from the installed package.

Install strategy (shared with tests/test_ci_example.py): a real fresh venv (no --system-site-packages, so a
dependency missing from pyproject shows up), filled by uv, which installs the whole dependency set from its
cache in well under a minute where pip takes minutes. uv is pointed at the same package sources pip uses here
(`uv_env`: pip's configured indexes, find-links and constraints, read from `pip config list`), so the tests run
wherever the test environment's pip works, offline included when its sources are local.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import REPO

FRESH_VENV_TIMEOUT_S = 900


def uv_binary() -> str:
    """uv from the test environment (a dev dependency)."""
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        from uv import find_uv_bin  # the uv package knows where its binary is
        found = find_uv_bin()
    return found


def _pip_settings() -> dict[str, list[str]]:
    """pip's effective settings (files and PIP_* variables), by option name: {"extra-index-url": [...], ...}."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                          check=False)
    settings: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        settings[option] = value.strip().strip("'\"").split()
    for name, value in os.environ.items():
        if name.startswith("PIP_"):
            settings[name[4:].lower().replace("_", "-")] = value.split()
    return settings


def uv_env() -> dict[str, str]:
    """Environment variables that make uv use the package sources pip is configured with here."""
    pip = _pip_settings()
    env = {"UV_INDEX_STRATEGY": "unsafe-best-match",  # pip's behaviour: the best version across all indexes
           "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
    if pip.get("index-url"):
        env["UV_DEFAULT_INDEX"] = pip["index-url"][0]
    if pip.get("extra-index-url"):
        env["UV_EXTRA_INDEX_URL"] = " ".join(pip["extra-index-url"])
    if pip.get("find-links"):
        env["UV_FIND_LINKS"] = ",".join(pip["find-links"])
    if pip.get("constraint"):
        env["UV_CONSTRAINT"] = " ".join(pip["constraint"])
    if pip.get("no-index", ["0"])[0].lower() in ("1", "true", "yes", "on"):
        env["UV_NO_INDEX"] = "1"
    if pip.get("cert"):
        env["SSL_CERT_FILE"] = pip["cert"][0]
    return env


def fresh_venv(where: Path) -> Path:
    """A new virtual environment at `where` with nothing installed (no pip either: uv installs); its bin/."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    return where / "bin"


def clean_env(venv_bin: Path, home: Path, extra_path: list[Path] = ()) -> dict[str, str]:
    """The environment a user's shell would have with `venv_bin` first on PATH and nothing from this checkout:
    no PYTHONPATH, no VIRTUAL_ENV of the test's own environment, its own HOME and config folder."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "EDGEKIT_DEVICES") and not k.startswith("UV_")}
    own_bin = str(Path(sys.executable).parent)
    rest = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != Path(own_bin).resolve()]
    home.mkdir(parents=True, exist_ok=True)
    env.update({"PATH": os.pathsep.join([str(venv_bin), *map(str, extra_path), *rest]), "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": os.environ.get(
                    "XDG_CACHE_HOME", str(Path.home() / ".cache")),  # uv's and pip's caches stay shared
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    return env


def outside_repo_dir(prefix: str) -> Path:
    """A temporary directory that is not inside this checkout (pytest's tmp_path usually is not either, but a
    TMPDIR under the repository would defeat the point)."""
    base = Path(tempfile.gettempdir()).resolve()
    if base.is_relative_to(REPO):
        base = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def build_wheel(out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    wheel, = out.glob("edgekit_ml-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, installed with its dependencies into a fresh venv outside the repository."""
    root = outside_repo_dir("edgekit-wheel-")
    try:
        wheel = build_wheel(root / "dist")
        venv_bin = fresh_venv(root / "venv")
        # torch pinned as the README says (here the test environment's package sources give its CPU build);
        # scikit-learn only for the `digits` data the smoke training uses (a dev dependency, not a user one).
        done = subprocess.run([uv_binary(), "pip", "install", "--python", str(venv_bin / "python"), "torch==2.13.0",
                               str(wheel), "scikit-learn"], env={**clean_env(venv_bin, root / "home"), **uv_env()},
                              capture_output=True, text=True, timeout=FRESH_VENV_TIMEOUT_S, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        work = root / "work"
        work.mkdir()
        yield root / "venv", venv_bin, work, clean_env(venv_bin, root / "home")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(venv_bin: Path, env: dict[str, str], cwd: Path, *args: str, timeout: int = 600):
    return subprocess.run([str(venv_bin / "edgekit"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_the_wheel_carries_its_devices_recipes_and_model_table(installed):
    venv, venv_bin, work, env = installed
    found = subprocess.run([str(venv_bin / "python"), "-c", "import edgekit, importlib.metadata as m; "
                            "print(edgekit.__file__); print(m.version('edgekit-ml'))"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    package_file, version = found.stdout.split()
    assert Path(package_file).resolve().is_relative_to(venv.resolve()), package_file  # not the checkout
    assert version == __import__("edgekit").__version__

    done = run(venv_bin, env, work, "devices", "--json")
    assert done.returncode == 0, done.stderr
    devices = {d["name"]: d for d in json.loads(done.stdout)}
    assert {"local", "rpi4", "rpi5", "pixel-7"} <= set(devices)
    for d in devices.values():
        assert Path(d["file"]).resolve().is_relative_to(venv.resolve()), d["file"]

    done = run(venv_bin, env, work, "profile", "mobilenet_v2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["macs"] > 0

    done = run(venv_bin, env, work, "models")
    assert done.returncode == 0 and "mobilenet_v2" in done.stdout, done.stderr

    done = run(venv_bin, env, work, "recipes")
    assert done.returncode == 0 and "mobilenet_v2_fashion" in done.stdout, done.stderr


@pytest.mark.slow
def test_a_builtin_device_is_found_and_unreachable_fails_fast(installed, tmp_path):
    """`edgekit devices check rpi4` uses the packaged profile. No network: `ssh` here is a stand-in that logs its
    arguments and fails as ssh does on a name that does not resolve (rpi4's raspberrypi.local)."""
    venv, venv_bin, work, env = installed
    shim = tmp_path / "shim"
    shim.mkdir()
    log = tmp_path / "ssh.log"
    for tool in ("ssh", "scp"):
        (shim / tool).write_text(
            '#!/bin/sh\necho "$@" >> "$SSH_SHIM_LOG"\n'
            'echo "ssh: Could not resolve hostname raspberrypi.local: Name or service not known" >&2\nexit 255\n')
        (shim / tool).chmod(0o755)
    env = {**env, "PATH": f"{shim}{os.pathsep}{env['PATH']}", "SSH_SHIM_LOG": str(log)}
    done = run(venv_bin, env, work, "devices", "check", "rpi4", timeout=60)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, out
    assert "unknown device" not in out.lower()
    assert "reachable" in out and "raspberrypi.local" in out, out
    assert "pi@raspberrypi.local" in log.read_text()  # the built-in profile's host and user


@pytest.mark.slow
def test_a_builtin_recipe_trains_by_name_from_the_installed_package(installed):
    venv, venv_bin, work, env = installed
    assert not (work / "recipes").exists()  # nothing to find by accident in the working directory
    done = run(venv_bin, env, work, "recipes", "--json")
    assert done.returncode == 0, done.stderr
    recipe, = [r for r in json.loads(done.stdout) if r["name"] == "mobilenet_v2_fashion"]
    assert Path(recipe["file"]).resolve().is_relative_to(venv.resolve()), recipe  # the packaged recipe

    done = run(venv_bin, env, work, "train", "mobilenet_v2_fashion", "--epochs", "1", "--limit-batches", "2",
               "--batch-size", "16", "--data", "digits", "--out", "runs/smoke", "--json", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (work / "runs" / "smoke" / "best.pt").is_file()
    assert summary["epochs"] == 1, summary
    assert "mobilenet_v2" in json.dumps(summary)  # the built-in recipe's model


@pytest.mark.slow
def test_the_base_install_exports_onnx_and_names_the_extra_for_tflite_and_plots(installed):
    """The wheel without extras (no litert-torch, no matplotlib): TFLite export is refused up front with the extra
    to install and nothing written; ONNX export, bench and a tables-only report work."""
    venv, venv_bin, work, env = installed
    missing = subprocess.run([str(venv_bin / "python"), "-c", "import importlib.util as u; "
                              "print(u.find_spec('litert_torch'), u.find_spec('matplotlib'))"],
                             env=env, capture_output=True, text=True, check=True)
    assert missing.stdout.split() == ["None", "None"]  # the base install really lacks both

    out = work / "lean-export"
    done = run(venv_bin, env, work, "export", "mobilenet_v2", "--width", "0.35", "--resolution", "32",
               "--num-classes", "10", "--out", str(out))
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip()
    assert "TFLite export needs the tflite extra" in message and "pip install 'edgekit-ml[tflite]'" in message
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert not out.exists()

    done = run(venv_bin, env, work, "export", "mobilenet_v2", "--width", "0.35", "--resolution", "32",
               "--num-classes", "10", "--format", "onnx", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model.onnx").is_file() and not list(out.glob("*.tflite"))

    done = run(venv_bin, env, work, "bench", str(out), "--runs", "5", "--min-seconds", "0", "--warmup-seconds", "0",
               "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["runs"][0]["results"][0]["steady"]["p50_ms"] > 0

    done = run(venv_bin, env, work, "report", str(out), "--out", str(work / "lean-report"), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    written = {Path(p).name for p in json.loads(done.stdout)["written"]}
    assert written == {"report.md", "report.html", "report.json"}
    assert "pip install 'edgekit-ml[report]'" in (work / "lean-report" / "report.md").read_text()
