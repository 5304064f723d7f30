"""The model zoo: `create(name, width=..., resolution=...)` and the registry behind it.

The family modules (and torch) load when a model is first looked up, not on import: reading a spec's record or
benchmarking an exported file needs no torch.
"""

from typing import Any

from edgekit.models._registry import (
    CUSTOM_FAMILY,
    FAMILY_MODULES,
    ModelEntry,
    ModelSpec,
    build,
    create,
    custom_spec,
    get_entry,
    list_models,
    resolve_spec,
    spec_from_record,
)

__all__ = [
    "CUSTOM_FAMILY", "FAMILY_MODULES", "ModelEntry", "ModelSpec", "batchnorm_statistics_from_noise", "build",
    "create", "custom_spec", "get_entry", "list_models", "make_divisible", "resolve_spec", "spec_from_record",
]


def __getattr__(name: str) -> Any:
    if name in ("batchnorm_statistics_from_noise", "make_divisible"):  # torch layers
        from edgekit.models import _layers

        return getattr(_layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
