"""Beats made cheap for a controller: aligned to phases of the wall clock, live facts
only every FACTS_EVERY seconds (or when program states change), handed to on_beat
without a queue (issue 13 figure: idle CPU at 250 nodes). Real local agents."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.watching import BEAT_PHASES, beat_phase, next_beat
from shoal.agentlink.agentwatch import Beat
from shoal.agentlink.fleet import proc_spec
from shoal.testing.localagents import LocalAgents, local_agents


@pytest.fixture
def local(tmp_path: Path) -> Any:
    with local_agents(tmp_path, ["n1"]) as agents:
        yield agents


def test_next_beat_lands_on_the_phase_within_one_interval() -> None:
    for phase in (0.0, 0.25, 0.5, 0.75):
        for now in (100.0, 100.1, 100.25, 100.2499, 100.9999, 101.75):
            wait = next_beat(now, 1.0, phase)
            assert 0 < wait <= 1.0
            off = (now + wait - phase) % 1.0
            assert min(off, 1.0 - off) < 1e-6
    phases = {beat_phase(1.0, f"n{i}") for i in range(1, 251)}
    assert phases == {i / BEAT_PHASES for i in range(BEAT_PHASES)}  # hosts spread over all


def test_beats_fall_on_the_hosts_phase_and_carry_facts_only_when_due(local: LocalAgents) -> None:
    beat = 0.2
    phase = beat_phase(beat)

    async def go() -> None:
        async with local.stream_client() as client:
            got: list[tuple[float, Beat]] = []
            watch = client.watch(since=10**6, beat=beat)
            watch.on_beat = lambda b: got.append((time.time(), b))
            async with watch:
                await client.call("proc.start", spec=proc_spec("b", ["sleep", "300"]))
                deadline = time.monotonic() + 10
                while len(got) < 12 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                # on_beat takes every beat: none is queued for iteration
                assert not any(isinstance(item, Beat) for item in watch._items)
            assert len(got) >= 12, got
            # after the first, each beat is sent on the host's phase of the wall clock
            offsets = [((b.t - phase) % beat) for _, b in got[1:]]
            assert all(min(o, beat - o) < 0.05 for o in offsets), offsets
            # the first carries the facts; the program's start changes the states: facts
            # again; else short beats that repeat the last facts, marked not fresh
            fresh = [b for _, b in got if b.fresh]
            assert got[0][1].fresh and got[0][1].disk_free_mb is not None
            assert any(b.programs == {"RUNNING": 1} for b in fresh)
            stale = [b for _, b in got if not b.fresh]
            assert len(stale) >= len(got) - 3, [b.fresh for _, b in got]
            assert stale[-1].programs == {"RUNNING": 1} and stale[-1].load1 is not None
            await client.call("proc.remove", name="b")

    asyncio.run(go())
