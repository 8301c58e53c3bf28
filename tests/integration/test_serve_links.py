"""Warm links on a real lab (shoal.control.links): attach, detect, recover, refuse, run warm.

Each test builds its own :class:`Links` over the session lab's nodes, in its own
event loop, and stops it (every held connection closed) before it returns.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shoal.agentlink.eventlog import EventRow
from shoal.control.journal import Journal
from shoal.control.links import LinkConfig, Links, LinkState
from shoal.fanout import RunOptions
from shoal.fanout.commands import run_async
from shoal.nodes import health
from shoal.nodes.model import Node
from shoal.state import State

from .conftest import remote

pytestmark = pytest.mark.lab

T = TypeVar("T")


def with_links(
    nodes: list[Node], body: Callable[[Links, Journal], Awaitable[T]], **config: Any
) -> T:
    """Run ``body`` with started links over ``nodes``; the links always stopped after."""

    async def go() -> T:
        state = State()
        journal = Journal(state)
        links = Links(nodes, state=state, journal=journal, config=LinkConfig(**config))
        await links.start()
        try:
            return await body(links, journal)
        finally:
            await links.stop()
            state.close()

    return asyncio.run(go())


def events_of(journal: Journal, node: str, after: int) -> list[str]:
    """Kinds of every event about ``node`` after ``after``, all pages of them (the session's
    journal holds every earlier test's events: one page from 0 would end long before now)."""
    return [e.kind for e in node_events(journal, node, after)]


def node_events(journal: Journal, node: str, after: int) -> list[EventRow]:
    rows: list[EventRow] = []
    while True:
        page = journal.read(after, node=node)
        rows += page.events
        if not page.events or page.last == after:
            return rows
        after = page.last


def sshd_established(lab: Any, node: Node) -> int:
    """TCP connections established to the node's sshd, counted in its namespace."""
    out = subprocess.run(
        ["ip", "netns", "exec", lab.netns_of(node.name), "ss", "-Htn", "state", "established",
         f"( sport = :{node.port or 22} )"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return len([line for line in out.splitlines() if line.strip()])


async def wait_for(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` held; AssertionError after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.mark.parametrize("via", ["agent", "ssh"])
def test_a_warm_run_opens_no_connection_and_matches_the_cold_run(lab: Any, via: str) -> None:
    nodes = lab.nodes()
    # SSH_CONNECTION's addresses: what push learns the controller's address from
    command = (
        'echo "$SHOAL_NODE $SHOAL_INDEX"; echo "$SSH_CONNECTION" | cut -d" " -f1,3; '
        "echo err >&2; exit $((SHOAL_INDEX % 2))"
    )
    cold = asyncio.run(run_async(nodes, command, RunOptions()))

    async def body(links: Links, journal: Journal) -> None:
        assert await links.wait_up(timeout=60), links.status()
        before = links.connects
        sockets = [sshd_established(lab, n) for n in nodes]
        warm = await run_async(nodes, command, RunOptions(), transport=links.transport)
        assert links.connects == before
        assert [sshd_established(lab, n) for n in nodes] == sockets
        assert all(s >= 1 for s in sockets)  # the held connection itself
        strip = ("duration", "attempts")
        cold_rows = [{k: v for k, v in r.items() if k not in strip} for r in cold.to_json()]
        warm_rows = [{k: v for k, v in r.items() if k not in strip} for r in warm.to_json()]
        assert warm_rows == cold_rows
        assert all(r["stdout"].count(".") == 6 for r in warm_rows)  # two IPv4 addresses

    with_links(nodes, body, run_via=via)


def test_a_killed_node_is_down_within_three_seconds_and_up_when_revived(lab: Any) -> None:
    nodes = lab.nodes()
    victim = nodes[2]

    async def body(links: Links, journal: Journal) -> None:
        assert await links.wait_up(timeout=60), links.status()
        link = links.link(victim.name)
        assert link is not None
        mark = journal.last
        killed = time.monotonic()
        lab.kill(victim.name)
        try:
            took = await wait_for(lambda: link.state is LinkState.DOWN, 10)
            took = time.monotonic() - killed
            assert took <= 3.0, took
            assert "node_down" in events_of(journal, victim.name, mark)
            reasons = {f.name: f.reason for f in health.failures(links.state)}
            assert reasons[victim.name].startswith("down: no heartbeat for "), reasons
            others = [links.link(n.name) for n in nodes if n.name != victim.name]
            assert all(o is not None and o.state is LinkState.UP for o in others)
        finally:
            lab.revive(victim.name)
        await wait_for(lambda: link.state is LinkState.UP, 40)
        assert "node_up" in events_of(journal, victim.name, mark)
        assert victim.name not in health.failed_names(links.state)

    with_links(nodes, body)


def test_an_agent_killed_under_the_held_channel_is_revived_with_no_event_lost(lab: Any) -> None:
    nodes = lab.nodes()[:3]
    victim = nodes[1]

    async def body(links: Links, journal: Journal) -> None:
        assert await links.wait_up(timeout=60), links.status()
        link = links.link(victim.name)
        assert link is not None and link.home is not None
        mark = journal.last
        pid = (await asyncio.to_thread(remote, victim, f"cat {link.home}/agent.pid")).strip()
        await asyncio.to_thread(remote, victim, f"kill -9 {pid}")
        await wait_for(lambda: link.agent_restarts >= 1 and link.state is LinkState.UP, 20)
        kinds = events_of(journal, victim.name, mark)
        assert "agent_lost" in kinds and "agent_revived" in kinds
        assert "node_down" not in kinds
        # the new agent's start event reaches the journal: its seq follows the last one
        await wait_for(lambda: "agent_started" in events_of(journal, victim.name, mark), 10)
        seqs = [e.seq for e in node_events(journal, victim.name, mark) if e.seq]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
        new_pid = (await asyncio.to_thread(remote, victim, f"cat {link.home}/agent.pid")).strip()
        assert new_pid != pid

    with_links(nodes, body)


def test_sshd_refusing_at_attach_is_retried_and_the_others_attach(lab: Any) -> None:
    """sshd's MaxStartups (the lab's 100:30:200) drops every new connection while 200
    unauthenticated ones are open (900 are opened: near the limit sshd lets one in now and
    then, the excess it refuses at once): the node is retried with backoff, never marked down,
    then attaches once they close."""
    nodes = lab.nodes()[:4]
    victim = nodes[3]
    hogs = []
    for _ in range(900):
        s = socket.create_connection((victim.host, victim.port or 22), timeout=5)
        hogs.append(s)
    deadline = time.monotonic() + 20
    while True:  # until sshd has taken them all in and drops newcomers
        with socket.create_connection((victim.host, victim.port or 22), timeout=5) as probe:
            probe.settimeout(5)
            if b"MaxStartups" in probe.recv(100):
                break
        assert time.monotonic() < deadline, "sshd never reached MaxStartups"
        time.sleep(0.2)

    async def body(links: Links, journal: Journal) -> None:
        others = [n.name for n in nodes if n.name != victim.name]
        assert await links.wait_up(others, timeout=60), links.status()
        link = links.link(victim.name)
        assert link is not None
        await asyncio.sleep(3.0)
        assert link.state is LinkState.ATTACHING, link.status()
        assert link.connects >= 2  # retried
        for s in hogs:
            s.close()
        await wait_for(lambda: link.state is LinkState.UP, 40)
        assert "node_down" not in events_of(journal, victim.name, 0)

    try:
        with_links(nodes, body, backoff_base=0.3, backoff_cap=2.0)
    finally:
        for s in hogs:
            s.close()


def test_a_changed_host_key_refuses_that_node_alone(lab: Any, tmp_path: Path) -> None:
    nodes = lab.nodes()[:3]
    victim = nodes[0]
    src = Path(victim.ssh_config or "")
    kh_src = next(
        line.split(None, 1)[1].strip()
        for line in src.read_text().splitlines()
        if line.strip().lower().startswith("userknownhostsfile ")
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    lines = []
    for line in Path(kh_src).read_text().splitlines():
        names = line.split()[0].split(",") if line.strip() else []
        if any(victim.host in n for n in names):
            line = f"{line.split()[0]} {other}"
        lines.append(line)
    kh = tmp_path / "known_hosts"
    kh.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f'Host *\n  UserKnownHostsFile "{kh}"\n\nInclude {src}\n')
    changed = Node(victim.name, victim.host, victim.user, victim.port, (), {}, str(cfg))

    async def body(links: Links, journal: Journal) -> None:
        assert await links.wait_up([n.name for n in nodes[1:]], timeout=60), links.status()
        link = links.link(victim.name)
        assert link is not None
        await wait_for(lambda: link.state is LinkState.REFUSED, 20)
        assert "HOST KEY CHANGED" in link.reason and "ssh-keygen" in link.reason
        assert "node_refused" in events_of(journal, victim.name, 0)
        failed = {f.name: f.reason for f in health.failures(links.state)}
        assert failed[victim.name].startswith("hostkey: HOST KEY CHANGED")
        assert all(links.link(n.name).state is LinkState.UP for n in nodes[1:])  # type: ignore[union-attr]
        res = await run_async([changed], "true", transport=links.transport)
        assert res[victim.name].kind == "hostkey"

    try:
        with_links([changed, *nodes[1:]], body)
    finally:
        health.clear_failed([victim.name])
