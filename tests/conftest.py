import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the scripts in tools/ import from the repository root too
    sys.path.insert(0, str(REPO))
# A suite started in the background of a script (`bash .ci/run &`) inherits SIGINT ignored, and ignored signals pass
# to every child: the Ctrl-C tests' trainings would then never see their Ctrl-C. A handler (unlike SIG_IGN) is reset
# to the default in children, so each edgekit process gets Ctrl-C as a user's terminal gives it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
DURATIONS = Path(__file__).with_name("durations.json")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest test files first (tests/durations.json, from a full run: tools/test_durations.py). With
    `--dist loadfile --no-loadscope-reorder` (tools/test.sh) the workers start on the long files and end on short
    ones, instead of one of them running a long file alone at the end. A file the table lacks counts as median."""
    cost = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
    typical = statistics.median(cost.values()) if cost else 0.0
    # stable, and by file name within a cost, so a file's tests stay together and in their order
    items.sort(key=lambda item: (-cost.get(item.nodeid.split("::")[0], typical), item.nodeid.split("::")[0]))


RECIPES = sorted(p for p in (REPO / "recipes").glob("*.yaml") if not p.stem.endswith("_finetune"))
# Recipes whose data path the user replaces (their weights are published ones, by name): tests/test_finetune.py.
FINETUNE_RECIPES = sorted((REPO / "recipes").glob("*_finetune.yaml"))


def run_edgekit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


# The command line where torch is not installed: every import of torch fails, as in a lean environment.
WITHOUT_TORCH = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoTorch())
sys.argv = ["edgekit", *sys.argv[1:]]
from edgekit.cli.main import main
try:
    main()
finally:
    print("torch imported:", any(m == "torch" or m.startswith("torch.") for m in sys.modules), file=sys.stderr)
"""


def run_edgekit_without_torch(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`edgekit ARGS` in an interpreter that cannot import torch; stderr ends with "torch imported: False/True"."""
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def edgekit_cli():
    return run_edgekit


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# A real but tiny training job: MobileNetV1 x0.5 on scikit-learn's 8x8 digits, upsampled to 32 px
# (about 85% validation top-1 after 3 epochs, a few seconds each).
DIGITS_RECIPE = """\
name: digits-smoke
model:
  name: mobilenet_v1
  width: 0.5
  resolution: 32
  in_channels: 1
data:
  source: digits
  crop_padding: 1
train:
  epochs: 3
  batch_size: 32
  optimizer: adamw
  lr: 0.003
  weight_decay: 0.01
  warmup_epochs: 0.2
  ema_decay: 0.99
"""
# Trained to its plateau (about 96% here, against 83% after 3 epochs): tests that gate on the INT8 drop then
# measure quantization, not the noise of a half-trained model, which differs from CPU to CPU (a 3-epoch model
# lost 2.5 pp on one machine and passed on another).
CONVERGED_DIGITS_RECIPE = DIGITS_RECIPE.replace("epochs: 3", "epochs: 6")


@pytest.fixture
def digits_recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path / "digits.yaml", DIGITS_RECIPE)


@pytest.fixture(scope="session")
def digits_mobilenet_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MobileNetV2 trained on digits by `edgekit train`, shared by the INT8 tests."""
    root = tmp_path_factory.mktemp("int8")
    recipe = DIGITS_RECIPE.replace("name: mobilenet_v1\n  width: 0.5", "name: mobilenet_v2\n  width: 0.5")
    recipe = recipe.replace("epochs: 3", "epochs: 4")
    write_recipe(root / "mv2.yaml", recipe)
    result = run_edgekit("train", str(root / "mv2.yaml"), "--out", str(root / "run"))
    assert result.returncode == 0, result.stderr
    return root / "run" / "best.pt"


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory, digits_mobilenet_v2: Path) -> Path:
    """That MobileNetV2 exported FP32 + INT8: its manifest names a dataset, so bench inputs are real samples."""
    out = tmp_path_factory.mktemp("artifact") / "mv2"
    done = run_edgekit("export", str(digits_mobilenet_v2), "--int8", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out
