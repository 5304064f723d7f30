"""Loading weights: edgekit checkpoints and plain (e.g. torchvision) state_dicts, never arbitrary pickles."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.errors import EdgekitError


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from an edgekit checkpoint ({"model": state_dict, ...}) or a bare state_dict file."""
    if not path.is_file():
        raise EdgekitError(f"weights file {path} does not exist: check the --weights path.")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise EdgekitError(
            f"{path} is not a loadable weights file ({first}): give a state_dict or edgekit checkpoint."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise EdgekitError(
            f"{path} is corrupt or not a PyTorch file ({type(exc).__name__}): re-save or re-download it."
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgekitError(f"{path} holds no state_dict: save one with torch.save(model.state_dict(), path).")
    return obj


def load_weights(model: nn.Module, path: Path) -> None:
    """Load `path` into `model` strictly; a mismatch names the missing and unexpected keys."""
    state = load_state_dict(path)
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and state[k].shape != ours[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{label}: {', '.join(keys[:3])}{more}")
        raise EdgekitError(
            f"{path} does not fit {getattr(model, 'spec', None) and model.spec.name or 'this model'} "
            f"({'; '.join(parts)}): pass the model, width and classes the weights were trained with."
        )
    model.load_state_dict(state, strict=True)
