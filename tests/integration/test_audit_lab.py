"""``shoal audit`` on a lab of 8 real nodes (issue 15 item 3): the minority named with
its files, no quorum → no repair, ``--repair`` restores the majority's bytes (the old
file kept aside), a re-audit hashes only what changed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.filehash import STAGING
from shoal.agentlink import fleet as agents
from shoal.content.scan import CACHE_SCHEMA
from shoal.nodes.health import clear_failed
from shoal.nodes.model import Node
from shoal.ops import audit
from shoal.state import State

from .conftest import remote, unique_lab_name

pytestmark = pytest.mark.lab

SHOAL = [sys.executable, "-m", "shoal.cli.main"]


def shoal(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHOAL, *argv], capture_output=True, text=True, timeout=timeout)


def records(p: subprocess.CompletedProcess[str], kind: str) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, p.stdout.splitlines()) if r.get("record") == kind]


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Iterator[list[Node]]:
    clear_failed()
    nodes = lab.nodes()
    installed = asyncio.run(agents.install_async(nodes, agents.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield nodes
    asyncio.run(agents.stop_async(nodes, agents.AgentOptions()))


def make_tree(nodes: list[Node]) -> str:
    """The same small tree in /tmp on every node (the lab gives each its own /tmp)."""
    root = f"/tmp/{unique_lab_name('audit')}"
    script = (
        f"mkdir -p {root}/sub && printf 'one\\n' > {root}/a.txt && printf 'two\\n' > {root}/b.txt"
        f" && printf 'deep\\n' > {root}/sub/c.txt && chmod 0644 {root}/*.txt"
        f" && ln -s a.txt {root}/link"
    )
    p = shoal("run", "-s", ",".join(n.name for n in nodes), script)
    assert p.returncode == 0, p.stderr
    return root


def names(nodes: list[Node]) -> str:
    return ",".join(n.name for n in nodes)


def test_three_of_eight_changed_are_exactly_the_minority_with_their_files(
    fleet: list[Node],
) -> None:
    root = make_tree(fleet)
    n2, n5, n7 = fleet[1], fleet[4], fleet[6]
    remote(n2, f"printf 'tampered\\n' > {root}/a.txt")
    remote(n5, f"chmod 0600 {root}/sub/c.txt")
    remote(n7, f"printf 'x' > {root}/sub/extra && rm {root}/b.txt")
    p = shoal("audit", "-s", names(fleet), "--json", root)
    assert p.returncode == 1, p.stderr
    files = {r["path"]: r for r in records(p, "file")}
    assert set(files) == {
        f"{root}/a.txt",
        f"{root}/sub/c.txt",
        f"{root}/sub/extra",
        f"{root}/b.txt",
    }
    assert all(r["quorum"] and r["answered"] == 8 for r in files.values())
    minority = {
        (m["node"], path, tuple(m["differs"])) for path, r in files.items() for m in r["minority"]
    }
    assert minority == {
        (n2.name, f"{root}/a.txt", ("digest",)),
        (n5.name, f"{root}/sub/c.txt", ("mode",)),
        (n7.name, f"{root}/sub/extra", ("extra",)),
        (n7.name, f"{root}/b.txt", ("missing",)),
    }
    assert "plan %audit-minority" in p.stderr
    chosen = shoal("select", "--json", "%audit-minority")
    assert chosen.returncode == 0, chosen.stderr
    assert set(json.loads(chosen.stdout)["nodes"]) == {n2.name, n5.name, n7.name}

    repaired = shoal("audit", "-s", names(fleet), "--repair", "--json", root)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    done = {(r["node"], r["path"]): r for r in records(repaired, "repair")}
    assert {k: r["action"] for k, r in done.items()} == {
        (n2.name, f"{root}/a.txt"): "write",
        (n5.name, f"{root}/sub/c.txt"): "chmod",
        (n7.name, f"{root}/sub/extra"): "aside",
        (n7.name, f"{root}/b.txt"): "write",
    }
    # the bytes came through the push's staging deployment, which is gone afterwards
    # and never recorded as a pushed directory
    assert done[(n2.name, f"{root}/a.txt")].get("via") == "push"
    assert done[(n7.name, f"{root}/b.txt")].get("via") == "push"
    for node in (n2, n7):
        assert remote(node, f"test -e ~/{STAGING} && echo there || echo gone").strip() == "gone"
    with State() as st:
        staged = st.db.execute(
            "SELECT kind, node, detail FROM events WHERE topic='audit' AND kind='staged'"
            " AND detail LIKE ?",
            (f"{STAGING}/%",),
        ).fetchall()
        deployed = st.db.execute(
            "SELECT count(*) FROM depot_deployed WHERE dir LIKE ?", (f"{STAGING}/%",)
        ).fetchone()[0]
        st.ensure("content_scan", CACHE_SCHEMA)
        cached = st.db.execute(
            "SELECT count(*) FROM content_scan WHERE path LIKE '%/shoal-audit-%'"
        ).fetchone()[0]
    assert {r[1] for r in staged} >= {n2.name, n7.name}
    assert deployed == 0 and cached == 0
    assert remote(n2, f"cat {root}/a.txt") == "one\n"
    assert remote(n2, f"cat {root}/a.txt.shoal-audit-*") == "tampered\n"  # kept aside
    assert remote(n5, f"stat -c %a {root}/sub/c.txt").strip() == "644"
    assert remote(n7, f"cat {root}/b.txt") == "two\n"
    assert remote(n7, f"test -e {root}/sub/extra && echo there || echo gone").strip() == "gone"
    again = shoal("audit", "-s", names(fleet), "--json", root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert records(again, "file") == []


def test_a_repair_whose_staged_copy_is_corrupted_on_a_node_is_refused_by_hash(
    fleet: list[Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole repair (fetch, push to the staging deployment, audit.replace) with the
    staged copy corrupted on the minority node between the push and the replace: the
    agent refuses it by hash, the node's file stays as it was, the staging is removed."""
    root = make_tree(fleet)
    victim = fleet[1]
    remote(victim, f"printf 'tampered\\n' > {root}/a.txt")
    digest = hashlib.sha256(b"one\n").hexdigest()
    report = asyncio.run(audit.audit_async(fleet, [root]))
    assert report.minority_nodes == [victim.name]
    real = audit._fix_step
    corrupted: list[str] = []

    async def corrupt_then_fix(conn: Any, node: Node, *args: Any, **kw: Any) -> Any:
        f = f"$(readlink -f ~/{kw['stage']})/{digest}"
        done = await conn.run(f"f={f}; chmod u+w $f; printf 'evil\\n' > $f")
        assert done.exit_status == 0, done.stderr
        corrupted.append(node.name)
        return await real(conn, node, *args, **kw)

    monkeypatch.setattr(audit, "_fix_step", corrupt_then_fix)
    results = asyncio.run(audit.repair_async(fleet, report))
    assert corrupted == [victim.name]
    failed = results[victim.name]
    assert not failed.ok
    evil = hashlib.sha256(b"evil\n").hexdigest()
    assert f"sha256 is {evil[:12]}, not {digest[:12]}" in str(failed.reason)
    assert remote(victim, f"cat {root}/a.txt") == "tampered\n"
    assert remote(victim, f"ls -a {root} | grep -c shoal-audit || true").strip() == "0"
    assert remote(victim, f"test -e ~/{STAGING} && echo there || echo gone").strip() == "gone"


