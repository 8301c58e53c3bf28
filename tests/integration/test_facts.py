"""Facts and the failed set against a real lab of SSH nodes (issue 3's required tests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.errors import UnknownNameError
from shoal.fanout import RunOptions, factgather, run
from shoal.nodes import facts, inventory
from shoal.nodes.nodeset import fold
from shoal.nodes.select import resolve, select

pytestmark = pytest.mark.lab


@pytest.fixture
def registered(lab: Any) -> Iterator[str]:
    """A group holding exactly the lab's nodes: ``lab`` (the lab registers itself on
    ``up``), else our own group, imported here and removed afterwards."""
    names = {n.name for n in lab.nodes()}
    try:
        if set(select("@lab")) == names:
            yield "lab"
            return
    except UnknownNameError:
        pass
    group = f"lab-{lab.name}"
    inventory.import_nodes(lab.nodes(), replace_group=group)
    try:
        yield group
    finally:
        inventory.remove_group(group)


def test_facts_refreshed_from_a_real_lab(lab: Any, registered: str) -> None:
    nodes = resolve(f"@{registered}")
    assert len(nodes) == len(lab.nodes())
    t0 = time.time()
    report = factgather.refresh(nodes, options=RunOptions(timeout=30))
    assert report.failed == {}
    assert [r.name for r in report.refreshed] == [n.name for n in nodes]
    stored = facts.load_facts([n.name for n in nodes])
    for node in nodes:
        rec = stored[node.name]
        f = rec.facts
        assert rec.gathered >= t0 and not rec.stale()
        assert rec.rtt_ms is not None and 0 < rec.rtt_ms < 30_000
        assert isinstance(f["cpus"], int) and f["cpus"] >= 1
        assert isinstance(f["mem_total_mb"], int) and f["mem_total_mb"] > 0
        assert isinstance(f["disk_free_gb"], float) and f["disk_free_gb"] > 0
        assert f["kernel"] and "load1" in f
        assert str(f["python_version"]).startswith("3.")
        assert "os_id" in f
    # facts are usable in attribute filters, plain and namespaced
    everyone = fold(n.name for n in nodes)
    assert fold(select(f"@{registered}[disk_free_gb>0]")) == everyone
    assert fold(select(f"@{registered} & [fact.cpus>=1]")) == everyone
    assert len(select("[facts_stale=true]")) == 0


def _recorded_run(nodes: Any, command: str, opts: RunOptions) -> Any:
    """A library run, then the health recording ``shoal run`` does after every run."""
    from shoal.nodes import health

    result = run(nodes, command, opts)
    health.record(result, health.Policy.OUTCOME)
    return result


def test_killed_node_enters_failed_and_leaves_when_revived(lab: Any, registered: str) -> None:
    nodes = resolve(f"@{registered}")
    victim = nodes[1].name
    opts = RunOptions(timeout=10, connect_timeout=3)
    _recorded_run(nodes, "true", opts)
    assert victim not in select("failed")
    lab.kill(victim)
    try:
        result = _recorded_run(nodes, "true", opts)
        assert not result.results[victim].ok
        assert fold(select(f"@{registered} & failed")) == victim
        assert victim not in select("healthy")
        assert fold(select(f"@{registered} - failed")) == fold(
            n.name for n in nodes if n.name != victim
        )
    finally:
        lab.revive(victim)
    deadline = time.monotonic() + 20
    while True:
        _recorded_run(nodes, "true", opts)
        if victim not in select("failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert victim not in select("failed")
    assert victim in select("healthy")
