"""`edgekit latency search`: every family x width x resolution, its predicted latency, those under budget, ranked."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.core.errors import EdgekitError
from edgekit.models import ModelSpec, get_entry, list_models, resolve_spec
from edgekit.predictor.table import LatencyTable
from edgekit.predictor.units import cut_spec

SEARCH_WIDTHS = (0.5, 0.75, 1.0)
SEARCH_RESOLUTIONS = (128, 160, 192, 224)


@dataclass
class Candidate:
    spec: ModelSpec
    macs: int
    params: int
    predicted_ms: float
    measured_fraction: float
    top1: float | None = None
    top1_source: str | None = None

    @property
    def label(self) -> str:
        return f"{self.spec.name} w{self.spec.width:g} r{self.spec.resolution}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.spec.name, "family": self.spec.family, "width": self.spec.width,
                "resolution": self.spec.resolution, "macs": self.macs, "params": self.params,
                "predicted_ms": self.predicted_ms, "measured_fraction": self.measured_fraction, "top1": self.top1,
                "top1_source": self.top1_source}


def check_grid(widths: tuple[float, ...], resolutions: tuple[int, ...]) -> None:
    """Widths and resolutions a latency table can be calibrated and searched at."""
    if any(not 0.1 <= w <= 4.0 for w in widths):
        raise EdgekitError(f"--width {','.join(f'{w:g}' for w in widths)} is not a list of widths from 0.1 to 4: "
                           "write e.g. --width 0.5,1.0.")
    if any(not 32 <= r <= 1024 for r in resolutions):
        raise EdgekitError(f"--resolution {','.join(map(str, resolutions))} is not a list of resolutions from 32 to "
                           "1024: write e.g. --resolution 128,224.")


def named_models(families: list[str] | None) -> list[str]:
    """Registered networks (not design-space entries), of the given families or model names (any case)."""
    names = [n for n in list_models() if not get_entry(n).design_space]
    if not families:
        return names
    wanted = {f.strip().lower() for f in families if f.strip()}
    chosen = [n for n in names if n.lower() in wanted or get_entry(n).family.lower() in wanted]
    known = {n.lower() for n in names} | {get_entry(n).family.lower() for n in names}
    unknown = sorted(wanted - known)
    if unknown:
        families_list = ", ".join(sorted({get_entry(n).family for n in names}))
        raise EdgekitError(f"--families: {', '.join(unknown)} is not a family or model: choose from "
                           f"{families_list} (or model names from `edgekit models`).")
    return chosen


def candidates(names: list[str], widths: tuple[float, ...], resolutions: tuple[int, ...], num_classes: int,
               in_channels: int) -> list[ModelSpec]:
    return [resolve_spec(n, width=w, resolution=r, num_classes=num_classes, in_channels=in_channels)
            for n, w, r in itertools.product(names, widths, resolutions)]


def known_accuracy(roots: list[Path]) -> dict[tuple[str, float, int], tuple[float, str]]:
    """Trained results found under `roots` (artifact manifests of `edgekit run`/`sweep`): FP32 top-1 per point."""
    from edgekit.report.collect import read_row

    found: dict[tuple[str, float, int], tuple[float, str]] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for manifest in sorted(root.rglob("manifest.json")):
            try:
                row = read_row(manifest.parent)
            except EdgekitError:
                continue  # not an artifact, or a damaged one: it has no result to offer
            top1 = row.accuracy("fp32")
            key = (row.name, round(row.width, 4), row.resolution)
            if top1 is not None and (key not in found or top1 > found[key][0]):
                found[key] = (top1, str(row.directory))
    return found


def predict_candidate(table: LatencyTable, spec: ModelSpec,
                      accuracy: dict[tuple[str, float, int], tuple[float, str]]) -> Candidate:
    units = cut_spec(spec)
    prediction = table.predict(units)
    candidate = Candidate(spec, sum(u.macs for u in units), sum(u.params for u in units), prediction.ms,
                          prediction.measured_fraction)
    result = accuracy.get((spec.name, round(spec.width, 4), spec.resolution))
    if result:
        candidate.top1, candidate.top1_source = result
    return candidate


def within_budget(predicted: list[Candidate], budget_ms: float, metric: str) -> list[Candidate]:
    """Candidates predicted within the budget, best first: by trained top-1 where known (metric accuracy), then
    by MACs (more capacity under the same budget), then by lower latency."""
    kept = [c for c in predicted if c.predicted_ms <= budget_ms]
    if metric == "accuracy":
        kept.sort(key=lambda c: (c.top1 is None, -(c.top1 or 0.0), -c.macs, c.predicted_ms))
    else:
        kept.sort(key=lambda c: (-c.macs, c.predicted_ms))
    return kept


def winner_recipe(candidate: Candidate, base: Any | None, out: Path) -> Path:
    """Write the winner's recipe (the base recipe with the model replaced) and return its path."""
    import yaml

    from edgekit.core.files import write_text_atomic
    from edgekit.recipe import parse_recipe

    spec = candidate.spec
    name = f"{spec.name}-w{spec.width:g}-r{spec.resolution}"
    data = base.to_dict() if base is not None else {}
    data["name"] = name
    data["model"] = {**data.get("model", {}), "name": spec.name, "width": spec.width, "resolution": spec.resolution,
                     "in_channels": spec.in_channels, "options": {}}
    recipe = parse_recipe(yaml.safe_dump(data, sort_keys=False), f"the recipe for {candidate.label}")
    path = out / "recipes" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return path


