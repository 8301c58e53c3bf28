"""The service's in-memory snapshot of the inventory, the failed set and stored facts.

``GET /api/v1/nodes`` on 1,000 nodes spent ~45 of its ~50 ms reading these three
from SQLite and building Node objects, on every request, while they change
rarely (an import, a health record, a facts gather). :class:`InventoryCache`
keeps them and reads them again only when the state database changed: its key is
``PRAGMA data_version`` (bumped by a commit on any other connection: the
writer thread's, another CLI's) with the service connection's own
``total_changes``. Reading the key costs a few microseconds; a stale snapshot
is never served (the key is read before the data, so a commit that lands
while a snapshot is built is seen at the next request).

What is live (link state and the links' facts) is not kept here: it is merged
per request by :mod:`.noderoutes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from shoal.nodes import health
from shoal.nodes.facts import load_facts
from shoal.nodes.inventory import load_nodes
from shoal.nodes.model import Node
from shoal.state import State


@dataclass(frozen=True)
class Snapshot:
    """The state's nodes (natural order), failed reasons, stored facts (with rtt_ms and
    gathered), as the node records show them."""

    nodes: list[Node]
    failed: dict[str, str]
    facts: dict[str, dict[str, Any]]


def read_snapshot(state: State) -> Snapshot:
    """A fresh snapshot read from ``state``."""
    nodes = load_nodes(state)
    failed = {f.name: f.reason for f in health.failures(state)}
    facts = {
        name: {**record.facts, "rtt_ms": record.rtt_ms, "gathered": record.gathered}
        for name, record in load_facts(state=state).items()
    }
    return Snapshot(nodes, failed, facts)


class InventoryCache:
    """The last snapshot and the state version it was read at (see the module docstring)."""

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._snapshot: Snapshot | None = None
        #: snapshots read so far (a figure for the benchmark and the tests)
        self.reads = 0

    @staticmethod
    def version(state: State) -> tuple[int, int]:
        """The state's change key: other connections' commits, then this one's changes."""
        row = state.db.execute("PRAGMA data_version").fetchone()
        return int(row[0]), state.db.total_changes

    def snapshot(self, state: State) -> Snapshot:
        """The snapshot of ``state`` as it is now (read again only if it changed)."""
        key = self.version(state)
        if self._snapshot is None or key != self._key:
            self._snapshot = read_snapshot(state)
            self._key = key
            self.reads += 1
        return self._snapshot


def inventory_cache(request: Request) -> InventoryCache:
    """The application's cache (made at its first use)."""
    found: InventoryCache | None = getattr(request.app.state, "inventory_cache", None)
    if found is None:
        found = InventoryCache()
        request.app.state.inventory_cache = found
    return found
