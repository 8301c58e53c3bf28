"""Applications in the controller's SQLite state (tables owned here).

Tables::

    apps(name PK, file, base, document JSON, status, phase, created, updated)
    app_nodes(app, component, node, slot, state, since, detail)   PK (app, component, node)
    app_barriers(app, name, released, arrived, needed)            PK (app, name)

``status`` is ``starting`` | ``running`` | ``failed`` | ``aborted``; ``phase``
the last lifecycle phase begun (acquire, configure, start, monitor). A member
``state`` is ``active``, ``replaced`` (a spare took its slot), ``failed``
(left out by its policy), ``stopping`` (dropped by a smaller ``count`` or a
narrower ``select``, recorded before its node is touched) or ``stopped``
(dropped, its programs removed; the slot is free). Everything
``up`` decides is written before it acts on nodes, so a controller killed
mid-``up`` resumes with the same members and the barriers it had released.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shoal.errors import StateError, UsageError
from shoal.state import State

SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    name TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    base TEXT NOT NULL,
    document TEXT NOT NULL,
    status TEXT NOT NULL,
    phase TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS app_nodes (
    app TEXT NOT NULL,
    component TEXT NOT NULL,
    node TEXT NOT NULL,
    slot INTEGER NOT NULL,
    state TEXT NOT NULL,
    since REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app, component, node)
);
CREATE TABLE IF NOT EXISTS app_barriers (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    released REAL,
    arrived INTEGER NOT NULL DEFAULT 0,
    needed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app, name)
);
"""


@dataclass(frozen=True)
class AppRecord:
    name: str
    file: str
    base: str
    document: dict[str, Any]
    status: str
    phase: str
    created: float
    updated: float


@dataclass(frozen=True)
class Member:
    component: str
    node: str
    slot: int
    state: str
    since: float
    detail: str = ""


@dataclass(frozen=True)
class BarrierRecord:
    name: str
    released: float | None
    arrived: int
    needed: int


def ensure(state: State) -> None:
    state.ensure("apps", SCHEMA)


def get_app(state: State, name: str) -> AppRecord | None:
    ensure(state)
    row = state.db.execute("SELECT * FROM apps WHERE name=?", (name,)).fetchone()
    if row is None:
        return None
    return AppRecord(
        row["name"],
        row["file"],
        row["base"],
        json.loads(row["document"]),
        row["status"],
        row["phase"],
        row["created"],
        row["updated"],
    )


def require_app(state: State, name: str) -> AppRecord:
    record = get_app(state, name)
    if record is None:
        known = ", ".join(list_apps(state)) or "none"
        raise UsageError(f"no application named {name!r} (known: {known})")
    return record


def list_apps(state: State) -> list[str]:
    ensure(state)
    return [r[0] for r in state.db.execute("SELECT name FROM apps ORDER BY name")]


def save_app(
    state: State, name: str, file: str, base: str, document: dict[str, Any], status: str
) -> None:
    ensure(state)
    now = time.time()
    with state.transaction() as db:
        db.execute(
            "INSERT INTO apps(name, file, base, document, status, phase, created, updated)"
            " VALUES (?,?,?,?,?,'acquire',?,?) ON CONFLICT(name) DO UPDATE SET"
            " file=excluded.file, base=excluded.base, document=excluded.document,"
            " status=excluded.status, updated=excluded.updated",
            (name, file, base, json.dumps(document), status, now, now),
        )


def set_status(
    state: State, name: str, *, status: str | None = None, phase: str | None = None
) -> None:
    ensure(state)
    with state.transaction() as db:
        if status is not None:
            db.execute(
                "UPDATE apps SET status=?, updated=? WHERE name=?", (status, time.time(), name)
            )
        if phase is not None:
            db.execute(
                "UPDATE apps SET phase=?, updated=? WHERE name=?", (phase, time.time(), name)
            )


def members(state: State, app: str, *, active_only: bool = False) -> list[Member]:
    ensure(state)
    query = "SELECT component, node, slot, state, since, detail FROM app_nodes WHERE app=?"
    if active_only:
        query += " AND state='active'"
    rows = state.db.execute(query + " ORDER BY component, slot, since", (app,)).fetchall()
    return [Member(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def set_member(
    state: State,
    app: str,
    component: str,
    node: str,
    slot: int,
    member_state: str,
    detail: str = "",
) -> None:
    ensure(state)
    with state.transaction() as db:
        db.execute(
            "INSERT INTO app_nodes(app, component, node, slot, state, since, detail)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT(app, component, node) DO UPDATE SET"
            " slot=excluded.slot, state=excluded.state, since=excluded.since,"
            " detail=excluded.detail",
            (app, component, node, slot, member_state, time.time(), detail),
        )


def barriers(state: State, app: str) -> dict[str, BarrierRecord]:
    ensure(state)
    rows = state.db.execute(
        "SELECT name, released, arrived, needed FROM app_barriers WHERE app=?", (app,)
    ).fetchall()
    return {r[0]: BarrierRecord(r[0], r[1], r[2], r[3]) for r in rows}


def save_barrier(
    state: State, app: str, name: str, arrived: int, needed: int, released: float | None
) -> None:
    ensure(state)
    with state.transaction() as db:
        db.execute(
            "INSERT INTO app_barriers(app, name, released, arrived, needed) VALUES (?,?,?,?,?)"
            " ON CONFLICT(app, name) DO UPDATE SET released=COALESCE(app_barriers.released,"
            " excluded.released), arrived=excluded.arrived, needed=excluded.needed",
            (app, name, released, arrived, needed),
        )


def delete_app(state: State, name: str) -> None:
    ensure(state)
    with state.transaction() as db:
        db.execute("DELETE FROM app_nodes WHERE app=?", (name,))
        db.execute("DELETE FROM app_barriers WHERE app=?", (name,))
        db.execute("DELETE FROM apps WHERE name=?", (name,))


_held: dict[str, int] = {}  # lock path -> depth held by this process


@contextmanager
def app_lock(state: State, name: str) -> Iterator[bool]:
    """Try to hold application ``name``'s lock (a file lock beside the database): one
    ``up`` pass at a time across processes (the CLI, the service's keeper). Yields
    False at once when another process holds it; re-entrant within a process
    (callers in one process serialise themselves). The kernel drops the lock of a
    killed process."""
    path = str(state.path.parent / f".app-{name}.lock")
    if _held.get(path):
        _held[path] += 1
        try:
            yield True
        finally:
            _held[path] -= 1
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open the lock of app {name} ({path}): {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        _held[path] = 1
        try:
            yield True
        finally:
            del _held[path]
    finally:
        os.close(fd)
