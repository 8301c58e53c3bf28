"""Acquire: which nodes each component gets, decided before anything is touched.

For every component, in spec order: evaluate its selection (the ``shoal
select`` grammar), drop nodes in the failed set and nodes another component
of the application already holds, then check its requirements against each
node's attributes and facts (:mod:`shoal.nodes.facts`; facts missing or stale
are gathered first, in one round trip per node). The first ``count``
qualifying nodes are members, the rest spares (spares are what replacements
are taken from, in the same order). The order is the component's ``prefer:``
ranking (:func:`ranked`: best first, a node missing a value last, ties in
natural name order), else natural order. Members a previous ``up`` chose are
kept while they still qualify, in slot order, so a re-run converges instead of
reshuffling; when fewer are wanted (a smaller ``count``) the lowest slots stay
and the rest are dropped (see :mod:`.shrink`).

When a component cannot get its count, :class:`~shoal.errors.AcquireError`
says how many qualified and why the others did not (:func:`refusal`), and
nothing has been changed anywhere; a pass that runs out of spares later says
the same (:func:`shortfall`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shoal.errors import AcquireError
from shoal.nodes.model import AttrValue, Node
from shoal.nodes.nodeset import fold
from shoal.state import State
from shoal.transport.base import Transport

from .appspec import AppSpec, Component, Preference, Requirement


@dataclass
class Allocation:
    """Members (slot order) and spares (ranked) of every component, and why the
    rest of each selection did not qualify."""

    members: dict[str, list[Node]] = field(default_factory=dict)
    spares: dict[str, list[Node]] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    selected: dict[str, int] = field(default_factory=dict)

    def all_members(self) -> list[Node]:
        seen: dict[str, Node] = {}
        for nodes in self.members.values():
            for n in nodes:
                seen.setdefault(n.name, n)
        return list(seen.values())


@dataclass(frozen=True)
class Verdict:
    """Why nodes of one component did or did not qualify."""

    qualified: list[Node]
    rejected: dict[str, list[str]]  # reason -> node names


def node_value(node: Node, facts: Mapping[str, AttrValue], key: str) -> AttrValue | None:
    """A requirement key's value: node attribute, then fact, then host/user/port/name."""
    if key.startswith(("fact.", "facts.")):
        return facts.get(key.split(".", 1)[1])
    if key in node.attrs:
        return node.attrs[key]
    if key in facts:
        return facts[key]
    value = {"host": node.host, "user": node.user, "port": node.port, "name": node.name}.get(key)
    return value


def qualify(
    candidates: Sequence[Node],
    require: Sequence[Requirement],
    facts: Mapping[str, Mapping[str, AttrValue]],
    failed: Iterable[str] = (),
    taken: Iterable[str] = (),
) -> Verdict:
    """Split ``candidates`` into qualifying nodes and rejection reasons."""
    failed_set, taken_set = set(failed), set(taken)
    ok: list[Node] = []
    rejected: dict[str, list[str]] = {}
    for node in candidates:
        if node.name in failed_set:
            rejected.setdefault("in the failed set", []).append(node.name)
            continue
        if node.name in taken_set:
            rejected.setdefault("used by another component", []).append(node.name)
            continue
        node_facts = facts.get(node.name, {})
        bad = next((r for r in require if not r.check(node_value(node, node_facts, r.key))), None)
        if bad is not None:
            have = node_value(node, node_facts, bad.key)
            reason = f"fails {bad.text}" + (" (no such fact)" if have is None else "")
            rejected.setdefault(reason, []).append(node.name)
            continue
        ok.append(node)
    return Verdict(ok, rejected)


def ranked(
    nodes: Sequence[Node],
    prefer: Sequence[Preference],
    facts: Mapping[str, Mapping[str, AttrValue]],
) -> list[Node]:
    """``nodes`` best first by ``prefer`` (earlier entries first; a missing value
    ranks last; ties keep the given order, natural name order from a selection)."""
    if not prefer:
        return list(nodes)

    def key(node: Node) -> tuple[tuple[int, float | str], ...]:
        have = facts.get(node.name, {})
        return tuple(p.rank(node_value(node, have, p.key)) for p in prefer)

    return sorted(nodes, key=key)


def _reasons(verdict: Verdict) -> str:
    parts = [
        f"{len(names)} {reason} ({fold(names)})"
        for reason, names in sorted(verdict.rejected.items(), key=lambda kv: -len(kv[1]))
    ]
    return "; ".join(parts) if parts else "the selection is too small"


def refusal(app: str, comp: Component, wanted: int, selected: int, verdict: Verdict) -> str:
    """One line: what the component needs and why too few nodes qualify."""
    return (
        f"app {app}: component {comp.name} needs {wanted} node(s) but only "
        f"{len(verdict.qualified)} of {selected} selected by {comp.select!r} qualify: "
        f"{_reasons(verdict)}"
    )


