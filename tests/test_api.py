"""The public Python API (issue 32): `import edgekit` stays fast and loads the API on first use; the names that are
also subpackages (edgekit.export, edgekit.quantize, ...) stay importable and are callable; the code in the README
and docs/api.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=cwd,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_import_is_light_and_the_api_loads_on_first_use() -> None:
    out = _python("import sys, edgekit\n"
                  "print(sorted(m for m in ('torch', 'numpy', 'edgekit.api') if m in sys.modules))\n"
                  "edgekit.create_model\n"
                  "print('edgekit.api' in sys.modules)\n")
    assert out.split("\n")[:2] == ["[]", "True"]


def test_api_names_are_callable_and_subpackages_still_import() -> None:
    out = _python(
        "import edgekit\n"
        "import edgekit.exporting.pipeline as pipeline\n"  # the subpackage first, as library code does
        "from edgekit.quantization.options import Int8Options\n"
        "import edgekit.training.loop, edgekit.evaluate, edgekit.gate.checks, edgekit.benchmark.host\n"
        "print(all(callable(getattr(edgekit, n)) for n in edgekit.API))\n"
        "print(callable(pipeline.export_model), edgekit.exporting.FORMATS, edgekit.evaluation.Evaluation.__name__)\n"
        "print(sorted(set(edgekit.API) - set(dir(edgekit))))\n")
    assert out.split("\n")[:3] == ["True", "True ('onnx', 'tflite') Evaluation", "[]"]


def test_public_functions_are_typed() -> None:
    import inspect

    import edgekit
    from edgekit import api

    for name in api.__all__:
        function = getattr(api, name)
        if inspect.isfunction(function):
            signature = inspect.signature(function)
            untyped = [p for p in signature.parameters.values() if p.annotation is inspect.Parameter.empty]
            assert not untyped and signature.return_annotation is not inspect.Parameter.empty, name
    assert edgekit.create_model("mobilenet_v2", width=0.35, num_classes=10).spec.num_classes == 10


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.slow
@pytest.mark.parametrize("doc", ["README.md", "docs/api.md"])
def test_documented_python_runs(doc: str, tmp_path: Path) -> None:
    blocks = _python_blocks(REPO / doc)
    assert blocks, f"{doc} has no python block"
    for block in blocks:
        _python(block, cwd=tmp_path)
