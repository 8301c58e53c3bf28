"""``step.logs``: a step's log as ``{data, offset}`` pages, as ``proc.logs`` answers them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from shoal.agent import protocol, steps
from shoal.agent.steps import Steps


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_step_log_is_tailed_then_read_from_offsets(tmp_path: Path) -> None:
    async def go() -> None:
        s = Steps(tmp_path, lambda *a: None)
        done = await s.run({"id": "a.c.s", "command": "for i in 1 2 3 4 5; do echo line $i; done"})
        assert done["exit"] == 0
        tail = await s.dispatch("step.logs", {"id": "a.c.s", "lines": 2})
        assert tail == {"data": "line 4\nline 5\n", "offset": 35}
        whole = await s.dispatch("step.logs", {"id": "a.c.s", "offset": 0})
        assert whole["data"].startswith("line 1\n") and whole["offset"] == 35
        middle = await s.dispatch("step.logs", {"id": "a.c.s", "offset": 14})
        assert middle == {"data": "line 3\nline 4\nline 5\n", "offset": 35}
        assert await s.dispatch("step.logs", {"id": "a.c.s", "offset": 35}) == {
            "data": "",
            "offset": 35,
        }
        # removed and written again shorter: an offset past the end reads from 0
        (tmp_path / "logs" / "steps" / "a.c.s.log").write_bytes(b"new\n")
        again = await s.dispatch("step.logs", {"id": "a.c.s", "offset": 35})
        assert again == {"data": "new\n", "offset": 4}

    run(go())


def test_a_running_step_is_followed_by_its_offset(tmp_path: Path) -> None:
    async def go() -> None:
        s = Steps(tmp_path, lambda *a: None)
        command = "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.1; done"
        task = asyncio.ensure_future(s.run({"id": "a.c.f", "command": command}))
        await asyncio.sleep(0)  # the request is taken: the step is running, its log not yet
        seen, at = "", 0
        for _ in range(100):  # bounded: 10 s at most
            page = await s.dispatch("step.logs", {"id": "a.c.f", "offset": at})
            assert page["offset"] == at + len(page["data"].encode())
            seen, at = seen + page["data"], page["offset"]
            if task.done() and not page["data"]:
                break
            await asyncio.sleep(0.1)
        assert (await task)["exit"] == 0
        assert seen.splitlines() == [f"tick {i}" for i in range(1, 7)]

    run(go())


def test_a_read_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "READ_MAX", 10)

    async def go() -> None:
        s = Steps(tmp_path, lambda *a: None)
        printed = await s.run({"id": "a.c.b", "command": "printf '%s\\n' aaaa bbbb cccc"})
        assert printed["exit"] == 0
        first = await s.dispatch("step.logs", {"id": "a.c.b", "offset": 0})
        assert first == {"data": "aaaa\nbbbb\n", "offset": 10}
        assert (await s.dispatch("step.logs", {"id": "a.c.b", "offset": 10}))["data"] == "cccc\n"

    run(go())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"id": "nope.x.y"}, "no step named 'nope.x.y'"),
        ({"id": "../etc"}, "bad step id"),
        ({"id": "a.c.s", "offset": -1}, "offset must be"),
        ({"id": "a.c.s", "lines": "many"}, "lines must be"),
    ],
)
def test_bad_step_log_requests_are_refused(
    tmp_path: Path, args: dict[str, Any], message: str
) -> None:
    with pytest.raises((KeyError, ValueError), match=message):
        run(Steps(tmp_path, lambda *a: None).dispatch("step.logs", args))


def test_step_logs_is_an_operation_of_the_protocol() -> None:
    message = protocol.request("step.logs", 1, id="a.c.s", offset=0)
    assert protocol.check_request(message)["op"] == "step.logs"
