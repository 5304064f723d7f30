"""Write the report directory: report.md, report.html, report.json and the two plots."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.core.files import staged_directory, write_json_atomic, write_text_atomic
from edgekit.core.optional import has_extra, install_command
from edgekit.report.collect import Row, read_rows, settings
from edgekit.report.plots import scatter_plot

LATENCY_PNG = "accuracy_vs_latency.png"
MACS_PNG = "accuracy_vs_macs.png"
PLOTS_NEED_EXTRA = f"plots need the report extra: {install_command('report')}"


@dataclass
class Report:
    rows: list[Row]
    settings: list[str]
    plotted_setting: str | None
    header: list[str]
    cells: list[list[str]]
    written: list[Path]
    plots: bool = True  # False where the report extra (matplotlib) is not installed: tables only

    @property
    def notes(self) -> list[str]:
        """What the user should know about what was left out."""
        return [] if self.plots else [PLOTS_NEED_EXTRA]


def _mb(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.2f}"


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.2%}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(rows: list[Row], all_settings: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "family", "width", "res", "params (M)", "MACs (M)", "FP32 MB", "INT8 MB", "top-1 FP32",
              "top-1 INT8", "drop (pp)", *(f"{s} ms FP32 / INT8" for s in all_settings)]
    cells = []
    for r in sorted(rows, key=lambda r: (r.family, r.macs)):
        fp32, int8 = r.accuracy("fp32"), r.accuracy("int8")
        drop = "" if fp32 is None or int8 is None else f"{(fp32 - int8) * 100:.2f}"
        fp32_size, int8_size = r.size("fp32"), r.size("int8")
        cells.append([r.name, r.family, f"{r.width:g}", str(r.resolution), f"{r.params / 1e6:.2f}",
                      f"{r.macs / 1e6:.1f}", _mb(fp32_size), _mb(int8_size), _pct(fp32), _pct(int8), drop,
                      *(f"{_ms(r.latency(s, 'fp32'))} / {_ms(r.latency(s, 'int8'))}" for s in all_settings)])
    return header, cells


def markdown(report: Report) -> str:
    lines = ["# edgekit report", "", f"{len(report.rows)} artifacts. Accuracy: validation top-1 (INT8 = TFLite "
             "INT8 where present, else ONNX INT8). Latency: p50 of `edgekit bench`, device/runtime/threads.", "",
             "| " + " | ".join(report.header) + " |", "|" + "---|" * len(report.header)]
    lines += ["| " + " | ".join(row) + " |" for row in report.cells]
    if not report.plots:
        return "\n".join([*lines, "", f"({PLOTS_NEED_EXTRA})"]) + "\n"
    lines += ["", f"![accuracy vs MACs]({MACS_PNG})"]
    if report.plotted_setting:
        lines += ["", f"![accuracy vs latency on {report.plotted_setting}]({LATENCY_PNG})"]
    return "\n".join(lines) + "\n"


def html_page(report: Report) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in report.header)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in report.cells)
    images = [f'<img src="{MACS_PNG}" alt="accuracy vs MACs">'] if report.plots else [
        f"<p>({html.escape(PLOTS_NEED_EXTRA)})</p>"]
    if report.plotted_setting and report.plots:
        images.append(f'<img src="{LATENCY_PNG}" alt="accuracy vs latency on {html.escape(report.plotted_setting)}">')
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgekit report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child,td:nth-child(2){{text-align:left}}
img{{max-width:48%;margin:1em 1em 0 0}}</style></head>
<body><h1>edgekit report</h1>
<p>{len(report.rows)} artifacts. Accuracy: validation top-1 (INT8 = TFLite INT8 where present, else ONNX INT8).
Latency: p50 of <code>edgekit bench</code>, device/runtime/threads.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table>
{"".join(images)}
</body></html>
"""


REPORT_FILES = {"report.md", "report.html", "report.json", MACS_PNG, LATENCY_PNG}


def write_report(paths: list[Path], out: Path, latency: str | None = None) -> Report:
    rows = read_rows(paths)
    all_settings = settings(rows)
    if latency is not None and latency not in all_settings:
        known = ", ".join(all_settings) or "none: run edgekit bench first"
        raise EdgekitError(f"--latency {latency!r} was not measured on these artifacts (measured: {known}).")
    plotted = latency or (all_settings[0] if all_settings else None)
    header, cells = table(rows, all_settings)
    _check_out(out)
    report = Report(rows, all_settings, plotted, header, cells, [], plots=has_extra("report"))
    int8_or_fp32 = _accuracy_of(rows)
    kind = "INT8" if int8_or_fp32 == "int8" else "FP32"
    plots = [MACS_PNG, *([LATENCY_PNG] if plotted else [])] if report.plots else []
    names = [*plots, "report.md", "report.html", "report.json"]
    # The report appears whole or not at all: written into a staging directory beside `out`, then swapped in.
    with staged_directory(out, force=True) as stage:
        if report.plots:
            scatter_plot(rows, lambda r: r.macs / 1e6, lambda r: r.accuracy(int8_or_fp32),
                         "MACs (millions, log scale)", f"{kind} top-1 accuracy (%)", f"{kind} accuracy vs MACs",
                         stage / MACS_PNG, log_x=True)
        if plotted and report.plots:
            scatter_plot(rows, lambda r: r.latency(plotted, int8_or_fp32), lambda r: r.accuracy(int8_or_fp32),
                         f"{kind} p50 latency (ms) on {plotted}", f"{kind} top-1 accuracy (%)",
                         f"{kind} accuracy vs latency ({plotted})", stage / LATENCY_PNG)
        write_text_atomic(stage / "report.md", markdown(report))
        write_text_atomic(stage / "report.html", html_page(report))
        data: dict[str, Any] = {"rows": [r.to_dict() for r in rows], "settings": all_settings,
                                "plotted_setting": plotted, "accuracy_plotted": kind}
        write_json_atomic(stage / "report.json", data)
    report.written += [out / name for name in names]
    return report


def _check_out(out: Path) -> None:
    """A report replaces its directory whole, so the directory may hold nothing but an earlier report."""
    if out.exists() and not out.is_dir():
        raise EdgekitError(f"--out {out} is a file: choose a directory for the report.")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
        if other:
            raise EdgekitError(f"--out {out} holds files that are not a report ({', '.join(other[:3])}"
                               f"{' ...' if len(other) > 3 else ''}): choose an empty or new directory.")


def _accuracy_of(rows: list[Row]) -> str:
    """Plot INT8 accuracy when every artifact has it (the deployed model), else FP32."""
    return "int8" if rows and all(r.accuracy("int8") is not None for r in rows) else "fp32"
