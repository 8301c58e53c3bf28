"""``shoal proc`` / ``agent`` / ``sweep`` argument parsing and rendering (no nodes)."""

from __future__ import annotations

import argparse

import pytest

from shoal.cli.agentcmds import parse_duration
from shoal.cli.main import _build_parser
from shoal.cli.render import table
from shoal.errors import UsageError


def parse(*argv: str) -> argparse.Namespace:
    return _build_parser(["agentcmds"]).parse_args(list(argv))


def test_proc_start_takes_options_after_the_name_and_the_command_after_dashes() -> None:
    args = parse(
        "proc", "start", "web", "-s", "n[1-3]", "--restart", "never",
        "--health", "curl -f localhost", "--health-interval", "2",
        "--", "sh", "-c", "exec ./server --port 80",
    )  # fmt: skip
    assert args.name == "web" and args.select == "n[1-3]"
    assert args.restart == "never" and args.health_interval == 2.0
    assert args.command == ["sh", "-c", "exec ./server --port 80"]
    plain = parse("proc", "start", "w", "sleep", "5")
    assert plain.command == ["sleep", "5"]


def test_other_commands_parse() -> None:
    assert parse("proc", "logs", "web", "-n", "5", "-f").follow is True
    assert parse("agent", "status", "--home", "/opt/shoal").home == "/opt/shoal"
    assert parse("sweep", "--every", "5m").every == "5m"
    assert parse("events", "--follow").follow is True
    with pytest.raises(SystemExit):
        parse("proc", "start", "web", "--restart", "sometimes", "--", "x")


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "30s", "5m", "1.5h")] == [90, 30, 300, 5400]
    for bad in ("", "m", "-5m", "5d", "0"):
        with pytest.raises(UsageError):
            parse_duration(bad)


def test_table_aligns_columns() -> None:
    assert table([["n1", "RUNNING"], ["node10", "FATAL"]], ["NODE", "STATE"]) == [
        "NODE    STATE",
        "n1      RUNNING",
        "node10  FATAL",
    ]


def test_build_skew_groups_nodes_by_what_they_run() -> None:
    from shoal.agentlink.fleet import build_skew
    from shoal.errors import ConnectError, VersionMismatch
    from shoal.fanout.results import NodeOutcome, Results

    results: Results[NodeOutcome[object]] = Results()
    for name, value in (("n1", "a"), ("n2", "b"), ("n3", "a")):
        results.results[name] = NodeOutcome(name, value={"protocol": 1, "build": value})
    results.results["n4"] = NodeOutcome(
        "n4", error=VersionMismatch("version mismatch: agent 2, controller 1", node="n4")
    )
    results.results["n5"] = NodeOutcome("n5", error=ConnectError("refused", "n5"))
    assert build_skew(results) == {
        "protocol 1 build a": ["n1", "n3"],
        "protocol 1 build b": ["n2"],
        "version mismatch: agent 2, controller 1": ["n4"],
    }
    assert results["n5"].kind == "unreachable" and not results["n5"].reached
