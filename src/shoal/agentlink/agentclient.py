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
each one line naming the node. :class:`StreamClient` also speaks the streaming
operations: :meth:`~StreamClient.exec` (a command forked by the agent, output
pushed), :meth:`~StreamClient.watch` (events as recorded, heartbeats) and
:meth:`~StreamClient.ping`, several at once on the one stream.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shoal.agent import protocol
from shoal.agent.execute import KILL_AFTER as EXEC_KILL_AFTER
from shoal.errors import (
    AgentError,
    AgentLinkBroken,
    AgentNotRunning,
    AgentTimeout,
    TransportError,
    VersionMismatch,
)
from shoal.state import State
from shoal.transport.base import (
    MAX_OUTPUT,
    ByteReader,
    ByteWriter,
    CommandResult,
    Connection,
    LineCallback,
    shell_path,
)
from shoal.transport.capture import STREAMS, OutputCapture

if TYPE_CHECKING:
    from shoal.agentlink.agentwatch import Watch

DEFAULT_HOME = ".shoal"
DEFAULT_PYTHON = "python3"
#: How much longer than an exec's own timeout the controller waits for its reply.
EXEC_MARGIN = 5.0

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


@dataclass(frozen=True)
class ExecResult(CommandResult):
    """What an ``exec`` through the agent did; ``timed_out`` when its timeout killed it."""

    timed_out: bool = False


@dataclass(frozen=True)
class Ping:
    """A ``ping``: round-trip time, the agent's clock and its skew against ours (seconds)."""

    rtt: float
    t: float
    seq: int
    skew: float


#: Called with each push message of a streaming request (a dict with ``push``).
PushHandler = Callable[[protocol.Message], None]


class _Pending:
    """A request awaiting its reply (and, for a stream, receiving its pushes)."""

    __slots__ = ("future", "on_end", "on_push", "stays")

    def __init__(
        self,
        future: asyncio.Future[protocol.Message],
        on_push: PushHandler | None = None,
        stays: bool = False,
        on_end: Callable[[AgentError], None] | None = None,
    ) -> None:
        self.future = future
        self.on_push = on_push
        self.stays = stays  # a watch keeps receiving pushes after its reply
        self.on_end = on_end


