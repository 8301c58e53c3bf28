"""``shoal events`` without a service: ``--topic`` and the events of no node.

Events of no node (a rollout's, the scheduler's) used to be dropped by the
offline reader, which kept only rows whose node was in the selection; they are
shown when the selection is the whole inventory, and ``--topic`` narrows by topic.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.agentlink import eventlog
from shoal.cli.main import main
from shoal.state import State


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.delenv("MQ_NODES", raising=False)
    assert main(["nodes", "add", "n[1-2]"]) == 0
    with State(tmp_path / "state.db") as st:
        rollout = eventlog.recorder(st, "rollout")
        rollout("rollout.created", None, "rollout r1: v2 to 2 node(s)")
        rollout("rollout.node_healthy", "n1", "healthy")
        eventlog.recorder(st, "schedule")("schedule.failed", None, "sweep: boom")
        eventlog.recorder(st, "node")("node_down", "n2", "no beat")
    return tmp_path


def shown(capsys: pytest.CaptureFixture[str], *argv: str) -> list[tuple[str | None, str]]:
    capsys.readouterr()
    assert main(["events", "--no-pull", "--json", *argv]) == 0
    out = capsys.readouterr().out
    return [(r["node"], r["kind"]) for r in map(json.loads, out.splitlines())]


def test_the_whole_inventory_shows_the_events_of_no_node_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert shown(capsys) == [
        (None, "rollout.created"),
        ("n1", "rollout.node_healthy"),
        (None, "schedule.failed"),
        ("n2", "node_down"),
    ]


def test_a_selection_shows_its_nodes_events_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert shown(capsys, "-s", "n1") == [("n1", "rollout.node_healthy")]


def test_topic_narrows_and_repeats(capsys: pytest.CaptureFixture[str]) -> None:
    assert shown(capsys, "--topic", "rollout") == [
        (None, "rollout.created"),
        ("n1", "rollout.node_healthy"),
    ]
    assert shown(capsys, "--topic", "schedule", "--topic", "node") == [
        (None, "schedule.failed"),
        ("n2", "node_down"),
    ]


def test_an_unknown_topic_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--no-pull", "--topic", "rollouts"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown topic 'rollouts'" in err and "\n" not in err


def test_the_human_listing_names_the_topic_of_an_event_of_no_node(
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    assert main(["events", "--no-pull", "--topic", "schedule"]) == 0
    line = capsys.readouterr().out.strip()
    assert "(schedule)  schedule.failed  -  sweep: boom" in line and "None" not in line
