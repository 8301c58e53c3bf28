"""Talking to one node's agent from the controller: remote paths, start, protocol client.

Theory of operation. The agent lives in a working area on the node (default
``.shoal`` under the remote user's home; ``~/x``, relative and absolute paths
are accepted). The controller learns the working area's absolute path with
one shell command and caches it in its SQLite state (table ``agents``), so
later requests go straight to ``<home>/agent.sock`` through
:meth:`Connection.open_unix` (SSH streamlocal forwarding: no TCP port on the
node, SSH's authentication is the authentication). :class:`AgentClient`
speaks :mod:`shoal.agent.protocol` over that stream and turns refusals into
:class:`AgentError` and a protocol difference into :class:`VersionMismatch`,
each one line naming the node.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from dataclasses import dataclass
from typing import Any

from shoal.agent import protocol
from shoal.errors import (
    AgentError,
    AgentLinkBroken,
    AgentNotRunning,
    TransportError,
    VersionMismatch,
)
from shoal.state import State
from shoal.transport.base import ByteReader, ByteWriter, Connection, shell_path

DEFAULT_HOME = ".shoal"
DEFAULT_PYTHON = "python3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    node TEXT PRIMARY KEY,
    home_spec TEXT NOT NULL,
    home TEXT NOT NULL,
    build TEXT,
    protocol INTEGER,
    version TEXT,
    pid INTEGER,
    seen REAL
);
"""


def ensure(state: State) -> None:
    state.ensure("agents", SCHEMA)


def probe_command(home: str, create: bool) -> str:
    """Print the working area's absolute path, then the installed build id (if any)."""
    h = shell_path(home)
    prepare = f"mkdir -p {h} && chmod 700 {h} && " if create else ""
    return f"{prepare}cd {h} && pwd && (cat agent.build 2>/dev/null || true)"


def start_command(abs_home: str, python: str = DEFAULT_PYTHON) -> str:
    """Start the agent detached (it double-forks); exits once it listens."""
    h = shlex.quote(abs_home)
    return f"cd {h} && exec {shlex.quote(python)} {h}/agent.pyz serve --home {h} </dev/null"


@dataclass
class Probe:
    home: str  # absolute
    build: str | None  # installed build id, None when no agent is installed


async def probe(conn: Connection, home: str, *, create: bool = False) -> Probe | None:
    """The working area on the node, or None when it does not exist (and not ``create``)."""
    res = await conn.run(probe_command(home, create), timeout=30)
    if res.exit_status != 0:
        if create:
            err = res.stderr.decode(errors="replace").strip().splitlines()
            raise AgentError(
                f"cannot create working area {home}: "
                f"{err[-1] if err else f'exit {res.exit_status}'}",
                node=conn.node.name,
            )
        return None
    lines = res.stdout.decode(errors="replace").splitlines()
    if not lines:
        raise AgentError(f"cannot resolve working area {home}", node=conn.node.name)
    build = lines[1].strip() if len(lines) > 1 and lines[1].strip() else None
    return Probe(lines[0], build)  # not stripped: a home may end in a space


async def start_agent(conn: Connection, abs_home: str, python: str = DEFAULT_PYTHON) -> bool:
    """Start the agent; True when started, False when one was already running."""
    res = await conn.run(start_command(abs_home, python), timeout=60)
    if res.exit_status == 0:
        return True
    if res.exit_status == protocol.EXIT_RUNNING:
        return False
    err = (res.stderr or res.stdout).decode(errors="replace").strip().splitlines()
    reason = err[-1] if err else f"exit {res.exit_status}"
    raise AgentError(f"agent did not start in {abs_home}: {reason}", node=conn.node.name)


class AgentClient:
    """One conversation with an agent; requests are answered in order.

    :meth:`open` prefers a stream through SSH streamlocal forwarding
    (:class:`StreamClient`); when the SSH server refuses to forward to the
    socket but an agent answers ``agent.pyz ctl`` on the node, it falls back to
    :class:`CtlClient` (one SSH command per request).
    """

    def __init__(self, node: str, home: str) -> None:
        self.node = node
        self.home = home
        self._next = 0

    @classmethod
    async def open(
        cls, conn: Connection, abs_home: str, python: str = DEFAULT_PYTHON
    ) -> AgentClient:
        """Connect to ``<abs_home>/agent.sock``; AgentNotRunning when no agent listens."""
        path = f"{abs_home.rstrip('/')}/agent.sock"
        try:
            reader, writer = await conn.open_unix(path)
        except TransportError as exc:
            ctl = CtlClient(conn, abs_home, python)
            if await ctl.answers():
                return ctl
            raise AgentNotRunning(f"no agent answers at {path}", node=conn.node.name) from exc
        return StreamClient(reader, writer, conn.node.name, abs_home)

    async def _exchange(self, line: bytes, op: str, timeout: float) -> bytes:
        raise NotImplementedError

    async def call(self, op: str, *, timeout: float = 60.0, **args: Any) -> Any:
        """One request; the result, or AgentError / VersionMismatch."""
        self._next += 1
        request_id = self._next
        line = await self._exchange(
            protocol.encode(protocol.request(op, request_id, **args)), op, timeout
        )
        if not line:
            raise AgentLinkBroken(f"agent closed the connection during {op}", node=self.node)
        try:
            return protocol.check_reply(protocol.decode(line), request_id)
        except protocol.ProtocolError as exc:
            if exc.kind == "version":
                raise VersionMismatch(str(exc), node=self.node) from None
            raise AgentError(str(exc), node=self.node) from None

    async def close(self) -> None:
        return None