def deploys_int8_tflite(recipe: Any) -> bool:
    """Whether a recipe's run ends in the INT8 TFLite file: its INT8 stage is on and TFLite is among its formats."""
    return bool(recipe.export.int8) and "tflite" in recipe.export.formats


@dataclass
class SearchResult:
    """Every candidate predicted, those within the budget ranked, and where the winner's recipe went."""

    result: dict[str, Any]
    kept: list[Candidate]
    fastest_ms: float
    written: Path | None


def search_models(profile: Any, latency_ms: float, runtime: str = "onnxruntime", threads: int = 1,
                  families: list[str] | None = None, widths: tuple[float, ...] = SEARCH_WIDTHS,
                  resolutions: tuple[int, ...] = SEARCH_RESOLUTIONS, metric: str = "accuracy",
                  results: list[Path] | None = None, recipe: Path | None = None, num_classes: int = 1000,
                  in_channels: int = 3, out: Path | None = None,
                  progress: Callable[[list[str]], Iterable[str]] | None = None,
                  int8: bool | None = None) -> SearchResult:
    """Predict every family x width x resolution on the device, keep those within `latency_ms`, rank them (by
    trained top-1 found under `results` where known, else MACs), and write search.json and the winner's recipe
    under `out` (default search-DEVICE).

    `int8`: predict from the INT8 TFLite table (True) or the FP32 one of `runtime` (False); None: the format
    `recipe` deploys (its INT8 TFLite file unless the recipe turns the INT8 stage or TFLite off, or `runtime` asks
    for ONNX Runtime), FP32 without a recipe."""
    from edgekit.core.files import output_lock, write_json_atomic
    from edgekit.predictor.table import load_table, one_setting
    from edgekit.recipe import load_recipe

    if metric not in ("accuracy", "macs"):
        raise EdgekitError(f"--metric {metric!r}: use accuracy or macs.")
    if not latency_ms > 0:
        raise EdgekitError(f"--latency-ms {latency_ms:g} is not a budget: give a time in milliseconds above 0.")
    check_grid(widths, resolutions)
    base = load_recipe(recipe) if recipe is not None else None
    inferred = int8 is None
    if inferred:
        int8 = base is not None and deploys_int8_tflite(base) and runtime in ("auto", "tflite")
    runtime, threads, precision = one_setting([profile], runtime, (threads,), "search", int8)
    if base is not None:
        in_channels = base.model.in_channels or in_channels
        num_classes = base.model.num_classes or num_classes
    specs = candidates(named_models(families), widths, resolutions, num_classes, in_channels)
    try:
        table = load_table(profile.name, runtime, threads, precision)
    except EdgekitError as exc:
        if not (inferred and int8):
            raise
        raise EdgekitError(f"{exc} (The recipe deploys its INT8 TFLite file, so search predicts that; --fp32 "
                           "predicts from the FP32 table instead.)") from None
    accuracy = known_accuracy(results if results is not None else [Path("runs"), Path("sweeps")]) \
        if metric == "accuracy" else {}
    by_label = {f"{s.name} w{s.width:g} r{s.resolution}": s for s in specs}
    labels: Iterable[str] = progress(list(by_label)) if progress else by_label
    predicted = [predict_candidate(table, by_label[label], accuracy) for label in labels]
    kept = within_budget(predicted, latency_ms, metric)
    ranked_by = ("top-1 of trained results, then MACs (a proxy) for untrained candidates"
                 if metric == "accuracy" and any(c.top1 is not None for c in kept) else "MACs (a proxy for accuracy)")
    out = out or Path(f"search-{profile.name}")
    command, written = None, None
    if kept:
        with output_lock(out):
            command = f"edgekit run {winner_recipe(kept[0], base, out)}"
    result = {"device": profile.name, "runtime": runtime, "threads": threads, "precision": precision,
              "budget_ms": latency_ms,
              "predicted": len(predicted), "within_budget": len(kept), "ranked_by": ranked_by,
              "table": table.created, "candidates": [c.to_dict() for c in kept], "train_winner": command}
    if kept:
        written = out / "search.json"
        write_json_atomic(written, result)
    return SearchResult(result, kept, min(c.predicted_ms for c in predicted), written)
