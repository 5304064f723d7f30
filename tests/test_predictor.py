"""The latency predictor: models cut into their blocks, the table's fits, and the three verbs end to end."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgekit.core.errors import EdgekitError
from edgekit.models import build, get_entry, list_models, resolve_spec
from edgekit.models.complexity import profile_spec
from edgekit.predictor.calibrate import calibration_grid, point_key
from edgekit.predictor.context import context_times, unit_shares
from edgekit.predictor.table import LatencyTable, load_table, new_table, table_path, unit_features
from edgekit.predictor.units import OP_FEATURES, cut, cut_spec
from tests.conftest import run_edgekit

# One network per family (and MobileNetV1, whose blocks are Sequential subclasses).
FAMILY_MODELS = sorted({get_entry(n).family: n for n in reversed(list_models())
                        if not get_entry(n).design_space}.values())


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_cut_accounts_for_the_whole_model(name):
    spec = resolve_spec(name, resolution=64, num_classes=7, in_channels=1)
    units = cut_spec(spec)
    assert len(units) >= 10, "a model is cut into its blocks, not kept whole"
    assert units[0].input_shape == spec.input_shape and units[-1].output_shape == (7,)
    for before, after in zip(units, units[1:], strict=False):
        assert before.output_shape == after.input_shape
    assert sum(u.macs for u in units) == profile_spec(name, resolution=64, num_classes=7, in_channels=1).macs
    with torch.device("meta"):
        assert sum(u.params for u in units) == sum(p.numel() for p in build(spec).parameters())


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_units_in_sequence_compute_the_model(name):
    """The units are the model, not a description of it: chained, they give the model's own output."""
    spec = resolve_spec(name, resolution=64, num_classes=5)
    torch.manual_seed(0)
    model = build(spec).eval()
    x = torch.randn(2, *spec.input_shape)
    with torch.no_grad():
        expected = model(x)
        y = x
        for unit in cut(model, spec.input_shape):
            y = unit.module(y)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)


def test_signatures_name_what_is_computed():
    units = cut_spec(resolve_spec("mobilenet_v2", resolution=96))
    by_name = {u.name: u for u in units}
    # features.5 and features.6 are the same inverted residual on the same shape: one measurement serves both
    assert by_name["features.5"].signature == by_name["features.6"].signature
    assert by_name["features.4"].signature != by_name["features.5"].signature  # stride 2 vs 1, other shapes
    other = {u.signature for u in cut_spec(resolve_spec("mobilenet_v2", resolution=128))}
    shared = [u for u in units if u.signature in other]
    assert [u.kind for u in shared] == ["Linear"], "at another resolution only the classifier has the same shapes"
    v3 = {u.signature for u in cut_spec(resolve_spec("mobilenet_v3_large", resolution=96))}
    assert not v3 & {u.signature for u in units}
    assert [u.kind for u in units][:2] == ["conv3x3", "mobilenet_v2.InvertedResidual"]


def test_dropout_rates_do_not_split_a_signature():
    """EfficientNet's stochastic-depth rate grows with a block's depth, so B1's extra blocks shift every rate; at
    inference the blocks compute the same as B0's, and share their measurements."""
    b0 = cut_spec(resolve_spec("efficientnet_b0", width=0.5, resolution=64))
    b1 = cut_spec(resolve_spec("efficientnet_b1", width=0.5, resolution=64))
    assert {u.signature for u in b0} <= {u.signature for u in b1}
    rates = {m.p for u in b1 for m in u.module.modules() if type(m).__name__ == "StochasticDepth"}
    assert len(rates) > 5, "the blocks do differ in their drop rate (else the test is moot)"


def test_the_same_block_at_another_width_shares_a_template():
    narrow = {u.name: u for u in cut_spec(resolve_spec("mobilenet_v2", width=0.5, resolution=96))}
    wide = {u.name: u for u in cut_spec(resolve_spec("mobilenet_v2", width=1.0, resolution=128))}
    assert narrow["features.5"].signature != wide["features.5"].signature
    assert narrow["features.5"].template == wide["features.5"].template == wide["features.6"].template
    assert wide["features.4"].template != wide["features.5"].template  # stride 2 against 1
    v3 = {u.template for u in cut_spec(resolve_spec("mobilenet_v3_large", resolution=96))}
    assert not v3 & {u.template for u in narrow.values()}


def _record(i: int, macs: float, act_elems: int, params: int, kind: str = "k") -> dict:
    half = act_elems // 2
    ops = {"macs_pointwise": int(0.6 * macs), "macs_dense": 0, "macs_depthwise": int(0.4 * macs), "macs_grouped": 0,
           "macs_linear": 0, "layer_outputs": act_elems, "layers": 3, "alignment": 16, "group_width": 0}
    return {"name": f"u{i}", "kind": kind, "signature": f"s{i}", "input_shape": [half], "output_shape": [half],
            "macs": int(macs), "params": params, "ops": ops}


