"""What ships inside the package: the device profiles and recipes (links to the repository's devices/ and recipes/
folders, their editable source, copied into the wheel as package data)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
DEVICES = HERE / "devices"
RECIPES = HERE / "recipes"


def recipe_names() -> list[str]:
    """The built-in recipes by name (`mobilenet_v2_fashion`), sorted."""
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def builtin_recipe(name: str) -> Path | None:
    """The built-in recipe called `name` (with or without .yaml), or None."""
    path = RECIPES / (name if name.endswith(".yaml") else f"{name}.yaml")
    return path if "/" not in name and path.is_file() else None
