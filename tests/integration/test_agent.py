"""The node agent over real SSH on a lab of real nodes (issue 5's required tests).

The lab's nodes are network namespaces with their own sshd; the controller
installs the agent over SSH, reaches its socket through SSH streamlocal
forwarding only, and sweeps. Every agent and program started here is stopped
at the end of the module (the lab itself is taken down by its fixture).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.agent.build import build
from shoal.agentlink import eventlog as events
from shoal.agentlink import fleet as agents
from shoal.agentlink.agentclient import AgentClient
from shoal.nodes.model import Node
from shoal.ops import sweep
from shoal.state import State
from shoal.transport.ssh import SSHTransport

from .conftest import remote, unmount

pytestmark = pytest.mark.lab


def opts(**kw: Any) -> agents.AgentOptions:
    return agents.AgentOptions(**kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def fleet(lab: Any) -> Iterator[list[Node]]:
    nodes = lab.nodes()
    first = run(agents.install_async(nodes, opts()))
    assert first.ok, [(r.node, r.reason) for r in first.failed]
    yield nodes
    for node in nodes:
        lab.revive(node.name)
    run(agents.call_async(nodes, "proc.remove", {"name": "web"}, opts()))
    run(agents.stop_async(nodes, opts()))


def program(node: Node, name: str) -> dict[str, Any]:
    res = run(agents.call_async([node], "proc.status", {"name": name}, opts()))
    assert res.ok, res[node.name].reason
    value: dict[str, Any] = res[node.name].value[0]
    return value


def wait_for(predicate: Any, timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def test_install_is_skipped_where_this_build_runs(fleet: list[Node]) -> None:
    again = run(agents.install_async(fleet, opts()))
    assert again.ok
    assert {r.action for r in again} == {"up to date"}
    status = run(agents.status_async(fleet, opts()))
    assert status.ok
    assert agents.build_skew(status) == {
        f"protocol 1 build {build().build_id}": [n.name for n in fleet]
    }
    # the agent runs detached: its own session, not a child of any sshd
    pid = status[fleet[0].name].value["pid"]
    out = remote(fleet[0], f"ps -o sid=,ppid= -p {pid}").split()
    assert int(out[0]) == pid or int(out[1]) == 1


def test_proc_start_status_stop_across_nodes(fleet: list[Node]) -> None:
    spec = agents.proc_spec("web", ["sh", "-c", "while :; do echo up; sleep 1; done"])
    started = run(agents.proc_start_async(fleet, spec, opts()))
    assert started.ok and {r.value["state"] for r in started} == {"RUNNING"}
    status = run(agents.call_async(fleet, "proc.status", {}, opts()))
    assert [r.node for r in status] == [n.name for n in fleet]
    assert all(any(p["name"] == "web" for p in r.value) for r in status)
    stopped = run(agents.call_async(fleet[:2], "proc.stop", {"name": "web"}, opts()))
    assert {r.value["state"] for r in stopped} == {"STOPPED"}
    pid = started[fleet[0].name].value["pid"]
    assert remote(fleet[0], f"kill -0 {pid} 2>/dev/null && echo alive || echo gone") == "gone\n"
    again = run(agents.call_async(fleet[:2], "proc.restart", {"name": "web"}, opts()))
    assert again.ok


def test_sigkill_of_a_program_restarts_it_and_the_event_reaches_the_controller(
    fleet: list[Node],
) -> None:
    node = fleet[2]
    spec = agents.proc_spec("web", ["sh", "-c", "while :; do echo up; sleep 1; done"])
    run(agents.proc_start_async([node], spec, opts()))
    old = program(node, "web")["pid"]
    remote(node, f"kill -9 {old}")
    began = time.monotonic()
    new = wait_for(lambda: program(node, "web")["pid"] not in (None, old), 5)
    assert new and time.monotonic() - began < 5.0  # scheduled ~0.2 s after; loose for load
    with State() as state:
        run(agents.pull_events_async([node], opts(), state=state))
        rows = [e for e in events.query(state, [node.name]) if e.program == "web"]
    assert any(e.kind == "exited" and e.detail == "killed by SIGKILL" for e in rows)
    assert rows[-1].kind in ("started", "restarted")


def test_sweep_revives_a_killed_agent_and_its_programs_run_again(fleet: list[Node]) -> None:
    node = fleet[3]
    spec = agents.proc_spec("web", ["sh", "-c", "while :; do echo up; sleep 1; done"])
    run(agents.proc_start_async([node], spec, opts()))
    before = program(node, "web")["pid"]
    remote(node, "kill -9 $(cat .shoal/agent.pid)")
    dead = run(agents.call_async([node], "proc.status", {}, opts()))
    assert not dead.ok and "agent not running" in dead[node.name].reason
    report = {e.node: e for e in run(sweep.sweep_async(fleet, opts()))}
    assert report[node.name].status == "revived", report[node.name]
    assert all(report[n.name].status == "ok" for n in fleet if n != node)
    back = program(node, "web")
    assert back["state"] == "RUNNING" and back["pid"] != before


def test_a_killed_node_is_marked_failed_and_healthy_once_revived(
    lab: Any, fleet: list[Node]
) -> None:
    from shoal.nodes.health import failed_names

    node = fleet[4]
    lab.kill(node.name)
    try:
        report = {
            e.node: e for e in run(sweep.sweep_async(fleet, opts(connect_timeout=3), record=True))
        }
        assert report[node.name].status == "failed"
        with State() as state:
            assert node.name in failed_names(state)
    finally:
        lab.revive(node.name)
    report = {e.node: e for e in run(sweep.sweep_async(fleet, opts(), record=True))}
    # everything on the node died with it: the sweep starts its agent again
    assert report[node.name].status == "revived", report[node.name]
    with State() as state:
        assert node.name not in failed_names(state)
    assert program(node, "web")["state"] == "RUNNING"


def test_a_controller_of_another_version_gets_only_the_mismatch(fleet: list[Node]) -> None:
    node = fleet[0]

    async def go() -> tuple[bytes, bytes]:
        conn = await SSHTransport().connect(node, timeout=10)
        try:
            status = await agents.status_async([node], opts())
            home = status[node.name].value["home"]
            reader, writer = await conn.open_unix(f"{home}/agent.sock")
            writer.write(json.dumps({"v": 99, "id": 1, "op": "hello"}).encode() + b"\n")
            await writer.drain()
            first = await asyncio.wait_for(reader.readline(), 10)
            rest = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            client = await AgentClient.open(conn, home)
            await client.call("hello")
            await client.close()
            return first, rest
        finally:
            await conn.close()

    first, rest = run(go())
    reply = json.loads(first)
    assert reply["error"] == "version mismatch: agent 1, controller 99"
    assert reply["ok"] is False and rest == b""


def test_a_program_that_exits_at_once_backs_off_then_is_fatal(fleet: list[Node]) -> None:
    node = fleet[5]
    spec = agents.proc_spec(
        "crash", ["sh", "-c", "exit 7"], backoff_base=0.05, backoff_jitter=0.0, fatal_after=4
    )
    run(agents.proc_start_async([node], spec, opts()))
    assert wait_for(lambda: program(node, "crash")["state"] == "FATAL", 10)
    with State() as state:
        run(agents.pull_events_async([node], opts(), state=state))
        rows = [e for e in events.query(state, [node.name]) if e.program == "crash"]
    delays = [float(e.detail.split()[2][:-1]) for e in rows if e.kind == "backoff"]
    assert delays == [0.05, 0.1, 0.2]
    assert rows[-1].kind == "fatal" and "last: exit code 7" in rows[-1].detail
    run(agents.call_async([node], "proc.remove", {"name": "crash"}, opts()))


def test_stop_leaves_no_child_behind(fleet: list[Node]) -> None:
    node = fleet[6]
    script = "sleep 301 & (trap '' TERM; sleep 302) & trap '' TERM; sleep 303 & wait"
    spec = agents.proc_spec("family", ["sh", "-c", script], stop_grace=0.5)
    pgid = run(agents.proc_start_async([node], spec, opts()))[node.name].value["pid"]
    # live members of the group (zombies wait for this machine's init to reap them)
    count = f"ps -e -o pgid=,stat= | awk '$1 == {pgid} && $2 !~ /^Z/' | wc -l"
    assert wait_for(lambda: int(remote(node, count)) >= 4, 5)
    stopped = run(agents.call_async([node], "proc.stop", {"name": "family"}, opts()))
    assert stopped[node.name].value["state"] == "STOPPED"
    assert int(remote(node, count)) == 0
    assert remote(node, "pgrep -x sleep -a | grep -c 'sleep 30[123]' || true").strip() == "0"
    run(agents.call_async([node], "proc.remove", {"name": "family"}, opts()))


def test_a_failing_health_command_restarts_the_program(fleet: list[Node]) -> None:
    node = fleet[7]
    flag = f"/tmp/healthy-{node.name}"
    remote(node, f"touch {flag}")
    spec = agents.proc_spec(
        "svc",
        ["sleep", "300"],
        health=f"test -e {flag}",
        health_interval=0.2,
        health_retries=2,
    )
    old = run(agents.proc_start_async([node], spec, opts()))[node.name].value["pid"]
    assert wait_for(lambda: program(node, "svc")["health"] == "ok", 5)
    remote(node, f"rm {flag}")
    assert wait_for(lambda: program(node, "svc")["pid"] not in (None, old), 5)
    with State() as state:
        run(agents.pull_events_async([node], opts(), state=state))
        rows = [e for e in events.query(state, [node.name]) if e.program == "svc"]
    assert "health_failed" in [e.kind for e in rows]
    assert any(e.kind == "restarted" and e.detail.startswith("health check failed") for e in rows)
    run(agents.call_async([node], "proc.remove", {"name": "svc"}, opts()))


def test_log_rotation_bounds_disk_use(fleet: list[Node]) -> None:
    node = fleet[1]
    spec = agents.proc_spec(
        "chatty",
        ["sh", "-c", "i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done"],
        restart="never",
        log_max_bytes=5000,
        log_backups=2,
        log_budget_bytes=3 * 5000,  # nothing collects these logs: the budget bounds them
    )
    run(agents.proc_start_async([node], spec, opts()))
    assert wait_for(lambda: program(node, "chatty")["state"] == "EXITED", 10)
    sizes = remote(node, "ls .shoal/logs/ | grep chatty; du -cb .shoal/logs/chatty.log* | tail -1")
    names, total = sizes.split()[:-2], int(sizes.split()[-2])
    assert names == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    assert total <= 3 * 5000
    logs = run(agents.logs_async(node, "chatty", lines=1, options=opts()))
    assert logs.value["data"] == "line 4999\n"
    run(agents.call_async([node], "proc.remove", {"name": "chatty"}, opts()))


def test_an_agent_on_a_full_disk_keeps_running_and_reports(fleet: list[Node]) -> None:
    node = fleet[0]
    area = "/tmp/shoal-full"
    mounted = f"mkdir -p {area} && mount -t tmpfs -o size=256k tmpfs {area} && echo ok"
    if "ok" not in remote(node, f"{mounted} || true"):
        pytest.skip("cannot mount a tmpfs inside the lab node")
    small = opts(home=f"{area}/.shoal")
    try:
        assert run(agents.install_async([node], small)).ok
        spec = agents.proc_spec("filler", ["yes", "fill the disk"])
        assert run(agents.proc_start_async([node], spec, small)).ok

        def reported() -> bool:
            status = run(agents.status_async([node], small))[node.name]
            return status.ok and any("No space left" in e for e in status.value["errors"])

        assert wait_for(reported, 10, step=0.2)
        status = run(agents.status_async([node], small))[node.name].value
        assert status["programs"][0]["state"] == "RUNNING"
        report = {e.node: e for e in run(sweep.sweep_async([node], small))}
        assert report[node.name].status == "ok"
        assert "errors: No space left on device" in report[node.name].detail
    finally:
        run(agents.stop_async([node], small))
        unmount(node, area)
        remote(node, f"rmdir {area}")
