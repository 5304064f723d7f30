"""Every INT8 rule, in one place (edgekit.options.Int8Options, and the plan for a model in
edgekit.quantization.options): each refused with its one-line message, and the valid combinations accepted, from the
command line's flags, a recipe's int8 section and the Python API alike."""

from types import SimpleNamespace

import pytest

from edgekit.core.errors import EdgekitError
from edgekit.models import resolve_spec
from edgekit.options import Int8Options, int8_from_flags
from edgekit.quantization.options import Int8Plan, int8_plan_from_recipe, plan_int8
from edgekit.quantization.qat import QatSchedule
from edgekit.recipe import parse_recipe

SPEC = resolve_spec("mobilenet_v2", width=0.35, resolution=32, num_classes=10, in_channels=1)
TRAINED = SimpleNamespace(data="digits", spec=SPEC, augment={"crop_padding": 2, "hflip": False},
                          label_smoothing=0.1)


def from_flags(int8: bool = True, trained=TRAINED, calib=None, eval_data=None, **flags):
    """What `edgekit export` does with its flags: the options, then the plan for the model."""
    options = int8_from_flags(int8, calib, **flags)
    if options is None:
        return None
    return plan_int8(options, spec=SPEC, trained=trained, qat_data=calib, has_eval_data=eval_data is not None)


REFUSED = [
    # (int8, flags, checkpoint, message)
    (False, {"calib": "digits"}, TRAINED,
     r"^--calib \(calibration=\) applies to INT8 export: add --int8 \(int8=True in Python\)\.$"),
    (False, {"per_tensor": True, "equalize": True}, TRAINED, r"^--per-tensor, --equalize apply to INT8 export"),
    (False, {"int8_io": True}, TRAINED, r"^--int8-io applies to INT8 export: add --int8"),
    (False, {"qat_epochs": 1}, TRAINED, r"^--qat-epochs applies to INT8 export"),
    (False, {"max_drop": 0.5, "eval_data": "auto"}, TRAINED, r"^--max-drop applies to INT8 export"),
    (True, {"calib_size": 0}, TRAINED, r"--calib-size 0 is not a positive number of images: give e\.g\."),
    (True, {"calib_method": "entropy"}, TRAINED, r"unknown calibration method 'entropy': choose from minmax"),
    (True, {"max_drop": 0.5, "qat_epochs": 1, "eval_data": "auto"}, TRAINED, r"two ways to the same end: choose one"),
    (True, {"max_drop": 0.5}, TRAINED, r"--max-drop takes a budget >= 0 .*add --eval auto"),
    (True, {"max_drop": -1.0, "eval_data": "auto"}, TRAINED, r"--max-drop -1: give a budget >= 0"),
    (True, {"max_drop": float("nan"), "eval_data": "auto"}, TRAINED, r"--max-drop nan: give a budget >= 0"),
    (True, {"qat_epochs": 1}, None, r"--qat-epochs fine-tunes on training data: give --weights CKPT"),
    (True, {"qat_epochs": -1}, TRAINED, r"--qat-epochs -1: give a whole number of epochs >= 0"),
    (True, {"qat_epochs": 1, "qat_lr": 2.0}, TRAINED, r"--qat-lr 2: give a small positive rate"),
]


@pytest.mark.parametrize(("int8", "flags", "trained", "message"), REFUSED,
                         ids=[f"{'int8-' if r[0] else ''}{'-'.join(r[1])}" for r in REFUSED])
def test_each_rule_is_refused_with_its_message(int8, flags, trained, message):
    with pytest.raises(EdgekitError, match=message) as caught:
        from_flags(int8, trained, **flags)
    assert "\n" not in str(caught.value)  # one line: problem and fix


