"""The chunk server under attack, on loopback (issue 11 item 2), and push sessions that
end on their own (items 4 and 7): real sockets, a real store, short timeouts.

Timeouts are shortened by setting the modules' constants; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import chunkserver as cs
from shoal.agent import pushsession
from shoal.agent.chunkfetch import Fetcher
from shoal.agent.chunkserver import Backend, ChunkServer, StoreBackend
from shoal.agent.chunkstore import ChunkStore
from shoal.content.scan import scan

TOKEN = "k" * 32


def store_with(tmp_path: Path, data: bytes) -> tuple[ChunkStore, str]:
    store = ChunkStore(tmp_path / "store")
    digest = hashlib.sha256(data).hexdigest()
    store.put(digest, data, "v1")
    return store, digest


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """The server closed the connection (EOF or reset) within ``seconds``."""
    try:
        while await asyncio.wait_for(reader.read(65536), seconds):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_a_huge_first_line_is_refused_and_floods_stay_bounded(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    store, digest = store_with(tmp_path, data)

    async def go() -> None:
        server = ChunkServer(StoreBackend(store))
        server.tokens.add(TOKEN)
        port = await server.start("127.0.0.1")
        held = []
        try:
            reader, writer = await connect(port)
            writer.write(b"x" * (1 << 20))
            assert await reader.readline() == b'{"v": 1, "error": "request too long"}\n'
            writer.close()
            # 300 connections each pushing 1 MB without a newline, before any token
            for _ in range(300):
                reader, writer = await connect(port)
                writer.write(b"x" * (1 << 20))
                held.append((reader, writer))
            await asyncio.sleep(0.5)
            assert server.connections <= cs.MAX_PENDING_PER_PEER
            assert server.stats.evicted + server.stats.refused >= 300 - cs.MAX_PENDING_PER_PEER
            got = await Fetcher(ChunkStore(tmp_path / "dst")).fetch(
                "127.0.0.1", port, TOKEN, [(digest, len(data))]
            )
            assert got.got == [digest] and not got.error
        finally:
            for _, writer in held:
                writer.close()
            server.close()

    asyncio.run(go())


def test_a_silent_connection_is_closed_after_the_auth_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cs, "AUTH_SECONDS", 0.3)
    monkeypatch.setattr(cs, "IDLE_SECONDS", 0.6)
    data = os.urandom(50_000)
    store, digest = store_with(tmp_path, data)

    async def go() -> None:
        server = ChunkServer(StoreBackend(store))
        server.tokens.add(TOKEN)
        port = await server.start("127.0.0.1")
        try:
            silent, w1 = await connect(port)
            trickle, w2 = await connect(port)
            w2.write(b'{"v": 1, "tok')  # a slow writer: never a whole line
            began = time.monotonic()
            assert await closed_within(silent, 3) and await closed_within(trickle, 3)
            assert time.monotonic() - began < 1.5
            assert server.stats.timed_out == 2 and server.connections == 0
            # an authenticated idle connection goes after IDLE_SECONDS; the fetcher's
            # kept-alive copy of it is then replaced without an error
            fetcher = Fetcher(ChunkStore(tmp_path / "dst"))
            first = await fetcher.fetch("127.0.0.1", port, TOKEN, [(digest, len(data))])
            assert first.got == [digest] and server.connections == 1
            await asyncio.sleep(1.0)
            assert server.connections == 0
            again = Fetcher(ChunkStore(tmp_path / "dst2"))
            again._idle = fetcher._idle  # the pooled connection the server closed
            second = await again.fetch("127.0.0.1", port, TOKEN, [(digest, len(data))])
            assert second.got == [digest] and not second.error, second
            fetcher.close()
            again.close()
            w1.close()
            w2.close()
        finally:
            server.close()

    asyncio.run(go())


def test_a_client_that_stops_reading_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cs, "answer_seconds", lambda nbytes: 0.5)
    big = os.urandom(16 << 20)
    digest = hashlib.sha256(big).hexdigest()

    class Big(Backend):
        def lookup(self, wanted: str) -> bytes | None:
            return big if wanted == digest else None

    async def go() -> None:
        server = ChunkServer(Big())
        server.tokens.add(TOKEN)
        port = await server.start("127.0.0.1")
        try:
            _reader, writer = await connect(port)
            writer.write(
                b'{"v": 1, "token": "%s", "want": ["%s"]}\n' % (TOKEN.encode(), digest.encode())
            )
            await asyncio.sleep(0.1)
            assert server.connections == 1  # never reads: the answer cannot drain
            await asyncio.sleep(1.5)
            assert server.connections == 0 and server.stats.timed_out == 1
            writer.close()
        finally:
            server.close()

    asyncio.run(go())


def test_one_peer_cannot_take_every_connection(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    store, digest = store_with(tmp_path, data)
    line = b'{"v": 1, "token": "%s", "want": []}\n' % TOKEN.encode()

    async def go() -> None:
        server = ChunkServer(StoreBackend(store))
        server.tokens.add(TOKEN)
        port = await server.start("127.0.0.1")
        held = []
        try:
            for _ in range(cs.MAX_PER_PEER + 40):
                reader, writer = await connect(port)
                writer.write(line)
                assert await reader.readline() == b'{"n": []}\n'
                held.append(writer)
            assert server.connections == cs.MAX_PER_PEER
            assert server.stats.evicted == 40
            got = await Fetcher(ChunkStore(tmp_path / "dst")).fetch(
                "127.0.0.1", port, TOKEN, [(digest, len(data))]
            )
            assert got.got == [digest]
        finally:
            for writer in held:
                writer.close()
            server.close()

    asyncio.run(go())


def _source(tmp_path: Path) -> tuple[Any, bytes, str, Backend]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(300_000))
    tree = scan(src)
    blob = zlib.compress(tree.manifest.to_bytes())
    blob_hash = hashlib.sha256(blob).hexdigest()

    class Source(Backend):
        def lookup(self, digest: str) -> bytes | None:
            if digest == blob_hash:
                return blob
            spot = tree.locations.get(digest)
            if spot is None:
                return None
            path, offset, size = spot
            return path.read_bytes()[offset : offset + size]

    return tree, blob, blob_hash, Source()


async def _serving(backend: Backend) -> tuple[ChunkServer, int]:
    """A chunk server on loopback that takes TOKEN, and its port."""
    source = ChunkServer(backend)
    source.tokens.add(TOKEN)
    return source, await source.start("127.0.0.1")


def _begin_args(tree: Any, blob: bytes, blob_hash: str, site: str, port: int) -> dict[str, Any]:
    return {
        "dir": site,
        "version": tree.version,
        "blob": blob_hash,
        "blob_size": len(blob),
        "token": TOKEN,
        "sources": [["127.0.0.1", port]],
        "bind": "127.0.0.1",
    }


def test_a_failed_begin_leaves_nothing_listening(tmp_path: Path) -> None:
    tree, blob, blob_hash, _ = _source(tmp_path)

    async def go() -> None:
        svc = pushsession.ContentService(tmp_path / "home", lambda *a: None)
        dead = _begin_args(tree, blob, blob_hash, str(tmp_path / "site"), 1)  # nobody there
        with pytest.raises(ValueError, match="cannot fetch the manifest"):
            await svc.dispatch("content.begin", dead)
        assert svc.server is None and not svc.sessions
        svc.close()

    asyncio.run(go())


def test_an_abandoned_session_stops_serving_then_its_store_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pushsession, "REAP_SECONDS", 0.1)
    monkeypatch.setattr(pushsession, "LISTEN_SECONDS", 0.3)
    monkeypatch.setattr(pushsession, "IDLE_SECONDS", 1.0)
    tree, blob, blob_hash, backend = _source(tmp_path)
    chunks = tmp_path / "home" / "chunks"

    async def go() -> None:
        source, port = await _serving(backend)
        svc = pushsession.ContentService(tmp_path / "home", lambda *a: None)
        try:
            args = _begin_args(tree, blob, blob_hash, str(tmp_path / "site"), port)
            begin = await svc.dispatch("content.begin", args)
            await svc.dispatch(
                "content.fetch",
                {
                    "version": tree.version,
                    "dir": args["dir"],
                    "source": ["127.0.0.1", port],
                    "chunks": begin["missing"][:2],
                },
            )
            assert svc.server is not None and list(chunks.glob(f"{tree.version}.*"))
            # the controller is gone: no request comes
            await asyncio.sleep(0.8)
            assert svc.server is None  # the port closed; the store waits for a re-run
            assert list(chunks.glob(f"{tree.version}.*"))
            await asyncio.sleep(1.0)
            assert not svc.sessions
            await asyncio.gather(*svc._unlinking)
            assert not list(chunks.iterdir())
        finally:
            svc.close()
            source.close()

    asyncio.run(go())


def test_a_store_an_earlier_agent_left_goes_once_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pushsession, "REAP_SECONDS", 0.1)
    store, _ = store_with(tmp_path / "home", os.urandom(1000))  # home/store: not the agent's
    root = tmp_path / "home" / "chunks"
    fresh = ChunkStore(root)
    fresh.put(hashlib.sha256(b"new").hexdigest(), b"new", "fresh")
    fresh.put(hashlib.sha256(b"old").hexdigest(), b"old", "old")
    fresh.close()
    past = time.time() - pushsession.IDLE_SECONDS - 10
    for path in root.glob("old.*"):
        os.utime(path, (past, past))

    async def go() -> None:
        svc = pushsession.ContentService(tmp_path / "home", lambda *a: None)
        svc.start()
        await asyncio.sleep(0.3)
        await asyncio.gather(*svc._unlinking)
        assert sorted(p.name for p in root.iterdir()) == ["fresh.data", "fresh.idx"]
        svc.close()

    asyncio.run(go())
    store.close()


def test_a_push_ended_while_a_fetch_still_runs_loses_what_that_fetch_writes(
    tmp_path: Path,
) -> None:
    """CI saw a full-disk push leave 232 KiB: the controller's end pruned the store while
    a fetch was still receiving, and that fetch then wrote its batch into a new bucket
    (the unlinking had freed the room) that no session owned."""
    tree, blob, blob_hash, backend = _source(tmp_path)
    chunks = tmp_path / "home" / "chunks"

    async def go() -> None:
        source, port = await _serving(backend)
        asked, release = asyncio.Event(), asyncio.Event()
        pipes: list[asyncio.Task[None]] = []

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.close()

        async def held(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            # a source that holds its answer back until the test lets it go
            line = await r.readline()
            ur, uw = await asyncio.open_connection("127.0.0.1", port)
            uw.write(line)
            asked.set()
            await release.wait()
            pipes.extend([asyncio.ensure_future(pipe(ur, w)), asyncio.ensure_future(pipe(r, uw))])

        slow = await asyncio.start_server(held, "127.0.0.1", 0)
        slow_port = slow.sockets[0].getsockname()[1]
        svc = pushsession.ContentService(tmp_path / "home", lambda *a: None)
        try:
            args = _begin_args(tree, blob, blob_hash, str(tmp_path / "site"), port)
            begin = await svc.dispatch("content.begin", args)
            want = begin["missing"][:3]
            fetch = asyncio.ensure_future(
                svc.dispatch(
                    "content.fetch",
                    {"version": tree.version, "source": ["127.0.0.1", slow_port], "chunks": want},
                )
            )
            await asyncio.wait_for(asked.wait(), 10)
            ended = await svc.dispatch("content.end", {"version": tree.version})
            assert ended["ended"] and not svc.sessions
            release.set()
            got = await asyncio.wait_for(fetch, 10)
            assert sorted(got["got"]) == sorted(want)  # the batch arrived and was written...
            await asyncio.gather(*svc._unlinking)
            left = sorted(p.name for p in chunks.iterdir())
            assert not left, f"{left} left in the store"  # ...and went with its session
            with pytest.raises(ValueError):  # the ended session takes no more requests
                await svc.dispatch(
                    "content.fetch",
                    {"version": tree.version, "source": ["127.0.0.1", port], "chunks": want},
                )
        finally:
            svc.close()
            for task in pipes:
                task.cancel()
            slow.close()
            source.close()

    asyncio.run(go())
