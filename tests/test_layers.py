"""The package's layering, read from the source: no import cycle, and no import from a lower layer to a higher one.

Function-level imports count too: deferring an import hides a cycle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgekit"

# Low to high. A module may import modules of its own layer or below; the first prefix that matches decides.
LAYERS: list[tuple[str, ...]] = [
    ("edgekit.core", "edgekit.builtin", "edgekit.runtime.formats"),  # the format table is data
    ("edgekit.models",),
    ("edgekit.data", "edgekit.datasource", "edgekit.imagefolder", "edgekit.folder_images", "edgekit.preprocess",
     "edgekit.options", "edgekit.recipe", "edgekit.weights"),
    ("edgekit.artifact", "edgekit.manifest", "edgekit.checkpoint", "edgekit.user_model"),
    ("edgekit.runtime", "edgekit.evaluation", "edgekit.inspect"),
    ("edgekit.training",),
    ("edgekit.quantization",),
    ("edgekit.exporting",),
    ("edgekit.diagnose",),
    ("edgekit.devices",),
    ("edgekit.benchmark",),
    ("edgekit.gate", "edgekit.report"),
    ("edgekit.predictor",),
    ("edgekit.pipeline",),
    ("edgekit.cli", "edgekit.api", "edgekit.__init__"),
    ("edgekit.__main__",),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every edgekit module `path` imports, at any depth of the file; `from pkg import sub` counts as `pkg.sub`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found.update(subs or {node.module})
    return {m for m in found if m in known}


def layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} has no layer: add it to LAYERS in {__file__}")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, set(known)) - {name} for name, path in known.items()}


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer(name)


def test_no_import_reaches_up_a_layer() -> None:
    upward = sorted(f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0]})"
                    for a, targets in graph().items() for b in targets if layer(b) > layer(a))
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from edgekit.cli.main import app\n")
    assert imports(source, {"edgekit.cli.main", "edgekit.cli"}) == {"edgekit.cli.main"}