def _sized_record(i: int, size: float, rng: np.random.Generator) -> dict:
    """A unit of kind "k" whose work grows with size, as real units' does, split at random between 1x1 and
    depthwise layers."""
    record = _record(i, size * 1e6, int(size * 2e4 * rng.uniform(0.8, 1.25)), int(size * 2e4 * rng.uniform(0.8, 1.25)))
    record["ops"]["macs_pointwise"] = int(rng.uniform(0.2, 0.9) * record["macs"])
    record["ops"]["macs_depthwise"] = record["macs"] - record["ops"]["macs_pointwise"]
    record["ops"]["layer_outputs"] = int(size * 1e4 * rng.uniform(0.8, 1.25))
    record["ops"]["layers"] = int(rng.integers(1, 6))
    return record


def _kind_table(truth, n: int = 24, seed: int = 0):
    """A table of n measured units of kind "k" that cost truth(record)."""
    table = new_table("dev", "onnxruntime", 1, {})
    rng = np.random.default_rng(seed)
    for i in range(n):
        record = _sized_record(i, rng.uniform(1, 50), rng)
        record["ms"] = truth(record)
        table.units[record["signature"]] = record
    return table


def _unit_like(record: dict):
    """A Unit with the record's figures (predict takes Units)."""
    unit = cut_spec(resolve_spec("mobilenet_v2", resolution=64))[3]
    unit.kind, unit.signature, unit.macs, unit.params, unit.ops = (
        record["kind"], record["signature"], record["macs"], record["params"], record["ops"])
    unit.input_shape, unit.output_shape = tuple(record["input_shape"]), tuple(record["output_shape"])
    return unit


def test_cut_counts_each_kind_of_layer():
    units = cut_spec(resolve_spec("mobilenet_v2", resolution=64))
    block = next(u for u in units if u.kind == "mobilenet_v2.InvertedResidual" and u.ops["layers"] == 3)
    assert block.ops["macs_pointwise"] and block.ops["macs_depthwise"] and not block.ops["macs_dense"]
    assert sum(v for k, v in block.ops.items() if k.startswith("macs_")) == block.macs
    assert units[0].ops["macs_dense"] == units[0].macs  # the 3x3 stem
    assert units[-1].ops["macs_linear"] == 1280 * 1000


def test_cut_records_which_kernels_a_unit_needs():
    """Channels per group and channel alignment decide a runtime's kernel: RegNet-X 600MF's 3x3 convolutions have
    24 channels per group (a multiple of 8, not of 16), 400MF's have 16."""
    def blocks(name):
        return [u for u in cut_spec(resolve_spec(name, resolution=64)) if u.ops["macs_grouped"]]

    assert {u.ops["group_width"] for u in blocks("regnet_x_600mf")} == {24}
    assert {u.ops["alignment"] for u in blocks("regnet_x_600mf")} == {8}
    assert {u.ops["group_width"] for u in blocks("regnet_x_400mf")} == {16}
    assert {u.ops["alignment"] for u in blocks("regnet_x_400mf")} == {16}
    mobilenet = cut_spec(resolve_spec("mobilenet_v2", resolution=64))
    assert mobilenet[0].ops["alignment"] == 1  # the stem reads 3 channels
    assert all(u.ops["group_width"] == 0 for u in mobilenet)  # depthwise is not grouped


def test_a_calibration_probes_the_group_widths_a_search_width_runs():
    """ShuffleNetV1 at width 0.75 runs 15, 60, 120 and 240 channels per group, which widths 0.5 and 1.0 never run:
    the grid times it at 0.75 too, between the grid's resolutions (their geometric middle, rounded to 8).
    MobileNetV2 has no grouped convolution and RegNetX-400MF keeps 16 channels per group at every width: nothing
    to probe."""
    specs, probes = calibration_grid(("shufflenet_v1", "mobilenet_v2", "regnet_x_400mf"), (0.5, 1.0), (128, 224))
    assert len(specs) == 12
    assert [point_key(p) for p in probes] == ["shufflenet_v1 w0.75 r168"]
    in_grid = {u.ops["group_width"] for s in specs if s.name == "shufflenet_v1" for u in cut_spec(s)}
    assert {u.ops["group_width"] for u in cut_spec(probes[0])} - in_grid == {15, 60, 120, 240}
    # a search width outside the grid's widths is not the grid's to probe
    assert calibration_grid(("shufflenet_v1",), (0.5,), (128,))[1] == []
    assert calibration_grid(("shufflenet_v1",), (0.75, 1.0), (128,))[1] == []


