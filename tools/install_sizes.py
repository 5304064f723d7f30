"""How much disk each install of edgekit takes: the base, then each extra added, measured in a fresh virtual
environment (the site-packages directory's size, as `du --apparent-size` counts it).

    python tools/install_sizes.py            # builds the wheel from this checkout, prints a table
    python tools/install_sizes.py --json

torch is installed first, pinned to its CPU build as README's Install says (pip takes it from the package sources
pip is configured with); the extras are then added one at a time to the same environment, so each row is what that
extra adds to the base (and to the extras above it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = (("base", "torch==2.13.0 + edgekit-ml", ""), ("report", "+ edgekit-ml[report]", "report"),
         ("tflite", "+ edgekit-ml[tflite]", "tflite"))


def tree_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def measure(work: Path) -> list[dict[str, object]]:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(REPO)],
                   check=True)
    wheel = next((work / "dist").glob("edgekit_ml-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    python = work / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    empty = tree_bytes(site)  # pip itself
    rows, before = [], empty
    for name, label, extra in STEPS:
        target = f"{wheel}[{extra}]" if extra else str(wheel)
        pip(python, "install", *(["torch==2.13.0"] if not extra else []), target)
        size = tree_bytes(site)
        rows.append({"install": name, "what": label, "adds_mb": round((size - before) / 1e6),
                     "total_mb": round((size - empty) / 1e6)})
        before = size
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekit-sizes-") as tmp:
        rows = measure(Path(tmp))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'install':<8} {'what':<28} {'adds MB':>8} {'total MB':>9}")
    for row in rows:
        print(f"{row['install']:<8} {row['what']:<28} {row['adds_mb']:>8} {row['total_mb']:>9}")


if __name__ == "__main__":
    main()
