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

Tables (owned here)::

    events(id, node, agent, seq, time, kind, program, detail)
    event_cursors(node PK, agent, seq)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.state import State

from .agentclient import AgentClient

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    agent TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    program TEXT,
    detail TEXT NOT NULL DEFAULT '',
    UNIQUE (node, agent, seq)
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
CREATE TABLE IF NOT EXISTS event_cursors (
    node TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    seq INTEGER NOT NULL
);
"""

PAGE = 1000


@dataclass(frozen=True)
class EventRow:
    id: int
    node: str
    seq: int
    time: float
    kind: str
    program: str | None
    detail: str


def ensure(state: State) -> None:
    state.ensure("events", SCHEMA)


def cursor(state: State, node: str) -> tuple[str | None, int]:
    ensure(state)
    row = state.db.execute("SELECT agent, seq FROM event_cursors WHERE node=?", (node,)).fetchone()
    return (str(row[0]), int(row[1])) if row else (None, 0)


def store(state: State, node: str, agent: str, events: Sequence[dict[str, Any]]) -> int:
    """Insert pulled events and move the node's cursor; the number of new rows."""
    ensure(state)
    rows = [
        (
            node,
            agent,
            int(e["seq"]),
            float(e.get("time", 0.0)),
            str(e.get("kind", "")),
            e.get("program"),
            str(e.get("detail", "")),
        )
        for e in events
    ]
    with state.transaction() as db:
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO events(node, agent, seq, time, kind, program, detail)"
            " VALUES (?,?,?,?,?,?,?)",
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
) -> list[EventRow]:
    """Stored events, oldest first (``after_id`` for following, ``limit`` = the latest N)."""
    ensure(state)
    sql = "SELECT id, node, seq, time, kind, program, detail FROM events WHERE id > ?"
    params: list[Any] = [after_id]
    names = list(nodes) if nodes is not None else None
    if names is not None:
        if not names:
            return []
        sql += f" AND node IN ({','.join('?' * len(names))})"
        params.extend(names)
    if limit is not None:
        sql = f"SELECT * FROM ({sql} ORDER BY time DESC, id DESC LIMIT ?)"
        params.append(limit)
    sql += " ORDER BY time, id"
    rows = state.db.execute(sql, params).fetchall()
    return [EventRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]


def cursor_after(
    state: State, nodes: Iterable[str] | None = None, shown: Iterable[EventRow] = ()
) -> int:
    """Where following starts: after every row ``shown`` and the newest stored one."""
    names = list(nodes) if nodes is not None else None
    newest = query(state, names, limit=1)
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
) -> AsyncIterator[list[EventRow]]:
    """Every ``interval`` seconds: ``await pull()``, then yield the rows stored since.

    Starts after ``after_id`` (default: :func:`cursor_after` the newest stored
    row) and yields once per round the new rows, oldest first (an empty list
    when nothing came); ends after ``rounds`` rounds (None: never) or as soon as
    ``stop`` is set, even in the middle of a wait. What ``pull`` returns is
    ignored; what it raises ends the follow.
    """
    names = list(nodes) if nodes is not None else None
    last = cursor_after(state, names) if after_id is None else after_id
    done = 0
    while rounds is None or done < rounds:
        if stop is None:
            await asyncio.sleep(interval)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
        if pull is not None:
            await pull()
        fresh = query(state, names, after_id=last)
        last = max((r.id for r in fresh), default=last)
        done += 1
        yield fresh
