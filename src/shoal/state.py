"""The controller's persistent state: one SQLite file under the state directory.

Each subsystem owns its own tables and declares them with :meth:`State.ensure`
(idempotent ``CREATE ... IF NOT EXISTS`` scripts), so the schema of inventory,
plans, facts, events and deployments lives beside the code that uses it.
Writes go through :meth:`State.transaction` so a killed controller never leaves
half an update behind (SQLite WAL journal, one writer at a time).

A library call that takes ``state: State | None`` uses :func:`opened`: the
caller's state when given, else the default one (``$SHOAL_HOME/state.db``)
opened for the call and closed after it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import StateError
from .paths import state_path


def statements(script: str) -> Iterator[str]:
    """The SQL statements of a script, one at a time (triggers' ``BEGIN ... END`` kept whole)."""
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                yield buf
            buf = ""


class State:
    """An open state database. Cheap to open; close it or use it as a context."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_path()
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state database {self.path}: {exc}") from exc
        self._ensured: set[str] = set()

    def ensure(self, name: str, ddl: str) -> None:
        """Create the tables of subsystem ``name`` if they do not exist yet.

        Statement by statement, never ``executescript`` (which COMMITs an open
        transaction first: inside a caller's transaction that committed its writes
        half-way). Inside a transaction the subsystem is not remembered as created
        (a rollback takes its tables with it); the next call checks again.
        """
        if name in self._ensured:
            return
        try:
            for sql in statements(ddl):
                self.db.execute(sql)
        except sqlite3.Error as exc:
            raise StateError(f"cannot create {name} tables in {self.path}: {exc}") from exc
        if not self.db.in_transaction:
            self._ensured.add(name)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: committed on success, rolled back on any error."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(f"state database {self.path} is busy or broken: {exc}") from exc
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def opened(state: State | None) -> Iterator[State]:
    """The given state, or the default one opened for the duration (and closed after)."""
    if state is not None:
        yield state
        return
    with State() as st:
        yield st
