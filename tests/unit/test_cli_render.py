"""cli/render.py: tables (escapes, wide characters), ages, sizes, progress lines, JSON output."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from shoal.cli import render
from shoal.cli.terminal import escape_controls


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_table_aligns_on_the_widest_cell_and_cuts_trailing_blanks() -> None:
    lines = render.table([("n1", "ok", ""), ("node10", "unreachable", "")], ("NODE", "ST", "X"))
    assert lines == [
        "NODE    ST           X",
        "n1      ok",
        "node10  unreachable",
    ]
    assert render.table([], ("NAME", "STATE")) == ["NAME  STATE"]


def test_table_measures_control_characters_as_the_terminal_shows_them() -> None:
    """On a terminal \\x1b becomes four visible characters; the columns stay aligned."""
    lines = render.table([("a\x1b[2J", "x"), ("bbbbbbbbbb", "y")], ("NAME", "V"))
    shown = [escape_controls(line) for line in lines]
    assert shown[1] == "a\\x1b[2J    x"
    assert {line.rindex(v) for line, v in zip(shown[1:], "xy", strict=True)} == {12}
    bidi = render.table([("\u202eevil", "x"), ("plain", "y")], ("N", "V"))
    assert escape_controls(bidi[1]).rindex("x") == escape_controls(bidi[2]).rindex("y") == 12


def test_table_counts_wide_characters_twice_and_combining_marks_not_at_all() -> None:
    assert render.display_width("節点") == 4
    assert render.display_width("e\u0301") == 1
    assert render.display_width("plain") == 5
    lines = render.table([("節点", "x"), ("e\u0301e\u0301", "y"), ("abcd", "z")], ("NAME", "V"))
    columns = {render.display_width(line[:-1]) for line in lines[1:]}
    assert columns == {6}, lines
    assert [line[-1] for line in lines[1:]] == ["x", "y", "z"]


def test_print_table_writes_the_lines(capsys: pytest.CaptureFixture[str]) -> None:
    render.print_table([("n1", "1")], ("NODE", "N"))
    out = io.StringIO()
    render.print_table([("n1", "1")], ("NODE", "N"), file=out)
    assert capsys.readouterr().out == out.getvalue() == "NODE  N\nn1    1\n"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s ago"),
        (89, "89s ago"),
        (90, "2m ago"),
        (5399, "90m ago"),
        (5400, "1.5h ago"),
        (172799, "48.0h ago"),
        (172800, "2.0d ago"),
    ],
)
def test_ago(seconds: float, text: str) -> None:
    assert render.ago(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), ("soon", "-"), (0.4, "0s"), (119.9, "119s"), (120, "2m"), (7199, "119m")],
)
def test_uptime_short_forms(seconds: Any, text: str) -> None:
    assert render.uptime(seconds) == text


def test_uptime_in_hours_keeps_minutes() -> None:
    assert render.uptime(7200) == "2h00m"
    assert render.uptime(3 * 3600 + 5 * 60 + 59) == "3h05m"


def test_sizes_and_tallies() -> None:
    assert [render.size(n) for n in (0, 999, 1000, 35_000, 2.5e6, 7e12)] == [
        "0 B",
        "999 B",
        "1.0 KB",
        "35.0 KB",
        "2.5 MB",
        "7000.0 GB",
    ]
    assert render.tally(["ok", "revived", "ok"]) == "2 ok, 1 revived"
    assert render.tally([]) == ""


def test_progress_line_draws_on_a_terminal_only_and_blanks_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    tty = FakeTTY()
    line = render.ProgressLine(True, tty)
    line.show("3/4 done")
    line.show("4/4")
    line.close()
    assert tty.getvalue() == "\r3/4 done\r4/4\r" + " " * 8 + "\r"  # the longest line's columns
    pipe = io.StringIO()
    quiet = render.ProgressLine(True, pipe)
    quiet.show("3/4")
    quiet.close()
    off = render.ProgressLine(False, tty := FakeTTY())
    off.show("x")
    off.close()
    assert pipe.getvalue() == "" and tty.getvalue() == ""


def test_progress_line_fits_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "20")
    tty = FakeTTY()
    line = render.ProgressLine(True, tty)
    line.show("x" * 100)
    line.close()
    assert tty.getvalue() == "\r" + "x" * 19 + "\r" + " " * 19 + "\r"  # never wraps


def test_node_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")

    @dataclass
    class Done:
        ok: bool

    tty = FakeTTY()
    bar = render.NodeProgress(4, True, tty)
    bar.update(Done(True))
    bar.update(Done(False))
    bar.close()
    assert tty.getvalue() == (
        "\r[#######-----------------------] 1/4 failed 0"
        "\r[###############---------------] 2/4 failed 1"
        "\r" + " " * 45 + "\r"
    )


def test_progress_goes_past_the_escaping_stream() -> None:
    from shoal.cli.terminal import EscapingStream

    tty = FakeTTY()
    line = render.ProgressLine(True, EscapingStream(tty))  # type: ignore[arg-type]
    line.show("x")
    assert tty.getvalue() == "\rx"  # its own \r, not shown as \x0d


def test_json_lines_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    render.print_records([{"b": 1, "a": {"d": 2, "c": "\x1b"}}, {"z": None}])
    render.print_object({"path": Path("/x")})
    assert capsys.readouterr().out.splitlines() == [
        '{"b": 1, "a": {"d": 2, "c": "\\u001b"}}',  # keys as written, controls escaped
        '{"z": null}',
        '{"path": "/x"}',  # what json cannot encode, as text
    ]


def test_error_record_names_the_node_only_when_there_is_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shoal.errors import ConnectError, UsageError

    assert render.error_record(UsageError("bad")) == {"kind": "usage", "error": "bad"}
    assert render.error_record(ConnectError("refused", node="n1")) == {
        "kind": "unreachable",
        "error": "refused",
        "node": "n1",
    }
    render.print_error(UsageError("bad"))
    assert json.loads(capsys.readouterr().err) == {"kind": "usage", "error": "bad"}


@dataclass
class _Result:
    node: str
    value: Any = None
    error: Exception | None = None
    action: str = "status"
    duration: float = 0.123456
    kind: str = field(default="")

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def reason(self) -> str:
        return "" if self.error is None else str(self.error)


def test_outcome_record_is_the_result_record_with_ok_and_action() -> None:
    from shoal.errors import ConnectError
    from shoal.fanout.results import NodeOutcome

    good = NodeOutcome("n1", value={"pid": 7}, action="status", duration=0.123456)
    bad = NodeOutcome("n2", error=ConnectError("refused", node="n2"))
    assert render.outcome_record(good) == {
        "node": "n1",
        "ok": True,
        "index": 0,
        "status": "ok",
        "value": {"pid": 7},
        "duration": 0.1235,
        "error": None,
        "error_kind": None,
        "attempts": 1,
        "action": "status",
    }
    record = render.outcome_record(bad)
    assert (record["ok"], record["status"], record["error"]) == (False, "unreachable", "refused")
    assert "action" not in record
    json.dumps(record)


def test_failures_go_to_stderr_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    class Results(list[_Result]):
        @property
        def failed(self) -> list[_Result]:
            return [r for r in self if not r.ok]

    results = Results([_Result("n1"), _Result("n2", error=OSError("gone"), kind="unreachable")])
    render.print_failures(results)  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "n2: unreachable: gone\n"
