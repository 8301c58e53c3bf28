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

Every node that answered SSH leaves the failed set. :func:`sweep_async`
returns one :class:`SweepEntry` per node; nothing is printed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shoal.agentlink import eventlog
from shoal.agentlink.client import AgentClient, probe, remember, start_agent
from shoal.agentlink.fleet import AgentOptions, AgentResult, AgentResults, for_each
from shoal.errors import AgentNotRunning, VersionMismatch
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport.base import Connection, Transport


@dataclass(frozen=True)
class SweepEntry:
    """What the sweep found and did on one node."""

    node: str
    status: str  # ok | revived | failed | no agent | skew | error
    detail: str


async def _check(conn: Connection, node: Node, st: State, opts: AgentOptions) -> AgentResult:
    found = await probe(conn, opts.home)
    if found is None or found.build is None:
        return AgentResult(node.name, action="no agent", value=f"nothing installed in {opts.home}")
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
            text = str(exc)
            return AgentResult(node.name, action="skew", value=text.split(": ", 1)[-1])
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
    return AgentResult(node.name, action="revived" if revived else "ok", value="; ".join(parts))


def entries(results: AgentResults) -> list[SweepEntry]:
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
) -> list[SweepEntry]:
    """One sweep over ``nodes``; the failed set is updated (unless ``record_health`` is off)."""
    opts = options or AgentOptions()

    async def op(conn: Connection, node: Node, st: State) -> AgentResult:
        return await _check(conn, node, st, opts)

    results = await for_each(nodes, op, opts, transport=transport, state=state)
    return entries(results)
