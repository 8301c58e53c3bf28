"""``shoal.testing`` used the way a user's own tests would use it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from shoal.agentlink import fleet
from shoal.errors import ConnectError
from shoal.fanout import RunOptions, run
from shoal.nodes.model import Node
from shoal.testing import MockBehaviour, MockTransport, local_agents
from shoal.transport.base import CommandResult


def test_a_script_fans_out_against_the_mock_transport() -> None:
    transport = MockTransport(
        {
            "n1": MockBehaviour(respond=lambda cmd, env: CommandResult(0, b"up\n", b"")),
            "n2": MockBehaviour(connect_errors=[ConnectError("refused", "n2")] * 5),
        }
    )
    results = run(
        [Node("n1"), Node("n2"), Node("n3")],
        "uptime",
        RunOptions(retries=0),
        transport=transport,
    )
    assert results["n1"].stdout == "up\n"
    assert results["n2"].kind == "unreachable"
    assert results["n3"].ok  # no behaviour: succeeds with empty output
    assert sorted(node for node, _cmd, _env in transport.log.commands) == ["n1", "n3"]
    assert {cmd for _node, cmd, _env in transport.log.commands} == {"uptime"}


def test_a_script_starts_a_program_on_the_local_agent_double(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "ctl"))
    with local_agents(tmp_path, ["n1", "n2"]) as local:
        spec = fleet.proc_spec("web", ["sleep", "60"])
        started = asyncio.run(
            fleet.call_async(
                local.nodes,
                "proc.start",
                {"spec": spec},
                local.options,
                transport=local.transport,
                state=local.state,
            )
        )
        assert {r.value["state"] for r in started} == {"RUNNING"}
        pid_file = local.home("n1") / "agent.pid"
        agent_pid = int(pid_file.read_text())
        program_pid = started["n1"].value["pid"]
        assert Path(f"/proc/{program_pid}").exists()
    # leaving the block stopped the agents, and their programs with them
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(map(_alive, (agent_pid, program_pid))):
        time.sleep(0.02)
    assert not _alive(agent_pid) and not _alive(program_pid)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
