"""The agent's streaming operations (ping, watch, exec, cancel) against real local agents.

Daemonized agents from :func:`shoal.testing.local_agents` (the zipapp the nodes get,
real Unix sockets, real processes), reached with the controller's StreamClient; the
overflow tests run an :class:`~shoal.agent.server.Agent` in the test's own loop so
that events can be recorded faster than a reader takes them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import outbox, protocol
from shoal.agent.server import Agent
from shoal.agentlink.agentclient import StreamClient
from shoal.agentlink.agentwatch import AgentEvent, Beat
from shoal.agentlink.fleet import proc_spec
from shoal.errors import AgentError, AgentLinkBroken
from shoal.testing.localagents import LocalAgents, local_agents


@pytest.fixture
def local(tmp_path: Path) -> Any:
    with local_agents(tmp_path, ["n1"]) as agents:
        yield agents


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


async def eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def read_pid(path: Path, timeout: float = 5.0) -> int:
    assert await eventually(lambda: path.exists() and path.read_text().strip() != "", timeout)
    return int(path.read_text())


def witness(path: Path) -> str:
    """A background member of the command's process group that notes a SIGTERM in
    ``path`` (the command goes on once its trap is set). Its output goes to /dev/null: a
    closed pipe would kill it with SIGPIPE when its shell reports the killed sleep."""
    ready = f"{path}.ready"
    return (
        f'sh -c \'trap "echo TERM > {path}; exit 0" TERM; touch {ready}; '
        f"while :; do sleep 0.05; done' >/dev/null 2>&1 & "
        f"while [ ! -e {ready} ]; do sleep 0.01; done; "
    )


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_exec_gives_exact_bytes_exit_status_and_lines(local: LocalAgents, tmp_path: Path) -> None:
    blob = os.urandom(300_000) + b"\x00\xff\n" * 10  # > 4 chunks, binary

    async def go() -> None:
        async with local.stream_client() as client:
            lines: list[tuple[str, bytes]] = []
            res = await client.exec(
                "cat; printf 'err one\\nerr two' >&2; exit 7",
                input=blob,
                on_line=lambda stream, line: lines.append((stream, line)),
            )
            assert res.stdout == blob
            assert res.stderr == b"err one\nerr two"
            assert (res.exit_status, res.signal, res.timed_out) == (7, None, False)
            assert [line for stream, line in lines if stream == "stderr"] == [
                b"err one",
                b"err two",
            ]
            stdout_lines = [line + b"\n" for stream, line in lines if stream == "stdout"]
            assert b"".join(stdout_lines) == blob  # it ends with a newline: all lines whole
            # the login shell, in the home, the agent's environment plus env, no stdin
            shell = await client.exec(
                'echo "$0|$PWD|$SHOAL_T|$(cat | wc -c)"', env={"SHOAL_T": "a b'c"}
            )
            name, cwd, value, stdin = shell.stdout.decode().strip().split("|")
            import pwd

            assert name == os.path.basename(pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh")
            assert cwd == os.environ["HOME"] and value == "a b'c" and stdin == "0"
            killed = await client.exec("kill -USR1 $$")
            assert (killed.exit_status, killed.signal) == (None, "SIGUSR1")

    run(go())


def test_exec_keeps_each_stream_up_to_its_limit_and_counts_the_rest(local: LocalAgents) -> None:
    async def go() -> None:
        async with local.stream_client() as client:
            command = "head -c 300000 /dev/zero; head -c 5000 /dev/zero >&2"
            res = await client.exec(command, max_output=100_000)
            assert (len(res.stdout), len(res.stderr), res.dropped) == (100_000, 5000, 200_000)
            whole = await client.exec(command, max_output=0)
            assert (len(whole.stdout), whole.dropped) == (300_000, 0)

    run(go())


def test_exec_timeout_terms_the_group_then_kills_it(local: LocalAgents, tmp_path: Path) -> None:
    bg, termed = tmp_path / "bg.pid", tmp_path / "termed"

    async def go() -> None:
        async with local.stream_client() as client:
            started = time.monotonic()
            command = f"{witness(termed)} sleep 60 & echo $! > {bg}; sleep 60"
            res = await client.exec(command, timeout=0.5)
            assert res.timed_out and res.signal == "SIGTERM" and res.exit_status is None
            assert time.monotonic() - started < 5
            child = await read_pid(bg)
            assert await eventually(lambda: not alive(child), 3), "background child survived"
            assert await eventually(termed.exists, 3), "the group got no SIGTERM"
            # a shell that ignores SIGTERM is killed 2 s later
            stubborn = await client.exec("trap '' TERM; sleep 60; sleep 60", timeout=0.3)
            assert stubborn.timed_out and stubborn.signal == "SIGKILL"

    run(go())


def test_closing_the_connection_kills_the_command(local: LocalAgents, tmp_path: Path) -> None:
    pidfile, termed = tmp_path / "cmd.pid", tmp_path / "termed"

    async def go() -> None:
        async with local.stream_client() as client:
            command = f"{witness(termed)} echo $$ > {pidfile}; exec sleep 60"
            task = asyncio.ensure_future(client.exec(command))
            pid = await read_pid(pidfile)
            assert alive(pid)
        with pytest.raises(AgentError):
            await task
        assert await eventually(lambda: not alive(pid), 5), "command outlived its connection"
        assert await eventually(termed.exists, 3), "its process group outlived it"

    run(go())


def test_cancel_kills_and_the_reply_still_comes(local: LocalAgents, tmp_path: Path) -> None:
    pidfile, termed = tmp_path / "c.pid", tmp_path / "termed"

    async def go() -> None:
        async with local.stream_client() as client:
            outcome: list[protocol.Message] = []
            command = f"{witness(termed)} echo $$ > {pidfile}; sleep 60"
            task = asyncio.ensure_future(
                client.stream_args("exec", {"command": command}, outcome.append)
            )
            pid = await read_pid(pidfile)
            request_id = max(client._pending)  # the exec's id
            assert await client.call("cancel", id=request_id) == {"cancelled": True}
            result = await asyncio.wait_for(task, 5)
            assert result == {"exit": None, "signal": "SIGTERM", "timed_out": False}
            assert not alive(pid)
            assert await eventually(termed.exists, 3), "the group got no SIGTERM"
            assert await client.call("cancel", id=request_id) == {"cancelled": False}

    run(go())


def test_a_background_program_does_not_hold_the_reply(local: LocalAgents, tmp_path: Path) -> None:
    pidfile = tmp_path / "d.pid"

    async def go() -> None:
        async with local.stream_client() as client:
            started = time.monotonic()
            res = await client.exec(f"sleep 60 & echo $! > {pidfile}; echo done")
            assert res.exit_status == 0 and res.stdout == b"done\n"
            assert time.monotonic() - started < 2  # the drain is 0.25 s, not the sleep
            pid = await read_pid(pidfile)
            assert alive(pid)  # left running, as ssh leaves it
            os.kill(pid, signal.SIGKILL)

    run(go())


def test_exec_refusals_are_one_line_errors(local: LocalAgents) -> None:
    async def go() -> None:
        async with local.stream_client() as client:
            with pytest.raises(AgentError, match="positive number"):
                await client.exec("true", timeout=-1)
            with pytest.raises(AgentError, match=r"cannot start .*No such file"):
                await client.exec("true", cwd="no/such/dir")
            with pytest.raises(AgentError, match="needs a command"):
                await client.stream_args("exec", {"command": ""}, lambda m: None)
            assert (await client.exec("true")).exit_status == 0  # the stream still serves

    run(go())


def test_watch_pushes_events_as_recorded_and_beats(local: LocalAgents) -> None:
    async def go() -> None:
        async with local.stream_client() as client:
            spec = proc_spec("pusher", ["sleep", "300"], restart="never")
            started = await client.call("proc.start", spec=spec)
            async with client.watch(since=0, beat=5.0) as watch:
                held: list[AgentEvent] = []
                async for item in watch:
                    assert isinstance(item, AgentEvent)  # no beat within 5 s of the start
                    held.append(item)
                    if item.kind == "started" and item.program == "pusher":
                        break
                assert [e.seq for e in held] == list(range(1, held[-1].seq + 1))
                os.kill(started["pid"], signal.SIGKILL)
                killed = time.monotonic()
                item = await asyncio.wait_for(watch.__anext__(), 4)
                latency = time.monotonic() - killed
                # pushed as recorded: before the first beat (5 s) could carry anything
                assert isinstance(item, AgentEvent) and item.kind == "exited", item
                assert item.program == "pusher" and item.seq == held[-1].seq + 1
                print(f"exited event {latency * 1000:.1f} ms after SIGKILL")
                ping = await watch.ping()
                assert ping.seq == item.seq and 0 < ping.rtt < 4 and abs(ping.skew) < 1
            await client.call("proc.remove", name="pusher")

    run(go())


def test_beats_at_the_interval_with_live_facts(local: LocalAgents) -> None:
    async def go() -> None:
        async with local.stream_client() as client:
            await client.call("proc.start", spec=proc_spec("b", ["sleep", "300"]))
            beats: list[tuple[float, Beat]] = []
            async with client.watch(since=10**6, beat=0.2) as watch:
                async for item in watch:
                    if isinstance(item, Beat):
                        beats.append((time.monotonic(), item))
                        if len(beats) == 6:
                            break
                assert watch.reset  # since above the journal: read from its start
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(beats)]
            assert 0.15 < sum(gaps) / len(gaps) < 0.5, gaps
            last = beats[-1][1]
            assert last.programs == {"RUNNING": 1}
            assert last.disk_free_mb is not None and last.disk_free_mb > 0
            assert last.mem_avail_mb is not None and last.load1 is not None
            assert abs(last.t - time.time()) < 5
            with pytest.raises(AgentError, match=r"between 0\.1 and 60"):
                async with client.watch(beat=0.01):
                    pass
            await client.call("proc.remove", name="b")

    run(go())


def test_calls_execs_and_a_watch_share_one_stream(local: LocalAgents) -> None:
    async def go() -> None:
        async with local.stream_client() as client, client.watch(beat=0.1) as watch:
            results = await asyncio.gather(
                *(client.exec(f"echo {i}") for i in range(30)),
                *(client.call("hello") for _ in range(5)),
                *(watch.ping() for _ in range(5)),
            )
            assert [r.stdout for r in results[:30]] == [f"{i}\n".encode() for i in range(30)]
            assert all(r["agent_id"] == watch.agent_id for r in results[30:35])
            kinds = {type(await watch.__anext__()) for _ in range(3)}
            assert Beat in kinds

    run(go())


class GatedReader:
    """A real stream reader that hands out nothing until ``gate`` is set."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.gate = asyncio.Event()

    async def readline(self) -> bytes:
        await self.gate.wait()
        return await self.reader.readline()

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(n)

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)


