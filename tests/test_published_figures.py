"""Params and MACs of the built models against published figures (torchvision's model docs and the papers).

The counts come from the profiler walking the real module; the figures below are the references'.
"""

import pytest

from edgekit.models.complexity import profile_spec

# name, spec kwargs, params (exact), MACs (millions, within 1%): torchvision's published figures.
TORCHVISION = [
    ("mobilenet_v2", {}, 3_504_872, 300.8),
    ("mobilenet_v2", {"width": 0.75}, 2_636_424, 209.1),
    ("mobilenet_v3_large", {}, 5_483_032, 216.6),
    ("mobilenet_v3_small", {}, 2_542_856, 56.5),
    ("shufflenet_v2_x0_5", {}, 1_366_792, 40.6),
    ("shufflenet_v2_x1_0", {}, 2_278_604, 144.9),
    ("efficientnet_b0", {}, 5_288_548, 385.8),
    ("efficientnet_b1", {}, 7_794_184, 686.8),
    ("efficientnet_b2", {"resolution": 288}, 9_109_994, 1088.0),
    ("efficientnet_b3", {}, 12_233_232, 1827.0),
    ("efficientnet_b4", {}, 19_341_616, 4394.0),
    ("efficientnet_b5", {}, 30_389_784, 10266.0),
    ("efficientnet_b6", {}, 43_040_704, 19068.0),
    ("efficientnet_b7", {}, 66_347_960, 37746.0),
    ("regnet_y_400mf", {}, 4_344_144, 401.8),
    ("regnet_y_800mf", {}, 6_432_512, 834.0),
    ("regnet_y_1_6gf", {}, 11_202_430, 1612.0),
    ("regnet_y_3_2gf", {}, 19_436_338, 3176.0),
    ("regnet_x_400mf", {}, 5_495_976, 413.8),
    ("regnet_x_800mf", {}, 7_259_656, 800.0),
    ("regnet_x_1_6gf", {}, 9_190_136, 1603.0),
    ("regnet_x_3_2gf", {}, 15_296_552, 3177.0),
]


@pytest.mark.parametrize(("name", "kwargs", "params", "mmacs"), TORCHVISION, ids=lambda v: str(v))
def test_torchvision_figures(name, kwargs, params, mmacs):
    prof = profile_spec(name, **kwargs)
    assert prof.params == params
    assert prof.macs / 1e6 == pytest.approx(mmacs, rel=0.01)


# MobileNetV1, the paper's Table 6 (width) and Table 7 (resolution): MACs (M) and params (M, one decimal).
@pytest.mark.parametrize(
    ("kwargs", "mmacs", "mparams"),
    [
        ({"width": 1.0}, 569, 4.2), ({"width": 0.75}, 325, 2.6), ({"width": 0.5}, 149, 1.3),
        ({"width": 0.25}, 41, 0.5), ({"resolution": 192}, 418, 4.2), ({"resolution": 160}, 291, 4.2),
        ({"resolution": 128}, 186, 4.2), ({"res_mult": 128 / 224}, 186, 4.2),
    ],
)
def test_mobilenet_v1_paper(kwargs, mmacs, mparams):
    prof = profile_spec("mobilenet_v1", **kwargs)
    assert prof.macs / 1e6 == pytest.approx(mmacs, rel=0.01)
    assert round(prof.params / 1e6, 1) == mparams


# ShuffleNetV1, the paper's Tables 1 and 2: MACs (M) per groups and scale, within 3%.
@pytest.mark.parametrize(
    ("groups", "width", "mmacs"),
    [(1, 1.0, 143), (2, 1.0, 140), (3, 1.0, 137), (4, 1.0, 133), (8, 1.0, 137),
     (3, 0.5, 38), (3, 0.25, 13), (3, 1.5, 292), (3, 2.0, 524)],
)
def test_shufflenet_v1_paper(groups, width, mmacs):
    prof = profile_spec("shufflenet_v1", width=width, groups=groups)
    assert prof.macs / 1e6 == pytest.approx(mmacs, rel=0.03)


# ShuffleNetV2, the paper's Table 5 (MACs, M), within 2%.
@pytest.mark.parametrize(
    ("name", "mmacs"),
    [("shufflenet_v2_x0_5", 41), ("shufflenet_v2_x1_0", 146), ("shufflenet_v2_x1_5", 299), ("shufflenet_v2_x2_0", 591)],
)
def test_shufflenet_v2_paper(name, mmacs):
    assert profile_spec(name).macs / 1e6 == pytest.approx(mmacs, rel=0.02)


def test_shufflenet_v2_width_multiplier_picks_the_paper_table():
    assert profile_spec("shufflenet_v2_x1_0", width=0.5).params == profile_spec("shufflenet_v2_x0_5").params
    assert profile_spec("shufflenet_v2_x1_0", width=2.0).params == profile_spec("shufflenet_v2_x2_0").params


# EfficientNet-Lite, TensorFlow's published table (params M, MAdds M). Params match to the digit; TF's MAdds
# run a steady 3-6% above the conv+linear MAC count (a counting convention: the ratio is the same for all five),
# so the MACs check allows 6%.
@pytest.mark.parametrize(
    ("name", "mparams", "mmacs"),
    [("efficientnet_lite0", 4.7, 407), ("efficientnet_lite1", 5.4, 631), ("efficientnet_lite2", 6.1, 899),
     ("efficientnet_lite3", 8.2, 1440), ("efficientnet_lite4", 13.0, 2640)],
)
def test_efficientnet_lite_tf_table(name, mparams, mmacs):
    prof = profile_spec(name)
    assert round(prof.params / 1e6, 1) == mparams
    assert prof.macs / 1e6 == pytest.approx(mmacs, rel=0.06)


def test_efficientnet_lite0_params_exact():
    assert profile_spec("efficientnet_lite0").params == 4_652_008


# RegNet, pycls's model zoo (params M, MACs M) for the sizes torchvision does not ship.
@pytest.mark.parametrize(
    ("name", "mparams", "mmacs"),
    [("regnet_x_200mf", 2.7, 200), ("regnet_y_200mf", 3.2, 200), ("regnet_x_600mf", 6.2, 600),
     ("regnet_y_600mf", 6.1, 600)],
)
def test_regnet_pycls(name, mparams, mmacs):
    prof = profile_spec(name)
    assert round(prof.params / 1e6, 1) == mparams
    assert prof.macs / 1e6 == pytest.approx(mmacs, rel=0.01)


def test_efficientnet_compound_scaling_phi():
    # phi = 1 gives width 1.1, depth 1.2: the coefficients of B2, at resolution 224 * 1.15 ~ 256.
    phi1 = profile_spec("efficientnet", phi=1)
    assert phi1.params == profile_spec("efficientnet_b2").params
    assert phi1.input_shape == [3, 256, 256]
    assert profile_spec("efficientnet", phi=0).params == profile_spec("efficientnet_b0").params
