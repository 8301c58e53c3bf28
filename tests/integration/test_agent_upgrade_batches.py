"""A bad batch stops a rolling agent upgrade (issue 15 item 2).

``agent upgrade --batch N`` checks each batch before the next. A node of the
second batch whose new agent cannot be put in place (its working area is a
read-only filesystem) or cannot start (the inventory's python for it is gone)
must fail with one line naming it and why, stop the upgrade there, and leave
that node and every later batch on the old agent with their supervised
programs running under the same pids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

import shoal.agent
from shoal.agent.build import build
from shoal.agentlink import fleet as agents
from shoal.nodes.model import Node

from .conftest import remote

pytestmark = pytest.mark.lab

READ_ONLY = "mount --bind .shoal .shoal && mount -o remount,bind,ro .shoal"
#: how the bad node is broken: a command run there (and its undoing), its python
BREAKS = {
    "read-only working area": (
        READ_ONLY,
        "umount .shoal",
        None,
        r"cannot put the new agent in /root/\.shoal: Read-only file system",
    ),
    "python missing": (
        "true",
        "true",
        "/nonexistent/python3",
        r"the new agent does not start with /nonexistent/python3: .*"
        r"(not found|No such file or directory)",
    ),
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def state(nodes: list[Node]) -> dict[str, tuple[str, str, int]]:
    """node -> (agent build, the ticker's state, its pid)."""
    res = run(agents.call_async(nodes, "status", {}))
    assert res.ok, [(r.node, r.reason) for r in res.failed]
    out = {}
    for r in res:
        (tick,) = [p for p in r.value["programs"] if p["name"] == "ticker"]
        out[r.node] = (r.value["build"], tick["state"], tick["pid"])
    return out


@pytest.mark.parametrize("kind", sorted(BREAKS))
def test_a_failed_batch_stops_the_upgrade_and_later_batches_keep_the_old_agent(
    lab: Any, tmp_path: Path, kind: str
) -> None:
    setup, undo, python, expected = BREAKS[kind]
    nodes = lab.nodes()
    assert len(nodes) == 8
    current = build()
    first = run(agents.install_async(nodes, agent=current))
    assert first.ok, [(r.node, r.reason) for r in first.failed]
    copy = tmp_path / "agent"
    source = Path(shoal.agent.__file__).parent
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "backoff.py", "a") as handle:
        handle.write("# a build for the bad-batch test\n")
    other = build(copy)
    cmd = ["/bin/sh", "-c", "while :; do echo tick; sleep 0.2; done"]
    bad = nodes[3]  # the second batch of four (two nodes each)
    try:
        started = run(agents.proc_start_async(nodes, agents.proc_spec("ticker", cmd)))
        assert started.ok, [(r.node, r.reason) for r in started.failed]
        before = state(nodes)
        assert {b for b, _, _ in before.values()} == {current.build_id}
        remote(bad, setup)
        given = [dataclasses.replace(n, python=python) if n is bad else n for n in nodes]

        up = run(agents.install_async(given, upgrade_only=True, agent=other, batch="2"))

        assert [r.node for r in up.failed] == [n.name for n in nodes[3:]]
        why = up[bad.name].reason
        assert "\n" not in why and re.fullmatch(expected, why), why
        for n in nodes[4:]:
            assert up[n.name].reason == (f"not attempted: batch 2/4 failed on {bad.name}: {why}"), (
                up[n.name].reason
            )
        assert all(up[n.name].ok for n in nodes[:3])
        after = state(nodes)
        for n in nodes[:3]:  # upgraded, their programs adopted
            assert after[n.name] == (other.build_id, "RUNNING", before[n.name][2])
        for n in nodes[3:]:  # the failed node and the later batches: the old agent, running
            assert after[n.name] == before[n.name], n.name
    finally:
        remote(bad, undo, check=False)
        run(agents.call_async(nodes, "proc.remove", {"name": "ticker"}))
        run(agents.install_async(nodes, upgrade_only=True, agent=current))
        run(agents.stop_async(nodes))
