"""The shipped GitHub Actions example, run step by step on a small model: it passes, then catches a regression."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from conftest import CONVERGED_DIGITS_RECIPE, REPO, run_edgekit, write_recipe

WORKFLOW = REPO / "docs" / "ci" / "edgekit-check.yml"
NOT_HERE = {"Install edgekit"}  # this checkout is installed already


def workflow_steps() -> tuple[dict[str, str], list[tuple[str, str]]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = [(s["name"], s["run"]) for s in workflow["jobs"]["check"]["steps"]
             if "run" in s and s["name"] not in NOT_HERE]
    return {k: str(v) for k, v in workflow["env"].items()}, steps


def run_workflow(env: dict[str, str], cwd: Path) -> dict[str, int]:
    """Every `run:` step in order, as the runner would (bash -e), stopping at the first failure."""
    base, steps = workflow_steps()
    bin_dir = str(Path(sys.executable).parent)
    full = {**os.environ, **base, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    codes = {}
    for name, script in steps:
        done = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=full, capture_output=True, text=True,
                              timeout=900, check=False)
        codes[name] = done.returncode
        if done.returncode != 0:
            codes["stderr"] = done.stderr  # type: ignore[assignment]
            break
    return codes


def test_the_workflow_runs_the_verbs_edgekit_has():
    _, steps = workflow_steps()
    assert [name for name, _ in steps] == ["Train", "Export FP32 and INT8", "Check INT8 accuracy"]
    assert "--junit" in steps[-1][1] and "--baseline" in steps[-1][1]


@pytest.mark.slow
def test_ci_example_passes_then_fails_on_an_accuracy_regression(tmp_path):
    recipe = write_recipe(tmp_path / "digits.yaml", CONVERGED_DIGITS_RECIPE)
    env = {"RECIPE": str(recipe), "RUN": "runs/ci", "SAMPLES": "200", "MAX_DROP": "1.0",
           "BASELINE": "ci/edgekit-baseline.json", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}

    # Once, by a developer: train, export and record the baseline that gets committed.
    codes = run_workflow({**env, "BASELINE": "ci/none.json"}, tmp_path)
    assert codes["Train"] == 0 and codes["Export FP32 and INT8"] == 0
    assert codes["Check INT8 accuracy"] == 2, codes  # no baseline yet: an input error, not a failed check
    done = run_edgekit("check", "runs/ci/export", "--samples", "200", "--baseline", env["BASELINE"],
                       "--update-baseline", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    baseline = json.loads((tmp_path / env["BASELINE"]).read_text())
    (key, entry), = baseline["models"].items()
    assert key == "mobilenet_v1-w0.5-r32@digits" and entry["samples"] == 200
    assert entry["accuracy"]["torch"] > 0.5

    # The pull request as it stands: passes.
    codes = run_workflow(env, tmp_path)
    assert codes == {"Train": 0, "Export FP32 and INT8": 0, "Check INT8 accuracy": 0}, codes
    suites = ET.parse(tmp_path / "reports" / "edgekit-check.xml").getroot()
    assert suites.get("failures") == "0" and int(suites.get("tests")) >= 4  # 2 drops + 3 formats vs baseline
    assert "edgekit check: passed" in (tmp_path / "reports" / "edgekit-check.md").read_text()
    assert "edgekit check: passed" in (tmp_path / "summary.md").read_text()

    # A change that costs accuracy (far less training): the same workflow fails the check step, and says why.
    weak_recipe = CONVERGED_DIGITS_RECIPE.replace("epochs: 6", "epochs: 1\n  limit_batches: 4")
    weak = write_recipe(tmp_path / "weak.yaml", weak_recipe)
    codes = run_workflow({**env, "RECIPE": str(weak), "RUN": "runs/weak"}, tmp_path)
    assert codes["Train"] == 0 and codes["Export FP32 and INT8"] == 0
    assert codes["Check INT8 accuracy"] == 1, codes
    suites = ET.parse(tmp_path / "reports" / "edgekit-check.xml").getroot()
    failures = [f.get("message") for f in suites.iter("failure")]
    assert int(suites.get("failures")) == len(failures) >= 3
    assert all("regressed" in m for m in failures), failures
    assert json.loads((tmp_path / env["BASELINE"]).read_text()) == baseline  # never rewritten by a failing run
