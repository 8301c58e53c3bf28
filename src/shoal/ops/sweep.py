"""The sweep: check every node's agent, revive the dead ones, keep the failed set true.

CoDeeN ran one centrally every five minutes: a monitor on each node restarts
dead processes, and the sweep restarts the monitor wherever it died. Here, for
each selected node, over SSH:

* unreachable → ``failed`` (joins the failed set with the reason);
* the agent answers → ``ok`` (its new events are pulled into the state);
* no agent answers but one is installed → start it; its programs come back
  from its persisted desired state → ``revived``;
* no agent installed → ``no agent`` (``shoal agent install`` puts one there);
* an agent of another protocol version → ``skew``;
* anything else → ``error``.

With ``record=True`` (the CLI's ``shoal sweep``) the failed set is updated
from the sweep (``Policy.REACHABILITY`` of :mod:`shoal.nodes.health`):
unreachable nodes join it, every node that answered SSH leaves it; without
it nothing is recorded. :func:`sweep_async` returns one :class:`SweepEntry`
per node; nothing is printed.

:func:`sweep_every` is the standing schedule: a sweep every ``interval``
seconds, measured start to start (a sweep that overran starts the next one at
once), the selection resolved again before each round (the failed set it reads
is what the last round wrote), until ``rounds`` are done or ``stop`` is set.
It yields one :class:`SweepRound` per sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shoal.agentlink import eventlog
from shoal.agentlink.agentclient import AgentClient, probe, remember, start_agent
from shoal.agentlink.fleet import AgentOptions, AgentOutcome, for_each
from shoal.errors import AgentNotRunning, VersionMismatch
from shoal.fanout.results import NodeOutcome, Results
from shoal.nodes import health
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport.base import Connection, Transport


@dataclass(frozen=True)
class SweepEntry:
    """What the sweep found and did on one node."""

    node: str
    status: str  # ok | revived | failed | no agent | skew | error
    detail: str


async def _check(conn: Connection, node: Node, st: State, opts: AgentOptions) -> AgentOutcome:
    found = await probe(conn, opts.home)
    if found is None or found.build is None:
        return NodeOutcome(node.name, action="no agent", value=f"nothing installed in {opts.home}")
    remember(st, node.name, opts.home, found.home)
    revived = False
    try:
        client = await AgentClient.open(conn, found.home, opts.python)
    except AgentNotRunning:
        await start_agent(conn, found.home, opts.python)
        revived = True
        client = await AgentClient.open(conn, found.home, opts.python)
    try:
        try:
            status: dict[str, Any] = await client.call("status", timeout=opts.call_timeout)
        except VersionMismatch as exc:
            return NodeOutcome(node.name, action="skew", value=str(exc))
        remember(st, node.name, opts.home, found.home, status)
        added = await eventlog.pull(client, st)
    finally:
        await client.close()
    programs = status.get("programs", [])
    running = [p["name"] for p in programs if p.get("state") == "RUNNING"]
    others = [f"{p['name']} {p.get('state')}" for p in programs if p.get("state") != "RUNNING"]
    parts = [f"agent pid {status.get('pid')} build {status.get('build')}"]
    if running:
        parts.append("running: " + ", ".join(running))
    if others:
        parts.append("not running: " + ", ".join(others))
    if status.get("errors"):
        parts.append("errors: " + "; ".join(status["errors"]))
    if added:
        parts.append(f"{added} new event(s)")
    return NodeOutcome(node.name, action="revived" if revived else "ok", value="; ".join(parts))


def entries(results: Results[AgentOutcome]) -> list[SweepEntry]:
    """Per-node sweep entries from the fan-out results."""
    out = []
    for r in results:
        if r.error is None:
            out.append(SweepEntry(r.node, r.action, str(r.value or "")))
        elif not r.reached:
            out.append(SweepEntry(r.node, "failed", r.reason))
        else:
            out.append(SweepEntry(r.node, "error", r.reason))
    return out


async def sweep_async(
    nodes: Sequence[Node],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
    record: bool = False,
    on_result: Callable[[AgentOutcome], None] | None = None,
) -> list[SweepEntry]:
    """One sweep over ``nodes``; with ``record`` the failed set is updated from it.

    ``on_result`` is called with each node's outcome as it finishes (a progress line).
    """
    results = await for_each(
        nodes, _check, options, transport=transport, state=state, on_result=on_result
    )
    if record:
        health.record(results, health.Policy.REACHABILITY, state=state)
    return entries(results)


@dataclass(frozen=True)
class SweepRound:
    """One sweep of a schedule: its entries and how long it took."""

    number: int  # 1, 2, ...
    entries: list[SweepEntry]
    duration: float

    @property
    def ok(self) -> bool:
        """Every node's agent answers: found running or revived."""
        return all(e.status in ("ok", "revived") for e in self.entries)


async def sweep_every(
    interval: float,
    nodes: Sequence[Node] | Callable[[], Sequence[Node]],
    options: AgentOptions | None = None,
    *,
    transport_for: Callable[[Sequence[Node]], Transport | None] | None = None,
    state: State | None = None,
    rounds: int | None = None,
    stop: asyncio.Event | None = None,
    record: bool = False,
    on_result: Callable[[AgentOutcome], None] | None = None,
) -> AsyncIterator[SweepRound]:
    """Sweep ``nodes`` every ``interval`` seconds (start to start) and yield each round.

    ``nodes`` may be a function, called before every round (a selection that
    names ``failed`` changes as the sweeps run); ``transport_for(nodes)`` gives
    each round its transport (default: the options' SSH transport). Ends after
    ``rounds`` rounds (None: never) or as soon as ``stop`` is set, even in the
    middle of a wait; never waits after the last round. ``record``: each round
    updates the failed set, as :func:`sweep_async` does; ``on_result`` is
    called as each node of a round finishes.
    """
    done = 0
    while (rounds is None or done < rounds) and not (stop is not None and stop.is_set()):
        began = time.monotonic()
        chosen = nodes() if callable(nodes) else nodes
        transport = transport_for(chosen) if transport_for is not None else None
        found = await sweep_async(
            chosen, options, transport=transport, state=state, record=record, on_result=on_result
        )
        done += 1
        took = time.monotonic() - began
        yield SweepRound(done, found, took)
        if rounds is not None and done >= rounds:
            return
        wait = max(0.0, interval - took)
        if stop is None:
            await asyncio.sleep(wait)
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if stop.is_set():
                return
