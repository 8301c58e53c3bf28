"""Agent events in the controller's SQLite state: pulled, stored, queried.

Each agent numbers its events (``seq``) for the life of its working area and
has an ``agent_id``. The controller keeps, per node, the last ``seq`` it has
from that agent (table ``event_cursors``) and pulls ``events since=seq``; a
new ``agent_id`` (a wiped or new working area) restarts the cursor at 0.
Stored rows are never rewritten: ``(node, agent, seq)`` is unique.

Following (:func:`follow`) is the other cursor, the reader's: the ``id`` of
the last stored row it handed out. Every ``interval`` it pulls (a callback: the
caller chooses nodes, options and transport, or pulls nothing and tails what
another process stores) and yields the rows stored since, until ``rounds`` are
done or ``stop`` is set. That cursor is a row id, not a time, so a node whose
clock is behind still gets its new events shown, and each row is shown once.

One table holds every event, the agents' and the service's own (node down,
replaced, swept, service started: ``topic`` says whose; they have no ``agent``
or ``seq``, and ``node`` is NULL when they concern no node). ``id``
(AUTOINCREMENT: never reused, even after pruning) is the one ordered sequence
every reader resumes from; :mod:`shoal.control.journal` is the service's view.

Tables (owned here)::

    events(id, node, agent, seq, time, kind, program, detail, topic, stored)
    event_cursors(node PK, agent, seq)
    schema_versions(name PK, version)     one row per versioned table set

Schema 1 (before the service) had ``node``, ``agent`` and ``seq`` NOT NULL and
neither ``topic`` nor ``stored`` (the controller's clock when the row was
written, which retention reads; ``time`` is the agent's clock). It is migrated
to 2 once, in one transaction that keeps every row and its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.errors import StateError
from shoal.state import State

from .agentclient import AgentClient

SCHEMA_VERSION = 2

VERSIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_versions (name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)

EVENTS_DDL = """
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT,
    agent TEXT,
    seq INTEGER,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    program TEXT,
    detail TEXT NOT NULL DEFAULT '',
    topic TEXT NOT NULL DEFAULT 'agent',
    stored REAL NOT NULL DEFAULT 0,
    UNIQUE (node, agent, seq)
)"""

INDEXES_DDL = (
    "CREATE INDEX IF NOT EXISTS events_time ON events(time)",
    "CREATE INDEX IF NOT EXISTS events_stored ON events(stored)",
    """CREATE TABLE IF NOT EXISTS event_cursors (
    node TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    seq INTEGER NOT NULL
)""",
)

PAGE = 1000


@dataclass(frozen=True)
class EventRow:
    id: int
    node: str | None
    seq: int | None
    time: float
    kind: str
    program: str | None
    detail: str
    topic: str = "agent"
    agent: str | None = None
    stored: float = 0.0


COLUMNS = "id, node, seq, time, kind, program, detail, topic, agent, stored"

_ready: weakref.WeakSet[State] = weakref.WeakSet()


def ensure(state: State) -> None:
    """The events tables at :data:`SCHEMA_VERSION`, migrated once per database."""
    if state in _ready:
        return
    try:
        if _version(state.db) != SCHEMA_VERSION:
            with state.transaction() as db:
                _migrate(db, state)
    except sqlite3.Error as exc:
        raise StateError(f"cannot prepare the events tables in {state.path}: {exc}") from exc
    _ready.add(state)


def _version(db: sqlite3.Connection) -> int:
    """The events schema version: 0 none, 1 the table without a recorded version."""
    has = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name=?", ("events",))
    if has.fetchone() is None:
        return 0
    if db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_versions'"
    ).fetchone():
        row = db.execute("SELECT version FROM schema_versions WHERE name='events'").fetchone()
        if row is not None:
            return int(row[0])
    return 1


def _migrate(db: sqlite3.Connection, state: State) -> None:
    """Bring the tables to :data:`SCHEMA_VERSION` (inside the caller's transaction)."""
    version = _version(db)  # again: another process may have migrated meanwhile
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{state.path}: events schema {version} is newer than this shoal's "
            f"{SCHEMA_VERSION}: upgrade shoal"
        )
    if version == 0:
        db.execute(EVENTS_DDL.format(name="events"))
    elif version == 1:
        db.execute(EVENTS_DDL.format(name="events_v2"))
        db.execute(
            "INSERT INTO events_v2(id, node, agent, seq, time, kind, program, detail, topic,"
            " stored) SELECT id, node, agent, seq, time, kind, program, detail, 'agent', time"
            " FROM events ORDER BY id"
        )
        db.execute("DROP TABLE events")
        db.execute("ALTER TABLE events_v2 RENAME TO events")
    for ddl in INDEXES_DDL:
        db.execute(ddl)
    db.execute(VERSIONS_DDL)
    db.execute(
        "INSERT INTO schema_versions(name, version) VALUES ('events', ?)"
        " ON CONFLICT(name) DO UPDATE SET version=excluded.version",
        (SCHEMA_VERSION,),
    )


