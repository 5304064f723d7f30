"""Which optional parts are installed, asked without importing them, and the one message for a missing extra."""

from __future__ import annotations

import functools
import importlib.util

from edgekit.core.errors import EdgekitError

DISTRIBUTION = "edgekit-ml"
# Each extra of the distribution (pyproject's optional-dependencies) and the module that tells it is installed.
EXTRAS = {
    "tflite": "litert_torch",  # PyTorch to TFLite conversion (the TFLite runtime is in the base install)
    "report": "matplotlib",  # the plots of `edgekit report`, `run` and `guidelines`
}


@functools.cache  # asked on every manifest read; an install does not change while edgekit runs
def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (a lean install has no torch, for instance)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def has_extra(extra: str) -> bool:
    """Whether the extra's packages are installed."""
    return installed(EXTRAS[extra])


def install_command(extra: str) -> str:
    """The command that installs an extra: pip install 'edgekit-ml[tflite]'."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require_extra(extra: str, what: str, instead: str = "") -> None:
    """Refuse `what` (e.g. "TFLite export") with one line naming the extra to install, when it is missing.
    `instead`: what the user can do without it, said after the install command."""
    if not has_extra(extra):
        alternative = f", or {instead}" if instead else ""
        raise EdgekitError(f"{what} needs the {extra} extra, which is not installed: "
                           f"{install_command(extra)}{alternative}.")
