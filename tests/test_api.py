"""The public Python API (issues 32 and 39): `import edgekit` stays fast and loads the API on first use; every public
name is the API's own object (its signature and docstring, never a package's); the API takes every option the CLI
takes; the code in the README and docs/api.md runs as written."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import types
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


def test_every_public_name_shows_its_own_signature_and_docstring() -> None:
    # In a fresh process, with the internal packages imported first (as library code does): no package may take
    # an API name's place, or lend it a docstring.
    out = _python(
        "import edgekit.exporting.pipeline, edgekit.quantization.options, edgekit.benchmark.host\n"
        "import edgekit.gate.checks, edgekit.training.loop, edgekit.evaluation, edgekit.pipeline.sweep\n"
        "import edgekit, inspect, types\n"
        "for name in edgekit.__all__:\n"
        "    value = getattr(edgekit, name)\n"
        "    print(name, isinstance(value, types.ModuleType), value.__doc__ == edgekit.__doc__)\n")
    rows = [line.split() for line in out.splitlines()]
    assert [r[0] for r in rows] == list(__import__("edgekit").__all__)
    assert all(r[1:] == ["False", "False"] for r in rows), rows

    import edgekit
    from edgekit import api

    for name in edgekit.__all__:
        value = getattr(edgekit, name)
        assert value is getattr(api, name), name
        own = value.__dict__.get("__doc__") if isinstance(value, type) else value.__doc__
        assert own and len(own.split()) >= 5, f"{name} has no docstring of its own"
        if isinstance(value, types.FunctionType) or (isinstance(value, type) and not issubclass(value, Exception)):
            parameters = inspect.signature(value).parameters.values()
            named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            assert named, f"{name}{inspect.signature(value)} hides its parameters"
    assert "int8_io" in inspect.signature(edgekit.quantize).parameters
    assert sorted(set(edgekit.__all__) - set(dir(edgekit))) == []


def _cli_options(verb: str) -> set[str]:
    """The option and argument names of `edgekit VERB`, as typer reads them from the command's function."""
    import typer.main

    from edgekit.cli.main import app

    command = typer.main.get_command(app)
    for word in verb.split():  # a verb of a group: "int8 report"
        command = command.commands[word]  # type: ignore[attr-defined]
    return {p.name for p in command.params}


# CLI name -> API keyword where the two spell one option differently (the API's Python names), and the options that
# only make sense on a command line (printing). Everything else must be the same name on both.
CLI_TO_API = {
    "export": {"target": "model", "format": "formats", "option": "options", "calib": "calibration",
               "eval_data": "evaluate_on", "as_json": None},
    "bench": {"target": "artifact", "warmup": "warmup_runs", "as_json": None},
    "check": {"artifacts": "artifact", "junit": None, "markdown": None, "as_json": None,
              # the preprocessing flags are keys of the API's one preprocess= (a YAML path or a dict)
              **dict.fromkeys(("resize", "crop_ratio", "mean", "std", "input_range", "layout", "labels"),
                              "preprocess")},
    "train": {"recipe_path": "recipe", "as_json": None},
    "int8 report": {"format": "formats", "top": None, "as_json": None},
}


@pytest.mark.parametrize("verb", sorted(CLI_TO_API))
def test_the_api_takes_every_option_the_cli_takes(verb: str) -> None:
    from edgekit import api

    aliases = CLI_TO_API[verb]
    wanted = {aliases.get(name, name) for name in _cli_options(verb)} - {None}
    keywords = set(inspect.signature(getattr(api, verb.replace(" ", "_"))).parameters)
    assert wanted - keywords == set(), f"edgekit.{verb} lacks the CLI's options {sorted(wanted - keywords)}"
    # and the API invents no option the command line lacks (the API's own: Python objects for data, a model name)
    extra = keywords - wanted - {"name", "device", "int8", "calibration"}
    assert extra == set(), f"edgekit.{verb} has options the CLI lacks: {sorted(extra)}"


def test_the_cli_and_the_api_build_the_same_int8_options(tmp_path: Path) -> None:
    """Both go through edgekit.options: the same flags refused the same way."""
    from typer.testing import CliRunner

    import edgekit
    from edgekit.cli.main import app

    result = CliRunner().invoke(app, ["export", "mobilenet_v2", "--per-tensor", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "--per-tensor applies to INT8 export: add --int8" in result.output
    with pytest.raises(edgekit.EdgekitError, match="--per-tensor applies to INT8 export: add --int8"):
        edgekit.export("mobilenet_v2", per_tensor=True, out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


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
