"""edgekit bench --guidelines: ShuffleNetV2's four experiments, built at equal FLOPs and timed on a device."""

import json
from pathlib import Path

import pytest

from edgekit.benchmark.guidelines import EXPERIMENTS, SIZES, build, macs


@pytest.mark.parametrize("key", ["G1", "G2", "G3"])
def test_variants_hold_flops_fixed_as_the_paper_does(key: str) -> None:
    experiment = next(e for e in EXPERIMENTS if e.key == key)
    for c in experiment.channels:
        counts = []
        for variant in experiment.variants:
            model, example = build(variant, c)
            counts.append(macs(model, example.expand(1, -1, SIZES[1], SIZES[1])))
        assert max(counts) <= 1.1 * min(counts), (key, c, counts)


def test_g4_variants_differ_only_in_relu_and_shortcut() -> None:
    experiment = next(e for e in EXPERIMENTS if e.key == "G4")
    models = [build(v, 64)[0] for v in experiment.variants]
    params = {sum(p.numel() for p in m.parameters()) for m in models}
    assert len(params) == 1  # the same convolutions in every variant
    relus = [sum(type(m).__name__ == "ReLU" for m in model.modules()) for model in models]
    assert relus == [30, 30, 0, 0]


@pytest.mark.slow
def test_bench_guidelines_locally_writes_tables_json_and_png(tmp_path: Path, edgekit_cli) -> None:
    out = tmp_path / "g"
    done = edgekit_cli("guidelines", "--only", "G1,G4", "--size", "28", "--channel-scale", "0.25",
                       "--runs", "3", "--min-seconds", "0", "--warmup-seconds", "0", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    cases = result["cases"]
    assert {c["experiment"] for c in cases} == {"G1", "G4"}
    assert len(cases) == 2 * 4 * 3  # two experiments x four variants x three widths at one size
    assert all(c["p50_ms"] > 0 and c["images_per_second"] > 0 for c in cases)
    firsts = [c for c in cases if c["variant"] in ("c1=c2", "bottleneck")]
    assert firsts and all(c["slowdown_pct"] == 0 for c in firsts)
    assert json.loads((out / "guidelines.json").read_text()) == result
    assert (out / "guidelines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["guidelines.json", "guidelines.png"]  # models removed
    table = edgekit_cli("guidelines", "--only", "G3", "--size", "28", "--channel-scale", "0.25",
                        "--runs", "3", "--min-seconds", "0", "--warmup-seconds", "0", "--out", str(out))
    assert table.returncode == 0, table.stderr
    assert "G3: fragments in series and in parallel" in table.stdout and "4-fragment-parallel" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["--only", "G5"], "choose from G1, G2, G3, G4"),
    (["--size", "4"], "not a list of sizes"),
    (["--threads", "1,2"], "valid integer"),
    (["--channel-scale", "9"], "out of range"),
    (["--device", "local,local"], "one device at a time"),
])
def test_bench_guidelines_bad_input(args: list[str], message: str, edgekit_cli, tmp_path: Path) -> None:
    done = edgekit_cli("guidelines", *args, "--out", str(tmp_path / "g"))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "g").exists()
