"""One control connection's outgoing side: whole lines, one writer, a bounded buffer.

Replies, watch pushes and exec output of one connection all leave through its
:class:`Outbox`. Every message is written with one synchronous ``write`` of one
whole encoded line, so lines never interleave however many streams run; waits
for the peer (``drain``) are serialized (Python 3.9's ``StreamWriter.drain``
must not be awaited twice at once). What may wait (replies, exec output)
awaits the drain; what must not (events and beats pushed from synchronous
callbacks) is *offered*: refused once :data:`PUSH_LIMIT` bytes are already
waiting for a slow reader, so a reader that falls behind costs the agent a
bounded amount of memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import protocol

#: Bytes waiting to be sent above which an offered push is refused.
PUSH_LIMIT = 1 << 20


class Outbox:
    """The writer of one connection."""

    def __init__(self, writer: asyncio.StreamWriter, limit: int | None = None) -> None:
        self.writer = writer
        self.limit = PUSH_LIMIT if limit is None else limit
        self._drain_lock = asyncio.Lock()

    def buffered(self) -> int:
        """Bytes written but not yet taken by the peer."""
        transport: Any = self.writer.transport
        return int(transport.get_write_buffer_size()) if transport is not None else 0

    @property
    def closing(self) -> bool:
        return self.writer.is_closing()

    def put(self, message: protocol.Message) -> None:
        """Write one message as one line now (never partly); dropped once closing."""
        if not self.writer.is_closing():
            self.writer.write(protocol.encode(message))

    def offer(self, message: protocol.Message) -> bool:
        """Write a push unless the peer is :attr:`limit` bytes behind; False when refused."""
        if self.writer.is_closing() or self.buffered() > self.limit:
            return False
        self.writer.write(protocol.encode(message))
        return True

    async def drain(self) -> None:
        """Wait until the peer has taken most of what was written (ConnectionError if gone)."""
        async with self._drain_lock:
            await self.writer.drain()

    async def send(self, message: protocol.Message) -> None:
        """Write one message and wait for the peer to take it."""
        self.put(message)
        await self.drain()
