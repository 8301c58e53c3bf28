"""Fault-suite fixtures on the suite's session lab (tests/conftest.py, shared with integration).

The fault scenarios restore what they change (revive killed nodes, remove
shaping, unmount) in ``finally``, so the 8 nodes they leave serve the
integration tests that follow. ``fleet`` installs agents once for the fault
module and, at its end, revives any node a test left killed and stops the
agents, so that no agent of the fault suite outlives it.
``SHOAL_FAULT_REPS`` raises the repetition counts (the bench runs 20).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.nodes.model import Node

#: Repetitions of the randomised scenarios (kill at a random moment): CI keeps it small.
REPS = int(os.environ.get("SHOAL_FAULT_REPS", "3"))


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Iterator[list[Node]]:
    from shoal.agentlink import fleet as agents

    nodes = lab.nodes()
    installed = asyncio.run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    try:
        yield nodes
    finally:
        for node in nodes:
            lab.revive(node.name)
        asyncio.run(agents.stop_async(nodes, agents.AgentOptions()))
