"""Failure detection for one node: a pure state machine over a clock the caller gives.

Theory of operation. The link to a node (:mod:`.links`) tells the detector
whenever anything arrives from the node's agent (:meth:`Detector.heard`: a
beat, a reply, an event) and when the held connection closes
(:meth:`Detector.lost`); it calls :meth:`Detector.tick` a few times a second.
The detector answers with a :class:`Step`: at most one transition to journal
(``node_suspect``, ``node_down``, ``node_up``) and what the link must do next
(``probe``: confirm with an independent probe; ``reconnect``: make a new SSH
connection).

* ``up`` → ``suspect`` after ``suspect_after`` seconds of silence, or at once
  when the connection closes. A suspect node is *confirmed* by an independent
  probe (several parallel TCP connects to its sshd with a short timeout, run
  by the link, result given to :meth:`Detector.probed`): a dead host answers
  none of them; a live one answers at least one.
* The probe failed and the silence is at least ``down_after`` → ``down``
  (reason ``"down: no heartbeat for 1.6 s, sshd unreachable"``).
* The probe succeeded → the host is alive: the node stays ``suspect`` (a late
  beat, held up by TCP retransmits on a lossy link, then brings it back to
  ``up``). When the silence reaches ``stall_after`` on an open connection
  although the host answers TCP (a wedged channel), or a down node's host
  answers again, the link is told to reconnect now (a closed link is already
  reconnecting, with its own backoff); the node is re-probed every
  ``probe_every`` seconds.
* Anything heard → ``up`` (from ``down``: ``node_up``, the node leaves the
  failed set; from ``suspect``: ``node_up`` too, nothing was marked).

A starved controller (its own loop late, a 2-core machine shared with every
node) must not blame the nodes: the caller :meth:`Detector.excuse`-s the time
it could not listen, and a probe that timed out while the caller was late is
:meth:`Detector.inconclusive` (probed again), never a ``down``.

This is the flap filter: one lost beat, or three (5 % loss, retransmits
after 0.2/0.4/0.8 s), never makes a node ``down``, because an alive host's
sshd answers one of the parallel connects; a killed node (no packet comes
back, no RST) is down ``suspect_after`` + the probe timeout after its last
beat. No I/O, no asyncio here: unit-tested with a fake clock
(tests/unit/test_detector.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Phase(enum.Enum):
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


@dataclass(frozen=True)
class DetectorConfig:
    """Timings of the detector (seconds)."""

    #: silence after which a node is suspect
    suspect_after: float = 1.5
    #: least silence before a failed probe may declare a node down
    down_after: float = 1.5
    #: how often a suspect node is probed again (the previous probe said alive)
    probe_every: float = 1.0
    #: silence, with the host alive, after which the link reconnects
    stall_after: float = 6.0

    @classmethod
    def for_beat(cls, beat: float) -> DetectorConfig:
        """Timings scaled to a beat interval (the defaults are those of a 1 s beat):
        suspect after 1.5 beats of silence, so one late beat is not yet suspect."""
        return cls(
            suspect_after=1.5 * beat,
            down_after=1.5 * beat,
            probe_every=max(1.0, beat),
            stall_after=max(6.0, 6 * beat),
        )

    def validate(self) -> DetectorConfig:
        for name in ("suspect_after", "down_after", "probe_every", "stall_after"):
            if not getattr(self, name) > 0:
                raise ValueError(f"detector {name} must be positive")
        return self


@dataclass(frozen=True)
class Step:
    """What the detector decided: a transition to journal (or None) and what to do."""

    event: str | None = None
    reason: str = ""
    probe: bool = False
    reconnect: bool = False


NOTHING = Step()


class Detector:
    """One node's failure detector; ``now`` is any monotonic clock, in seconds."""

    def __init__(self, now: float, config: DetectorConfig | None = None) -> None:
        self.config = (config or DetectorConfig()).validate()
        self.phase = Phase.UP
        self.last_heard = now
        self.closed = False
        self.probing = False
        self.last_probe: float | None = None
        self.reason = ""

    def silence(self, now: float) -> float:
        return max(0.0, now - self.last_heard)

    def heard(self, now: float) -> Step:
        """Something came from the node (a beat, a reply, an event)."""
        self.last_heard = max(self.last_heard, now)
        self.closed = False
        if self.phase is Phase.UP:
            return NOTHING
        was = self.phase
        self.phase = Phase.UP
        self.probing = False
        self.last_probe = None
        self.reason = ""
        return Step("node_up", f"answering again (was {was.value})")

    def lost(self, now: float) -> Step:
        """The held connection closed (or could not be made): confirm with a probe."""
        self.closed = True
        if self.phase is Phase.UP:
            self.phase = Phase.SUSPECT
            self.reason = "connection closed"
            return Step("node_suspect", self.reason, probe=self._start_probe(now))
        return Step(probe=self._start_probe(now))

    def tick(self, now: float) -> Step:
        """Called periodically: silence may make the node suspect, or due for a probe."""
        quiet = self.silence(now)
        if self.phase is Phase.UP:
            if quiet < self.config.suspect_after:
                return NOTHING
            self.phase = Phase.SUSPECT
            self.reason = f"no heartbeat for {quiet:.1f} s"
            return Step("node_suspect", self.reason, probe=self._start_probe(now))
        if self.probing:
            return NOTHING
        if self.last_probe is None or now - self.last_probe >= self.config.probe_every:
            return Step(probe=self._start_probe(now))
        return NOTHING

    def probed(self, alive: bool, now: float) -> Step:
        """The confirm probe's outcome: ``alive`` when any connect to sshd completed."""
        self.probing = False
        self.last_probe = now
        if self.phase is Phase.UP:
            return NOTHING  # heard meanwhile
        quiet = self.silence(now)
        if alive:
            # wait for a late beat; a closed link is already retrying at its own pace (its
            # backoff spares an sshd at MaxStartups); reconnect now a wedged or a down one
            stalled = not self.closed and quiet >= self.config.stall_after
            return Step(reconnect=self.phase is Phase.DOWN or stalled)
        if self.phase is Phase.DOWN or quiet < self.config.down_after:
            return NOTHING
        self.phase = Phase.DOWN
        closed = "connection closed, " if self.closed else ""
        self.reason = f"down: {closed}no heartbeat for {quiet:.1f} s, sshd unreachable"
        return Step("node_down", self.reason)

    def excuse(self, seconds: float) -> None:
        """The caller could not listen for ``seconds`` (its loop was starved): that much
        silence is not the node's."""
        self.last_heard += max(0.0, seconds)

    def inconclusive(self, now: float) -> None:
        """The probe gave no verdict (the caller was starved while it ran): probe again."""
        self.probing = False
        self.last_probe = now - self.config.probe_every

    def _start_probe(self, now: float) -> bool:
        if self.probing:
            return False
        self.probing = True
        self.last_probe = now
        return True