def test_an_estimate_takes_its_correction_from_units_on_the_same_kernel_path():
    """Units with 8-aligned channels run 2x the fit; a 8-aligned unit far in size from them, and right beside
    16-aligned ones, is still estimated 2x, not 1x: the kernel features outweigh size."""
    truth = np.array([0.002, 0.004, 0.03, 0.0, 0.0, 0.01, 0.05, 0.01, 0.001, 0.03])

    def linear(r):
        return float(np.dot(unit_features(r), truth))

    table = _kind_table(linear, n=40)
    rng = np.random.default_rng(3)
    for i, size in enumerate((2.0, 2.2, 2.4, 2.6)):  # small slow-path units
        record = _sized_record(200 + i, size, rng)
        record["ops"] |= {"alignment": 8, "group_width": 24}
        table.units[record["signature"]] = record | {"ms": 2 * linear(record)}
    query = _sized_record(300, 40, rng) | {"signature": "unseen"}
    query["ops"] |= {"alignment": 8, "group_width": 24}
    predicted = table.predict([_unit_like(query)]).sum_units_ms
    assert predicted == pytest.approx(2 * linear(query), rel=0.25)
    query["ops"] |= {"alignment": 16, "group_width": 0}  # the same unit on the fast path: the line
    assert table.predict([_unit_like(query)]).sum_units_ms == pytest.approx(linear(query), rel=0.15)


def test_unmeasured_units_are_estimated_from_their_kind():
    truth = np.array([0.002, 0.004, 0.03, 0.0, 0.0, 0.01, 0.05, 0.01, 0.001, 0.03])  # per term of unit_features
    table = _kind_table(lambda r: float(np.dot(unit_features(r), truth)))
    unseen = next(u for u in cut_spec(resolve_spec("mobilenet_v2", resolution=64))
                  if u.ops["macs_depthwise"] and not u.ops["macs_dense"])
    unseen.kind = "k"
    prediction = table.predict([unseen])
    assert prediction.units[0].source == "fit: k"
    assert prediction.sum_units_ms == pytest.approx(float(np.dot(unit_features(unseen), truth)), rel=1e-6)
    assert prediction.measured_fraction == 0.0


def test_a_table_without_a_unit_estimates_it_and_leaves_the_original_whole():
    truth = np.array([0.002, 0.004, 0.03, 0.0, 0.0, 0.01, 0.05, 0.01, 0.001, 0.03])
    table = _kind_table(lambda r: float(np.dot(unit_features(r), truth)) * (1.5 if r["signature"] == "s3" else 1))
    unit = _unit_like(table.units["s3"])
    held_out = table.without({"s3"})
    assert "s3" not in held_out.units and len(held_out.units) == len(table.units) - 1
    assert held_out.predict([unit]).units[0].source == "fit: k"
    assert held_out.predict([unit]).sum_units_ms == pytest.approx(table.units["s3"]["ms"] / 1.5, rel=0.05)
    assert table.predict([unit]).units[0].source == "measured" and "s3" in table.units


def test_an_estimate_carries_the_fit_error_of_its_nearest_measured_units():
    """Measured units that run 40% slower than the kind's linear fit say so of unmeasured units beside them."""
    truth = np.array([0.002, 0.004, 0.03, 0.0, 0.0, 0.01, 0.05, 0.01, 0.001, 0.03])

    def linear(r):
        return float(np.dot(unit_features(r), truth))

    table = _kind_table(linear, n=40)
    rng = np.random.default_rng(7)
    slow_here, elsewhere = (_sized_record(90 + i, size, rng) | {"signature": f"unseen{i}"}
                            for i, size in enumerate((45, 5)))
    for i, scale in enumerate((0.97, 1.0, 1.03)):  # three measured units next to slow_here, 40% over the line
        twin = _record(80 + i, slow_here["macs"] * scale, 0, int(slow_here["params"] * scale))
        twin |= {"input_shape": slow_here["input_shape"], "output_shape": slow_here["output_shape"],
                 "ops": {k: int(v * scale) for k, v in slow_here["ops"].items() if k in OP_FEATURES}
                 | {"layers": 3, "alignment": 16, "group_width": 0}}
        table.units[twin["signature"]] = twin | {"ms": 1.4 * linear(twin)}
    slow_here["ops"]["layers"] = 3
    assert table.predict([_unit_like(slow_here)]).sum_units_ms == pytest.approx(1.4 * linear(slow_here), rel=0.05)
    # far from them the estimate stays near the line (within the noise the three slow units add to the fit)
    assert table.predict([_unit_like(elsewhere)]).sum_units_ms == pytest.approx(linear(elsewhere), rel=0.15)
    plain_fit = float(np.dot(unit_features(slow_here), table._estimator().fits["k"]))
    assert plain_fit < 1.2 * linear(slow_here), "the linear fit alone misses it (else the test is moot)"


