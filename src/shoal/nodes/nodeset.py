"""The node-set type: a Python set of node names with ClusterShell-style ranges.

This module owns three things, all pure:

* :func:`expand` turns one node-set *pattern* (``n[1-32,40]``, ``n[1-9/2]``,
  ``n[01-16]``, ``r[1-2]n[01-16]``, ``n[1-3]-ib``) into the names it stands for;
* :func:`fold` turns any collection of names back into the most compact string
  of such patterns joined by ``,`` (``n[1-30,32]``), multi-dimensional when
  every combination is present (``r[1-2]n[01-16]``);
* :class:`NodeSet`, which obeys Python's set protocol (``| & - ^``, the
  in-place forms, ``<= >= < >``, ``in``, ``len``) and iterates in natural order
  (``n2`` before ``n10``). ``NodeSet("a[1-4]!a2")`` parses a ClusterShell string
  (operators ``,`` ``!`` ``&`` ``^`` applied left to right, no groups).

Padding is part of a name: ``n01`` and ``n1`` are different nodes. A range
``a-b`` is zero-padded to the width of ``a`` when ``a`` has a leading zero
(``01-16``), else unpadded; a padded ``b`` of another width is an error.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import product
from typing import Any

from shoal.errors import NodeSetParseError

_DIGITS = re.compile(r"(\d+)")
_PATTERN = re.compile(r"([^\[\]]+)|\[([^\[\]]*)\]")
_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?:/(\d+))?)?$")

#: The most names one pattern, one selection expression or one inventory file may
#: stand for: a thousand times a large fleet, yet refused before anything is expanded
#: (``n[1-3]`` fourteen times over is 4.8 million names, ``a[1-2000]b[1-2000]`` four).
MAX_NAMES = 1_000_000


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders embedded numbers by value: n2 < n10, then n01 < n1 by text."""
    parts: list[Any] = _DIGITS.split(name)
    if len(parts) > 1:
        parts[1::2] = map(int, parts[1::2])
    parts.append(name)
    return tuple(parts)


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=natural_key)


def _width(text: str) -> int:
    return len(text) if len(text) > 1 and text[0] == "0" else 0


def _ranges(body: str, column: int) -> list[tuple[int, int, int, int, str]]:
    """``(start, stop, step, width, text)`` of each item of a bracket body, checked."""
    out = []
    pos = column
    for item in body.split(","):
        m = _RANGE.match(item)
        if not m:
            raise NodeSetParseError(f"bad range {item!r} (expected N, N-M or N-M/STEP)", pos)
        start, stop, step = m.group(1), m.group(2), m.group(3)
        if stop is None:
            out.append((int(start), int(start), 1, _width(start), start))
        else:
            if _width(stop) and _width(stop) != len(start):
                raise NodeSetParseError(f"range {item!r} mixes paddings", pos)
            a, b = int(start), int(stop)
            s = int(step) if step else 1
            if b < a:
                raise NodeSetParseError(f"range {item!r} runs backwards", pos)
            if s < 1:
                raise NodeSetParseError(f"range {item!r} has a step below 1", pos)
            out.append((a, b, s, _width(start), item))
        pos += len(item) + 1
    return out


