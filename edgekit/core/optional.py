"""Which optional parts are installed, asked without importing them."""

from __future__ import annotations

import functools
import importlib.util


@functools.cache  # asked on every manifest read; an install does not change while edgekit runs
def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (a lean install has no torch, for instance)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
