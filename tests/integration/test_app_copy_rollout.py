"""``software_method: copy`` under running services: they run the new code (issue 15 item 1).

The defect this guards: the SFTP copy renamed the new tree over ``sw/NAME``
while the app's services ran it, so they kept running the old code (or a mix
of both). Now the copy is kept beside the running one (no transfer in the
downtime window), its install steps run there, and the rollout's stop →
switch (a rename swap) → restart puts it in place, the old copy kept aside; a
failed gate swaps it back and the old code runs again.
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
from shoal.app.software import DIGEST_FILE, tree_digest
from shoal.errors import OperationError
from shoal.nodes.model import Node

from .conftest import remote
from .rolloutapp import pids, rollout_app, running

pytestmark = pytest.mark.lab


def copy() -> UpOptions:
    return UpOptions(software_method="copy")


@pytest.fixture()
def app(lab: Any, tmp_path: Path) -> Iterator[tuple[str, Path, list[Node]]]:
    name = f"cproll{os.getpid()}"
    nodes = lab.nodes()[4:7]
    with rollout_app(name, nodes, tmp_path) as spec:
        yield name, spec, nodes


def on_nodes(nodes: list[Node], command: str) -> dict[str, str]:
    return {n.name: remote(n, command, check=False).strip() for n in nodes}


def test_a_changed_copy_is_switched_under_restarted_services(
    app: tuple[str, Path, list[Node]],
) -> None:
    name, spec_path, nodes = app
    sw = f".shoal/apps/{name}/sw"
    tool = spec_path.parent / "tool"
    old = tree_digest(tool)
    first = asyncio.run(lifecycle.up_async(load(spec_path), copy()))
    assert first.failed == {}
    assert running(nodes, name) == {n.name: "v1 v1" for n in nodes}
    assert on_nodes(nodes, f"test -L {sw}/tool || echo dir") == {n.name: "dir" for n in nodes}
    before = pids(name)
    assert len(before) == 3

    (tool / "VERSION").write_text("v2\n")
    new = tree_digest(tool)
    said: list[str] = []
    again = asyncio.run(
        lifecycle.up_async(load(spec_path), UpOptions(software_method="copy", say=said.append))
    )
    assert again.failed == {}, again.failed
    # the processes were restarted and read the new tree (before: still v1, or v2 v1)
    assert running(nodes, name) == {n.name: "v2 v2" for n in nodes}
    after = pids(name)
    assert set(after) == set(before) and all(after[n] != before[n] for n in before)
    assert "rollout" in again.phases and any("rollout" in line for line in said), said
    assert on_nodes(nodes, f"cat {sw}/tool/{DIGEST_FILE}") == {n.name: new for n in nodes}
    kept = on_nodes(nodes, f"cat {sw}/.tool.shoal/versions/{old}/VERSION")
    assert kept == {n.name: "v1" for n in nodes}  # the old copy kept aside, for a rollback

    same = asyncio.run(lifecycle.up_async(load(spec_path), copy()))
    assert "rollout" not in same.phases and pids(name) == after  # nothing changed: no restart

    (tool / "VERSION").write_text("v4\n")  # once more: the v1 copy goes, v2 is kept aside
    assert asyncio.run(lifecycle.up_async(load(spec_path), copy())).failed == {}
    assert running(nodes, name) == {n.name: "v4 v4" for n in nodes}
    assert on_nodes(nodes, f"ls {sw}/.tool.shoal/versions") == {n.name: new for n in nodes}


def test_a_failing_new_copy_is_swapped_back_and_the_old_one_runs(
    app: tuple[str, Path, list[Node]],
) -> None:
    name, spec_path, nodes = app
    tool = spec_path.parent / "tool"
    old = tree_digest(tool)
    assert asyncio.run(lifecycle.up_async(load(spec_path), copy())).failed == {}
    before = pids(name)
    for n in nodes:
        remote(n, f"touch .shoal/apps/{name}/refuse")
    (tool / "VERSION").write_text("v3\n")  # exits 3 where refused
    with pytest.raises(OperationError, match=r"software tool rolled back.*gate: .*server"):
        asyncio.run(lifecycle.up_async(load(spec_path), copy()))
    sw = f".shoal/apps/{name}/sw/tool"
    assert on_nodes(nodes, f"cat {sw}/{DIGEST_FILE} {sw}/VERSION") == {
        n.name: f"{old}\nv1" for n in nodes
    }
    assert running(nodes, name) == {n.name: "v1 v1" for n in nodes}
    status = asyncio.run(lifecycle.status_async(name))
    assert status.status == "running" and status.healthy, status.as_json()
    now = pids(name)
    assert set(now) == set(before)  # every member's service up (the touched restarted)


def test_a_pushed_tree_changed_by_copy_is_switched_and_rolled_back_to_the_push(
    app: tuple[str, Path, list[Node]],
) -> None:
    name, spec_path, nodes = app
    tool = spec_path.parent / "tool"
    sw = f".shoal/apps/{name}/sw/tool"
    assert asyncio.run(lifecycle.up_async(load(spec_path))).failed == {}  # a push: a symlink
    link = on_nodes(nodes, f"readlink {sw}")
    assert all(v.startswith(".tool.shoal/versions/") for v in link.values()), link
    for n in nodes:
        remote(n, f"touch .shoal/apps/{name}/refuse")
    (tool / "VERSION").write_text("v3\n")
    with pytest.raises(OperationError, match=r"software tool rolled back.*gate: .*server"):
        asyncio.run(lifecycle.up_async(load(spec_path), copy()))
    assert on_nodes(nodes, f"readlink {sw}") == link  # the push's version linked again
    assert running(nodes, name) == {n.name: "v1 v1" for n in nodes}

    (tool / "VERSION").write_text("v2\n")
    before = pids(name)
    assert asyncio.run(lifecycle.up_async(load(spec_path), copy())).failed == {}
    assert running(nodes, name) == {n.name: "v2 v2" for n in nodes}
    assert on_nodes(nodes, f"test -L {sw} || cat {sw}/{DIGEST_FILE}") == {
        n.name: tree_digest(tool) for n in nodes
    }
    assert all(pids(name)[n] != before[n] for n in before)
