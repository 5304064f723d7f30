"""edgekit: efficient CNNs from a recipe to a verified INT8 model, measured on the device.

The Python API (docs/api.md), loaded on first use so that `import edgekit` stays fast:

    import edgekit
    artifact = edgekit.export(my_model, input_shape=(1, 3, 224, 224), int8=True, calibration=my_dataset)
    edgekit.bench(artifact, device="local")

export, quantize, evaluate, bench, check, train, create_model, profile, Artifact, EdgekitError, EdgekitWarning.
"""

from __future__ import annotations

import sys
import types

__version__ = "0.1.0"

API = ("export", "quantize", "evaluate", "bench", "check", "train", "create_model", "profile", "Artifact",
       "EdgekitError", "EdgekitWarning")
# These API functions share their names with subpackages (edgekit.export is also the export stage's package): the
# subpackage stays importable as before, and calling it calls the function.
CALLABLE_SUBMODULES = frozenset({"export", "quantize", "evaluate", "bench", "check", "train"})

TYPE_CHECKING = False  # typing's own constant, without importing typing (it costs more than the rest of this file)
if TYPE_CHECKING:
    from typing import Any

    from edgekit.api import (  # noqa: F401
        Artifact,
        EdgekitError,
        EdgekitWarning,
        bench,
        check,
        create_model,
        evaluate,
        export,
        profile,
        quantize,
        train,
    )


def _api_function(name: str) -> Any:
    from edgekit import api

    return getattr(api, name)


class _CallableModule(types.ModuleType):
    """A subpackage that is also its API function: `edgekit.export(model, ...)` calls edgekit.api.export."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _api_function(self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # The import system binds each loaded subpackage here: make those that share an API name callable.
        if name in CALLABLE_SUBMODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name in CALLABLE_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")  # bound (and made callable) by _Package.__setattr__
    if name in API:
        return _api_function(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})


sys.modules[__name__].__class__ = _Package
