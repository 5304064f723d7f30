"""A user's own network: a `pkg.module:callable` returning an nn.Module, a saved torch.export program (.pt2) or a
module object, described by a custom ModelSpec (input shape, class count from one forward pass, source)."""

from __future__ import annotations

import importlib
import logging
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.core.errors import EdgekitError, first_line
from edgekit.models import ModelSpec, custom_spec

CALLABLE_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
PROGRAM_SUFFIX = ".pt2"
INPUT_SHAPE_HELP = "N,C,H,W with N = 1, e.g. 1,3,224,224"


def is_callable_target(text: str) -> bool:
    """`my_pkg.models:build_net` (not a file path, not a zoo name)."""
    return bool(CALLABLE_TARGET.fullmatch(text))


def is_program_path(text: str) -> bool:
    return text.lower().endswith(PROGRAM_SUFFIX)


def parse_input_shape(shape: str | Sequence[int]) -> tuple[int, int, int]:
    """`1,3,224,224` (or a sequence of four ints, or three without the batch) -> (C, H, W)."""
    if isinstance(shape, str):
        parts = [p.strip() for p in shape.replace("x", ",").split(",")]
        values: list[Any] = [int(p) if re.fullmatch(r"\d+", p) else p for p in parts]
    else:
        values = list(shape)
    if len(values) == 3:
        values = [1, *values]
    if len(values) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise EdgekitError(f"input shape {shape!r} is malformed: give {INPUT_SHAPE_HELP}.")
    if values[0] != 1:
        raise EdgekitError(f"input shape {shape!r} has batch {values[0]}: the files take one image; give "
                           f"{INPUT_SHAPE_HELP} (ONNX can take any batch with --dynamic-batch).")
    return values[1], values[2], values[3]


def load_callable(target: str) -> tuple[nn.Module, str]:
    """Import `pkg.module:attr` (the current directory first on the path, as `python -m` does) and call it;
    returns the module and a name for it."""
    module_name, _, attr = target.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise EdgekitError(f"cannot import {module_name} (no module named {exc.name!r}): run edgekit from the "
                               "directory that holds it, or install the package.") from None
        raise EdgekitError(f"importing {module_name} failed ({first_line(exc)}): install what it needs.") from None
    except Exception as exc:  # the user's module raised while importing
        raise EdgekitError(f"importing {module_name} raised {type(exc).__name__} ({first_line(exc)}): fix the "
                           "module so that it imports.") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EdgekitError(f"{module_name} has no {attr}: give MODULE:CALLABLE naming a function or class "
                               "that returns a torch.nn.Module.")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj, attr.rsplit(".", 1)[-1]
    if not callable(obj):
        raise EdgekitError(f"{target} is a {type(obj).__name__}, not a callable: give a function or class that "
                           "returns a torch.nn.Module.")
    try:
        model = obj()
    except Exception as exc:
        raise EdgekitError(f"{target}() raised {type(exc).__name__} ({first_line(exc)}): it must build the model "
                           "without arguments.") from None
    if not isinstance(model, nn.Module):
        raise EdgekitError(f"{target}() returned a {type(model).__name__}, not a torch.nn.Module: return the "
                           "model itself.")
    return model, attr.rsplit(".", 1)[-1]


def load_program(path: Path) -> tuple[nn.Module, tuple[int, int, int]]:
    """A program saved with torch.export.save: its module and the (C, H, W) input it was captured with."""
    if not path.is_file():
        raise EdgekitError(f"{path} does not exist: save the program with torch.export.save(program, path).")
    logger = logging.getLogger("torch.export")  # it logs its own traceback of a failed load before raising
    level = logger.level
    try:
        logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
    except Exception as exc:
        raise EdgekitError(f"{path} is not a saved torch.export program ({type(exc).__name__}: "
                           f"{first_line(exc)}): save one with torch.export.save(program, path).") from None
    finally:
        logger.setLevel(level)
    inputs = [spec for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    values = [placeholders[spec.arg.name].meta.get("val") for spec in inputs if spec.arg.name in placeholders]
    if len(values) != 1 or not isinstance(values[0], torch.Tensor) or values[0].dim() != 4:
        raise EdgekitError(f"{path} takes {len(values)} input(s), not one NCHW image tensor: export an image "
                           "classifier that takes one (1, C, H, W) tensor.")
    shape = tuple(int(d) for d in values[0].shape)
    return _Program(program.module()), parse_input_shape(shape)


class _Program(nn.Module):
    """A loaded program's module, which refuses train()/eval() (its mode was fixed when it was captured) and takes
    the batch of one it was captured with (parity and calibration feed it one image at a time)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.program = graph

    def train(self, mode: bool = True) -> _Program:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return self.program(x)
        return torch.cat([self.program(x[i:i + 1]) for i in range(x.shape[0])])  # captured for one image


def describe(model: nn.Module, input_shape: tuple[int, int, int], name: str, source: str) -> ModelSpec:
    """The custom spec of `model`: one forward pass on zeros checks the input shape and counts the classes."""
    example = torch.zeros((1, *input_shape))
    was_training = model.training
    model.eval()
    shown = "x".join(map(str, (1, *input_shape)))
    try:
        with torch.no_grad():
            output = model(example)
    except Exception as exc:
        raise EdgekitError(f"{name} does not run on a {shown} input ({type(exc).__name__}: {first_line(exc)}): "
                           "give the --input-shape it takes.") from None
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != 1:
        what = f"a {tuple(output.shape)} tensor" if isinstance(output, torch.Tensor) else type(output).__name__
        raise EdgekitError(f"{name} returns {what} for a {shown} input: edgekit exports classifiers, which return "
                           "one (1, classes) tensor of logits.")
    return custom_spec(name, list(input_shape), int(output.shape[1]), source)


def check_capturable(model: nn.Module, input_shape: tuple[int, int, int], name: str) -> None:
    """torch.export must capture the model (the ONNX, TFLite and INT8 paths all start from that graph)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.export.export(model.eval(), (torch.zeros((1, *input_shape)),), strict=False)
    except Exception as exc:
        raise EdgekitError(f"torch.export cannot capture {name} ({type(exc).__name__}: {first_line(exc)}): "
                           "make its forward traceable (no data-dependent Python control flow).") from None
