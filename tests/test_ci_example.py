"""The shipped GitHub Actions example, run step by step on a small model: it installs edgekit, passes, then catches
a regression.

Every `run:` step runs, the install included: into a fresh virtual environment outside the repository (see
tests/test_wheel.py for the strategy), with the workflow's own environment except what points the install here:
EDGEKIT_SPEC is this checkout instead of the released edgekit-ml, uv uses the package sources the test environment's
pip is configured with, and UV_TORCH_BACKEND (PyTorch's own CPU index, out of reach offline) is left unset.
Steps that are actions (`uses:`) are not shell; the reporter's settings are checked instead.
"""

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from conftest import CONVERGED_DIGITS_RECIPE, REPO, write_recipe
from test_wheel import clean_env, fresh_venv, outside_repo_dir, uv_binary, uv_env

WORKFLOW = REPO / "docs" / "ci" / "edgekit-check.yml"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def workflow_steps() -> tuple[dict[str, str], list[tuple[str, str]]]:
    flow = workflow()
    steps = [(s["name"], s["run"]) for s in flow["jobs"]["check"]["steps"] if "run" in s]
    return {k: str(v) for k, v in flow["env"].items()}, steps


def run_workflow(env: dict[str, str], cwd: Path, venv_bin: Path) -> dict[str, int]:
    """Every `run:` step in order, as the runner would (bash -e), stopping at the first failure."""
    base, steps = workflow_steps()
    uv_dir = cwd.parent / "uv-bin"  # uv alone on PATH (setup-uv's part), not the test environment's edgekit
    uv_dir.mkdir(exist_ok=True)
    if not (uv_dir / "uv").exists():
        (uv_dir / "uv").symlink_to(uv_binary())
    full = {**clean_env(venv_bin, cwd.parent / "home", [uv_dir]), **base, **uv_env(),
            "EDGEKIT_SPEC": f"edgekit-ml[tflite] @ {REPO.as_uri()}", **env}
    full.pop("UV_TORCH_BACKEND", None)
    codes = {}
    for name, script in steps:
        done = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=full, capture_output=True, text=True,
                              timeout=900, check=False)
        codes[name] = done.returncode
        if done.returncode != 0:
            codes["stderr"] = done.stderr[-4000:]  # type: ignore[assignment]
            break
    return codes


def test_the_workflow_runs_the_verbs_edgekit_has():
    env, steps = workflow_steps()
    assert [name for name, _ in steps] == ["Install edgekit", "Train", "Export FP32 and INT8", "Check INT8 accuracy"]
    assert "--junit" in steps[-1][1] and "--baseline" in steps[-1][1]
    install = steps[0][1]
    # the CPU build of torch, and edgekit under its distribution name (the name edgekit is another project's)
    assert env["UV_TORCH_BACKEND"] == "cpu" and '"torch==2.13.0"' in install and '"$EDGEKIT_SPEC"' in install
    assert "'edgekit-ml[tflite]'" in env["EDGEKIT_SPEC"] and "vars.EDGEKIT_SPEC" in env["EDGEKIT_SPEC"]
    assert "pip install edgekit" not in install


def test_the_junit_is_published_by_a_reporter_with_permission_to_write_checks():
    flow = workflow()
    assert flow["permissions"]["checks"] == "write"
    steps = flow["jobs"]["check"]["steps"]
    check = next(s for s in steps if s.get("name") == "Check INT8 accuracy")
    assert '--junit "$JUNIT"' in check["run"] and flow["env"]["JUNIT"] == "reports/edgekit-check.xml"
    reporter = next(s for s in steps if s.get("uses", "").startswith("mikepenz/action-junit-report@"))
    assert reporter["with"]["report_paths"] == "${{ env.JUNIT }}"
    assert "cancelled" in reporter["if"]  # also (above all) when the check step fails
    assert steps.index(reporter) > steps.index(check)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "reports/" and "cancelled" in upload["if"]
    assert any(s.get("uses", "").startswith("astral-sh/setup-uv@") for s in steps[:steps.index(check)])


