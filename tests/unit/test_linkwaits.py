"""Waits that follow the link (issue 17): the rule, TCP_INFO, and who applies them.

On a clean link every wait is the constant that held before lossy links were
considered (a dead peer, a firewalled port, a dead node cost as little as
then); as the measured loss grows, so do the connect, stall and keepalive
tolerances, within caps. Loopback sockets only; the SSH connection is a stub
around a crafted ``struct tcp_info``.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import linkwaits as lw
from shoal.agent.chunkfetch import Fetcher
from shoal.agent.chunkstore import ChunkStore
from shoal.content.swarm import SOURCE, Swarm
from shoal.nodes.model import Node
from shoal.transport import tcpinfo
from shoal.transport.ssh import SSHConnection


def test_a_clean_link_waits_what_it_waited_before_lossy_links() -> None:
    assert lw.fetch_waits(0.0) == lw.FetchWaits(connect=5.0, handshake=5.0, stall=10.0)
    assert lw.probe_seconds(0.0) == 3.0
    assert lw.keepalive_count(0.0, 0.2, 5.0, 3) == 3  # a dead node noticed after 20 s
    # a 10 % loss of the controller's own link still probes as a clean one
    assert lw.probe_seconds(0.10) == 3.0


def test_waits_grow_with_loss_within_their_caps() -> None:
    losses = [0.0, 0.05, 0.1, 0.19, 0.3, 0.51, 0.8, 1.0]
    waits = [lw.fetch_waits(p) for p in losses]
    for a, b in itertools.pairwise(waits):
        assert a.connect <= b.connect and a.stall <= b.stall
    # node to node at 10 % each way (19 %): shorter than the fixed 15 s / 30 s that made
    # the 10 % row 3-4x slower, longer than a clean link's
    ten = lw.fetch_waits(lw.path_loss(0.1, 0.1))
    assert 5.0 < ten.connect < 15.0 and ten.stall < 30.0
    # at 30 % each way (51 % node to node) as long as the 30 % row needed, capped
    thirty = lw.fetch_waits(lw.path_loss(0.3, 0.3))
    assert thirty.connect >= 15.0 and thirty.stall == lw.STALL_CAP
    assert lw.fetch_waits(1.0).connect == thirty.connect  # at most 4 SYNs
    assert lw.probe_seconds(0.3) == 7.0 == lw.probe_seconds(1.0)  # then it tunnels


def test_keepalive_tolerance_grows_on_a_lossy_link_up_to_the_cap() -> None:
    assert lw.keepalive_count(0.1, 0.2, 5.0, 3) == 3
    lossy = lw.keepalive_count(0.3, 0.2, 5.0, 3)
    assert lossy > 3  # 20 s of silence is a sound link's retransmissions at 30 %
    assert (lossy + 1) * 5.0 >= 0.2 * (2**8 - 1)  # 8 losses in a row of one segment
    worst = lw.keepalive_count(0.9, 1.0, 5.0, 3)
    assert (worst + 1) * 5.0 <= lw.KEEPALIVE_CAP + 5.0
    assert lw.keepalive_count(0.5, 0.2, 0.0, 3) == 3  # keepalives off: nothing to tune
    assert lw.keepalive_count(0.5, 0.2, 5.0, 40) == 40  # never less than configured


def test_path_loss_and_wire_values() -> None:
    assert lw.path_loss() == 0.0
    assert lw.path_loss(0.1, 0.1) == pytest.approx(0.19)
    assert lw.path_loss(float("nan")) == 1.0
    clean = lw.fetch_waits(0.0)
    assert lw.from_wire(None, clean) == clean
    got = lw.from_wire({"connect": 9, "handshake": "x", "stall": 1e9}, clean)
    assert got == lw.FetchWaits(9.0, clean.handshake, 120.0)
    assert lw.from_wire(lw.fetch_waits(0.51).wire(), clean) == lw.fetch_waits(0.51)
    assert lw.seconds(True, 3.0) == 3.0 and lw.seconds(0, 3.0) == 1.0
    assert lw.seconds(float("inf"), 3.0) == 3.0


def _tcp_info(
    retrans: int, sent: int, rtt_us: int = 1000, rttvar_us: int = 500, streak: int = 0
) -> bytes:
    raw = bytearray(tcpinfo._SIZE)
    raw[tcpinfo._RETRANSMITS] = streak
    struct.pack_into("=I", raw, tcpinfo._RTT, rtt_us)
    struct.pack_into("=I", raw, tcpinfo._RTTVAR, rttvar_us)
    struct.pack_into("=I", raw, tcpinfo._TOTAL_RETRANS, retrans)
    struct.pack_into("=I", raw, tcpinfo._DATA_SEGS_OUT, sent)
    return bytes(raw)


def test_tcp_info_gives_loss_and_rto() -> None:
    state = tcpinfo.parse(_tcp_info(30, 100))
    assert state.loss == pytest.approx(0.3) and state.rto == pytest.approx(0.003)
    # one retransmission among a handshake's few segments is not a 50 % link
    assert tcpinfo.parse(_tcp_info(1, 2)).loss == pytest.approx(1 / tcpinfo.MIN_SEGMENTS)
    assert tcpinfo.link_state(None) is None
    # timeouts going on now are not the link's loss (a dead peer shows only those)
    assert tcpinfo.parse(_tcp_info(33, 100, streak=3)).loss == pytest.approx(0.3)
    with socket.socket(socket.AF_UNIX) as unix:  # not TCP: nothing to tell
        assert tcpinfo.link_state(unix) is None


def test_tcp_info_of_a_real_loopback_connection() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        peer, _ = server.accept()
        with peer:
            for _ in range(25):
                client.sendall(b"x" * 100)
                peer.recv(1000)
            state = tcpinfo.link_state(client)
    assert state is not None and state.sent >= 25 and state.loss == 0.0


class _Conn:
    """The asyncssh connection's two calls SSHConnection.link makes."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.counts: list[int] = []

    def get_extra_info(self, name: str) -> Any:
        assert name == "socket"
        raw = self.raw

        class Sock:
            def getsockopt(self, *args: Any) -> bytes:
                return raw

        return Sock()

    def set_keepalive(self, interval: Any = None, count_max: Any = None) -> None:
        assert interval is None
        self.counts.append(count_max)


