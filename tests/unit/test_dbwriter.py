"""The service's SQLite writer thread: order, batches, a lock held by another process, errors."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.control.dbwriter import Writer
from shoal.control.journal import Journal, ServiceEvent, db_error
from shoal.errors import StateError
from shoal.nodes import health
from shoal.state import State, statements


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    with State(path) as st:
        Journal(st)  # the tables
    return path


def _hold_exclusive(path: Path, seconds: float, held: threading.Event) -> None:
    """Another process's writer: BEGIN EXCLUSIVE held for ``seconds``."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    held.set()
    time.sleep(seconds)
    con.execute("COMMIT")
    con.close()


def test_events_commit_in_submission_order_in_few_batches(db: Path) -> None:
    with State(db) as st:
        journal = Journal(st)
        writer = Writer(db, on_commit=lambda: None, error=lambda e: db_error(st, e))
        journal.writer = writer
        try:
            futures = [
                journal.record(ServiceEvent("service", "tick", detail=str(i))) for i in range(200)
            ]
            ids = [f.result(timeout=30) for f in futures]
        finally:
            writer.close()
        assert ids == sorted(ids) and len(set(ids)) == 200
        details = [r.detail for r in journal.read(0, limit=1000).events]
        assert details == [str(i) for i in range(200)]
        assert writer.commits < 200  # queued jobs joined batches


def test_a_locked_database_delays_writes_never_the_submitter(db: Path) -> None:
    held = threading.Event()
    holder = threading.Thread(target=_hold_exclusive, args=(db, 1.5, held))
    holder.start()
    held.wait(10)
    with State(db) as st:
        journal = Journal(st)
        writer = Writer(db, busy_timeout=0.2, error=lambda e: db_error(st, e))
        journal.writer = writer
        try:
            waiting = [journal.record(ServiceEvent("node", "up", node=f"n{i}")) for i in range(5)]
            impatient = journal.record(ServiceEvent("service", "started"), patience=0)
            with pytest.raises(StateError, match="locked by another process"):
                impatient.result(timeout=10)
            assert not any(f.done() for f in waiting)  # held back, in order, not dropped
            holder.join(10)
            ids = [f.result(timeout=10) for f in waiting]
        finally:
            writer.close()
        assert ids == sorted(ids)
        assert [r.node for r in journal.read(0).events] == [f"n{i}" for i in range(5)]
        assert writer.lock_waits >= 1


def test_a_failing_job_is_rolled_back_alone(db: Path) -> None:
    def bad(st: State) -> None:
        st.db.execute(
            "INSERT INTO events(node, time, kind, topic, stored) VALUES ('x', 0, 'k', 't', 0)"
        )
        raise ValueError("no")

    with State(db) as st:
        journal = Journal(st)
        writer = Writer(db)
        journal.writer = writer
        try:
            first = journal.record(ServiceEvent("service", "a"))
            failing = writer.submit(bad)
            last = journal.record(ServiceEvent("service", "b"))
            assert first.result(10) < last.result(10)
            with pytest.raises(ValueError):
                failing.result(10)
        finally:
            writer.close()
        assert [r.kind for r in journal.read(0).events] == ["a", "b"]


def test_a_commit_wakes_the_journals_waiters_on_the_loop(db: Path) -> None:
    async def main() -> bool:
        with State(db) as st:
            journal = Journal(st)
            writer = Writer(db, on_commit=journal.committed)
            journal.writer = writer
            try:
                waiting = asyncio.ensure_future(journal.wait(journal.last, timeout=30))
                await asyncio.sleep(0.05)
                journal.record(ServiceEvent("node", "down", node="n1"))
                return await asyncio.wait_for(waiting, 10)
            finally:
                writer.close()

    assert asyncio.run(main()) is True


def test_writes_after_close_fail_in_one_line(db: Path) -> None:
    writer = Writer(db)
    writer.close()
    with pytest.raises(StateError, match="writer has stopped"):
        writer.submit(lambda st: None).result(1)


