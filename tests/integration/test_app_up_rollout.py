"""``app up`` after a software change: the services run the new code (issue 15 item 1).

The defect this guards: the tree was re-pushed (and switched) under running
services, which kept running the old code. Now the new version is staged
beside the running one, its install steps run in it, and a rollout stops →
switches → restarts each member's services, a quarter of them at a time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.app import lifecycle
from shoal.app.appspec import load
from shoal.app.runtime import UpOptions
from shoal.errors import OperationError
from shoal.nodes.model import Node

from .conftest import remote
from .rolloutapp import pids, rollout_app, running

pytestmark = pytest.mark.lab


@pytest.fixture()
def app(lab: Any, tmp_path: Path) -> Iterator[tuple[str, Path, list[Node]]]:
    name = f"roll{os.getpid()}"
    nodes = lab.nodes()[:4]
    with rollout_app(name, nodes, tmp_path) as spec:
        yield name, spec, nodes


def test_app_up_after_a_software_change_restarts_services_on_the_new_code(
    app: tuple[str, Path, list[Node]],
) -> None:
    name, spec_path, nodes = app
    said: list[str] = []
    first = asyncio.run(lifecycle.up_async(load(spec_path), UpOptions(say=said.append)))
    assert first.failed == {}
    assert running(nodes, name) == {n.name: "v1 v1" for n in nodes}
    before = pids(name)
    assert len(before) == 4

    (spec_path.parent / "tool" / "VERSION").write_text("v2\n")
    again = asyncio.run(lifecycle.up_async(load(spec_path), UpOptions(say=said.append)))
    assert again.failed == {}, again.failed
    assert running(nodes, name) == {n.name: "v2 v2" for n in nodes}  # before: still v1
    after = pids(name)
    assert set(after) == set(before) and all(after[n] != before[n] for n in before)
    assert "rollout" in again.phases and any("rollout" in line for line in said), said

    same = asyncio.run(lifecycle.up_async(load(spec_path), UpOptions()))
    assert "rollout" not in same.phases and pids(name) == after  # nothing changed: no restart


def test_a_failing_new_version_is_rolled_back_and_the_old_one_keeps_running(
    app: tuple[str, Path, list[Node]],
) -> None:
    name, spec_path, nodes = app
    assert asyncio.run(lifecycle.up_async(load(spec_path))).failed == {}
    for n in nodes:
        remote(n, f"touch .shoal/apps/{name}/refuse")
    (spec_path.parent / "tool" / "VERSION").write_text("v3\n")  # exits 3 where refused
    with pytest.raises(OperationError, match=r"software tool rolled back.*gate: .*server"):
        asyncio.run(lifecycle.up_async(load(spec_path)))
    assert running(nodes, name) == {n.name: "v1 v1" for n in nodes}
    status = asyncio.run(lifecycle.status_async(name))
    assert status.status == "running" and status.healthy, status.as_json()