@pytest.mark.parametrize("version", [1, 3])
def test_an_older_table_is_refused_with_the_fix(tmp_path, monkeypatch, version):
    """Tables before version 4 keyed units by signatures that counted dropout rates: nothing in them matches."""
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path))
    table = new_table("dev", "onnxruntime", 1, {})
    table.units["s"] = {**_record(0, 1e6, 100, 10), "ms": 0.5}
    path = table_path("dev", "onnxruntime", 1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(table.to_dict() | {"version": version}))
    with pytest.raises(EdgekitError, match=f"older edgekit \\(table version {version}\\).*calibrate it again"):
        load_table("dev", "onnxruntime", 1)


def test_correction_is_fitted_on_calibration_models():
    table = new_table("dev", "onnxruntime", 1, {})
    rng = np.random.default_rng(1)
    coef = np.array([1.1, 0.02, -0.05, 0.01])
    for i in range(12):
        features = [rng.uniform(1, 20), rng.uniform(1, 50), rng.uniform(1, 10), float(rng.integers(10, 60))]
        table.models.append({"key": f"m{i}", "features": features, "measured_ms": float(np.dot(features, coef)),
                             "sum_units_ms": features[0]})
    table.fit_correction()
    assert list(table.correction.values()) == pytest.approx(list(coef), rel=1e-6)
    assert table.predict_record(table.models[0]) == pytest.approx(table.models[0]["measured_ms"], rel=1e-9)


def test_too_few_calibration_models_leave_the_plain_sum():
    table = new_table("dev", "onnxruntime", 1, {})
    table.models = [{"key": "m", "features": [2.0, 1.0, 1.0, 10.0], "measured_ms": 3.0, "sum_units_ms": 2.0}]
    table.fit_correction()
    assert table.predict_record(table.models[0]) == 2.0


@pytest.mark.parametrize("damage", ["version", "nan", "missing", "text", "clock", "no-models"])
def test_a_damaged_table_is_refused(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path))
    table = new_table("dev", "onnxruntime", 1, {})
    table.units["s"] = {**_record(0, 1e6, 100, 10), "ms": 0.5}
    path = table_path("dev", "onnxruntime", 1)
    table.save(path)
    data = json.loads(path.read_text())
    if damage == "version":
        data["version"] = 99
    elif damage == "nan":
        data["units"]["s"]["ms"] = float("nan")
    elif damage == "missing":
        del data["units"]["s"]["macs"]
    elif damage == "clock":
        data["clock"] = "sundial"
    elif damage == "no-models":
        del data["models"]
    path.write_text("{not json" if damage == "text" else json.dumps(data))
    with pytest.raises(EdgekitError, match="calibrate"):
        load_table("dev", "onnxruntime", 1)


def test_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path))
    table = new_table("dev", "onnxruntime", 2, {"arch": "x86_64"})
    table.units["s"] = {**_record(0, 1e6, 100, 10), "ms": 0.5}
    table.save(table_path("dev", "onnxruntime", 2))
    again = load_table("dev", "onnxruntime", 2)
    assert again == table and isinstance(again, LatencyTable)
    assert table_path("dev", "onnxruntime", 2).parent == tmp_path / "predictors"


