"""How good the predictor's estimates are for units it never measured, without timing anything: each calibration
model's units are held out of the device's table in turn and estimated from the rest (the fit per kind and its
error on the nearest measured units, as `edgekit latency predict` does for a new width or resolution).

    python tools/predictor_holdout.py --device local              # after edgekit latency calibrate
    python tools/predictor_holdout.py --device local --by point   # hold out one width and resolution at once

It compares sums of units timed alone, measured against estimated, so it isolates the estimates from the
whole-model correction and from the machine's drift; `edgekit latency score` scores the whole predictor.
--by point is harder: every family at that width and resolution is held out together, so no unit of the same
shape in another family helps. Figures for the docs, never asserted in tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.core.errors import EdgekitError  # noqa: E402
from edgekit.devices.profiles import load_profile  # noqa: E402
from edgekit.predictor.score import distribution, spec_of_key  # noqa: E402
from edgekit.predictor.table import load_table  # noqa: E402
from edgekit.predictor.units import cut_spec  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="local")
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--by", choices=("model", "point"), default="model",
                        help="hold out one calibration model, or one width and resolution for every family")
    args = parser.parse_args(argv)
    try:
        table = load_table(load_profile(args.device).name, args.runtime, args.threads)
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    units = {m["key"]: cut_spec(spec_of_key(m["key"])) for m in table.models}
    point = {key: key.split(maxsplit=1)[1] for key in units}  # "wWIDTH rRESOLUTION"
    errors = []
    print(f"{'held-out model':36s} {'units':>5s} {'measured ms':>11s} {'estimated ms':>12s} {'error':>7s}")
    for key, model_units in units.items():
        group = [key] if args.by == "model" else [k for k in units if point[k] == point[key]]
        held = {u.signature for k in group for u in units[k]}
        measured = table.predict(model_units).sum_units_ms
        estimated = table.without(held).predict(model_units).sum_units_ms
        errors.append(100 * (estimated / measured - 1))
        print(f"{key:36s} {len(model_units):5d} {measured:11.3f} {estimated:12.3f} {errors[-1]:+6.1f}%")
    d = distribution(errors)
    print(f"\n{d['models']} calibration models of the table of {table.created}, held out by {args.by}: sum of units "
          f"within 5% {d['within_5pct']:.0%}, within 10% {d['within_10pct']:.0%}, within 20% "
          f"{d['within_20pct']:.0%}; median |error| {d['median_abs_pct']:.1f}%, p90 {d['p90_abs_pct']:.1f}%, "
          f"mean {d['mean_pct']:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
