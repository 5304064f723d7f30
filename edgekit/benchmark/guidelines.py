"""ShuffleNetV2's four speed guidelines, measured on any device (`edgekit bench --guidelines`).

Ma et al. (ShuffleNetV2, ECCV 2018, section 2) time stacks of ten identical blocks whose FLOPs are held fixed
while one property changes; the lecture's tables (seed 003) give their GPU and ARM figures:

- G1: equal channel width minimises memory access. Two 1x1 convolutions c1 -> c2 -> c1 with c1:c2 = 1:1, 1:2,
  1:6, 1:12 and c1 * c2 = c^2 (the same FLOPs).
- G2: excessive group convolution increases memory access. A 1x1 group convolution with g = 1, 2, 4, 8 and
  c_g = c * sqrt(g) channels, so c_g^2 / g = c^2.
- G3: network fragmentation reduces parallelism. 1, 2 or 4 1x1 convolutions in series (each c / sqrt(n) wide) or
  in parallel (n branches c -> c / n, concatenated), all c^2 per block.
- G4: element-wise operations are not negligible. A ResNet bottleneck (1x1 c -> c/4, 3x3, 1x1 back to c) with and
  without its ReLUs and its shortcut.

Each variant is built at the paper's two input sizes (56 and 28) and three channel counts (its CPU columns), exported
to ONNX or TFLite, and timed with the bench machinery; the table reports images per second, as the paper does,
and each variant's slow-down against the first variant of its row group.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.core.errors import EdgekitError
from edgekit.core.optional import has_extra, install_command
from edgekit.runtime.formats import FORMATS

BLOCKS = 10
SIZES = (56, 28)


def _conv1x1(cin: int, cout: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, groups=groups, bias=False)


class _Series(nn.Sequential):
    pass


class _Parallel(nn.Module):
    def __init__(self, c: int, n: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_conv1x1(c, c // n) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class _Bottleneck(nn.Module):
    def __init__(self, c: int, relu: bool, shortcut: bool) -> None:
        super().__init__()
        mid = c // 4
        act: Callable[[], nn.Module] = (lambda: nn.ReLU()) if relu else nn.Identity
        self.body = nn.Sequential(_conv1x1(c, mid), act(), nn.Conv2d(mid, mid, 3, padding=1, bias=False), act(),
                                  _conv1x1(mid, c))
        self.shortcut = shortcut
        self.out = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return self.out(y + x if self.shortcut else y)


def _even(x: float, multiple: int = 1) -> int:
    """The nearest multiple of `multiple` (at least one of it): widths as close to equal FLOPs as integers allow."""
    return max(multiple, int(round(x / multiple)) * multiple)


@dataclass(frozen=True)
class Variant:
    """One row of a guideline's table: how to build a block of base width c, and its input channels."""

    label: str
    block: Callable[[int], nn.Module]
    in_channels: Callable[[int], int]


def _g1(ratio: int) -> Variant:
    def widths(c: int) -> tuple[int, int]:
        return _even(c * math.sqrt(ratio)), _even(c / math.sqrt(ratio))

    def block(c: int) -> nn.Module:
        c1, c2 = widths(c)
        return nn.Sequential(_conv1x1(c1, c2), _conv1x1(c2, c1))

    return Variant("c1=c2" if ratio == 1 else f"c1={ratio}c2", block, lambda c: widths(c)[0])


def _g2(groups: int) -> Variant:
    def width(c: int) -> int:
        return _even(c * math.sqrt(groups), groups)

    return Variant(f"g={groups}", lambda c: _conv1x1(width(c), width(c), groups), width)


def _g3(n: int, parallel: bool) -> Variant:
    if parallel:
        return Variant(f"{n}-fragment-parallel", lambda c: _Parallel(c, n), lambda c: c)

    def width(c: int) -> int:
        return _even(c / math.sqrt(n))

    label = "1-fragment" if n == 1 else f"{n}-fragment-series"
    return Variant(label, lambda c: _Series(*(_conv1x1(width(c), width(c)) for _ in range(n))), width)


def _g4(relu: bool, shortcut: bool) -> Variant:
    label = "bottleneck" + {(True, True): "", (True, False): " (without shortcut)", (False, True): " (without ReLU)",
                            (False, False): " (without shortcut and ReLU)"}[(relu, shortcut)]
    return Variant(label, lambda c: _Bottleneck(c, relu, shortcut), lambda c: c)