class StreamClient(AgentClient):
    """Requests over one byte stream to the agent's socket.

    Until a streaming request (:meth:`stream`, :meth:`exec`, :meth:`watch`) is
    made, :meth:`call` writes a request and reads its reply itself (one at a
    time). The first streaming request makes the demultiplexer own the stream
    from then on: it hands every reply to the request of its ``id`` and every push
    to that request's handler, so calls, execs and watches may run at once. A
    reader that can hand lines over as they arrive (``deliver_lines``: the SSH
    transport's) feeds it from the transport's callback; any other is read by a
    reader task.
    """

    def __init__(self, reader: ByteReader, writer: ByteWriter, node: str, home: str) -> None:
        super().__init__(node, home)
        self.reader = reader
        self.writer = writer
        self._pending: dict[int, _Pending] = {}
        #: the demultiplexer's reader task, or a future done at the stream's end
        self._reader_task: asyncio.Future[None] | None = None
        self._inline: asyncio.Lock | None = None
        self._ended: AgentError | None = None

    # -- one request at a time, before any stream ------------------------------

    async def call(self, op: str, *, timeout: float = 60.0, **args: Any) -> Any:
        """One request; the result, or AgentError / VersionMismatch."""
        if self._reader_task is not None:
            return await self._demuxed(op, args, None, timeout)
        if self._inline is None:
            self._inline = asyncio.Lock()
        async with self._inline:
            if self._reader_task is not None:
                return await self._demuxed(op, args, None, timeout)
            self._next += 1
            request_id = self._next
            line = protocol.encode(protocol.request(op, request_id, **args))
            try:
                self.writer.write(line)
                await self.writer.drain()
                message = await asyncio.wait_for(self._reply_inline(request_id), timeout)
            except asyncio.TimeoutError:
                raise AgentTimeout(
                    f"agent did not answer {op} within {timeout:g}s", node=self.node
                ) from None
            except AgentError:
                raise
            except Exception as exc:  # OSError, EOF, the SSH library's own (connection lost)
                raise AgentLinkBroken(
                    f"connection to the agent broke: {exc}", node=self.node
                ) from exc
            return self._result(message, op)

    async def _reply_inline(self, request_id: int) -> protocol.Message:
        while True:
            line = await self.reader.readline()
            if not line:
                raise AgentLinkBroken("agent closed the connection", node=self.node)
            message = self._decode(line)
            if message.get("id") in (request_id, None) and "push" not in message:
                return message  # else: what an abandoned request was still sent

    def _decode(self, line: bytes) -> protocol.Message:
        try:
            return protocol.decode(line)
        except protocol.ProtocolError as exc:
            raise AgentError(str(exc), node=self.node) from None

    def _result(self, message: protocol.Message, op: str) -> Any:
        try:
            return protocol.check_reply(message)
        except protocol.ProtocolError as exc:
            if exc.kind == "version":
                raise VersionMismatch(str(exc), node=self.node) from None
            if str(exc) == f"unknown operation {op!r}":
                raise AgentError(
                    f"the agent does not know {op!r} (an older build: upgrade it)", node=self.node
                ) from None
            raise AgentError(str(exc), node=self.node) from None

    # -- the demultiplexer ---------------------------------------------------------

    async def _start_reader(self) -> None:
        if self._reader_task is not None:
            return
        if self._inline is None:
            self._inline = asyncio.Lock()
        async with self._inline:  # an inline call in flight finishes first
            if self._reader_task is None:
                deliver = getattr(self.reader, "deliver_lines", None)
                if deliver is None:
                    self._reader_task = asyncio.ensure_future(self._read_loop())
                else:  # no task: lines from the transport's callback
                    self._reader_task = asyncio.get_running_loop().create_future()
                    deliver(self._on_line, self._on_stream_end)

    def _on_line(self, line: bytes) -> None:
        if self._ended is not None:
            return
        try:
            self._dispatch(self._decode(line))
        except AgentError as exc:
            self._stream_ended(f"bad message from the agent: {exc}")

    def _on_stream_end(self, exc: Exception | None) -> None:
        why = (
            "agent closed the connection"
            if exc is None
            else f"connection to the agent broke: {exc}"
        )
        self._stream_ended(why)

    def _stream_ended(self, reason: str) -> None:
        self._end(AgentLinkBroken(reason, node=self.node))
        if self._reader_task is not None and not self._reader_task.done():
            self._reader_task.set_result(None)

    async def _read_loop(self) -> None:
        reason = "agent closed the connection"
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                self._dispatch(self._decode(line))
        except asyncio.CancelledError:
            reason = "connection to the agent closed"
            raise
        except AgentError as exc:
            reason = f"bad message from the agent: {exc}"
        except Exception as exc:  # OSError, EOF, the SSH library's own
            reason = f"connection to the agent broke: {exc}"
        finally:
            self._end(AgentLinkBroken(reason, node=self.node))

    def _dispatch(self, message: protocol.Message) -> None:
        request_id = message.get("id")
        pending = self._pending.get(request_id) if isinstance(request_id, int) else None
        if "push" in message:
            if pending is not None and pending.on_push is not None:
                try:
                    pending.on_push(message)
                except Exception as exc:  # a bad push, or the caller's callback raised
                    self._pending.pop(request_id, None)  # type: ignore[arg-type]
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                    if pending.on_end is not None:
                        pending.on_end(AgentError(f"bad push: {exc}", node=self.node))
            return
        if pending is None:
            if request_id is None and message.get("ok") is False:  # refused the connection
                self._end(AgentError(str(message.get("error")), node=self.node))
            return  # the reply to an abandoned request
        if not pending.stays:
            del self._pending[request_id]  # type: ignore[arg-type]
        if not pending.future.done():
            pending.future.set_result(message)

    def _end(self, error: AgentError) -> None:
        if self._ended is None:
            self._ended = error
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(self._ended)
                entry.future.exception()  # retrieved: a watch may never await it
            if entry.on_end is not None:
                entry.on_end(self._ended)

    def _register(
        self,
        op: str,
        args: dict[str, Any],
        on_push: PushHandler | None = None,
        stays: bool = False,
        on_end: Callable[[AgentError], None] | None = None,
    ) -> tuple[int, asyncio.Future[protocol.Message], bytes]:
        """A new request id, its reply's future and its encoded line (not yet written)."""
        if self._ended is not None:
            raise self._ended
        self._next += 1
        future: asyncio.Future[protocol.Message] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = _Pending(future, on_push, stays, on_end)
        return self._next, future, protocol.encode(protocol.request(op, self._next, **args))

    def forget(self, request_id: int) -> None:
        """Drop a request: what it is still sent is ignored."""
        self._pending.pop(request_id, None)

    async def _write(self, line: bytes) -> None:
        try:
            self.writer.write(line)
            await self.writer.drain()
        except Exception as exc:
            raise AgentLinkBroken(f"connection to the agent broke: {exc}", node=self.node) from exc

    async def _demuxed(
        self,
        op: str,
        args: dict[str, Any],
        on_push: PushHandler | None,
        timeout: float | None,
    ) -> Any:
        request_id, future, line = self._register(op, args, on_push)
        try:
            await self._write(line)
            message = await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            self._abandon(request_id, on_push is not None)
            raise AgentTimeout(
                f"agent did not answer {op} within {timeout:g}s", node=self.node
            ) from None
        except BaseException:  # cancelled, the link broke, a push handler raised
            self._abandon(request_id, on_push is not None)
            raise
        return self._result(message, op)

    def _abandon(self, request_id: int, streaming: bool) -> None:
        """Forget a request; a stream on the agent is told to stop (not waited for)."""
        if request_id not in self._pending and not streaming:
            return
        self.forget(request_id)
        if streaming and self._ended is None:
            self.cancel_soon(request_id)

    def cancel_soon(self, request_id: int) -> None:
        """Ask the agent to end stream ``request_id`` (an exec is killed); not awaited."""
        try:
            _, future, line = self._register("cancel", {"id": request_id})
        except AgentError:
            return
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            self.writer.write(line)
        except Exception:  # the link is going: the agent ends its streams itself
            pass

    # -- streaming requests -----------------------------------------------------------

    async def stream(
        self, op: str, on_push: PushHandler, *, timeout: float | None = 60.0, **args: Any
    ) -> Any:
        """Send a streaming request, call ``on_push`` with each push, return its result.

        ``timeout`` bounds the wait for the reply (None: no bound); on timeout or
        cancellation the agent is told to end the stream. (An argument of the op that is
        itself called ``timeout`` goes through :meth:`stream_args`.)
        """
        return await self.stream_args(op, args, on_push, timeout=timeout)

    async def stream_args(
        self,
        op: str,
        args: dict[str, Any],
        on_push: PushHandler,
        *,
        timeout: float | None = 60.0,
    ) -> Any:
        """:meth:`stream` with the op's arguments as one dict."""
        await self._start_reader()
        return await self._demuxed(op, args, on_push, timeout)

    async def exec(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        cwd: str | None = None,
        on_line: LineCallback | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> ExecResult:
        """Run ``command`` under the node user's login shell, forked by the agent.

        ``timeout``: SIGTERM to its process group on the node, SIGKILL 2 s later
        (``timed_out`` in the result). ``on_line(stream, line)`` sees each output line
        as it arrives; the first ``max_output`` bytes of each stream are kept (0: all).
        Cancelling the call kills the command on the node.
        """
        output = OutputCapture(max_output, on_line)

        def on_push(message: protocol.Message) -> None:
            if message.get("push") != "out":
                return
            stream = message.get("stream")
            if stream not in STREAMS:
                raise AgentError(f"exec output on unknown stream {stream!r}", node=self.node)
            try:
                data = base64.b64decode(str(message.get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                raise AgentError("exec output that is not base64", node=self.node) from None
            output.add(str(stream), data)

        args: dict[str, Any] = {"command": command}
        if timeout is not None:
            args["timeout"] = timeout
        if env:
            args["env"] = dict(env)
        if input is not None:
            args["input"] = base64.b64encode(input).decode("ascii")
        if cwd is not None:
            args["cwd"] = cwd
        wait = None if timeout is None else timeout + EXEC_KILL_AFTER + EXEC_MARGIN
        result = await self.stream_args("exec", args, on_push, timeout=wait)
        output.flush_lines()
        if not isinstance(result, dict):
            raise AgentError("exec answered without a result", node=self.node)
        code, sig = result.get("exit"), result.get("signal")
        return ExecResult(
            exit_status=code if isinstance(code, int) and not isinstance(code, bool) else None,
            stdout=output.stdout,
            stderr=output.stderr,
            signal=sig if isinstance(sig, str) else None,
            dropped=output.dropped,
            timed_out=result.get("timed_out") is True,
        )

    async def ping(self, timeout: float = 10.0) -> Ping:
        """Round-trip time and the agent's clock (skew: agent minus our midpoint)."""
        sent_wall, sent = time.time(), time.monotonic()
        result = await self.call("ping", timeout=timeout)
        rtt = time.monotonic() - sent
        try:
            agent_t, seq = float(result["t"]), int(result["seq"])
        except (KeyError, TypeError, ValueError):
            raise AgentError("ping answered without t and seq", node=self.node) from None
        return Ping(rtt=rtt, t=agent_t, seq=seq, skew=agent_t - (sent_wall + rtt / 2))

    def watch(self, since: int = 0, beat: float = 0.5, *, backlog: int = 10_000) -> Watch:
        """A watch of the agent's events from ``since`` and its beats every ``beat`` s
        (``async with client.watch(...) as w: async for item in w``; :mod:`.agentwatch`)."""
        from shoal.agentlink.agentwatch import Watch

        return Watch(self, since, beat, backlog)

    # -- the stream itself ----------------------------------------------------------

    async def close(self) -> None:
        try:
            self.writer.close()
        except (OSError, RuntimeError):
            pass
        if isinstance(self._reader_task, asyncio.Task):
            self._reader_task.cancel()
        elif self._reader_task is not None:
            self._stream_ended("connection to the agent closed")

    def prepare(self, op: str, **args: Any) -> PreparedRequest:
        """Request ``op`` encoded now, to be written later without awaiting (a barrier's
        release writes one per node in the same loop iteration); before any stream,
        nothing else may be asked on this stream until its :meth:`PreparedRequest.result`
        is read."""
        if self._reader_task is not None:
            request_id, future, line = self._register(op, args)
            return PreparedRequest(self, request_id, line, op, future)
        self._next += 1
        line = protocol.encode(protocol.request(op, self._next, **args))
        return PreparedRequest(self, self._next, line, op)

    async def closed(self) -> None:
        """Return when the stream to the agent has ended (peeks: consumes nothing, a
        line that arrives meanwhile stays in the buffer for the next reply)."""
        if self._reader_task is not None:
            await asyncio.wait({self._reader_task})
            return
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

    def __init__(
        self,
        client: StreamClient,
        request_id: int,
        line: bytes,
        op: str,
        future: asyncio.Future[protocol.Message] | None = None,
    ) -> None:
        self.client = client
        self.request_id = request_id
        self.line = line
        self.op = op
        self.sent = False
        self._future = future

    def send(self) -> None:
        """Write the request (synchronous: no await between many of them)."""
        self.client.writer.write(self.line)
        self.sent = True

    async def result(self, timeout: float) -> Any:
        """The reply to the sent request; AgentError when it fails or does not come."""
        try:
            if self._future is not None:
                message = await asyncio.wait_for(self._future, timeout)
            else:
                line = await asyncio.wait_for(self.client.reader.readline(), timeout)
                message = protocol.decode(line)
            return protocol.check_reply(message, self.request_id)
        except (asyncio.TimeoutError, OSError, EOFError, protocol.ProtocolError, AgentError) as exc:
            self.client.forget(self.request_id)
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
