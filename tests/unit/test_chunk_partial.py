"""A cut chunk answer keeps the whole chunks that arrived (issue 17 part 2: 30 % loss).

A real loopback source announces four chunks, sends two and a half of them, then
stalls (as a link losing a third of its packets does); the fetch times out, and the
two whole chunks are verified and stored, so the next batch asks only for the rest.
Before, the batch was thrown away whole: on a lossy link no batch ever finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

from shoal.agent.chunkfetch import Fetcher
from shoal.agent.chunkstore import ChunkStore

CHUNKS = [bytes([i]) * 100_000 for i in range(4)]
DIGESTS = [hashlib.sha256(c).hexdigest() for c in CHUNKS]


def _fetch(tmp_path: Path, body: bytes, *, close: bool) -> tuple[ChunkStore, object]:
    store = ChunkStore(tmp_path / "store")

    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(json.dumps({"n": [len(c) for c in CHUNKS]}).encode() + b"\n" + body)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(2)  # stall: the fetch's deadline cuts it

    async def go() -> object:
        server = await asyncio.start_server(source, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            fetcher = Fetcher(store, idle_timeout=1.0)
            wanted = [(d, len(c)) for d, c in zip(DIGESTS, CHUNKS, strict=True)]
            result = await fetcher.fetch(
                "127.0.0.1", port, "k" * 32, wanted, deadline=time.monotonic() + 1.0
            )
            fetcher.close()
            return result
        finally:
            server.close()

    return store, asyncio.run(go())


def test_a_stalled_answer_keeps_the_chunks_that_arrived_whole(tmp_path: Path) -> None:
    store, result = _fetch(tmp_path, CHUNKS[0] + CHUNKS[1] + CHUNKS[2][:50_000], close=False)
    assert result.error == "timed out"  # type: ignore[attr-defined]
    assert result.got == DIGESTS[:2]  # type: ignore[attr-defined]
    assert sorted(result.failed) == sorted(DIGESTS[2:])  # type: ignore[attr-defined]
    assert [store.has(d) for d in DIGESTS] == [True, True, False, False]


def test_a_closed_answer_keeps_them_too_and_a_lie_among_them_is_caught(tmp_path: Path) -> None:
    store, result = _fetch(tmp_path, CHUNKS[0] + CHUNKS[1][:30_000], close=True)
    assert result.got == DIGESTS[:1]  # type: ignore[attr-defined]
    assert store.has(DIGESTS[0]) and not store.has(DIGESTS[1])
    bad = b"\xff" * 100_000  # chunk 0's place holds other bytes
    store2, lied = _fetch(tmp_path / "b", bad + CHUNKS[1] + b"x", close=True)
    assert lied.lying and lied.got == []  # type: ignore[attr-defined]
    assert not any(store2.has(d) for d in DIGESTS)
