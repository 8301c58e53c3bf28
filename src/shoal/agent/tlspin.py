"""TLS for the chunk wire, with certificates pinned by fingerprint (standard library only).

Theory of operation. No CA and no host names: every chunk server (the
controller's, each node's) presents a self-signed certificate made for it on
the controller, and whoever connects checks that the SHA-256 of the
certificate it was shown is the one the controller handed it over SSH
(:func:`fingerprint`, lowercase hex of the DER bytes). The handshake proves
that the server holds the certificate's key, so a pinned fingerprint
authenticates the server; the push's token, sent only once the pin has been
checked, authenticates the client. A wrong certificate is a :class:`PinError`
(the fetcher treats that peer as lying: the controller drops it for the push).

A node cannot make a certificate with the standard library (there is no X.509
writer), so the controller makes each node's key and certificate per push and
sends them over the node's SSH connection; :func:`server_context` loads them
from a 0600 file in the agent home that it removes at once (``ssl`` loads keys
from files only), so the key lives in this process's memory alone.

The fetcher reads raw socket bytes itself (``recv_into`` without a per-read
timeout, see :mod:`.chunkserver`), so the client side is an ``ssl.SSLObject``
over memory BIOs driven by the event loop's socket calls
(:class:`TlsSocket`), not an asyncio SSL transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import socket
import ssl
from pathlib import Path
from typing import Any

#: Raw bytes read from the socket at a time.
RAW_READ = 256 * 1024
#: The most ciphertext one TLS record takes (16 KiB of data + its header, padding, tag):
#: OpenSSL may hold that much of a partial record that ``buffered`` does not count.
TLS_RECORD = 16 * 1024 + 512
#: Test hook: a node whose agent home holds this file (a PEM key and certificate)
#: serves with it instead of the certificate it was handed, and still reports the
#: handed one's fingerprint: an impostor, as a peer on the path would be.
TEST_IMPOSTOR_FLAG = "TEST_TLS_IMPOSTOR.pem"


class PinError(ConnectionError):
    """The server's certificate is not the one pinned for it."""


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(cert_pem: str) -> str:
    return fingerprint(ssl.PEM_cert_to_DER_cert(cert_pem))


def is_fingerprint(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def server_context(cert_pem: str, key_pem: str, scratch: Path) -> ssl.SSLContext:
    """A server context for this key and certificate (loaded through a 0600 file in
    ``scratch`` that is gone when this returns)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_NONE  # clients prove themselves with the push's token
    if hasattr(ctx, "num_tickets"):
        ctx.num_tickets = 0  # no session resumption: each connection is one handshake
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = scratch / f".tls-{secrets.token_hex(8)}.pem"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(str(path), flags, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key_pem + "\n" + cert_pem)
        ctx.load_cert_chain(str(path))
    except ssl.SSLError as exc:
        raise ValueError(f"bad TLS key or certificate: {exc.reason or exc}") from None
    finally:
        try:
            path.unlink()
        except OSError:
            pass
    return ctx


def client_context() -> ssl.SSLContext:
    """No CA, no host name: the certificate is checked by its pinned fingerprint."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


_CLIENT: ssl.SSLContext | None = None


def shared_client_context() -> ssl.SSLContext:
    global _CLIENT
    if _CLIENT is None:
        _CLIENT = client_context()
    return _CLIENT


class TlsSocket:
    """The client end of one TLS connection over a non-blocking socket."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        #: typed Any: ``read(n, buffer)`` takes any writable buffer and returns a count
        self.obj: Any = ctx.wrap_bio(self.incoming, self.outgoing, server_side=False)
        self.raw = bytearray(RAW_READ)

    @property
    def buffered(self) -> int:
        """Ciphertext already read from the socket and not yet decrypted."""
        return self.incoming.pending

    async def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def _fill(self) -> bool:
        """Read more ciphertext; False at end of stream."""
        n = await self.loop.sock_recv_into(self.sock, self.raw)
        if not n:
            return False
        self.incoming.write(memoryview(self.raw)[:n])
        return True

    async def handshake(self, pin: str) -> None:
        """Handshake, then check the server's certificate against ``pin`` (PinError)."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise ConnectionError("connection closed during the TLS handshake") from None
            except ssl.SSLError as exc:
                raise ConnectionError(f"TLS handshake failed: {exc.reason or exc}") from None
        await self._flush()
        der = self.obj.getpeercert(binary_form=True)
        got = fingerprint(der) if der else "none"
        if got != pin:
            raise PinError(f"certificate sha256 {got[:16]} is not the pinned {pin[:16]} (refused)")

    async def sendall(self, data: bytes) -> None:
        self.obj.write(data)
        await self._flush()

    async def recv_into(self, view: memoryview) -> int:
        """Decrypted bytes into ``view`` (at least one); 0 at end of stream."""
        while True:
            try:
                return self.obj.read(len(view), view)
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    return 0
            except ssl.SSLZeroReturnError:
                return 0
            except ssl.SSLError as exc:
                raise ConnectionError(f"TLS error: {exc.reason or exc}") from None
