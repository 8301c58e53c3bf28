"""Rolling agent upgrade on the lab: the new build adopts the running programs.

A second build is made from a copy of the agent's sources with one comment
added (another build id); upgrading to it in batches must keep every
supervised program RUNNING with the same pid, their output still reaching the
log, and upgrading back must do the same.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import shoal.agent
from shoal.agent.build import build
from shoal.agentlink import fleet as agents
from shoal.nodes.model import Node

pytestmark = pytest.mark.lab


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def pids(nodes: list[Node], name: str) -> dict[str, tuple[str, int]]:
    res = run(agents.call_async(nodes, "proc.status", {"name": name}))
    assert res.ok, [(r.node, r.reason) for r in res.failed]
    return {r.node: (r.value[0]["state"], r.value[0]["pid"]) for r in res}


def test_upgrade_in_batches_keeps_programs_and_their_pids(lab: Any, tmp_path: Path) -> None:
    nodes = lab.nodes()
    first = run(agents.install_async(nodes))
    assert first.ok, [(r.node, r.reason) for r in first.failed]
    source = Path(shoal.agent.__file__).parent
    copy = tmp_path / "agent"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "backoff.py", "a") as handle:
        handle.write("# another build\n")
    other = build(copy)
    current = build()
    assert other.build_id != current.build_id
    cmd = ["/bin/sh", "-c", "while :; do echo tick; sleep 0.2; done"]
    try:
        started = run(agents.proc_start_async(nodes, agents.proc_spec("ticker", cmd)))
        assert started.ok, [(r.node, r.reason) for r in started.failed]
        before = pids(nodes, "ticker")
        assert all(state == "RUNNING" for state, _ in before.values())

        up = run(agents.install_async(nodes, upgrade_only=True, agent=other, batch="25%"))
        assert up.ok, [(r.node, r.reason) for r in up.failed]
        assert {r.action for r in up} == {f"upgraded from {current.build_id} (1 programs adopted)"}
        assert {r.value["build"] for r in up} == {other.build_id}
        assert pids(nodes, "ticker") == before

        # the output pipe was handed over too: the log keeps growing
        sizes = {
            r.node: r.value["offset"]
            for r in run(agents.call_async(nodes, "proc.logs", {"name": "ticker", "lines": 1}))
        }
        time.sleep(1.0)
        later = run(agents.call_async(nodes, "proc.logs", {"name": "ticker", "lines": 1}))
        assert all(r.value["offset"] > sizes[r.node] for r in later)

        back = run(agents.install_async(nodes, upgrade_only=True, agent=current, batch="3"))
        assert back.ok, [(r.node, r.reason) for r in back.failed]
        assert pids(nodes, "ticker") == before
    finally:
        run(agents.call_async(nodes, "proc.remove", {"name": "ticker"}))
        run(agents.install_async(nodes, upgrade_only=True, agent=current))
        run(agents.stop_async(nodes))


def test_batches_split_by_count_and_share() -> None:
    nodes = [Node(name=f"n{i}") for i in range(8)]
    assert [len(b) for b in agents.batches(nodes, "3")] == [3, 3, 2]
    assert [len(b) for b in agents.batches(nodes, "25%")] == [2, 2, 2, 2]
    assert [len(b) for b in agents.batches(nodes, None)] == [8]
