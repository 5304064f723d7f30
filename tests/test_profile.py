"""The profiler against hand-computed counts on small networks, and its invariants on the zoo."""

import json
import subprocess
import sys

import pytest
from torch import nn

from edgekit.core.errors import EdgekitError
from edgekit.models import create, list_models
from edgekit.models.complexity import (
    model_table,
    model_table_row,
    profile_model,
    profile_spec,
    stored_fields,
    stored_model_table,
)


class Toy(nn.Module):
    """conv3x3(3->8, s1) + BN + ReLU, depthwise 3x3 s2, a residual-free add with itself, pool, FC 8->5."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.dw(self.conv(x))
        x = x + x
        return self.fc(x.mean((2, 3)))


def test_hand_counted_toy_network():
    prof = profile_model(Toy(), (3, 16, 16))
    rows = {(r.name, r.op): r for r in prof.layers}
    conv = rows[("conv.0", "Conv2d+BatchNorm2d+ReLU")]
    assert conv.macs == 8 * 16 * 16 * 3 * 3 * 3  # output elements x (Cin/groups x k x k)
    assert conv.params == 8 * 3 * 9 + 2 * 8
    assert conv.elementwise_ops == 2 * 8 * 16 * 16  # BN and ReLU, one per output element each
    assert conv.output_shape == [8, 16, 16] and conv.activation_bytes_fp32 == 4 * 8 * 256
    dw = rows[("dw", "Conv2d")]
    assert dw.macs == 8 * 8 * 8 * 9 and dw.params == 8 * 9 + 8 and dw.detail == "k3x3 s2 dw"
    assert rows[("model", "add")].elementwise_ops == 8 * 8 * 8
    assert rows[("model", "mean")].elementwise_ops == 8 * 8 * 8  # one per element read
    assert rows[("fc", "Linear")].macs == 8 * 5
    assert prof.macs == conv.macs + dw.macs + 40
    assert prof.flops == 2 * prof.macs
    assert prof.params == sum(p.numel() for p in Toy().parameters())


def test_unfused_view_lists_every_operator():
    fused, unfused = profile_model(Toy(), (3, 16, 16)), profile_model(Toy(), (3, 16, 16), fuse=False)
    assert [r.op for r in unfused.layers][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert len(unfused.layers) == len(fused.layers) + 2
    assert (unfused.macs, unfused.elementwise_ops) == (fused.macs, fused.elementwise_ops)


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x1_0", "shufflenet_v1",
                                  "efficientnet_b0", "regnet_y_400mf"])
def test_rows_account_for_every_parameter(name):
    prof = profile_spec(name, resolution=96)
    assert sum(r.params for r in prof.layers) == prof.params
    assert prof.macs == sum(r.macs for r in prof.layers) > 0


def test_residual_adds_and_se_are_listed_separately():
    ops = [r.op for r in profile_spec("mobilenet_v3_large").layers]
    assert ops.count("add") == 10  # stride-1 blocks whose channels match: 16, 24, 40 x2, 80 x3, 112, 160 x2
    assert ops.count("mul") == 8  # SE scaling in the 8 SE blocks
    assert ops.count("Hardsigmoid") == 8
    v2 = [r for r in profile_spec("mobilenet_v2").layers if r.op == "add"]
    assert len(v2) == 10 and all(r.macs == 0 and r.elementwise_ops > 0 for r in v2)


def test_profile_of_materialised_model_equals_meta_profile():
    model = create("mobilenet_v2", width=0.5, resolution=96)
    real, meta = profile_model(model), profile_spec("mobilenet_v2", width=0.5, resolution=96)
    assert (real.params, real.macs, real.elementwise_ops) == (meta.params, meta.macs, meta.elementwise_ops)
    assert next(model.parameters()).device.type == "cpu"  # profiling left the user's model alone


def test_json_shape():
    data = json.loads(json.dumps(profile_spec("mobilenet_v2", width=0.75).to_dict()))
    assert isinstance(data["params"], int) and isinstance(data["macs"], int)
    assert data["params"] == 2_636_424
    assert data["layers"][0]["name"] == "features.0.0" and data["layers"][0]["macs"] > 0
    assert data["flops"] == 2 * data["macs"]
    assert data["spec"]["width"] == 0.75 and data["input_shape"] == [3, 224, 224]


def test_profile_model_without_spec_needs_a_shape():
    with pytest.raises(ValueError, match="input_shape"):
        profile_model(Toy())


@pytest.mark.parametrize("name", list_models())
def test_shipped_model_table_matches_a_fresh_profile(name):
    """model_table.json is generated: if this fails, rerun `python tools/model_table.py`."""
    assert stored_model_table().get(name) == stored_fields(model_table_row(name)), \
        f"{name}: edgekit/models/model_table.json is stale, rerun python tools/model_table.py"


def test_model_table_rows_and_family_filter():
    rows = model_table()
    assert [r["name"] for r in rows] == list_models()
    assert all(set(r) == {"name", "family", "resolution", "params", "macs", "description", "options"} for r in rows)
    v2 = next(r for r in rows if r["name"] == "mobilenet_v2")
    assert (v2["resolution"], v2["params"], v2["macs"]) == (224, 3_504_872, 300_774_272)
    assert [r["name"] for r in model_table("mobilenetv3")] == ["mobilenet_v3_large", "mobilenet_v3_small"]
    with pytest.raises(EdgekitError, match="no family 'nope': choose one of EfficientNet, EfficientNet-Lite"):
        model_table("nope")


def test_model_table_profiles_rows_the_file_lacks_or_describes_differently(monkeypatch):
    import edgekit.models.complexity as complexity

    stored = stored_model_table()
    stored.pop("shufflenet_v1")
    stored["mobilenet_v1"] = {**stored["mobilenet_v1"], "options": {"activation": "relu6", "dropout": 0.0},
                              "macs": 1}
    monkeypatch.setattr(complexity, "stored_model_table", lambda: stored)
    rows = {r["name"]: r for r in model_table()}
    for name in ("shufflenet_v1", "mobilenet_v1"):
        assert rows[name] == model_table_row(name)


def test_importing_the_model_zoo_stays_light():
    code = ("import sys, edgekit.models, edgekit.models.complexity; "
            "print([m for m in ('onnx', 'onnxruntime', 'onnxscript', 'litert_torch', 'ai_edge_litert', 'torchao', "
            "'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
