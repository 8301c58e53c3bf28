"""Real node agents on this machine, one per "node": test agent scripts without a lab.

:class:`LocalNodesTransport` is a transport whose every node is this machine,
each with its own home directory ``root/NAME``: commands run as local
subprocesses (:class:`shoal.transport.local.LocalConnection`) and the agent's
socket is a real Unix socket. So ``agent install``, ``proc``, events, sweeps and
applications run against real, daemonized agents (the same zipapp the nodes
get), with no SSH. A name in :attr:`LocalNodesTransport.down` refuses
connections like a dead host; ``forwarding=False`` makes every node refuse
Unix-socket forwarding, as an sshd with ``AllowStreamLocalForwarding no`` does
(the client then goes through the agent's ``ctl`` relay).

:func:`local_agents` bundles the transport with its nodes, options and a
private SQLite state, installs the agents and always stops them again (they
are daemons: they would outlive the test). It calls :func:`asyncio.run`, so
use it from synchronous tests; inside a running loop build
:class:`LocalNodesTransport` yourself and stop the agents with
:func:`shoal.agentlink.fleet.stop_async`.

Testing a script that supervises a program::

    import asyncio
    from shoal.agentlink import fleet
    from shoal.testing import local_agents

    def test_my_script_keeps_web_running(tmp_path):
        with local_agents(tmp_path, ["n1", "n2"]) as local:
            spec = fleet.proc_spec("web", ["sleep", "60"])
            started = asyncio.run(fleet.call_async(
                local.nodes, "proc.start", {"spec": spec}, local.options,
                transport=local.transport, state=local.state))
            assert {r.value["state"] for r in started} == {"RUNNING"}
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.agentlink.agentclient import StreamClient
from shoal.agentlink.fleet import AgentOptions, connect_agent, install_async, stop_async
from shoal.errors import AgentError, ConnectError, TransportError
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport.base import Connection, Transport
from shoal.transport.local import LocalConnection


class LocalNodesTransport(Transport):
    """Every node is this machine, each with its own home directory ``root/NAME``."""

    def __init__(self, root: Path, down: set[str] | None = None, forwarding: bool = True) -> None:
        self.root = root
        self.down = down if down is not None else set()
        self.forwarding = forwarding

    async def connect(self, node: Node, *, timeout: float | None = None) -> Connection:
        if node.name in self.down:
            raise ConnectError("connection refused", node.name)
        home = self.root / node.name
        home.mkdir(parents=True, exist_ok=True)
        if not self.forwarding:
            return _NoForwarding(node, home)
        return LocalConnection(node, home)


class _NoForwarding(LocalConnection):
    """A node whose SSH server refuses streamlocal forwarding."""

    async def open_unix(self, path: str) -> tuple[Any, Any]:
        raise TransportError(f"cannot open {path}: forwarding refused", self.node.name)


@dataclass
class LocalAgents:
    """What a test passes to the library: nodes, their transport, options, a state."""

    nodes: list[Node]
    transport: LocalNodesTransport
    options: AgentOptions
    state: State

    def home(self, node: str) -> Path:
        """The node's agent working area (``agent.pid``, logs, programs' output)."""
        return self.transport.root / node / self.options.home

    @asynccontextmanager
    async def stream_client(self, index: int = 0) -> AsyncIterator[StreamClient]:
        """A streaming client of node ``index``'s agent on a connection of its own,
        both closed when the block ends."""
        node = self.nodes[index]
        conn = await self.transport.connect(node)
        try:
            client = await connect_agent(conn, node, self.state, self.options)
            if not isinstance(client, StreamClient):
                raise AgentError("the local agent offers no streaming protocol", node=node.name)
            try:
                yield client
            finally:
                await client.close()
        finally:
            await conn.close()


@contextmanager
def local_agents(
    root: Path,
    names: Iterable[str] = ("n1", "n2"),
    *,
    options: AgentOptions | None = None,
    install: bool = True,
) -> Iterator[LocalAgents]:
    """Agents for ``names`` under ``root/nodes`` (state in ``root/state.db``), stopped at exit.

    ``install=False`` leaves the nodes empty (a test of installing itself);
    whatever got installed is stopped at exit, ``down`` nodes included.
    """
    (root / "nodes").mkdir(parents=True, exist_ok=True)
    local = LocalAgents(
        nodes=[Node(name) for name in names],
        transport=LocalNodesTransport(root / "nodes"),
        options=options or AgentOptions(),
        state=State(root / "state.db"),
    )
    try:
        if install:
            installed = asyncio.run(
                install_async(
                    local.nodes, local.options, transport=local.transport, state=local.state
                )
            )
            if not installed.ok:
                failures = "; ".join(f"{r.node}: {r.reason}" for r in installed.failed)
                raise AgentError(f"local agents did not install: {failures}")
        yield local
    finally:
        local.transport.down.clear()
        asyncio.run(
            stop_async(local.nodes, local.options, transport=local.transport, state=local.state)
        )
        local.state.close()