ACCEPTED = [
    # (flags, checkpoint, what the options hold)
    ({}, TRAINED, {"calib_size": 512, "calib_method": "minmax", "per_tensor": False, "max_drop": None}),
    ({"calib_size": 64, "calib_method": "percentile", "per_tensor": True, "equalize": True, "int8_io": True}, None,
     {"calib_size": 64, "calib_method": "percentile", "per_tensor": True, "equalize": True, "int8_io": True}),
    ({"max_drop": 0.0, "eval_data": "auto"}, TRAINED, {"max_drop": 0.0}),
    ({"max_drop": 0.5, "eval_data": "digits"}, None, {"max_drop": 0.5}),
    ({"qat_epochs": 2, "qat_lr": 0.001}, TRAINED, {"max_drop": None}),
    ({"qat_epochs": 1, "calib": "digits"}, None, {"max_drop": None}),  # --calib names the data to fine-tune on
]


@pytest.mark.parametrize(("flags", "trained", "expected"), ACCEPTED, ids=lambda v: "-".join(v) if isinstance(v, dict)
                         else None)
def test_valid_combinations_are_accepted(flags, trained, expected):
    plan = from_flags(True, trained, **flags)
    assert isinstance(plan, Int8Plan) and (plan.qat is not None) == bool(flags.get("qat_epochs"))
    for name, value in expected.items():
        assert getattr(plan.options, name) == value, name
    assert plan.settings().per_channel == (not plan.options.per_tensor)


def test_without_int8_and_its_flags_there_are_no_options():
    # calib_size, method and qat_lr have defaults the command line cannot tell from a choice: not refused
    assert from_flags(False, calib_size=512, calib_method="minmax", qat_lr=0.01) is None


def test_the_schedule_follows_the_checkpoint():
    plan = from_flags(True, qat_epochs=3, qat_lr=0.002)
    assert plan.qat == QatSchedule(epochs=3, lr=0.002, label_smoothing=0.1, crop_padding=2, hflip=False)


def test_the_python_api_keeps_the_same_rules():
    import edgekit

    with pytest.raises(EdgekitError, match="two ways to the same end"):
        edgekit.Int8Options(max_drop=0.5, qat_epochs=1)
    with pytest.raises(EdgekitError, match="--calib-size 0 is not a positive number"):
        edgekit.Int8Options(calib_size=0)
    with pytest.raises(EdgekitError, match="either as int8=Int8Options"):
        int8_from_flags(Int8Options(), None, per_tensor=True)
    assert int8_from_flags(Int8Options(calib_method="mse"), None).calib_method == "mse"
    assert edgekit.Int8Options is Int8Options


def test_a_recipe_section_is_the_options_object():
    recipe = parse_recipe(RECIPE + "int8: {calib_method: percentile, equalize: true}\n")
    assert recipe.int8 == Int8Options(calib_method="percentile", equalize=True)


RECIPE = "name: r\nmodel: {name: mobilenet_v2, width: 0.35, resolution: 32, in_channels: 1}\ndata: {source: digits}\n"


@pytest.mark.parametrize(("section", "message"), [
    ("int8: {max_drop: 0.5, qat_epochs: 1}", "two ways to the same end: choose one"),
])
def test_a_recipe_is_held_to_the_same_rules(section, message):
    with pytest.raises(EdgekitError, match=message):
        int8_plan_from_recipe(parse_recipe(RECIPE + section + "\n"))


def test_a_recipe_builds_its_options_before_and_after_training():
    recipe = parse_recipe(RECIPE + "int8: {calib_size: 128, calib_method: mse, per_tensor: true, qat_epochs: 1}\n")
    before = int8_plan_from_recipe(recipe)
    after = int8_plan_from_recipe(recipe, TRAINED)
    assert before is not None and after is not None
    assert (before.options.calib_size, before.options.calib_method, before.settings().per_channel) == (128, "mse",
                                                                                                      False)
    assert before.qat is not None and after.qat is not None and after.qat.label_smoothing == 0.1
    assert int8_plan_from_recipe(parse_recipe(RECIPE + "export: {int8: false}\n")) is None