GRID = ["--family", "mobilenet_v2", "--width", "0.35", "--resolution", "32,48"]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A real calibration on this machine: MobileNetV2 x0.35 at 32 and 48 px, every block timed with ONNX Runtime."""
    home = tmp_path_factory.mktemp("edgekit-home")
    env = {"EDGEKIT_HOME": str(home)}
    done = run_edgekit("latency", "calibrate", *GRID, "--json", env=env)
    assert done.returncode == 0, done.stderr
    return env, json.loads(done.stdout)


def test_calibration_writes_a_table_of_every_block(calibrated):
    env, result = calibrated
    signatures = {u.signature for r in (32, 48)
                  for u in cut_spec(resolve_spec("mobilenet_v2", width=0.35, resolution=r))}
    table = json.loads(Path(result["table"]).read_text())
    assert set(table["units"]) == signatures and result["units"] == len(signatures)
    assert all(u["ms"] > 0 for u in table["units"].values())
    assert [m["model"] for m in result["models"]] == ["mobilenet_v2 w0.35 r32", "mobilenet_v2 w0.35 r48"]
    assert all(m["measured_ms"] > 0 for m in result["models"])
    # two calibration models are too few to fit the correction: the prediction is the plain sum
    assert all(m["predicted_ms"] == pytest.approx(m["sum_units_ms"]) for m in result["models"])
    # every unit's time is its share of a model's profile, so a model's units add up to its measured time (to the
    # classifier, which both models hold and which takes the mean of its two shares)
    assert result["units_in_context"] == len(signatures)
    assert all(u["in_context"] and u["alone_ms"] is None for u in table["units"].values())  # none timed alone
    for model in table["models"]:
        assert sum(model["unit_shares"]) == pytest.approx(1.0) and model["unprofiled_share"] < 0.5
        # (within 10%: the shared classifier's mean share moves with the profile's noise on a busy machine)
        assert model["sum_units_ms"] == pytest.approx(model["measured_ms"], rel=0.1)


def test_recalibrating_measures_only_what_is_new(calibrated):
    env, result = calibrated
    before = json.loads(Path(result["table"]).read_text())
    done = run_edgekit("latency", "calibrate", *GRID, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(Path(result["table"]).read_text())["units"] == before["units"]


def test_predict_a_calibrated_model(calibrated):
    env, _ = calibrated
    done = run_edgekit("latency", "predict", "mobilenet_v2", "--width", "0.35", "--resolution", "32", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {u["source"] for u in result["units"]} == {"measured"} and result["measured_fraction"] == 1.0
    table = load_table_from(env)
    assert result["sum_units_ms"] == pytest.approx(sum(table["units"][u["signature"]]["ms"] for u in result["units"]))
    assert result["measured_ms"] > 0 and "calibration" in result["measured_how"]
    assert result["error_pct"] == pytest.approx(100 * (result["predicted_ms"] / result["measured_ms"] - 1))
    shown = run_edgekit("latency", "predict", "mobilenet_v2", "--width", "0.35", "--resolution", "32", env=env)
    assert shown.returncode == 0 and "predicted latency" in shown.stdout and "measured latency" in shown.stdout


def load_table_from(env):
    path = next(iter((Path(env["EDGEKIT_HOME"]) / "predictors").glob("*.json")))
    return json.loads(path.read_text())


def test_predict_an_unseen_shape_from_the_fits(calibrated):
    env, _ = calibrated
    done = run_edgekit("latency", "predict", "mobilenet_v2",
                       "--width", "0.35", "--resolution", "40", "--measure", "--json",
                       env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # at 40 px the early blocks see shapes never measured (fits); from 3x3 on they are the 48 px model's blocks
    table = load_table_from(env)
    for unit in result["units"]:
        assert (unit["source"] == "measured") == (unit["signature"] in table["units"])
        assert unit["source"] == "measured" or unit["source"].startswith("fit: ")
    assert result["units"][1]["source"] == "fit: mobilenet_v2.InvertedResidual"
    assert result["units"][-1]["source"] == "measured"
    assert 0 < result["measured_fraction"] < 1 and result["predicted_ms"] > 0
    assert result["measured_how"] == "measured now" and result["measured_ms"] > 0
    assert result["warnings"] == [], "same widths, same kernel paths: nothing to warn of"


def test_predict_warns_of_kernel_paths_the_table_never_measured(calibrated):
    """A stem that reads 4 channels runs another kernel than the calibrated 3-channel one: the estimate says so."""
    env, _ = calibrated
    done = run_edgekit("latency", "predict", "mobilenet_v2",
                       "--width", "0.35", "--resolution", "32", "--in-channels", "4",
                       "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["units"][0]["source"].startswith("fit: ")
    (warning,) = result["warnings"]
    assert "conv3x3 (4-aligned channels)" in warning and "--family mobilenet_v2" in warning
    assert all(u["source"] == "measured" for u in result["units"][1:]), "only the stem changed"


@pytest.mark.slow
def test_a_probed_group_width_is_a_measured_kernel_path(tmp_path):
    """Calibrating ShuffleNetV1 at widths 0.5 and 1.0 also times it at 0.75 (the search's width between them, with
    channels per group neither runs), so predicting 0.75 at another resolution estimates from units on its own
    kernel paths and warns of nothing; width 0.6, never probed, still warns."""
    env = {"EDGEKIT_HOME": str(tmp_path)}
    done = run_edgekit("latency", "calibrate", "--family", "shufflenet_v1", "--width", "0.5,1.0",
                       "--resolution", "32", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["kernel_probes"] == ["shufflenet_v1 w0.75 r32"]
    assert [m["model"] for m in result["models"]] == ["shufflenet_v1 w0.5 r32", "shufflenet_v1 w1 r32",
                                                      "shufflenet_v1 w0.75 r32"]

    def predict(width):
        done = run_edgekit("latency", "predict", "shufflenet_v1", "--width", width, "--resolution", "48", "--json",
                           env=env)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    probed = predict("0.75")
    assert any(u["source"].startswith("fit: ") for u in probed["units"]), "48 px was never timed: estimated"
    assert probed["warnings"] == []
    (warning,) = predict("0.6")["warnings"]
    assert "channels per group" in warning


def test_search_ranks_within_the_budget_and_writes_the_winners_recipe(calibrated, tmp_path):
    env, _ = calibrated
    out = tmp_path / "s"
    done = run_edgekit("latency", "search", "--latency-ms", "1000", "--family", "MobileNetV2", "--width", "0.35,0.5",
                       "--resolution", "32,48", "--metric", "macs", "--in-channels", "1", "--out", str(out),
                       "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["predicted"] == 4 and result["within_budget"] == 4
    macs = [c["macs"] for c in result["candidates"]]
    assert macs == sorted(macs, reverse=True)
    winner = result["candidates"][0]
    assert (winner["width"], winner["resolution"]) == (0.5, 48)
    recipe_path = out / "recipes" / "mobilenet_v2-w0.5-r48.yaml"
    assert result["train_winner"] == f"edgekit run {recipe_path}"
    recipe = yaml.safe_load(recipe_path.read_text())
    assert recipe["model"] == {**recipe["model"], "name": "mobilenet_v2", "width": 0.5, "resolution": 48,
                               "in_channels": 1}
    # a budget between the candidates keeps only those predicted under it
    budget = sorted(c["predicted_ms"] for c in result["candidates"])[1] + 1e-6
    done = run_edgekit("latency", "search", "--latency-ms",
                       str(budget), "--family", "MobileNetV2", "--width", "0.35,0.5",
                       "--resolution", "32,48", "--metric", "macs", "--in-channels", "1", "--out", str(out),
                       "--json", env=env)
    assert json.loads(done.stdout)["within_budget"] == 2


def test_search_with_nothing_within_budget(calibrated, tmp_path):
    env, _ = calibrated
    done = run_edgekit("latency", "search", "--latency-ms", "0.000001", "--family", "mobilenet_v2", "--width", "0.35",
                       "--resolution", "32", "--out", str(tmp_path / "s"), env=env)
    assert done.returncode == 1 and "no candidate is predicted within" in done.stderr
    assert "raise --latency-ms" in done.stderr and not (tmp_path / "s").exists()


def test_search_ranks_trained_results_by_accuracy(calibrated, tmp_path, digits_artifact):
    """A trained artifact (MobileNetV2 x0.5 at 32 px on digits) outranks untrained candidates, by its top-1."""
    env, _ = calibrated
    results = tmp_path / "runs"
    shutil.copytree(digits_artifact, results / "mv2")
    checked = run_edgekit("check", str(results / "mv2"))  # records the artifact's top-1 in its manifest
    assert checked.returncode in (0, 1), checked.stderr
    done = run_edgekit("latency", "search", "--latency-ms", "1000", "--family", "mobilenet_v2", "--width", "0.35,0.5",
                       "--resolution", "32,48", "--results", str(results), "--in-channels", "1", "--out",
                       str(tmp_path / "s"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    first = result["candidates"][0]
    assert (first["width"], first["resolution"]) == (0.5, 32) and 0 < first["top1"] <= 1
    assert all(c["top1"] is None for c in result["candidates"][1:])
    assert result["ranked_by"].startswith("top-1")


def test_score_times_models_whole_against_their_predictions_and_rescores_from_its_file(calibrated, tmp_path):
    env, calibration = calibrated
    out = tmp_path / "score.json"
    done = run_edgekit("latency", "score", "--family", "mobilenet_v2", "--width", "0.35", "--resolution", "32,40",
                       "--again", "1", "--out", str(out), "--json", env=env)
    assert done.returncode == 0, done.stderr
    [score] = json.loads(done.stdout)
    rows = {r["model"]: r for r in score["rows"]}
    # r32 is one of the table's calibration models, r40 a point it never saw
    assert rows.keys() == {"mobilenet_v2 w0.35 r32", "mobilenet_v2 w0.35 r40"}
    assert [r["calibration_point"] for _, r in sorted(rows.items())] == [True, False]
    for r in rows.values():
        assert r["measured_ms"] > 0
        assert r["error_pct"] == pytest.approx(100 * (r["predicted_ms"] / r["measured_ms"] - 1))
    summary = score["summary"]
    assert summary["all"]["models"] == 2 and summary["new points"]["models"] == 1
    assert summary["device vs itself"]["models"] == 1 and summary["device vs itself, one run"]["models"] == 1
    assert set(score["timed_twice_ms"]) <= set(rows)
    assert score["table"]["calibration_models"] == len(calibration["models"])
    assert json.loads(out.read_text())["rows"] == score["rows"]
    # the file scores the table again without timing anything: the same rows
    again = run_edgekit("latency", "score", "--measured", str(out), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["rows"] == score["rows"]


def test_predict_without_a_table(tmp_path):
    done = run_edgekit("latency", "predict", "mobilenet_v2", env={"EDGEKIT_HOME": str(tmp_path)})
    assert done.returncode == 2
    assert "no latency table for local" in done.stderr and "edgekit latency calibrate" in done.stderr
    assert "Traceback" not in done.stderr



def test_a_profiled_model_is_split_among_its_units():
    names = ["features.0", "features.1", "features.2.avgpool", "classifier"]
    nodes = [(": Net/features: Sequential/features.0: ConvBNAct/features.0.0: Conv2d", 2.0),
             ("", 1.0),  # a reorder the runtime added: the unit before it pays
             (": Net/features: Sequential/features.1: Block/features.1.conv: Conv2d", 3.0),
             (": Net/features: Sequential/features.2: Block", 1.0),  # joined with the pooling after it
             (": Net/classifier: Sequential/classifier.1: Linear", 3.0)]
    shares, unnamed = unit_shares(nodes, names)
    assert shares == pytest.approx([0.3, 0.3, 0.1, 0.3]) and unnamed == pytest.approx(0.1)


def test_a_unit_in_two_models_takes_the_geometric_mean_of_its_shares():
    models = [{"units": ["a", "b"], "unit_shares": [0.25, 0.75], "measured_ms": 4.0},
              {"units": ["b", "c"], "unit_shares": [0.5, 0.5], "measured_ms": 12.0},
              {"units": ["c"], "measured_ms": 1.0}]  # not profiled (a runtime without a per-node profile)
    times = context_times(models)
    b = (0.75 * 4.0 * 0.5 * 12.0) ** 0.5
    assert times == pytest.approx({"a": 1.0, "b": b, "c": 6.0})
    table = new_table("dev", "onnxruntime", 1, {})
    table.units = {sig: {**_record(i, 1e6, 100, 10), "signature": sig, "ms": 9.0} for i, sig in enumerate("abcd")}
    table.models = models
    table.refit()
    assert {sig: r["ms"] for sig, r in table.units.items()} == pytest.approx({"a": 1.0, "b": b, "c": 6.0, "d": 9.0})
    assert table.units["d"]["alone_ms"] == 9.0 and not table.units["d"]["in_context"]
    assert [m["sum_units_ms"] for m in models] == pytest.approx([1.0 + b, b + 6.0, 6.0])


def test_a_device_short_of_memory_times_in_several_runs(monkeypatch, tmp_path):
    """Each run holds its models in memory: with room for one file at a time, every unit still gets its time."""
    from edgekit.benchmark.host import BenchOptions
    from edgekit.devices.profiles import load_profile
    from edgekit.predictor import measure

    assert measure.batch_bytes(load_profile("local")) >= measure.MIN_BATCH_BYTES  # probed: this machine's memory
    from edgekit.benchmark import host as bench_run

    runs = []
    original = bench_run.bench_device

    def counting(profile, files, options):
        runs.append(len(files))
        return original(profile, files, options)

    monkeypatch.setattr(bench_run, "bench_device", counting)
    monkeypatch.setattr(measure, "batch_bytes", lambda profile: 1)
    units = cut_spec(resolve_spec("mobilenet_v2", width=0.35, resolution=32), meta=False)[:3]
    timed = measure.time_on_device(units, {}, load_profile("local"), BenchOptions(threads=(1,), runs=3, rounds=1),
                                   "onnxruntime", cache=tmp_path)
    assert runs == [1, 1, 1] and set(timed.units_ms) == {u.signature for u in units}
    assert all(ms > 0 for ms in timed.units_ms.values())


# --- INT8 tables: the full-integer TFLite file a device runs ---------------------------------------------------------


@pytest.mark.slow
def test_an_int8_unit_is_timed_as_the_int8_export_makes_it(tmp_path):
    """Each block becomes a full-integer TFLite file with ReLU6 fused and int8 tensors in and out, as it runs inside
    the INT8 model; a whole model keeps float input and output, as the deployed file does."""
    from edgekit.exporting.int8_files import tflite_int8_report
    from edgekit.predictor.measure import export_all

    spec = resolve_spec("mobilenet_v2", width=0.35, resolution=32)
    units = cut_spec(spec, meta=False)
    torch.manual_seed(0)
    names = export_all(units[1:2], {"whole": build(spec).eval()}, tmp_path, "tflite", precision="int8")
    assert sorted(what for what, _ in names.values()) == ["model", "unit"]
    assert all(name.endswith(".int8.tflite") for name in names)
    for name, (what, _) in names.items():
        report = tflite_int8_report(tmp_path / name, int8_io=what == "unit")
        assert report["full_integer"] and report["io_types_ok"], report
        assert report["fused_activations"]["RELU6"] > 0 and report["separate_clamp_ops"] == 0


def test_int8_tables_are_for_tflite():
    from edgekit.devices.profiles import load_profile
    from edgekit.predictor.table import one_setting

    local = load_profile("local")
    assert one_setting([local], "auto", None, "predict", int8=True) == ("tflite", 1, "int8")
    assert one_setting([local], "auto", (2,), "predict") == ("onnxruntime", 2, "fp32")
    with pytest.raises(EdgekitError, match="--int8 with --runtime onnxruntime.*leave out --runtime"):
        one_setting([local], "onnxruntime", None, "predict", int8=True)


def test_a_table_is_extended_only_by_the_clock_it_was_timed_by(tmp_path, monkeypatch):
    """Figures of the thread's CPU time (--stable) and of the wall clock differ: one table never mixes them."""
    from edgekit.benchmark.host import BenchOptions, stable_options
    from edgekit.devices.profiles import load_profile
    from edgekit.predictor.calibrate import calibrate

    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path))
    new_table("local", "tflite", 1, {}, "int8", "wall").save(table_path("local", "tflite", 1, "int8"))
    specs = [resolve_spec("mobilenet_v2", width=0.35, resolution=32)]
    with pytest.raises(EdgekitError, match="timed by the wall clock.*thread's CPU time.*--fresh"):
        calibrate(specs, load_profile("local"), stable_options(BenchOptions(threads=(1,))), "tflite", 1,
                  precision="int8")
    assert load_table("local", "tflite", 1, "int8").clock == "wall"  # untouched