@dataclass(frozen=True)
class Experiment:
    key: str
    title: str
    variants: tuple[Variant, ...]
    channels: tuple[int, ...]  # the paper's CPU columns


EXPERIMENTS = (
    Experiment("G1", "1x1 convolution pairs, c1:c2 at equal FLOPs", tuple(_g1(r) for r in (1, 2, 6, 12)),
               (32, 64, 128)),
    Experiment("G2", "group convolution at equal FLOPs", tuple(_g2(g) for g in (1, 2, 4, 8)), (64, 128, 256)),
    Experiment("G3", "fragments in series and in parallel",
               (_g3(1, False), _g3(2, False), _g3(4, False), _g3(2, True), _g3(4, True)), (64, 128, 256)),
    Experiment("G4", "ReLU and shortcut in a bottleneck",
               tuple(_g4(r, s) for r, s in ((True, True), (True, False), (False, True), (False, False))),
               (32, 64, 128)),
)


def build(variant: Variant, c: int) -> tuple[nn.Module, torch.Tensor]:
    """Ten blocks of `variant` at base width `c`, and an example input (batch 1, its own channel count)."""
    model = nn.Sequential(*(variant.block(c) for _ in range(BLOCKS))).eval()
    return model, torch.zeros(1, variant.in_channels(c), 1, 1)


def macs(model: nn.Module, example: torch.Tensor) -> int:
    from edgekit.models.complexity import profile_model

    return profile_model(model, tuple(example.shape[1:])).macs


@dataclass
class GuidelineCase:
    experiment: str
    variant: str
    size: int
    channels: int
    file: str
    macs: int
    p50_ms: float | None = None

    @property
    def images_per_second(self) -> float | None:
        return 1000.0 / self.p50_ms if self.p50_ms else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_second": self.images_per_second}


def write_models(out: Path, fmt: str, sizes: tuple[int, ...] = SIZES, channel_scale: float = 1.0,
                 experiments: tuple[str, ...] | None = None,
                 progress: Callable[[str], None] | None = None) -> list[GuidelineCase]:
    """Export every case of the chosen experiments into `out` (ONNX or TFLite) and return them."""
    from edgekit.core.quiet import quiet

    cases = []
    for exp in EXPERIMENTS:
        if experiments and exp.key not in experiments:
            continue
        for size in sizes:
            for c in (max(8, _even(c * channel_scale, 8)) for c in exp.channels):
                for i, variant in enumerate(exp.variants):
                    model, example = build(variant, c)
                    example = torch.zeros(1, example.shape[1], size, size)
                    name = f"{exp.key.lower()}-{i}-s{size}-c{c}.{fmt}"
                    if progress:
                        progress(f"{exp.key} {variant.label} {size}x{size} c={c}")
                    with quiet():
                        FORMATS[fmt].behaviour("exporter")(model, example, out / name)
                    cases.append(GuidelineCase(exp.key, variant.label, size, c, name, macs(model, example)))
    return cases


def measure(cases: list[GuidelineCase], models: Path, profile: Any, options: Any) -> dict[str, Any]:
    """Time every case on the device with the bench machinery; fills each case's p50 and returns the device info."""
    from edgekit.benchmark.host import bench_device, model_files

    files = [f for case in cases for f in model_files(models / case.file, checks=1)]
    run = bench_device(profile, files, options)
    p50 = {r["file"]: r["steady"]["p50_ms"] for r in run.results}
    for case in cases:
        case.p50_ms = p50.get(case.file)
    return {"device": run.device, "info": run.info, "warnings": run.warnings}


def slowdowns(cases: list[GuidelineCase]) -> dict[str, float]:
    """Each case's throughput loss in percent against the first variant of its (experiment, size, channels)."""
    first: dict[tuple[str, int, int], float] = {}
    out = {}
    for case in cases:
        key = (case.experiment, case.size, case.channels)
        ips = case.images_per_second
        if ips is None:
            continue
        first.setdefault(key, ips)
        out[case.file] = 100.0 * (1.0 - ips / first[key])
    return out


