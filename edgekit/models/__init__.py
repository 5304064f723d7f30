"""The model zoo: `create(name, width=..., resolution=...)` and the registry behind it."""

import importlib

from edgekit.models._layers import batchnorm_statistics_from_noise, make_divisible
from edgekit.models._registry import (
    CUSTOM_FAMILY,
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

# Importing a family module registers its models; this order is the order `edgekit models` lists them in.
FAMILY_MODULES = (
    "mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "shufflenet_v1", "shufflenet_v2", "efficientnet", "regnet",
)
for _module in FAMILY_MODULES:
    importlib.import_module(f"edgekit.models.{_module}")

__all__ = [
    "CUSTOM_FAMILY", "ModelEntry", "ModelSpec", "batchnorm_statistics_from_noise", "build", "create", "custom_spec",
    "get_entry", "list_models", "make_divisible", "resolve_spec", "spec_from_record",
]