class StreamClient(AgentClient):
    """Requests over one byte stream to the agent's socket."""

    def __init__(self, reader: ByteReader, writer: ByteWriter, node: str, home: str) -> None:
        super().__init__(node, home)
        self.reader = reader
        self.writer = writer

    async def _exchange(self, line: bytes, op: str, timeout: float) -> bytes:
        try:
            self.writer.write(line)
            await self.writer.drain()
            return await asyncio.wait_for(self.reader.readline(), timeout)
        except TimeoutError:
            raise AgentError(
                f"agent did not answer {op} within {timeout:g}s", node=self.node
            ) from None
        except (OSError, EOFError) as exc:
            raise AgentLinkBroken(f"connection to the agent broke: {exc}", node=self.node) from exc
        except AgentError:
            raise
        except Exception as exc:  # the SSH library's own errors (connection lost...)
            raise AgentLinkBroken(f"connection to the agent broke: {exc}", node=self.node) from exc

    async def close(self) -> None:
        try:
            self.writer.close()
        except (OSError, RuntimeError):
            pass

    def prepare(self, op: str, **args: Any) -> PreparedRequest:
        """Request ``op`` encoded now, to be written later without awaiting (a barrier's
        release writes one per node in the same loop iteration); nothing else may be
        asked on this stream until its :meth:`PreparedRequest.result` is read."""
        self._next += 1
        line = protocol.encode(protocol.request(op, self._next, **args))
        return PreparedRequest(self, self._next, line, op)

    async def closed(self) -> None:
        """Return when the stream to the agent has ended (peeks: consumes nothing, a
        line that arrives meanwhile stays in the buffer for the next reply)."""
        reader: Any = self.reader
        while True:
            try:
                await reader.readuntil(b"\n\x00never\x00")  # a separator that never comes
            except asyncio.IncompleteReadError:
                return  # end of stream
            except (OSError, EOFError):
                return


class PreparedRequest:
    """One request of a :class:`StreamClient` encoded ahead of time (see ``prepare``)."""

    def __init__(self, client: StreamClient, request_id: int, line: bytes, op: str) -> None:
        self.client = client
        self.request_id = request_id
        self.line = line
        self.op = op
        self.sent = False

    def send(self) -> None:
        """Write the request (synchronous: no await between many of them)."""
        self.client.writer.write(self.line)
        self.sent = True

    async def result(self, timeout: float) -> Any:
        """The reply to the sent request; AgentError when it fails or does not come."""
        try:
            line = await asyncio.wait_for(self.client.reader.readline(), timeout)
            return protocol.check_reply(protocol.decode(line), self.request_id)
        except (TimeoutError, OSError, EOFError, protocol.ProtocolError) as exc:
            raise AgentError(f"{self.op} failed: {exc}", node=self.client.node) from None


class CtlClient(AgentClient):
    """Requests through ``python3 agent.pyz ctl`` on the node, one SSH command each."""

    def __init__(self, conn: Connection, home: str, python: str = DEFAULT_PYTHON) -> None:
        super().__init__(conn.node.name, home)
        self.conn = conn
        h = shlex.quote(home)
        self.command = f"exec {shlex.quote(python)} {h}/agent.pyz ctl --home {h}"

    async def _exchange(self, line: bytes, op: str, timeout: float) -> bytes:
        res = await self.conn.run(self.command, input=line, timeout=timeout)
        if res.exit_status != 0:
            err = res.stderr.decode(errors="replace").strip().splitlines()
            reason = err[-1] if err else f"exit {res.exit_status}"
            raise AgentNotRunning(f"agent ctl failed: {reason}", node=self.node)
        return res.stdout.split(b"\n", 1)[0] + b"\n" if res.stdout else b""

    async def answers(self) -> bool:
        """True when an agent answers through ``ctl`` (of any protocol version)."""
        try:
            await self.call("hello", timeout=30)
        except VersionMismatch:
            return True
        except (AgentError, TransportError):
            return False
        return True


def cached_home(state: State, node: str, home_spec: str) -> str | None:
    """The absolute working area last resolved for ``home_spec`` on ``node``."""
    ensure(state)
    row = state.db.execute(
        "SELECT home FROM agents WHERE node=? AND home_spec=?", (node, home_spec)
    ).fetchone()
    return str(row[0]) if row else None


def remember(
    state: State, node: str, home_spec: str, home: str, hello: dict[str, Any] | None = None
) -> None:
    """Cache the node's working area and what its agent said about itself."""
    ensure(state)
    hello = hello or {}
    with state.transaction() as db:
        db.execute(
            "INSERT INTO agents(node, home_spec, home, build, protocol, version, pid, seen)"
            " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(node) DO UPDATE SET"
            " home_spec=excluded.home_spec, home=excluded.home,"
            " build=COALESCE(excluded.build, build), protocol=COALESCE(excluded.protocol,"
            " protocol), version=COALESCE(excluded.version, version), pid=excluded.pid,"
            " seen=COALESCE(excluded.seen, seen)",
            (
                node,
                home_spec,
                home,
                hello.get("build"),
                hello.get("protocol"),
                hello.get("version"),
                hello.get("pid"),
                time.time() if hello else None,
            ),
        )


def forget(state: State, node: str) -> None:
    ensure(state)
    with state.transaction() as db:
        db.execute("DELETE FROM agents WHERE node=?", (node,))
