"""YAML from users' files, read without crashing: PyYAML builds nodes recursively, so a document nested thousands
of levels deep would end in RecursionError before any schema saw it. Its depth is read from the tokens first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_NESTING = 20  # recipes and device profiles are a few levels deep

_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
         yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def yaml_depth(text: str, stop: int = 100) -> int:
    """How deep a YAML document nests, from its tokens (no recursion); stops counting past `stop`.
    Raises yaml.YAMLError for text that does not scan."""
    depth = deepest = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, _OPEN):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > stop:
                break
        elif isinstance(token, _CLOSE):
            depth -= 1
    return deepest


def read_yaml_mapping(path: Path, what: str, shape: str) -> dict[str, Any]:
    """A small YAML file of keys (a preprocessing file, ...) as a dict; one EdgekitError for an unreadable file,
    bad syntax, deep nesting or a document that is not a mapping. `what` names the file's role, `shape` the fix."""
    from edgekit.core.errors import EdgekitError

    try:
        text = path.read_text(encoding="utf-8")
        if yaml_depth(text) > MAX_NESTING:
            raise EdgekitError(f"{what} {path} is nested more than {MAX_NESTING} levels deep: {shape}")
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise EdgekitError(f"{what} {path} does not exist: give the path of a YAML file.") from None
    except OSError as exc:
        raise EdgekitError(f"{what} {path} is unreadable ({exc.strerror}): give a readable YAML file.") from None
    except UnicodeDecodeError:
        raise EdgekitError(f"{what} {path} is not UTF-8 text: save it as a UTF-8 YAML file.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgekitError(f"{what} {path} is not valid YAML{where}: fix the syntax.") from None
    if not isinstance(data, dict):
        raise EdgekitError(f"{what} {path} is not a mapping of keys: {shape}")
    return data
