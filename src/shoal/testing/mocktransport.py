"""An in-memory transport: fan-outs against scripted nodes, no processes, no network.

Each node gets a :class:`MockBehaviour`: errors to raise on connect (one per
attempt, in turn), delays, and a function from command (and environment) to
:class:`~shoal.transport.base.CommandResult`. Every connect and command is
recorded in :attr:`MockTransport.log` with its time, so a test can check what
ran where, parallelism, staggering and retries. Nodes without a behaviour
succeed at everything with empty output. It has no files and no sockets:
``put``/``get`` copy nothing, ``open_unix`` (agents) raises; for agents use
:mod:`shoal.testing.localagents`.

Testing a script that runs commands::

    from shoal.errors import ConnectError
    from shoal.fanout import RunOptions, run
    from shoal.nodes.model import Node
    from shoal.testing import MockBehaviour, MockTransport
    from shoal.transport.base import CommandResult

    def test_my_check_reports_the_dead_node():
        transport = MockTransport({
            "n1": MockBehaviour(respond=lambda cmd, env: CommandResult(0, b"up\n", b"")),
            "n2": MockBehaviour(connect_errors=[ConnectError("refused", "n2")] * 5),
        })
        results = run([Node("n1"), Node("n2")], "uptime", RunOptions(),
                      transport=transport)
        assert results["n1"].stdout == "up\n" and results["n2"].kind == "unreachable"
        assert [cmd for node, cmd, env in transport.log.commands] == ["uptime"]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from shoal.errors import CommandTimeout, ShoalError
from shoal.nodes.model import Node
from shoal.transport.base import (
    ByteReader,
    ByteWriter,
    CommandResult,
    Connection,
    LineCallback,
    Transport,
)


@dataclass
class MockBehaviour:
    connect_errors: list[ShoalError] = field(default_factory=list)  # raised in turn
    connect_delay: float = 0.0
    command_delay: float = 0.0
    respond: Callable[[str, Mapping[str, str]], CommandResult] = lambda cmd, env: CommandResult(
        0, b"", b""
    )


@dataclass
class MockLog:
    connects: list[tuple[str, float]] = field(default_factory=list)
    commands: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    open_now: int = 0
    open_max: int = 0


class MockConnection(Connection):
    def __init__(self, node: Node, behaviour: MockBehaviour, log: MockLog) -> None:
        self.node = node
        self._b = behaviour
        self._log = log

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        sudo: bool = False,
        on_line: LineCallback | None = None,
        max_output: int = 0,
    ) -> CommandResult:
        self._log.commands.append((self.node.name, command, dict(env or {})))
        try:
            await asyncio.wait_for(asyncio.sleep(self._b.command_delay), timeout)
        except asyncio.TimeoutError:
            raise CommandTimeout(f"command timed out after {timeout:g}s", self.node.name) from None
        result = self._b.respond(command, env or {})
        if on_line is not None:
            for line in result.stdout.splitlines():
                on_line("stdout", line)
        return result

    async def put(self, local: str, remote: str) -> int:
        return 0

    async def get(self, remote: str, local: str) -> int:
        return 0

    async def open_unix(self, path: str) -> tuple[ByteReader, ByteWriter]:
        raise NotImplementedError("the mock transport has no sockets")

    async def close(self) -> None:
        self._log.open_now -= 1


class MockTransport(Transport):
    def __init__(self, behaviours: Mapping[str, MockBehaviour] | None = None) -> None:
        self.behaviours = dict(behaviours or {})
        self.log = MockLog()

    async def connect(self, node: Node, *, timeout: float | None = None) -> MockConnection:
        b = self.behaviours.setdefault(node.name, MockBehaviour())
        self.log.connects.append((node.name, time.monotonic()))
        await asyncio.sleep(b.connect_delay)
        if b.connect_errors:
            raise b.connect_errors.pop(0)
        self.log.open_now += 1
        self.log.open_max = max(self.log.open_max, self.log.open_now)
        return MockConnection(node, b, self.log)
