"""Live facts: what the held links already see of each node, kept fresh in the facts table.

The links (:mod:`.links`) hand over what they measure: the round-trip time of
each beat over the held agent stream (:meth:`LiveFacts.rtt`, an agent answer:
not the wall time of an SSH command, which is what ``nodes facts --refresh``
stores), the node's clock against ours (``clock_skew_s``: the node's time minus
the midpoint of our send and receive), ``load1``, ``mem_available_mb``,
``disk_free_gb`` and ``disk_free_mb`` (:meth:`LiveFacts.update`, from a beat
or from :data:`LIVE_COMMAND`'s output parsed by :func:`parse_live`).

Nothing is written per beat: :meth:`LiveFacts.flush` (the links call it every
``every`` seconds) merges the changed nodes into their stored
:class:`~shoal.nodes.facts.FactRecord` (gathered facts such as ``os`` or
``cpus`` are kept) in one transaction, so selections such as
``[load1<2]`` or ``[rtt_ms<5]`` read them as they read gathered facts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shoal.nodes.facts import FactRecord, load_facts, store_facts
from shoal.nodes.model import AttrValue
from shoal.state import State

#: One shell round trip that prints what a beat of an older agent does not carry.
LIVE_COMMAND = (
    "date +%s.%N; cat /proc/loadavg; grep '^MemAvailable:' /proc/meminfo; "
    'df -Pk "$HOME" | tail -n 1'
)

#: Weight of a new RTT sample in the smoothed value (RFC 6298's alpha).
RTT_ALPHA = 0.125


def skew(node_time: float, sent: float, received: float) -> float:
    """The node's clock minus ours at the moment it answered (wall clocks, seconds)."""
    return round(node_time - (sent + received) / 2, 3)


def parse_live(output: str, sent: float, received: float) -> dict[str, AttrValue]:
    """Facts from :data:`LIVE_COMMAND`'s output; lines that do not parse are left out."""
    facts: dict[str, AttrValue] = {}
    for line in output.splitlines():
        parts = line.split()
        if not parts:
            continue
        if line.startswith("MemAvailable:") and len(parts) >= 2 and parts[1].isdigit():
            facts["mem_available_mb"] = int(parts[1]) // 1024
        elif len(parts) == 1 and "clock_skew_s" not in facts:
            try:
                facts["clock_skew_s"] = skew(float(parts[0]), sent, received)
            except ValueError:
                continue
        elif len(parts) == 5 and "/" in parts[3]:  # /proc/loadavg
            try:
                facts["load1"] = float(parts[0])
            except ValueError:
                continue
        elif len(parts) >= 6 and parts[3].isdigit():  # df -Pk: available KiB is field 4
            free_kb = int(parts[3])
            facts["disk_free_mb"] = free_kb // 1024
            facts["disk_free_gb"] = round(free_kb / 1024 / 1024, 2)
    return facts


def from_beat(beat: dict[str, Any], received: float, sent: float) -> dict[str, AttrValue]:
    """Facts from a heartbeat of the agent's ``watch`` (time, load1, mem and disk)."""
    facts: dict[str, AttrValue] = {}
    if isinstance(beat.get("time"), int | float):
        facts["clock_skew_s"] = skew(float(beat["time"]), sent, received)
    if isinstance(beat.get("load1"), int | float):
        facts["load1"] = float(beat["load1"])
    for key in ("mem_avail_mb", "mem_available_mb"):
        if isinstance(beat.get(key), int | float):
            facts["mem_available_mb"] = int(beat[key])
    if isinstance(beat.get("disk_free_mb"), int | float):
        facts["disk_free_mb"] = int(beat["disk_free_mb"])
        facts["disk_free_gb"] = round(float(beat["disk_free_mb"]) / 1024, 2)
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

    def snapshot(self, node: str) -> dict[str, AttrValue]:
        out = dict(self.facts.get(node, {}))
        if node in self.rtt_ms:
            out["rtt_ms"] = round(self.rtt_ms[node], 3)
        return out

    def due(self) -> bool:
        return bool(self._dirty) and self.clock() - self._last_flush >= self.every

    def flush(self) -> int:
        """Write the nodes changed since the last flush; how many were written."""
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
        store_facts(records, state=self.state)
        self.flushes += 1
        return len(records)
