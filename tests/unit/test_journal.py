"""The service's event journal and scheduler on a temporary SQLite file (no network).

Schema 1 rows migrate with their ids; a reader resumes exactly after a
sequence number, across reopening and across writers in other processes;
agent events are idempotent; retention deletes a prefix and tells a reader
that asked for pruned rows (``lost``); waiters wake on a commit; a job's
phase survives a restart and its failure is an event.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from shoal.agentlink import eventlog
from shoal.control.journal import Journal, ServiceEvent
from shoal.control.schedule import Scheduler
from shoal.errors import StateError
from shoal.state import State

V1 = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL, agent TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL,
    kind TEXT NOT NULL, program TEXT, detail TEXT NOT NULL DEFAULT '',
    UNIQUE (node, agent, seq)
);
CREATE INDEX events_time ON events(time);
CREATE TABLE event_cursors (node TEXT PRIMARY KEY, agent TEXT NOT NULL, seq INTEGER NOT NULL);
"""


def _agent_events(first: int, n: int) -> list[dict[str, object]]:
    return [{"seq": s, "time": 1000.0 + s, "kind": "exited"} for s in range(first, first + n)]


def test_schema_1_migrates_keeping_rows_and_ids(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.db")
    db.executescript(V1)
    db.executemany(
        "INSERT INTO events(id, node, agent, seq, time, kind) VALUES (?,?,?,?,?,?)",
        [(5, "n1", "a", 1, 10.0, "started"), (9, "n2", "b", 1, 11.0, "exited")],
    )
    db.execute("INSERT INTO event_cursors VALUES ('n1', 'a', 1)")
    db.commit()
    db.close()
    with State(tmp_path / "state.db") as st:
        journal = Journal(st)
        rows = journal.read(0).events
        assert [(r.id, r.node, r.kind, r.topic) for r in rows] == [
            (5, "n1", "started", "agent"),
            (9, "n2", "exited", "agent"),
        ]
        assert eventlog.cursor(st, "n1") == ("a", 1)
        seq = journal.record(ServiceEvent("service", "started")).result()
        assert seq == 10  # AUTOINCREMENT continues after the migrated ids
        version = st.db.execute("SELECT version FROM schema_versions WHERE name='events'")
        assert version.fetchone()[0] == eventlog.SCHEMA_VERSION


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as st:
        eventlog.ensure(st)
        st.db.execute("UPDATE schema_versions SET version=99 WHERE name='events'")
    with State(tmp_path / "state.db") as st, pytest.raises(StateError, match="newer"):
        eventlog.ensure(st)


def test_resume_after_seq_is_exact_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    seen: list[int] = []
    with State(path) as st:
        j = Journal(st)
        j.store_agent_events("n1", "a", _agent_events(1, 5))
        j.record(ServiceEvent("node", "down", node="n2", detail="no answer"))
        page = j.read(0, limit=4)
        seen += [r.id for r in page.events]
        after = page.last
    with State(path) as st:  # a restarted service
        j = Journal(st)
        j.record_many([ServiceEvent("service", "started"), ServiceEvent("node", "up", node="n2")])
        while True:
            page = j.read(after, limit=2)
            seen += [r.id for r in page.events]
            if not page.events:
                break
            after = page.last
        assert seen == list(range(1, 9))  # no gap, no duplicate
        assert [r.kind for r in j.read(0, topic="node").events] == ["down", "up"]
        assert [r.node for r in j.read(0, node="n2").events] == ["n2", "n2"]


def test_agent_events_are_idempotent_and_batched(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as st:
        j = Journal(st)
        assert j.store_agent_events("n1", "a", _agent_events(1, 3)).result() == 3
        assert j.store_agent_events("n1", "a", _agent_events(2, 3)).result() == 1  # 4 new
        added = j.store_agent_batches(
            [("n2", "b", _agent_events(1, 2)), ("n3", "c", _agent_events(1, 2))]
        )
        assert added.result() == 4
        assert len(j.read(0).events) == 8
        assert eventlog.cursor(st, "n1") == ("a", 4)


def _writer(path: str, name: str, count: int) -> None:
    with State(Path(path)) as st:
        j = Journal(st)
        for i in range(count):
            j.record(ServiceEvent("service", "tick", detail=f"{name} {i}"))


def test_concurrent_writer_processes_leave_no_gap_for_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with State(path) as st:
        Journal(st)
    ctx = multiprocessing.get_context("fork")  # no connection is open here
    procs = [ctx.Process(target=_writer, args=(str(path), n, 150)) for n in ("a", "b")]
    for p in procs:
        p.start()
    seen: list[int] = []
    after = 0
    with State(path) as st:
        j = Journal(st)
        deadline = time.monotonic() + 60
        while len(seen) < 300 and time.monotonic() < deadline:
            page = j.read(after, limit=7)
            seen += [r.id for r in page.events]
            after = page.last
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert seen == list(range(1, 301))


def test_retention_prunes_a_prefix_and_a_late_reader_is_told(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as st:
        j = Journal(st, keep_age=0, keep_count=3)
        for i in range(10):
            j.record(ServiceEvent("service", "tick", detail=str(i)))
        assert j.prune().result() == 7
        assert j.pruned_through == 7
        late = j.read(2)
        assert late.lost == 7 and [r.id for r in late.events] == [8, 9, 10]
        assert j.read(7).lost == 0  # it had seen everything pruned
        old = Journal(st, keep_age=60, keep_count=0)
        st.db.execute("UPDATE events SET stored = stored - 120 WHERE id <= 9")
        assert old.prune().result() == 2 and old.pruned_through == 9
        assert j.record(ServiceEvent("service", "tick")).result() == 11  # ids never reused


def test_a_waiter_wakes_on_commit_not_on_a_timer() -> None:
    async def scenario(tmp: Path) -> float:
        with State(tmp / "state.db") as st:
            j = Journal(st)
            after = j.last
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, j.record, ServiceEvent("node", "down", node="n1"))
            t0 = time.monotonic()
            assert await j.wait(after, timeout=10)
            return time.monotonic() - t0

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        assert asyncio.run(scenario(Path(tmp))) < 5


def test_a_full_disk_or_locked_database_is_one_clear_error_and_no_partial_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    with State(path) as st:
        j = Journal(st)
        j.record(ServiceEvent("service", "started"))
        st.db.execute("PRAGMA busy_timeout=100")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(StateError, match=r"locked|busy") as info:
                j.record_many([ServiceEvent("node", "down", node="n1")] * 3)
            assert "\n" not in str(info.value)
        finally:
            other.execute("ROLLBACK")
            other.close()
        st.db.execute(f"PRAGMA max_page_count={st.db.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(StateError, match="disk holding it is full"):
            j.record_many([ServiceEvent("node", "down", node="n1", detail="x" * 5000)] * 50)
        assert [r.kind for r in j.read(0).events] == ["started"]  # nothing half-written


def test_a_job_keeps_its_phase_across_a_restart_and_a_failure_is_an_event(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    ran: list[str] = []

    async def good() -> str:
        ran.append("good")
        return "did it"

    async def bad() -> str:
        raise RuntimeError("the sweep broke")

    async def first() -> None:
        with State(path) as st:
            sched = Scheduler(st, Journal(st))
            sched.register("good", 0.2, good, jitter=0)
            sched.register("bad", 0.2, bad, jitter=0)
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.7, stop.set)
            await sched.run(stop)

    asyncio.run(first())
    assert len(ran) >= 2
    with State(path) as st:
        j = Journal(st)
        failed = j.read(0, topic="schedule").events
        assert failed and all("bad: the sweep broke" in r.detail for r in failed)
        saved = st.db.execute("SELECT next_run FROM schedules WHERE name='good'").fetchone()[0]
        sched = Scheduler(st, j)
        job = sched.register("good", 0.2, good, jitter=0)
        assert job.next_run == saved  # the phase, not a new one from now
        again = sched.register("good", 5.0, good, jitter=0)
        assert again.next_run > time.time() + 4  # a new interval starts a new phase
        status = {s["name"]: s for s in Scheduler(st, j).status()}
        assert status == {}  # only registered jobs are reported
