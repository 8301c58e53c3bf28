"""How the CLI shows results: tables, ages, sizes, progress lines and JSON output.

Every command adapter renders through these functions, so a column, an age
or a JSON record looks the same whichever command prints it.

Tables are left-aligned columns two spaces apart, trailing blanks cut. A
column is as wide as the text will look on a terminal
(:func:`display_width`): on a terminal, stdout escapes control characters
(:mod:`.terminal`), so ``\\x1b`` takes four columns; a wide East Asian
character takes two; a combining mark none. Plain ASCII is measured by
``len``.

JSON goes out in three shapes for now (one per family of commands; a later
issue makes them one): :func:`print_json_lines`, one object per line (``run``,
``cp``, ``agent``, ``proc``, ``sweep``, ``push``, ``versions``,
``rollback``), with :func:`agent_record` and :func:`outcome_record` as the two
record forms of agent results; :func:`print_json`, one indented document
(``nodes``, ``select``, ``plan``, ``facts``, ``app``). Values are escaped by
``json`` whatever the stream.

Progress lines (:class:`ProgressLine`) are redrawn in place with ``\\r`` on a
terminal's stderr only, written past the escaping stream (their own control
characters, not a node's); elsewhere they write nothing.

Start-up time counts for ``shoal run``: this module imports only ``json``
and ``sys`` at load time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .terminal import escape_controls, unescaped

if TYPE_CHECKING:
    from shoal.fanout.results import NodeOutcome, Results

# -- tables ----------------------------------------------------------------------


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal (controls counted as their escapes)."""
    if text.isascii() and text.isprintable():
        return len(text)
    import unicodedata

    width = 0
    for char in escape_controls(text):
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    """``text`` followed by blanks up to ``width`` display columns."""
    return text + " " * (width - display_width(text))


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    """The lines of a table: the header, then one line per row."""
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def print_table(
    rows: Sequence[Sequence[str]], header: Sequence[str], file: TextIO | None = None
) -> None:
    """:func:`table` printed (to stdout by default), the header even without rows."""
    print("\n".join(table(rows, header)), file=file)


# -- ages, sizes, counts ---------------------------------------------------------------


def ago(seconds: float) -> str:
    """How long ago something happened: ``42s ago``, ``5m ago``, ``1.5h ago``, ``2.0d ago``."""
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def uptime(seconds: Any) -> str:
    """How long something has run: ``42s``, ``5m``, ``1h05m``; ``-`` when not a number."""
    if not isinstance(seconds, (int, float)):
        return "-"
    s = int(seconds)
    if s >= 7200:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours}h{minutes:02d}m"
    return f"{s // 60}m" if s >= 120 else f"{s}s"


def size(n: float) -> str:
    """A byte count in decimal units: ``512 B``, ``1.5 KB`` … ``3.2 GB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def tally(labels: Iterable[str]) -> str:
    """How many of each label, sorted by label: ``2 RUNNING, 1 STOPPED``."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))


def print_failures(results: Results[Any]) -> None:
    """One stderr line per failed node: ``NODE: KIND: REASON``."""
    for r in results.failed:
        print(f"{r.node}: {r.kind}: {r.reason}", file=sys.stderr)


# -- progress ------------------------------------------------------------------------


class ProgressLine:
    """One line redrawn in place on a terminal; writes nothing to anything else."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, clear: int = 60) -> None:
        stream = sys.stderr if stream is None else stream
        self.enabled = enabled and stream.isatty()
        self.stream = unescaped(stream)  # its own \r, not a node's
        self.clear = clear

    def show(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"\r{text}")
            self.stream.flush()

    def close(self) -> None:
        """Blank the line (``clear`` columns) and return to its start."""
        if self.enabled:
            self.stream.write("\r" + " " * self.clear + "\r")
            self.stream.flush()


class NodeProgress:
    """A fan-out's progress bar: ``[####------] 12/40 failed 1``."""

    WIDTH = 30

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.bad = 0
        self.line = ProgressLine(enabled, stream)

    def update(self, result: Any) -> None:
        """Count one finished node (anything with ``ok``) and redraw."""
        self.done += 1
        self.bad += not result.ok
        filled = int(self.WIDTH * self.done / max(1, self.total))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.line.show(f"[{bar}] {self.done}/{self.total} failed {self.bad}")

    def close(self) -> None:
        self.line.close()


# -- JSON -------------------------------------------------------------------------------


def print_json_lines(records: Iterable[dict[str, Any]], sort_keys: bool = False) -> None:
    """One JSON object per line on stdout."""
    for record in records:
        print(json.dumps(record, sort_keys=sort_keys))


def print_json(data: Any, indent: int = 2) -> None:
    """One indented JSON document on stdout (what ``json`` cannot encode, as ``str``)."""
    json.dump(data, sys.stdout, indent=indent, default=str)
    sys.stdout.write("\n")


def agent_record(r: NodeOutcome[Any]) -> dict[str, Any]:
    """An agent operation's result on one node (``agent``, ``proc``: keys sorted)."""
    return {
        "node": r.node,
        "ok": r.ok,
        "action": r.action,
        "value": r.value,
        "error": r.reason or None,
        "error_kind": r.kind if r.error else None,
        "duration": round(r.duration, 4),
    }


def outcome_record(r: NodeOutcome[Any]) -> dict[str, Any]:
    """``{node, ok, value, error}`` for one node (``versions``, ``rollback``)."""
    return {"node": r.node, "ok": r.ok, "value": r.value, "error": r.reason}
