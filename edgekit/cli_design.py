"""Device-aware design on the command line: `edgekit bench --guidelines`."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from rich.table import Table

from edgekit.cli import _print_json, console, err_console
from edgekit.errors import EdgekitError


def _parse_sizes(text: str | None) -> tuple[int, ...]:
    from edgekit.guidelines import SIZES

    if text is None:
        return SIZES
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(not 8 <= s <= 512 for s in sizes):
        raise EdgekitError(f"--sizes {text!r} is not a list of sizes from 8 to 512: write e.g. --sizes 56,28.")
    return sizes


def _parse_only(text: str | None) -> tuple[str, ...] | None:
    from edgekit.guidelines import EXPERIMENTS

    if text is None:
        return None
    keys = tuple(k.strip().upper() for k in text.split(",") if k.strip())
    known = [e.key for e in EXPERIMENTS]
    if not keys or any(k not in known for k in keys):
        raise EdgekitError(f"--only {text!r}: choose from {', '.join(known)}, e.g. --only G1,G3.")
    return keys


def bench_guidelines(profiles: list[Any], options: Any, only: str | None, sizes: str | None, channel_scale: float,
                     out: Path | None, as_json: bool) -> None:
    from edgekit.artifact import write_json_atomic
    from edgekit.guidelines import measure, plot, slowdowns, write_models
    from edgekit.safe_files import output_lock

    if len(profiles) != 1:
        raise EdgekitError("--guidelines measures one device at a time: give one --device.")
    if not 0.05 <= channel_scale <= 4:
        raise EdgekitError(f"--channel-scale {channel_scale:g} is out of range: give a value from 0.05 to 4.")
    experiments, size_list = _parse_only(only), _parse_sizes(sizes)
    threads = options.threads or (1,)
    if len(threads) != 1:
        raise EdgekitError("--guidelines compares variants at one thread count: give one --threads value.")
    options = dataclasses.replace(options, threads=threads)
    fmt = "tflite" if options.runtime == "tflite" else "onnx"
    profile = profiles[0]
    out = out or Path(f"guidelines-{profile.name}")
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".models.", dir=out) as models_dir, err_console.status(
                "exporting the guideline models") as status:
            models = Path(models_dir)
            cases = write_models(models, fmt, size_list, channel_scale, experiments,
                                 progress=lambda what: status.update(f"exporting {what}"))
            status.update(f"timing {len(cases)} models on {profile.name} ({fmt}, {threads[0]} thread(s))")
            device = measure(cases, models, profile, options)
        loss = slowdowns(cases)
        result = {"device": device, "format": fmt, "threads": threads[0],
                  "cases": [{**c.to_dict(), "slowdown_pct": loss.get(c.file)} for c in cases]}
        write_json_atomic(out / "guidelines.json", result)
        title = f"ShuffleNetV2 guidelines on {profile.name} ({device['info'].get('arch', '?')}, {fmt}, " \
                f"{threads[0]} thread(s))"
        plot(cases, out / "guidelines.png", title)
    if as_json:
        _print_json(result)
        return
    _print_guidelines(cases, loss, title)
    console.print(f"wrote {out / 'guidelines.json'} and {out / 'guidelines.png'}", highlight=False)
    if device["warnings"]:
        for warning in device["warnings"]:
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _print_guidelines(cases: list[Any], loss: dict[str, float], title: str) -> None:
    from edgekit.guidelines import EXPERIMENTS

    console.print(f"[bold]{title}[/]: images per second (slow-down against the first row of each size)",
                  highlight=False)
    for exp in EXPERIMENTS:
        mine = [c for c in cases if c.experiment == exp.key]
        if not mine:
            continue
        channels = sorted({c.channels for c in mine})
        table = Table(title=f"{exp.key}: {exp.title}")
        table.add_column("input")
        table.add_column("variant")
        for c in channels:
            table.add_column(f"c={c}", justify="right")
        for size in sorted({c.size for c in mine}, reverse=True):
            for variant in exp.variants:
                row = {c.channels: c for c in mine if c.size == size and c.variant == variant.label}
                if not row:
                    continue
                cells = []
                for ch in channels:
                    case = row.get(ch)
                    ips = case.images_per_second if case else None
                    cells.append("-" if ips is None else f"{ips:,.1f} ({loss.get(case.file, 0.0):+.0f}%)")
                table.add_row(f"{size}x{size}", variant.label, *cells)
        console.print(table)

