"""The transport interface: how the controller talks to one node.

Small on purpose (pyinfra's connector, httpx's transport): open a connection to
a node, run commands on it, move files, open a stream to a Unix socket on it.
``ssh.py`` implements it with asyncssh, ``local.py`` with subprocesses on this
machine, ``mock.py`` in memory for unit tests of the layers above. Every method
raises only :class:`shoal.errors.TransportError` subclasses.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from shoal.errors import TransportError
from shoal.nodes.model import Node

from .tcpinfo import LinkState

#: After a command's shell exits, how long to wait for its output to drain; a
#: background process still holding the output open is then left to run.
DRAIN_AFTER_EXIT = 0.25

#: Called with (stream, line) for each complete line of output, when streaming.
LineCallback = Callable[[str, bytes], None]

#: Bytes of each stream of one command kept by default (``--max-output``; 0: no limit):
#: what a node sends beyond it is counted (:attr:`CommandResult.dropped`), not kept.
MAX_OUTPUT = 64 << 20


def shell_path(path: str) -> str:
    """``path`` as one word of a command the node's shell runs (for :meth:`Connection.run`).

    Quoted like :func:`shlex.quote` (a home such as ``/root/it's home`` stays one
    word), except that a leading ``~`` or ``~/`` still means the remote user's
    home: it becomes ``"$HOME"`` (``~/a b`` → ``"$HOME"/'a b'``). Other words
    (names, digests, user text) take :func:`shlex.quote` itself.
    """
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + (shlex.quote(path[2:]) if path[2:] else "")
    return shlex.quote(path)


@dataclass(frozen=True)
class CommandResult:
    """What one remote command did. ``exit_status`` is None when killed by a signal."""

    exit_status: int | None
    stdout: bytes
    stderr: bytes
    signal: str | None = None
    dropped: int = 0  # output bytes beyond the limit, not kept


class ByteReader(Protocol):
    """The reading half of a byte stream (asyncio.StreamReader and asyncssh's reader fit)."""

    async def read(self, n: int = -1) -> bytes: ...
    async def readline(self) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...


class ByteWriter(Protocol):
    """The writing half of a byte stream (asyncio.StreamWriter and asyncssh's writer fit)."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class RemoteForward:
    """A port on the node tunnelled back to an address of the controller's
    (:meth:`Connection.forward_remote`): whatever connects to ``host:port`` on the
    node reaches it through the connection; ``close`` stops listening."""

    host: str
    port: int
    close: Callable[[], None]


class Connection(abc.ABC):
    """An open connection to one node, reused for every operation on it."""

    node: Node

    @abc.abstractmethod
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
        """Run a shell command under the login shell; ``env`` is exported to it.

        On timeout the command and its children are killed on the node and
        CommandTimeout is raised. ``on_line(stream, line)`` sees each output
        line as it arrives (``stream`` is "stdout" or "stderr"). The first
        ``max_output`` bytes of each stream are kept (0: all of them).
        """

    @abc.abstractmethod
    async def put(self, local: str, remote: str) -> int:
        """Copy a local file or tree to the node; returns bytes sent.

        Into ``remote`` when it is a directory or ends with ``/``, else to that
        path. Modes (without setuid/setgid) and times preserved; directories
        recursive; never a partial file under its final name.
        """

    @abc.abstractmethod
    async def get(self, remote: str, local: str) -> int:
        """Copy remote files matching a glob (expanded on the node) to ``local``."""

    @abc.abstractmethod
    async def open_unix(self, path: str) -> tuple[ByteReader, ByteWriter]:
        """A byte stream to a Unix socket on the node (SSH streamlocal forwarding)."""

    async def forward_remote(self, host: str, port: int) -> RemoteForward:
        """Listen on a free port of the node's loopback and carry each connection to
        it through this connection to ``host:port`` as this machine reaches it (SSH
        remote forwarding): the data plane for nodes that cannot reach us over TCP."""
        raise TransportError(
            "this transport cannot forward a port to the controller", self.node.name
        )

    @abc.abstractmethod
    async def close(self) -> None: ...

    def link(self) -> LinkState | None:
        """What TCP shows of the path to the node (loss, RTO: :mod:`.tcpinfo`); None
        where it cannot tell (then callers wait as on a clean link)."""
        return None

    def quiet_keepalive(self, quiet: bool) -> None:  # noqa: B027 - optional hook
        """Stop (True) or restore (False) the transport's own keepalives: while a stream
        that beats is watched on this connection, its watcher notices silence itself."""


class Transport(abc.ABC):
    """Opens connections to nodes."""

    def keep_only(self, names: Collection[str]) -> None:  # noqa: B027 - optional hook
        """Forget per-node resources (pre-started sockets) of nodes not in ``names``.

        Called in a worker process that handles a share of the nodes.
        """

    @abc.abstractmethod
    async def connect(self, node: Node, *, timeout: float | None = None) -> Connection:
        """Open a connection; raise ConnectError, HostKeyError or AuthError."""
