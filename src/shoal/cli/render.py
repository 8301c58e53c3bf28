"""How the CLI shows results: tables, ages, sizes, progress lines and JSON output.

Every command adapter renders through these functions, so a column, an age
or a JSON record looks the same whichever command prints it.

Tables are left-aligned columns two spaces apart, trailing blanks cut. A
column is as wide as the text will look on a terminal
(:func:`display_width`): on a terminal, stdout escapes control characters
(:mod:`.terminal`), so ``\\x1b`` takes four columns; a wide East Asian
character takes two; a combining mark none. Plain ASCII is measured by
``len``.

The JSON convention (``--json``, on every command that prints data):

* stdout is JSON lines: every line is one complete JSON object, nothing else
  is written there. A command about many things (a per-node result, a list
  of nodes, events, log lines, groups, plans, labs, applications) writes one
  object per thing, as it comes (a follow keeps writing); a command about one
  thing (``select``, ``plan show``, ``app status``, ``app up``, ``lab
  status``, an import's report) writes exactly one object.
* Every object about a node has ``"node"``; a per-node result is
  :func:`outcome_record`: ``node``, ``ok``, ``status`` (the kind: ``ok``,
  ``failed``, ``timeout``, ``unreachable``, ...), ``error``, ``error_kind``
  and ``duration`` beside what the command produced there.
* stderr gets no summary lines; an error that stops the command is one
  object there, :func:`error_record`: ``{"kind", "error", "node"?}``
  (``node`` only when the error concerns one). Per-node failures are in the
  stdout records, not repeated on stderr; a command whose records are not
  per-node results (``events``, ``proc logs``) writes one such object per
  failed node on stderr (:func:`print_failures`).
* The exit status is the same as without ``--json`` (:mod:`.exitcodes`).
* ``--no-json`` stands beside every ``--json`` (:func:`add_no_json`): it
  undoes ``[output] json = true`` for one command; the later one wins.

Values are escaped by ``json`` whatever the stream; keys keep the order
written here. (``app schema`` prints the schema itself, an indented document,
for editors: it is a file format, not ``--json`` output.)

Progress lines (:class:`ProgressLine`) are redrawn in place with ``\\r`` on a
terminal's stderr only, written past the escaping stream (their own control
characters, not a node's), cut to the terminal's width; elsewhere they write
nothing.

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
    import argparse

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


def print_failures(results: Results[Any], as_json: bool = False) -> None:
    """One stderr line per failed node: ``NODE: KIND: REASON``, or its :func:`error_record`.

    (For commands whose stdout records are not per-node results: events, log lines.)
    """
    for r in results.failed:
        if as_json:
            print(json.dumps({"kind": r.kind, "error": r.reason, "node": r.node}), file=sys.stderr)
        else:
            print(f"{r.node}: {r.kind}: {r.reason}", file=sys.stderr)


# -- progress ------------------------------------------------------------------------


class ProgressLine:
    """One line redrawn in place on a terminal; writes nothing to anything else.

    A line is cut to the terminal's width (``shutil.get_terminal_size``, read
    when the line is made) so it never wraps, and :meth:`close` blanks exactly
    the columns the longest line took.
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        stream = sys.stderr if stream is None else stream
        self.enabled = enabled and stream.isatty()
        self.stream = unescaped(stream)  # its own \r, not a node's
        self.width = 0  # columns written by the longest line so far
        self.columns = _columns() if self.enabled else 0

    def show(self, text: str) -> None:
        if self.enabled:
            text = text[: max(1, self.columns - 1)]  # the last column would wrap on some
            self.width = max(self.width, len(text))
            self.stream.write(f"\r{text}")
            self.stream.flush()

    def close(self) -> None:
        """Blank the columns the line took and return to its start."""
        if self.enabled and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _columns() -> int:
    import shutil

    return shutil.get_terminal_size().columns


def bar(done: int, total: int, width: int = 30) -> str:
    """``[####------] 12/40``: ``done`` of ``total`` as a bar ``width`` wide."""
    filled = min(width, int(width * done / max(1, total)))
    return f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}"


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
        self.line.show(f"{bar(self.done, self.total, self.WIDTH)} failed {self.bad}")

    def close(self) -> None:
        self.line.close()


# -- JSON -------------------------------------------------------------------------------

#: The ``--json`` option's help, the same on every command.
JSON_HELP = "print JSON lines: one object per node or item, or one object (see 'shoal --help')"

#: The ``--no-json`` option's help (:func:`add_no_json`).
NO_JSON_HELP = "print text, not JSON (where [output] json = true or SHOAL_OUTPUT_JSON set --json)"


def add_no_json(parser: argparse.ArgumentParser) -> None:
    """``--no-json`` beside every ``--json`` of ``parser`` and its subcommands.

    ``[output] json = true`` (a config file or ``SHOAL_OUTPUT_JSON``) makes
    ``--json`` every command's default; ``--no-json`` turns it off for one
    command, and the later of the two on a command line wins.
    """
    import argparse

    taken = parser._option_string_actions
    if "--json" in taken and "--no-json" not in taken:
        parser.add_argument("--no-json", dest=taken["--json"].dest, action="store_false",
                            default=argparse.SUPPRESS, help=NO_JSON_HELP)  # fmt: skip
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                add_no_json(sub)


def print_records(records: Iterable[dict[str, Any]]) -> None:
    """JSON lines on stdout: one object per line, each flushed as it is written."""
    for record in records:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
        sys.stdout.flush()


def print_object(record: dict[str, Any]) -> None:
    """The one object of a command about one thing (one line, like :func:`print_records`)."""
    print_records([record])


def outcome_record(r: NodeOutcome[Any]) -> dict[str, Any]:
    """A per-node result: ``node``, ``ok``, ``status``, what it produced, the error."""
    record = r.to_json()
    record = {"node": r.node, "ok": r.ok, **record}
    if r.action:
        record["action"] = r.action
    return record


def error_record(error: BaseException) -> dict[str, Any]:
    """The stderr object of an error that stopped a command: ``{kind, error, node?}``."""
    kind = getattr(error, "kind", "error")
    node = getattr(error, "node", None)
    return {"kind": kind, "error": str(error), **({"node": node} if node else {})}


def print_error(error: BaseException) -> None:
    """:func:`error_record` as one line on stderr."""
    print(json.dumps(error_record(error)), file=sys.stderr)
