"""Rollout events in the journal (topic ``rollout``), whoever runs the rollout.

A temporary state; the rollout itself is replaced by one that emits the events
a real one does through its ``on_event`` hook (the rollout runs on the lab in
tests/integration/test_rollout.py): what the CLI and ``app up`` pass as that
hook stores each event, in order, where ``shoal events`` and the service's
journal read them.
"""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink import eventlog
from shoal.app import lifecycle
from shoal.app.runtime import UpOptions
from shoal.cli import rolloutcmds
from shoal.cli.main import main
from shoal.content import rollout
from shoal.content.rollout import RolloutResult
from shoal.control.journal import TOPICS, Journal, ServiceEvent
from shoal.state import State

#: What a rollout of two nodes in one stage says (kind, node, message).
SAID = [
    ("rollout.created", None, "rollout r1: v2 to 2 node(s) in 1 stage(s)"),
    ("rollout.staged", None, "2 node(s) hold v2"),
    ("rollout.stage", None, "stage 1 (100%): 2 node(s)"),
    ("rollout.node_healthy", "n1", "healthy (down 0.05s)"),
    ("rollout.node_healthy", "n2", "healthy (down 0.04s)"),
    ("rollout.stage_passed", None, "stage 1 (100%) passed"),
]


async def fake_rollout(*args: Any, state: State, on_event: Any, **kw: Any) -> RolloutResult:
    assert isinstance(state, State)
    for kind, node, message in SAID:
        on_event(kind, node, message)
    return RolloutResult("r1", "done", version="v2")


def rollout_events(home: Path) -> list[tuple[str, str | None, str]]:
    with State(home / "state.db") as st:
        rows = Journal(st).read(0, topic="rollout").events
        assert [r.id for r in rows] == sorted(r.id for r in rows)
        assert all(r.agent is None and r.seq is None for r in rows)
        return [(r.kind, r.node, r.detail) for r in rows]


def test_the_recorder_stores_each_call_as_a_rollout_event_in_order(tmp_path: Path) -> None:
    assert "rollout" in TOPICS
    with State(tmp_path / "state.db") as st:
        journal = Journal(st)
        record = eventlog.recorder(st, "rollout")
        record(*SAID[0])
        journal.record(ServiceEvent("node", "down", node="n9")).result()
        for said in SAID[1:]:
            record(*said)
        everything = journal.read(0).events
        assert [r.topic for r in everything] == ["rollout", "node"] + ["rollout"] * 5
        # what `shoal events` (no service) reads for the rollout's nodes
        shown = eventlog.query(st, ["n1", "n2"])
        assert [(r.kind, r.node) for r in shown] == [
            ("rollout.node_healthy", "n1"),
            ("rollout.node_healthy", "n2"),
        ]
    assert rollout_events(tmp_path) == SAID


def test_shoal_rollout_start_prints_and_journals_each_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path))
    monkeypatch.setattr(rollout, "rollout_async", fake_rollout)
    monkeypatch.setattr(rolloutcmds, "selected_nodes", lambda args: [])
    assert main(["rollout", "start", str(tmp_path), "/srv/x", "--programs", "web"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"{node}: {m}" if node else m for _, node, m in SAID]
    assert rollout_events(tmp_path) == SAID


def test_app_up_journals_the_rollout_of_changed_software(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "rollout_async", fake_rollout)
    said: list[str] = []
    node = types.SimpleNamespace(name="n1")
    up = types.SimpleNamespace(
        members={"web": [node]},
        components_of=lambda n: [],
        spec=types.SimpleNamespace(name="shop", rollout=None),
        app_dir=lambda n: "/apps/shop",
        opts=UpOptions(),
        transport=None,
        say=said.append,
    )
    tree = types.SimpleNamespace(depot=None, source=tmp_path)
    configurer = types.SimpleNamespace(staged={"code": ["n1"]}, tree=lambda name: tree)
    runner = types.SimpleNamespace(up=up, configurer=configurer)
    with State(tmp_path / "state.db") as st:
        failures = asyncio.run(lifecycle._roll_out(runner, {"n1": set()}, st))  # type: ignore[arg-type]
    assert failures == {}
    assert said == [m for _, _, m in SAID]  # the up's progress lines, as before
    assert rollout_events(tmp_path) == SAID
