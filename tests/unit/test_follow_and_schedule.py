"""The library's long-running loops: ``eventlog.follow`` and ``sweep.sweep_every``.

Both run against real agents on this machine (:mod:`shoal.testing.localagents`),
with intervals of a few hundredths of a second and bounded rounds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.agentlink import eventlog, fleet
from shoal.ops.sweep import SweepRound, sweep_every
from shoal.state import State
from shoal.testing import LocalAgents, local_agents


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "ctl"))
    with local_agents(tmp_path, ["n1", "n2"]) as agents:
        yield agents


def _pull(local: LocalAgents) -> Any:
    return fleet.pull_events_async(
        local.nodes, local.options, transport=local.transport, state=local.state
    )


def test_follow_yields_each_new_event_once_per_round_and_stops_after_the_rounds(
    local: LocalAgents,
) -> None:
    async def scenario() -> list[list[eventlog.EventRow]]:
        first = await _pull(local)
        # the cursor means "everything so far" only after a pull that reached both
        # (CI, at the end of a long run: n1's first pull failed and its agent_started
        # came in round 1)
        assert first.ok, [(r.node, r.reason) for r in first.failed]
        start = eventlog.cursor_after(local.state, ["n1", "n2"])
        spec = fleet.proc_spec("ticker", ["sleep", "300"])
        got: list[list[eventlog.EventRow]] = []
        async for fresh in eventlog.follow(
            local.state,
            ["n1"],
            pull=lambda: _pull(local),
            after_id=start,
            interval=0.02,
            rounds=3,
        ):
            got.append(fresh)
            if len(got) == 1:  # between rounds 1 and 2: something happens on both nodes
                await fleet.call_async(
                    local.nodes,
                    "proc.start",
                    {"spec": spec},
                    local.options,
                    transport=local.transport,
                )
        return got

    rounds = asyncio.run(scenario())
    assert len(rounds) == 3  # it stopped after the rounds (a timing is not asserted here)
    assert rounds[0] == []  # nothing new since the cursor
    fresh = [row for batch in rounds[1:] for row in batch]
    assert {r.node for r in fresh} == {"n1"}  # only the nodes followed
    assert [(r.kind, r.program) for r in fresh] == [("started", "ticker")]
    ids = [r.id for r in fresh]
    assert len(ids) == len(set(ids))


def test_follow_without_a_pull_tails_the_state_and_ends_when_stop_is_set(
    tmp_path: Path,
) -> None:
    state = State(tmp_path / "state.db")
    eventlog.store(state, "n1", "a1", [{"seq": 1, "time": 10.0, "kind": "started"}])

    async def scenario() -> tuple[list[list[eventlog.EventRow]], float]:
        stop = asyncio.Event()
        got: list[list[eventlog.EventRow]] = []
        began = 0.0
        async for fresh in eventlog.follow(state, None, interval=0.01, stop=stop):
            got.append(fresh)
            if len(got) == 1:  # another writer stores a row, older by its clock
                eventlog.store(state, "n2", "a2", [{"seq": 7, "time": 5.0, "kind": "exited"}])
            if len(got) == 3:
                stop.set()
                began = time.monotonic()
        return got, time.monotonic() - began

    # a long interval: setting stop must end the wait at once, not after 30 s
    async def long_wait() -> float:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        began = time.monotonic()
        async for _ in eventlog.follow(state, ["n1"], interval=30, stop=stop):
            raise AssertionError("no round may end before the interval")
        return time.monotonic() - began

    got, _ = asyncio.run(scenario())
    assert got[0] == []  # the default start is after the newest row stored
    assert [(r.node, r.seq, r.kind) for r in got[1]] == [("n2", 7, "exited")]
    assert got[2] == []
    assert len(got) == 3
    assert asyncio.run(long_wait()) < 1.0
    state.close()


def test_sweep_every_resolves_nodes_each_round_and_waits_start_to_start(
    local: LocalAgents,
) -> None:
    seen: list[list[str]] = []
    starts: list[float] = []
    transports: list[Any] = []

    def chosen() -> list[Any]:
        starts.append(time.monotonic())
        time.sleep((0.2, 0.4, 0.0)[len(seen)])  # round 2 overruns the 0.3 s interval
        names = [n.name for n in local.nodes[: 1 + len(seen) % 2]]
        seen.append(names)
        return [n for n in local.nodes if n.name in names]

    def transport_for(nodes: Any) -> Any:
        transports.append(nodes)
        return local.transport

    async def scenario() -> list[SweepRound]:
        out = []
        async for sweep in sweep_every(
            0.3,
            chosen,
            local.options,
            transport_for=transport_for,
            state=local.state,
            rounds=3,
        ):
            out.append(sweep)
        return out

    rounds = asyncio.run(scenario())
    ended = time.monotonic()
    assert [r.number for r in rounds] == [1, 2, 3]
    assert seen == [["n1"], ["n1", "n2"], ["n1"]]
    assert [[n.name for n in t] for t in transports] == seen
    assert [[e.node for e in r.entries] for r in rounds] == seen
    assert all(r.ok and {e.status for e in r.entries} == {"ok"} for r in rounds)
    # start to start: round 2 begins one interval after round 1 began, not after it
    # ended; round 3 at once, since round 2 took longer than the interval
    gaps = [after - before for before, after in itertools.pairwise(starts)]
    assert 0.29 <= gaps[0] <= 0.4 and 0.39 <= gaps[1] <= 0.5, gaps
    assert ended - starts[-1] < rounds[-1].duration + 0.15  # no wait after the last round


def test_sweep_every_reports_a_dead_node_and_stop_ends_it(local: LocalAgents) -> None:
    local.transport.down.add("n2")

    async def scenario() -> list[SweepRound]:
        stop = asyncio.Event()
        out = []
        async for sweep in sweep_every(
            30,
            local.nodes,
            local.options,
            transport_for=lambda nodes: local.transport,
            state=local.state,
            stop=stop,
        ):
            out.append(sweep)
            asyncio.get_running_loop().call_later(0.05, stop.set)
        return out

    began = time.monotonic()
    rounds = asyncio.run(scenario())
    assert time.monotonic() - began < 10
    assert len(rounds) == 1 and not rounds[0].ok
    assert {e.node: e.status for e in rounds[0].entries} == {"n1": "ok", "n2": "failed"}
