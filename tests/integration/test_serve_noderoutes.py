"""The service's node routes on a real lab: `shoal serve` as a subprocess, the client over
its socket. A warm run opens no SSH connection and answers what the CLI path answers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.client import ServiceClient
from shoal.fanout import RunOptions
from shoal.fanout.commands import run_async
from shoal.nodes import health
from shoal.nodes.inventory import import_nodes
from shoal.state import State

from .test_serve_links import sshd_established

pytestmark = pytest.mark.lab

SERVE = (
    "import os, pathlib; from shoal.control.controller import ServiceConfig; "
    "from shoal.service.servedaemon import serve; "
    "serve(ServiceConfig(pathlib.Path(os.environ['SHOAL_HOME'])))"
)


@pytest.fixture
def service(lab: Any, tmp_path: Path) -> Iterator[tuple[ServiceClient, Path]]:
    """A service over its own state directory holding the lab's nodes; always stopped."""
    home = tmp_path / "svc"
    home.mkdir(mode=0o700)
    with State(home / "state.db") as st:
        import_nodes(lab.nodes(), state=st)
    env = {**os.environ, "SHOAL_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-c", SERVE], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        client = None
        while client is None:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the service did not listen within 30 s"
            client = ServiceClient.locate(home)
            time.sleep(0.05)
        yield client, home
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_links_up(client: ServiceClient, count: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = client.status()
        if status["nodes"].get("links", {}).get("up") == count:
            return dict(status)
        assert time.monotonic() < deadline, status["nodes"]
        time.sleep(0.1)


def test_a_run_through_the_service_opens_no_connection(lab: Any, service: Any) -> None:
    client, home = service
    nodes = lab.nodes()
    before = wait_links_up(client, len(nodes))
    sockets = [sshd_established(lab, n) for n in nodes]
    command = 'echo "$SHOAL_NODE $SHOAL_INDEX"; exit $((SHOAL_INDEX % 2))'
    body = {"command": command}
    lines = list(client.stream("POST", "/api/v1/runs", query={"stream": 1}, body=body))
    after = client.status()
    assert after["nodes"]["connects"] == before["nodes"]["connects"]
    assert [sshd_established(lab, n) for n in nodes] == sockets

    records, last = lines[:-1], lines[-1]
    assert last["summary"]["nodes"] == len(nodes)
    assert last["summary"]["kinds"]["ok"] == 4 and last["summary"]["kinds"]["failed"] == 4
    assert last["summary"]["ok"] is False
    cold = asyncio.run(run_async(nodes, command, RunOptions()))
    strip = ("duration", "attempts")
    warm_rows = sorted(({k: v for k, v in r.items() if k not in strip} for r in records),
                       key=lambda r: r["index"])  # fmt: skip
    cold_rows = [{k: v for k, v in r.items() if k not in strip} for r in cold.to_json()]
    assert warm_rows == cold_rows
    # health as the CLI records it: nodes that exited 1 are failed with the CLI's reason
    failed = {f["name"]: f["reason"] for f in client.request("GET", "/api/v1/nodes/failed")}
    with State(home / "state.db") as st:
        cli_failed, _ = health.verdicts(cold, health.Policy.OUTCOME)
        assert failed == cli_failed
        assert {f.name for f in health.failures(st)} == set(cli_failed)

    listed = {n["name"]: n for n in client.request("GET", "/api/v1/nodes")}
    assert set(listed) == {n.name for n in nodes}
    assert all(n["link"] == "up" for n in listed.values())
    assert all(isinstance(n["facts"].get("rtt_ms"), float) for n in listed.values())
    assert listed["n2"]["failed"] == "failed: exit 1"


def test_program_operations_through_the_service(lab: Any, service: Any) -> None:
    client, _ = service
    nodes = lab.nodes()[:2]
    wait_links_up(client, len(lab.nodes()))
    selection = ",".join(n.name for n in nodes)
    spec = {"name": "svcsleep", "command": ["sleep", "300"]}
    started = list(client.stream("POST", "/api/v1/proc/start", body={"selection": selection,
                                                                      "spec": spec}))  # fmt: skip
    assert started[-1]["summary"]["ok"] is True, started
    try:
        status = list(client.stream("POST", "/api/v1/proc/status",
                                    body={"selection": selection, "name": "svcsleep"}))  # fmt: skip
        assert [r["value"][0]["state"] for r in status[:-1]] == ["RUNNING", "RUNNING"], status
    finally:
        body = {"selection": selection, "name": "svcsleep"}
        removed = list(client.stream("POST", "/api/v1/proc/remove", body=body))
    assert removed[-1]["summary"]["ok"] is True, removed
