"""One SSH connection per node for a whole ``up``, shared by its phases.

Every phase of ``up`` is a fan-out (facts, agent install, push, install
steps, process blocks) and a fan-out opens and closes one connection per node.
:class:`ConnectionPool` is a :class:`Transport` that opens a node's
connection once and hands out wrappers whose ``close`` does nothing, so the
phases share it (SSH multiplexes their channels); :meth:`ConnectionPool.aclose`
closes them all at the end. A connection that broke is dropped and the next
``connect`` opens a new one.

:class:`SharedConnection` is the lent connection itself, also the base of the
service's held connections (:class:`shoal.control.links.WarmTransport`'s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from shoal.errors import CommandTimeout, TransportError
from shoal.nodes.model import Node
from shoal.transport.base import (
    MAX_OUTPUT,
    ByteReader,
    ByteWriter,
    CommandResult,
    Connection,
    LineCallback,
    RemoteForward,
    Transport,
)


class SharedConnection(Connection):
    """A connection lent to one caller: every call goes to the shared ``inner``;
    ``close`` is a no-op; ``on_broken(inner)`` is told when a command fails with a
    transport error (not a timeout), so the owner can replace it."""

    def __init__(
        self, inner: Connection, on_broken: Callable[[Connection], None] | None = None
    ) -> None:
        self.inner = inner
        self.node = inner.node
        self.on_broken = on_broken

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        sudo: bool = False,
        on_line: LineCallback | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> CommandResult:
        try:
            return await self.inner.run(
                command,
                timeout=timeout,
                env=env,
                input=input,
                sudo=sudo,
                on_line=on_line,
                max_output=max_output,
            )
        except CommandTimeout:
            raise
        except TransportError:
            if self.on_broken is not None:
                self.on_broken(self.inner)
            raise

    async def put(self, local: str, remote: str) -> int:
        return await self.inner.put(local, remote)

    async def get(self, remote: str, local: str) -> int:
        return await self.inner.get(remote, local)

    async def open_unix(self, path: str) -> tuple[ByteReader, ByteWriter]:
        return await self.inner.open_unix(path)

    async def forward_remote(self, host: str, port: int) -> RemoteForward:
        return await self.inner.forward_remote(host, port)

    async def close(self) -> None:
        return None


class ConnectionPool(Transport):
    """Connections opened through ``inner`` once per node, until :meth:`aclose`."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.conns: dict[str, Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._stale: list[Connection] = []

    async def connect(self, node: Node, *, timeout: float | None = None) -> Connection:
        lock = self._locks.setdefault(node.name, asyncio.Lock())
        async with lock:
            conn = self.conns.get(node.name)
            if conn is None:
                conn = await self.inner.connect(node, timeout=timeout)
                self.conns[node.name] = conn
        return SharedConnection(conn, lambda broken: self.drop(node.name, broken))

    def drop(self, name: str, conn: Connection) -> None:
        """Forget a connection that failed (the next connect opens a new one)."""
        if self.conns.get(name) is conn:
            del self.conns[name]
            self._stale.append(conn)

    async def aclose(self) -> None:
        conns, self.conns = [*self.conns.values(), *self._stale], {}
        self._stale = []
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
