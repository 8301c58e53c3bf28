"""The standing controller: one object that owns what ``shoal serve`` keeps running.

:class:`Controller` holds the SQLite :class:`~shoal.state.State`, the event
:class:`~.journal.Journal`, the :class:`~.schedule.Scheduler` and two slots
and its two parts: ``links`` (warm SSH connections, heartbeats:
:mod:`.links`) and ``keeper`` (applications kept up: :mod:`.keeper`), each
made by its module's ``component(controller)``, links first (the keeper
borrows their warm :class:`~shoal.transport.base.Transport`, which the sweep
uses too). Each has ``async run(stop)`` and ``status() -> dict``.

Everything the service decides is written to SQLite before it acts (the
journal, the schedules' next runs, the plug-ins' own tables), so a killed
service started again resumes. The journal's and the schedules' writes go to
one writer thread (:mod:`.dbwriter`), so a database locked by another process
delays them, not the event loop; so do the failed set's updates of the routes
and the sweep (:meth:`Controller.record_health`). The library prints nothing: the adapter
(:mod:`shoal.service.servedaemon`) drives :meth:`Controller.run` and renders.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.errors import EmptySelectionError, ShoalError, StateError
from shoal.nodes import health
from shoal.state import State

from . import keeper, links
from .dbwriter import Writer
from .journal import Journal, ServiceEvent, db_error
from .schedule import Scheduler


@dataclass(frozen=True)
class ServiceConfig:
    """How one service runs (``shoal serve`` options; typed, never a dict)."""

    state_dir: Path
    #: selection expression of the managed nodes (None: all nodes)
    select: str | None = None
    #: heartbeat interval over the held channels, seconds
    beat_interval: float = 1.0
    #: seconds between sweeps, start to start (0: no sweep)
    sweep_interval: float = 300.0
    #: new SSH connections per second while attaching
    attach_rate: float = 50.0
    #: events kept: at most this many (0: no limit) ...
    keep_events: int = 1_000_000
    #: ... and none stored longer ago than this, seconds (0: no limit)
    keep_seconds: float = 30 * 86400.0
    #: seconds between retention passes
    prune_interval: float = 3600.0
    #: seconds between central log collections (0: none; see shoal.ops.logcollect)
    logs_interval: float = 600.0
    #: bytes the central log store keeps after each collection (0: no size limit; files
    #: not yet acked are never pruned: see shoal.ops.logcollect)
    logs_max_bytes: int = 0
    #: seconds between audits of the pushed directories (0: none; see shoal.ops.audit)
    audit_interval: float = 86400.0
    #: how long a write waits for another process's lock on the database
    busy_timeout: float = 5.0
    #: seconds between heartbeat lines on an idle event stream
    stream_heartbeat: float = 15.0

    @property
    def database(self) -> Path:
        return self.state_dir / "state.db"


def _open(path: Path) -> State:
    """The state database; a failure on a full disk says so (SQLite says "disk I/O error")."""
    try:
        return State(path)
    except StateError as exc:
        try:
            full = os.statvfs(path.parent).f_bavail == 0
        except OSError:
            full = False
        if not full:
            raise
        raise StateError(
            f"cannot open the state database {path}: the disk holding it is full"
        ) from exc


class Controller:
    """The service's machinery over one state directory (see the module docstring)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.state = _open(config.database)
        self.started = time.time()
        self.writer: Writer | None = None
        try:
            self.state.db.execute(f"PRAGMA busy_timeout={int(config.busy_timeout * 1000)}")
            self.journal = Journal(
                self.state, keep_age=config.keep_seconds, keep_count=config.keep_events
            )
            self.writer = Writer(
                config.database,
                busy_timeout=config.busy_timeout,
                on_commit=self.journal.committed,
                error=lambda exc: db_error(self.state, exc),
            )
            self.journal.writer = self.writer
            self.scheduler = Scheduler(self.state, self.journal)
        except BaseException:
            self.close()
            raise
        #: set when the controller is asked to stop (by run's caller)
        self.stop = asyncio.Event()
        #: held by a log collection (the ``logs`` job, ``POST /logs/collect``): one at a
        #: time, so two never read the same offsets
        self.logs_lock = asyncio.Lock()
        self._started = False
        #: why the stop could not be journaled, when it could not
        self.stop_problem: str | None = None
        self.links = links.component(self)
        self.keeper = keeper.component(self)

    @property
    def transport(self) -> links.WarmTransport:
        """The warm transport of the links: every library call the service makes uses it."""
        return self.links.transport

    def managed(self) -> list[Any]:
        """The managed nodes (the configured selection, resolved now)."""
        from shoal.nodes.select import resolve

        return resolve(self.config.select, state=self.state)

    def start(self) -> None:
        """Journal the start, prune, register the schedules (once; ``run`` calls it too).

        Raises StateError when the start cannot be recorded (disk full, database
        locked): nothing is started then.
        """
        if self._started:
            return
        started = ServiceEvent("service", "started", detail=f"pid {os.getpid()}")
        self.journal.record(started, patience=0).result()  # one try: a locked db says so
        self._started = True
        self.journal.prune()
        if self.config.sweep_interval > 0:
            self.scheduler.register("sweep", self.config.sweep_interval, self.sweep)
        self.scheduler.register("retention", self.config.prune_interval, self._prune)
        if self.config.logs_interval > 0:
            self.scheduler.register("logs", self.config.logs_interval, self.collect_logs)
        if self.config.audit_interval > 0:
            self.scheduler.register("audit", self.config.audit_interval, self.audit)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set: schedules and plug-ins, then the stop journaled.

        A stop that cannot be journaled (disk full) still stops; the reason is
        left in :attr:`stop_problem` for the adapter to report.
        """
        self.stop = stop
        self.start()
        parts = [self.scheduler.run(stop)]
        parts += [self.links.run(stop), self.keeper.run(stop)]
        tasks = [asyncio.create_task(p) for p in parts]
        try:
            await stop.wait()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopped = ServiceEvent("service", "stopped", detail=f"pid {os.getpid()}")
            try:
                wrote = self.journal.record(stopped, patience=self.config.busy_timeout)
                await asyncio.wrap_future(wrote)
            except ShoalError as exc:
                self.stop_problem = str(exc)

    async def record_health(self, results: Iterable[Any], policy: health.Policy) -> None:
        """The failed set updated from one fan-out's outcomes (:func:`health.record`),
        written by the writer thread: the loop never waits for SQLite's lock."""
        outcomes = list(results)
        await asyncio.wrap_future(
            self.journal.submit(lambda st: health.record(outcomes, policy, state=st))
        )

    async def sweep_nodes(self, nodes: Sequence[Any]) -> list[Any]:
        """One sweep of ``nodes`` over the warm transport, the failed set updated (through
        the writer); its entries."""
        from shoal.ops.sweep import sweep_async

        outcomes: list[Any] = []
        found = await sweep_async(
            nodes, transport=self.transport, state=self.state, on_result=outcomes.append
        )
        await self.record_health(outcomes, health.Policy.REACHABILITY)
        return found

    async def sweep(self) -> str:
        """One sweep of the managed nodes (the ``sweep`` job); its summary, journaled."""
        try:
            nodes = self.managed()
        except EmptySelectionError:
            return "no nodes"
        found = await self.sweep_nodes(nodes)
        tally = Counter(e.status for e in found)
        summary = ", ".join(f"{n} {s}" for s, n in sorted(tally.items()))
        events = [
            ServiceEvent("sweep", e.status, node=e.node, detail=e.detail)
            for e in found
            if e.status != "ok"
        ]
        await asyncio.wrap_future(
            self.journal.record_many([*events, ServiceEvent("sweep", "swept", detail=summary)])
        )
        return summary

    async def collect_logs(self) -> str:
        """Collect the managed nodes' logs into the store (the ``logs`` job), off the loop."""
        from shoal.ops.logcollect import collect_scheduled

        try:
            nodes = self.managed()
        except EmptySelectionError:
            return "no nodes"
        database, age = self.config.database, self.config.keep_seconds or None
        budget = self.config.logs_max_bytes or None
        async with self.logs_lock:
            return await asyncio.to_thread(
                collect_scheduled, nodes, database, max_age=age, max_bytes=budget
            )

    async def audit(self) -> str:
        """Audit the managed nodes' pushed directories (the ``audit`` job), off the loop."""
        from shoal.ops.audit import audit_scheduled

        try:
            nodes = self.managed()
        except EmptySelectionError:
            return "no nodes"
        return await asyncio.to_thread(audit_scheduled, nodes, self.config.database)

    async def _prune(self) -> str:
        pruned: int = await asyncio.wrap_future(self.journal.prune())
        return f"{pruned} event(s) pruned"

    def status(self) -> dict[str, Any]:
        """What ``GET /api/v1/status`` reports (the adapter adds pid, version, protocol)."""
        return {
            "state_dir": str(self.config.state_dir),
            "uptime": time.time() - self.started,
            "nodes": self.links.status(),
            "apps": self.keeper.status(),
            "schedules": self.scheduler.status(),
            "events": {"last": self.journal.last, "pruned_through": self.journal.pruned_through},
            "problem": self.scheduler.problem,
        }

    def close(self) -> None:
        """Write what is queued (bounded by the busy timeout), then close the database."""
        if self.writer is not None:
            self.writer.close(timeout=max(1.0, 2 * self.config.busy_timeout))
        self.state.close()
