"""The service's one ordered event journal: write, read from a sequence number, wait, prune.

Every event the service sees or makes lives in the ``events`` table of
:mod:`shoal.agentlink.eventlog` (``shoal events`` reads the same table with or
without a service). An event's sequence number is its row ``id``:

* **Order = commit order.** ``id`` is AUTOINCREMENT, assigned inside a
  ``BEGIN IMMEDIATE`` transaction, and SQLite admits one writer at a time
  across every process that opens the file. A transaction that took id N has
  committed (or rolled back, and then nobody saw N) before the next writer can
  take N+1, so a reader that sees N sees every committed id below it: reading
  ``id > after`` never skips a row that commits later (a server-assigned
  sequence with concurrent writers, as in PostgreSQL, would). AUTOINCREMENT
  never hands out an id again, even after pruning, so a sequence number means
  one event for the life of the database, across service restarts.
* **Resume exactly**: :meth:`Journal.read` returns the rows with ``id > after``
  in id order, ``limit`` at a time, and the last id it covered.
* **Retention** (:meth:`Journal.prune`) deletes the oldest rows beyond
  ``keep_count`` or stored more than ``keep_age`` seconds ago, always a prefix
  in id order, and remembers the highest id it ever deleted
  (``event_retention``). A reader whose ``after`` is below it is told
  ``lost`` (how far the journal was pruned), never silently moved on.
* **Waiting**: every commit made through this journal wakes the in-process
  waiters (:meth:`Journal.wait`), so nothing in the service polls; rows other
  processes write (a CLI without the service) are seen at the next wake or
  timeout.
* **Off the loop**: in the service every write goes to the one writer thread
  (:mod:`.dbwriter`) and the write methods return futures: a database locked
  by another process delays the writes (kept in order, stored once the lock
  goes), never the event loop. Reads stay on the loop's connection (WAL:
  readers do not wait for a writer).

Tables (owned here, beside eventlog's)::

    event_retention(id = 1, pruned_through)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from shoal.agentlink import eventlog
from shoal.agentlink.eventlog import EventRow
from shoal.errors import StateError
from shoal.state import State

from .dbwriter import Writer

T = TypeVar("T")

RETENTION_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_retention (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL
);
"""

#: Topics of the service's own events (agents' events have topic ``agent``).
#: ``rollout``: a staged rollout's steps, whoever ran it (:func:`eventlog.recorder`);
#: ``audit``: minorities, missing quorums and repairs of ``shoal audit`` and its job.
TOPICS = ("agent", "node", "app", "sweep", "service", "schedule", "rollout", "audit")


@dataclass(frozen=True)
class ServiceEvent:
    """An event the service makes (it has no agent sequence number)."""

    topic: str
    kind: str
    node: str | None = None
    detail: str = ""
    program: str | None = None


@dataclass(frozen=True)
class Page:
    """Rows after a sequence number: ``last`` is the id to resume after next time.

    ``lost`` is the highest pruned id when the reader's ``after`` was below it
    (rows ``after+1 .. lost`` are gone), else 0.
    """

    events: list[EventRow]
    last: int
    lost: int = 0


def db_error(state: State, exc: sqlite3.Error) -> StateError:
    """A one-line StateError for a failed write: disk full and locked named as such."""
    # SQLite rolls a failed commit back itself, so State's ROLLBACK may fail in turn
    # ("no transaction is active"): the cause is then in the chain
    causes: list[BaseException] = [exc]
    while causes[-1].__context__ is not None and len(causes) < 5:
        causes.append(causes[-1].__context__)
    text = " | ".join(str(c) for c in causes)
    if "full" in text:
        why = "the disk holding it is full"
    elif "locked" in text or "busy" in text:
        why = "it is locked by another process"
    else:
        why = str(causes[-1])
    return StateError(f"cannot write the state database {state.path}: {why} (nothing was changed)")


