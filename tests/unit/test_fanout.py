"""Fan-out scheduler, results, grouping and cp planning, on the mock transport."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping

import pytest

from shoal.errors import AuthError, ConnectError, HostKeyError, UsageError
from shoal.fanout import FanoutOptions, RunOptions, run
from shoal.fanout.copies import expand_local, plan_copy
from shoal.fanout.options import parse_env
from shoal.fanout.output import group_outputs, summary_lines
from shoal.nodes.model import Node
from shoal.testing.mocktransport import MockBehaviour, MockTransport
from shoal.transport.base import CommandResult
from shoal.transport.ssh import remote_command


def nodes(n: int) -> list[Node]:
    return [Node(f"n{i}") for i in range(1, n + 1)]


def opts(**kw: object) -> RunOptions:
    return RunOptions(**kw)  # type: ignore[arg-type]


def test_every_node_gets_a_result_and_errors_stay_per_node() -> None:
    t = MockTransport(
        {
            "n2": MockBehaviour(connect_errors=[ConnectError("refused", "n2")] * 5),
            "n3": MockBehaviour(connect_errors=[HostKeyError("changed", "n3")]),
            "n4": MockBehaviour(respond=lambda c, e: CommandResult(3, b"", b"boom\n")),
        }
    )
    r = run(nodes(5), "true", opts(retries=0), transport=t)
    assert [x.node for x in r] == ["n1", "n2", "n3", "n4", "n5"]
    assert {x.node for x in r.succeeded} == {"n1", "n5"}
    kinds = {x.node: x.kind for x in r}
    assert kinds == {"n1": "ok", "n2": "unreachable", "n3": "hostkey", "n4": "failed", "n5": "ok"}
    assert r["n4"].reason == "exit 3"
    assert not r.ok


def test_parallelism_is_bounded() -> None:
    t = MockTransport({f"n{i}": MockBehaviour(command_delay=0.02) for i in range(1, 21)})
    run(nodes(20), "true", opts(parallel=4), transport=t)
    assert t.log.open_max == 4


def test_delay_staggers_launches() -> None:
    t = MockTransport()
    run(nodes(5), "true", opts(delay=0.05, parallel=5), transport=t)
    times = sorted(ts for _, ts in t.log.connects)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.045


def test_connection_failures_are_retried_but_auth_is_not() -> None:
    t = MockTransport(
        {
            "n1": MockBehaviour(connect_errors=[ConnectError("reset during banner", "n1")]),
            "n2": MockBehaviour(connect_errors=[AuthError("denied", "n2")]),
        }
    )
    r = run(nodes(2), "true", opts(retries=2, retry_backoff=0.001), transport=t)
    assert r["n1"].ok and r["n1"].attempts == 2
    assert r["n2"].kind == "auth" and r["n2"].attempts == 1


def test_timeout_is_reported_per_node() -> None:
    t = MockTransport({"n1": MockBehaviour(command_delay=5)})
    r = run(nodes(2), "sleep 5", opts(timeout=0.05), transport=t)
    assert r["n1"].kind == "timeout" and r["n2"].ok


def test_each_command_sees_its_node_and_index() -> None:
    t = MockTransport()
    run(nodes(3), "echo", opts(env={"A": "1"}), transport=t)
    envs = {n: e for n, _, e in t.log.commands}
    assert envs["n3"] == {"SHOAL_NODE": "n3", "SHOAL_INDEX": "2", "A": "1"}


def test_bad_options_are_refused_before_any_connection() -> None:
    t = MockTransport()
    for bad in (opts(parallel=0), opts(delay=-1), opts(timeout=0), opts(retries=-1)):
        with pytest.raises(UsageError):
            run(nodes(2), "true", bad, transport=t)
    with pytest.raises(UsageError):
        FanoutOptions(host_keys="yes").validate()
    assert t.log.connects == []


def test_parse_env() -> None:
    assert parse_env(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    for bad in ("A", "1A=2", "A B=1", "=x"):
        with pytest.raises(UsageError):
            parse_env([bad])


def test_identical_outputs_are_merged_with_compact_labels() -> None:
    t = MockTransport(
        {
            f"n{i}": MockBehaviour(respond=lambda c, e: CommandResult(0, b"same\n", b""))
            for i in [*range(1, 31), 32]
        }
    )
    t.behaviours["n31"] = MockBehaviour(respond=lambda c, e: CommandResult(1, b"other\n", b""))
    r = run(nodes(32), "x", opts(), transport=t)
    groups = group_outputs(r)
    assert groups[0].label == "n[1-30,32] (31)"
    assert groups[0].stdout == "same\n"
    assert groups[1].nodes == ("n31",) and groups[1].outcome == "exit 1"
    lines = summary_lines(r)
    assert "ok 31, failed 1" in lines[0]
    assert lines[1].strip().startswith("failed: n31")


def test_remote_command_quotes_everything() -> None:
    line = remote_command("echo hi", env={"SHOAL_NODE": "a;rm -rf /", "X": "$(id)"})
    assert line == "export SHOAL_NODE='a;rm -rf /' X='$(id)'; echo hi"
    assert remote_command("echo hi") == "echo hi"
    with pytest.raises(ValueError):
        remote_command("x", env={"A;B": "1"})


def test_remote_command_timeout_kills_on_the_node() -> None:
    line = remote_command("sleep 100", timeout=1.5)
    assert "exec timeout -k 2 1.500 sh -c 'sleep 100'" in line
    assert "command -v timeout" in line
    assert remote_command("id", sudo=True) == "exec sudo -n -E -- sh -c id"


def test_plan_copy_forms() -> None:
    assert plan_copy(["a", "b", "@:dir/"]).mode == "push"
    p = plan_copy(["@:logs/*", "out/@/"])
    assert (p.mode, p.sources, p.dest) == ("pull", ("logs/*",), "out/@/")
    assert plan_copy(["skel", "@"]).mode == "fan"
    for bad in (["a"], ["@:x", "b", "c/"], ["@:x", "@:y"], ["a", "b"], ["a", "x@@y"]):
        with pytest.raises(UsageError):
            plan_copy(bad)


def test_at_expands_only_to_safe_node_names() -> None:
    assert expand_local("out/@/x@@y", "n1") == "out/n1/x@y"
    for bad in ("..", ".", "a/b", ""):
        with pytest.raises(Exception, match="cannot be used"):
            expand_local("out/@", bad)


def test_fanout_never_raises_for_one_node_even_on_unexpected_oserror() -> None:
    class Boom(MockTransport):
        async def connect(self, node, *, timeout=None):  # type: ignore[no-untyped-def]
            conn = await super().connect(node, timeout=timeout)

            async def bad(*a: object, **k: object) -> CommandResult:
                raise OSError("pipe broke")

            conn.run = bad  # type: ignore[method-assign]
            return conn

    r = asyncio.run(_run_async(Boom()))
    assert r["n1"].kind == "unreachable" and "pipe broke" in r["n1"].reason


async def _run_async(t: MockTransport):  # type: ignore[no-untyped-def]
    from shoal.fanout import run_async

    return await run_async(nodes(1), "x", opts(), transport=t)


def test_large_fanouts_spread_over_worker_processes_keep_order_indices_and_errors() -> None:
    import os

    from shoal.fanout.workers import worker_count

    seen_pids: set[int] = set()

    def respond(cmd: str, env: Mapping[str, str]) -> CommandResult:
        return CommandResult(0, f"{env['SHOAL_INDEX']} {os.getpid()}\n".encode(), b"")

    behaviours = {f"n{i}": MockBehaviour(respond=respond) for i in range(1, 41)}
    behaviours["n7"] = MockBehaviour(connect_errors=[HostKeyError("changed", "n7")])
    lines: list[tuple[str, str, bytes]] = []
    done: list[str] = []
    r = run(
        nodes(40),
        "x",
        opts(workers=3),
        transport=MockTransport(behaviours),
        on_result=lambda res: done.append(res.node),
        on_line=lambda n, s, line: lines.append((n, s, line)),
    )
    assert [x.node for x in r] == [f"n{i}" for i in range(1, 41)]
    assert sorted(done) == sorted(x.node for x in r)
    for x in r:
        if x.node == "n7":
            assert isinstance(x.error, HostKeyError) and x.kind == "hostkey"
            continue
        index, pid = x.stdout.split()
        assert int(index) == x.index == int(x.node[1:]) - 1
        seen_pids.add(int(pid))
    assert len(seen_pids) == 3 and os.getpid() not in seen_pids
    assert len(lines) == 39
    assert worker_count(40, opts(delay=0.1)) == 1
    assert worker_count(8, opts()) == 1


def test_a_worker_process_that_fails_says_why_for_the_nodes_it_left() -> None:
    """A child whose job raised: its nodes' reason carries the exception (it said only
    'worker process ended (status 256)' at 250 nodes, issue 18)."""
    from shoal.fanout.workers import spread

    def job(ns, indices, options, on_result, on_line):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"broken in the child holding {ns[0].name}")

    r = spread(nodes(6), job, opts(workers=2))
    assert [x.node for x in r] == [f"n{i}" for i in range(1, 7)]
    assert all(not x.ok for x in r)
    first = {x.node: x.reason for x in r}
    assert "RuntimeError: broken in the child holding n1" in first["n3"]
    assert "RuntimeError: broken in the child holding n2" in first["n4"]
    assert first["n1"].startswith("worker process ended (status 256: RuntimeError")