def row(r: Sequence[Any]) -> EventRow:
    """An :class:`EventRow` from a row selected as :data:`COLUMNS`."""
    return EventRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])


def cursor(state: State, node: str) -> tuple[str | None, int]:
    ensure(state)
    row = state.db.execute("SELECT agent, seq FROM event_cursors WHERE node=?", (node,)).fetchone()
    return (str(row[0]), int(row[1])) if row else (None, 0)


def store(state: State, node: str, agent: str, events: Sequence[dict[str, Any]]) -> int:
    """Insert pulled events and move the node's cursor; the number of new rows."""
    ensure(state)
    with state.transaction() as db:
        return insert_agent_events(db, node, agent, events)


def insert_agent_events(
    db: sqlite3.Connection, node: str, agent: str, events: Sequence[dict[str, Any]]
) -> int:
    """Inside the caller's transaction: one agent's events (idempotent on (node, agent,
    seq)) and its cursor moved; the number of new rows."""
    now = time.time()
    rows = [
        (
            node,
            agent,
            int(e["seq"]),
            float(e.get("time", 0.0)),
            str(e.get("kind", "")),
            e.get("program"),
            str(e.get("detail", "")),
            now,
        )
        for e in events
    ]
    before = db.total_changes
    db.executemany(
        "INSERT OR IGNORE INTO events(node, agent, seq, time, kind, program, detail, stored)"
        " VALUES (?,?,?,?,?,?,?,?)",
        rows,
    )
    added = db.total_changes - before
    if rows:
        last = max(r[2] for r in rows)
        db.execute(
            "INSERT INTO event_cursors(node, agent, seq) VALUES (?,?,?)"
            " ON CONFLICT(node) DO UPDATE SET agent=excluded.agent, seq=excluded.seq",
            (node, agent, last),
        )
    return added


def insert_event(
    db: sqlite3.Connection,
    topic: str,
    kind: str,
    *,
    node: str | None = None,
    program: str | None = None,
    detail: str = "",
    made: float,
    stored: float,
) -> int:
    """Inside the caller's transaction: one event made here (no agent, no seq); its id."""
    cur = db.execute(
        "INSERT INTO events(node, agent, seq, time, kind, program, detail, topic, stored)"
        " VALUES (?, NULL, NULL, ?, ?, ?, ?, ?, ?)",
        (node, made, kind, program, detail, topic, stored),
    )
    return int(cur.lastrowid or 0)


def record_event(
    state: State,
    topic: str,
    kind: str,
    *,
    node: str | None = None,
    program: str | None = None,
    detail: str = "",
) -> int:
    """Store one event of ``topic`` made now, from any process (a rollout's step run by
    the CLI or by the service): ``shoal events`` shows it, a running service's journal
    hands it out at its next wake. Its id."""
    ensure(state)
    now = time.time()
    try:
        with state.transaction() as db:
            return insert_event(
                db, topic, kind, node=node, program=program, detail=detail, made=now, stored=now
            )
    except sqlite3.Error as exc:
        raise StateError(f"cannot record a {topic} event in {state.path}: {exc}") from exc