class Journal:
    """The ordered event log of one state database, with in-process wake-ups.

    With a :class:`~.dbwriter.Writer` (the service's), every write is queued
    to the writer thread and the methods return at once with a
    :class:`~concurrent.futures.Future` of their result: the event loop never
    waits for the database's lock. Without one (the library, tests), writes run
    in the caller, raise there, and return a future already done.
    """

    def __init__(
        self,
        state: State,
        *,
        keep_age: float = 30 * 86400,
        keep_count: int = 1_000_000,
        writer: Writer | None = None,
    ) -> None:
        self.state = state
        self.keep_age = keep_age
        self.keep_count = keep_count
        self.writer = writer
        eventlog.ensure(state)
        state.ensure("journal", RETENTION_SCHEMA)
        self._changed = asyncio.Event()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    # -- writing ------------------------------------------------------------------

    def record(self, event: ServiceEvent, *, patience: float | None = None) -> Future[int]:
        """Store one service event; its sequence number (a future)."""
        made = time.time()
        return self.submit(lambda st: _insert(st, [event], made)[-1], patience=patience)

    def record_many(self, events: Sequence[ServiceEvent]) -> Future[list[int]]:
        """Store service events in one transaction; their sequence numbers, in order."""
        events, made = list(events), time.time()
        return self.submit(lambda st: _insert(st, events, made))

    def store_agent_events(
        self, node: str, agent_id: str, events: Sequence[dict[str, Any]]
    ) -> Future[int]:
        """Events one agent sent (idempotent on (node, agent, seq)); the number new."""
        return self.store_agent_batches([(node, agent_id, events)])

    def store_agent_batches(
        self, batches: Iterable[tuple[str, str, Sequence[dict[str, Any]]]]
    ) -> Future[int]:
        """Several agents' events in one transaction (one commit for many nodes)."""
        batches = list(batches)

        def insert(st: State) -> int:
            with st.transaction() as db:
                return sum(eventlog.insert_agent_events(db, n, a, ev) for n, a, ev in batches)

        return self.submit(insert)

    def submit(self, fn: Callable[[State], T], *, patience: float | None = None) -> Future[T]:
        """Any write ``fn(state)``, in the journal's order: through the writer when there is
        one (``state`` is then the writer's), else now, in the caller (errors raised).
        ``fn`` makes its own ``state.transaction()``."""
        if self.writer is not None:
            return self.writer.submit(fn, patience=patience)
        done: Future[T] = Future()
        try:
            done.set_result(fn(self.state))
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if self.state.db.in_transaction:
                    self.state.db.execute("ROLLBACK")
            raise db_error(self.state, exc) from exc
        self.wake()
        return done

    def committed(self) -> None:
        """The writer committed (called in its thread): wake the waiters on the loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake)

    def wake(self) -> None:
        """Wake every waiter (called after each commit)."""
        self._changed.set()
        self._changed = asyncio.Event()

    # -- reading ------------------------------------------------------------------

    @property
    def last(self) -> int:
        """The newest sequence number stored (0: none)."""
        r = self.state.db.execute("SELECT max(id) FROM events").fetchone()
        return int(r[0] or 0)

    @property
    def pruned_through(self) -> int:
        r = self.state.db.execute("SELECT pruned_through FROM event_retention").fetchone()
        return int(r[0]) if r else 0

    def read(
        self,
        after: int = 0,
        *,
        node: str | None = None,
        topic: str | None = None,
        limit: int = 1000,
    ) -> Page:
        """Up to ``limit`` rows with ``id > after`` (filtered), oldest first.

        ``last`` is where the next read starts: the last row returned, or, when
        fewer than ``limit`` matched, the newest id looked at (so filtered-out rows
        are not examined again).
        """
        db = self.state.db
        db.execute("BEGIN")  # one snapshot: the pruned mark, the newest id and the rows agree
        try:
            pruned = self.pruned_through
            newest = self.last
            sql = f"SELECT {eventlog.COLUMNS} FROM events WHERE id > ? AND id <= ?"
            params: list[Any] = [after, newest]
            if node is not None:
                sql += " AND node = ?"
                params.append(node)
            if topic is not None:
                sql += " AND topic = ?"
                params.append(topic)
            sql += " ORDER BY id LIMIT ?"
            params.append(limit)
            rows = [eventlog.row(r) for r in db.execute(sql, params)]
        finally:
            db.execute("COMMIT")
        lost = pruned if after < pruned else 0
        last = rows[-1].id if len(rows) >= limit else max(newest, after)
        return Page(rows, last, lost)

    def tail_start(self, count: int, *, node: str | None = None, topic: str | None = None) -> int:
        """The ``after`` that reads the newest ``count`` matching rows."""
        sql = "SELECT id FROM events WHERE 1"
        params: list[Any] = []
        if node is not None:
            sql += " AND node = ?"
            params.append(node)
        if topic is not None:
            sql += " AND topic = ?"
            params.append(topic)
        sql += " ORDER BY id DESC LIMIT 1 OFFSET ?"
        r = self.state.db.execute(sql, [*params, count]).fetchone()
        return int(r[0]) if r else 0

    async def wait(self, after: int, timeout: float, stop: asyncio.Event | None = None) -> bool:
        """Until a row newer than ``after`` is stored, ``timeout`` passes or ``stop`` is set;
        whether a newer row is there."""
        changed = self._changed
        if self.last > after:
            return True
        waiters = [asyncio.ensure_future(changed.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return self.last > after

    # -- retention ----------------------------------------------------------------

    def prune(self, now: float | None = None) -> Future[int]:
        """Delete what retention no longer keeps (a prefix in id order); rows deleted."""
        now = time.time() if now is None else now
        newest = self.last
        by_count = newest - self.keep_count if self.keep_count > 0 else 0
        r = self.state.db.execute(
            "SELECT max(id) FROM events WHERE stored < ?", (now - self.keep_age,)
        ).fetchone()
        by_age = int(r[0] or 0) if self.keep_age > 0 else 0
        through = max(by_count, by_age)
        if through <= self.pruned_through:
            done: Future[int] = Future()
            done.set_result(0)
            return done

        def delete(st: State) -> int:
            with st.transaction() as db:
                before = db.total_changes
                db.execute("DELETE FROM events WHERE id <= ?", (through,))
                deleted = db.total_changes - before
                db.execute(
                    "INSERT INTO event_retention(id, pruned_through) VALUES (1, ?)"
                    " ON CONFLICT(id) DO UPDATE SET pruned_through="
                    "max(pruned_through, excluded.pruned_through)",
                    (through,),
                )
            return deleted

        return self.submit(delete)


def _insert(state: State, events: Sequence[ServiceEvent], made: float) -> list[int]:
    """Insert service events: ``time`` when the service made them, ``stored`` now."""
    now = time.time()
    ids = []
    with state.transaction() as db:
        for e in events:
            ids.append(
                eventlog.insert_event(
                    db, e.topic, e.kind, node=e.node, program=e.program, detail=e.detail,
                    made=made, stored=now,
                )
            )  # fmt: skip
    return ids


def event_record(r: EventRow) -> dict[str, Any]:
    """The JSON shape of one event (the API's and ``--json``'s)."""
    return {
        "seq": r.id,
        "time": r.time,
        "stored": r.stored,
        "topic": r.topic,
        "kind": r.kind,
        "node": r.node,
        "program": r.program,
        "detail": r.detail,
        "agent": r.agent,
        "agent_seq": r.seq,
    }
