"""The depot on a lab of real nodes (issue 16 items 1, 2): push from ``depot:``,
a new version moving only its new chunks, ``rm`` refused while nodes or an app
use a version, an app whose software is ``depot:NAME@VERSION``."""

from __future__ import annotations

import asyncio
import hashlib
import random
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink import fleet as agents
from shoal.app import lifecycle, store
from shoal.app.appspec import load
from shoal.app.software import depot_users
from shoal.content.depot import Depot
from shoal.content.push import PushOptions, push_async
from shoal.errors import ContentError
from shoal.nodes.health import clear_failed
from shoal.nodes.model import Node
from shoal.state import State

from .conftest import remote

pytestmark = pytest.mark.lab


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Iterator[list[Node]]:
    clear_failed()
    nodes = lab.nodes()
    installed = run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield nodes
    run(agents.stop_async(nodes, agents.AgentOptions()))


def make_tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "data.bin").write_bytes(random.Random(7).randbytes(2_000_000))
    (root / "bin" / "run").write_text("#!/bin/sh\necho depot-run-v1\n")
    (root / "bin" / "run").chmod(0o755)
    return root


def test_push_from_the_depot_then_a_new_version_moves_only_its_new_chunks(
    fleet: list[Node], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    archive = tmp_path / "pkg-1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=".")
    with State() as st:
        depot = Depot(st)
        one = depot.put(str(archive), "dpkg", "1").entry  # from a tarball, never extracted
        opts = PushOptions(durable=False)
        first = run(push_async(fleet, "depot:dpkg@1", "t-depot/pkg", opts, state=st))
        assert first.ok, [(n.node, n.reason) for n in first.failed]
        assert first.version == one.version
        want = hashlib.sha256((src / "data.bin").read_bytes()).hexdigest()
        for node in (fleet[0], fleet[-1]):
            assert remote(node, "sha256sum t-depot/pkg/data.bin").split()[0] == want
            assert remote(node, "t-depot/pkg/bin/run").strip() == "depot-run-v1"
        with open(src / "data.bin", "r+b") as f:  # a 100-byte edit in the middle
            f.seek(1_000_000)
            f.write(b"y" * 100)
        two = depot.put(str(src), "dpkg", "2")
        assert 0 < two.new_bytes < 200_000
        second = run(push_async(fleet, "depot:dpkg@latest", "t-depot/pkg", opts, state=st))
        assert second.ok, [(n.node, n.reason) for n in second.failed]
        assert second.version == two.entry.version
        for n in second:  # each node fetched only what changed, not the 2 MB tree
            assert 0 < n.received < 200_000, (n.node, n.received)
        assert second.source_sent < 200_000
        # every node's version is traced to its depot entry; version 1 is no longer
        # in use, version 2 is and cannot be removed
        assert {d.node for d in depot.deployments(two.entry.version)} == {n.name for n in fleet}
        with pytest.raises(ContentError, match=r"dpkg@2 is in use by n\d+:t-depot/pkg"):
            depot.remove("dpkg@2")
        assert depot.remove("dpkg@1").version == one.version
        assert depot.gc().chunks >= 1
        third = run(push_async(fleet[:2], "depot:dpkg@2", "t-depot/pkg", opts, state=st))
        assert third.ok and all(n.received == 0 for n in third)  # still whole after gc


def test_an_app_runs_software_from_the_depot_and_rm_names_the_app(
    fleet: list[Node], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src")
    (src / "bin" / "run").write_text("#!/bin/sh\necho from-the-depot\n")
    with State() as st:
        entry = Depot(st).put(str(src), "dapp", "1.0").entry
    path = tmp_path / "app.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            app: depotapp
            software:
              tool: {source: "depot:dapp@1.0"}
            components:
              c:
                select: "n[1-2]"
                count: 2
                software: [tool]
                processes:
                  - {name: say, run: "${sw.tool}/bin/run"}
            """
        )
    )
    try:
        report = run(lifecycle.up_async(load(path)))
        assert not report.failed, report.failed
        logs = run(lifecycle.logs_async("depotapp", lines=5))
        assert all("from-the-depot" in logs[n] for n in ("n1", "n2")), logs
        status = run(lifecycle.status_async("depotapp"))
        assert status.versions["tool"] == entry.version
        with State() as st:
            users = depot_users(st)
            assert users[entry.version] == ["app depotapp (software tool)"]
            with pytest.raises(ContentError, match=r"in use by .*app depotapp"):
                Depot(st).remove("dapp@1.0", users)
    finally:
        with State() as st:
            present = store.get_app(st, "depotapp") is not None
        if present:
            run(lifecycle.down_async("depotapp"))
