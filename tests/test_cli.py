"""The real `edgekit` command line, run as a subprocess."""

import json

import pytest


def test_models_table_lists_every_family(edgekit_cli):
    result = edgekit_cli("models")
    assert result.returncode == 0, result.stderr
    for name in ("mobilenet_v1", "mobilenet_v3_small", "shufflenet_v1", "shufflenet_v2_x1_0", "efficientnet_b7",
                 "efficientnet_lite0", "regnet_x_200mf", "regnet_y_3_2gf"):
        assert name in result.stdout
    assert "3,504,872" in result.stdout and "300.8M" in result.stdout  # mobilenet_v2's row


def test_models_json_and_family_filter(edgekit_cli):
    result = edgekit_cli("models", "--family", "mobilenetv3", "--json")
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["mobilenet_v3_large", "mobilenet_v3_small"]
    assert rows[1]["params"] == 2_542_856 and rows[1]["resolution"] == 224


def test_profile_json(edgekit_cli):
    result = edgekit_cli("profile", "mobilenet_v2", "--width", "0.75", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == 2_636_424
    assert data["macs"] == pytest.approx(209.1e6, rel=0.01)
    assert len(data["layers"]) > 50


def test_profile_table_with_options(edgekit_cli):
    result = edgekit_cli("profile", "shufflenet_v1", "-o", "groups=8", "--res-mult", "0.5", "--in-channels", "1")
    assert result.returncode == 0, result.stderr
    assert "input 1x112x112" in result.stdout
    assert "g8" in result.stdout  # the grouped 1x1 convs are shown with their groups
    assert "params" in result.stdout and "MACs" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "mobilenet_v5"], "unknown model 'mobilenet_v5': did you mean"),
        (["profile", "mobilenet_v2", "--width", "0"], "width 0.0 is out of range"),
        (["profile", "mobilenet_v2", "--width", "4.5"], "width 4.5 is out of range"),
        (["profile", "mobilenet_v2", "--resolution", "16"], "resolution 16 is not usable"),
        (["profile", "mobilenet_v2", "--resolution", "64", "--res-mult", "0.5"], "give one of them"),
        (["profile", "shufflenet_v1", "-o", "groups=6"], "groups must be one of"),
        (["profile", "mobilenet_v2", "-o", "groups=2"], "does not take option groups"),
        (["profile", "mobilenet_v2", "-o", "groups"], "is not KEY=VALUE"),
        (["models", "--family", "vgg"], "no family 'vgg'"),
    ],
)
def test_bad_input_one_line_exit_2_no_traceback(edgekit_cli, args, message):
    result = edgekit_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


def test_non_integer_resolution_is_a_usage_error(edgekit_cli):
    result = edgekit_cli("profile", "mobilenet_v2", "--resolution", "100.5")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_help_and_version(edgekit_cli):
    assert "Layer-by-layer" in edgekit_cli("--help").stdout
    assert "--res-mult" in edgekit_cli("profile", "--help").stdout
    assert edgekit_cli("--version").stdout.startswith("edgekit ")


def test_help_paragraphs_wrap_at_the_terminal_not_at_the_source():
    """A description's paragraph, wrapped at 120 columns in the docstring, fills a wide terminal's line (typer
    alone keeps the source's breaks)."""
    from tests.conftest import run_edgekit

    wide = run_edgekit("check", "--help", env={"COLUMNS": "300"})
    assert wide.returncode == 0
    paragraph = next(line for line in wide.stdout.splitlines() if "Exit 0 when every check passes" in line)
    assert "under `check`" in paragraph
    listed = run_edgekit("latency", "calibrate", "--help", env={"COLUMNS": "300"}).stdout
    assert "(--stable or not)" in next(line for line in listed.splitlines() if "A one-time job" in line)


def test_flags_read_as_flags_in_help():
    """--json, --int8, --help take no value, and --help shows none (typer would print <bool> beside them)."""
    from tests.conftest import run_edgekit

    for verb in (["export"], ["bench"], ["check"], ["latency", "calibrate"]):
        shown = run_edgekit(*verb, "--help", env={"COLUMNS": "200"}).stdout
        json_line = next(line for line in shown.splitlines() if "--json" in line)
        assert "<bool>" not in shown and "<int>" not in json_line, verb
    assert "<int>" in run_edgekit("bench", "--help", env={"COLUMNS": "200"}).stdout  # valued options keep types


@pytest.mark.parametrize(("args", "message"), [
    (["run", "mobilenet_v2_fashon"], "does not exist: did you mean mobilenet_v2_fashion"),
    (["bench", ".", "--device", "rpi5x"], "unknown device 'rpi5x': did you mean rpi5"),
    (["bench", ".", "--device", "zzz"], "known devices are local,"),
])
def test_recipe_and_device_names_get_did_you_mean(edgekit_cli, tmp_path, args, message):
    (tmp_path / "m.onnx").write_bytes(b"")
    args = [str(tmp_path / "m.onnx") if a == "." else a for a in args]
    result = edgekit_cli(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_old_flag_spelling_works_with_a_deprecation_warning(edgekit_cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: {name: mobilenet_v2, resolution: 32}\ndata: {source: digits}\n")
    result = edgekit_cli("sweep", str(recipe), "--width", "0", "--resolution", "32", "--threads", "1")
    assert "--threads is deprecated: use --bench-threads" in result.stderr
    assert result.returncode == 2 and "every width must be in (0, 4]" in result.stderr  # and the flag was taken
    assert "Deprecated" not in run_help_of("sweep")


def run_help_of(verb: str) -> str:
    from tests.conftest import run_edgekit

    return run_edgekit(verb, "--help", env={"COLUMNS": "200"}).stdout
