"""Every registered model builds and runs at several widths and resolutions; names and layouts are right."""

import pytest
import torch

from edgekit.core.errors import EdgekitError
from edgekit.models import create, get_entry, list_models, make_divisible
from edgekit.models.complexity import profile_spec

FAMILIES = {
    "MobileNetV1", "MobileNetV2", "MobileNetV3", "ShuffleNetV1", "ShuffleNetV2", "EfficientNet",
    "EfficientNet-Lite", "RegNetX", "RegNetY",
}


def test_every_family_is_registered():
    assert {get_entry(n).family for n in list_models()} == FAMILIES
    for name in ("mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x1_0", "efficientnet_b0", "regnet_y_400mf",
                 "efficientnet_lite4", "regnet_x_3_2gf", "efficientnet_b7"):
        assert name in list_models()


@pytest.mark.parametrize("name", list_models())
def test_forward_every_model(name):
    model = create(name, resolution=64, num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v1",
                                  "shufflenet_v2_x1_0", "efficientnet_lite0", "regnet_y_400mf", "regnet_x_200mf"])
@pytest.mark.parametrize("width", [0.25, 0.35, 0.5, 0.75, 1.3, 2.0])
def test_widths_build_run_and_scale(name, width):
    model = create(name, width=width, resolution=48, num_classes=7, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 48, 48)).shape == (1, 7)
    base, scaled = profile_spec(name, resolution=96), profile_spec(name, width=width, resolution=96)
    assert (scaled.macs > base.macs) == (width > 1.0)


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("width", [0.25, 0.5, 1.0, 1.5, 2.0])
def test_shufflenet_v1_groups_and_scales(groups, width):
    model = create("shufflenet_v1", width=width, groups=groups, resolution=64, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    # Every stage width splits into 4 * g so the bottleneck divides into g groups.
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.in_channels % c.groups == 0 and c.out_channels % c.groups == 0 for c in convs)
    assert max(c.groups for c in convs if c.kernel_size == (1, 1)) == groups


def test_resolution_scales_macs_quadratically_and_keeps_params():
    small, large = profile_spec("mobilenet_v2", resolution=128), profile_spec("mobilenet_v2", resolution=256)
    assert small.params == large.params

    def conv_macs(prof):
        return sum(layer.macs for layer in prof.layers if layer.op.startswith("Conv2d"))

    assert conv_macs(large) == 4 * conv_macs(small)  # the classifier's MACs don't depend on resolution


def test_mobilenet_v2_last_channel_scales_only_above_one():
    assert create("mobilenet_v2", width=0.5).last_channel == 1280
    assert create("mobilenet_v2", width=1.4).last_channel == make_divisible(1280 * 1.4)


def test_mobilenet_v1_relu6_option():
    model = create("mobilenet_v1", activation="relu6")
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())


def test_regnet_design_space_option_builds_other_networks():
    custom = profile_spec("regnet_y", depth=13, w_0=24, w_a=36.44, w_m=2.49, group_width=8)
    assert custom.params == profile_spec("regnet_y_200mf").params
    with pytest.raises(EdgekitError, match="invalid RegNet parameters"):
        create("regnet_x", w_0=20)


def test_stochastic_depth_only_in_training():
    model = create("efficientnet_b0", resolution=64, num_classes=3)
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    probs = [m.stochastic_depth.p for m in model.modules() if hasattr(m, "stochastic_depth")]
    assert probs[0] == 0.0 and 0.15 < probs[-1] < 0.2


def test_make_divisible_matches_reference_rounding():
    assert [make_divisible(v) for v in (32 * 0.75, 16 * 0.35, 1280 * 1.4, 12, 3)] == [24, 8, 1792, 16, 8]
    assert make_divisible(11, 8) == 16  # 8 would lose more than 10%


def test_spec_recorded_on_model():
    model = create("mobilenet_v3_small", width=0.75, res_mult=0.5, num_classes=10, in_channels=1)
    assert model.spec.resolution == 112
    assert model.spec.to_dict()["options"] == {"dropout": 0.2}
    assert model.spec.input_shape == (1, 112, 112)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "mobilenetv2"}, "did you mean mobilenet_v2"),
        ({"name": "mobilenet_v2", "width": 0}, "width 0 is out of range"),
        ({"name": "mobilenet_v2", "width": 5}, "width 5 is out of range"),
        ({"name": "mobilenet_v2", "resolution": 31}, "resolution 31 is not usable"),
        ({"name": "mobilenet_v2", "resolution": 100.5}, "resolution 100.5 is not usable"),
        ({"name": "mobilenet_v2", "res_mult": -1}, "must be > 0"),
        ({"name": "mobilenet_v2", "num_classes": 0}, "number of classes 0"),
        ({"name": "shufflenet_v1", "groups": 5}, "groups must be one of 1, 2, 3, 4, 8"),
        ({"name": "mobilenet_v2", "groups": 3}, "does not take option groups"),
        ({"name": "mobilenet_v1", "activation": "gelu"}, "activation must be one of relu, relu6"),
    ],
)
def test_bad_input_is_one_clear_error(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(EdgekitError, match=message):
        create(name, **kwargs)
