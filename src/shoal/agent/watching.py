"""The ``watch`` stream: events pushed as they are recorded, and heartbeats.

``watch {since, beat}`` is answered at once with ``{"agent_id", "last",
"lost", "beat"}`` (``last``: the newest seq; ``lost``: events after ``since``
were already dropped from memory). Then, on the same connection, the agent
pushes ``{"push": "event", "event": {seq, time, kind, program, detail}}`` for
each held event after ``since`` and for every new event the moment
:class:`~.eventjournal.EventLog` records it (a subscriber: no polling), and
``{"push": "beat", "t", "last"}`` every ``beat`` seconds (:data:`BEAT_MIN` to
:data:`BEAT_MAX`, default :data:`BEAT_DEFAULT`). The first beat, then one every
:data:`FACTS_EVERY` seconds and any beat whose program states changed, also
carry the live facts ``"load1", "mem_avail_mb", "disk_free_mb", "programs":
{state: count}``: a controller watching 250 nodes reads 250 beats a second, and
a short beat is read (and made) at a fraction of the cost. The reply, the
backlog and the subscription happen with no await between them, so no event
falls between backlog and live pushes.

Beats are *aligned*: after the first (one interval after the watch starts)
each falls on the wall clock's next multiple of the interval, shifted by one
of :data:`BEAT_PHASES` phases chosen from the host's name (:func:`beat_phase`).
Agents with synchronised clocks then beat in a few bursts a second, which a
controller reads in one event-loop turn each instead of one turn per beat:
250 lab nodes cost the links 3.1 % of a core against 5.8 % with beats spread
evenly (two controllers side by side on one lab); the phases keep a burst to a quarter of the
fleet, so a command arriving during one waits for fewer beats. No gap between
two beats exceeds the interval.

Pushes are *offered* to the connection's :class:`~.outbox.Outbox`: when the
reader is too far behind, the watch ends with a last ``{"push": "overflow"}``
and the reader watches again from the last seq it holds (events are numbered,
so nothing is lost, and the agent's memory stays bounded).
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
import zlib
from typing import Any, Callable

from . import protocol
from .eventjournal import Event, EventLog
from .outbox import Outbox

BEAT_DEFAULT = 0.5
BEAT_MIN = 0.1
BEAT_MAX = 60.0
#: Seconds between beats that carry the live facts (the first beat always does).
FACTS_EVERY = 10.0
#: Beat phases: a host beats at ``k * beat + phase * beat / BEAT_PHASES`` (wall clock).
BEAT_PHASES = 4

#: Program states by count (the supervisor's programs), for beats.
ProgramStates = Callable[[], "dict[str, int]"]


def beat_interval(value: object) -> float:
    """The beat interval asked for, checked (ValueError names the bounds)."""
    if value is None:
        return BEAT_DEFAULT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("beat must be a number of seconds")
    if not BEAT_MIN <= value <= BEAT_MAX:
        raise ValueError(f"beat must be between {BEAT_MIN:g} and {BEAT_MAX:g} seconds")
    return float(value)


def since_seq(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("since must be a non-negative integer")
    return value


def mem_available_mb() -> float | None:
    """MemAvailable from /proc/meminfo in MiB (None where there is none)."""
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle:
                if line.startswith(b"MemAvailable:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def disk_free_mb(path: str) -> float | None:
    """Space an unprivileged writer has on ``path``'s file system, in MiB."""
    try:
        vfs = os.statvfs(path)
    except OSError:
        return None
    return round(vfs.f_bavail * vfs.f_frsize / (1 << 20), 1)


def beat_phase(beat: float, host: str | None = None) -> float:
    """This host's offset into each beat interval (seconds): one of BEAT_PHASES."""
    name = socket.gethostname() if host is None else host
    return zlib.crc32(name.encode()) % BEAT_PHASES * beat / BEAT_PHASES


def next_beat(now: float, beat: float, phase: float) -> float:
    """Seconds from ``now`` (wall clock) to the next aligned beat, in (0, beat]."""
    return beat - (now - phase) % beat or beat


def load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class WatchStream:
    """One ``watch`` request of one connection."""

    def __init__(
        self,
        request_id: object,
        outbox: Outbox,
        events: EventLog,
        home: str,
        programs: ProgramStates,
        beat: float,
    ) -> None:
        self.request_id = request_id
        self.outbox = outbox
        self.events = events
        self.home = home
        self.programs = programs
        self.beat = beat
        self.task: asyncio.Task[None] | None = None
        self.on_end: Callable[[], None] | None = None
        self._ended = False
        self._facts_at: float | None = None
        self._states: dict[str, int] | None = None

    def start(self, since: int, agent_id: str) -> None:
        """Reply, push the held events after ``since``, subscribe, start beating."""
        held = self.events.since(since, limit=len(self.events.recent))
        self.outbox.put(
            protocol.reply(
                self.request_id,
                {
                    "agent_id": agent_id,
                    "last": held["last"],
                    "lost": held["lost"],
                    "beat": self.beat,
                },
            )
        )
        for event in held["events"]:
            if not self._push_event(event):
                return
        self.events.subscribe(self._push_event_cb)
        self.task = asyncio.ensure_future(self._beats())

    def _push_event(self, event: Event) -> bool:
        if self._ended:
            return False
        if not self.outbox.offer(protocol.push(self.request_id, "event", event=event)):
            self._overflow()
            return False
        return True

    def _push_event_cb(self, event: Event) -> None:
        self._push_event(event)

    def beat_message(self) -> protocol.Message:
        """A beat: the clock and newest seq, with the live facts when they are due."""
        now = time.monotonic()
        states = self.programs()
        due = self._facts_at is None or now - self._facts_at >= FACTS_EVERY
        if not due and states == self._states:
            return protocol.push(self.request_id, "beat", t=round(time.time(), 3),
                                 last=self.events.seq)  # fmt: skip
        self._facts_at, self._states = now, states
        return protocol.push(
            self.request_id,
            "beat",
            t=round(time.time(), 3),
            last=self.events.seq,
            load1=load1(),
            mem_avail_mb=mem_available_mb(),
            disk_free_mb=disk_free_mb(self.home),
            programs=states,
        )

    async def _beats(self) -> None:
        phase, wait = beat_phase(self.beat), self.beat
        while not self._ended:
            await asyncio.sleep(wait)
            wait = next_beat(time.time(), self.beat, phase)
            if self._ended:
                return
            if self.outbox.closing:
                self.stop()
                return
            if not self.outbox.offer(self.beat_message()):
                self._overflow()
                return

    def _overflow(self) -> None:
        """The reader fell behind: end with one last push telling it to watch again."""
        if self._ended:
            return
        self.outbox.put(protocol.push(self.request_id, "overflow", last=self.events.seq))
        self.stop()

    def stop(self) -> None:
        """End the stream: no push after this returns."""
        if self._ended:
            return
        self._ended = True
        self.events.unsubscribe(self._push_event_cb)
        current: Any = None
        try:
            current = asyncio.current_task()
        except RuntimeError:
            pass
        if self.task is not None and self.task is not current:
            self.task.cancel()
        if self.on_end is not None:
            self.on_end()

    # the stream interface the connection uses (see server.Agent._handle)
    cancel = stop
    close = stop
