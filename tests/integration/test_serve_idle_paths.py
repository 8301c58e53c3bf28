"""What a held link costs while idle, on a real lab: SSH keepalives off while the agent's watch
beats on the connection (its detector notices silence), back once the watch has ended; the
agent's lines handed from the SSH channel's callback to the client, with no reader task.

asyncssh re-arms its keepalive timer on every packet received (one timer cancelled and one
scheduled per beat per node: measurable idle CPU at 250 nodes), so the tests read asyncssh's
own timer state on the held connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shoal.agentlink.agentclient import StreamClient
from shoal.control.journal import Journal
from shoal.control.links import LinkConfig, Links, LinkState
from shoal.state import State
from shoal.transport.ssh import SSHConnection, SSHTransport

from .conftest import remote

pytestmark = pytest.mark.lab


def keepalive_of(conn: Any) -> tuple[float, bool]:
    """(asyncssh's keepalive interval, whether its timer is armed) of a held connection."""
    assert isinstance(conn, SSHConnection)
    raw = conn._conn
    return float(raw._keepalive_interval), raw._keepalive_timer is not None


def test_quiet_keepalive_stops_and_restores_the_timer(lab: Any) -> None:
    node = lab.nodes()[0]

    async def go() -> None:
        conn = await SSHTransport(keepalive=5.0).connect(node, timeout=30)
        try:
            await conn.run("true")
            assert keepalive_of(conn) == (5.0, True)
            conn.quiet_keepalive(True)
            await conn.run("true")  # packets received: the timer is not re-armed
            assert keepalive_of(conn) == (0.0, False)
            conn.quiet_keepalive(False)
            assert keepalive_of(conn) == (5.0, True)
        finally:
            await conn.close()

    asyncio.run(go())


def test_a_watched_link_holds_no_keepalive_and_a_revived_watch_again_none(lab: Any) -> None:
    nodes = lab.nodes()[:2]
    victim = nodes[0]

    async def go() -> None:
        state = State()
        links = Links(nodes, state=state, journal=Journal(state), config=LinkConfig())
        await links.start()
        try:
            assert await links.wait_up(timeout=60), links.status()
            link = links.link(victim.name)
            assert link is not None and link.home is not None
            deadline = time.monotonic() + 10
            while link.client is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)  # up, and its watch has started
            assert keepalive_of(link.conn) == (0.0, False)
            pid = (await asyncio.to_thread(remote, victim, f"cat {link.home}/agent.pid")).strip()
            await asyncio.to_thread(remote, victim, f"kill -9 {pid}")
            deadline = time.monotonic() + 30
            while not (link.agent_restarts >= 1 and link.client is not None):
                assert time.monotonic() < deadline, "the agent was not revived"
                await asyncio.sleep(0.02)
            assert link.state is LinkState.UP
            assert keepalive_of(link.conn) == (0.0, False)  # the new watch quieted it again
        finally:
            await links.stop()
            state.close()

    asyncio.run(go())


def test_a_watched_stream_over_ssh_is_read_from_the_channel_callback(lab: Any) -> None:
    nodes = lab.nodes()[:1]

    async def go() -> None:
        state = State()
        links = Links(nodes, state=state, journal=Journal(state), config=LinkConfig())
        await links.start()
        try:
            assert await links.wait_up(timeout=60), links.status()
            link = links.link(nodes[0].name)
            assert link is not None
            deadline = time.monotonic() + 10
            while link.client is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            client = link.client
            assert isinstance(client, StreamClient)
            assert not isinstance(client._reader_task, asyncio.Task)  # no reader task
            res = await client.exec("echo hi; echo there >&2; exit 4")  # beside the watch
            assert (res.stdout, res.stderr, res.exit_status) == (b"hi\n", b"there\n", 4)
            beats = link.detector.last_heard if link.detector is not None else None
            deadline = time.monotonic() + 10  # beats keep coming through the callback
            while link.detector is not None and link.detector.last_heard == beats:
                assert time.monotonic() < deadline, "no beat heard"
                await asyncio.sleep(0.05)
        finally:
            await links.stop()
            state.close()

    asyncio.run(go())