def plot(cases: list[GuidelineCase], path: Path, title: str) -> None:
    """One panel per guideline: each variant's throughput relative to the first variant, per size and width."""
    from edgekit.core.figures import pyplot, save_png

    plt = pyplot()
    experiments = [e for e in EXPERIMENTS if any(c.experiment == e.key for c in cases)]
    fig, axes = plt.subplots(1, len(experiments), figsize=(4.2 * len(experiments), 4.2), squeeze=False)
    loss = slowdowns(cases)
    for ax, exp in zip(axes[0], experiments, strict=True):
        mine = [c for c in cases if c.experiment == exp.key]
        groups = sorted({(c.size, c.channels) for c in mine}, key=lambda g: (-g[0], g[1]))
        labels = [v.label for v in exp.variants]
        width = 0.8 / max(1, len(groups))
        for i, (size, channels) in enumerate(groups):
            values = [100.0 - loss.get(c.file, float("nan")) for v in labels for c in mine
                      if c.variant == v and c.size == size and c.channels == channels]
            ax.bar([j + i * width for j in range(len(values))], values, width, label=f"{size}px c={channels}")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("throughput, % of the first variant")
        ax.set_title(f"{exp.key}: {exp.title}", fontsize=9)
        ax.axhline(100, color="gray", linewidth=0.8)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=110)


@dataclass
class GuidelinesRun:
    """One device's guideline experiments: what was timed, the slow-downs, and where the files went."""

    cases: list[GuidelineCase]
    slowdown: dict[str, float]
    result: dict[str, Any]
    title: str
    written: list[Path]
    warnings: list[str]


def guideline_keys(keys: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Experiment keys (G1-G4, any case) checked against the known ones; None for all."""
    if keys is None:
        return None
    keys = tuple(k.upper() for k in keys)
    known = [e.key for e in EXPERIMENTS]
    if not keys or any(k not in known for k in keys):
        raise EdgekitError(f"--only {','.join(keys)!r}: choose from {', '.join(known)}, e.g. --only G1,G3.")
    return keys


def run_guidelines(profiles: list[Any], options: Any, only: tuple[str, ...] | None = None,
                   sizes: tuple[int, ...] = SIZES, channel_scale: float = 1.0, out: Path | None = None,
                   progress: Callable[[str], None] | None = None) -> GuidelinesRun:
    """Export the guideline models, time them on one device at one thread count, and write guidelines.json and
    guidelines.png under `out` (default guidelines-DEVICE)."""
    import dataclasses
    import tempfile

    from edgekit.core.files import output_lock, write_json_atomic

    if len(profiles) != 1:
        raise EdgekitError("the guidelines measure one device at a time: give one --device.")
    if not 0.05 <= channel_scale <= 4:
        raise EdgekitError(f"--channel-scale {channel_scale:g} is out of range: give a value from 0.05 to 4.")
    if not sizes or any(not 8 <= s <= 512 for s in sizes):
        raise EdgekitError(f"--size {','.join(map(str, sizes))} is not a list of sizes from 8 to 512: write e.g. "
                           "--size 56,28.")
    experiments = guideline_keys(only)
    threads = options.threads or (1,)
    if len(threads) != 1:
        raise EdgekitError("the guidelines compare variants at one thread count: give one --threads value.")
    options = dataclasses.replace(options, threads=threads)
    fmt = "tflite" if options.runtime == "tflite" else "onnx"
    profile = profiles[0]
    out = out or Path(f"guidelines-{profile.name}")
    say = progress or (lambda what: None)
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".models.", dir=out) as models_dir:
            models = Path(models_dir)
            say("exporting the guideline models")
            cases = write_models(models, fmt, sizes, channel_scale, experiments,
                                 progress=lambda what: say(f"exporting {what}"))
            say(f"timing {len(cases)} models on {profile.name} ({fmt}, {threads[0]} thread(s))")
            device = measure(cases, models, profile, options)
        loss = slowdowns(cases)
        result = {"device": device, "format": fmt, "threads": threads[0],
                  "cases": [{**c.to_dict(), "slowdown_pct": loss.get(c.file)} for c in cases]}
        write_json_atomic(out / "guidelines.json", result)
        title = (f"ShuffleNetV2 guidelines on {profile.name} ({device['info'].get('arch', '?')}, {fmt}, "
                 f"{threads[0]} thread(s))")
        written, notes = [out / "guidelines.json"], list(device["warnings"])
        if has_extra("report"):
            plot(cases, out / "guidelines.png", title)
            written.append(out / "guidelines.png")
        else:
            notes.append(f"guidelines.png needs the report extra: {install_command('report')}")
    return GuidelinesRun(cases, loss, result, title, written, notes)
