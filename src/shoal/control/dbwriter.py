"""The service's SQLite writer: one thread with its own connection, so no write blocks the loop.

A write that waits for another process's lock on the database (a CLI in the
middle of a transaction, an operator's ``sqlite3`` shell) would otherwise hold
the service's event loop for up to ``busy_timeout``: no heartbeat read, no
API answered, and the detector would see silence where there is none.
:class:`Writer` takes the writes instead:

* **Jobs** are callables ``fn(state)`` (:meth:`Writer.submit`), run in the
  writer thread in submission order, each handed the writer's own
  :class:`~shoal.state.State` (its ``transaction()`` is a savepoint inside the
  batch, so library functions that take ``state=`` run unchanged). The
  submitter gets a :class:`concurrent.futures.Future` (``asyncio.wrap_future``
  awaits it without blocking the loop).
* **Batches**: every job queued when the thread wakes runs in one
  ``BEGIN IMMEDIATE`` transaction and one commit, each in its own savepoint:
  a job that raises is rolled back alone and its future gets the error.
* **Order**: one thread, FIFO, one transaction at a time: jobs commit in the
  order they were submitted, and the journal's sequence numbers (ids given
  inside the transaction) follow that order.
* **A locked database**: when ``BEGIN IMMEDIATE`` still finds another
  process's lock after ``busy_timeout``, the batch is tried again (nothing
  dropped, order kept) until it commits; a job submitted with ``patience``
  fails instead once that many seconds have passed (the service's start
  uses it, to fail in one line rather than wait forever).
* **Failed commits** (a full disk): SQLite rolls the batch back; every future
  of it gets the one-line :class:`~shoal.errors.StateError`.
* ``on_commit`` is called in the writer thread after each batch that began
  (the journal wakes its readers on the loop with it): after a failed one too,
  a spurious wake costs a reader one query, a missed one left it asleep until
  the next commit or its heartbeat.
* **Slow batches** (over :data:`SLOW_BATCH` seconds from the first attempt,
  waits for another process's lock included) are logged at WARNING with their
  job count, seconds and how much of it was the lock.
* **Tables**: a job's ``state.ensure(...)`` creates them inside the batch
  (:class:`_BatchState`), never with ``executescript``'s implicit COMMIT.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shoal.errors import StateError
from shoal.state import State

T = TypeVar("T")

log = logging.getLogger("shoal.serve.writer")

#: Seconds between attempts while another process holds the lock (after busy_timeout).
RETRY_PAUSE = 0.05
#: A batch slower than this (lock waits included) is logged at WARNING.
SLOW_BATCH = 1.0


class _BatchState(State):
    """The writer's State: ``transaction()`` is a savepoint in the running batch, and
    ``ensure()`` creates tables inside it.

    ``State.ensure`` once ran ``executescript``, which COMMITs the open transaction
    first: inside a batch that committed the jobs before it behind the writer's
    back (no ``on_commit``, so the readers slept until the next commit or the
    stream's heartbeat, 15 s), and the batch then failed as a whole. Here each
    statement runs in the batch and a subsystem counts as created once its batch
    commits (a job rolled back may have rolled its tables back with it).
    """

    _depth = 0
    _fresh: frozenset[str] = frozenset()

    def ensure(self, name: str, ddl: str) -> None:
        if name not in self._ensured:
            super().ensure(name, ddl)  # in the batch's transaction: not remembered there
            self._fresh = self._fresh | {name}

    def settled(self, committed: bool) -> None:
        """The batch ended: the tables it created exist now (committed) or not."""
        if committed:
            self._ensured |= self._fresh
        self._fresh = frozenset()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._depth += 1
        name = f"t{self._depth}"
        self.db.execute(f"SAVEPOINT {name}")
        try:
            yield self.db
        except BaseException:
            self.db.execute(f"ROLLBACK TO {name}")
            self.db.execute(f"RELEASE {name}")
            raise
        else:
            self.db.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1


@dataclass
class _Job:
    fn: Callable[[State], Any]
    future: Future[Any]
    deadline: float | None  # monotonic; None: wait for the lock as long as it takes


def is_locked(exc: BaseException) -> bool:
    """Whether a database error is another process's lock (busy), not a fault."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, sqlite3.OperationalError) and (
            "locked" in str(seen) or "busy" in str(seen)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Writer:
    """One writer thread over the database at ``path`` (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 5.0,
        on_commit: Callable[[], None] | None = None,
        error: Callable[[sqlite3.Error], StateError] | None = None,
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.on_commit = on_commit
        self._error = error or (lambda exc: StateError(f"cannot write {path}: {exc}"))
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._opened: Future[None] = Future()
        self._closing = False
        #: commits made, and batches retried because another process held the lock
        self.commits = 0
        self.lock_waits = 0
        self._locked_since: float | None = None  # monotonic: the first locked attempt
        self._thread = threading.Thread(target=self._main, name="shoal-db-writer", daemon=True)
        self._thread.start()
        self._opened.result()  # the connection's failure is the caller's, at once

    def submit(self, fn: Callable[[State], T], *, patience: float | None = None) -> Future[T]:
        """Queue ``fn(state)``; its future. ``patience``: seconds it may wait for a lock."""
        future: Future[T] = Future()
        if self._closing:
            future.set_exception(StateError(f"{self.path}: the service's writer has stopped"))
            return future
        deadline = None if patience is None else time.monotonic() + patience
        self._queue.put(_Job(fn, future, deadline))
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds), then stop the thread."""
        if self._closing:
            return
        self._closing = True
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("writes still waiting for the database lock after %gs: dropped", timeout)

    # -- the thread ----------------------------------------------------------------

    def _main(self) -> None:
        try:
            state = _BatchState(self.path)
            state.db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        except (StateError, sqlite3.Error) as exc:
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)
        try:
            pending: list[_Job] = []
            stopping = False
            while pending or not stopping:
                if not pending:
                    item = self._queue.get()
                    if item is None:
                        break
                    pending.append(item)
                while True:  # everything queued joins the batch
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                    else:
                        pending.append(item)
                pending = self._batch(state, pending)
                if pending:
                    time.sleep(RETRY_PAUSE)
        finally:
            for job in pending:
                if not job.future.done():
                    job.future.set_exception(StateError(f"{self.path}: the service stopped"))
            state.close()

    def _batch(self, state: _BatchState, jobs: list[_Job]) -> list[_Job]:
        """Run ``jobs`` in one transaction; the jobs left to retry (the database was locked)."""
        db = state.db
        since = time.monotonic() if self._locked_since is None else self._locked_since
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if not is_locked(exc):
                self._fail(jobs, exc)
                self._locked_since = None
                return []
            self.lock_waits += 1
            now = time.monotonic()
            expired = [j for j in jobs if j.deadline is not None and j.deadline <= now]
            self._fail(expired, exc)
            left = [j for j in jobs if j not in expired]
            self._locked_since = since if left else None
            return left
        self._locked_since = None
        locked = time.monotonic() - since  # waiting for another process's lock
        results: list[tuple[_Job, bool, Any]] = []
        committed = False
        try:
            for job in jobs:
                try:
                    with state.transaction():
                        value = job.fn(state)
                    results.append((job, True, value))
                except Exception as exc:  # this job alone is rolled back
                    results.append((job, False, exc))
            db.execute("COMMIT")
            committed = True
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            self._fail(jobs, exc)
        finally:
            state.settled(committed)
            self._woken()  # even a failed batch: readers look again rather than miss a row
        took = time.monotonic() - since
        if took > SLOW_BATCH:
            log.warning(
                "a write batch of %d job(s) took %.1fs (%.1fs of it waiting for another"
                " process's lock on the database)%s",
                len(jobs), took, locked, "" if committed else ", and failed",
            )  # fmt: skip
        if not committed:
            return []
        self.commits += 1
        for job, ok, value in results:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(
                    self._error(value) if isinstance(value, sqlite3.Error) else value
                )
        return []

    def _woken(self) -> None:
        if self.on_commit is not None:
            try:
                self.on_commit()
            except Exception:  # a closed loop at shutdown: nobody left to wake
                log.debug("on_commit failed", exc_info=True)

    def _fail(self, jobs: list[_Job], exc: sqlite3.Error) -> None:
        error = self._error(exc)
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)