def _behind_a_gate(writer: Writer) -> threading.Event:
    """Hold the writer thread in a job until the event is set: what is submitted
    meanwhile joins one batch (as under load)."""
    gate, running = threading.Event(), threading.Event()

    def wait(st: State) -> None:
        running.set()
        gate.wait(10)

    writer.submit(wait)
    assert running.wait(10)
    return gate


def test_a_job_creating_its_tables_keeps_the_batch_whole_and_wakes_the_readers(db: Path) -> None:
    """CI: node_down stored, but the stream delivered it only at the next commit (+13.6 s):
    mark_failed's first ``ensure`` (executescript) committed the batch behind the writer's
    back, the batch then failed and nobody woke the readers."""

    async def main() -> tuple[list[Any], bool]:
        with State(db) as st:
            journal = Journal(st)
            writer = Writer(db, on_commit=journal.committed)
            journal.writer = writer
            try:
                gate = _behind_a_gate(writer)
                down = journal.record(ServiceEvent("node", "node_down", node="n5"))
                failed = writer.submit(lambda s: health.mark_failed({"n5": "down: x"}, state=s))
                lost = journal.record(ServiceEvent("node", "agent_lost", node="n5"))
                after = journal.last

                async def woken() -> bool:  # the commits' wakes, never the 30 s timeout
                    while not await journal.wait(after, timeout=30):
                        pass  # the gate's own batch woke us first
                    return True

                waiting = asyncio.ensure_future(woken())
                await asyncio.sleep(0.05)
                gate.set()
                woke = await asyncio.wait_for(waiting, 10)
                futures = [asyncio.wrap_future(f) for f in (down, failed, lost)]
                results = await asyncio.gather(*futures, return_exceptions=True)
                return results, woke
            finally:
                writer.close()

    results, woke = asyncio.run(main())
    assert woke is True
    assert not [r for r in results if isinstance(r, BaseException)], results
    with State(db) as st:
        assert [f.name for f in health.failures(st)] == ["n5"]
        assert [r.kind for r in Journal(st).read(0).events] == ["node_down", "agent_lost"]


def test_tables_a_rolled_back_job_created_are_created_again(db: Path) -> None:
    ddl = "CREATE TABLE IF NOT EXISTS extra(a);\nCREATE INDEX IF NOT EXISTS extra_a ON extra(a);"

    def bad(st: State) -> None:
        st.ensure("extra", ddl)
        raise ValueError("no")

    def good(st: State) -> int:
        st.ensure("extra", ddl)
        with st.transaction() as con:
            con.execute("INSERT INTO extra VALUES (1)")
        return 1

    writer = Writer(db)
    try:
        gate = _behind_a_gate(writer)
        first, second = writer.submit(bad), writer.submit(good)
        gate.set()
        with pytest.raises(ValueError):
            first.result(10)
        assert second.result(10) == 1
        assert writer.submit(good).result(10) == 1  # a later batch: created, remembered
    finally:
        writer.close()


def test_statements_split_a_script_and_keep_a_trigger_whole() -> None:
    script = """
        CREATE TABLE IF NOT EXISTS a(x);
        -- a comment; with a semicolon
        CREATE TRIGGER IF NOT EXISTS t AFTER INSERT ON a BEGIN
            UPDATE a SET x = 1; DELETE FROM a WHERE x = 2;
        END;
    """
    parts = list(statements(script))
    assert len(parts) == 2
    assert parts[1].strip().startswith("-- a comment") and parts[1].rstrip().endswith("END;")


def test_a_slow_batch_is_logged_with_its_lock_wait(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    held = threading.Event()
    holder = threading.Thread(target=_hold_exclusive, args=(db, 1.3, held))
    holder.start()
    held.wait(10)
    writer = Writer(db, busy_timeout=0.2)
    try:
        with caplog.at_level(logging.WARNING, logger="shoal.serve.writer"):
            writer.submit(lambda st: None).result(10)
            writer.submit(lambda st: time.sleep(1.1)).result(10)
    finally:
        holder.join(10)
        writer.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    locked = re.search(r"\((\d+\.\d)s of it waiting", lines[0])
    assert "batch of 1 job(s)" in lines[0] and locked and float(locked[1]) >= 1.0, lines[0]
    assert "(0.0s of it waiting" in lines[1], lines[1]