def test_a_lossy_ssh_link_tolerates_more_keepalives_and_a_clean_one_does_not() -> None:
    clean = _Conn(_tcp_info(0, 200))
    conn = SSHConnection(Node("n1", "h"), clean, keepalive=5.0, keepalive_count=3)  # type: ignore[arg-type]
    assert conn.link() is not None and clean.counts == []  # as configured: 3 x 5 s
    lossy = _Conn(_tcp_info(60, 200))
    conn = SSHConnection(Node("n1", "h"), lossy, keepalive=5.0, keepalive_count=3)  # type: ignore[arg-type]
    state = conn.link()
    assert state is not None and state.loss == pytest.approx(0.3)
    assert lossy.counts and lossy.counts[0] > 3
    conn.link()
    assert len(lossy.counts) == 1  # set once, not on every look
    # a node that dies mid-way: TCP timing out now, its retransmissions buy it no time
    dying = _Conn(_tcp_info(3, 200, streak=3))
    conn = SSHConnection(Node("n1", "h"), dying, keepalive=5.0, keepalive_count=3)  # type: ignore[arg-type]
    assert conn.link() is not None and dying.counts == []


def test_a_fetch_applies_the_waits_it_is_given(tmp_path: Path) -> None:
    """A source that accepts TCP but never answers TLS: the handshake wait sent with
    the request ends it, not the fetcher's own (a clean link's 5 s)."""

    async def go() -> float:
        held: list[asyncio.StreamWriter] = []

        async def mute(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)  # says nothing, keeps the connection

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        fetcher = Fetcher(ChunkStore(tmp_path / "s"))
        try:
            port = server.sockets[0].getsockname()[1]
            waits = lw.FetchWaits(connect=1.0, handshake=1.0, stall=1.0)
            got = await fetcher.fetch(
                "127.0.0.1", port, "k" * 32, [("ab" * 32, 10)], pin="cd" * 32, waits=waits
            )
            assert got.failed and got.error == "timed out" and got.unreachable
            return got.seconds
        finally:
            fetcher.close()
            for w in held:
                w.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(go()) < lw.fetch_waits(0.0).handshake


def test_an_unreachable_peer_does_not_send_the_node_to_the_source() -> None:
    """A peer it cannot connect to is blocked for it; the other peers still serve it
    (the tunnel test's walled node: each such peer made it shun every peer, doubling)."""

    async def go() -> None:
        chunks = [(f"{i:064x}", 100) for i in range(6)]
        swarm = Swarm(chunks, batch_bytes=300, source_batch_bytes=100, source_uploads=8)
        swarm.expect(["a", "b", "c"])
        swarm.register("a", "ha", 1, ("s", 1), range(6), [])
        swarm.register("b", "hb", 2, ("s", 1), [], range(6))
        swarm.register("c", "hc", 3, ("s", 1), [], range(6))
        swarm.sourced.update(range(6))
        first = await swarm.next_batch("a")
        assert first is not None and first.source in ("b", "c")
        swarm.complete(
            first, {"got": [], "failed": first.chunks, "error": "timed out", "unreachable": True}
        )
        assert swarm.shy_until.get("a", 0.0) == 0.0 and not swarm.shy_streak.get("a")
        b = await asyncio.wait_for(swarm.next_batch("a"), 0.5)
        assert b is not None and b.source not in (SOURCE, first.source)

    asyncio.run(go())
