"""The agent's streaming operations over real SSH on the lab (issue 13 items 2-4, node side).

One SSH connection per node, the agent reached through streamlocal forwarding only;
exec, watch and ping share that one agent stream. Every agent and program started
here is stopped at the end of the module.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from shoal.agentlink import fleet
from shoal.agentlink.agentclient import StreamClient
from shoal.agentlink.agentwatch import AgentEvent, Beat
from shoal.errors import AgentError
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport.ssh import SSHTransport

from .conftest import remote

pytestmark = pytest.mark.lab


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def nodes(lab: Any) -> Iterator[list[Node]]:
    chosen = lab.nodes()[:3]
    installed = run(fleet.install_async(chosen, fleet.AgentOptions()))
    assert installed.ok, [(r.node, r.reason) for r in installed.failed]
    yield chosen
    run(fleet.call_async(chosen, "proc.remove", {"name": "victim"}, fleet.AgentOptions()))
    run(fleet.stop_async(chosen, fleet.AgentOptions()))


@asynccontextmanager
async def agent_stream(node: Node) -> AsyncIterator[tuple[StreamClient, Any]]:
    conn = await SSHTransport().connect(node, timeout=10)
    try:
        with State() as state:
            client = await fleet.connect_agent(conn, node, state, fleet.AgentOptions())
        assert isinstance(client, StreamClient)  # streamlocal, not the ctl fallback
        try:
            yield client, conn
        finally:
            await client.close()
    finally:
        await conn.close()


def witness(name: str) -> str:
    """A background member of the command's group that writes ``~/name`` on SIGTERM (the
    command goes on once its trap is set). Its output goes to /dev/null: a closed pipe
    would kill it with SIGPIPE when its shell reports the killed sleep."""
    return (
        f'rm -f ~/{name}.ready; sh -c \'trap "echo TERM > $HOME/{name}; exit 0" TERM; '
        f"touch $HOME/{name}.ready; while :; do sleep 0.05; done' >/dev/null 2>&1 & "
        f"while [ ! -e ~/{name}.ready ]; do sleep 0.01; done; "
    )


def termed(node: Node, name: str, timeout: float = 3.0) -> bool:
    """The witness ``name`` wrote its file (waits: it runs its trap once its sleep ends)."""
    deadline = time.monotonic() + timeout
    while remote(node, f"cat ~/{name} 2>/dev/null || true").strip() != "TERM":
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def gone(node: Node, pid: int) -> bool:
    """No live process ``pid`` on the node (a zombie not yet reaped counts as gone)."""
    state = remote(node, f"cut -d' ' -f3 /proc/{pid}/stat 2>/dev/null || echo X").strip()
    return state in ("Z", "X", "")


def test_exec_over_ssh_gives_exact_bytes_and_exit_status(nodes: list[Node]) -> None:
    blob = os.urandom(1 << 20) + bytes(range(256))

    async def go() -> None:
        async with agent_stream(nodes[0]) as (client, conn):
            res = await client.exec("cat; printf '\\000\\377tail' >&2; exit 42", input=blob)
            assert res.stdout == blob and res.stderr == b"\x00\xfftail"
            assert (res.exit_status, res.signal, res.timed_out) == (42, None, False)
            # the same command over an SSH session channel says the same
            digest = await client.exec("head -c 300000 /dev/zero | tr '\\0' 'z' | sha256sum")
            direct = await conn.run("head -c 300000 /dev/zero | tr '\\0' 'z' | sha256sum")
            assert digest.stdout == direct.stdout
            assert digest.stdout.split()[0].decode() == hashlib.sha256(b"z" * 300000).hexdigest()
            # the login shell in the node user's home, as sshd starts it
            where = await client.exec('pwd; echo "$SHOAL_X"', env={"SHOAL_X": "x y"})
            assert where.stdout == (await conn.run("pwd")).stdout + b"x y\n"
            killed = await client.exec("kill -KILL $$")
            assert (killed.exit_status, killed.signal) == (None, "SIGKILL")

    run(go())


def test_exec_timeout_kills_the_process_group_on_the_node(nodes: list[Node]) -> None:
    node = nodes[1]
    remote(node, "rm -f ~/termed ~/bg.pid")

    async def go() -> float:
        async with agent_stream(node) as (client, _):
            started = time.monotonic()
            res = await client.exec(
                f"{witness('termed')} sleep 60 & echo $! > ~/bg.pid; sleep 60", timeout=1
            )
            assert res.timed_out and res.signal == "SIGTERM"
            return time.monotonic() - started

    elapsed = run(go())
    assert elapsed < 5
    assert termed(node, "termed"), "the process group got no SIGTERM"
    pid = int(remote(node, "cat ~/bg.pid"))
    assert gone(node, pid)


def test_a_closed_connection_kills_the_command(nodes: list[Node]) -> None:
    node = nodes[2]
    remote(node, "rm -f ~/termed2 ~/cmd.pid")

    async def go() -> None:
        async with agent_stream(node) as (client, conn):
            task = asyncio.ensure_future(
                client.exec(f"{witness('termed2')} echo $$ > ~/cmd.pid; exec sleep 60")
            )
            deadline = time.monotonic() + 10
            while not (await conn.run("cat ~/cmd.pid 2>/dev/null || true")).stdout.strip():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        with pytest.raises(AgentError):
            await task

    run(go())
    pid = int(remote(node, "cat ~/cmd.pid"))
    deadline = time.monotonic() + 5
    while not gone(node, pid):
        assert time.monotonic() < deadline, "the command outlived its connection"
        time.sleep(0.1)
    assert termed(node, "termed2"), "the process group got no SIGTERM"


def test_watch_pushes_a_death_at_once_beats_and_pings(nodes: list[Node]) -> None:
    node = nodes[0]

    async def go() -> None:
        async with agent_stream(node) as (client, _):
            started = await client.call(
                "proc.start", spec=fleet.proc_spec("victim", ["sleep", "300"], restart="never")
            )
            async with client.watch(since=(await client.ping()).seq, beat=5.0) as watch:
                await client.exec(f"kill -KILL {started['pid']}")
                killed = time.monotonic()
                item = await asyncio.wait_for(watch.__anext__(), 4)
                latency = time.monotonic() - killed
                # before the first beat (5 s): pushed as recorded, not polled
                assert isinstance(item, AgentEvent), item
                assert (item.kind, item.program) == ("exited", "victim")
                print(f"exited event {latency * 1000:.1f} ms after the kill's reply")
                ping = await watch.ping()
                assert ping.seq == item.seq and ping.rtt < 2 and abs(ping.skew) < 1
            async with client.watch(since=item.seq, beat=0.2) as watch:
                arrivals = []
                async for got in watch:
                    if isinstance(got, Beat):
                        arrivals.append(time.monotonic())
                        if len(arrivals) == 8:
                            break
                gaps = [b - a for a, b in itertools.pairwise(arrivals)]
                assert 0.15 < sum(gaps) / len(gaps) < 0.5, gaps
                assert got.disk_free_mb and got.mem_avail_mb and got.load1 is not None
                assert got.programs.get("EXITED", 0) + got.programs.get("FATAL", 0) >= 1

    run(go())


def test_a_watch_that_falls_behind_resumes_from_its_last_seq(nodes: list[Node]) -> None:
    node = nodes[1]

    async def go() -> None:
        async with agent_stream(node) as (client, _):
            since = (await client.ping()).seq
            async with client.watch(since=since, beat=60, backlog=4) as watch:
                spec = fleet.proc_spec("victim", ["sleep", "300"], restart="never")
                for _ in range(10):  # 20+ events (started, stopped) while nobody reads
                    await client.call("proc.start", spec=spec)
                    await client.call("proc.stop", name="victim")
                last = (await client.ping()).seq
                seen: list[int] = []
                async for item in watch:
                    if isinstance(item, AgentEvent):
                        seen.append(item.seq)
                        if item.seq >= last:
                            break
                assert watch.overflows >= 1 and not watch.lost
                assert seen == list(range(since + 1, last + 1))  # once each, in order

    run(go())
