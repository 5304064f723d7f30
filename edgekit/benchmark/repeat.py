"""How far a latency figure can be trusted: the agreement of its interleaved rounds, and what a gate may conclude.

A bench's steady-state runs go in rounds, every configuration taking its share of each (edgekit/runtime/harness.py).
Each round's median is one independent-ish look at the configuration's latency; their spread is the noise a rerun
would see. From them:

- `spread_pct`: (largest - smallest round median) / the p50, in percent;
- `p50_ci_ms`: a distribution-free confidence interval for the median of the round medians: the k-th smallest
  and k-th largest of n, with coverage 1 - 2 * P(Binomial(n, 1/2) < k) (no assumption on the shape of the noise;
  the coverage is at least CI_LEVEL when n allows, else that of the widest interval, min to max, and says so);
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


def repeatability(round_p50_ms: Sequence[float], p50_ms: float) -> dict[str, Any]:
    """The record's `repeat` block for one configuration (see the module docstring)."""
    rounds = [float(v) for v in round_p50_ms]
    if len(rounds) < 2 or p50_ms <= 0:
        return {"rounds": len(rounds), "round_p50_ms": rounds, "repeatable": False,
                "why": "fewer than 2 rounds: nothing to tell its noise from"}
    low, high, coverage = median_interval(rounds)
    # The pooled p50 may sit just outside the rounds' interval: the interval always holds the figure it qualifies.
    low, high = min(low, p50_ms), max(high, p50_ms)
    noise = max(p50_ms - low, high - p50_ms) / p50_ms * 100
    return {"rounds": len(rounds), "round_p50_ms": rounds,
            "spread_pct": (max(rounds) - min(rounds)) / p50_ms * 100,
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
            f"{rep['rounds']} rounds spread {rep['spread_pct']:.0f}%): give it more --runs, use --stable, or "
            "quieten the device.")


@dataclass(frozen=True)
class Figure:
    """A latency figure with its interval; `low == high == value` where no interval was recorded."""

    value: float
    low: float
    high: float
    repeatable: bool | None  # None: no rounds recorded (benchmark_model, an older edgekit)

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
