"""Fault-suite fixtures: the integration suite's lab, shared.

The session ``lab`` (8 real sshd nodes) and ``remote`` come from
tests/integration/conftest.py; ``fleet`` installs agents once for the whole
suite and stops them at the end, reviving any node a test left killed.
``SHOAL_FAULT_REPS`` raises the repetition counts (the bench runs 20).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.nodes.model import Node

_spec = importlib.util.spec_from_file_location(
    "shoal_integration_conftest", Path(__file__).parent.parent / "integration" / "conftest.py"
)
assert _spec and _spec.loader
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)

shoal_home = _integration.shoal_home
lab = _integration.lab
remote = _integration.remote

#: Repetitions of the randomised scenarios (kill at a random moment): CI keeps it small.
REPS = int(os.environ.get("SHOAL_FAULT_REPS", "3"))


@pytest.fixture(scope="session")
def fleet(lab: Any) -> Iterator[list[Node]]:
    from shoal.agentlink import fleet as agents

    nodes = lab.nodes()
    installed = asyncio.run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield nodes
    for node in nodes:
        lab.revive(node.name)
    asyncio.run(agents.stop_async(nodes, agents.AgentOptions()))