def test_a_table_from_before_the_clock_was_recorded_was_timed_by_the_wall_clock(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path))
    data = new_table("dev", "onnxruntime", 1, {}).to_dict()
    del data["clock"]
    table_path("dev", "onnxruntime", 1).parent.mkdir(parents=True)
    table_path("dev", "onnxruntime", 1).write_text(json.dumps(data))
    assert load_table("dev", "onnxruntime", 1).clock == "wall"


@pytest.fixture(scope="module")
def calibrated_int8(tmp_path_factory):
    """A real INT8 calibration on this machine, by the thread's CPU time: MobileNetV2 x0.35 at 32 px, every block
    quantized and timed as full-integer TFLite with XNNPACK."""
    home = tmp_path_factory.mktemp("edgekit-home-int8")
    env = {"EDGEKIT_HOME": str(home)}
    done = run_edgekit("latency", "calibrate", "--int8", "--stable", "--family", "mobilenet_v2", "--width", "0.35",
                       "--resolution", "32", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return env, json.loads(done.stdout)


@pytest.mark.slow
def test_int8_calibration_predict_and_search(calibrated_int8, tmp_path):
    env, result = calibrated_int8
    assert (result["runtime"], result["precision"], result["clock"]) == ("tflite", "int8", "cpu")
    assert Path(result["table"]).name == "local-tflite-int8-t1.json"
    signatures = {u.signature for u in cut_spec(resolve_spec("mobilenet_v2", width=0.35, resolution=32))}
    table = json.loads(Path(result["table"]).read_text())
    assert set(table["units"]) == signatures  # TFLite has no per-node profile: each block timed alone
    assert all(u["alone_ms"] > 0 and not u["in_context"] for u in table["units"].values())
    (model,) = result["models"]
    assert model["measured_ms"] > 0

    done = run_edgekit("latency", "predict", "mobilenet_v2", "--width", "0.35", "--resolution", "32", "--int8",
                       "--json", env=env)
    assert done.returncode == 0, done.stderr
    predicted = json.loads(done.stdout)
    assert (predicted["precision"], predicted["runtime"]) == ("int8", "tflite")
    assert predicted["measured_ms"] == model["measured_ms"] and predicted["measured_fraction"] == 1.0
    now = run_edgekit("latency", "predict", "mobilenet_v2", "--width", "0.35", "--resolution", "32", "--int8",
                      "--measure", "--json", env=env)
    assert now.returncode == 0, now.stderr
    assert json.loads(now.stdout)["measured_how"] == "measured now" and json.loads(now.stdout)["measured_ms"] > 0
    # the FP32 table was never calibrated here: predicting FP32 says how to make it
    fp32 = run_edgekit("latency", "predict", "mobilenet_v2", "--width", "0.35", "--resolution", "32", env=env)
    assert fp32.returncode == 2 and "no latency table for local (onnxruntime, fp32" in fp32.stderr

    # search predicts the format the recipe deploys: the default recipe ends in its INT8 TFLite file
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "mobilenet_v2_fashion.yaml"
    args = ("latency", "search", "--latency-ms", "1000", "--family", "mobilenet_v2", "--width", "0.35",
            "--resolution", "32", "--metric", "macs", "--recipe", str(recipe), "--out", str(tmp_path / "s"))
    done = run_edgekit(*args, "--json", env=env)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["precision"], found["runtime"], found["within_budget"]) == ("int8", "tflite", 1)
    shown = run_edgekit(*args, env={**env, "COLUMNS": "200"})  # the title on one line
    assert "(INT8 tflite, 1 thread(s))" in shown.stdout
    as_fp32 = run_edgekit(*args, "--fp32", env=env)
    assert as_fp32.returncode == 2 and "(onnxruntime, fp32" in as_fp32.stderr
    without_recipe = run_edgekit(*[a for a in args if a not in ("--recipe", str(recipe))], env=env)
    assert without_recipe.returncode == 2 and "(onnxruntime, fp32" in without_recipe.stderr  # FP32 by default
