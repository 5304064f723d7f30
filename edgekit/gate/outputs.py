"""What CI systems show: JUnit XML (one test case per model x format x metric) and a Markdown summary.

An inconclusive latency case (a figure noisier than its margin to the limit) is a skipped test case in JUnit, with
the reason as its message, and ❔ in the Markdown: neither a pass nor a failure."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from edgekit.gate.checks import ArtifactCheck
from edgekit.gate.rules import Case


def _value(case: Case) -> str:
    return "n/a" if math.isnan(case.value) else f"{case.value:g}"


def junit_xml(results: list[ArtifactCheck]) -> str:
    cases = [(r, c) for r in results for c in r.cases]
    failures = sum(c.verdict == "fail" for _, c in cases)
    skipped = sum(c.inconclusive for _, c in cases)
    suites = ET.Element("testsuites", name="edgekit check", tests=str(len(cases)), failures=str(failures),
                        skipped=str(skipped))
    for r in results:
        suite = ET.SubElement(suites, "testsuite", name=r.model, tests=str(len(r.cases)),
                              failures=str(sum(c.verdict == "fail" for c in r.cases)),
                              skipped=str(sum(c.inconclusive for c in r.cases)), time=f"{r.seconds:.3f}")
        props = ET.SubElement(suite, "properties")
        for name, value in (("artifact", str(r.directory)), ("data", r.data), ("images", str(r.images)),
                            ("reference", r.reference)):
            ET.SubElement(props, "property", name=name, value=value)
        for c in r.cases:
            case = ET.SubElement(suite, "testcase", classname=f"edgekit.gate.{r.model}", name=c.name, time="0")
            message = f"{c.metric} {_value(c)} (limit {c.limit}): {c.detail}"
            if c.passed:
                ET.SubElement(case, "system-out").text = message
            elif c.inconclusive:
                ET.SubElement(case, "skipped", message=f"inconclusive: {message}").text = message
            else:
                ET.SubElement(case, "failure", message=message, type="edgekit.check").text = message
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def markdown(results: list[ArtifactCheck]) -> str:
    failed = sum(c.verdict == "fail" for r in results for c in r.cases)
    unsure = sum(c.inconclusive for r in results for c in r.cases)
    total = sum(len(r.cases) for r in results)
    head = "passed" if not failed and not unsure else ", ".join(
        text for n, text in ((failed, f"{failed} of {total} checks failed"),
                             (unsure, f"{unsure} of {total} inconclusive (too noisy to judge)")) if n)
    lines = [f"## edgekit check: {head}", ""]
    for r in results:
        accuracy = ", ".join(f"{fmt} {top1:.2%}" for fmt, top1 in r.top1.items())
        lines += [f"**{r.model}** on {r.data}, {r.images:,} images: {accuracy}", "",
                  "| | format | metric | value | limit | detail |", "|---|---|---|---:|---|---|"]
        for c in r.cases:
            mark = "✅" if c.passed else "❔" if c.inconclusive else "❌"
            lines.append(f"| {mark} | {c.format} | {c.metric} | {_value(c)} | {c.limit} | {c.detail} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def append_step_summary(text: str) -> Path | None:
    """GitHub Actions shows what a step appends to $GITHUB_STEP_SUMMARY on the run's page."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a") as f:
        f.write(text)
    return Path(target)
