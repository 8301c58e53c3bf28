"""What a command's output leaves in the controller's memory: each stream up to
``max_output``, the rest counted (a hostile node cannot exhaust the controller).

Pure logic for the capture itself; real processes through the local transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import UsageError
from shoal.fanout import RunOptions, run
from shoal.fanout.output import summary_lines
from shoal.nodes.model import Node
from shoal.numeric import byte_size
from shoal.transport import capture
from shoal.transport.capture import OutputCapture
from shoal.transport.local import LocalTransport


def test_each_stream_keeps_its_first_bytes_and_counts_the_rest() -> None:
    out = OutputCapture(10)
    out.add("stdout", b"123456")
    out.add("stdout", b"7890abcdef")
    out.add("stderr", b"e" * 12)
    out.add("stdout", b"more")
    assert out.stdout == b"1234567890" and out.stderr == b"e" * 10
    assert out.dropped == 6 + 2 + 4


def test_no_limit_keeps_everything() -> None:
    out = OutputCapture(0)
    for _ in range(5):
        out.add("stdout", b"x" * 1000)
    assert len(out.stdout) == 5000 and out.dropped == 0


def test_lines_go_on_beyond_the_limit_and_an_endless_line_in_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(capture, "LINE_PIECE", 8)
    lines: list[tuple[str, bytes]] = []
    out = OutputCapture(4, lambda stream, line: lines.append((stream, line)))
    out.add("stdout", b"one\ntw")
    out.add("stdout", b"o\n" + b"z" * 20)
    out.add("stderr", b"tail")
    assert lines == [("stdout", b"one"), ("stdout", b"two"), ("stdout", b"z" * 8),
                     ("stdout", b"z" * 8)]  # fmt: skip
    out.flush_lines()
    assert lines[-2:] == [("stdout", b"z" * 4), ("stderr", b"tail")]
    assert out.stdout == b"one\n" and out.dropped == (6 + 22 - 4)


@pytest.mark.parametrize(
    ("text", "size"),
    [("65536", 65536), ("64K", 65536), ("16M", 16 << 20), ("1g", 1 << 30), ("2MiB", 2 << 20),
     ("3mb", 3 << 20), ("0", 0)],
)  # fmt: skip
def test_sizes_take_binary_units(text: str, size: int) -> None:
    assert byte_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5M", "-1", "1T", "M", "x", "9" * 16])
def test_a_size_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a size in bytes"):
        byte_size(text)


@pytest.mark.parametrize("bad", [-1, True, 1.5, "1M"])
def test_run_options_refuse_a_bad_limit(bad: object) -> None:
    with pytest.raises(UsageError, match="--max-output"):
        RunOptions(max_output=bad).validate()  # type: ignore[arg-type]


def test_a_process_printing_more_than_the_limit_keeps_the_limit(tmp_path: Path) -> None:
    command = "head -c 3000000 /dev/zero | tr '\\0' x; head -c 5000 /dev/zero >&2"
    got = run(
        [Node("local")], command, RunOptions(max_output=1 << 20), transport=LocalTransport(tmp_path)
    )
    r = got["local"]
    assert r.ok and r.stdout == "x" * (1 << 20) and len(r.stderr) == 5000
    assert r.dropped == 3_000_000 - (1 << 20)
    assert r.value_json()["dropped"] == r.dropped
    assert summary_lines(got)[-1] == (
        f"  cut: local — output beyond --max-output not kept ({r.dropped:,} bytes)"
    )
    whole = run(
        [Node("local")], command, RunOptions(max_output=0), transport=LocalTransport(tmp_path)
    )
    assert len(whole["local"].stdout) == 3_000_000 and not whole["local"].dropped
    assert not any("cut:" in line for line in summary_lines(whole))
