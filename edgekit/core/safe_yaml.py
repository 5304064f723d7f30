"""YAML from users' files, read without crashing: PyYAML builds nodes recursively, so a document nested thousands
of levels deep would end in RecursionError before any schema saw it. Its depth is read from the tokens first."""

from __future__ import annotations

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