def shortfall(
    app: str,
    comp: Component,
    running: int,
    wanted: int,
    alloc: Allocation,
    gone: Mapping[str, str],
) -> str:
    """One line: a component running short because its spares ran out, with why
    the rest of its selection cannot stand in (``gone``: node → why it left)."""
    verdict = alloc.verdicts.get(comp.name, Verdict([], {}))
    rejected = {k: list(v) for k, v in verdict.rejected.items()}
    for name, why in gone.items():
        rejected.setdefault(f"failed ({why})" if why else "failed", []).append(name)
    members = [n for ns in alloc.members.values() for n in ns]
    busy = [n.name for n in members if n.name not in gone]
    if busy:
        rejected["members already"] = busy
    return (
        f"app {app}: component {comp.name} runs {running} of {wanted} node(s): no spare "
        f"left of {alloc.selected.get(comp.name, 0)} selected by {comp.select!r}: "
        f"{_reasons(Verdict([], rejected))}"
    )


async def gather_facts(
    spec: AppSpec, state: State, transport: Transport | None = None
) -> dict[str, dict[str, AttrValue]]:
    """Facts of every node a component with requirements may use; missing or stale
    facts are gathered first (one round trip per node, in parallel); nodes that do
    not answer join the failed set (``Policy.OUTCOME``), so they are not acquired."""
    from shoal.fanout.factgather import gather_async, store
    from shoal.fanout.options import RunOptions
    from shoal.nodes import facts as facts_mod
    from shoal.nodes import health
    from shoal.nodes.select import resolve

    nodes: dict[str, Node] = {}
    for comp in spec.components.values():
        if comp.require or comp.prefer:
            nodes.update((n.name, n) for n in resolve(comp.select, state=state))
    if not nodes:
        return {}
    records = facts_mod.load_facts(list(nodes), state=state)
    stale = [n for n in nodes.values() if n.name not in records or records[n.name].stale()]
    if stale:
        # nodes whose facts cannot be gathered keep what is stored (or none)
        gathered = await gather_async(stale, options=RunOptions(timeout=30), transport=transport)
        health.record(gathered, health.Policy.OUTCOME, state=state)
        store(gathered, state)
        records = facts_mod.load_facts(list(nodes), state=state)
    out: dict[str, dict[str, AttrValue]] = {}
    for name, r in records.items():
        out[name] = dict(r.facts)
        if r.rtt_ms is not None:  # rankable like any fact (prefer: [{lowest: rtt_ms}])
            out[name].setdefault("rtt_ms", r.rtt_ms)
    return out


def acquire(
    spec: AppSpec,
    state: State,
    *,
    keep: Mapping[str, Sequence[str]] | None = None,
    hold: Mapping[str, int] | None = None,
    exclude: Iterable[str] = (),
    facts: Mapping[str, Mapping[str, AttrValue]] | None = None,
) -> Allocation:
    """Members and spares for every component; AcquireError when one falls short.

    ``keep`` maps a component to nodes it already holds (kept first, in their
    order, while they qualify); ``hold`` counts slots a component keeps for
    failed members it does not refill (policies ignore and restart);
    ``exclude`` names nodes never to use. ``facts``: node → facts (see
    :func:`gather_facts`).
    """
    from shoal.nodes.health import failed_names
    from shoal.nodes.select import resolve

    keep = keep or {}
    excluded = set(exclude)
    failed = failed_names(state) | excluded
    selections = {c.name: resolve(c.select, state=state) for c in spec.components.values()}
    known = facts or {}
    out = Allocation()
    taken: set[str] = set()
    reserved = {name for names in keep.values() for name in names}  # kept stay put
    for comp in spec.components.values():
        selected = selections[comp.name]
        others = (taken | reserved) - set(keep.get(comp.name, ()))
        verdict = qualify(selected, comp.require, known, failed, others)
        by_name = {n.name: n for n in verdict.qualified}
        kept = [by_name[name] for name in keep.get(comp.name, ()) if name in by_name]
        rest = ranked([n for n in verdict.qualified if n not in kept], comp.prefer, known)
        wanted = len(verdict.qualified) if comp.count is None else comp.count
        if comp.count is None and not verdict.qualified:
            wanted = 1
        held = (hold or {}).get(comp.name, 0)
        if comp.count is not None and held:
            wanted = max(0, wanted - held)
        ordered = kept + rest
        if len(ordered) < wanted:
            raise AcquireError(refusal(spec.name, comp, wanted, len(selected), verdict))
        out.members[comp.name] = ordered[:wanted]
        out.spares[comp.name] = ranked(ordered[wanted:], comp.prefer, known)
        out.verdicts[comp.name] = verdict
        out.selected[comp.name] = len(selected)
        taken.update(n.name for n in ordered[:wanted])
    return out
