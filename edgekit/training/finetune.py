"""Fine-tuning from pretrained weights: load them (a classifier for another class count is re-initialised), and
freeze the backbone for the first epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from edgekit.checkpoint import KeyFit, load_state_dict, non_finite_keys
from edgekit.core.errors import EdgekitError


def classifier_name(model: nn.Module, num_classes: int) -> str:
    """The module name of the model's output layer: its last Linear with `num_classes` outputs."""
    found = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module.out_features == num_classes]
    if not found:
        raise EdgekitError(f"{type(model).__name__} has no Linear layer with {num_classes} outputs to train.")
    return found[-1]


def load_pretrained(model: nn.Module, path: Path, num_classes: int) -> dict[str, Any]:
    """Start `model` from the weights at `path` (a torchvision-style state_dict or an edgekit checkpoint).

    Every key must fit except the classifier's: a classifier for another class count is left freshly initialised.
    Returns the record the checkpoint and summary keep ({path, classifier: loaded | re-initialised, note})."""
    state = load_state_dict(path)
    ours = model.state_dict()
    head = classifier_name(model, num_classes)
    head_keys = {f"{head}.weight", f"{head}.bias"}
    fit = KeyFit.of(state, ours)
    reinit = bool(fit.wrong_shape) and set(fit.wrong_shape) <= head_keys and not fit.missing and not fit.unexpected
    if not fit.fits and not reinit:
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        raise EdgekitError(f"model.weights {path} does not fit {name} ({fit.describe()}): give weights of the "
                           "same model and width (model.weights in the recipe, or --weights).")
    broken = non_finite_keys(state)
    if broken:
        raise EdgekitError(f"model.weights {path} holds NaN or infinite values in {', '.join(broken[:3])}: "
                           "give weights from a run that did not diverge.")
    if reinit:
        theirs = int(state[f"{head}.weight"].shape[0])
        state = {**state, **{k: ours[k] for k in head_keys if k in ours}}
        note = (f"fine-tuning from {path}: its classifier predicts {theirs} classes, the data has {num_classes}: "
                f"classifier ({head}) re-initialised")
    else:
        note = f"fine-tuning from {path}: every layer loaded, the classifier included"
    model.load_state_dict(state, strict=True)
    return {"path": str(path), "classifier": "re-initialised" if reinit else "loaded", "note": note}


def set_frozen(model: nn.Module, head: str, frozen: bool) -> None:
    """Freeze (or thaw) everything but the classifier `head`; a frozen backbone's BatchNorms keep their
    statistics (evaluation mode), as Keras' and timm's fine-tuning recipes do."""
    for name, param in model.named_parameters():
        param.requires_grad_(not frozen or name.startswith(head + "."))
    if frozen:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not name.startswith(head + "."):
                module.eval()
