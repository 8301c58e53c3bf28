"""The chunk wire protocol and its read-only, content-addressed TCP server (the client
is :mod:`.chunkfetch`).

Theory of operation. Chunks move between nodes (and from the controller, the
source) over TCP, not SSH, because SSH cannot connect two nodes and costs a
process per hop. By default every connection is TLS with the server's
certificate pinned by fingerprint (:mod:`.tlspin`: the fingerprints travel over
SSH); ``--plain-data`` pushes speak the same protocol over plain TCP. The
endpoint can only *read chunks*: a request
names chunks by SHA-256 and the server answers with their bytes, looked up by
a backend that knows nothing but chunk ids (the node's :class:`ChunkStore`,
or the controller's scanned tree); nothing on this port can write, list,
or start anything. Every request carries the push's token, a random secret
delivered to the nodes over SSH; a request with another token gets one error
line and the connection is closed.

Nobody can hold the server without the token. A connection must send its
first request within :data:`AUTH_SECONDS`, in at most :data:`MAX_REQUEST`
bytes; until it has, it is *pending*, and pending connections are capped
(:data:`MAX_PENDING` in all, :data:`MAX_PENDING_PER_PEER` per address: a new
one evicts the oldest). Every peer address holds at most
:data:`MAX_PER_PEER` connections and the server :attr:`ChunkServer.max_connections`
(a newcomer evicts that peer's, or anyone's, oldest idle one, else it is
refused); a connection idle for :data:`IDLE_SECONDS` is closed, and so is one
whose answer does not drain within :func:`answer_seconds` (a client that stops
reading). So memory stays near ``MAX_PENDING × 3 × MAX_REQUEST`` and the
descriptors near the caps whatever a client sends. The fetcher retries a
kept-alive connection that the server closed meanwhile once, on a fresh one.

Wire format (one TCP connection carries any number of requests, in turn)::

    client: {"v": 1, "token": T, "want": ["<sha256>", ...]}\\n      (≤ 1024 ids)
    server: {"n": [SIZE, ...]}\\n   one size per id, in order (-1: not here),
            then the bytes of every chunk found, back to back
    server, on a bad request or token: {"v": 1, "error": "..."}\\n and close

The receiver never trusts the bytes: :meth:`.chunkfetch.Fetcher.fetch` hashes every chunk
and reports a peer whose bytes do not match as *lying*, so the controller
avoids it and fetches the chunk elsewhere. Slow peers hit an idle timeout.
For tests, a node whose agent home holds the file ``TEST_CORRUPT_CHUNKS``
serves every chunk with its first byte flipped (see :class:`StoreBackend`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chunkstore import ChunkError, ChunkStore, Throttle
from .manifest import is_hash
from .tlspin import is_fingerprint

WIRE_VERSION = 1
MAX_WANT = 1024
#: The longest request line: MAX_WANT quoted ids (68 bytes each) and the token fit.
MAX_REQUEST = 96 * 1024
#: A new connection must have sent its first request (its token) by then (its TLS
#: handshake included: several round trips, each a doubled timeout away at 30 % loss).
AUTH_SECONDS = 15.0
#: A connection with no request for this long is closed.
IDLE_SECONDS = 60.0
MAX_PENDING = 64
MAX_PENDING_PER_PEER = 8
MAX_PER_PEER = 128
MAX_CONNECTIONS = 4096
SLICE = 256 * 1024
TEST_CORRUPT_FLAG = "TEST_CORRUPT_CHUNKS"
#: The server side of TLS can start after admission (``StreamWriter.start_tls``).
_LATE_TLS = hasattr(asyncio.StreamWriter, "start_tls")


class Backend:
    """Where a server finds chunk bytes; None when it does not hold the chunk."""

    def lookup(self, digest: str) -> bytes | None:
        raise NotImplementedError

    def span(self, digest: str) -> tuple[int, int, int] | None:
        """(fd, offset, size) of the chunk in a file, sent with sendfile(2); None: use lookup."""
        return None


class StoreBackend(Backend):
    """Serves a node's chunk store, and nothing else."""

    def __init__(self, store: ChunkStore, home: Path | None = None) -> None:
        self.store = store
        self.home = home
        self._checked = -10.0
        self._flag = False

    def _corrupt(self) -> bool:
        """The test hook, looked up at most once a second."""
        now = time.monotonic()
        if self.home is not None and now - self._checked > 1.0:
            self._checked = now
            self._flag = (self.home / TEST_CORRUPT_FLAG).exists()
        return self._flag

    def span(self, digest: str) -> tuple[int, int, int] | None:
        if self._corrupt():
            return None
        return self.store.span(digest)

    def lookup(self, digest: str) -> bytes | None:
        try:
            data = self.store.read(digest)
        except (OSError, ChunkError):
            return None
        if self._corrupt() and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data


