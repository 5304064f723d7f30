"""The gate's rules as pure functions over recorded figures: an accuracy drop against its budget, INT8 latency
against FP32, a latency budget per device. `edgekit check` and `edgekit run`'s check stage both decide with these.

Latency cases judge a figure with its interval (edgekit/benchmark/repeat.py): beyond the limit by more than the noise
fails, within it by more than the noise passes, and a figure whose interval straddles the limit is inconclusive
(`passed` False and `inconclusive` True: neither a pass nor a failure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.benchmark.records import latest_figures
from edgekit.benchmark.repeat import FAIL, INCONCLUSIVE, PASS, Figure, judge
from edgekit.core.errors import EdgekitError
from edgekit.runtime import formats

if TYPE_CHECKING:
    from edgekit.manifest import Manifest

INCONCLUSIVE_EXIT = 4  # `check` and `run` exit with it when a figure is too noisy to judge (3: internal error)
EXIT_CODES = {"passed": 0, "failed": 1, "inconclusive": INCONCLUSIVE_EXIT}
INT8_FORMATS = formats.INT8_NAMES  # ("onnx_int8", "tflite_int8")


@dataclass
class Case:
    model: str
    format: str
    metric: str  # "accuracy drop", "accuracy vs baseline", "latency ratio", "latency vs baseline"
    value: float
    limit: str
    passed: bool
    detail: str = ""
    inconclusive: bool = False  # the figure's noise is larger than its margin to the limit: neither pass nor fail

    @property
    def name(self) -> str:
        return f"{self.format} {self.metric}"

    @property
    def verdict(self) -> str:
        return PASS if self.passed else INCONCLUSIVE if self.inconclusive else FAIL


@dataclass
class Verdict:
    """One verdict over a set of cases, and the exit code `edgekit check` and `edgekit run` both end with: passed
    (0), failed (1: a case failed) or inconclusive (4: none failed, but a latency figure was too noisy to judge)."""

    failed: list[Case]
    inconclusive: list[Case]

    @property
    def name(self) -> str:
        return "failed" if self.failed else "inconclusive" if self.inconclusive else "passed"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.name]

    def line(self, limit: int = 3) -> str:
        """The failed (else inconclusive) cases, at most `limit` of them, e.g. 'tflite_int8 accuracy drop 2.1
        (limit <= 1 pp)'."""
        cases = self.failed or self.inconclusive
        text = "; ".join(f"{c.model} {c.name} {c.value:g} (limit {c.limit})" for c in cases[:limit])
        return text + (f" and {len(cases) - limit} more" if len(cases) > limit else "")


def verdict(cases: list[Case]) -> Verdict:
    return Verdict([c for c in cases if c.verdict == FAIL], [c for c in cases if c.verdict == INCONCLUSIVE])


NOISY_FIX = "the figure is noisier than its margin to the limit; rerun edgekit bench (more --processes, --stable, " \
            "a quieter machine)"


def latency_case(model: str, fmt: str, metric: str, figure: Figure, limit: float, limit_text: str, detail: str,
                 scale: float = 1.0, offset: float = 0.0) -> Case:
    """A Case judged on `figure`'s interval against `limit` (see edgekit/benchmark/repeat.judge); its value is
    figure.value * scale + offset (a ratio shown as a percent change, say)."""
    verdict = judge(figure, limit)
    if figure.repeatable is not None:
        low, high = figure.low * scale + offset, figure.high * scale + offset
        detail += f"; interval {low:.3g} to {high:.3g}"
        if verdict == INCONCLUSIVE:
            detail += f" straddles the limit: {NOISY_FIX}"
    return Case(model, fmt, metric, round(figure.value * scale + offset, 3), limit_text, verdict == PASS, detail,
                verdict == INCONCLUSIVE)


def accuracy_drop_cases(model: str, top1: dict[str, float], reference: str, formats: list[str], max_drop: float,
                        relative: bool = False, images: int | None = None) -> list[Case]:
    """Each format's top-1 drop against the reference's, in percentage points (or percent of the reference with
    `relative`), within `max_drop`."""
    ref = top1[reference]
    unit = "%" if relative else "pp"
    cases = []
    for fmt in formats:
        drop = (ref - top1[fmt]) * 100  # percentage points
        if relative:
            drop = drop / ref if ref else float("inf")  # percent of the reference's accuracy
        on = f" on {images} images" if images else ""
        cases.append(Case(
            model, fmt, "accuracy drop", round(drop, 3), f"<= {max_drop:g} {unit}", drop <= max_drop + 1e-9,
            f"top-1 {top1[fmt]:.2%} vs {reference} {ref:.2%}{on}"))
    return cases


def latency_ratio_cases(directory: Path, model: str, manifest: Manifest, limit: float) -> list[Case]:
    latest = latest_figures(manifest)
    names = manifest.format_of_file()
    cases = []
    for key, p50 in sorted(latest.items(), key=lambda item: item[0].label):
        fmt = names.get(key.file)
        if fmt not in INT8_FORMATS:
            continue
        fp32_record = manifest.files.get(fmt.removesuffix("_int8"))
        fp32_file = fp32_record.file if fp32_record else None
        fp32 = next((v for k, v in latest.items() if k.file == fp32_file and k.setting == key.setting), None)
        if fp32 is None:
            continue
        cases.append(latency_case(model, fmt, f"latency ratio {key.setting}", p50 / fp32, limit, f"<= {limit:g}",
                                  f"p50 {p50.interval} vs FP32 {fp32.interval}"))
    if not cases:
        raise EdgekitError(
            f"{directory} has no latency of an INT8 file and its FP32 twin on one device: "
            f"run `edgekit bench {directory}` first, or drop --max-latency-ratio."
        )
    return cases


def latency_budget_cases(model: str, manifest: Manifest, budgets_ms: dict[str, float]) -> list[Case]:
    """Every INT8 file's p50 on each budgeted device, at its fastest measured thread count, within the budget."""
    names = manifest.format_of_file()
    best: dict[tuple[str, str], tuple[Figure, str]] = {}
    for key, p50 in latest_figures(manifest).items():
        fmt = names.get(key.file)
        if fmt in INT8_FORMATS and key.device in budgets_ms and (
                (key.device, fmt) not in best or p50.value < best[(key.device, fmt)][0].value):
            best[(key.device, fmt)] = (p50, key.setting)
    cases = []
    for device, budget in sorted(budgets_ms.items()):
        found = {fmt: value for (dev, fmt), value in best.items() if dev == device}
        if not found:
            cases.append(Case(model, "int8", f"latency on {device}", float("nan"), f"<= {budget:g} ms", False,
                              f"no INT8 latency measured on {device}: add it to the recipe's devices"))
        for fmt, (p50, setting) in sorted(found.items()):
            cases.append(latency_case(model, fmt, f"latency on {device}", p50, budget, f"<= {budget:g} ms",
                                      f"p50 {p50.interval} ({setting})"))
    return cases
