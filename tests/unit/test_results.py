"""Results[T]: per-node outcomes in the nodes' order, ok/failed/by_kind, JSON, the error's node."""

from __future__ import annotations

import json

from shoal.errors import (
    AgentError,
    AuthError,
    CommandTimeout,
    ConnectError,
    LocalError,
    TransportError,
    VersionMismatch,
)
from shoal.fanout.results import KINDS, CommandOutcome, CommandOutput, NodeOutcome, Results


def _run_results() -> Results[CommandOutcome]:
    out = {
        "n10": CommandOutcome("n10", CommandOutput(0, "hi\n"), index=2, duration=0.123456),
        "n2": CommandOutcome("n2", CommandOutput(3, "", "bad\n"), index=0),
        "n1": CommandOutcome("n1", error=ConnectError("connection refused", "n1"), index=1),
        "n4": CommandOutcome("n4", CommandOutput(None, signal="KILL"), index=3),
        "n5": CommandOutcome("n5", error=LocalError("out/n5 is a directory", "n5"), index=4),
        "n6": CommandOutcome("n6", error=CommandTimeout("timed out after 1s", "n6"), index=5),
        "n7": CommandOutcome("n7", error=AgentError("refused", node="n7"), index=6),
    }
    return Results(out, duration=1.5)


def test_iteration_keeps_the_order_the_nodes_were_given() -> None:
    r = _run_results()
    assert [x.node for x in r] == ["n10", "n2", "n1", "n4", "n5", "n6", "n7"]
    assert len(r) == 7 and "n2" in r and "n3" not in r and r["n1"].node == "n1"


def test_ok_succeeded_failed_and_the_command_fields() -> None:
    r = _run_results()
    assert not r.ok
    assert [x.node for x in r.succeeded] == ["n10"]
    assert [x.node for x in r.failed] == ["n2", "n1", "n4", "n5", "n6", "n7"]
    assert r["n10"].stdout == "hi\n" and r["n10"].exit_status == 0
    assert r["n2"].stderr == "bad\n" and r["n2"].reason == "exit 3"
    assert r["n4"].reason == "killed by signal KILL" and r["n4"].signal == "KILL"
    # no value: the command's fields read as an empty output
    assert r["n1"].stdout == "" and r["n1"].exit_status is None and r["n1"].signal is None
    assert Results({"a": CommandOutcome("a", CommandOutput(0))}).ok
    assert Results().ok and len(Results()) == 0


def test_by_kind_lists_every_kind_and_files_foreign_kinds_under_error() -> None:
    groups = _run_results().by_kind()
    assert list(groups) == list(KINDS)
    assert {k: [x.node for x in v] for k, v in groups.items() if v} == {
        "ok": ["n10"],
        "failed": ["n2", "n4"],
        "timeout": ["n6"],
        "unreachable": ["n1"],
        "local": ["n5"],
        "error": ["n7"],
    }


def test_the_node_is_a_field_of_the_error_never_in_its_message() -> None:
    r = _run_results()
    err = r["n1"].error
    assert err is not None and err.node == "n1"
    assert str(err) == "connection refused" and r["n1"].reason == "connection refused"
    assert err.located() == "n1: connection refused"
    assert AuthError("denied").located() == "denied" and AuthError("denied").node is None
    assert VersionMismatch("agent 2", node="n3").located() == "n3: agent 2"
    assert r["n5"].kind == "local" and r["n5"].reason == "out/n5 is a directory"


def test_the_json_record_of_a_run() -> None:
    records = _run_results().to_json()
    assert [x["node"] for x in records] == ["n10", "n2", "n1", "n4", "n5", "n6", "n7"]
    assert records[0] == {
        "node": "n10",
        "index": 2,
        "status": "ok",
        "exit_code": 0,
        "signal": None,
        "stdout": "hi\n",
        "stderr": "",
        "dropped": 0,
        "duration": 0.1235,
        "error": None,
        "error_kind": None,
        "attempts": 1,
    }
    assert records[1]["status"] == "failed" and records[1]["error"] is None
    assert records[2]["status"] == "unreachable" and records[2]["error"] == "connection refused"
    assert records[2]["error_kind"] == "unreachable" and records[2]["exit_code"] is None
    assert records[6]["status"] == "error" and records[6]["error_kind"] == "agent"
    json.dumps(records)  # plain JSON throughout


def test_a_generic_outcome_holds_any_value_or_an_error() -> None:
    good: NodeOutcome[dict[str, int]] = NodeOutcome("n1", value={"pid": 7}, action="started")
    bad: NodeOutcome[dict[str, int]] = NodeOutcome("n2", error=TransportError("lost", "n2"))
    refused: NodeOutcome[dict[str, int]] = NodeOutcome("n3", error=AgentError("no", node="n3"))
    assert good.ok and good.kind == "ok" and good.reason == "" and good.reached
    assert not bad.ok and bad.kind == "unreachable" and not bad.reached
    assert not refused.ok and refused.kind == "agent" and refused.reached
    assert good.to_json()["value"] == {"pid": 7} and good.to_json()["status"] == "ok"
    results = Results({o.node: o for o in (good, bad, refused)})
    assert [o.node for o in results.failed] == ["n2", "n3"]
    assert [o.node for o in results.by_kind()["error"]] == ["n3"]
