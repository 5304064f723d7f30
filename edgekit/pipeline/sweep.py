"""`edgekit sweep RECIPE --width ... --resolution ...` and `edgekit.sweep()`: the pipeline at every point, then one
report.

Each point is a recipe of its own, written to OUT/recipes/NAME.yaml so any point can be rerun alone with
`edgekit run`. Points run as `edgekit run` processes (several at once with --jobs, each with its share of the
cores); `edgekit run` skips stages that are up to date, so an interrupted sweep continues where it stopped.
Latency is measured afterwards, one point at a time, so points never compete for the CPU while being timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgekit.artifact import locate_artifact
from edgekit.benchmark.host import BenchOptions, bench_target
from edgekit.benchmark.records import latest_p50
from edgekit.core.errors import EdgekitError
from edgekit.core.files import write_text_atomic
from edgekit.core.threads import thread_budget
from edgekit.devices.profiles import DeviceProfile
from edgekit.manifest import read_manifest
from edgekit.recipe import Recipe, parse_recipe
from edgekit.report.render import Report, write_report


@dataclass
class Point:
    width: float
    resolution: int
    recipe: Recipe
    recipe_path: Path
    out: Path
    status: str = "pending"  # passed, check failed, failed, interrupted
    detail: str = ""
    seconds: float = 0.0
    accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.recipe.name


def plan_points(recipe: Recipe, widths: list[float], resolutions: list[int], out: Path,
                epochs: int | None = None, limit_batches: int | None = None) -> list[Point]:
    """Every width x resolution as a validated recipe; nothing is written yet."""
    if not widths or not resolutions:
        raise EdgekitError("give at least one --width and one --resolution, e.g. --width 0.5,1.0 --resolution 32.")
    if any(not 0 < w <= 4 for w in widths):
        raise EdgekitError(f"--width {','.join(f'{w:g}' for w in widths)}: every width must be in (0, 4].")
    points = []
    for width in widths:
        for resolution in resolutions:
            data = recipe.to_dict()
            data["name"] = f"{recipe.name}-w{width:g}-r{resolution}"
            data["model"].update(width=width, resolution=resolution)
            if epochs is not None:
                data["train"]["epochs"] = epochs
            if limit_batches is not None:
                data["train"]["limit_batches"] = limit_batches
            origin = f"{recipe.source or 'recipe'} at width {width:g}, resolution {resolution}"
            point_recipe = parse_recipe(yaml.safe_dump(data, sort_keys=False), origin)
            points.append(Point(width, resolution, point_recipe, out / "recipes" / f"{data['name']}.yaml",
                                out / data["name"]))
    return points


def run_points(points: list[Point], jobs: int, on_done: Callable[[Point], None] | None = None) -> None:
    """Run `edgekit run` for every point, `jobs` at a time, splitting the cores between them."""
    for point in points:
        point.recipe_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(point.recipe_path, yaml.safe_dump(point.recipe.to_dict(), sort_keys=False))
    threads = max(1, thread_budget() // jobs)
    # EDGEKIT_PARENT_PID: a point's process stops when the sweep dies, even by SIGKILL (no orphan writers)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "EDGEKIT_PARENT_PID": str(os.getpid())}

    def one(point: Point) -> Point:
        done = subprocess.run(
            [sys.executable, "-m", "edgekit", "run", str(point.recipe_path), "--out", str(point.out), "--json"],
            capture_output=True, text=True, env=env, check=False)
        if done.returncode in (0, 1):
            report = json.loads(done.stdout) if done.returncode == 0 else _saved_report(point)
            point.accuracy = dict(report.get("accuracy", {}))
            point.seconds = sum(s["seconds"] for s in report.get("stages", []))
            point.status = "passed" if done.returncode == 0 else "check failed"
            point.detail = "" if done.returncode == 0 else _last_line(done.stderr)
        elif done.returncode == 130:
            point.status, point.detail = "interrupted", "rerun the sweep to continue"
        else:
            point.status, point.detail = "failed", _last_line(done.stderr)
        if on_done:
            on_done(point)
        return point

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, points))


def _saved_report(point: Point) -> dict[str, Any]:
    path = point.out / "report.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def needs_bench(point: Point, device: str) -> bool:
    """False when every file of the point's artifact already has a latency on `device`."""
    try:
        directory = locate_artifact(point.out)
    except EdgekitError:
        return False
    manifest = read_manifest(directory)
    measured = {key.file for key in latest_p50(manifest) if key.device == device}
    return not set(manifest.format_of_file()) <= measured


def bench_points(points: list[Point], profiles: list[DeviceProfile], options: BenchOptions,
                 on_point: Callable[[DeviceProfile, int], None] | None = None) -> None:
    """Measure every point's artifact on each device, one point at a time, skipping those already measured there;
    a point that cannot be benchmarked is marked failed with the device's reason. `on_point(profile, todo)` is
    called once before a device's points (with their count) and after each."""
    for profile in profiles:
        todo = [p for p in points if needs_bench(p, profile.name)]
        if on_point:
            on_point(profile, len(todo))
        for point in todo:
            _, failures = bench_target(point.out / "export", [profile], options)
            for _, error in failures:
                point.status, point.detail = "failed", f"bench on {profile.name}: {error}"
            if on_point:
                on_point(profile, len(todo))


@dataclass
class SweepResult:
    recipe: str
    out: Path
    points: list[Point]
    report: Report | None = None  # the report over the finished points (report/report.md, .html, plots)

    @property
    def interrupted(self) -> bool:
        return any(p.status == "interrupted" for p in self.points)

    @property
    def failed(self) -> list[Point]:
        return [p for p in self.points if p.status != "passed"]

    def to_dict(self) -> dict[str, Any]:
        return {"points": [{"name": p.name, "width": p.width, "resolution": p.resolution, "status": p.status,
                            "detail": p.detail, "accuracy": p.accuracy, "seconds": p.seconds, "out": str(p.out)}
                           for p in self.points],
                "report": [str(p) for p in self.report.written] if self.report else []}


def sweep(recipe: Recipe, widths: list[float], resolutions: list[int], *, out: Path | None = None,
          devices: list[DeviceProfile] | None = None, bench: BenchOptions | None = None, epochs: int | None = None,
          limit_batches: int | None = None, jobs: int = 1, on_trained: Callable[[Point], None] | None = None,
          on_bench: Callable[[DeviceProfile, int], None] | None = None) -> SweepResult:
    """The pipeline at every width x resolution of `recipe` (`jobs` points trained at once), then latency on each
    device one point at a time, then one report over the finished points in OUT/report (default out:
    sweeps/NAME). Rerunning continues where an interrupted sweep stopped; a KeyboardInterrupt propagates.
    `on_trained(point)` follows each point's run, `on_bench(profile, todo)` each device's points."""
    if jobs < 1:
        raise EdgekitError(f"--jobs {jobs}: give at least 1 point at a time.")
    out = (out or Path("sweeps") / recipe.name).resolve()
    points = plan_points(recipe, list(widths), list(resolutions), out, epochs, limit_batches)
    result = SweepResult(recipe.name, out, points)
    run_points(points, jobs, on_done=on_trained)
    finished = [p for p in points if p.status in ("passed", "check failed")]
    bench_points(finished, devices or [], bench or BenchOptions(threads=(1,)), on_point=on_bench)
    if finished and not result.interrupted:
        result.report = write_report([p.out for p in finished], out / "report")
    return result
