"""The pure parts of the warm links: backoff, the attach gate, live facts batching."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from shoal.agentlink.agentwatch import Beat
from shoal.control.attach import AttachGate, backoff
from shoal.control.links import LinkConfig
from shoal.control.livefacts import LiveFacts, beat_facts
from shoal.nodes.facts import FactRecord, load_facts, store_facts
from shoal.state import State


def test_backoff_is_full_jitter_capped() -> None:
    rng = random.Random(1)
    for attempt in range(40):
        pause = backoff(attempt, 0.5, 30.0, rng)
        assert 0.0 <= pause <= min(30.0, 0.5 * 2**attempt)
    late = [backoff(20, 0.5, 30.0, rng) for _ in range(2000)]
    assert max(late) <= 30.0 and max(late) > 25.0 and min(late) < 5.0


def test_the_attach_gate_bounds_handshakes_in_flight_per_sshd_and_rate() -> None:
    async def go() -> AttachGate:
        gate = AttachGate(rate=400.0, burst=5, in_flight=6, per_sshd=2)

        async def handshake(sshd: str) -> None:
            async with gate.admit(sshd):
                await asyncio.sleep(0.01)

        await asyncio.gather(*(handshake(f"s{i % 5}") for i in range(45)))
        return gate

    loop_start = time.monotonic()
    gate = asyncio.run(go())
    took = time.monotonic() - loop_start
    assert gate.most_in_flight == 6
    assert max(gate.most_per_sshd.values()) == 2  # a bastion never sees more than 2
    assert took >= (45 - 5) / 400.0 * 0.9  # the bucket: 5 at once, then 400 per second


def test_link_config_is_checked() -> None:
    with pytest.raises(ValueError, match="handshakes"):
        LinkConfig(handshakes=0).validate()
    with pytest.raises(ValueError, match="run_via"):
        LinkConfig(run_via="telnet").validate()


def test_live_facts_are_written_in_batches_merged_with_gathered_facts(tmp_path: Path) -> None:
    now = [1000.0]
    with State(tmp_path / "state.db") as st:
        store_facts([FactRecord("n1", 1.0, 80.0, {"os_id": "debian", "load1": 9.0})], state=st)
        live = LiveFacts(st, every=10.0, clock=lambda: now[0])
        beat = Beat(t=1000.0, last=3, load1=0.25, mem_avail_mb=512.0, disk_free_mb=2048.0,
                    programs={})  # fmt: skip
        for _ in range(50):  # fifty beats: nothing written yet
            live.update("n1", beat_facts(beat))
            live.rtt("n1", 2.0)
            live.rtt("n2", 4.0)
        assert not live.due()
        assert load_facts(["n1"], state=st)["n1"].facts["load1"] == 9.0
        now[0] += 10.0
        assert live.due()
        assert live.flush() == 2 and live.flushes == 1
        stored = load_facts(state=st)
        assert stored["n1"].facts == {
            "os_id": "debian", "load1": 0.25, "mem_available_mb": 512,
            "disk_free_mb": 2048, "disk_free_gb": 2.0,
        }  # fmt: skip
        assert stored["n1"].gathered == 1010.0
        assert stored["n1"].rtt_ms is not None and 2.0 <= stored["n1"].rtt_ms < 80.0
        assert stored["n2"].rtt_ms == 4.0 and stored["n2"].facts == {}
        assert live.flush() == 0  # nothing changed since
