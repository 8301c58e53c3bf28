"""Start TCP connections before the SSH library is even imported.

Importing asyncssh costs about 0.3 s; an sshd needs a few milliseconds per
connection to fork, re-exec and load its host keys before it sends its banner.
Opening every socket first lets the nodes do that work while this process
imports, so the two costs overlap instead of adding up. Only nodes whose
address *and* port the inventory knows are pre-connected (otherwise
ssh_config decides where to go). Standard library only, no asyncio.

File descriptors are bounded: at most half of what the open-file soft limit
leaves free are spent here (the SSH work needs the rest: at ``ulimit -n 512``
1,000 nodes used to run into EMFILE on this thread, with a traceback); the
nodes past that connect on the normal path, as the scheduler admits them.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import threading
from collections.abc import Iterable, Sequence

from shoal.nodes.model import Node


def fd_budget() -> int:
    """How many sockets may be opened here: half the descriptors the soft limit leaves."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 64
    return max(0, (soft - in_use) // 2)


def start_connects(nodes: Iterable[Node], limit: int) -> dict[str, socket.socket]:
    """Begin non-blocking connects to up to ``limit`` nodes (fewer when descriptors are
    short: :func:`fd_budget`); name -> socket."""
    started: dict[str, socket.socket] = {}
    limit = min(limit, fd_budget())
    for node in nodes:
        if len(started) >= limit:
            break
        if not node.host or not node.port or node.gateway:
            continue  # a gateway's node is reached through it, never from here
        try:
            infos = socket.getaddrinfo(
                node.host, node.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except (OSError, UnicodeError):
            continue  # a name, not an address: leave it to the normal path
        family, kind, proto, _, addr = infos[0]
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                break  # out of descriptors: the rest connect on the normal path
            continue
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(addr)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            continue  # the normal path will report the error properly
        started[node.name] = sock
    return started


class Preconnect:
    """:func:`start_connects` on a background thread; :meth:`sockets` waits for it."""

    def __init__(self, nodes: Sequence[Node], limit: int) -> None:
        self._sockets: dict[str, socket.socket] = {}
        self._thread = threading.Thread(
            target=self._run, args=(list(nodes), limit), name="shoal-preconnect", daemon=True
        )
        self._thread.start()

    def _run(self, nodes: list[Node], limit: int) -> None:
        self._sockets = start_connects(nodes, limit)

    def sockets(self) -> dict[str, socket.socket]:
        self._thread.join()
        return self._sockets
