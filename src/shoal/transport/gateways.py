"""Gateways: one SSH connection to a gateway node carries every node behind it.

Owns the gateway connection pool (issue 18 item 3). A node whose inventory
record has ``gateway=<name>`` (:attr:`Node.gateway`) is reached through an SSH
connection to that node: asyncssh opens a ``direct-tcpip`` channel on it to the
node's address and port, and the controller does the node's own SSH handshake
and authentication through that channel with its own keys and agent, as
``ssh -J`` does. Nothing is forwarded to the gateway and no key is copied
there: the gateway relays encrypted bytes only.

:class:`GatewayPool` holds one connection per gateway, opened on first use and
shared by every node behind it (concurrent first uses wait for the same
attempt), opened again when it dropped, and closed when the last connection
through it closes. A gateway that cannot be reached fails each node behind it
with ``unreachable through gateway G (G: reason)``; the transport then tries the
node directly and says so when that fails too (:mod:`.ssh`).

Nodes that also carry ``gateway_mode=relay`` (:func:`relayed`) are run by the
gateway itself instead (:mod:`.relay`, opted in: that gateway gets a signing agent
while connected); this pool still carries them where relay mode does not apply.

The gateway's own record is the inventory's node of that name; when the
inventory has none, the name is a Host of the ssh_config of the node behind it
(as ``ProxyJump`` names one). A gateway behind a gateway is refused for now.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Generic, Protocol, TypeVar

from shoal.errors import ConnectError, ShoalError
from shoal.nodes.model import GATEWAY, Node


class _Closable(Protocol):
    def is_closed(self) -> bool: ...
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)

#: The node attribute (beside ``gateway=G``) that sends a node through G's relay
#: (:mod:`.relay`) instead of SSH-in-SSH.
GATEWAY_MODE = "gateway_mode"
RELAY = "relay"


def relayed(node: Node) -> bool:
    """Whether ``node`` is run through its gateway's relay."""
    return bool(node.gateway) and node.attrs.get(GATEWAY_MODE) == RELAY


def inventory_lookup(name: str, behind: Node) -> Node:
    """The gateway's record: the inventory's node ``name``, else a Host of ``behind``'s
    ssh_config."""
    from shoal.nodes import inventory
    from shoal.state import State

    with contextlib.suppress(ShoalError), State() as st:
        inventory.ensure(st)
        found = inventory.load_nodes(st, [name])
        if found:
            return found[0]
    return Node(name=name, ssh_config=behind.ssh_config)


def unreachable(gateway: str, behind: Node, why: ShoalError) -> ConnectError:
    """``unreachable through gateway G (G: reason)`` for the node ``behind``."""
    return ConnectError(f"unreachable through gateway {gateway} ({why.located()})", behind.name)


class GatewayPool(Generic[C]):
    """One shared connection per gateway; see the module docstring."""

    def __init__(
        self,
        open_: Callable[[Node, float | None], Awaitable[C]],
        lookup: Callable[[str, Node], Node] = inventory_lookup,
    ) -> None:
        self._open = open_
        self._lookup = lookup
        self._nodes: dict[str, Node] = {}
        self._conns: dict[str, C] = {}
        self._pending: dict[str, asyncio.Future[C]] = {}
        self._users: dict[str, int] = {}

    def gateway_node(self, behind: Node) -> Node:
        """The record of ``behind``'s gateway (looked up once per name)."""
        name = behind.gateway
        assert name is not None
        if name not in self._nodes:
            node = self._lookup(name, behind)
            if node.gateway:
                raise ConnectError(
                    f"gateway {name} is itself behind gateway {node.gateway}: "
                    "gateways of gateways are not supported",
                    behind.name,
                )
            self._nodes[name] = node
        return self._nodes[name]

    async def acquire(self, behind: Node, timeout: float | None = 10.0) -> C:
        """The connection to ``behind``'s gateway (opened if need be, within ``timeout``:
        the first waiter's), counted as used until :meth:`release`; ConnectError naming
        the gateway when it cannot be had."""
        name = behind.gateway
        assert name is not None
        conn = self._conns.get(name)
        if conn is not None and conn.is_closed():
            del self._conns[name]
            conn = None
        if conn is None:
            gateway = self.gateway_node(behind)
            pending = self._pending.get(name)
            if pending is None:
                pending = asyncio.ensure_future(self._open(gateway, timeout))
                self._pending[name] = pending
                pending.add_done_callback(functools.partial(self._settled, name))
            try:
                conn = await asyncio.shield(pending)
            except ShoalError as exc:
                raise unreachable(name, behind, exc) from exc
        self._users[name] = self._users.get(name, 0) + 1
        return conn

    def _settled(self, name: str, fut: asyncio.Future[C]) -> None:
        """An attempt ended: its connection is kept; a failure is not (the next use
        tries again)."""
        if self._pending.get(name) is fut:
            del self._pending[name]
        if not fut.cancelled() and fut.exception() is None:
            self._conns[name] = fut.result()

    async def release(self, name: str) -> None:
        """One user of gateway ``name`` is done; the last one closes its connection."""
        left = self._users.get(name, 0) - 1
        if left > 0:
            self._users[name] = left
            return
        self._users.pop(name, None)
        conn = self._conns.pop(name, None)
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        """Close every gateway connection (users or not)."""
        conns, self._conns = list(self._conns.values()), {}
        self._users.clear()
        for conn in conns:
            await conn.close()


class _Tunnelled(Protocol):
    on_close: Callable[[], Awaitable[None]] | None


T = TypeVar("T", bound=_Tunnelled)


async def connect_behind(
    pool: GatewayPool[C],
    connect: Callable[..., Awaitable[T]],
    node: Node,
    timeout: float | None,
) -> T:
    """``connect(node, timeout=, tunnel=GW)`` through ``node``'s gateway; when the
    gateway cannot be had, ``connect`` of the node directly, and a ConnectError that
    names both when that fails too."""
    name = node.gateway
    assert name is not None
    try:
        gateway = await pool.acquire(node, timeout)
    except ConnectError as through:
        direct = replace(node, attrs={k: v for k, v in node.attrs.items() if k != GATEWAY})
        try:
            return await connect(direct, timeout=timeout)
        except ShoalError as exc:
            raise ConnectError(f"{through}; directly: {exc}", node.name) from exc
    try:
        conn = await connect(node, timeout=timeout, tunnel=gateway)
    except BaseException:
        await pool.release(name)
        raise
    conn.on_close = functools.partial(pool.release, name)
    return conn