@pytest.fixture
def fresh_venv_bin():
    root = outside_repo_dir("edgekit-ci-")
    try:
        venv_bin = fresh_venv(root / "venv")
        # The test's data, `digits`, comes from scikit-learn (a dev dependency); the workflow installs the rest.
        done = subprocess.run([uv_binary(), "pip", "install", "--python", str(venv_bin / "python"), "scikit-learn"],
                              env={**clean_env(venv_bin, root / "home"), **uv_env()}, capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        yield venv_bin, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_ci_example_passes_then_fails_on_an_accuracy_regression(fresh_venv_bin):
    venv_bin, root = fresh_venv_bin
    tmp_path = root / "repo"  # the runner's checkout of the user's repository
    tmp_path.mkdir()
    recipe = write_recipe(tmp_path / "digits.yaml", CONVERGED_DIGITS_RECIPE)
    env = {"RECIPE": str(recipe), "RUN": "runs/ci", "SAMPLES": "200", "MAX_DROP": "1.0",
           "BASELINE": "ci/edgekit-baseline.json", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}

    # Once, by a developer: train, export and record the baseline that gets committed.
    codes = run_workflow({**env, "BASELINE": "ci/none.json"}, tmp_path, venv_bin)
    assert codes["Install edgekit"] == 0, codes
    assert (venv_bin / "edgekit").is_file()
    assert codes["Train"] == 0 and codes["Export FP32 and INT8"] == 0, codes
    assert codes["Check INT8 accuracy"] == 2, codes  # no baseline yet: an input error, not a failed check
    done = subprocess.run([str(venv_bin / "edgekit"), "check", "runs/ci/export", "--samples", "200", "--baseline",
                           env["BASELINE"], "--update-baseline"], cwd=tmp_path, capture_output=True, text=True,
                          env=clean_env(venv_bin, root / "home"), check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    baseline = json.loads((tmp_path / env["BASELINE"]).read_text())
    (key, entry), = baseline["models"].items()
    assert key == "mobilenet_v1-w0.5-r32@digits" and entry["samples"] == 200
    assert entry["accuracy"]["torch"] > 0.5

    # The pull request as it stands: passes.
    codes = run_workflow(env, tmp_path, venv_bin)
    assert codes == {"Install edgekit": 0, "Train": 0, "Export FP32 and INT8": 0, "Check INT8 accuracy": 0}, codes
    suites = ET.parse(tmp_path / "reports" / "edgekit-check.xml").getroot()
    assert suites.get("failures") == "0" and int(suites.get("tests")) >= 4  # 2 drops + 3 formats vs baseline
    assert "edgekit check: passed" in (tmp_path / "reports" / "edgekit-check.md").read_text()
    assert "edgekit check: passed" in (tmp_path / "summary.md").read_text()

    # A change that costs accuracy (far less training): the same workflow fails the check step, and says why.
    weak_recipe = CONVERGED_DIGITS_RECIPE.replace("epochs: 6", "epochs: 1\n  limit_batches: 4")
    weak = write_recipe(tmp_path / "weak.yaml", weak_recipe)
    codes = run_workflow({**env, "RECIPE": str(weak), "RUN": "runs/weak"}, tmp_path, venv_bin)
    assert codes["Train"] == 0 and codes["Export FP32 and INT8"] == 0, codes
    assert codes["Check INT8 accuracy"] == 1, codes
    suites = ET.parse(tmp_path / "reports" / "edgekit-check.xml").getroot()
    failures = [f.get("message") for f in suites.iter("failure")]
    assert int(suites.get("failures")) == len(failures) >= 3
    assert all("regressed" in m for m in failures), failures
    assert json.loads((tmp_path / env["BASELINE"]).read_text()) == baseline  # never rewritten by a failing run
