"""The agent's one-shot steps (``step.*``): attach, cache, gate, limit, forget; and the CLI."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.steps import Steps
from shoal.cli.main import main


def steps(tmp_path: Path) -> Steps:
    return Steps(tmp_path, lambda *a: None)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_success_is_cached_and_a_second_ask_attaches(tmp_path: Path) -> None:
    async def go() -> None:
        s = steps(tmp_path)
        args = {
            "id": "a.x",
            "command": "echo run >> count; sleep 0.2; echo ok",
            "cwd": str(tmp_path),
        }
        first, second = await asyncio.gather(s.dispatch("step.run", args), s.run(dict(args)))
        assert first["exit"] == second["exit"] == 0 and "ok" in first["tail"]
        third = await s.run(dict(args))
        assert third["cached"] is True
        assert (tmp_path / "count").read_text() == "run\n"
        # a new agent on the same working area remembers the success
        assert (await steps(tmp_path).run(dict(args)))["cached"] is True

    run(go())


def test_failure_is_not_cached_and_a_changed_command_runs_again(tmp_path: Path) -> None:
    async def go() -> None:
        s = steps(tmp_path)
        bad = await s.run({"id": "a.y", "command": "echo nope; exit 3"})
        assert bad["exit"] == 3 and "nope" in bad["tail"]
        assert (await s.run({"id": "a.y", "command": "exit 3"}))["cached"] is False
        good = await s.run({"id": "a.y", "command": "true"})
        assert good["exit"] == 0

    run(go())


def test_limit_kills_the_step(tmp_path: Path) -> None:
    async def go() -> None:
        began = time.monotonic()
        res = await steps(tmp_path).run({"id": "a.z", "command": "sleep 30", "limit": 0.2})
        assert res["exit"] is None and "timed out" in res["note"]
        assert time.monotonic() - began < 5

    run(go())


def test_gated_step_waits_for_open(tmp_path: Path) -> None:
    async def go() -> None:
        s = steps(tmp_path)
        args = {"id": "a.g", "command": "date +%s.%N", "gate": True}
        held = await s.run(dict(args))
        assert held == {"id": "a.g", "gated": True, "cached": False}
        assert (await s.run(dict(args)))["gated"] is True  # still held: asked again
        await asyncio.sleep(0.3)
        opened = s.open("a.g")
        assert opened["opened"] is True
        done = await s.run(dict(args))
        assert done["exit"] == 0
        assert float(done["tail"]) - opened["at"] < 0.5  # ran after the open, not before
        assert s.open("a.g")["opened"] is False

    run(go())


def test_forget_kills_running_steps_and_removes_records_and_logs(tmp_path: Path) -> None:
    async def go() -> None:
        s = steps(tmp_path)
        await s.run({"id": "app.a", "command": "true"})
        slow = asyncio.ensure_future(s.run({"id": "app.b", "command": "sleep 30"}))
        await asyncio.sleep(0.2)
        assert s.status("app.")["running"] == ["app.b"]
        gone = await s.forget("app.")
        assert gone["killed"] == ["app.b"] and gone["removed"] == ["app.a"]
        assert (await slow)["exit"] is not None and (await slow)["exit"] < 0
        assert s.status("app.") == {"done": {}, "running": []}
        assert list((tmp_path / "logs" / "steps").glob("app.*")) == []
        with pytest.raises(ValueError):
            await s.forget("")

    run(go())


@pytest.mark.parametrize("bad", [{"id": "a b", "command": "x"}, {"id": "a", "command": ""}])
def test_bad_requests_are_refused(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        run(steps(tmp_path).run(bad))


def test_cli_check_reports_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("app: x\ncomponents:\n  a:\n    select: all\n    processes: []\n")
    assert main(["app", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"shoal: error: {path}:5: components.a.processes: expected at least 1 item(s)")


def test_cli_import_plush_prints_a_spec(capsys: pytest.CaptureFixture[str]) -> None:
    xml = Path(__file__).resolve().parents[2] / "examples" / "plush" / "simple.xml"
    assert main(["app", "import-plush", str(xml)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("app: simple\n") and "barrier: phase1" in out


def test_a_new_agent_adopts_a_running_step_instead_of_starting_it_again(tmp_path: Path) -> None:
    async def go() -> None:
        old = steps(tmp_path)
        command = "echo run >> count; sleep 0.5; echo done"
        args = {"id": "a.long", "command": command, "cwd": str(tmp_path)}
        first = asyncio.ensure_future(old.run(dict(args)))
        await asyncio.sleep(0.2)
        new = steps(tmp_path)  # the agent was replaced while the step runs
        res = await new.dispatch("step.run", dict(args))
        assert res["exit"] == 0 and res["note"] == "adopted from a previous agent"
        assert (tmp_path / "count").read_text() == "run\n"
        await first

    run(go())


def test_a_step_that_ended_between_agents_is_taken_from_its_exit_file(tmp_path: Path) -> None:
    (tmp_path / "logs" / "steps").mkdir(parents=True)
    (tmp_path / "logs" / "steps" / "a.gone.exit").write_text("0\n")
    (tmp_path / "steps-running.json").write_text(
        '{"a.gone": {"pid": 999999999, "ticks": 1, "digest": "d", "started": 1.0}}'
    )

    async def go() -> None:
        s = steps(tmp_path)
        status = await s.dispatch("step.status", {"prefix": "a."})
        assert status["running"] == ["a.gone"] or "a.gone" in status["done"]
        await asyncio.sleep(0.05)
        assert s.status("a.")["done"]["a.gone"]["exit"] == 0

    run(go())
