"""UnixStream (shoal.transport.unixstream): the stream semantics open_unix's callers rely on,
lines handed over from the channel's callback, the read buffer bounded.

The session is driven as asyncssh drives it (connection_made, data_received, eof_received,
connection_lost) with a stand-in channel that records what the stream asks of it; the lab
tests (test_agent_stream_ops, test_serve_links) run it over real SSH.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shoal.transport import unixstream
from shoal.transport.unixstream import UnixStream


class Chan:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True


def opened() -> tuple[UnixStream, Chan]:
    stream, chan = UnixStream(), Chan()
    stream.connection_made(chan)  # type: ignore[arg-type]
    return stream, chan


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_reads_as_a_stream_then_eof() -> None:
    async def go() -> None:
        stream, _ = opened()
        waiting = asyncio.ensure_future(stream.readline())
        await asyncio.sleep(0)
        stream.data_received(b"one\ntw", None)  # type: ignore[arg-type]
        assert await waiting == b"one\n"
        stream.data_received(b"o\nabcdef", None)  # type: ignore[arg-type]
        assert await stream.readline() == b"two\n"
        assert await stream.readexactly(2) == b"ab"
        assert await stream.read(100) == b"cdef"
        stream.data_received(b"tail", None)  # type: ignore[arg-type]
        stream.eof_received()
        assert await stream.readline() == b"tail"
        assert await stream.readline() == b""
        with pytest.raises(asyncio.IncompleteReadError):
            await stream.readexactly(1)

    run(go())


def test_a_lost_connection_is_raised_once_the_buffer_is_read() -> None:
    async def go() -> None:
        stream, _ = opened()
        stream.data_received(b"last", None)  # type: ignore[arg-type]
        stream.connection_lost(ConnectionResetError("reset"))
        assert await stream.readline() == b"last"
        with pytest.raises(ConnectionResetError):
            await stream.readline()
        with pytest.raises(ConnectionResetError):
            await stream.drain()

    run(go())


def test_lines_are_handed_over_in_order_then_the_end() -> None:
    lines: list[bytes] = []
    ends: list[Exception | None] = []
    stream, _ = opened()
    stream.data_received(b"buffered\npart", None)  # type: ignore[arg-type]
    stream.deliver_lines(lines.append, ends.append)
    assert lines == [b"buffered\n"]
    stream.data_received(b"ial\na\nb\nc", None)  # type: ignore[arg-type]
    assert lines == [b"buffered\n", b"partial\n", b"a\n", b"b\n"]
    stream.eof_received()
    stream.connection_lost(None)  # asyncssh's close after EOF: the end is told once
    assert lines[-1] == b"c" and ends == [None]


def test_writes_wait_while_the_channel_is_full() -> None:
    async def go() -> None:
        stream, chan = opened()
        stream.write(b"x")
        stream.pause_writing()
        drained = asyncio.ensure_future(stream.drain())
        await asyncio.sleep(0.01)
        assert not drained.done()
        stream.resume_writing()
        await asyncio.wait_for(drained, 1)
        assert chan.written == [b"x"]
        stream.close()
        assert chan.closed

    run(go())


def test_an_unread_buffer_past_the_limit_pauses_the_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(unixstream, "LIMIT", 10)

    async def go() -> None:
        stream, chan = opened()
        stream.data_received(b"0123456789abc\n", None)  # type: ignore[arg-type]
        assert chan.paused
        assert await stream.readline() == b"0123456789abc\n"
        assert not chan.paused

    run(go())
