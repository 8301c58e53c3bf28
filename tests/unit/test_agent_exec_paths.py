"""The agent's ``exec`` inside: real shells, its pipes, its exit seen with or without a pidfd,
reading paused while the connection's reader is behind.

:class:`~shoal.agent.execute.ExecStream` runs in the test's own loop; the connection's
writer is a recording stand-in (what matters here is the command's side: processes,
pipes, exit statuses), so a test can hold the "peer" behind the high-water mark.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest

from shoal.agent import execute
from shoal.agent.execute import ExecRequest, ExecStream


class Recorder:
    """An Outbox that keeps what is written; ``behind`` bytes wait until :meth:`catch_up`."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.behind = 0
        self._caught_up = asyncio.Event()
        self._caught_up.set()

    def put(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def buffered(self) -> int:
        return self.behind

    async def drain(self) -> None:
        await self._caught_up.wait()

    async def send(self, message: dict[str, Any]) -> None:
        self.put(message)

    def hold(self, nbytes: int) -> None:
        self.behind = nbytes
        self._caught_up.clear()

    def catch_up(self) -> None:
        self.behind = 0
        self._caught_up.set()

    def output(self, stream: str) -> bytes:
        return b"".join(
            base64.b64decode(m["data"])
            for m in self.messages
            if m.get("push") == "out" and m["stream"] == stream
        )

    def result(self) -> Any:
        return next(m["result"] for m in self.messages if "result" in m)


async def run_exec(outbox: Recorder, args: dict[str, Any]) -> ExecStream:
    stream = ExecStream(1, outbox, ExecRequest(args))  # type: ignore[arg-type]
    stream.start()
    assert stream.task is not None
    await asyncio.wait_for(stream.task, 20)
    return stream


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "waiting-thread"])
def test_exit_status_output_and_signal_with_or_without_a_pidfd(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)  # as Python < 3.9 has it

    async def go() -> None:
        out = Recorder()
        await run_exec(out, {"command": "printf 'a\\nb'; printf oops >&2; exit 3"})
        assert out.result() == {"exit": 3, "signal": None, "timed_out": False}
        assert (out.output("stdout"), out.output("stderr")) == (b"a\nb", b"oops")
        killed = Recorder()
        await run_exec(
            killed, {"command": "kill -TERM $$", "input": base64.b64encode(b"x").decode()}
        )
        assert killed.result() == {"exit": None, "signal": "SIGTERM", "timed_out": False}

    asyncio.run(go())


def test_reading_pauses_while_the_reader_is_behind_and_nothing_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(execute, "HIGH_WATER", 1000)
    size = 2 << 20  # far past the pipe's buffer: the command must block while paused

    async def go() -> None:
        out = Recorder()
        out.hold(10_000)
        stream = ExecStream(1, out, ExecRequest({"command": f"head -c {size} /dev/zero"}))  # type: ignore[arg-type]
        stream.start()
        for _ in range(500):  # until the first output is read (bounded: 10 s)
            if out.output("stdout"):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        got = len(out.output("stdout"))
        assert 0 < got < size, got  # read up to the pipe's buffer, then paused
        await asyncio.sleep(0.3)
        assert len(out.output("stdout")) == got  # still paused: the command waits
        out.catch_up()
        assert stream.task is not None
        await asyncio.wait_for(stream.task, 20)
        assert out.output("stdout") == b"\0" * size
        assert out.result() == {"exit": 0, "signal": None, "timed_out": False}

    asyncio.run(go())
