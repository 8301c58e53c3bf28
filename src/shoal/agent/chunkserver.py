"""The chunk wire protocol: a read-only, content-addressed TCP server and its client.

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

The receiver never trusts the bytes: :meth:`Fetcher.fetch` hashes every chunk
and reports a peer whose bytes do not match as *lying*, so the controller
avoids it and fetches the chunk elsewhere. Slow peers hit an idle timeout.
For tests, a node whose agent home holds the file ``TEST_CORRUPT_CHUNKS``
serves every chunk with its first byte flipped (see :class:`StoreBackend`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chunkstore import ChunkError, ChunkStore, Throttle
from .linkwaits import FetchWaits
from .manifest import is_hash
from .tlspin import TLS_RECORD, PinError, TlsSocket, is_fingerprint, shared_client_context

WIRE_VERSION = 1
MAX_WANT = 1024
#: The longest request line: MAX_WANT quoted ids (68 bytes each) and the token fit.
MAX_REQUEST = 96 * 1024
#: A new connection must have sent its first request (its token) by then (its TLS
#: handshake included: several round trips, each a doubled timeout away at 30 % loss).
AUTH_SECONDS = 15.0
#: A connection with no request for this long is closed.
IDLE_SECONDS = 60.0
#: A fetch's TCP connect, and its TLS handshake, each on a clean link: on a lossy one
#: the controller sends longer waits with the request (:mod:`.linkwaits`), measured
#: from its own link to the node, so a dead peer costs this, not a lossy link's wait.
CONNECT_SECONDS = 5.0
#: A fetch whose bytes stop for this long fails, on a clean link (the controller sends
#: a lossy link's longer wait: TCP's doubled retransmission timeouts stall a sound
#: transfer beyond 10 s often at 30 % loss each way).
STALL_SECONDS = 10.0
MAX_PENDING = 64
MAX_PENDING_PER_PEER = 8
MAX_PER_PEER = 128
MAX_CONNECTIONS = 4096
SLICE = 256 * 1024
LOWAT = 128 * 1024
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


# -- client ---------------------------------------------------------------------


@dataclass
class FetchResult:
    """What one request to one source gave: stored chunks, failures, and the verdict."""

    got: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    nbytes: int = 0
    error: str = ""
    lying: bool = False  # the source sent bytes that do not match the hash
    local: bool = False  # the failure is this node's own (its disk), not the source's
    unreachable: bool = False  # no TCP connection to the source could be opened
    seconds: float = 0.0


class _Watchdog:
    """One timer per request instead of an ``asyncio.wait_for`` per read.

    Cancels the fetching task when the request passes its deadline or the
    source has sent nothing for ``idle`` seconds (the stream stamps every
    read). ``wait_for`` per 256 KiB slice made a task and a timer each time:
    200,000 of them for a 200 MB push to 16 nodes.
    """

    def __init__(self, stream: _Stream, idle: float, deadline: float | None) -> None:
        self.stream = stream
        self.idle = idle
        self.deadline = deadline
        self.expired = False
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        stream.stamp = time.monotonic()
        self.handle: asyncio.TimerHandle | None = self.loop.call_later(self._left(), self._check)

    def _left(self) -> float:
        until = self.stream.stamp + self.idle
        if self.deadline is not None:
            until = min(until, max(self.deadline, time.monotonic() + 0.1))
        return until - time.monotonic()

    def _check(self) -> None:
        left = self._left()
        if left > 0.001:
            self.handle = self.loop.call_later(left, self._check)
            return
        self.handle = None
        self.expired = True
        if self.task is not None:
            self.task.cancel()

    def absorb(self) -> None:
        """Our own cancellation was caught: undo it (Python >= 3.11 counts them)."""
        uncancel = getattr(self.task, "uncancel", None)
        if uncancel is not None:
            uncancel()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _Stream:
    """A non-blocking TCP socket read with as few copies as possible.

    Headers are read line by line from a small buffer; chunk bodies go
    straight from the kernel into one preallocated buffer (``recv_into``), are
    hashed from it and written from it. Reads have no timeout of their own: a
    :class:`_Watchdog` watches the whole request (``stamp`` is the time of
    the last read that returned bytes).
    """

    def __init__(self, sock: socket.socket, tls: TlsSocket | None = None) -> None:
        self.sock = sock
        self.tls = tls
        self.loop = asyncio.get_running_loop()
        self.pending = bytearray()
        self.lowat = 1
        self.stamp = time.monotonic()
        self.filled = 0  # bytes of the view read_into is filling that are in

    @classmethod
    async def connect(
        cls, host: str, port: int, timeout: float, pin: str = "", handshake: float = 0.0
    ) -> _Stream:
        """A connection; with ``pin``, TLS to a server whose certificate has that SHA-256
        (PinError otherwise), the handshake within ``handshake`` (else ``timeout``)."""
        loop = asyncio.get_running_loop()
        info = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, addr = info[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
            if not pin:
                return cls(sock)
            tls = TlsSocket(sock, shared_client_context())
            await asyncio.wait_for(tls.handshake(pin), handshake or timeout)
        except BaseException:
            sock.close()
            raise
        return cls(sock, tls)

    async def send(self, data: bytes) -> None:
        if self.tls is not None:
            await self.tls.sendall(data)
        else:
            await self.loop.sock_sendall(self.sock, data)

    async def _recv_into(self, view: memoryview) -> int:
        if self.tls is not None:
            return await self.tls.recv_into(view)
        return await self.loop.sock_recv_into(self.sock, view)

    def _lowat(self, n: int) -> None:
        if n != self.lowat:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, n))
            except OSError:
                pass
            self.lowat = n

    async def readline(self) -> bytes:
        self._lowat(1)
        while b"\n" not in self.pending:
            if len(self.pending) > MAX_REQUEST:
                raise ConnectionError("header too long")
            data = bytearray(65536)
            n = await self._recv_into(memoryview(data))
            if not n:
                return b""
            self.stamp = time.monotonic()
            self.pending += memoryview(data)[:n]
        cut = self.pending.index(b"\n") + 1
        line = bytes(self.pending[:cut])
        del self.pending[:cut]
        return line

    async def read_into(self, view: memoryview) -> None:
        """Fill ``view`` exactly; ConnectionError if the peer closes first."""
        have = self.filled = min(len(self.pending), len(view))
        if have:
            view[:have] = self.pending[:have]
            del self.pending[:have]
        while have < len(view):
            # wake up for a large piece, not for every packet of a rate-limited link; under
            # TLS less what it already holds undecrypted (the BIO, and up to one partial
            # record inside OpenSSL), or the last piece would wait for bytes never sent
            held = self.tls.buffered + TLS_RECORD if self.tls is not None else 0
            self._lowat(min(len(view) - have, LOWAT) - held)
            n = await self._recv_into(view[have:])
            if not n:
                raise ConnectionError("connection closed mid-chunk")
            self.stamp = time.monotonic()
            have += n
            self.filled = have

    def close(self) -> None:
        self.sock.close()


class Fetcher:
    """Fetch chunks into a store over a small pool of kept-alive connections."""

    def __init__(
        self,
        store: ChunkStore,
        throttle: Throttle | None = None,
        connect_timeout: float = CONNECT_SECONDS,
        idle_timeout: float = STALL_SECONDS,
    ) -> None:
        self.store = store
        self.throttle = throttle or Throttle(None)
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._idle: dict[tuple[str, int, str], list[_Stream]] = {}

    def waits(self) -> FetchWaits:
        """This fetcher's own waits (a clean link's), for requests that bring none."""
        return FetchWaits(self.connect_timeout, self.connect_timeout, self.idle_timeout)

    async def _connect(
        self, host: str, port: int, pin: str, waits: FetchWaits
    ) -> tuple[_Stream, bool]:
        """A kept-alive connection (True) or a new one (False)."""
        pool = self._idle.get((host, port, pin))
        if pool:
            return pool.pop(), True
        return await _Stream.connect(host, port, waits.connect, pin, waits.handshake), False

    @staticmethod
    async def _ask(conn: _Stream, request: bytes, kept: bool) -> bytes:
        """Send the request, read the answer's header line; b"" if a kept connection was
        closed meanwhile by the server (idle, or evicted), which is worth one retry."""
        try:
            await conn.send(request)
            return await conn.readline()
        except (ConnectionError, OSError):
            if kept:
                return b""
            raise

    def _release(self, host: str, port: int, pin: str, conn: _Stream) -> None:
        pool = self._idle.setdefault((host, port, pin), [])
        if len(pool) < 4:
            pool.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()

    async def fetch(
        self,
        host: str,
        port: int,
        token: str,
        chunks: list[tuple[str, int]],
        deadline: float | None = None,
        bucket: str = "misc",
        pin: str = "",
        waits: FetchWaits | None = None,
    ) -> FetchResult:
        """Fetch ``chunks`` [(sha256, size)] from one source; never raises for the source.

        With ``pin`` (a certificate's SHA-256), over TLS to that certificate only: the
        token is sent once the server has proved it; another certificate is ``lying``.
        ``waits``: the link's connect, handshake and stall limits (else this fetcher's)."""
        waits = waits or self.waits()
        result = FetchResult()
        started = time.monotonic()
        pending = [c for c in chunks if not self.store.has(c[0])]
        result.got = [c[0] for c in chunks if c not in pending]
        if not pending:
            return result
        conn: _Stream | None = None
        watch: _Watchdog | None = None
        sizes: list[int] | None = None
        whole = memoryview(b"")
        arrived = [0]  # body bytes read so far: whole chunks among them are kept on a cut
        try:
            request = {"v": WIRE_VERSION, "token": token, "want": [h for h, _ in pending]}
            line = json.dumps(request).encode() + b"\n"
            conn, kept = await self._connect(host, port, pin, waits)
            watch = _Watchdog(conn, waits.stall, deadline)
            head = await self._ask(conn, line, kept)
            if not head and kept:
                conn.close()
                conn = None
                conn = await _Stream.connect(host, port, waits.connect, pin, waits.handshake)
                watch.stream = conn
                conn.stamp = time.monotonic()
                head = await self._ask(conn, line, False)
            sizes = _sizes(head, pending, result)
            if sizes is None:
                return result
            total = sum(n for n in sizes if n > 0)
            whole = memoryview(bytearray(total))
            await self._receive(conn, whole, arrived)
            watch.stop()
            result.nbytes = total
            self._store(pending, sizes, whole, bucket, result)
            self._release(host, port, pin, conn)
            conn = None
        except ChunkError as exc:  # our own disk: not the source's fault
            result.error = str(exc)
            result.local = True
        except PinError as exc:  # an impostor, or someone on the path
            result.error = str(exc)
            result.lying = True
        except asyncio.TimeoutError:
            result.error = "timed out"
            result.unreachable = watch is None  # while connecting
        except asyncio.CancelledError:
            if watch is None or not watch.expired:
                raise
            watch.absorb()
            result.error = "timed out"
        except (ConnectionError, OSError) as exc:
            result.error = str(exc) or type(exc).__name__
            result.unreachable = watch is None
        finally:
            if watch is not None:
                watch.stop()
            if conn is not None:
                conn.close()
            result.seconds = time.monotonic() - started
        if result.error and not (result.local or result.lying) and sizes is not None and arrived[0]:
            self._keep_arrived(pending, sizes, whole, arrived[0], bucket, result)
        done = set(result.got) | set(result.failed)
        result.failed.extend(h for h, _ in pending if h not in done)
        return result

    async def _receive(self, conn: _Stream, whole: memoryview, arrived: list[int]) -> None:
        """The answer's chunk bytes, read into ``whole`` a slice at a time; ``arrived[0]``
        counts what is in."""
        for start in range(0, len(whole), SLICE):
            part = whole[start : start + SLICE]
            try:
                await conn.read_into(part)
            finally:
                arrived[0] = start + conn.filled
            await self.throttle.take(len(part))

    def _keep_arrived(
        self,
        pending: list[tuple[str, int]],
        sizes: list[int],
        whole: memoryview,
        arrived: int,
        bucket: str,
        result: FetchResult,
    ) -> None:
        """A cut answer (timed out, connection lost): the whole chunks that arrived before
        the cut are verified and kept, so a slow or lossy link still makes progress (before,
        a batch that could not finish within its deadline was thrown away whole, again and
        again: 30 % loss ended a push with one error per node)."""
        head: list[tuple[str, int]] = []
        used = 0
        for (digest, size), n in zip(pending, sizes):
            if n > 0 and used + n > arrived:
                break
            head.append((digest, size))
            used += max(n, 0)
        try:
            self._store(head, sizes[: len(head)], whole[:used], bucket, result)
        except ConnectionError:  # a chunk that arrived did not verify: result.lying says so
            pass
        except ChunkError as exc:
            result.error, result.local = str(exc), True

    def _store(
        self,
        pending: list[tuple[str, int]],
        sizes: list[int],
        whole: memoryview,
        bucket: str,
        result: FetchResult,
    ) -> None:
        """Hash each chunk and store the ones that verify, up to the first that does not
        (then the source is lying: ConnectionError); chunks it does not have fail."""
        offset = 0
        good: list[tuple[str, int]] = []
        lie = ""
        for (digest, _), n in zip(pending, sizes):
            if n < 0:
                result.failed.append(digest)
                continue
            if hashlib.sha256(whole[offset : offset + n]).hexdigest() != digest:
                lie = f"chunk {digest[:12]} failed verification"
                break
            good.append((digest, n))
            offset += n
        # what verified before a bad chunk is kept, as if stored one by one
        self.store.put_verified(good, whole[:offset], bucket)
        result.got.extend(h for h, _ in good)
        if lie:
            result.lying = True
            raise ConnectionError(lie)


def _sizes(head: bytes, pending: list[tuple[str, int]], result: FetchResult) -> list[int] | None:
    """The chunk sizes the answer's header line announces, one per chunk asked for (-1:
    not there); None when the source refused (``result`` says why). ConnectionError for
    a header that is not one, or sizes that are not the chunks' (the source is lying)."""
    try:
        header = json.loads(head)
    except (ValueError, RecursionError):  # nesting: a hostile source
        header = None
    if not isinstance(header, dict):
        raise ConnectionError("connection closed" if not head else "bad header")
    if "error" in header:
        result.error = f"refused: {header['error']}"
        result.failed.extend(h for h, _ in pending)
        return None
    sizes = header.get("n")
    if not isinstance(sizes, list) or len(sizes) != len(pending):
        raise ConnectionError("bad answer")
    for (digest, size), n in zip(pending, sizes):
        if not isinstance(n, int) or (n >= 0 and n != size):
            result.lying = True
            raise ConnectionError(f"chunk {digest[:12]} has {n} bytes, expected {size}")
    return sizes


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
