"""The failure detector's state machine, on a fake clock (shoal.control.detector)."""

from __future__ import annotations

import random

import pytest

from shoal.control.detector import Detector, DetectorConfig, Phase, Step

CFG = DetectorConfig(suspect_after=1.5, down_after=1.5, probe_every=1.0, stall_after=6.0)
PROBE_TIME = 0.6  # the link's probe timeout: a dead host answers after this long


def run_dead(beat: float = 0.5) -> tuple[Detector, list[tuple[float, Step]], float]:
    """A node beating every ``beat`` s that dies at t=10; probes run PROBE_TIME and fail."""
    d = Detector(0.0, CFG)
    t = 0.0
    while t < 10.0:
        d.heard(t)
        t += beat
    steps: list[tuple[float, Step]] = []
    probe_due: float | None = None
    now = 10.0
    while now < 20.0 and d.phase is not Phase.DOWN:
        now = round(now + 0.05, 3)
        if probe_due is not None and now >= probe_due:
            probe_due = None
            steps.append((now, d.probed(False, now)))
            continue
        step = d.tick(now)
        steps.append((now, step))
        if step.probe:
            probe_due = now + PROBE_TIME
    return d, steps, 10.0 - beat


def test_a_dead_node_is_suspect_then_down_within_three_seconds() -> None:
    d, steps, last_beat = run_dead()
    events = [(t, s.event) for t, s in steps if s.event]
    assert [e for _, e in events] == ["node_suspect", "node_down"]
    down_at = events[-1][0]
    assert down_at - last_beat <= 3.0
    assert d.reason.startswith("down: no heartbeat for ")
    assert "sshd unreachable" in d.reason


def test_silence_below_the_threshold_changes_nothing() -> None:
    d = Detector(0.0, CFG)
    d.heard(1.0)
    assert d.tick(2.4) == Step()
    assert d.phase is Phase.UP


def test_a_probe_that_answers_keeps_the_node_suspect_never_down() -> None:
    d = Detector(0.0, CFG)
    first = d.tick(1.6)
    assert first.event == "node_suspect" and first.probe
    assert "no heartbeat for 1.6 s" in first.reason
    # host alive: stays suspect, no reconnect yet (the channel may only be slow)
    assert d.probed(True, 2.0) == Step()
    assert d.phase is Phase.SUSPECT
    assert d.tick(2.5) == Step()  # next probe not due yet
    again = d.tick(3.0)
    assert again.probe and again.event is None
    # the late beat arrives: back up
    up = d.heard(3.2)
    assert up.event == "node_up" and d.phase is Phase.UP


def test_a_wedged_channel_on_a_live_host_is_reconnected_not_marked_down() -> None:
    d = Detector(0.0, CFG)
    d.tick(1.6)
    t = 2.0
    reconnect = False
    while t < 10.0:
        step = d.probed(True, t)
        assert step.event is None
        if step.reconnect:
            reconnect = True
            break
        t += 1.0
        assert d.tick(t).probe
    assert reconnect and t >= CFG.stall_after
    assert d.phase is Phase.SUSPECT


def test_a_closed_connection_is_confirmed_by_the_probe() -> None:
    d = Detector(0.0, CFG)
    d.heard(5.0)
    step = d.lost(5.1)
    assert step.event == "node_suspect" and step.probe and step.reason == "connection closed"
    # sshd answers: the node is alive; the link reconnects at its own backoff, not at once
    assert d.probed(True, 5.2) == Step()
    assert d.phase is Phase.SUSPECT
    # the connection is closed and sshd stops answering: down once silent long enough
    assert d.tick(6.2).probe
    assert d.probed(False, 6.3).event is None  # silent 1.3 s: not yet
    assert d.tick(7.3).probe
    down = d.probed(False, 8.0)
    assert down.event == "node_down"
    assert down.reason.startswith("down: connection closed, no heartbeat for 3.0 s")


