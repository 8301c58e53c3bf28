"""What an earlier ``up`` pass's members become in the next one: kept, held, replaced.

``up`` run again converges, so it starts from the members SQLite recorded
(:mod:`.store`). :func:`carry_over` decides, with :func:`.policy.decide`,
what each becomes: an active member whose node is healthy is kept; one whose
node joined the failed set is left out (its slot held) or replaced, or the
application aborts; a member an earlier pass left out rejoins (``restart``,
node healthy again) or keeps its slot held. :func:`plan_slots` then gives
every member of the new allocation its slot (``${index}``): kept members keep
theirs, newcomers fill the slots of members that are gone. Both are pure.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from .acquire import Allocation
from .appspec import AppSpec
from .policy import Action, FailureKind, decide
from .store import Member


@dataclass
class CarryOver:
    """Input to acquire and to the member records, from the previous members."""

    #: component -> nodes it keeps (in their order)
    keep: dict[str, list[str]] = field(default_factory=dict)
    #: component -> slots held for members left out (not refilled)
    hold: dict[str, int] = field(default_factory=dict)
    #: active members now in the failed set, with their action (LEAVE_OUT or REPLACE)
    dead: list[tuple[Member, Action]] = field(default_factory=list)
    #: the member whose failure aborts the application, if any
    abort: Member | None = None


def carry_over(spec: AppSpec, previous: Sequence[Member], failed: Collection[str]) -> CarryOver:
    """What the ``previous`` members become, ``failed`` being the failed set."""
    out = CarryOver()
    for m in previous:
        if m.state != "active":
            continue
        comp = spec.components.get(m.component)
        if comp is None:
            continue
        if m.node not in failed:
            out.keep.setdefault(m.component, []).append(m.node)
            continue
        action = decide(comp.on_failure, FailureKind.FOUND_FAILED)
        if action is Action.ABORT:
            out.abort = m
            return out
        out.dead.append((m, action))
        if action is Action.LEAVE_OUT:
            out.hold[m.component] = out.hold.get(m.component, 0) + 1
    for m in previous:
        if m.state == "failed" and m.component in spec.components:
            policy = spec.components[m.component].on_failure
            kind = FailureKind.LEFT_OUT_FAILED if m.node in failed else FailureKind.LEFT_OUT_HEALTHY
            if decide(policy, kind) is Action.REJOIN:
                out.keep.setdefault(m.component, []).append(m.node)  # back: start it again
            else:
                out.hold[m.component] = out.hold.get(m.component, 0) + 1
    return out


def plan_slots(
    alloc: Allocation, previous: Sequence[Member]
) -> tuple[dict[tuple[str, str], int], list[tuple[str, str, str]]]:
    """Slots per (component, node): kept members keep theirs, newcomers fill the gaps.

    Sorts ``alloc.members`` by slot; returns the slots and the (component, old,
    new) replacements of gone members by newcomers.
    """
    slots: dict[tuple[str, str], int] = {}
    replaced: list[tuple[str, str, str]] = []
    for cname, nodes in alloc.members.items():
        before = {
            m.node: m.slot
            for m in previous
            if m.component == cname and m.state in ("active", "failed")
        }
        chosen = {n.name for n in nodes}
        used = {before[n] for n in chosen if n in before}
        gone = sorted((slot, name) for name, slot in before.items() if name not in chosen)
        free = sorted(slot for slot, _ in gone if slot not in used)
        next_slot = max([*used, *(s for s, _ in gone), -1]) + 1
        for n in nodes:
            if n.name in before:
                slots[(cname, n.name)] = before[n.name]
                continue
            if free:
                slot = free.pop(0)
                old = next(name for s, name in gone if s == slot)
                replaced.append((cname, old, n.name))
            else:
                slot, next_slot = next_slot, next_slot + 1
            slots[(cname, n.name)] = slot
        alloc.members[cname] = sorted(nodes, key=lambda n: slots[(cname, n.name)])
    return slots, replaced
