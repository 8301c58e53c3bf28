"""One reconcile round of a running application, for ``app monitor`` and the keeper.

A round (:func:`reconcile_async`) reads the application's status from its
agents (unreachable members join the failed set), restarts services that
gave up (FATAL) or stopped once their cool-down has passed (:class:`Backoff`,
:class:`RestartBook`: per program, 30 s doubling to 10 min by default, back
to the first delay after a healthy period), and converges with
:func:`.lifecycle.up_async` when a member is unreachable, a service is
missing, or the stored spec asks for other members than the running ones —
a smaller ``count``, a narrower ``select``, a spare that can now fill a
short component (:func:`drifted`, from stored facts, no node contacted).
``up_async`` applies the failure policies (:mod:`.policy`), replaces lost
members from spares and stops dropped ones (:mod:`.shrink`); every decision
is in SQLite before a node changes. The :class:`Round` says what was done;
adapters turn it into journal events and output. Each decision is also logged
on ``shoal.app.reconcile`` (restarts, convergence and shortfalls at INFO,
cool-downs at DEBUG). Nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shoal.agentlink import fleet as agents
from shoal.errors import AcquireError
from shoal.logsetup import logger
from shoal.nodes import health
from shoal.nodes.facts import load_facts
from shoal.nodes.health import failed_names
from shoal.state import State

from . import store
from .acquire import acquire
from .appspec import AppSpec
from .carryover import carry_over
from .lifecycle import AppStatus, member_nodes, spec_of, status_async, up_async
from .naming import step_id
from .runtime import UpOptions, UpReport

log = logger(__name__)

#: program states a round restarts (the agent gave up, or the program is not running)
DEAD = ("FATAL", "STOPPED", "EXITED")


@dataclass(frozen=True)
class Backoff:
    """Cool-down before the controller restarts a program the agent gave up on."""

    first: float = 30.0
    factor: float = 2.0
    limit: float = 600.0
    #: RUNNING this long after a restart: the next failure waits ``first`` again
    reset_after: float = 300.0

    def delay(self, restarts: int) -> float:
        """Seconds to wait before restart number ``restarts + 1``."""
        return float(min(self.limit, self.first * self.factor ** max(0, restarts)))


@dataclass
class _Track:
    restarts: int = 0
    due: float | None = None  # when the pending restart may happen
    last: float | None = None  # when it was last restarted


class RestartBook:
    """Restarts per program (``(node, program)``): pure, the clock is passed in."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self.tracks: dict[tuple[str, str], _Track] = {}

    def dead(self, key: tuple[str, str], now: float) -> float:
        """``key`` is seen dead at ``now``: when it may be restarted."""
        track = self.tracks.setdefault(key, _Track())
        if track.due is None:
            track.due = now + self.backoff.delay(track.restarts)
        return track.due

    def restarted(self, key: tuple[str, str], now: float) -> None:
        track = self.tracks.setdefault(key, _Track())
        track.restarts += 1
        track.due = None
        track.last = now

    def running(self, key: tuple[str, str], now: float) -> None:
        """``key`` is seen RUNNING: a pending restart is off; a long healthy run resets."""
        track = self.tracks.get(key)
        if track is None:
            return
        track.due = None
        if track.last is not None and now - track.last >= self.backoff.reset_after:
            del self.tracks[key]


@dataclass
class Round:
    """What one reconcile round found and did."""

    app: str
    problems: list[str] = field(default_factory=list)
    #: (node, program) restarted this round
    restarted: list[tuple[str, str]] = field(default_factory=list)
    #: (node, program, seconds left) waiting for their cool-down
    cooling: list[tuple[str, str, float]] = field(default_factory=list)
    #: why the round converged ("" when it did not)
    converged: str = ""
    up: UpReport | None = None
    #: the component that cannot get its count, and why
    shortfall: str = ""
    healthy: bool = False
    #: another process held the application: nothing was checked
    busy: bool = False


