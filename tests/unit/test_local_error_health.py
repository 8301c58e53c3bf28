"""A failure on the controller's side (LocalError) never puts a node in the failed set."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.errors import ConnectError, LocalError
from shoal.fanout.results import CommandOutcome, Results
from shoal.fanout.workers import decode, encode
from shoal.nodes.health import Policy, failures, mark_failed, record


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    return tmp_path


def test_local_error_leaves_the_node_as_it_was() -> None:
    mark_failed({"n3": "unreachable: earlier"})
    result = Results(
        {
            "n1": CommandOutcome("n1", error=LocalError("out/n1 is a directory", "n1")),
            "n2": CommandOutcome("n2", error=ConnectError("connection refused", "n2")),
            "n3": CommandOutcome("n3", error=LocalError("output pipe closed", "n3")),
        }
    )
    record(result, Policy.OUTCOME)
    assert {f.name: f.reason for f in failures()} == {
        "n2": "unreachable: connection refused",
        "n3": "unreachable: earlier",
    }
    assert result["n1"].kind == "local"


def test_local_error_survives_the_worker_pipe() -> None:
    r = decode(encode(CommandOutcome("n1", error=LocalError("out/n1 is a directory", "n1"))))
    assert isinstance(r.error, LocalError) and r.error.node == "n1"
    assert r.reason == "out/n1 is a directory"
