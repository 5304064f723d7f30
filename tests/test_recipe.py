"""Recipes: the shipped ones are valid, and a bad one is reported at its line."""

import pytest
from conftest import RECIPES

from edgekit.core.errors import EdgekitError
from edgekit.models import get_entry, list_models, resolve_spec
from edgekit.recipe import load_recipe, parse_recipe


def test_recipes_cover_every_family():
    families = set()
    for path in RECIPES:
        recipe = load_recipe(path)
        spec = resolve_spec(recipe.model.name, width=recipe.model.width, resolution=recipe.model.resolution,
                            in_channels=recipe.model.in_channels, **recipe.model.options)
        families.add(spec.family)
        assert recipe.data.source == "fashion-mnist" and spec.resolution <= 64
    assert families == {get_entry(n).family for n in list_models()}


def test_sweep_variants_load_and_differ_from_the_shipped_recipe():
    # docs/training.md quotes these runs; the command there must keep working.
    sweeps = sorted((RECIPES[0].parents[1] / "tools" / "sweeps").rglob("*.yaml"))
    assert sweeps
    for path in sweeps:
        variant = load_recipe(path)
        shipped = load_recipe(RECIPES[0].parent / f"{variant.model.name}_fashion.yaml")
        assert variant.name != shipped.name
        assert variant.model.name == shipped.model.name and variant.data == shipped.data


def test_defaults_fill_missing_sections():
    recipe = parse_recipe("name: r\nmodel:\n  name: mobilenet_v2\n")
    assert recipe.train.optimizer == "sgd" and recipe.export.formats == ["onnx", "tflite"]
    assert recipe.train.weight_decay == pytest.approx(4e-5)


def test_yaml_1_1_exponent_floats_are_numbers():
    recipe = parse_recipe("name: r\nmodel: {name: mobilenet_v2}\ntrain:\n  weight_decay: 4e-5\n  lr: 1\n")
    assert recipe.train.weight_decay == pytest.approx(4e-5) and recipe.train.lr == 1.0


@pytest.mark.parametrize(("text", "message"), [
    ("name: r\nmodel:\n  name: mobilenet_v2\ntrain:\n  optimzer: sgd\n",
     "r.yaml:5: train.optimzer: unknown key; did you mean 'optimizer'?"),
    ("name: r\nmodel:\n  name: mobilenet_v2\ntrain:\n  epochs: ten\n",
     "r.yaml:5: train.epochs: expected an integer, got 'ten'."),
    ("name: r\nmodel:\n  name: mobilenet_v2\n  width: -1\n", "r.yaml:4: model.width: -1.0 is out of range"),
    ("name: r\nmodel:\n  name: mobilenet_v2\ntrain:\n  optimizer: lamb\n",
     "r.yaml:5: train.optimizer: 'lamb' is not one of sgd, adamw."),
    ("name: r\nmodel:\n  width: 0.5\n", "r.yaml:2: model: missing required key 'name'."),
    ("name: r\nmodel:\n  name: mobilenet_v2\n  in_channels: 2\n", "r.yaml:4: model.in_channels: 2 is not one of"),
    ("name: r\nmodel: [1, 2]\n", "r.yaml:2: model: expected a mapping"),
    ("name: r\nmodel:\n  name: x\n   bad: indent\n", "r.yaml:4: not valid YAML"),
    ("- just\n- a list\n", "a recipe is a YAML mapping"),
    ("name: r\nmodel:\n  name: mobilenet_v2\nexport:\n  formats: [onnx, 3]\n", "expected a list of str, got 3"),
])
def test_bad_recipes_point_at_the_line(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(EdgekitError) as info:
        load_recipe(path)
    assert message in str(info.value)


def test_training_hash_tracks_what_changes_the_weights():
    base = parse_recipe("name: r\nmodel: {name: mobilenet_v2}\n")
    other_check = parse_recipe("name: r\nmodel: {name: mobilenet_v2}\ncheck: {max_drop: 0.1}\n")
    other_lr = parse_recipe("name: r\nmodel: {name: mobilenet_v2}\ntrain: {lr: 0.2}\n")
    assert base.training_hash() == other_check.training_hash()
    assert base.training_hash() != other_lr.training_hash()
