"""Named periodic jobs for the standing controller, their phase kept in SQLite.

A job is an async callable run every ``interval`` seconds (start to start, with
up to ``jitter`` of the interval added at random so that many services, or
many jobs, do not fire together). Its next run time is written to the
``schedules`` table *before* the job runs (through the journal's writer: a
locked database delays the job, not the event loop), so a service killed and started
again keeps each job's phase instead of running everything at start-up (a run
that came due while the service was down runs once, at start). One job runs
at a time per name; a job that raises is recorded (``last_error``) and
journaled as a ``schedule`` event, and never stops the scheduler. The sweep
is the first job; later features (daily audit, log collection) register too.

Tables (owned here)::

    schedules(name PK, interval, next_run, last_start, last_end, last_status, last_error)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from shoal.state import State

from .journal import Journal, ServiceEvent

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    interval REAL NOT NULL,
    next_run REAL NOT NULL,
    last_start REAL,
    last_end REAL,
    last_status TEXT,
    last_error TEXT
);
"""

#: A job: returns a one-line summary (or None) of what it did.
JobFn = Callable[[], Awaitable[str | None]]


@dataclass
class Job:
    name: str
    interval: float
    fn: JobFn
    jitter: float = 0.1  # fraction of the interval
    next_run: float = 0.0
    running: asyncio.Task[None] | None = None


class Scheduler:
    """Runs registered jobs on time until stopped; persists each one's next run."""

    def __init__(self, state: State, journal: Journal, *, rng: random.Random | None = None) -> None:
        self.state = state
        self.journal = journal
        self.jobs: dict[str, Job] = {}
        self._rng = rng or random.Random()
        self._changed = asyncio.Event()
        #: The last failure to persist a job's phase (the job was not run), or None.
        self.problem: str | None = None
        state.ensure("schedules", SCHEMA)

    def register(self, name: str, interval: float, fn: JobFn, *, jitter: float = 0.1) -> Job:
        """Add a job (``interval`` > 0). A job known from an earlier run keeps its phase."""
        if interval <= 0:
            raise ValueError(f"job {name}: interval must be positive, not {interval}")
        job = Job(name, interval, fn, jitter)
        row = self.state.db.execute(
            "SELECT interval, next_run FROM schedules WHERE name=?", (name,)
        ).fetchone()
        if row is not None and float(row[0]) == interval:
            job.next_run = float(row[1])
        else:  # new, or its interval changed: first run one (jittered) interval from now
            job.next_run = self._next(job, time.time())
            self._save(job, patience=0).result()  # at start: one try, a lock fails it
        self.jobs[name] = job
        self._changed.set()
        return job

    def _next(self, job: Job, start: float) -> float:
        return start + job.interval * (1 + job.jitter * self._rng.random())

    def _save(self, job: Job, patience: float | None = None, **last: Any) -> Future[None]:
        """Write the job's row (through the journal's writer, in its order)."""
        cols = ", ".join(f"{k}=excluded.{k}" for k in ("interval", "next_run", *last))
        names = ["name", "interval", "next_run", *last]
        values = [job.name, job.interval, job.next_run, *last.values()]

        def write(st: State) -> None:
            with st.transaction() as db:
                db.execute(
                    f"INSERT INTO schedules({', '.join(names)}) VALUES"
                    f" ({', '.join('?' * len(names))}) ON CONFLICT(name) DO UPDATE SET {cols}",
                    values,
                )

        return self.journal.submit(write, patience=patience)

    def status(self) -> list[dict[str, Any]]:
        """Every registered job: interval, next run, the last run's outcome."""
        out = []
        for name, job in sorted(self.jobs.items()):
            r = self.state.db.execute(
                "SELECT last_start, last_end, last_status, last_error FROM schedules WHERE name=?",
                (name,),
            ).fetchone()
            out.append(
                {
                    "name": name,
                    "interval": job.interval,
                    "next_run": job.next_run,
                    "running": job.running is not None,
                    "last_start": r[0] if r else None,
                    "last_end": r[1] if r else None,
                    "last_status": r[2] if r else None,
                    "last_error": r[3] if r else None,
                }
            )
        return out

    async def run(self, stop: asyncio.Event) -> None:
        """Start each job when due until ``stop``; then wait for the running ones."""
        try:
            while not stop.is_set():
                now = time.time()
                for job in self.jobs.values():
                    if job.running is None and job.next_run <= now:
                        self._start(job, now)
                due = [j.next_run for j in self.jobs.values() if j.running is None]
                wait = max(0.0, min(due, default=now + 3600) - time.time())
                self._changed.clear()
                waiters = [asyncio.ensure_future(e.wait()) for e in (stop, self._changed)]
                try:
                    await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
        finally:
            running = [j.running for j in self.jobs.values() if j.running is not None]
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _start(self, job: Job, now: float) -> None:
        job.next_run = self._next(job, now)
        saved = self._save(job, last_start=now)  # the phase is on disk before the job acts
        job.running = asyncio.create_task(self._run_one(job, now, saved), name=f"job {job.name}")

    async def _run_one(self, job: Job, now: float, saved: Future[None]) -> None:
        try:
            await asyncio.wrap_future(saved)
        except Exception as exc:
            job.next_run = now + job.interval  # cannot persist: retry later, do not act
            self.problem = f"job {job.name} not run: {exc}"
            job.running = None
            self._changed.set()
            return
        self.problem = None
        status, error = "ok", None
        try:
            summary = await job.fn()
            status = summary or "ok"
        except asyncio.CancelledError:
            status, error = "cancelled", "the service stopped"
            raise
        except Exception as exc:
            status, error = "failed", str(exc) or type(exc).__name__
            with contextlib.suppress(Exception):
                self.journal.record(
                    ServiceEvent("schedule", "job failed", detail=f"{job.name}: {error}")
                )
        finally:
            job.running = None
            with contextlib.suppress(Exception):
                self._save(job, last_end=time.time(), last_status=status, last_error=error)
            self._changed.set()
