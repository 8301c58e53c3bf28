"""Members an application no longer wants: chosen, recorded, stopped.

A smaller ``count``, a narrower ``select`` (or a node that left the group it
names), a requirement a member no longer meets or a component removed from
the spec leaves members the new allocation does not hold. :func:`dropped`
picks them (pure): active members of the previous pass that are neither kept
nor dead — dead ones are the failure policy's (:mod:`.carryover`) — highest
slot first, since acquire keeps the lowest slots (:mod:`.acquire`); members
recorded ``stopping`` by a pass that did not finish are picked again.

:func:`stop_members` records each ``stopping`` before touching its node, then
removes the component's programs and forgets its steps there (the files stay
until ``app down``) and records it ``stopped``: its slot is free and nothing
else restarts. A node that does not answer stays ``stopping`` and the next
pass tries again, so a controller killed half-way finishes the job.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from shoal.agentlink import fleet as agents
from shoal.agentlink.agentclient import AgentClient
from shoal.errors import AgentError
from shoal.fanout.results import NodeOutcome
from shoal.nodes.inventory import load_nodes
from shoal.nodes.model import Node
from shoal.state import State

from . import store
from .acquire import Allocation
from .store import Member


@dataclass(frozen=True)
class Drop:
    """A member to stop and why (for its record and the journal)."""

    member: Member
    reason: str


def dropped(
    previous: Sequence[Member],
    alloc: Allocation,
    dead: Collection[str],
    wanted: dict[str, int | None],
) -> list[Drop]:
    """Members of ``previous`` the allocation ``alloc`` no longer holds, highest slot
    first. ``dead``: nodes the failure policy handles; ``wanted``: component → its
    count in the spec (absent: the component was removed; None: ``all``)."""
    out: list[Drop] = []
    for m in previous:
        if m.state == "stopping":
            out.append(Drop(m, m.detail or "dropped"))
            continue
        if m.state != "active" or m.node in dead:
            continue
        held = {n.name for n in alloc.members.get(m.component, [])}
        if m.node in held:
            continue
        if m.component not in wanted:
            why = f"component {m.component} removed from the spec"
        elif wanted[m.component] is not None and _count(previous, m.component) > (
            wanted[m.component] or 0
        ):
            why = f"count lowered to {wanted[m.component]}"
        else:
            why = "no longer selected or qualified"
        out.append(Drop(m, why))
    return sorted(out, key=lambda d: (d.member.component, -d.member.slot))


def _count(previous: Sequence[Member], component: str) -> int:
    return sum(1 for m in previous if m.component == component and m.state == "active")


async def stop_members(
    app: str,
    drops: Sequence[Drop],
    state: State,
    options: agents.AgentOptions,
    *,
    skip: Collection[str] = (),
) -> list[Drop]:
    """Stop ``drops`` (recorded ``stopping`` first, ``stopped`` once done); the ones
    done, in order. Nodes in ``skip`` (the failed set) are left ``stopping``."""
    for d in drops:
        m = d.member
        store.set_member(state, app, m.component, m.node, m.slot, "stopping", d.reason)
    todo = [d for d in drops if d.member.node not in skip]
    if not todo:
        return []
    prefixes: dict[str, list[str]] = {}
    for d in todo:
        prefixes.setdefault(d.member.node, []).append(f"{app}.{d.member.component}.")

    async def talk(
        client: AgentClient, n: Node, st: State, opts: agents.AgentOptions
    ) -> agents.AgentOutcome:
        programs = await client.call("proc.status", timeout=opts.call_timeout)
        for prefix in prefixes[n.name]:
            for p in programs:
                if str(p.get("name", "")).startswith(prefix):
                    try:
                        await client.call("proc.remove", name=p["name"], timeout=60)
                    except AgentError:
                        pass  # gone meanwhile
            await client.call("step.forget", prefix=prefix, timeout=30)
        return NodeOutcome(n.name, action="stopped")

    found = {n.name: n for n in load_nodes(state, list(prefixes))}
    nodes = [found[name] for name in prefixes if name in found]
    results = await agents.each_agent(nodes, talk, options, state=state)
    done = []
    for d in todo:
        m = d.member
        r = results.results.get(m.node)
        gone = m.node not in found  # removed from the inventory: nothing left to reach
        if gone or (r is not None and r.ok):
            store.set_member(state, app, m.component, m.node, m.slot, "stopped", d.reason)
            done.append(d)
    return done
