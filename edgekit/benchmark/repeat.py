"""How far a latency figure can be trusted: the agreement of its independent looks, and what a gate may conclude.

A bench times every file in several fresh harness processes, one after another, each taking its share of the runs
in interleaved rounds (edgekit/runtime/harness.py, --processes). The process is the unit of variation: two
invocations of `edgekit bench` on the same files differ by more than the rounds inside one process do (its memory
layout, the core it lands on, the machine's state while it runs), so each process's median is one independent
look at the configuration's latency. With one process, its rounds' medians are the looks instead (narrower: they
describe that process only). From the looks:

- `spread_pct`: (largest - smallest look) / the p50, in percent;
- `p50_ci_ms`: a distribution-free confidence interval for the median of the looks: the k-th smallest and k-th
  largest of n, with coverage 1 - 2 * P(Binomial(n, 1/2) < k) (no assumption on the shape of the noise; the
  coverage is at least CI_LEVEL when n allows, else that of the widest interval, min to max, and says so);
- `noise_pct`: the interval's larger half-width against the p50, in percent; a figure is `repeatable` when it is
  within REPEATABLE_PCT.

`judge` is the gate's rule, one home for `edgekit check`'s latency cases and `edgekit run`'s budgets: a figure
whose whole interval is beyond the limit fails; one whose whole interval is within it passes; one whose interval
straddles the limit is inconclusive: the noise is larger than the margin, and a rerun could land on either side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CI_LEVEL = 0.95
REPEATABLE_PCT = 5.0  # the interval's half-width, percent of the p50, beyond which a figure is too noisy to compare

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"

# Fresh harness processes per bench (BenchOptions.processes). Each process's median is one look at a file's
# latency, and the interval is over them: 6 give min..max at 96.9%, 10 (--stable) the 2nd..9th at 97.9%.
DEFAULT_PROCESSES = 6
STABLE_PROCESSES = 10
MAX_PROCESSES = 100


def _binomial_half_pmf(n: int, i: int) -> float:
    """P(Binomial(n, 1/2) == i), in floats (log-gamma): exact big-integer sums take minutes at thousands of rounds."""
    return math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2))


def median_interval(values: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float, float]:
    """(low, high, coverage): the narrowest order-statistic interval for the median with coverage >= level, or
    min..max when too few values reach it. The k-th smallest to k-th largest of n covers the median with
    probability 1 - 2 * P(Binomial(n, 1/2) <= k - 1)."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    k, below = 1, _binomial_half_pmf(n, 0)  # below: P(Binomial(n, 1/2) <= k - 1)
    while k + 1 <= (n + 1) // 2:
        wider = below + _binomial_half_pmf(n, k)
        if 1.0 - 2.0 * wider < level:
            break
        k, below = k + 1, wider
    return ordered[k - 1], ordered[n - k], 1.0 - 2.0 * below


def plural(unit: str, count: int) -> str:
    return unit if count == 1 else unit + ("es" if unit.endswith("s") else "s")


def repeatability(looks_ms: Sequence[float], p50_ms: float, unit: str = "process") -> dict[str, Any]:
    """The record's `repeat` block for one configuration (see the module docstring): `looks_ms` are its
    per-process p50s (unit "process") or, from a single process, its rounds' (unit "round")."""
    looks = [float(v) for v in looks_ms]
    block: dict[str, Any] = {"unit": unit, "count": len(looks), "p50s_ms": looks}
    if len(looks) < 2 or p50_ms <= 0:
        return {**block, "repeatable": False, "why": f"fewer than 2 {plural(unit, 2)}: nothing to tell its noise from"}
    low, high, coverage = median_interval(looks)
    # The pooled p50 may sit just outside the looks' interval: the interval always holds the figure it qualifies.
    low, high = min(low, p50_ms), max(high, p50_ms)
    noise = max(p50_ms - low, high - p50_ms) / p50_ms * 100
    return {**block, "spread_pct": (max(looks) - min(looks)) / p50_ms * 100,
            "p50_ci_ms": [low, high], "ci_level": round(coverage, 4), "noise_pct": noise,
            "repeatable": noise <= REPEATABLE_PCT}


def repeat_warning(result: dict[str, Any]) -> str | None:
    """The warning for a figure not repeatable enough to compare, or None."""
    rep = result.get("repeat")
    if not rep or rep.get("repeatable") or "p50_ci_ms" not in rep:
        return None
    low, high = rep["p50_ci_ms"]
    return (f"not repeatable enough to compare: p50 {result['steady']['p50_ms']:.3g} ms, {rep['ci_level']:.0%} "
            f"interval {low:.3g}-{high:.3g} ms (+-{rep['noise_pct']:.1f}%, over {REPEATABLE_PCT:g}%; its "
            f"{rep['count']} {plural(rep['unit'], rep['count'])} spread {rep['spread_pct']:.0f}%): give it more "
            "--processes, use --stable, or quieten the device.")


@dataclass(frozen=True)
class Figure:
    """A latency figure with its interval; `low == high == value` where no interval was recorded."""

    value: float
    low: float
    high: float
    repeatable: bool | None  # None: no looks recorded (benchmark_model, an older edgekit)

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Figure:
        p50 = float(entry["steady"]["p50_ms"])
        rep = entry.get("repeat") or {}
        if "p50_ci_ms" not in rep:
            return cls(p50, p50, p50, None)
        low, high = rep["p50_ci_ms"]
        return cls(p50, float(low), float(high), bool(rep["repeatable"]))

    @property
    def interval(self) -> str:
        if self.repeatable is None:
            return f"{self.value:.3g} ms (no interval recorded)"
        return f"{self.value:.3g} ms [{self.low:.3g}, {self.high:.3g}]"

    def __truediv__(self, other: Figure) -> Figure:
        """The ratio of two figures, with the widest interval their intervals allow."""
        known = [f.repeatable for f in (self, other) if f.repeatable is not None]
        return Figure(self.value / other.value, self.low / other.high, self.high / other.low,
                      all(known) if known else None)


def judge(figure: Figure, limit: float) -> str:
    """PASS when the whole interval is at or below `limit`, FAIL when the whole interval is above it,
    INCONCLUSIVE when it straddles (the noise exceeds the margin)."""
    if figure.low > limit:
        return FAIL
    if figure.high <= limit:
        return PASS
    return INCONCLUSIVE
