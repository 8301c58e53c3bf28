"""The service's SQLite writer thread: order, batches, a lock held by another process, errors."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from shoal.control.dbwriter import Writer
from shoal.control.journal import Journal, ServiceEvent, db_error
from shoal.errors import StateError
from shoal.state import State


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