def recorder(state: State, topic: str) -> Callable[[str, str | None, str], None]:
    """An ``on_event(kind, node, message)`` hook storing each call as a ``topic`` event."""

    def hook(kind: str, node: str | None, message: str) -> None:
        record_event(state, topic, kind, node=node, detail=message)

    return hook


async def pull(client: AgentClient, state: State) -> int:
    """Pull every event the controller does not have yet from one agent; new rows."""
    known_agent, seq = cursor(state, client.node)
    page = await client.call("events", since=seq, limit=PAGE)
    if seq and (page.get("agent_id") != known_agent or int(page.get("last", 0)) < seq):
        seq = 0  # another agent, or its log started over: take it from the start
        page = await client.call("events", since=seq, limit=PAGE)
    total = 0
    while True:
        events = page.get("events") or []
        total += store(state, client.node, str(page.get("agent_id")), events)
        if len(events) < PAGE:
            return total
        seq = int(events[-1]["seq"])
        page = await client.call("events", since=seq, limit=PAGE)


def query(
    state: State,
    nodes: Iterable[str] | None = None,
    *,
    after_id: int = 0,
    limit: int | None = None,
    topics: Iterable[str] | None = None,
    fleet: bool = False,
) -> list[EventRow]:
    """Stored events, oldest first (``after_id`` for following, ``limit`` = the latest N).

    ``nodes`` keeps the events of those nodes; ``fleet`` keeps the events of no node
    too (a rollout's, the scheduler's, the service's); ``topics`` keeps those topics.
    """
    ensure(state)
    sql = f"SELECT {COLUMNS} FROM events WHERE id > ?"
    params: list[Any] = [after_id]
    names = list(nodes) if nodes is not None else None
    if names is not None:
        if not names and not fleet:
            return []
        either = " OR node IS NULL" if fleet else ""
        sql += f" AND (node IN ({','.join('?' * len(names))}){either})"
        params.extend(names)
    wanted = list(topics) if topics is not None else None
    if wanted is not None:
        sql += f" AND topic IN ({','.join('?' * len(wanted))})"
        params.extend(wanted)
    if limit is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY time DESC, id DESC LIMIT ?)"
        params.append(limit)
    sql += " ORDER BY time, id"
    rows = state.db.execute(sql, params).fetchall()
    return [row(r) for r in rows]


def cursor_after(
    state: State, nodes: Iterable[str] | None = None, shown: Iterable[EventRow] = ()
) -> int:
    """Where following starts: after every row ``shown`` and the newest stored one."""
    names = list(nodes) if nodes is not None else None
    newest = query(state, names, limit=1, fleet=True)
    return max((r.id for r in [*shown, *newest]), default=0)


async def follow(
    state: State,
    nodes: Iterable[str] | None = None,
    *,
    pull: Callable[[], Awaitable[object]] | None = None,
    after_id: int | None = None,
    interval: float = 2.0,
    rounds: int | None = None,
    stop: asyncio.Event | None = None,
    topics: Iterable[str] | None = None,
    fleet: bool = False,
) -> AsyncIterator[list[EventRow]]:
    """Every ``interval`` seconds: ``await pull()``, then yield the rows stored since
    (``nodes``, ``topics`` and ``fleet`` filter as in :func:`query`).

    Starts after ``after_id`` (default: :func:`cursor_after` the newest stored
    row) and yields once per round the new rows, oldest first (an empty list
    when nothing came); ends after ``rounds`` rounds (None: never) or as soon as
    ``stop`` is set, even in the middle of a wait. What ``pull`` returns is
    ignored; what it raises ends the follow.
    """
    names = list(nodes) if nodes is not None else None
    topics = list(topics) if topics is not None else None
    last = cursor_after(state, names) if after_id is None else after_id
    done = 0
    while rounds is None or done < rounds:
        if stop is None:
            await asyncio.sleep(interval)
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
        if pull is not None:
            await pull()
        fresh = query(state, names, after_id=last, topics=topics, fleet=fleet)
        last = max((r.id for r in fresh), default=last)
        done += 1
        yield fresh
