"""Write (or check) edgekit/models/model_table.json, the figures `edgekit models` lists.

    python tools/model_table.py           # profile every registered model and rewrite the file
    python tools/model_table.py --check   # exit 1 if the file differs from a fresh profile

Rerun it after adding a model or changing a builder; tests/test_profile.py fails while the file is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgekit.models import list_models
from edgekit.models.complexity import MODEL_TABLE_FILE, model_table_row, stored_fields

PATH = Path(__file__).resolve().parents[1] / "edgekit" / "models" / MODEL_TABLE_FILE


def render() -> str:
    rows = [stored_fields(model_table_row(name)) for name in list_models()]
    data = {
        "generated_by": "tools/model_table.py",
        "conventions": "default resolution, 1000 classes, 3 input channels; MACs as edgekit profile counts them",
        "models": rows,
    }
    lines = [f'  "{k}": {json.dumps(v)},' for k, v in data.items() if k != "models"]
    body = ",\n".join(f"    {json.dumps(row)}" for row in rows)
    return "{\n" + "\n".join(lines) + '\n  "models": [\n' + body + "\n  ]\n}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = PATH.read_text(encoding="utf-8") if PATH.exists() else ""
        if current != text:
            print(f"{PATH} is stale: run python tools/model_table.py", file=sys.stderr)
            return 1
        print(f"{PATH} is up to date")
        return 0
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {PATH} ({len(list_models())} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
