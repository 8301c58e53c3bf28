"""Relay gateways, controller side: one connection to a gateway runs its whole subtree.

Owns the relay mode of gateways (issue 18 item 3, ClusterShell's tree mode). A
node marked ``gateway=G`` and ``gateway_mode=relay`` is not reached SSH-in-SSH
(:mod:`.gateways`): the controller opens one connection to G with agent
forwarding on and runs :mod:`shoal.agent.relayrun` there (its source, with
``python3 -c``: nothing is installed), which logs in to each node with G's
OpenSSH client and sends up one copy of each distinct outcome with its nodes.
So the controller does one handshake per gateway and receives common output
once.

Credentials: the agent forwarded is not the user's. :class:`KeyAgent` is a
private SSH agent in this process (a Unix socket in a 0700 directory, living
as long as the relay's connection) holding the keys the subtree's nodes
authenticate with on the direct path. It signs at most one login per node of
the subtree, and only inside an SSH session that the gateway's OpenSSH client
bound to a host key the controller trusts for one of those nodes
(``session-bind@openssh.com``, signed by that host): a hostile gateway gets
neither a key nor a signing oracle for any other host or beyond what the run
needed. A node that authenticates only with the user's own
agent (no key file) gets that agent forwarded, unbounded while connected (the
trade-off is the user's: relay mode is opted in).

Host keys: the gateway receives the controller's known_hosts entries for the
subtree's nodes (matched as the direct path matches them) and nothing else, and
checks strictly: a node whose key differs is refused there with the direct
path's wording.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shlex
import struct
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.public_key import decode_ssh_public_key

from shoal.agent import relayrun
from shoal.errors import (
    AuthError,
    CommandTimeout,
    ConnectError,
    HostKeyError,
    ShoalError,
    TransportError,
)
from shoal.logsetup import logger
from shoal.nodes.model import Node

from .base import MAX_OUTPUT, CommandResult
from .ssh import SSHConnection, SSHTransport

log = logger(__name__)

_FAILURE, _SUCCESS, _IDENTITIES, _IDENTITIES_ANSWER, _SIGN, _SIGN_RESPONSE = 5, 6, 11, 12, 13, 14
_EXTENSION = 27
_RSA_SHA2_256, _RSA_SHA2_512 = 2, 4
#: Bytes of one agent request at most (a sign request is a few hundred).
_MAX_MESSAGE = 256 * 1024

_ERRORS: dict[str, type[TransportError]] = {
    "unreachable": ConnectError,
    "hostkey": HostKeyError,
    "auth": AuthError,
    "timeout": CommandTimeout,
}


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _fields(msg: bytes, pos: int, count: int) -> tuple[list[bytes], int]:
    """``count`` SSH strings of ``msg`` from ``pos``, and the position after them
    (struct.error when the message is shorter)."""
    out = []
    for _ in range(count):
        (n,) = struct.unpack_from(">I", msg, pos)
        if pos + 4 + n > len(msg):
            raise struct.error("string past the end")
        out.append(msg[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out, pos


class KeyAgent:
    """An SSH agent serving ``keys`` (see the module docstring): it signs at most
    ``signs`` times, and only for an SSH session its client bound to one of
    ``host_keys`` (OpenSSH's ``session-bind@openssh.com``: the host proved it holds
    that key by signing the session's id), so a gateway can use it to log in to the
    subtree's hosts only, never elsewhere."""

    def __init__(
        self, keys: Sequence[asyncssh.SSHKeyPair], signs: int, host_keys: Collection[bytes]
    ) -> None:
        self._keys = {k.public_data: k for k in keys}
        self._host_keys = frozenset(host_keys)
        self._bound: set[bytes] = set()
        self.signs_left = signs
        self._dir = tempfile.TemporaryDirectory(prefix="shoal-relay-agent-")
        self.path = str(Path(self._dir.name) / "agent.sock")
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> KeyAgent:
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._dir.cleanup()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (size,) = struct.unpack(">I", await reader.readexactly(4))
                if not 0 < size <= _MAX_MESSAGE:
                    return
                writer.write(_string(self.answer(await reader.readexactly(size))))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def answer(self, msg: bytes) -> bytes:
        """The reply to one agent request (pure but for the bindings and the budget)."""
        try:
            if msg[:1] == bytes([_IDENTITIES]):
                body = b"".join(_string(blob) + _string(b"shoal relay") for blob in self._keys)
                return bytes([_IDENTITIES_ANSWER]) + struct.pack(">I", len(self._keys)) + body
            if msg[:1] == bytes([_EXTENSION]):
                return bytes([_SUCCESS if self._bind(msg) else _FAILURE])
            if msg[:1] == bytes([_SIGN]) and self.signs_left > 0:
                return self._sign(msg)
        except (struct.error, ValueError, asyncssh.Error):
            pass
        return bytes([_FAILURE])

    def _bind(self, msg: bytes) -> bool:
        (name, host_key, session, signature), pos = _fields(msg, 1, 4)
        forwarding = msg[pos : pos + 1] != b"\0"
        if name != b"session-bind@openssh.com" or forwarding or host_key not in self._host_keys:
            return False
        if not decode_ssh_public_key(host_key).verify(session, signature):
            return False
        self._bound.add(session)
        return True

    def _sign(self, msg: bytes) -> bytes:
        (blob, data), pos = _fields(msg, 1, 2)
        (flags,) = struct.unpack_from(">I", msg, pos)
        key = self._keys.get(blob)
        (session,), _ = _fields(data, 0, 1)  # a userauth request starts with the session id
        if key is None or session not in self._bound:
            return bytes([_FAILURE])
        if key.algorithm == b"ssh-rsa" and flags & (_RSA_SHA2_256 | _RSA_SHA2_512):
            key.set_sig_algorithm(b"rsa-sha2-512" if flags & _RSA_SHA2_512 else b"rsa-sha2-256")
        self.signs_left -= 1
        return bytes([_SIGN_RESPONSE]) + _string(key.sign(data))


@dataclass(frozen=True)
class RelayNode:
    """One node of a relayed subtree and the exact shell line it runs."""

    node: Node
    line: str
    #: the line that ends ``line``'s command on the node (an interrupt, the relay closing)
    stop: str = ""


@dataclass(frozen=True)
class RelayOptions:
    connect_timeout: float = 10.0
    #: the command's timeout (the 124/137 rule), and the client's backstop on the gateway
    timeout: float | None = None
    hard: float | None = None
    parallel: int = 64
    #: bytes of each node's stdout and stderr the gateway sends up (0: all)
    max_output: int = MAX_OUTPUT


#: A node's outcome through the relay: the command's result or why it has none.
Outcome = CommandResult | ShoalError


#: asyncssh's algorithm options -> OpenSSH's keywords: the gateway's client negotiates
#: what the direct path would (the lab's curve25519/ed25519 halve a handshake's CPU).
_ALGORITHMS = {
    "kex_algs": "KexAlgorithms",
    "server_host_key_algs": "HostKeyAlgorithms",
    "encryption_algs": "Ciphers",
    "mac_algs": "MACs",
}


def _known_hosts_line(node: Node, keys: Sequence[asyncssh.SSHKey]) -> list[str]:
    host = node.host or node.name
    port = node.port or 22
    name = host if port == 22 else f"[{host}]:{port}"
    lines = []
    for key in keys:
        kind, blob = key.export_public_key("openssh").decode().split()[:2]
        lines.append(f"{name} {kind} {blob}")
    return lines


@dataclass
class _Prepared:
    """What the relay needs from the direct path's plans of the subtree's nodes."""

    #: per node, its request entry
    entries: list[dict[str, Any]] = field(default_factory=list)
    #: the controller's known_hosts entries for them
    known_hosts: list[str] = field(default_factory=list)
    #: the host keys trusted for them (the agent signs only for sessions bound to one)
    host_keys: set[bytes] = field(default_factory=set)
    #: the keys they log in with
    keys: list[asyncssh.SSHKeyPair] = field(default_factory=list)
    #: the user's agent, when a node logs in with it alone (no key file)
    user_agent: str | None = None


def _prepare(transport: SSHTransport, nodes: Sequence[RelayNode]) -> _Prepared:
    out = _Prepared()
    seen: set[bytes] = set()
    for rn in nodes:
        node = rn.node
        config, resolved = transport._resolve(node)
        plan = transport._connect_kwargs(node, config, resolved, sock=False)
        host = node.host or str(plan.kwargs.get("host") or node.name)
        port = int(plan.kwargs.get("port") or node.port or 22)
        user = str(plan.kwargs.get("username") or node.user or "root")
        known: asyncssh.SSHKnownHosts = plan.kwargs["known_hosts"]
        trusted = list(known.match(host, host, port)[0])
        if not trusted and node.name != host:
            trusted = list(known.match(node.name, host, port)[0])
        out.known_hosts += _known_hosts_line(Node(name=node.name, host=host, port=port), trusted)
        out.host_keys.update(k.public_data for k in trusted)
        node_keys = list(plan.kwargs.get("client_keys") or [])
        for k in node_keys:
            if k.public_data not in seen:
                seen.add(k.public_data)
                out.keys.append(k)
        if not node_keys and plan.agent:
            out.user_agent = plan.agent
        algs = {_ALGORITHMS[k]: str(v) for k, v in plan.kwargs.items() if k in _ALGORITHMS}
        out.entries.append({"name": node.name, "host": host, "port": port, "user": user,
                            "line": rn.line, "stop": rn.stop, "algorithms": algs})  # fmt: skip
    return out


def _outcome(record: dict[str, Any], name: str) -> Outcome:
    error = record.get("error")
    if error is not None:
        cls = _ERRORS.get(str(error.get("kind")), TransportError)
        return cls(str(error.get("message", "relay error"))[:1000], name)
    dropped = record.get("dropped", 0)
    return CommandResult(
        exit_status=record.get("exit"),
        stdout=base64.b64decode(record.get("stdout", "")),
        stderr=base64.b64decode(record.get("stderr", "")),
        dropped=dropped if isinstance(dropped, int) and dropped > 0 else 0,
    )


async def relay_run(
    transport: SSHTransport,
    gateway: Node,
    nodes: Sequence[RelayNode],
    options: RelayOptions,
    own: Callable[[SSHConnection], Awaitable[CommandResult]] | None = None,
    on_line: Callable[[str, str, bytes], None] | None = None,
) -> dict[str, Outcome]:
    """Run each node's line through ``gateway``'s relay; an outcome per node, and one
    for the gateway itself when ``own`` runs its command (a session of the same
    connection: one handshake per gateway in all). Raises ConnectError (the gateway's)
    when the gateway cannot be had; a relay that dies midway leaves its unreported
    nodes ``unreachable through gateway G (...)``. ``on_line(node, stream, line)``
    (``--stream``) sees each line of the nodes' output as the relay sends it."""
    prep = _prepare(transport, nodes)
    entries = prep.entries
    names = {e["name"] for e in entries}
    request = {
        "nodes": entries,
        "known_hosts": "".join(line + "\n" for line in prep.known_hosts),
        "connect_timeout": options.connect_timeout,
        "keepalive": transport.keepalive,
        "timeout": options.timeout,
        "hard": options.hard,
        "parallel": options.parallel,
        "max_output": options.max_output,
        "stream": on_line is not None,
    }
    source = Path(relayrun.__file__).read_text()
    command = f"exec python3 -c {shlex.quote(source)}"
    out: dict[str, Outcome] = {}

    async def gateway_own(conn: SSHConnection) -> None:
        assert own is not None
        try:
            out[gateway.name] = await own(conn)
        except ShoalError as exc:
            out[gateway.name] = exc

    async with KeyAgent(prep.keys, len(entries), prep.host_keys) as agent:
        forward = prep.user_agent or agent.path
        conn = await transport.connect(
            gateway, timeout=options.connect_timeout, agent_forward=forward
        )
        relay = asyncio.ensure_future(
            _exchange(conn._conn, command, request, names, out, options.max_output, on_line)
        )
        tasks = [relay] + ([asyncio.ensure_future(gateway_own(conn))] if own else [])
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            # gather() would return at once and close the connection under the relay
            # while it ends its nodes' commands: each part finishes its own first
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait(tasks, timeout=RELAY_STOP_SECONDS + 2)
            raise
        finally:
            await conn.close()
        for task in tasks[1:]:
            task.result()  # the gateway's own command: its outcome is in ``out``
        why = relay.result()
    if why is not None:
        lost = ConnectError(why, gateway.name)
        for e in entries:
            if e["name"] not in out:
                msg = f"unreachable through gateway {gateway.name} ({lost.located()})"
                out[e["name"]] = ConnectError(msg, e["name"])
    return out


#: Longest an interrupt waits for the relay to end its nodes' commands (its own
#: bound per node, then the clients' TERM and KILL).
RELAY_STOP_SECONDS = 8.0

#: Bytes of a relay record beyond its two base64 streams (names, status, JSON).
RECORD_SLACK = 1 << 20


class _RecordReader:
    """The relay's answer, line by line, each line no longer than ``longest`` bytes (0:
    no limit): a line that outgrows it is refused before it is held whole."""

    def __init__(self, reader: asyncssh.SSHReader[bytes], longest: int) -> None:
        self._reader = reader
        self._longest = longest
        self._lines: deque[bytes] = deque()
        self._pieces: list[bytes] = []  # the line being read, in the pieces it came in
        self._size = 0

    async def next(self) -> bytes:
        """The next line (with its newline), or b"" at the answer's end; ValueError for
        one too long."""
        while not self._lines:
            data = await self._reader.read(1 << 16)
            if not data:
                return b""
            first, *rest = data.split(b"\n")
            if rest:  # the line being read ends here
                lines = [b"".join([*self._pieces, first]), *rest[:-1]]
                self._lines.extend(line + b"\n" for line in lines)
                self._pieces, self._size = [rest[-1]], len(rest[-1])
                longest = max(len(line) for line in lines)
            else:
                self._pieces.append(first)
                self._size += len(first)
                longest = 0
            if self._longest and max(longest, self._size) > self._longest:
                raise ValueError(f"a relay record longer than {self._longest:,} bytes")
        return self._lines.popleft()


async def _drained(reader: asyncssh.SSHReader[bytes]) -> None:
    """Read (and drop) what is left until the relay exits: its last records must not
    fill the channel while it ends its nodes' commands."""
    while await reader.read(1 << 16):
        pass


async def _exchange(
    conn: asyncssh.SSHClientConnection,
    command: str,
    request: dict[str, Any],
    names: set[str],
    out: dict[str, Outcome],
    max_output: int,
    on_line: Callable[[str, str, bytes], None] | None = None,
) -> str | None:
    """Send the request, read the merged records into ``out``; why it ended early, or
    None once every node is in. A record may be no longer than two streams of
    ``max_output`` bytes in base64 (a gateway that sends more is cut off)."""
    try:
        proc = await conn.create_process(command, encoding=None)
    except (asyncssh.Error, OSError) as exc:
        return f"cannot start the relay: {exc}"
    records = 0
    answer = _RecordReader(proc.stdout, 0 if max_output <= 0 else 3 * max_output + RECORD_SLACK)
    try:
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        while True:
            line = await answer.next()
            if not line:
                err = (await proc.stderr.read(4096)).decode(errors="replace").strip()
                tail = err.splitlines()[-1] if err else "no answer"
                return f"relay ended early: {tail[:300]}"
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("a relay record that is not a JSON object")
            if "line" in record:  # --stream: a line of a node's output, as it came
                node, stream = record.get("node"), record.get("stream")
                if on_line is not None and node in names and stream in ("stdout", "stderr"):
                    on_line(str(node), str(stream), base64.b64decode(str(record["line"])))
                continue
            if "done" in record:
                log.debug("relay: %d records for %d nodes", records, len(names))
                return None
            records += 1
            for name in record.get("nodes", []):
                if name in names:  # a hostile gateway names no other node
                    out[name] = _outcome(record, name)
    except (asyncssh.Error, OSError, ValueError) as exc:
        return f"connection lost while relaying: {exc}"
    except asyncio.CancelledError:
        # an interrupt: the relay ends its nodes' commands once its stdin closes (as
        # the direct path does, bounded); wait for it before the connection goes
        with contextlib.suppress(asyncssh.Error, OSError):
            proc.stdin.write_eof()
        with contextlib.suppress(asyncio.TimeoutError, asyncssh.Error, OSError):
            await asyncio.wait_for(_drained(proc.stdout), RELAY_STOP_SECONDS)
        raise
    finally:
        with contextlib.suppress(asyncssh.Error, OSError):
            proc.stdin.write_eof()
        proc.close()
