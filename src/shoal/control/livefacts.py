"""Live facts: what the held links already see of each node, kept fresh in the facts table.

The links (:mod:`.links`) hand over what they measure: the round-trip time of
each ``ping`` over the held agent stream (:meth:`LiveFacts.rtt`, an agent
answer: not the wall time of an SSH command, which is what ``nodes facts
--refresh`` stores), the node's clock against ours (``clock_skew_s``: the
agent's time minus the midpoint of our send and receive), and what each beat
carries: ``load1``, ``mem_available_mb``, ``disk_free_gb`` and
``disk_free_mb`` (:func:`beat_facts`, :meth:`LiveFacts.update`), and the
node's programs per state as its supervisor counts them now
(:meth:`LiveFacts.report_programs`; a beat carries them whenever they change:
the metrics' ``shoal_programs`` read them, :meth:`LiveFacts.program_states`,
never a replay of lifecycle events, which an agent's bounded memory, a program
reaped without an event or an earlier service's history would leave stale).

Nothing is written per beat: :meth:`LiveFacts.flush` (the links call it every
``every`` seconds) merges the changed nodes into their stored
:class:`~shoal.nodes.facts.FactRecord` (gathered facts such as ``os`` or
``cpus`` are kept) in one transaction, so selections such as
``[load1<2]`` or ``[rtt_ms<5]`` read them as they read gathered facts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from shoal.agentlink.agentwatch import Beat
from shoal.nodes.facts import FactRecord, load_facts, store_facts
from shoal.nodes.model import AttrValue
from shoal.state import State

#: Weight of a new RTT sample in the smoothed value (RFC 6298's alpha).
RTT_ALPHA = 0.125
#: The agent supervisor's program states (every one listed in a reading, 0 when none).
PROGRAM_STATES = ("BACKOFF", "EXITED", "FATAL", "RUNNING", "STARTING", "STOPPED", "STOPPING")


def beat_facts(beat: Beat) -> dict[str, AttrValue]:
    """Facts a heartbeat of the agent's ``watch`` carries (load, memory, free disk)."""
    facts: dict[str, AttrValue] = {}
    if beat.load1 is not None:
        facts["load1"] = beat.load1
    if beat.mem_avail_mb is not None:
        facts["mem_available_mb"] = int(beat.mem_avail_mb)
    if beat.disk_free_mb is not None:
        facts["disk_free_mb"] = int(beat.disk_free_mb)
        facts["disk_free_gb"] = round(beat.disk_free_mb / 1024, 2)
    return facts


class LiveFacts:
    """The latest live facts per node, written in batches."""

    def __init__(
        self, state: State, *, every: float = 10.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.state = state
        self.every = every
        self.clock = clock
        self.rtt_ms: dict[str, float] = {}
        self.facts: dict[str, dict[str, AttrValue]] = {}
        #: node -> {program state: count}, as its agent last reported (not stored)
        self.programs: dict[str, dict[str, int]] = {}
        self._dirty: set[str] = set()
        self._last_flush = clock()
        self.flushes = 0

    def rtt(self, node: str, ms: float) -> None:
        """One round-trip sample (milliseconds), smoothed."""
        old = self.rtt_ms.get(node)
        self.rtt_ms[node] = ms if old is None else old + RTT_ALPHA * (ms - old)
        self._dirty.add(node)

    def update(self, node: str, facts: dict[str, AttrValue]) -> None:
        if facts:
            self.facts.setdefault(node, {}).update(facts)
            self._dirty.add(node)

    def report_programs(self, node: str, states: dict[str, int]) -> None:
        """The node's programs per state, as its agent counts them now."""
        self.programs[node] = states

    def program_states(self, nodes: Collection[str]) -> dict[str, int]:
        """Programs per state on ``nodes`` as last reported; every state listed."""
        out = dict.fromkeys(PROGRAM_STATES, 0)
        for node in nodes:
            for state, n in self.programs.get(node, {}).items():
                out[state] = out.get(state, 0) + n
        return out

    def snapshot(self, node: str) -> dict[str, AttrValue]:
        out = dict(self.facts.get(node, {}))
        if node in self.rtt_ms:
            out["rtt_ms"] = round(self.rtt_ms[node], 3)
        return out

    def due(self) -> bool:
        return bool(self._dirty) and self.clock() - self._last_flush >= self.every

    def flush(self, submit: Callable[[Callable[[State], Any]], Any] | None = None) -> int:
        """Write the nodes changed since the last flush; how many were written.

        ``submit`` (the journal's: the service's writer thread) takes the write
        off the caller; without it the write is made here."""
        now = self.clock()
        self._last_flush = now
        names = sorted(self._dirty)
        if not names:
            return 0
        self._dirty.clear()
        stored = load_facts(names, state=self.state)
        records = []
        for name in names:
            old = stored.get(name)
            data: dict[str, AttrValue] = dict(old.facts) if old else {}
            data.update(self.facts.get(name, {}))
            rtt = self.rtt_ms.get(name, old.rtt_ms if old else None)
            records.append(FactRecord(name, now, None if rtt is None else round(rtt, 3), data))
        if submit is None:
            store_facts(records, state=self.state)
        else:
            submit(lambda st: store_facts(records, state=st))
        self.flushes += 1
        return len(records)