@asynccontextmanager
async def inprocess_agent(home: Path) -> AsyncIterator[Agent]:
    agent = Agent(home)
    ready = asyncio.Event()
    serving = asyncio.ensure_future(agent.serve(ready.set))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield agent
    finally:
        agent.request_shutdown()
        await asyncio.wait_for(serving, 20)


def test_a_slow_reader_overflows_and_the_watch_resumes_without_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "PUSH_LIMIT", 64 << 10)
    detail = "x" * 1000

    async def go() -> None:
        async with inprocess_agent(tmp_path / "home") as agent:
            reader, writer = await asyncio.open_unix_connection(str(agent.sock_path))
            gated = GatedReader(reader)
            client = StreamClient(gated, writer, "local", str(agent.home))  # type: ignore[arg-type]
            watch = client.watch(since=agent.events.seq, beat=60)
            first = agent.events.seq
            start = asyncio.ensure_future(watch.start())
            await asyncio.sleep(0.05)
            gated.gate.set()
            await start
            gated.gate.clear()
            await asyncio.sleep(0.05)  # the reader now holds whatever came before the gate
            for i in range(1500):  # ~1.5 MB: past the socket buffers and the push limit
                agent.events.record("flood", None, f"{i} {detail}")
                if i % 100 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0.2)
            gated.gate.set()
            seen: list[int] = []
            async for item in watch:
                if isinstance(item, AgentEvent):
                    seen.append(item.seq)
                    if item.seq == agent.events.seq:
                        break
            assert watch.overflows >= 1 and not watch.lost
            assert seen == list(range(first + 1, agent.events.seq + 1))  # once each, in order
            await client.close()

    run(go())


