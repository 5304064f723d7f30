"""edgekit: efficient CNNs from a recipe to a verified INT8 model, measured on the device.

The Python API (docs/api.md), loaded on first use so that `import edgekit` stays fast:

    import edgekit
    artifact = edgekit.export(my_model, input_shape=(1, 3, 224, 224), int8=True, calibration=my_dataset)
    edgekit.bench(artifact, device="local")

Functions: export, quantize, evaluate, bench, check, int8_report, train, sweep, create_model, profile.
Options objects: ExportOptions, Int8Options, BenchOptions, CheckOptions. Records: Artifact. Errors: EdgekitError,
EdgekitWarning.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "Artifact", "BenchOptions", "CheckOptions", "EdgekitError", "EdgekitWarning", "ExportOptions", "Int8Options",
    "bench", "check", "create_model", "evaluate", "export", "int8_report", "profile", "quantize", "sweep", "train",
]

TYPE_CHECKING = False  # typing's own constant, without importing typing (it costs more than the rest of this file)
if TYPE_CHECKING:
    from typing import Any

    from edgekit.api import (  # noqa: F401
        Artifact,
        BenchOptions,
        CheckOptions,
        EdgekitError,
        EdgekitWarning,
        ExportOptions,
        Int8Options,
        bench,
        check,
        create_model,
        evaluate,
        export,
        int8_report,
        profile,
        quantize,
        sweep,
        train,
    )


def __getattr__(name: str) -> Any:
    """PEP 562: the API names resolve to edgekit.api's objects themselves (their own signatures and docstrings), and
    torch is imported only when one is first used."""
    if name in __all__:
        from edgekit import api

        value = getattr(api, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
