"""The keeper: every application the store says is up, kept up with nobody watching.

:class:`Keeper` runs one reconcile round (:func:`shoal.app.reconcile.reconcile_async`)
for every application SQLite records as ``running`` or ``starting`` — brought
up by ``shoal app up`` from the CLI or the API, or left half-way by a service
that was killed: the store is the list, so a restarted service keeps exactly
what it kept before and finishes what it was doing (every decision of a round
is written before a node changes; ``up`` converges). Rounds run every
``interval`` seconds and at once when the journal records that a member's node
went down or its agent was lost, or that a program of a member gave up
(woken by :meth:`~shoal.control.journal.Journal.wait`, no polling).

A round replaces lost members from spares that meet the requirements, keeps
``count``, restarts FATAL programs after their cool-down, applies each
component's failure policy and stops dropped members; each action is one
journal event (topic ``app``: ``member_replaced``, ``program_restarted``,
``member_stopped``, ``app_converged``, ``app_shortfall``) and one line for
the service's log (``say``, and INFO on ``shoal.control.keeper``). One round per
application at a time; another process's ``up`` of it (the application's lock)
makes the round skip it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.agentlink.eventlog import EventRow
from shoal.agentlink.fleet import AgentOptions
from shoal.app import store
from shoal.app.appspec import AppSpec
from shoal.app.lifecycle import DownReport, down_async, up_async
from shoal.app.reconcile import Backoff, RestartBook, Round, reconcile_async
from shoal.app.runtime import UpOptions, UpReport
from shoal.errors import ShoalError
from shoal.logsetup import logger
from shoal.state import State
from shoal.transport.base import Transport

from .journal import Journal, ServiceEvent

log = logger(__name__)

#: statuses of applications the keeper keeps
KEPT = ("running", "starting")
#: journal kinds that start a round at once when they concern a member's node
WAKE_KINDS = frozenset({"down", "node_down", "agent_lost", "suspect", "FATAL", "fatal"})


@dataclass(frozen=True)
class KeeperConfig:
    """How the keeper keeps applications (``shoal serve`` options)."""

    #: seconds between rounds when nothing happens
    interval: float = 10.0
    #: cool-down before a program the agent gave up on is restarted
    backoff: Backoff = field(default_factory=Backoff)
    #: SSH connect timeout of a round (a dead member is found this quickly)
    connect_timeout: float = 5.0


class Keeper:
    """The reconcile loop of every kept application (see the module docstring)."""

    def __init__(
        self,
        state: State,
        journal: Journal,
        config: KeeperConfig | None = None,
        *,
        transport: Callable[[], Transport | None] | None = None,
        say: Callable[[str], None] | None = None,
        checkpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.state = state
        self.journal = journal
        self.config = config or KeeperConfig()
        self._transport = transport or (lambda: None)
        self.say = say
        self.checkpoint = checkpoint
        self.books: dict[str, RestartBook] = {}
        self.shortfalls: dict[str, str] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.lines: deque[str] = deque(maxlen=50)
        self._locks: dict[str, asyncio.Lock] = {}
        self._nudge = asyncio.Event()
        self.rounds = 0

    # -- the loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` is set: every ``interval`` and when woken."""
        after = self.journal.last
        while not stop.is_set():
            await self.sweep()
            deadline = time.monotonic() + self.config.interval
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or self._nudge.is_set():
                    break
                await _first(stop.wait(), self._nudge.wait(), self.journal.wait(after, left))
                page = self.journal.read(after)
                after = page.last
                if any(self._wakes(e) for e in page.events):
                    break
            self._nudge.clear()

    def nudge(self) -> None:
        """Start a round now (the API's ``POST /api/v1/sweep``, an ``up`` through it)."""
        self._nudge.set()

    def _wakes(self, event: EventRow) -> bool:
        if event.topic == "app" or event.kind not in WAKE_KINDS or event.node is None:
            return False
        return any(
            m.node == event.node and m.state == "active"
            for name in self.kept()
            for m in store.members(self.state, name)
        )

    def kept(self) -> list[str]:
        """The applications the store says are up."""
        names = store.list_apps(self.state)
        return [
            n for n in names if (r := store.get_app(self.state, n)) is not None and r.status in KEPT
        ]

    async def sweep(self) -> list[Round]:
        """One round over every kept application, now (one failing does not stop the rest)."""
        self.rounds += 1
        out = []
        for name in self.kept():
            try:
                out.append(await self.keep(name))
            except ShoalError as exc:
                self.note(f"app {name}: round failed: {exc.located()}")
                self.last[name] = {"error": str(exc), "at": time.time()}
        return out

    async def keep(self, name: str) -> Round:
        """One round of application ``name``; its actions journaled."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            book = self.books.setdefault(name, RestartBook(self.config.backoff))
            done = await reconcile_async(name, self.options(), book, state=self.state)
        self._journal(done)
        return done

    async def up(self, spec: AppSpec, say: Callable[[str], None] | None = None) -> UpReport:
        """``up`` of ``spec`` (new or changed) in the keeper's turn for it; kept after."""
        async with self._locks.setdefault(spec.name, asyncio.Lock()):
            opts = self.options()
            if say is not None:
                tell = say

                def both(text: str) -> None:
                    self.note(text)
                    tell(text)

                opts = dataclasses.replace(opts, say=both)
            report = await up_async(spec, opts, state=self.state)
        self.books.pop(spec.name, None)
        self.nudge()
        return report

    def up_failed(self, name: str, exc: BaseException) -> None:
        """A detached ``up`` (the API's) failed: journaled and logged."""
        text = exc.located() if isinstance(exc, ShoalError) else f"{type(exc).__name__}: {exc}"
        self.note(f"app {name}: up failed: {text}")
        self.journal.record(ServiceEvent("app", "app_up_failed", detail=f"{name}: {text}"))

    async def down(self, name: str) -> DownReport:
        """``down`` of application ``name`` in the keeper's turn for it (no longer kept)."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            report = await down_async(name, options=self.options().agent, state=self.state)
        self.books.pop(name, None)
        self.last.pop(name, None)
        self.shortfalls.pop(name, None)
        return report

    def options(self) -> UpOptions:
        agent = AgentOptions(connect_timeout=self.config.connect_timeout)
        return UpOptions(
            agent=agent, transport=self._transport(), say=self.note, checkpoint=self.checkpoint
        )

    # -- what it did -----------------------------------------------------------------

    def _journal(self, done: Round) -> None:
        app = done.app
        events = [
            ServiceEvent("app", "program_restarted", node, f"{app}: restarted", program)
            for node, program in done.restarted
        ]
        if done.up is not None:
            events += [
                ServiceEvent("app", "member_replaced", new, f"{app}: {comp}: {new} replaces {old}")
                for comp, old, new in done.up.replaced
            ]
            events += [
                ServiceEvent("app", "member_stopped", node, f"{app}: {comp}: slot {slot} dropped")
                for comp, node, slot in done.up.stopped
            ]
        if done.shortfall and self.shortfalls.get(app) != done.shortfall:
            events.append(ServiceEvent("app", "app_shortfall", detail=done.shortfall))
        self.shortfalls[app] = done.shortfall
        if done.up is not None and not done.shortfall:
            events.append(ServiceEvent("app", "app_converged", detail=f"{app}: {done.converged}"))
        for e in events:
            self.note(f"{e.kind} {e.node or ''} {e.program or ''} {e.detail}".replace("  ", " "))
        if events:
            self.journal.record_many(events)
        self.last[app] = {
            "at": time.time(),
            "healthy": done.healthy,
            "busy": done.busy,
            "problems": done.problems,
            "cooling": [{"node": n, "program": p, "left": round(s, 1)} for n, p, s in done.cooling],
            "shortfall": done.shortfall,
        }

    def note(self, text: str) -> None:
        """One line for the service's log (kept for the status too)."""
        log.info("%s", text)
        self.lines.append(text)
        if self.say is not None:
            self.say(text)

    def status(self) -> dict[str, Any]:
        """Per kept application, what its last round found (the service's status)."""
        return {"rounds": self.rounds, "apps": dict(self.last), "lines": list(self.lines)}


async def _first(*waits: Any) -> None:
    """Until the first of ``waits`` finishes (the others are cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def component(controller: Any) -> Keeper:
    """The controller's keeper slot (see :mod:`shoal.control.controller`)."""
    return Keeper(
        controller.state,
        controller.journal,
        getattr(controller.config, "keeper", None) or KeeperConfig(),
        transport=lambda: controller.transport,
    )