def drifted(name: str, state: State) -> str:
    """Why the stored spec asks for other members than the active ones ("" if not),
    from the inventory and stored facts (no node contacted)."""
    spec = spec_of(store.require_app(state, name))
    members = store.members(state, name)
    if any(m.state == "stopping" for m in members):
        return "members left to stop"
    carried = carry_over(spec, members, failed_names(state))
    if carried.abort is not None or carried.dead:
        return "members in the failed set"
    known = {n: dict(r.facts) for n, r in load_facts(state=state).items()}
    try:
        alloc = acquire(spec, state, keep=carried.keep, hold=carried.hold, facts=known)
    except AcquireError:
        return ""  # up would refuse too; the app runs as it is
    active = {(m.component, m.node) for m in members if m.state == "active"}
    wanted = {(c, n.name) for c, ns in alloc.members.items() for n in ns}
    if active - wanted:
        return "members no longer wanted"
    if wanted - active:
        return "members to add"
    return ""


async def reconcile_async(
    name: str,
    options: UpOptions,
    book: RestartBook,
    *,
    state: State,
    now: Callable[[], float] = time.monotonic,
) -> Round:
    """One round for application ``name`` (see the module docstring); skipped
    (``busy``) while another process holds the application (an ``up`` running)."""
    out = Round(name)
    with store.app_lock(state, name) as mine:
        if not mine:
            out.busy = True
            return out
        await _round(out, options, book, state, now)
    return out


async def _round(
    out: Round, options: UpOptions, book: RestartBook, state: State, now: Callable[[], float]
) -> None:
    name = out.app
    current = await status_async(name, options.agent, state=state, transport=options.transport)
    for n in current.nodes:
        if n.state != "active":
            continue
        if not n.reachable:
            out.problems.append(f"{n.node}: {n.detail or 'unreachable'}")
            continue
        for p in n.programs:
            key = (n.node, str(p["name"]))
            if p["state"] == "RUNNING":
                book.running(key, now())
            elif p["state"] in DEAD:
                out.problems.append(f"{n.node}: {p['name']} {p['state']}")
                due = book.dead(key, now())
                if due > now():
                    out.cooling.append((*key, due - now()))
                    log.debug("app %s: %s on %s %s, restart in %.0fs", name, key[1], n.node,
                              p["state"], due - now())  # fmt: skip
                    continue
                log.info("app %s: restarting %s on %s (%s)", name, key[1], n.node, p["state"])
                await _restart(n.node, key[1], options, state)
                book.restarted(key, now())
                out.restarted.append(key)
    spec = spec_of(store.require_app(state, name))
    unreachable = any(n.state == "active" and not n.reachable for n in current.nodes)
    missing = _missing(spec, current)
    out.problems.extend(f"{node}: {prog} missing" for node, prog in missing)
    out.converged = (
        "members unreachable"
        if unreachable
        else "services missing"
        if missing
        else drifted(name, state)
    )
    if out.converged:
        log.info("app %s: converging (%s)", name, out.converged)
        try:
            out.up = await up_async(spec, options, state=state)
        except AcquireError as exc:
            out.shortfall = str(exc)
        else:
            out.shortfall = "; ".join(out.up.shortfalls)
            for comp, old, new in out.up.replaced:
                log.info("app %s: %s: %s replaces %s", name, comp, new, old)
            for comp, node, slot in out.up.stopped:
                log.info("app %s: %s: %s stopped (slot %s dropped)", name, comp, node, slot)
        if out.shortfall:
            log.info("app %s: shortfall: %s", name, out.shortfall)
    out.healthy = current.healthy and not out.converged and not out.restarted


def _missing(spec: AppSpec, current: AppStatus) -> list[tuple[str, str]]:
    """(node, program) of services a reachable active member should run and does not."""
    out = []
    for n in current.nodes:
        if n.state != "active" or not n.reachable:
            continue
        have = {p["name"] for p in n.programs}
        comp = spec.components.get(n.component)
        for step in comp.steps if comp is not None else ():
            prog = step_id(spec.name, n.component, step.name)
            if step.kind == "service" and prog not in have:
                out.append((n.node, prog))
    return out


async def _restart(node: str, program: str, options: UpOptions, state: State) -> None:
    restarted = await agents.call_async(
        member_nodes(state, [node]),
        "proc.restart",
        {"name": program},
        options.agent,
        state=state,
        transport=options.transport,
    )
    health.record(restarted, health.Policy.REACHABILITY, state=state)