def answer_seconds(nbytes: int) -> float:
    """How long an answer of ``nbytes`` may take to leave (the fetcher waits less)."""
    return 30.0 + nbytes / 50e3


def _open_files_limit() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 1024
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


@dataclass
class ServerStats:
    sent: int = 0
    chunks: int = 0
    refused: int = 0
    evicted: int = 0
    timed_out: int = 0


@dataclass(eq=False)
class _Conn:
    """One client connection: its peer address, its handler task and its phase."""

    peer: str
    task: asyncio.Task[Any] | None
    authed: bool = False
    busy: bool = False  # answering a request (never evicted)
    expired: bool = False
    dropped: bool = False

    def expire(self) -> None:
        self.expired = True
        self.drop()

    def drop(self) -> None:
        self.dropped = True
        if self.task is not None and not self.task.done():
            self.task.cancel()


class ChunkServer:
    """Serve chunks from ``backend`` to holders of one of ``tokens`` (over TLS with ``tls``)."""

    def __init__(
        self,
        backend: Backend,
        throttle: Throttle | None = None,
        tls: ssl.SSLContext | None = None,
        fingerprint: str = "",
    ) -> None:
        self.backend = backend
        self.tls = tls
        #: what this server's certificate is pinned by ("" when plain)
        self.fingerprint = fingerprint
        self.tokens: set[str] = set()
        #: token → when a request last carried it (the agent keeps busy sessions open)
        self.used: dict[str, float] = {}
        self.throttle = throttle or Throttle(None)
        self.stats = ServerStats()
        #: at most half the descriptors this process may open, and MAX_CONNECTIONS
        self.max_connections = max(64, min(MAX_CONNECTIONS, _open_files_limit() // 2))
        self._servers: list[asyncio.AbstractServer] = []
        self._conns: dict[_Conn, None] = {}  # insertion order: oldest first
        self._pending: dict[_Conn, None] = {}
        self._by_peer: dict[str, dict[_Conn, None]] = {}
        self._files: dict[int, Any] = {}

    async def start(self, host: str, port: int = 0) -> int:
        # TLS starts once a connection is admitted (StreamWriter.start_tls, Python 3.11+):
        # a handshake costs a 256 KiB buffer, so floods must meet the caps first. Older
        # Pythons handshake before admission (each bounded by AUTH_SECONDS, not capped).
        early = self.tls if self.tls is not None and not _LATE_TLS else None
        server = await asyncio.start_server(
            self._handle,
            host,
            port,
            limit=MAX_REQUEST,
            ssl=early,
            ssl_handshake_timeout=AUTH_SECONDS if early is not None else None,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        return bool(self._servers)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []
        for conn in list(self._conns):
            conn.drop()

    def _authorized(self, token: object) -> bool:
        if not isinstance(token, str):
            return False
        for t in self.tokens:
            if hmac.compare_digest(token.encode(), t.encode()):
                self.used[t] = time.monotonic()
                return True
        return False

    # -- admission ----------------------------------------------------------------

    def _admit(self, conn: _Conn) -> bool:
        """Make room for ``conn`` by evicting, or say it must be refused."""
        mine = self._by_peer.get(conn.peer, {})
        if len(self._pending) >= MAX_PENDING:
            self._evict(next(iter(self._pending)))
        if sum(1 for c in mine if not c.authed) >= MAX_PENDING_PER_PEER:
            self._evict(next(c for c in mine if not c.authed))
        if len(mine) >= MAX_PER_PEER and not self._evict_idle(mine):
            return False
        if len(self._conns) >= self.max_connections and not self._evict_idle(self._conns):
            return False
        self._conns[conn] = None
        self._pending[conn] = None
        self._by_peer.setdefault(conn.peer, {})[conn] = None
        return True

    def _evict_idle(self, conns: dict[_Conn, None]) -> bool:
        victim = next((c for c in conns if not c.busy), None)
        if victim is None:
            return False
        self._evict(victim)
        return True

    def _evict(self, conn: _Conn) -> None:
        self.stats.evicted += 1
        self._forget(conn)
        conn.drop()

    def _forget(self, conn: _Conn) -> None:
        self._conns.pop(conn, None)
        self._pending.pop(conn, None)
        mine = self._by_peer.get(conn.peer)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self._by_peer[conn.peer]

    async def _refuse(self, writer: asyncio.StreamWriter, error: str) -> None:
        self.stats.refused += 1
        body = {"v": WIRE_VERSION, "error": error}
        writer.write(json.dumps(body).encode() + b"\n")
        await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = _Conn(str(peer[0]) if isinstance(peer, tuple) else "?", asyncio.current_task())
        if not self._admit(conn):
            self.stats.refused += 1
            writer.transport.abort()
            return
        loop = asyncio.get_running_loop()
        try:
            if self.tls is not None and _LATE_TLS:
                start_tls = writer.start_tls  # type: ignore[attr-defined]
                await start_tls(self.tls, ssl_handshake_timeout=AUTH_SECONDS)
            while True:
                wait = IDLE_SECONDS if conn.authed else AUTH_SECONDS
                timer = loop.call_later(wait, conn.expire)
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._refuse(writer, "request too long")
                    return
                finally:
                    timer.cancel()
                if not line:
                    return
                try:
                    req = json.loads(line)
                except (ValueError, RecursionError):  # nesting: a hostile client
                    await self._refuse(writer, "bad request")
                    return
                if not isinstance(req, dict) or req.get("v") != WIRE_VERSION:
                    await self._refuse(writer, f"wire version mismatch: server {WIRE_VERSION}")
                    return
                if not self._authorized(req.get("token")):
                    await self._refuse(writer, "bad token")
                    return
                if not conn.authed:
                    conn.authed = True
                    self._pending.pop(conn, None)
                want = req.get("want")
                if not isinstance(want, list) or len(want) > MAX_WANT:
                    await self._refuse(writer, f"want must be a list of at most {MAX_WANT} ids")
                    return
                conn.busy = True
                await self._answer(writer, want, conn)
                conn.busy = False
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the peer went away, was too slow or evicted, or the server is closing
        finally:
            if conn.expired:
                self.stats.timed_out += 1
            self._forget(conn)
            if conn.dropped:
                writer.transport.abort()  # do not wait for a client that stopped reading
            else:
                writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, want: list[Any], conn: _Conn) -> None:
        """One header with every size (-1: not here), then the bodies back to back.

        Chunks that sit next to each other in one store file (a batch fetched
        together is stored together) leave in one sendfile(2) per run.
        """
        parts: list[tuple[int, int, int] | bytes | None] = []
        for digest in want:
            part: tuple[int, int, int] | bytes | None = None
            if is_hash(digest):
                part = self.backend.span(digest)
                if part is None:
                    part = self.backend.lookup(digest)
            parts.append(part)
        sizes = [-1 if p is None else (len(p) if isinstance(p, bytes) else p[2]) for p in parts]
        total = sum(n for n in sizes if n > 0)
        timer = asyncio.get_running_loop().call_later(answer_seconds(total), conn.expire)
        try:
            await self._send(writer, parts, sizes)
        finally:
            timer.cancel()
        self.stats.sent += total
        self.stats.chunks += sum(1 for n in sizes if n >= 0)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        parts: list[tuple[int, int, int] | bytes | None],
        sizes: list[int],
    ) -> None:
        writer.write(json.dumps({"n": sizes}).encode() + b"\n")
        run: list[int] = []  # [fd, offset, size] of the current contiguous file run
        for part in parts:
            if isinstance(part, tuple):
                fd, offset, size = part
                if run and run[0] == fd and run[1] + run[2] == offset:
                    run[2] += size
                    continue
                if run:
                    await self._sendfile(writer, run[0], run[1], run[2])
                run = [fd, offset, size]
            elif isinstance(part, bytes):
                if run:
                    await self._sendfile(writer, run[0], run[1], run[2])
                    run = []
                view = memoryview(part)
                for start in range(0, len(part), SLICE):
                    piece = view[start : start + SLICE]
                    await self.throttle.take(len(piece))
                    writer.write(piece)
                    await writer.drain()
        if run:
            await self._sendfile(writer, run[0], run[1], run[2])
        await writer.drain()

    async def _sendfile(
        self, writer: asyncio.StreamWriter, fd: int, offset: int, size: int
    ) -> None:
        if self.tls is not None:  # bytes must pass through the cipher: no sendfile(2)
            for start in range(0, size, SLICE):
                count = min(SLICE, size - start)
                await self.throttle.take(count)
                writer.write(os.pread(fd, count, offset + start))
                await writer.drain()
            return
        handle = self._files.get(fd)
        if handle is None:
            handle = self._files[fd] = os.fdopen(fd, "rb", closefd=False)
        loop = asyncio.get_running_loop()
        for start in range(0, size, SLICE * 4):
            count = min(SLICE * 4, size - start)
            await self.throttle.take(count)
            await loop.sendfile(writer.transport, handle, offset + start, count)


def chunk_sources(value: object) -> list[tuple[str, int, str]]:
    """Validate a list of [host, port] or [host, port, pin] from a request (pin: the
    SHA-256 of the server's certificate, for TLS; "" when plain)."""
    out: list[tuple[str, int, str]] = []
    if not isinstance(value, list):
        raise ValueError("sources must be a list of [host, port, pin?]")
    for item in value:
        if not (isinstance(item, list) and len(item) in (2, 3) and isinstance(item[0], str)):
            raise ValueError("sources must be a list of [host, port, pin?]")
        pin = item[2] if len(item) == 3 else ""
        if pin and not is_fingerprint(pin):
            raise ValueError(f"bad certificate fingerprint {str(pin)[:70]!r}")
        out.append((item[0], int(item[1]), pin))
    return out
