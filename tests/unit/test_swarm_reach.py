"""Reachability in a push: peers a node cannot connect to, and the node-side probe.

A node that cannot open a TCP connection to a peer (NAT, a firewall) must stop
being sent to it, without the peer being penalised for the others and without
the node counting failures towards giving up; a node that reaches no peer
takes what the others hold from the source at once. The agent's side says
which failures were connection attempts (loopback sockets only).
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from shoal.agent.chunkfetch import Fetcher
from shoal.agent.chunkstore import ChunkStore
from shoal.agent.pushsession import _unreachable
from shoal.content.swarm import SOURCE, Swarm


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _swarm(n: int = 6) -> Swarm:
    chunks = [(f"{i:064x}", 100) for i in range(n)]
    swarm = Swarm(chunks, batch_bytes=300, source_batch_bytes=100, source_uploads=8)
    swarm.expect(["a", "b", "c"])
    swarm.register("a", "ha", 1, ("s", 1), range(n), [])
    swarm.register("b", "hb", 2, ("s", 1), [], range(n))  # b and c hold everything
    swarm.register("c", "hc", 3, ("s", 1), [], range(n))
    swarm.sourced.update(range(n))
    return swarm


def _many_peers() -> Swarm:
    """Node ``a`` lacking 8 chunks that ISOLATED_AFTER + 2 peers hold; no penalty spell."""
    from shoal.content.swarm import ISOLATED_AFTER

    chunks = [(f"{i:064x}", 100) for i in range(8)]
    swarm = Swarm(chunks, batch_bytes=100, source_batch_bytes=100, source_uploads=8)
    names = [f"p{k}" for k in range(ISOLATED_AFTER + 2)]
    swarm.expect(["a", *names])
    swarm.penalty = 0.0
    swarm.register("a", "ha", 1, ("s", 1), range(8), [])
    for k, name in enumerate(names):
        swarm.register(name, f"h{k}", 10 + k, ("s", 1), [], range(8))
    swarm.sourced.update(range(8))
    return swarm


def test_a_peer_the_node_cannot_connect_to_is_never_chosen_for_it_again() -> None:
    async def go() -> None:
        swarm = _swarm()
        swarm.penalty = 0.0  # no spell on the source after a failure (tested below)
        first = await swarm.next_batch("a")
        assert first is not None and first.source in ("b", "c")
        bad = first.source
        swarm.complete(
            first, {"got": [], "failed": first.chunks, "error": "timed out", "unreachable": True}
        )
        assert swarm.stats["a"].failures == 0  # a fact about the pair, not a failure
        assert swarm.peers[bad].penalty_until == 0.0  # and not the peer's fault
        sources = set()
        for _ in range(5):
            b = await swarm.next_batch("a")
            if b is None:
                break
            sources.add(b.source)
            swarm.complete(b, {"got": b.chunks, "bytes": b.nbytes, "seconds": 0.1})
        assert sources == {"b", "c"} - {bad} and not swarm.need["a"]

    asyncio.run(go())


def test_a_node_that_reaches_no_peer_takes_their_chunks_from_the_source() -> None:
    async def go() -> None:
        swarm = _swarm()
        swarm.penalty = 0.0  # no spell on the source after a failure: try every peer
        tried = set()
        for _ in range(2):
            b = await swarm.next_batch("a")
            assert b is not None and b.source in ("b", "c")
            tried.add(b.source)
            swarm.complete(b, {"got": [], "failed": b.chunks, "unreachable": True})
        assert tried == {"b", "c"}
        assert swarm.blocked["a"] == {"b", "c"}
        got: list[int] = []
        for _ in range(10):
            b = await asyncio.wait_for(swarm.next_batch("a"), 0.5)  # no straggle wait
            if b is None:
                break
            assert b.source == SOURCE
            got += b.chunks
            swarm.complete(b, {"got": b.chunks, "bytes": b.nbytes, "seconds": 0.1})
        assert sorted(got) == list(range(6))

    asyncio.run(go())


def test_a_node_whose_peer_batch_failed_takes_the_source_for_a_while() -> None:
    """On a lossy path (a connect or a transfer timed out) the node does not try peer
    after peer: its next batches come from the source until the penalty ends."""

    async def go() -> None:
        swarm = _swarm()
        first = await swarm.next_batch("a")
        assert first is not None and first.source in ("b", "c")
        swarm.complete(first, {"got": [], "failed": first.chunks, "error": "timed out"})
        swarm.source_batch_bytes = 200  # two chunks a batch, one while shy
        b = await asyncio.wait_for(swarm.next_batch("a"), 0.5)
        assert b is not None and b.source == SOURCE and len(b.chunks) == 1
        swarm.complete(b, {"got": b.chunks, "bytes": b.nbytes, "seconds": 0.1})
        swarm.shy_until["a"] = 0.0  # the spell over: peers again
        b = await asyncio.wait_for(swarm.next_batch("a"), 0.5)
        assert b is not None and b.source in ("b", "c")
        before = time.monotonic()
        swarm.complete(b, {"got": [], "failed": b.chunks, "error": "timed out"})
        assert swarm.shy_until["a"] - before >= 2 * swarm.penalty - 0.5  # twice as long

    asyncio.run(go())


def test_the_probe_says_why_it_cannot_connect_and_nothing_when_it_can() -> None:
    async def go() -> None:
        port = _closed_port()
        why = await _unreachable(["127.0.0.1", port], timeout=2.0)
        assert why.startswith(f"127.0.0.1:{port}: ") and len(why) > len(f"127.0.0.1:{port}: ")
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        try:
            open_port = server.sockets[0].getsockname()[1]
            assert await _unreachable(["127.0.0.1", open_port], timeout=2.0) == ""
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(go())


def test_a_fetch_says_unreachable_only_when_it_could_not_connect(tmp_path: Path) -> None:
    async def go() -> None:
        fetcher = Fetcher(ChunkStore(tmp_path / "s"), connect_timeout=2.0)
        want = [("ab" * 32, 10)]
        refused = await fetcher.fetch("127.0.0.1", _closed_port(), "k" * 32, want)
        assert refused.unreachable and refused.failed and refused.error

        async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readline()
            w.close()  # connected, then the source broke: not unreachable

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            broke = await fetcher.fetch("127.0.0.1", port, "k" * 32, want)
            assert broke.failed and not broke.unreachable
        finally:
            fetcher.close()
            server.close()
            await server.wait_closed()

    asyncio.run(go())


def test_a_node_that_connects_to_no_peer_it_tried_is_served_by_the_source_alone() -> None:
    """A firewall on the node's side: after ISOLATED_AFTER peers it could not connect to,
    having reached none, no peer is tried again (each would cost a connect timeout)."""
    from shoal.content.swarm import ISOLATED_AFTER

    async def go() -> None:
        swarm = _many_peers()
        tried: list[str] = []
        while "a" not in swarm.isolated:
            b = await asyncio.wait_for(swarm.next_batch("a"), 0.5)
            assert b is not None and b.source != SOURCE, tried
            tried.append(b.source)
            swarm.complete(b, {"got": [], "failed": b.chunks, "unreachable": True})
        assert len(tried) == ISOLATED_AFTER
        for _ in range(8):
            b = await asyncio.wait_for(swarm.next_batch("a"), 0.5)
            if b is None:
                break
            assert b.source == SOURCE  # the peers not yet tried are never asked
            swarm.complete(b, {"got": b.chunks, "bytes": b.nbytes, "seconds": 0.1})
        assert not swarm.need["a"]

    asyncio.run(go())


def test_a_node_with_a_working_peer_is_not_isolated_by_unreachable_ones() -> None:
    from shoal.content.swarm import ISOLATED_AFTER

    async def go() -> None:
        swarm = _swarm()
        swarm.penalty = 0.0
        b = await swarm.next_batch("a")
        assert b is not None and b.source != SOURCE
        swarm.complete(b, {"got": b.chunks[:1], "bytes": 100, "seconds": 0.1,
                           "failed": b.chunks[1:]})  # fmt: skip
        for name in (f"x{k}" for k in range(ISOLATED_AFTER)):
            swarm.register(name, "hx", 9, ("s", 1), [], range(6))
            wanted = [i for i in range(6) if i in swarm.need["a"]][:1]
            x = swarm._start("a", swarm.peers[name], wanted)
            swarm.complete(x, {"got": [], "failed": x.chunks, "unreachable": True})
        assert "a" not in swarm.isolated

    asyncio.run(go())


def test_the_manifest_is_asked_once_of_a_peer_it_cannot_reach_and_thrice_of_the_source(
    tmp_path: Path,
) -> None:
    """content.begin's manifest fetch: a peer it cannot connect to is skipped at once (a
    firewall), a cut connection is tried again, and the last source, the controller's,
    is tried MANIFEST_TRIES times even when it cannot be reached."""
    from types import SimpleNamespace

    from shoal.agent import pushsession

    asked: list[str] = []

    class Fetches:
        async def fetch(self, host, port, token, want, **kw):  # type: ignore[no-untyped-def]
            asked.append(host)
            cut = host == "cut"
            return SimpleNamespace(got=[], unreachable=not cut, error="x")

        def waits(self):  # type: ignore[no-untyped-def]
            return Fetcher(ChunkStore(tmp_path / "w")).waits()

    svc = pushsession.ContentService(tmp_path / "home", lambda *a: None)
    svc.fetcher = Fetches()  # type: ignore[assignment]
    args = {"blob": "ab" * 32, "blob_size": 10,
            "sources": [["fw", 1, ""], ["cut", 2, ""], ["src", 3, ""]]}  # fmt: skip
    try:
        asyncio.run(svc._fetch_manifest(args, "v", "k" * 32))
    except ValueError as exc:
        assert "cannot fetch the manifest" in str(exc)
    else:
        raise AssertionError("no source had the manifest")
    tries = pushsession.MANIFEST_TRIES
    assert asked == ["fw"] + ["cut"] * tries + ["src"] * tries


def test_on_a_lossy_link_failed_connects_do_not_isolate_a_node() -> None:
    """At 10 % loss a connect can time out on lost SYNs: no firewall to conclude from."""
    from shoal.content.swarm import ISOLATED_AFTER
    from shoal.transport.tcpinfo import LinkState

    def swarm_of(loss: float) -> Swarm:
        swarm = _many_peers()
        swarm.links["a"] = LinkState(loss=loss, rto=0.3, retransmitted=int(loss * 100), sent=100)
        return swarm

    async def misses(swarm: Swarm) -> None:
        for _ in range(ISOLATED_AFTER):
            b = await asyncio.wait_for(swarm.next_batch("a"), 0.5)
            assert b is not None and b.source != SOURCE
            swarm.complete(b, {"got": [], "failed": b.chunks, "unreachable": True})

    lossy, clean = swarm_of(0.1), swarm_of(0.0)
    asyncio.run(misses(lossy))
    asyncio.run(misses(clean))
    assert "a" not in lossy.isolated
    assert "a" in clean.isolated  # the same misses on a clean link: a firewall
