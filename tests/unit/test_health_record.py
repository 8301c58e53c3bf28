"""health.record: which nodes join, leave or keep their place in the failed set, per policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import (
    AgentError,
    AgentNotInstalled,
    AuthError,
    CommandTimeout,
    ConnectError,
    ContentError,
    HostKeyError,
    LocalError,
    OperationError,
)
from shoal.fanout.results import CommandOutcome, CommandOutput, NodeOutcome, Results
from shoal.nodes.health import Policy, failures, mark_failed, record, verdicts


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    return tmp_path


def _runs() -> Results[CommandOutcome]:
    return Results(
        {
            "ok": CommandOutcome("ok", CommandOutput(0)),
            "exit": CommandOutcome("exit", CommandOutput(2)),
            "signal": CommandOutcome("signal", CommandOutput(None, signal="TERM")),
            "down": CommandOutcome("down", error=ConnectError("connection refused", "down")),
            "slow": CommandOutcome("slow", error=CommandTimeout("timed out after 5s", "slow")),
            "auth": CommandOutcome("auth", error=AuthError("permission denied", "auth")),
            "key": CommandOutcome("key", error=HostKeyError("host key changed", "key")),
            "disk": CommandOutcome("disk", error=OperationError("disk full", "disk")),
            "local": CommandOutcome("local", error=LocalError("out/x is a directory", "local")),
        }
    )


def _agent_ops() -> Results[NodeOutcome[object]]:
    return Results(
        {
            "ok": NodeOutcome("ok", value={"pid": 1}),
            "refused": NodeOutcome("refused", error=AgentError("no such program", node="refused")),
            "none": NodeOutcome("none", error=AgentNotInstalled("no agent", node="none")),
            "push": NodeOutcome("push", error=ContentError("disk full", node="push")),
            "down": NodeOutcome("down", error=ConnectError("no route to host", "down")),
            "slow": NodeOutcome("slow", error=CommandTimeout("timed out", "slow")),
            "local": NodeOutcome("local", error=LocalError("logs not collected", "local")),
        }
    )


def test_outcome_policy_every_node_that_did_not_succeed_joins() -> None:
    joins, leaves = verdicts(_runs(), Policy.OUTCOME)
    assert joins == {
        "exit": "failed: exit 2",
        "signal": "failed: killed by signal TERM",
        "down": "unreachable: connection refused",
        "slow": "timeout: timed out after 5s",
        "auth": "auth: permission denied",
        "key": "hostkey: host key changed",
        "disk": "failed: disk full",
    }
    assert leaves == ["ok"]  # "local" neither joins nor leaves


def test_reachability_policy_only_nodes_ssh_could_not_reach_join() -> None:
    joins, leaves = verdicts(_agent_ops(), Policy.REACHABILITY)
    assert joins == {"down": "unreachable: no route to host", "slow": "timeout: timed out"}
    assert leaves == ["ok", "refused", "none", "push"]


def test_a_local_error_never_moves_a_node_under_either_policy() -> None:
    mark_failed({"local": "unreachable: earlier"}, now=10.0)
    for policy in Policy:
        record(_runs(), policy)
        record(_agent_ops(), policy)
        by_name = {f.name: f for f in failures()}
        assert by_name["local"].reason == "unreachable: earlier"


def test_record_writes_joins_and_clears_leaves() -> None:
    mark_failed({"ok": "unreachable: last time", "refused": "timeout: last time"}, now=1.0)
    record(_agent_ops(), Policy.REACHABILITY)
    assert {f.name: f.reason for f in failures()} == {
        "down": "unreachable: no route to host",
        "slow": "timeout: timed out",
    }
    record(_runs(), Policy.OUTCOME)
    assert {f.name for f in failures()} == {"exit", "signal", "down", "slow", "auth", "key", "disk"}


def test_nothing_to_record_writes_nothing(home: Path) -> None:
    record(Results(), Policy.OUTCOME)
    record(Results({"local": _runs()["local"]}), Policy.REACHABILITY)
    assert not (home / "state.db").exists()
