"""The chunk wire's client: fetch chunks from a chunk server into a store, verified.

:class:`Fetcher` asks one source (a peer's :class:`~.chunkserver.ChunkServer` or
the controller's) for a batch of chunks over a small pool of kept-alive
connections, TLS to a pinned certificate by default (:mod:`.tlspin`), reads
the bodies straight into one buffer (:class:`_Stream`), hashes every chunk and
stores it; a source whose bytes do not match is reported *lying*, one it could
not connect to *unreachable*. One timer per request (:class:`_Watchdog`) ends a
fetch past its deadline or whose bytes stop for the stall wait. The connect,
handshake and stall waits come with each request (:mod:`.linkwaits`: what the
link shows), else a clean link's constants below. The wire format is in
:mod:`.chunkserver`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from dataclasses import dataclass, field

from .chunkserver import MAX_REQUEST, SLICE, WIRE_VERSION
from .chunkstore import ChunkError, ChunkStore, Throttle
from .linkwaits import FetchWaits
from .tlspin import TLS_RECORD, PinError, TlsSocket, shared_client_context

#: A fetch's TCP connect, and its TLS handshake, each on a clean link: on a lossy one
#: the controller sends longer waits with the request (:mod:`.linkwaits`), measured
#: from its own link to the node, so a dead peer costs this, not a lossy link's wait.
CONNECT_SECONDS = 5.0
#: A fetch whose bytes stop for this long fails, on a clean link (the controller sends
#: a lossy link's longer wait: TCP's doubled retransmission timeouts stall a sound
#: transfer beyond 10 s often at 30 % loss each way).
STALL_SECONDS = 10.0
#: Wake a reader for at least this many bytes of a chunk body (SO_RCVLOWAT).
LOWAT = 128 * 1024


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
