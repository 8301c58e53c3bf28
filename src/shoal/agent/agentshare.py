"""This agent's own zipapp served to peers: ``agent.share`` / ``agent.unshare``.

Theory of operation. A large install or upgrade (``shoal agent install`` on
many nodes, or behind a slow source link) copies the zipapp by SFTP to a first
wave only; every later node fetches it from nodes that already run the new
build (:mod:`shoal.content.agentspread` on the controller, the stdlib
bootstrap :mod:`.bootfetch` on the fetching node). ``agent.share {token, tls:
{cert, key}, build}`` makes this agent serve its ``agent.pyz`` over the chunk
wire (:mod:`.chunkserver`: read-only, token-checked, TLS with the certificate
the controller made for it, pinned by its fingerprint): the file cut into
pieces of :data:`PIECE` bytes, each named by its SHA-256. It answers ``{port,
fingerprint, size, sha256, pieces}``; ``build`` must be the build this agent
runs (the file on disk is that build), so a peer never serves another one.

Nothing but the pieces can be read; nothing can be written or started (the
fetching node's bootstrap is started by the controller over SSH). The port
closes at ``agent.unshare {token}`` or once no request carried the token for
:data:`IDLE_SECONDS` (a controller that died leaves no open port). With the
test flag file ``TEST_CORRUPT_CHUNKS`` in the agent's home, every piece is
served with its first byte flipped (the fetching side must refuse it).

Standard library only, Python >= 3.9 (this ships inside the agent).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any, Callable, Optional

from .chunkserver import TEST_CORRUPT_FLAG, Backend, ChunkServer
from .tlspin import pem_fingerprint, server_context

#: Bytes per served piece (a 100 KB zipapp is 4 pieces, each verified on arrival).
PIECE = 32 * 1024
#: A share whose token no request carried for this long closes its port.
IDLE_SECONDS = 120.0

Record = Callable[[str, Optional[str], str], Any]


class ZipappBackend(Backend):
    """The pieces of one file's bytes, read once (the file may be replaced later)."""

    def __init__(self, data: bytes, home: Path) -> None:
        self.home = home
        self.pieces: dict[str, bytes] = {}
        self.order: list[list[Any]] = []
        for start in range(0, len(data), PIECE):
            piece = data[start : start + PIECE]
            digest = hashlib.sha256(piece).hexdigest()
            self.pieces[digest] = piece
            self.order.append([digest, len(piece)])

    def lookup(self, digest: str) -> bytes | None:
        piece = self.pieces.get(digest)
        if piece and (self.home / TEST_CORRUPT_FLAG).exists():
            return bytes([piece[0] ^ 0xFF]) + piece[1:]
        return piece


class AgentShare:
    """The ``agent.share`` / ``agent.unshare`` operations of one agent."""

    def __init__(self, home: Path, build: str, record: Record) -> None:
        self.home = home
        self.build = build
        self.record = record
        self.server: ChunkServer | None = None
        self.answer: dict[str, Any] = {}
        self._reaper: asyncio.TimerHandle | None = None

    async def dispatch(self, op: str, args: dict[str, Any]) -> Any:
        if op == "agent.share":
            return await self.share(args)
        if op == "agent.unshare":
            return self.unshare(str(args.get("token", "")))
        raise ValueError(f"unknown operation {op!r}")

    async def share(self, args: dict[str, Any]) -> dict[str, Any]:
        token, tls = args.get("token"), args.get("tls")
        if not isinstance(token, str) or len(token) < 16:
            raise ValueError("agent.share needs a token of 16 characters or more")
        if args.get("build") != self.build:
            raise ValueError(f"this agent runs build {self.build}, not {args.get('build')}")
        if self.server is None:
            if not isinstance(tls, dict) or not all(
                isinstance(tls.get(k), str) for k in ("cert", "key")
            ):
                raise ValueError("agent.share needs tls {cert, key}")
            data = (self.home / "agent.pyz").read_bytes()
            backend = ZipappBackend(data, self.home)
            ctx = server_context(tls["cert"], tls["key"], self.home)
            server = ChunkServer(backend, tls=ctx, fingerprint=pem_fingerprint(tls["cert"]))
            port = await server.start(str(args.get("bind") or "0.0.0.0"), 0)
            self.server = server
            self.answer = {
                "port": port,
                "fingerprint": server.fingerprint,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "pieces": backend.order,
                "build": self.build,
            }
            self.record("agent_share", None, f"serving agent.pyz on port {port} (TLS)")
            self._arm()
        self.server.tokens.add(token)
        self.server.used[token] = time.monotonic()
        return dict(self.answer)

    def _arm(self) -> None:
        self._reaper = asyncio.get_running_loop().call_later(IDLE_SECONDS / 4, self._reap)

    def _reap(self) -> None:
        if self.server is None:
            return
        now = time.monotonic()
        for token in list(self.server.tokens):
            if now - self.server.used.get(token, 0.0) > IDLE_SECONDS:
                self.server.tokens.discard(token)
        if self.server.tokens:
            self._arm()
        else:
            self.close()

    def unshare(self, token: str) -> dict[str, Any]:
        if self.server is not None:
            self.server.tokens.discard(token)
            if not self.server.tokens:
                self.close()
        return {"sharing": self.server is not None}

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        if self.server is not None:
            sent = self.server.stats.sent
            self.server.close()
            self.server = None
            self.record("agent_share", None, f"stopped serving agent.pyz ({sent} bytes sent)")
