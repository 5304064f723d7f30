"""A latency figure's repeatability (edgekit/benchmark/repeat.py) and the gate's rule on it: pass, fail, inconclusive.

These construct the rounds a bench records (each round's median) to exercise the rule itself, not the timer;
tests/test_check.py runs it end to end on real bench figures and two real models of different cost.
"""

import math

import pytest

from edgekit.benchmark.repeat import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    REPEATABLE_PCT,
    Figure,
    judge,
    median_interval,
    repeat_warning,
    repeatability,
)
from edgekit.gate.rules import latency_budget_cases, latency_case
from edgekit.manifest import Manifest


def test_median_interval_is_the_order_statistic_interval_with_its_coverage():
    # 5 rounds: min..max covers the median with 1 - 2 / 2^5; no narrower interval reaches 95%.
    low, high, coverage = median_interval([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (low, high) == (1.0, 5.0) and coverage == pytest.approx(1 - 2 / 32)
    # 20 rounds: the 6th smallest to the 6th largest (coverage 95.9%); the 7th would be under 95%.
    values = list(range(1, 21))
    low, high, coverage = median_interval(values)
    assert (low, high) == (6, 15) and coverage == pytest.approx(1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2**20)
    assert 1 - 2 * sum(math.comb(20, i) for i in range(7)) / 2**20 < 0.95 <= coverage
    # a tiny model's bench makes thousands of rounds: the interval stays symmetric about the median, at 95%
    low, high, coverage = median_interval(list(range(5001)))
    assert low + high == 5000 and 0.95 <= coverage < 0.96 and high - low < 160


def test_repeatability_of_tight_and_noisy_rounds():
    tight = repeatability([10.0, 10.1, 9.9, 10.05, 9.95, 10.0, 10.02, 9.98], 10.0)
    assert tight["repeatable"] and tight["noise_pct"] <= 1.0 and tight["spread_pct"] == pytest.approx(2.0)
    assert tight["p50_ci_ms"][0] <= 10.0 <= tight["p50_ci_ms"][1]
    noisy = repeatability([10.0, 13.0, 8.0, 12.0, 9.0], 10.0)
    assert not noisy["repeatable"] and noisy["noise_pct"] == pytest.approx(30.0)
    assert noisy["noise_pct"] > REPEATABLE_PCT and noisy["p50_ci_ms"] == [8.0, 13.0]
    warning = repeat_warning({"steady": {"p50_ms": 10.0}, "repeat": noisy})
    assert warning and "not repeatable enough to compare" in warning and "+-30.0%" in warning
    assert repeat_warning({"steady": {"p50_ms": 10.0}, "repeat": tight}) is None
    # One round tells nothing about its noise: not repeatable, and no interval to judge with.
    single = repeatability([10.0], 10.0)
    assert not single["repeatable"] and "p50_ci_ms" not in single
    assert Figure.of({"steady": {"p50_ms": 10.0}, "repeat": single}).repeatable is None


def test_judge_passes_fails_or_is_inconclusive_by_where_the_interval_lies():
    assert judge(Figure(10.0, 9.5, 10.5, True), 11.0) == PASS
    assert judge(Figure(12.0, 11.5, 12.5, True), 11.0) == FAIL
    assert judge(Figure(10.0, 8.0, 13.0, False), 11.0) == INCONCLUSIVE  # the noise is larger than the margin
    # The same p50 decides differently with and without noise; a point figure is judged as it is.
    assert judge(Figure(12.0, 8.0, 16.0, False), 11.0) == INCONCLUSIVE
    assert judge(Figure(12.0, 12.0, 12.0, None), 11.0) == FAIL


def test_a_ratio_carries_both_intervals():
    ratio = Figure(5.0, 4.0, 6.0, False) / Figure(10.0, 8.0, 12.5, True)
    assert ratio.value == 0.5 and ratio.low == pytest.approx(4.0 / 12.5) and ratio.high == pytest.approx(0.75)
    assert ratio.repeatable is False
    case = latency_case("m", "onnx_int8", "latency ratio", ratio, 0.6, "<= 0.6", "p50s")
    assert case.inconclusive and not case.passed and case.verdict == INCONCLUSIVE and "straddles" in case.detail
    # As a percent change against a baseline: the value and the interval are scaled alike.
    change = latency_case("m", "x", "latency vs baseline", Figure(1.3, 1.25, 1.35, True), 1.1, "<= +10 %", "p50",
                          scale=100, offset=-100)
    assert change.verdict == FAIL and change.value == 30.0 and "interval 25 to 35" in change.detail


def _manifest(rounds: list[float], p50: float) -> Manifest:
    from edgekit.manifest import FileRecord, InputRecord
    from edgekit.models import resolve_spec

    entry = {"file": "model_int8.tflite", "sha256": "s", "device": {"name": "pi"}, "runtime": "tflite",
             "runtime_kind": "tflite", "threads": 1, "time": "t", "steady": {"p50_ms": p50},
             "repeat": repeatability(rounds, p50)}
    return Manifest(resolve_spec("mobilenet_v2"), InputRecord(layout={}, shape_nchw=[1, 3, 224, 224]),
                    {"tflite_int8": FileRecord("model_int8.tflite", 1, "s")}, bench=[entry])


def test_budget_cases_use_the_interval():
    noisy = [20.0, 26.0, 16.0, 24.0, 18.0]
    tight = [20.0, 20.2, 19.8, 20.1, 19.9]
    case, = latency_budget_cases("m", _manifest(noisy, 20.0), {"pi": 22.0})
    assert case.verdict == INCONCLUSIVE
    case, = latency_budget_cases("m", _manifest(tight, 20.0), {"pi": 22.0})
    assert case.verdict == PASS
    case, = latency_budget_cases("m", _manifest([2 * r for r in tight], 40.0), {"pi": 22.0})
    assert case.verdict == FAIL
