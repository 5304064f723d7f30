"""Training benchmark: throughput and time-to-accuracy of recipes on this machine.

    python tools/bench_train.py                                # the default recipe, full training
    python tools/bench_train.py recipes/*.yaml --target 0.90   # every shipped recipe
    python tools/bench_train.py --throughput-only              # images/s only, a few seconds
    python tools/bench_train.py recipes/x.yaml --keep runs     # keep the checkpoints (runs/x/best.pt)
    python tools/bench_train.py --contended 1                  # images/s quiet and beside 1 busy process

--contended N measures training images/s of each thread setting quietly and then beside N CPU-bound processes
(each `python -c "while True: pass"`), side by side in one run; every figure comes from a fresh process so the
OpenMP settings take effect.

For each recipe it prints training images/s with contiguous (NCHW) and channels-last tensors (and channels-last
with PyTorch's own kernels throughout: edgekit replaces depthwise weight gradients on 2x2 maps and smaller and
computes 1x1 convolutions on 4x4 maps and smaller as matrix products), the three taking turns in one process so
that the VM's drift moves them alike (median of 8 turns of 4 steps each), then trains the
recipe from scratch in a temporary directory and prints its best validation top-1, total time, and when it
first reached --target. These are the figures the docs quote; they are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgekit.core.threads import ThreadGovernor, thread_budget
from edgekit.core.ui import Reporter
from edgekit.models import build, resolve_spec
from edgekit.models.training_kernels import use_fast_training_kernels
from edgekit.recipe import load_recipe
from edgekit.training.loop import train_recipe

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mobilenet_v2_fashion.yaml"


def training_step(recipe_path: Path, channels_last: bool, fast_kernels: bool = True) -> tuple[Callable[[], None], int]:
    """One training step of the recipe's model on random data, and its batch size. `fast_kernels` as training does
    it (edgekit/models/training_kernels.py), False for PyTorch's own kernels throughout."""
    recipe = load_recipe(recipe_path)
    m = recipe.model
    spec = resolve_spec(m.name, width=m.width, resolution=m.resolution, num_classes=10, in_channels=m.in_channels,
                        **m.options)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build(spec).train().to(memory_format=fmt)
    if fast_kernels:
        use_fast_training_kernels(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = recipe.train.batch_size
    x = torch.randn(batch, *spec.input_shape).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step, batch


def throughput(recipe_path: Path, channels_last: bool, steps: int = 16, on_step: Callable[[], object] | None = None,
               fast_kernels: bool = True) -> float:
    """Training images/s of the recipe's model on random data, timed over `steps` steps after two warm-up ones."""
    step, batch = training_step(recipe_path, channels_last, fast_kernels)
    for i in range(steps + 2):
        if i == 2:  # the first steps allocate and warm caches
            start = time.perf_counter()
        if on_step:
            on_step()
        step()
    return batch * steps / (time.perf_counter() - start)


def interleaved_throughput(recipe_path: Path, settings: dict[str, dict[str, bool]], rounds: int = 8,
                           steps: int = 4) -> dict[str, float]:
    """Median training images/s per setting, the settings taking turns for `steps` steps each, `rounds` times.
    This VM's speed drifts by 20% and more from minute to minute; taking turns puts every setting in every period,
    so the ratios between them hold even when the absolute figures move."""
    steppers = {label: training_step(recipe_path, **kwargs) for label, kwargs in settings.items()}
    for step, _ in steppers.values():
        step(), step()  # the first steps allocate and warm caches
    rates: dict[str, list[float]] = {label: [] for label in settings}
    for _ in range(rounds):
        for label, (step, batch) in steppers.items():
            start = time.perf_counter()
            for _ in range(steps):
                step()
            rates[label].append(batch * steps / (time.perf_counter() - start))
    return {label: statistics.median(r) for label, r in rates.items()}


# Thread settings compared by --contended: (label, environment). "edgekit" is what edgekit's commands do.
SETTINGS = {
    "a thread per core (torch's default)": {"BENCH_THREADS": "fixed"},
    "edgekit (the cores others leave free)": {"BENCH_THREADS": "governed"},
}


def _measure_child(recipe: Path, seconds: float) -> None:
    """Child process: set threads as the setting says, then time training steps for about `seconds`."""
    governor = ThreadGovernor(None if os.environ["BENCH_THREADS"] == "governed" else thread_budget())
    rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 2:
        rates.append(throughput(recipe, True, steps=4, on_step=governor.poll))  # channels-last, as training
    print(json.dumps({"threads": governor.used, "images_per_second": sorted(rates)[len(rates) // 2]}))


def contended(recipe: Path, competitors: int, seconds: float, console: Console) -> None:
    table = Table(title=f"training img/s, {recipe.stem}: quiet and beside {competitors} busy process(es) "
                        f"({os.cpu_count()} cores)")
    for col in ("setting", "threads quiet / contended", "quiet img/s", "contended img/s", "contended / quiet"):
        table.add_column(col, justify="left" if col == "setting" else "right")

    def one(env: dict[str, str]) -> dict[str, float]:
        done = subprocess.run([sys.executable, __file__, str(recipe), "--_child", str(seconds)], check=True,
                              capture_output=True, text=True, env={**os.environ, **env})
        return json.loads(done.stdout.strip().splitlines()[-1])

    for label, env in SETTINGS.items():
        quiet = one(env)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
        try:
            time.sleep(1)
            loaded = one(env)
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()
        ratio = loaded["images_per_second"] / quiet["images_per_second"]
        threads = f"{'/'.join(map(str, quiet['threads']))} / {'/'.join(map(str, loaded['threads']))}"
        table.add_row(label, threads, f"{quiet['images_per_second']:,.0f}",
                      f"{loaded['images_per_second']:,.0f}", f"{ratio:.2f}x")
        console.print(f"{label}: quiet {quiet['images_per_second']:,.0f}, contended "
                      f"{loaded['images_per_second']:,.0f} img/s ({ratio:.2f}x)", highlight=False)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", type=Path, default=[DEFAULT_RECIPE])
    parser.add_argument("--target", type=float, default=0.92, help="Validation top-1 to time (default 0.92).")
    parser.add_argument("--epochs", type=int, help="Override each recipe's epochs.")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--keep", type=Path, help="Keep each run's directory (checkpoints) under this folder.")
    parser.add_argument("--contended", type=int, metavar="N",
                        help="Throughput quiet and beside N busy processes, per thread setting, side by side.")
    parser.add_argument("--seconds", type=float, default=20.0, help="With --contended: seconds per figure.")
    parser.add_argument("--_child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child is not None:
        _measure_child(args.recipes[0], args._child)
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    if args.contended is not None:
        contended(args.recipes[0], args.contended, args.seconds, console)
        return
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    table = Table(title="training benchmark")
    # channels-last with edgekit's small-map kernels is what training runs; the last column is PyTorch's own kernels
    columns = ["recipe", "NCHW img/s", "channels-last img/s", "channels-last, PyTorch's kernels"]
    if not args.throughput_only:
        columns += ["epochs", "best val top-1", "train time", f"time to {args.target:.0%}"]
    for col in columns:
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for path in args.recipes:
        rates = interleaved_throughput(path, {
            "nchw": {"channels_last": False}, "nhwc": {"channels_last": True},
            "plain": {"channels_last": True, "fast_kernels": False}})
        row = [path.stem] + [f"{rates[k]:,.0f}" for k in ("nchw", "nhwc", "plain")]
        if args.throughput_only:
            table.add_row(*row)
            continue
        recipe = load_recipe(path)
        if args.epochs:
            recipe.train.epochs = args.epochs
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = args.keep / path.stem if args.keep else Path(tmp) / "run"
            result = train_recipe(recipe, run_dir, reporter=Reporter())
        elapsed, reached = 0.0, None
        for epoch in result.history:
            elapsed += epoch["seconds"]
            if reached is None and max(epoch["val_top1"], epoch["ema_top1"] or 0) >= args.target:
                reached = f"{elapsed:,.0f} s (epoch {epoch['epoch']})"
        row += [str(result.epochs), f"{result.best_top1:.2%}", f"{result.seconds:,.0f} s", reached or "not reached"]
        console.print("  ".join(row), highlight=False)  # each result as soon as it is known
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    main()
