"""Seconds per test file from a full run's JUnit XML, written to tests/durations.json: the order the suite's two
workers take the files in (longest first; tests/conftest.py), so that neither ends alone on a long file.

    .venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --junitxml=run.xml
    python tools/test_durations.py run.xml            # rewrites tests/durations.json, prints the wall-time bound

Rerun after adding a slow test file; a file missing from the table is scheduled as one of median length.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "tests" / "durations.json"


def file_seconds(junit: Path) -> dict[str, float]:
    """tests/FILE.py -> seconds of its tests (setup, call and teardown), from pytest's JUnit XML."""
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")
        # classname is "tests.test_x" or "tests.test_x.TestClass"
        name = next((f"tests/{part}.py" for part in module if part.startswith("test_")), None)
        if name is not None:
            seconds[name] += float(case.get("time", 0.0))
    return dict(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("junit", type=Path, help="the --junitxml file of a full run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    seconds = file_seconds(args.junit)
    if not seconds:
        print(f"error: {args.junit} holds no test cases: give the --junitxml file of a full run.", file=sys.stderr)
        return 2
    ordered = dict(sorted(((k, round(v)) for k, v in seconds.items()), key=lambda kv: (-kv[1], kv[0])))
    TABLE.write_text(json.dumps(ordered, indent=1) + "\n")
    total = sum(ordered.values())
    print(f"{len(ordered)} files, {total / 60:.1f} min of test time; with {args.workers} workers at best "
          f"{max(total / args.workers, max(ordered.values())) / 60:.1f} min; longest: "
          + ", ".join(f"{k} {v / 60:.1f} min" for k, v in list(ordered.items())[:5]))
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
