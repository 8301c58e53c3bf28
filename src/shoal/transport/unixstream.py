"""A byte stream to a Unix socket on the node over SSH (what ``open_unix`` returns).

:class:`UnixStream` is the asyncssh session of one streamlocal channel and both
halves of the stream: a :class:`~shoal.transport.base.ByteReader` (``read``,
``readline``, ``readuntil``, ``readexactly``) and a
:class:`~shoal.transport.base.ByteWriter` (``write``, ``drain``, ``close``).
Read as a stream until :meth:`UnixStream.deliver_lines`: from then on every whole
line goes from the channel's ``data_received`` straight to a handler, in order,
and the end of the stream to another. A held agent stream gets a beat a second
from every node; asyncssh's own reader took a lock, compiled-pattern search and
a reader task's wake-up per line (the controller's idle CPU at 250 nodes).

What is buffered is bounded: past :data:`LIMIT` bytes not yet read the channel
stops reading (the SSH window closes) until the reader catches up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncssh

#: Bytes buffered unread past which the channel is paused (a line may be 4 MiB).
LIMIT = 8 << 20


class UnixStream(asyncssh.SSHUNIXSession[bytes]):
    """One channel to a Unix socket on the node: the reader and the writer."""

    def __init__(self) -> None:
        self._chan: asyncssh.SSHUNIXChannel[bytes] | None = None
        self._buf = bytearray()
        self._eof = False
        self._lost = False
        self._error: Exception | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._read_paused = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._on_line: Callable[[bytes], None] | None = None
        self._on_end: Callable[[Exception | None], None] | None = None

    # -- asyncssh's callbacks ---------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHUNIXChannel[bytes]) -> None:
        self._chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._buf += data
        if self._on_line is not None:
            self._deliver()
            return
        if len(self._buf) > LIMIT and not self._read_paused and self._chan is not None:
            self._read_paused = True
            self._chan.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._ended()
        return False  # asyncssh closes the channel

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        if exc is not None and self._error is None:
            self._error = exc
        self._ended()
        self._resume_writers()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume_writers()

    # -- lines straight to a handler ------------------------------------------------------

    def deliver_lines(
        self, on_line: Callable[[bytes], None], on_end: Callable[[Exception | None], None]
    ) -> None:
        """From now on hand each whole line (newline included) to ``on_line`` as it
        arrives, and the stream's end to ``on_end`` once (its error, None at EOF; a last
        line without a newline goes to ``on_line`` first). What is buffered goes now."""
        self._on_line, self._on_end = on_line, on_end
        self._deliver()
        if self._eof:
            self._ended()
        elif self._read_paused and self._chan is not None:
            self._read_paused = False
            self._chan.resume_reading()

    def _deliver(self) -> None:
        buf = self._buf
        start = 0
        while self._on_line is not None:
            at = buf.find(b"\n", start)
            if at < 0:
                break
            self._on_line(bytes(buf[start : at + 1]))
            start = at + 1
        if start:
            del buf[:start]

    def _ended(self) -> None:
        self._wake()
        on_line, on_end = self._on_line, self._on_end
        if on_end is None:
            return
        self._on_end = None
        if self._buf and on_line is not None:
            rest = bytes(self._buf)
            self._buf.clear()
            on_line(rest)
        on_end(self._error)

    # -- the reader -----------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait(self) -> None:
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await self._wakeup
        finally:
            self._wakeup = None

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        if self._read_paused and len(self._buf) < LIMIT and self._chan is not None:
            self._read_paused = False
            self._chan.resume_reading()
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        """Up to and including ``separator``; IncompleteReadError with what came at EOF
        (an error of the connection raised when nothing is left)."""
        while True:
            at = self._buf.find(separator)
            if at >= 0:
                return self._take(at + len(separator))
            if self._eof:
                if self._error is not None and not self._buf:
                    raise self._error
                raise asyncio.IncompleteReadError(self._take(len(self._buf)), None)
            await self._wait()

    async def readline(self) -> bytes:
        """One line with its newline; what is left at EOF; b"" after it."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes as soon as any are there (``n`` < 0: all until EOF)."""
        if n == 0:
            return b""
        while not self._eof and (n < 0 or not self._buf):
            await self._wait()
        if not self._buf and self._error is not None:
            raise self._error
        return self._take(len(self._buf) if n < 0 else n)

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._eof:
                if self._error is not None and not self._buf:
                    raise self._error
                raise asyncio.IncompleteReadError(self._take(len(self._buf)), n)
            await self._wait()
        return self._take(n)

    # -- the writer -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._chan is None:
            raise BrokenPipeError("channel not open")
        self._chan.write(data)

    def _resume_writers(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        """Until the channel takes more (raises once the connection is lost)."""
        while self._write_paused and not self._lost:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None
        if self._lost and (self._error is not None or self._write_paused):
            raise self._error or BrokenPipeError("channel closed")

    def close(self) -> None:
        if self._chan is not None:
            self._chan.close()
