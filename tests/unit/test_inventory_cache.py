"""The service's inventory snapshot (service/inventorycache) on a real state database:
read once while nothing changes, read again after any commit (another connection's, as
the writer thread or a CLI makes them, or the service connection's own)."""

from __future__ import annotations

from pathlib import Path

from shoal.nodes import health
from shoal.nodes.facts import FactRecord, store_facts
from shoal.nodes.inventory import import_nodes
from shoal.nodes.model import Node
from shoal.service.inventorycache import InventoryCache
from shoal.state import State


def _nodes(*names: str) -> list[Node]:
    return [Node(n, host="127.0.0.1", groups=("g",)) for n in names]


def test_snapshot_read_once_until_a_commit(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with State(db) as service, State(db) as other:
        import_nodes(_nodes("n2", "n10", "n1"), state=service)
        cache = InventoryCache()
        first = cache.snapshot(service)
        assert [n.name for n in first.nodes] == ["n1", "n2", "n10"]
        assert cache.snapshot(service) is first and cache.reads == 1

        health.mark_failed({"n2": "down: no answer"}, state=other)  # another connection
        second = cache.snapshot(service)
        assert cache.reads == 2 and second.failed == {"n2": "down: no answer"}

        store_facts([FactRecord("n1", 5.0, 1.5, {"os": "debian"})], state=service)  # its own
        third = cache.snapshot(service)
        assert cache.reads == 3
        assert third.facts == {"n1": {"os": "debian", "rtt_ms": 1.5, "gathered": 5.0}}

        import_nodes(_nodes("n3"), state=other)
        assert "n3" in {n.name for n in cache.snapshot(service).nodes}
        assert cache.snapshot(service) is cache.snapshot(service) and cache.reads == 4