def _count(ranges: list[tuple[int, int, int, int, str]]) -> int:
    return sum((b - a) // s + 1 for a, b, s, _, _ in ranges)


def expand_ranges(body: str, column: int = 0) -> list[str]:
    """The number strings of a bracket body such as ``1-3,07-09,1-9/2``."""
    ranges = _ranges(body, column)
    if _count(ranges) > MAX_NAMES:
        raise NodeSetParseError(f"[{body}] stands for more than {MAX_NAMES:,} numbers", column)
    out: list[str] = []
    for a, b, s, width, _ in ranges:
        if width:
            out.extend(f"{i:0{width}d}" for i in range(a, b + 1, s))
        else:
            out.extend(str(i) for i in range(a, b + 1, s))
    return out


def _pieces(pattern: str, column: int) -> list[str | tuple[str, int]]:
    """A pattern's literal texts and ``(bracket body, its column)`` in order."""
    pieces: list[str | tuple[str, int]] = []
    pos = 0
    while pos < len(pattern):
        m = _PATTERN.match(pattern, pos)
        if not m:
            raise NodeSetParseError(f"unbalanced bracket in {pattern!r}", column + pos)
        if m.group(1) is not None:
            pieces.append(m.group(1))
        else:
            pieces.append((m.group(2), column + pos + 1))
        pos = m.end()
    return pieces


def count(pattern: str, column: int = 0) -> int:
    """How many names ``pattern`` stands for (before duplicates are removed), computed
    without expanding it; NodeSetParseError when it is malformed."""
    if "[" not in pattern and "]" not in pattern:
        return 1
    total = 1
    for piece in _pieces(pattern, column):
        if isinstance(piece, tuple):
            total *= _count(_ranges(*piece))
    return total


def expand(pattern: str, column: int = 0) -> list[str]:
    """Every name one pattern stands for, in the order written (duplicates removed).

    A pattern of more than :data:`MAX_NAMES` names is refused before expanding.
    """
    if "[" not in pattern and "]" not in pattern:
        return [pattern]
    total = count(pattern, column)
    if total > MAX_NAMES:
        raise NodeSetParseError(
            f"{pattern!r} stands for {total:,} names (the limit is {MAX_NAMES:,})", column
        )
    pieces = [
        expand_ranges(*piece) if isinstance(piece, tuple) else [piece]
        for piece in _pieces(pattern, column)
    ]
    return list(dict.fromkeys("".join(combo) for combo in product(*pieces)))


def _fold_numbers(numbers: Iterable[str]) -> str:
    """Compact range text for number strings: {1,2,3,5} -> '1-3,5'."""
    by_width: dict[int, set[int]] = defaultdict(set)
    unpadded: list[str] = []
    for text in numbers:
        w = _width(text)
        if w:
            by_width[w].add(int(text))
        else:
            unpadded.append(text)
    for text in unpadded:
        # an unpadded number of the same length as a padded width reads the same there
        w = len(text)
        (by_width[w] if w in by_width and w > 1 else by_width[0]).add(int(text))
    items: list[tuple[int, int, str]] = []
    for w, values in by_width.items():
        ordered = sorted(values)
        start = prev = ordered[0]
        tail: list[int | None] = [*ordered[1:], None]
        for v in tail:
            if v is not None and v == prev + 1:
                prev = v
                continue
            if start == prev:
                items.append((start, w, f"{start:0{w}d}"))
            else:
                items.append((start, w, f"{start:0{w}d}-{prev:0{w}d}"))
            if v is not None:
                start = prev = v
    items.sort()
    return ",".join(text for _, _, text in items)


def _fold_vectors(vectors: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Fold number vectors into products of range texts, last dimension first."""
    if len(vectors[0]) == 1:
        return [(_fold_numbers(v[0] for v in vectors),)]
    lasts: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for v in vectors:
        lasts[v[:-1]].append(v[-1])
    by_range: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for prefix, nums in lasts.items():
        by_range[_fold_numbers(nums)].append(prefix)
    out: list[tuple[str, ...]] = []
    for rng, prefixes in by_range.items():
        for folded in _fold_vectors(prefixes):
            out.append((*folded, rng))
    return out


def _bracket(rng: str) -> str:
    return rng if rng.isdigit() else f"[{rng}]"


def fold(names: Iterable[str]) -> str:
    """The most compact node-set string for ``names`` (empty string when empty)."""
    plain: list[str] = []
    patterns: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
    for name in set(names):
        parts = _DIGITS.split(name)
        if len(parts) == 1:
            plain.append(name)
        else:
            patterns[tuple(parts[0::2])].append(tuple(parts[1::2]))
    terms: list[tuple[tuple[Any, ...], str]] = [(natural_key(n), n) for n in plain]
    for texts, vectors in patterns.items():
        for ranges in _fold_vectors(vectors):
            out = [texts[0]]
            first = [texts[0]]
            for rng, text in zip(ranges, texts[1:], strict=True):
                out.append(_bracket(rng))
                out.append(text)
                head = re.split(r"[-,]", rng, maxsplit=1)[0]
                first.append(head)
                first.append(text)
            terms.append((natural_key("".join(first)), "".join(out)))
    terms.sort()
    return ",".join(t for _, t in terms)


def parse(text: str) -> set[str]:
    """Names of a ClusterShell node-set string: ``,`` ``!`` ``&`` ``^`` left to right."""
    result: set[str] = set()
    op = ","
    depth = 0
    start = 0
    named = 0  # names the elements stand for so far, bounded by MAX_NAMES
    for i, ch in enumerate(text + ","):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise NodeSetParseError(f"unbalanced ']' in {text!r}", i)
        elif i == len(text) and depth:
            raise NodeSetParseError(f"unclosed '[' in {text!r}", text.rfind("["))
        elif depth == 0 and ch in ",!&^":
            chunk = text[start:i].strip()
            if not chunk:
                raise NodeSetParseError(f"empty element in {text!r}", start)
            named += count(chunk, start)
            if named > MAX_NAMES:
                raise NodeSetParseError(f"{text!r} stands for more than {MAX_NAMES:,} names", start)
            names = set(expand(chunk, start))
            if op == ",":
                result |= names
            elif op == "!":
                result -= names
            elif op == "&":
                result &= names
            else:
                result ^= names
            op = ch
            start = i + 1
    return result


def _names(other: object) -> set[str] | frozenset[str] | None:
    if isinstance(other, NodeSet):
        return other._names
    if isinstance(other, (set, frozenset)):
        return other
    return None


class NodeSet:
    """A mutable set of node names that prints as compact ranges.

    ``NodeSet("n[1-4]")`` parses a node-set string; ``NodeSet(iterable)`` takes
    names as they are. Iteration is in natural order; ``str()`` folds.
    """

    __slots__ = ("_names", "_sorted")

    def __init__(self, names: str | Iterable[str] | None = None) -> None:
        if names is None:
            self._names: set[str] = set()
        elif isinstance(names, str):
            self._names = parse(names) if names.strip() else set()
        else:
            self._names = set(names)
        self._sorted: list[str] | None = None

    @classmethod
    def _wrap(cls, names: set[str]) -> NodeSet:
        ns = cls.__new__(cls)
        ns._names = names
        ns._sorted = None
        return ns

    # --- container protocol -------------------------------------------------
    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        if self._sorted is None:
            self._sorted = natural_sorted(self._names)
        return iter(self._sorted)

    def __bool__(self) -> bool:
        return bool(self._names)

    def __str__(self) -> str:
        return fold(self._names)

    def __repr__(self) -> str:
        return f"NodeSet({fold(self._names)!r})"

    def __eq__(self, other: object) -> bool:
        names = _names(other)
        return NotImplemented if names is None else self._names == names

    __hash__ = None  # type: ignore[assignment]

    # --- comparisons --------------------------------------------------------
    def __le__(self, other: object) -> bool:
        names = _names(other)
        return NotImplemented if names is None else self._names <= names

    def __lt__(self, other: object) -> bool:
        names = _names(other)
        return NotImplemented if names is None else self._names < names

    def __ge__(self, other: object) -> bool:
        names = _names(other)
        return NotImplemented if names is None else self._names >= names

    def __gt__(self, other: object) -> bool:
        names = _names(other)
        return NotImplemented if names is None else self._names > names

    def issubset(self, other: Iterable[str]) -> bool:
        return self._names.issubset(other)

    def issuperset(self, other: Iterable[str]) -> bool:
        return self._names.issuperset(other)

    def isdisjoint(self, other: Iterable[str]) -> bool:
        return self._names.isdisjoint(other)

    # --- algebra ------------------------------------------------------------
    def __or__(self, other: object) -> NodeSet:
        names = _names(other)
        return NotImplemented if names is None else NodeSet._wrap(self._names | names)

    def __and__(self, other: object) -> NodeSet:
        names = _names(other)
        return NotImplemented if names is None else NodeSet._wrap(self._names & names)

    def __sub__(self, other: object) -> NodeSet:
        names = _names(other)
        return NotImplemented if names is None else NodeSet._wrap(self._names - names)

    def __xor__(self, other: object) -> NodeSet:
        names = _names(other)
        return NotImplemented if names is None else NodeSet._wrap(self._names ^ names)

    __ror__ = __or__
    __rand__ = __and__
    __rxor__ = __xor__

    def __rsub__(self, other: object) -> NodeSet:
        names = _names(other)
        return NotImplemented if names is None else NodeSet._wrap(set(names) - self._names)

    def __ior__(self, other: object) -> NodeSet:
        names = _names(other)
        if names is None:
            return NotImplemented
        self._names |= names
        self._sorted = None
        return self

    def __iand__(self, other: object) -> NodeSet:
        names = _names(other)
        if names is None:
            return NotImplemented
        self._names &= names
        self._sorted = None
        return self

    def __isub__(self, other: object) -> NodeSet:
        names = _names(other)
        if names is None:
            return NotImplemented
        self._names -= names
        self._sorted = None
        return self

    def __ixor__(self, other: object) -> NodeSet:
        names = _names(other)
        if names is None:
            return NotImplemented
        self._names ^= names
        self._sorted = None
        return self

    def union(self, *others: Iterable[str]) -> NodeSet:
        return NodeSet._wrap(self._names.union(*others))

    def intersection(self, *others: Iterable[str]) -> NodeSet:
        return NodeSet._wrap(self._names.intersection(*others))

    def difference(self, *others: Iterable[str]) -> NodeSet:
        return NodeSet._wrap(self._names.difference(*others))

    def symmetric_difference(self, other: Iterable[str]) -> NodeSet:
        return NodeSet._wrap(self._names.symmetric_difference(other))

    def update(self, *others: Iterable[str]) -> None:
        self._names.update(*others)
        self._sorted = None

    # --- single names -------------------------------------------------------
    def add(self, name: str) -> None:
        self._names.add(name)
        self._sorted = None

    def discard(self, name: str) -> None:
        self._names.discard(name)
        self._sorted = None

    def remove(self, name: str) -> None:
        self._names.remove(name)
        self._sorted = None

    def copy(self) -> NodeSet:
        return NodeSet._wrap(set(self._names))

    def names(self) -> frozenset[str]:
        return frozenset(self._names)
