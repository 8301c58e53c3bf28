"""The controller side of the agent against real agents on this machine (no SSH).

The local agent double (:mod:`shoal.testing.localagents`: every "node" runs
local subprocesses in its own root directory) stands in for SSH, so install /
proc / events / sweep run against real daemonized agents and real Unix sockets.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.build import build
from shoal.agentlink import eventlog as events
from shoal.agentlink import fleet as agents
from shoal.agentlink.agentclient import AgentClient
from shoal.errors import AgentError, VersionMismatch
from shoal.nodes.model import Node
from shoal.ops import sweep
from shoal.state import State
from shoal.testing.localagents import LocalNodesTransport
from shoal.transport.local import LocalConnection


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "ctl"))
    state = State(tmp_path / "state.db")
    transport = LocalNodesTransport(tmp_path / "nodes")
    (tmp_path / "nodes").mkdir()
    nodes = [Node("n1"), Node("n2")]
    opts = agents.AgentOptions()
    yield {"state": state, "transport": transport, "nodes": nodes, "opts": opts, "tmp": tmp_path}
    transport.down.clear()
    asyncio.run(agents.stop_async(nodes, opts, transport=transport, state=state))
    state.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def agent_pid(tmp: Path, node: str) -> int:
    return int((tmp / "nodes" / node / ".shoal" / "agent.pid").read_text())


def test_install_skips_what_is_there_and_status_reports_no_skew(env: dict[str, Any]) -> None:
    st, tr, nodes, opts = env["state"], env["transport"], env["nodes"], env["opts"]
    current = build()  # pinned: the source tree may change while the test runs
    first = run(agents.install_async(nodes, opts, transport=tr, state=st, agent=current))
    assert first.ok, [r.reason for r in first.failed]
    assert [r.action for r in first] == ["installed", "installed"]
    build_id = current.build_id
    assert all(r.value["build"] == build_id for r in first)
    second = run(agents.install_async(nodes, opts, transport=tr, state=st, agent=current))
    assert [r.action for r in second] == ["up to date", "up to date"]
    status = run(agents.status_async(nodes, opts, transport=tr, state=st))
    assert status.ok
    assert agents.build_skew(status) == {f"protocol 1 build {build_id}": ["n1", "n2"]}
    # a changed build on disk is copied again, the running agent (same build) kept
    home = env["tmp"] / "nodes" / "n1" / ".shoal"
    (home / "agent.build").write_text("0000000000000000\n")
    pid = agent_pid(env["tmp"], "n1")
    again = run(agents.install_async(nodes[:1], opts, transport=tr, state=st, agent=current))
    assert again["n1"].action == "installed" and agent_pid(env["tmp"], "n1") == pid
    assert (home / "agent.build").read_text().strip() == build_id


def test_proc_start_status_stop_and_events_across_nodes(env: dict[str, Any]) -> None:
    st, tr, nodes, opts = env["state"], env["transport"], env["nodes"], env["opts"]
    assert run(agents.install_async(nodes, opts, transport=tr, state=st)).ok
    spec = agents.proc_spec("web", ["sleep", "300"], restart="always")
    started = run(agents.call_async(nodes, "proc.start", {"spec": spec}, opts, transport=tr))
    assert started.ok and {r.value["state"] for r in started} == {"RUNNING"}
    status = run(agents.call_async(nodes, "proc.status", {}, opts, transport=tr, state=st))
    assert [[p["name"] for p in r.value] for r in status] == [["web"], ["web"]]
    missing = run(agents.call_async(nodes, "proc.stop", {"name": "nope"}, opts, transport=tr))
    assert not missing.ok and missing["n1"].reason == "no program named 'nope'"
    stopped = run(agents.call_async(nodes, "proc.stop", {"name": "web"}, opts, transport=tr))
    assert {r.value["state"] for r in stopped} == {"STOPPED"}
    pulled = run(agents.pull_events_async(nodes, opts, transport=tr, state=st))
    assert all(r.value >= 3 for r in pulled)
    rows = events.query(st, ["n1"])
    assert [r.kind for r in rows if r.program == "web"] == ["started", "exited", "stopped"]
    assert run(agents.pull_events_async(nodes, opts, transport=tr, state=st))["n1"].value == 0
    assert events.query(st, limit=2)[-1].seq == max(r.seq for r in events.query(st, ["n2"]))


def test_sweep_revives_a_dead_agent_and_marks_unreachable_nodes_failed(
    env: dict[str, Any],
) -> None:
    from shoal.nodes.health import failed_names

    st, tr, nodes, opts = env["state"], env["transport"], env["nodes"], env["opts"]
    assert run(agents.install_async(nodes, opts, transport=tr, state=st)).ok
    spec = agents.proc_spec("svc", ["sleep", "300"])
    old = run(agents.call_async(nodes[:1], "proc.start", {"spec": spec}, opts, transport=tr))
    old_prog = old["n1"].value["pid"]
    dead = agent_pid(env["tmp"], "n1")
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{dead}") and time.monotonic() < deadline:
        time.sleep(0.02)
    tr.down.add("n2")
    report = run(sweep.sweep_async(nodes, opts, transport=tr, state=st, record=True))
    by_node = {e.node: e for e in report}
    assert by_node["n1"].status == "revived", by_node["n1"]
    assert "running: svc" in by_node["n1"].detail
    assert by_node["n2"].status == "failed" and "connection refused" in by_node["n2"].detail
    assert failed_names(st) == {"n2"}
    now = run(agents.call_async(nodes[:1], "proc.status", {"name": "svc"}, opts, transport=tr))
    assert now["n1"].value[0]["state"] == "RUNNING" and now["n1"].value[0]["pid"] != old_prog
    tr.down.clear()
    report = run(sweep.sweep_async(nodes, opts, transport=tr, state=st, record=True))
    assert [e.status for e in report] == ["ok", "ok"]
    assert failed_names(st) == set()


def test_commands_on_nodes_without_an_agent_say_so(env: dict[str, Any]) -> None:
    st, tr, nodes, opts = env["state"], env["transport"], env["nodes"], env["opts"]
    res = run(agents.call_async(nodes[:1], "proc.status", {}, opts, transport=tr, state=st))
    assert res["n1"].reason == "no agent installed in .shoal (run: shoal agent install)"
    report = run(sweep.sweep_async(nodes[:1], opts, transport=tr, state=st))
    assert report[0].status == "no agent"
    up = run(agents.install_async(nodes[:1], opts, transport=tr, state=st, upgrade_only=True))
    assert up["n1"].action == "skipped: no agent"


def test_client_reports_a_version_mismatch_and_agent_errors(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"

    async def scenario() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readline()
            request = json.loads(line)
            reply = {"v": 2, "id": request["id"], "ok": True, "result": {}}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(handle, path=str(path))
        conn = LocalConnection(Node("old"), tmp_path)
        client = await AgentClient.open(conn, str(tmp_path))
        with pytest.raises(VersionMismatch) as info:
            await client.call("hello")
        assert info.value.located() == "old: version mismatch: agent 2, controller 1"
        with pytest.raises(AgentError, match=r"connection|closed"):
            await client.call("hello")
        await client.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())


def test_upgrade_replaces_the_running_build_and_adopts_its_programs(
    env: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    import shoal.agent

    st, tr, nodes, opts = env["state"], env["transport"], env["nodes"], env["opts"]
    current = build()
    assert run(agents.install_async(nodes[:1], opts, transport=tr, state=st, agent=current)).ok
    spec = agents.proc_spec("svc", ["sleep", "300"])
    first = run(agents.call_async(nodes[:1], "proc.start", {"spec": spec}, opts, transport=tr))
    old_pid = first["n1"].value["pid"]
    source = Path(shoal.agent.__file__).parent
    newer = tmp_path / "newer"
    shutil.copytree(source, newer, ignore=shutil.ignore_patterns("__pycache__"))
    with open(newer / "backoff.py", "a") as handle:
        handle.write("\n# a newer build\n")
    next_build = build(newer)
    assert next_build.build_id != current.build_id
    up = run(
        agents.install_async(
            nodes, opts, transport=tr, state=st, upgrade_only=True, agent=next_build
        )
    )
    assert up["n1"].action == f"upgraded from {current.build_id} (1 programs adopted)"
    assert up["n1"].value["build"] == next_build.build_id
    assert up["n2"].action == "skipped: no agent"
    now = run(agents.call_async(nodes[:1], "proc.status", {"name": "svc"}, opts, transport=tr))
    program = now["n1"].value[0]
    assert program["state"] == "RUNNING" and program["pid"] == old_pid  # adopted, not restarted
    status = run(agents.status_async(nodes[:1], opts, transport=tr, state=st))
    assert agents.build_skew(status) == {f"protocol 1 build {next_build.build_id}": ["n1"]}


def test_without_streamlocal_forwarding_the_ctl_relay_is_used(
    env: dict[str, Any], tmp_path: Path
) -> None:
    from shoal.agentlink.agentclient import CtlClient

    st, nodes, opts = env["state"], env["nodes"][:1], env["opts"]
    tr = LocalNodesTransport(env["tmp"] / "nodes", forwarding=False)
    installed = run(agents.install_async(nodes, opts, transport=tr, state=st))
    assert installed.ok and installed["n1"].action == "installed", installed["n1"].reason
    spec = agents.proc_spec("svc", ["sleep", "300"])
    assert run(agents.call_async(nodes, "proc.start", {"spec": spec}, opts, transport=tr)).ok
    status = run(agents.call_async(nodes, "proc.status", {}, opts, transport=tr, state=st))
    assert status["n1"].value[0]["state"] == "RUNNING"

    async def client_type() -> type:
        conn = await tr.connect(nodes[0])
        client = await AgentClient.open(conn, str(env["tmp"] / "nodes" / "n1" / ".shoal"))
        await client.close()
        return type(client)

    assert run(client_type()) is CtlClient
    dead = agent_pid(env["tmp"], "n1")
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{dead}/exe") and time.monotonic() < deadline:
        time.sleep(0.02)
    report = run(sweep.sweep_async(nodes, opts, transport=tr, state=st))
    assert report[0].status == "revived" and "running: svc" in report[0].detail