def test_a_down_node_that_answers_again_is_up() -> None:
    d, _, _ = run_dead()
    assert d.phase is Phase.DOWN
    # probes continue while down; a live probe asks for a reconnect (the node came back)
    t = 30.0
    assert d.tick(t).probe
    assert d.probed(False, t + 0.6) == Step()
    assert d.tick(t + 2.0).probe
    assert d.probed(True, t + 2.1).reconnect
    assert d.phase is Phase.DOWN  # not up until the agent itself answers
    up = d.heard(t + 2.5)
    assert up.event == "node_up" and "was down" in up.reason
    assert d.phase is Phase.UP and d.reason == ""


def test_a_probe_in_flight_is_not_started_twice() -> None:
    d = Detector(0.0, CFG)
    assert d.tick(2.0).probe
    assert not d.tick(3.5).probe
    assert not d.lost(3.6).probe


def test_heard_during_a_probe_wins_over_its_result() -> None:
    d = Detector(0.0, CFG)
    d.tick(2.0)
    d.heard(2.1)
    assert d.probed(False, 2.6) == Step()
    assert d.phase is Phase.UP


def lossy_run(seed: int, probe_answers: bool = True) -> tuple[int, int]:
    """Ten simulated minutes of beats every 0.5 s over a link losing 5 % of packets:
    a lost beat is retransmitted after 0.2, 0.4, 0.8 s (TCP), later beats queue behind
    it (in-order delivery); each of the probe's four parallel connects succeeds with
    p = 0.95^2 (SYN and SYN-ACK). Returns (suspects, downs)."""
    rng = random.Random(seed)
    d = Detector(0.0, CFG)
    arrivals: list[float] = []
    delivered = 0.0
    t = 0.0
    while t < 600.0:
        delay, rto = 0.001, 0.2
        while rng.random() < 0.05:
            delay += rto
            rto *= 2
        delivered = max(delivered, t + delay)
        arrivals.append(delivered)
        t += 0.5
    suspects = downs = 0
    now = 0.0
    i = 0
    probe_due: float | None = None
    while now < 600.0:
        now = round(now + 0.05, 3)
        while i < len(arrivals) and arrivals[i] <= now:
            d.heard(arrivals[i])
            i += 1
        steps = [d.tick(now)]
        if probe_due is not None and now >= probe_due:
            probe_due = None
            alive = probe_answers and any(rng.random() < 0.95**2 for _ in range(4))
            steps.append(d.probed(alive, now))
        for step in steps:
            suspects += step.event == "node_suspect"
            downs += step.event == "node_down"
            if step.probe:
                probe_due = now + 0.1
    return suspects, downs


def test_lossy_beats_never_declare_down() -> None:
    runs = [lossy_run(seed) for seed in range(40)]
    assert sum(s for s, _ in runs) > 0  # the loss did make nodes suspect...
    assert sum(d for _, d in runs) == 0  # ...and the probe kept every one from down


def test_without_the_confirming_probe_lossy_beats_would_declare_down() -> None:
    """The flap filter is the probe: were it to fail, the same beats give false downs."""
    assert sum(lossy_run(seed, probe_answers=False)[1] for seed in range(40)) > 0


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="suspect_after"):
        DetectorConfig(suspect_after=0).validate()


def test_timings_scale_with_the_beat() -> None:
    assert DetectorConfig.for_beat(1.0) == DetectorConfig()
    slow = DetectorConfig.for_beat(4.0)
    assert slow.suspect_after == 6.0 and slow.down_after == 6.0 and slow.stall_after == 24.0
    d = Detector(0.0, slow)
    assert d.tick(5.0) == Step()  # a 4 s beat one second late: not suspect


def test_a_starved_controller_excuses_the_silence_and_probes_again() -> None:
    d = Detector(0.0, CFG)
    d.heard(10.0)
    d.excuse(3.0)  # our loop stalled 3 s: the beats could not be read
    assert d.tick(12.0) == Step()
    assert d.tick(14.6).event == "node_suspect"  # 1.6 s of real silence after the stall
    d.inconclusive(15.5)  # the probe timed out while we were starved: no verdict
    assert d.phase is Phase.SUSPECT
    assert d.tick(15.5).probe  # asked again at once
    assert d.probed(False, 16.0).event == "node_down"
