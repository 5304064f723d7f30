"""Are two artifacts the same model? Compares two export directories file by file: the graphs (op histograms, input
and output shapes, dtypes and quantization), the outputs on the same seeded inputs, and the figures the manifests
record (parity, accuracy, the INT8 section's accuracy and agreement). Exit 0 when they agree, 1 when not.

    python tools/artifact_diff.py OLD_DIR NEW_DIR

Used to show that a refactor leaves exports unchanged: export one checkpoint with the old and the new code, and diff.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edgekit.inspect import inspect_file  # noqa: E402
from edgekit.manifest import (  # noqa: E402
    Manifest,
    layout_of,  # noqa: E402
    read_manifest,
)
from edgekit.runtime.runners import file_runner  # noqa: E402


def _graph(path: Path) -> dict[str, Any]:
    info = inspect_file(path)
    return {k: info[k] for k in ("inputs", "outputs", "ops")}


def _figures(manifest: Manifest) -> dict[str, Any]:
    """What the manifest measured, without times, dates, paths and tool versions."""
    int8 = manifest.int8 or {}
    return {"spec": manifest.spec.to_dict(), "complexity": manifest.complexity,
            "parity": manifest.parity["results"], "accuracy": manifest.accuracy,
            "int8_accuracy": int8.get("accuracy"), "int8_parity": (int8.get("parity") or {}).get("results"),
            "int8_layers": int8.get("layers"), "int8_scheme": int8.get("scheme")}


def diff(old: Path, new: Path) -> list[str]:
    a, b = read_manifest(old), read_manifest(new)
    problems = []
    if set(a.files) != set(b.files):
        problems.append(f"files: {sorted(a.files)} vs {sorted(b.files)}")
    inputs = np.random.default_rng(0).standard_normal((4, *a.input.shape_nchw[1:])).astype(np.float32)
    for key in sorted(set(a.files) & set(b.files)):
        pa, pb = old / a.files[key].file, new / b.files[key].file
        same_bytes = a.files[key].sha256 == b.files[key].sha256
        if _graph(pa) != _graph(pb):
            problems.append(f"{key}: graphs differ")
        layout = layout_of(pa, a) or "nchw"
        x = inputs.transpose(0, 2, 3, 1).copy() if layout == "nhwc" else inputs
        outputs = [file_runner(p, layout=layout).predict(x) for p in (pa, pb)]
        gap = float(np.abs(outputs[0] - outputs[1]).max())
        print(f"{key:12} bytes {'identical' if same_bytes else 'differ'}, graph "
              f"{'same' if _graph(pa) == _graph(pb) else 'DIFFERENT'}, outputs max |diff| {gap:.3g}")
        if gap > 1e-5:
            problems.append(f"{key}: outputs differ by {gap:.3g}")
    fa, fb = _figures(a), _figures(b)
    for name in fa:
        if fa[name] != fb[name]:
            problems.append(f"manifest {name}: {fa[name]} vs {fb[name]}")
        else:
            print(f"manifest {name}: same")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    problems = diff(args.old, args.new)
    for problem in problems:
        print(f"DIFFERENT {problem}")
    print("the artifacts agree" if not problems else f"{len(problems)} difference(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
