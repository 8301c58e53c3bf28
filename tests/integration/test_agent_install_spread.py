"""Agent install over the data plane (issue 18): behind a 4 Mbit/s source link the
controller sends the zipapp to the first wave only, the rest fetch it from peers; a
corrupt peer copy is refused and the node's agent stays as it was."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.build import build
from shoal.agentlink import fleet
from shoal.content import agentspread
from shoal.errors import AgentError
from shoal.lab import Lab, LabSpec
from shoal.lab.labspec import Naming, Shaping, parse_rate
from shoal.state import State
from shoal.transport.ssh import SSHTransport

from ..conftest import lab_skip_reason, remote, unique_lab_name

pytestmark = pytest.mark.lab

NODES = 16


@pytest.fixture(scope="module")
def slow() -> Iterator[Lab]:
    """16 nodes; the controller's own link at 4 Mbit/s each way."""
    why = lab_skip_reason()
    if why:
        pytest.skip(why)
    lab = Lab.up(
        LabSpec(
            n=NODES,
            name=unique_lab_name("as"),
            controller=Shaping(rate_bps=parse_rate("4mbit")),
        )
    )
    try:
        yield lab
    finally:
        lab.down()


def sent(lab: Lab) -> int:
    """Bytes the controller's veth has sent so far."""
    link = Naming(lab.name).root_link
    return int(Path(f"/sys/class/net/{link}/statistics/tx_bytes").read_text())


def uninstall(nodes: list[Any]) -> None:
    """No agent running, no working area: the next install starts from nothing."""
    stopped = asyncio.run(fleet.stop_async(nodes))
    assert stopped.ok, [r.located() for r in stopped.failed]
    for node in nodes:
        remote(node, "rm -rf ~/.shoal")


def test_install_sends_the_zipapp_once_per_first_wave_node(slow: Lab, tmp_path: Path) -> None:
    agent = build()
    nodes = slow.nodes()
    uninstall(nodes)
    before = sent(slow)
    direct = asyncio.run(agentspread.install_async(nodes, agent=agent, spread=False))
    by_sftp = sent(slow) - before
    assert direct.ok, [r.located() for r in direct.failed]
    assert by_sftp > NODES * agent.size  # a copy per node, and the SSH around it
    uninstall(nodes)
    with State(tmp_path / "state.db") as st:
        share = agentspread.Sharing(agent, fleet.AgentOptions(), None, st, fallback=False)
        before = sent(slow)
        results = asyncio.run(
            agentspread.install_async(nodes, state=st, agent=agent, sharing=share)
        )
        spread = sent(slow) - before
    assert results.ok, [r.located() for r in results.failed]
    assert {r.action for r in results} == {"installed"}
    assert {r.value["build"] for r in results} == {agent.build_id}
    # two by SFTP, the other fourteen from peers, none from this machine after a refusal
    assert sorted(share.fetched) == sorted(n.name for n in nodes[agentspread.FIRST :])
    assert share.fell_back == {}
    # the same SSH conversations, but two copies instead of sixteen
    assert spread < by_sftp - (NODES - agentspread.FIRST - 2) * agent.size, (spread, by_sftp)
    for node in nodes:
        got = remote(node, "sha256sum ~/.shoal/agent.pyz").split()[0]
        assert got == agent.sha256, node.name
    # every share was closed: a holder asked again holds none
    holders = share.holders
    assert len(holders) >= agentspread.FIRST
    asked = asyncio.run(fleet.call_async(holders, "agent.unshare", {"token": "x" * 24}))
    assert all(r.ok and r.value == {"sharing": False} for r in asked), list(asked)
    print(f"source sent {by_sftp} bytes by SFTP to each, {spread} spread ({agent.size} a copy)")


def test_a_corrupt_peer_copy_is_refused_and_the_old_agent_stays(slow: Lab, tmp_path: Path) -> None:
    agent = build()
    nodes = slow.nodes()
    holder, target = nodes[0], nodes[-1]
    asyncio.run(agentspread.install_async([holder, target], agent=agent, spread=False))
    before = remote(target, "sha256sum ~/.shoal/agent.pyz").split()[0]
    remote(holder, "touch ~/.shoal/TEST_CORRUPT_CHUNKS")

    async def go(share: agentspread.Sharing) -> Any:
        await share.add([holder])
        assert share.peers, "the holder does not share"
        conn = await SSHTransport().connect(target, timeout=10)
        try:
            await share.copy(conn, target, "/root/.shoal", "python3")
        finally:
            await conn.close()
            await share.close()

    try:
        with State(tmp_path / "state.db") as st:
            share = agentspread.Sharing(agent, fleet.AgentOptions(), None, st, fallback=False)
            with pytest.raises(AgentError) as caught:
                asyncio.run(go(share))
    finally:
        remote(holder, "rm -f ~/.shoal/TEST_CORRUPT_CHUNKS")
    text = caught.value.located()
    assert text.startswith(f"{target.name}: fetching /root/.shoal/agent.pyz.new from peers")
    assert "does not match its SHA-256" in text and "\n" not in text
    assert share.fetched == {}
    left = remote(target, "ls -a ~/.shoal").split()
    assert "agent.pyz.new" not in left and "agent.pyz.new.part" not in left
    assert remote(target, "sha256sum ~/.shoal/agent.pyz").split()[0] == before
    assert hashlib.sha256(agent.data).hexdigest() == agent.sha256


def test_upgrade_spreads_too_and_programs_keep_running(slow: Lab, tmp_path: Path) -> None:
    import shutil

    import shoal.agent

    nodes = slow.nodes()
    current = build()
    assert asyncio.run(agentspread.install_async(nodes, agent=current)).ok
    copy = tmp_path / "agent"
    shutil.copytree(
        Path(shoal.agent.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    with open(copy / "backoff.py", "a") as handle:
        handle.write("# a build for the spread upgrade test\n")
    other = build(copy)
    cmd = ["/bin/sh", "-c", "while :; do sleep 0.5; done"]
    started = asyncio.run(fleet.proc_start_async(nodes, fleet.proc_spec("spreadtick", cmd)))
    assert started.ok, [r.located() for r in started.failed]
    pids = {r.node: r.value["pid"] for r in started}
    try:
        with State(tmp_path / "state.db") as st:
            share = agentspread.Sharing(other, fleet.AgentOptions(), None, st, fallback=False)
            up = asyncio.run(
                agentspread.install_async(
                    nodes, upgrade_only=True, state=st, agent=other, sharing=share
                )
            )
        assert up.ok, [r.located() for r in up.failed]
        assert {r.action for r in up} == {f"upgraded from {current.build_id} (1 programs adopted)"}
        assert sorted(share.fetched) == sorted(n.name for n in nodes[agentspread.FIRST :])
        after = asyncio.run(fleet.call_async(nodes, "proc.status", {"name": "spreadtick"}))
        assert {r.node: r.value[0]["pid"] for r in after} == pids
    finally:
        asyncio.run(fleet.call_async(nodes, "proc.remove", {"name": "spreadtick"}))
