"""The central log store read back: lines in order across files, grep, retention."""

from __future__ import annotations

import base64
import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

from shoal.ops import logcollect
from shoal.state import State


def _store(
    state: State,
    node: str,
    stream: str,
    ino: int,
    chunks: list[bytes],
    t: float,
    *,
    written: float | None = None,
    acked: bool = True,
) -> None:
    """Files and segments as a collect leaves them (the same writers collect uses):
    stored at ``t``, written on the node at ``written`` (None: as an older store)."""
    logcollect.ensure(state)
    entry = {"stream": stream, "ino": ino, "rotated": True}
    with state.transaction() as db:
        row = logcollect.new_row(db, node, entry, chunks[0])
    offset = 0
    for raw in chunks:
        data = base64.b64encode(gzip.compress(raw)).decode()
        stored = logcollect._write_segment(state, node, row, offset, data)
        with state.transaction() as db:
            db.execute(
                "INSERT INTO log_segments (file_id, start, length, stored, sha256, t, written)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["id"], offset, len(raw), stored, hashlib.sha256(raw).hexdigest(), t, written),
            )
            db.execute(
                "UPDATE log_files SET offset = ?, acked = ? WHERE id = ?",
                (offset + len(raw), int(acked), row["id"]),
            )
        offset += len(raw)


def test_lines_join_a_line_split_across_ranges_and_files(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as state:
        _store(state, "n1", "web", 10, [b"one\ntw", b"o\nthr"], t=100.0)
        _store(state, "n1", "web", 11, [b"ee\nfour\n"], t=200.0)
        assert list(logcollect.lines(state, "n1", "web")) == [b"one", b"two", b"three", b"four"]
        hits = list(logcollect.grep("^t", state=state))
        assert [(h.node, h.stream, h.line) for h in hits] == [
            ("n1", "web", "two"),
            ("n1", "web", "three"),
        ]
        # the line that ends in a newer segment is whole; the older ones are not read
        assert list(logcollect.lines(state, "n1", "web", since=150.0)) == [b"three", b"four"]


def test_since_is_when_the_node_wrote_the_lines_not_when_they_were_collected(
    tmp_path: Path,
) -> None:
    with State(tmp_path / "state.db") as state:
        # a backlog collected at 500 that the node wrote at 100, then lines written at 400
        _store(state, "n1", "web", 10, [b"old one\n", b"old two\n"], t=500.0, written=100.0)
        _store(state, "n1", "web", 11, [b"new\n"], t=500.0, written=400.0)
        assert list(logcollect.lines(state, "n1", "web", since=300.0)) == [b"new"]
        assert [h.line for h in logcollect.grep("o", state=state, since=300.0)] == []
        assert len(list(logcollect.lines(state, "n1", "web", since=50.0))) == 3


def test_the_write_time_column_is_added_to_an_older_store(tmp_path: Path) -> None:
    import sqlite3

    db = sqlite3.connect(tmp_path / "state.db")
    old = logcollect.SCHEMA.replace("    written REAL,\n", "")
    assert "written" not in old
    db.executescript(old)
    db.close()
    with State(tmp_path / "state.db") as state:
        _store(state, "n1", "web", 10, [b"a\n"], t=100.0)
        assert list(logcollect.lines(state, "n1", "web", since=50.0)) == [b"a"]


def test_prune_by_age_then_size_oldest_first_keeps_rows_of_files_still_on_nodes(
    tmp_path: Path,
) -> None:
    with State(tmp_path / "state.db") as state:
        _store(state, "n1", "a", 1, [b"x" * 1000 + b"\n"], t=100.0)
        _store(state, "n1", "b", 2, [b"y" * 1000 + b"\n"], t=200.0)
        _store(state, "n2", "a", 3, [b"z" * 1000 + b"\n"], t=300.0)
        gone = logcollect.prune(state=state, max_age=150.0, now=320.0)
        assert gone.files == 1
        assert list(logcollect.lines(state, "n1", "a")) == []
        assert list(logcollect.lines(state, "n1", "b")) == [b"y" * 1000]
        left = state.db.execute("SELECT SUM(stored) FROM log_segments").fetchone()[0]
        assert logcollect.prune(state=state, max_bytes=left - 1).files == 1  # the older one
        assert list(logcollect.lines(state, "n2", "a")) == [b"z" * 1000]
        # the files' rows stay (their offsets keep them from being collected again)
        assert state.db.execute("SELECT COUNT(*) FROM log_files").fetchone()[0] == 3
        assert list(logcollect.store_dir(state).rglob("*.gz")) == list(
            (logcollect.store_dir(state) / "n2").rglob("*.gz")
        )


def test_size_retention_never_takes_a_file_not_yet_acked_and_says_what_is_over(
    tmp_path: Path,
) -> None:
    with State(tmp_path / "state.db") as state:
        _store(state, "n1", "a", 1, [b"x" * 1000 + b"\n"], t=100.0, acked=False)  # oldest
        _store(state, "n1", "a", 2, [b"y" * 1000 + b"\n"], t=200.0)
        _store(state, "n1", "a", 3, [b"z" * 1000 + b"\n"], t=300.0, acked=False)
        gone = logcollect.prune(state=state, max_bytes=0)
        assert gone.files == 1  # only the acked one, though the oldest is older
        assert list(logcollect.lines(state, "n1", "a")) == [b"x" * 1000, b"z" * 1000]
        left = state.db.execute("SELECT SUM(stored) FROM log_segments").fetchone()[0]
        assert gone.over == left > 0
        assert logcollect.prune(state=state, max_age=1.0, now=1000.0).files == 0


def test_cli_grep_prints_node_and_stream_and_fails_when_nothing_matches(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as state:
        _store(state, "n1", "web", 10, [b"GET /a 200\nGET /b 500\n"], t=100.0)
    env = {"SHOAL_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "shoal.cli.main", "logs", "grep", " 500$"]
    found = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout == "n1 web: GET /b 500\n"
    cmd[-1] = "nothing-like-this"
    none = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert none.returncode == 1 and none.stdout == ""
