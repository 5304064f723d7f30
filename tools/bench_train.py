"""Training benchmark: throughput and time-to-accuracy of recipes on this machine.

    python tools/bench_train.py                                # the default recipe, full training
    python tools/bench_train.py recipes/*.yaml --target 0.90   # every shipped recipe
    python tools/bench_train.py --throughput-only              # images/s only, a few seconds
    python tools/bench_train.py recipes/x.yaml --keep runs     # keep the checkpoints (runs/x/best.pt)

For each recipe it prints training images/s with contiguous (NCHW) and channels-last tensors, then trains the
recipe from scratch in a temporary directory and prints its best validation top-1, total time, and when it
first reached --target. These are the figures the docs quote; they are never asserted in tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgekit.core.ui import Reporter
from edgekit.models import build, resolve_spec
from edgekit.recipe import load_recipe
from edgekit.train import train

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "mobilenet_v2_fashion.yaml"


def throughput(recipe_path: Path, channels_last: bool, steps: int = 8) -> float:
    recipe = load_recipe(recipe_path)
    m = recipe.model
    spec = resolve_spec(m.name, width=m.width, resolution=m.resolution, num_classes=10, in_channels=m.in_channels,
                        **m.options)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build(spec).train().to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = recipe.train.batch_size
    x = torch.randn(batch, *spec.input_shape).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    for i in range(steps + 2):
        if i == 2:  # the first steps allocate and warm caches
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", type=Path, default=[DEFAULT_RECIPE])
    parser.add_argument("--target", type=float, default=0.92, help="Validation top-1 to time (default 0.92).")
    parser.add_argument("--epochs", type=int, help="Override each recipe's epochs.")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--keep", type=Path, help="Keep each run's directory (checkpoints) under this folder.")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    table = Table(title="training benchmark")
    columns = ["recipe", "NCHW img/s", "channels-last img/s"]
    if not args.throughput_only:
        columns += ["epochs", "best val top-1", "train time", f"time to {args.target:.0%}"]
    for col in columns:
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for path in args.recipes:
        nchw, nhwc = throughput(path, False), throughput(path, True)
        row = [path.stem, f"{nchw:,.0f}", f"{nhwc:,.0f}"]
        if args.throughput_only:
            table.add_row(*row)
            continue
        recipe = load_recipe(path)
        if args.epochs:
            recipe.train.epochs = args.epochs
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = args.keep / path.stem if args.keep else Path(tmp) / "run"
            result = train(recipe, run_dir, reporter=Reporter())
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