def test_the_agent_ends_an_overflowed_watch_with_one_last_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "PUSH_LIMIT", 64 << 10)

    async def go() -> None:
        async with inprocess_agent(tmp_path / "home") as agent:
            reader, writer = await asyncio.open_unix_connection(
                str(agent.sock_path), limit=protocol.MAX_LINE
            )
            writer.write(protocol.encode(protocol.request("watch", 1, since=0, beat=60)))
            await writer.drain()
            await asyncio.sleep(0.1)
            for i in range(1500):
                agent.events.record("flood", None, f"{i} {'y' * 1000}")
            last = agent.events.seq
            lines = []
            while True:
                message = json.loads(await asyncio.wait_for(reader.readline(), 5))
                lines.append(message)
                if message.get("push") == "overflow":
                    break
            assert lines[0]["ok"] is True
            events = [m["event"]["seq"] for m in lines if m.get("push") == "event"]
            assert events == list(range(1, len(events) + 1)) and len(events) < last
            # nothing more for that watch; watching again from the last seq gets the rest
            # (a backlog past the limit overflows again, each time after some progress)
            writer.write(protocol.encode(protocol.request("ping", 2)))
            rest: list[int] = []
            watches = 0
            while not rest or rest[-1] < last:
                watches += 1
                since = (rest or events)[-1]
                request = protocol.request("watch", 2 + watches, since=since, beat=60)
                writer.write(protocol.encode(request))
                await writer.drain()
                while not rest or rest[-1] < last:
                    message = json.loads(await asyncio.wait_for(reader.readline(), 5))
                    assert message["id"] in (2, 2 + watches), message  # none for watch 1
                    if message.get("push") == "event":
                        rest.append(message["event"]["seq"])
                    elif message.get("push") == "overflow":
                        break
                assert watches < 100
            assert events + rest == list(range(1, last + 1))
            writer.close()

    run(go())


def test_an_agent_killed_under_a_watch_ends_it_with_a_link_error(local: LocalAgents) -> None:
    async def go() -> None:
        async with local.stream_client() as client, client.watch(beat=60) as watch:
            pid = (await client.call("hello"))["pid"]
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(AgentLinkBroken, match="agent closed the connection"):
                async for _ in watch:
                    pass
            with pytest.raises(AgentLinkBroken):
                await client.exec("true")

    run(go())