def test_four_of_eight_has_no_quorum_and_is_not_repaired(fleet: list[Node]) -> None:
    root = make_tree(fleet)
    for node in fleet[:4]:
        remote(node, f"printf 'other\\n' > {root}/a.txt")
    p = shoal("audit", "-s", names(fleet), "--repair", root)
    assert p.returncode == 1, p.stderr
    assert (
        f"{root}/a.txt: no quorum (4 of 8 node(s) agree, tied, 5 needed): not repaired" in p.stderr
    )
    assert "repair(s)" not in p.stderr
    for node in fleet[:4]:
        assert remote(node, f"cat {root}/a.txt") == "other\n"
    for node in fleet[4:]:
        assert remote(node, f"cat {root}/a.txt") == "one\n"
    assert remote(fleet[0], f"ls {root} | grep -c shoal-audit || true").strip() == "0"


def test_a_reaudit_hashes_only_the_changed_files(fleet: list[Node]) -> None:
    root = make_tree(fleet)
    first = shoal("audit", "-s", names(fleet), "--json", root)
    assert first.returncode == 0, first.stderr
    assert {r["node"]: r["hashed"] for r in records(first, "node")} == {n.name: 3 for n in fleet}
    remote(fleet[3], f"printf 'changed\\n' > {root}/sub/c.txt")
    second = shoal("audit", "-s", names(fleet), "--json", root)
    assert second.returncode == 1, second.stderr
    hashed = {r["node"]: (r["hashed"], r["cached"]) for r in records(second, "node")}
    assert hashed == {n.name: ((1, 2) if n is fleet[3] else (0, 3)) for n in fleet}


def test_an_unreachable_node_is_reported_apart_not_dropped(lab: Any, fleet: list[Node]) -> None:
    root = make_tree(fleet)
    victim = fleet[-1]
    lab.cut(victim.name)
    try:
        p = shoal("audit", "-s", names(fleet), "--json", "--connect-timeout", "2", root)
    finally:
        lab.heal(victim.name)
        shoal("nodes", "clear-failed", "-s", victim.name)
    assert p.returncode == 3, p.stderr
    out = [json.loads(line) for line in p.stdout.splitlines()]
    unanswered = [r for r in out if "record" not in r]
    assert [(r["node"], r["ok"]) for r in unanswered] == [(victim.name, False)]
    assert {r["node"] for r in records(p, "node")} == {n.name for n in fleet[:-1]}


def test_the_service_audits_pushed_directories_on_its_schedule(
    fleet: list[Node], tmp_path: Path
) -> None:
    from shoal.content.depot import record_deployed
    from shoal.control.controller import Controller, ServiceConfig
    from shoal.nodes.plans import get_plan

    root = make_tree(fleet)
    remote(fleet[2], f"printf 'drift\\n' > {root}/b.txt")
    with State(tmp_path / "state.db") as st:  # as a push records it
        record_deployed(st, root, {n.name: "v1" for n in fleet})
    config = ServiceConfig(
        state_dir=tmp_path, sweep_interval=0, logs_interval=0, audit_interval=1.0
    )
    controller = Controller(config)
    controller.managed = lambda: fleet  # type: ignore[method-assign]

    def job() -> dict[str, Any]:
        return next(s for s in controller.scheduler.status() if s["name"] == "audit")

    seen: list[dict[str, Any]] = []

    async def serve_a_while() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(controller.run(stop))
        try:
            for _ in range(120):  # bounded: 60 s
                await asyncio.sleep(0.5)
                if job()["last_end"]:  # the first run's outcome (a later one may start)
                    seen.append(job())
                    break
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    try:
        asyncio.run(serve_a_while())
        assert seen and f"minority {fleet[2].name}" in str(seen[0]["last_status"]), seen
    finally:
        controller.close()
    with State(tmp_path / "state.db") as st:
        query = "SELECT kind, node, detail FROM events WHERE topic='audit'"
        rows = [tuple(r) for r in st.db.execute(query)]
        assert ("minority", fleet[2].name, f"{root}/b.txt: digest") in rows
        assert get_plan("audit-minority", state=st).expr == fleet[2].name
