"""What the predictor would score if its units were timed inside the calibration models instead of alone: each
calibration model is run whole under ONNX Runtime's per-node profiler here, every node's time is given to the unit
it came from, and the model's measured time is split among its units in those shares.

    python tools/predictor_error.py --device local --calibrate --cache C --out F.json   # a table and timings
    python tools/predictor_context.py --measured F.json --cache C

The in-context table keeps everything else of the device's table (the units, the fit for unmeasured ones, the
whole-model correction, refitted), so the two scores differ only in what a unit's time means. They are printed by
group: the calibration points, new resolutions of calibrated families and widths, new widths of calibrated
families, and family members that were never calibrated. Local ONNX Runtime only (the profile runs in this
process); figures for the docs, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from predictor_error import _spec_of, distribution  # noqa: E402

from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.models import build  # noqa: E402
from edgekit.predictor.measure import export_all  # noqa: E402
from edgekit.predictor.table import LatencyTable, load_table, model_features  # noqa: E402
from edgekit.predictor.units import Unit, cut_spec  # noqa: E402

PROFILED_RUNS = 30


def _module_paths(namespace: str) -> list[str]:
    """The exporter's scope of a node (": Net/features: Sequential/features.1: Block/...") as module paths."""
    return [part.split(":")[0].strip() for part in namespace.split("/")[1:]]


def _unit_index(paths: list[str], names: list[str]) -> int | None:
    """The unit a node belongs to: the deepest module path that is a unit's name, or the one unit whose name
    starts with it (a block joined with the pooling after it is named "features.13.avgpool")."""
    for path in reversed(paths):
        if path in names:
            return names.index(path)
        joined = [i for i, name in enumerate(names) if name.startswith(path + ".")]
        if len(joined) == 1:
            return joined[0]
    return None


def profile_units(path: Path, units: list[Unit], threads: int) -> tuple[list[float], float]:
    """Per-unit kernel time (ms per run) of an ONNX model run whole, and the share of time that no node named:
    nodes the runtime added (layout reorders) or renamed past recognition go to the unit run before them."""
    import onnx
    import onnxruntime as ort

    scopes: dict[str, str] = {}
    for node in onnx.load(str(path)).graph.node:
        namespace = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        for name in (node.name, *node.output):
            scopes.setdefault(name, namespace)
    names = [u.name for u in units]
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "p")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: _zeros(session.get_inputs()[0].shape)}
        for _ in range(PROFILED_RUNS):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_node[event["name"][: -len("_kernel_time")]].append(event["dur"] / 1000)
    cost = [0.0] * len(units)
    unnamed, last = 0.0, 0
    for node, times in per_node.items():  # dicts keep the execution order of the first run
        ms = statistics.median(times)
        base = node.split("/")[0].removesuffix("_nchwc")
        namespace = next((scopes[c] for c in (node, base, f"node_{base}") if scopes.get(c)), "")
        index = _unit_index(_module_paths(namespace), names) if namespace else None
        if index is None:
            unnamed += ms
            index = last
        cost[index] += ms
        last = index
    return cost, unnamed / max(sum(cost), 1e-9)


def _zeros(shape: list) -> object:
    import numpy as np

    return np.zeros([d if isinstance(d, int) else 1 for d in shape], np.float32)


def in_context(table: LatencyTable, shares: dict[str, list[float]], cuts: dict[str, list[Unit]]) -> LatencyTable:
    """The table with each unit's time replaced by its share of the calibration models it sits in (a geometric
    mean where several hold it), and the correction refitted on those sums."""
    samples: dict[str, list[float]] = defaultdict(list)
    for record in table.models:
        cost = shares[record["key"]]
        for unit, ms in zip(cuts[record["key"]], cost, strict=True):
            samples[unit.signature].append(record["measured_ms"] * max(ms, 1e-6) / sum(cost))
    units = {sig: {**table.units[sig], "ms": math.exp(statistics.fmean(map(math.log, v)))}
             for sig, v in samples.items()}
    units = {**table.units, **units}
    models = []
    for record in table.models:
        records = [units[u.signature] for u in cuts[record["key"]]]
        total = sum(r["ms"] for r in records)
        models.append({**record, "sum_units_ms": total, "features": model_features(records, total)})
    context = replace(table, units=units, models=models, correction={})
    context.fit_correction()
    return context


def _group(key: str, table: LatencyTable) -> str:
    name, width, resolution = key.split()
    calibrated = {m["key"] for m in table.models}
    if key in calibrated:
        return "calibration points"
    points = [k.split() for k in calibrated]
    if not any(p[0] == name for p in points):
        return "members never calibrated"
    if any(p[0] == name and p[1] == width for p in points):
        return "new resolution"
    return "new width"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measured", type=Path, required=True,
                        help="a predictor_error.py --out file, timed with the table (its --calibrate)")
    parser.add_argument("--cache", type=Path, help="the exported models (predictor_error.py --cache); else exported")
    args = parser.parse_args(argv)
    try:
        earlier = json.loads(args.measured.read_text())
        measured = {r["model"]: r["measured_ms"] for r in earlier["rows"]}
        if earlier.get("runtime", "onnxruntime") != "onnxruntime":
            raise EdgekitError(f"{args.measured} was timed with {earlier['runtime']}: this profiles ONNX Runtime.")
        table = load_table(earlier["device"], "onnxruntime", earlier.get("threads", 1))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.measured} is not a predictor_error.py --out file ({type(exc).__name__}).",
              file=sys.stderr)
        return 2
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cuts = {m["key"]: cut_spec(_spec_of(m["key"])) for m in table.models}
    shares, unnamed = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.cache or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        models = {key: build(_spec_of(key)).eval() for key in cuts}
        files = {key: name for name, (_, key) in export_all([], models, folder, "onnxruntime").items()}
        for i, key in enumerate(cuts):
            print(f"\rprofiling {i + 1}/{len(cuts)}: {key:40s}", end="", file=sys.stderr)
            shares[key], share_unnamed = profile_units(folder / files[key], cuts[key], table.threads)
            unnamed.append(share_unnamed)
    print(file=sys.stderr)
    context = in_context(table, shares, cuts)
    errors: dict[str, dict[str, list[float]]] = {"alone": defaultdict(list), "in context": defaultdict(list)}
    for key, ms in measured.items():
        units = cut_spec(_spec_of(key))
        for label, t in (("alone", table), ("in context", context)):
            error = 100 * (t.predict(units).ms / ms - 1)
            errors[label]["all"].append(error)
            errors[label][_group(key, table)].append(error)
    print(f"{'units timed':12s} {'set':26s} {'models':>6s} {'<=10%':>6s} {'<=20%':>6s} {'median':>7s} {'p90':>6s} "
          f"{'bias':>6s}")
    for label, groups in errors.items():
        for group in ("all", "calibration points", "new resolution", "new width", "members never calibrated"):
            if groups.get(group):
                d = distribution(groups[group])
                print(f"{label:12s} {group:26s} {d['models']:6d} {d['within_10pct']:6.0%} {d['within_20pct']:6.0%} "
                      f"{d['median_abs_pct']:6.1f}% {d['p90_abs_pct']:5.1f}% {d['mean_pct']:+5.1f}%")
    print(f"\ntable of {table.created}, {len(table.models)} calibration models; nodes no scope named (given to "
          f"the unit before them): {statistics.fmean(unnamed):.1%} of the profiled time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
