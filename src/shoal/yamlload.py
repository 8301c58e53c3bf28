"""YAML composed within bounds: every YAML file Shoal reads goes through here.

PyYAML's safe loader composes aliases as shared nodes, so a 1 KB document of
eight levels of nine aliases each is a graph of a few dozen nodes, but every
reader of it walks a tree: 9**8 = 43 million values (the app spec loader grew
past 9.7 GB). An alias inside its own anchor (``&a [*a]``) makes that tree
infinite, and the composer recurses once per level of nesting.

:func:`compose` counts, while it composes, what the document would be with
every alias expanded, and refuses, at the alias or node that crosses the line:

* more than :data:`MAX_NODES` values in all (aliases counted at their
  expanded size): far above any spec or inventory, far below a bomb;
* nesting deeper than :data:`MAX_DEPTH` (aliases counted at their depth), so
  neither the composer nor any reader recurses more than that;
* an alias of an anchor that is still open (a cycle).

The refusal is a :class:`LimitError` (a ``yaml.MarkedYAMLError``) whose mark
gives the line, so callers report ``file:line`` as for a syntax error.
"""

from __future__ import annotations

from typing import Any

import yaml

#: The most values a document may hold once its aliases are expanded.
MAX_NODES = 1_000_000
#: The deepest nesting of mappings and lists (aliases expanded).
MAX_DEPTH = 64


class LimitError(yaml.MarkedYAMLError):
    """A document over a bound or with a cyclic alias; ``line`` (1-based) is where."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.line: int = mark.line + 1 if mark is not None else 1


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, with a composer that measures the expanded document."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded = 0  # values so far, aliases at their expanded size
        self._depth = 0  # depth of the node being composed
        self._deepest = 0  # deepest level reached inside the innermost open anchor
        self._open: set[str] = set()  # anchors whose node is being composed
        self._extent: dict[str, tuple[int, int]] = {}  # anchor -> (size, height)

    def _grow(self, size: int, depth: int, mark: Any, what: str) -> None:
        self._expanded += size
        self._deepest = max(self._deepest, depth)
        if self._expanded > MAX_NODES:
            raise LimitError(
                f"{what} makes the document larger than {MAX_NODES:,} values "
                "once aliases are expanded",
                mark,
            )
        if depth > MAX_DEPTH:
            raise LimitError(f"{what} is nested deeper than {MAX_DEPTH} levels", mark)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        anchor = event.anchor
        if isinstance(event, yaml.AliasEvent):
            if anchor in self._open:
                problem = f"alias *{anchor} is inside its own anchor (a cycle)"
                raise LimitError(problem, event.start_mark)
            size, height = self._extent.get(anchor, (1, 1))  # unknown: the composer refuses it
            self._grow(size, self._depth + height, event.start_mark, f"alias *{anchor}")
            return super().compose_node(parent, index)
        start, outer = self._expanded, self._deepest
        self._depth += 1
        self._grow(1, self._depth, event.start_mark, "this value")
        if anchor is None:
            node: yaml.Node | None = super().compose_node(parent, index)
        else:
            self._deepest = self._depth
            self._open.add(anchor)
            node = super().compose_node(parent, index)
            self._open.discard(anchor)
            self._extent[anchor] = (self._expanded - start, self._deepest - self._depth + 1)
            self._deepest = max(outer, self._deepest)
        self._depth -= 1
        return node


def compose(text: str) -> yaml.Node | None:
    """The node tree of a one-document YAML text (None when empty), within bounds.

    Raises ``yaml.YAMLError``: a :class:`LimitError` over a bound, else PyYAML's own.
    """
    loader = _BoundedLoader(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
        return node
    finally:
        loader.dispose()


def load(text: str) -> Any:
    """``yaml.safe_load`` of a one-document text, within the same bounds as :func:`compose`."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
