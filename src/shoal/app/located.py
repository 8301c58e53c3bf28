"""YAML documents that remember where each value came from (file:line).

:func:`load` composes the document with PyYAML's safe loader within the
bounds of :mod:`shoal.yamlload` (node marks carry line numbers), turns it
into plain Python values, and returns a :class:`Located` whose
:meth:`Located.line` answers "which line holds the value at this path" — so
every spec error can name ``file:line``. Paths are tuples of mapping keys and
list indexes, ``("components", "sender", "processes", 0, "run")``; a path of
a key that is missing answers the line of its nearest present parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shoal import yamlload
from shoal.errors import ConfigError

PathKey = tuple[str | int, ...]


@dataclass
class Located:
    """A loaded document, its file name and the line of every value."""

    value: Any
    file: str
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line(self, path: PathKey) -> int:
        """Line (1-based) of ``path``, or of its nearest ancestor that exists."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), 1)

    def where(self, path: PathKey) -> str:
        """``file:line`` of ``path``."""
        return f"{self.file}:{self.line(path)}"


def _convert(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise ConfigError(
                    f"{file}:{key_node.start_mark.line + 1}: expected a text key, got {key!r}"
                )
            key = str(key)
            if key in out:
                raise ConfigError(f"{file}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = _convert(value_node, (*path, key), lines, file)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), lines, file) for i, item in enumerate(node.value)]
    return _scalar(node)


_CONSTRUCTOR: yaml.SafeLoader | None = None


def _scalar(node: yaml.Node) -> Any:
    """The Python value of a scalar node (typed as the safe loader types it)."""
    global _CONSTRUCTOR
    if not isinstance(node, yaml.ScalarNode):
        return node  # a mapping or list used as a key: rejected by the caller
    if _CONSTRUCTOR is None:
        _CONSTRUCTOR = yaml.SafeLoader("")
    return _CONSTRUCTOR.construct_object(node, deep=True)


def loads(text: str, file: str = "<spec>") -> Located:
    """Parse YAML text; ConfigError names file:line on a syntax error."""
    lines: dict[PathKey, int] = {}
    try:
        root = yamlload.compose(text)
        # typing a scalar can fail too: a tag the safe loader has no constructor for
        value = None if root is None else _convert(root, (), lines, file)
    except yamlload.LimitError as exc:
        raise ConfigError(f"{file}:{exc.line}: {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{file}:{line}: not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if root is None:
        raise ConfigError(f"{file}:1: the file is empty; expected a mapping")
    return Located(value, file, lines)


def load(path: str | Path) -> Located:
    """Read and parse a YAML file; ConfigError when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the spec: {exc}") from None
    return loads(text, str(path))
