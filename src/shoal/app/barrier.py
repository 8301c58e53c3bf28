"""Barriers, coordinated by the controller.

Theory of operation. During the start phase the controller drives every
member node's process block over one open stream to that node's agent. A node
*arrives* at a barrier when its block reaches the barrier step (the steps
before it are done on the node); its coroutine then awaits the barrier's
event. When the arrivals reach the threshold (all participants, a count, or a
fraction of the participants), the release is recorded (``on_release``: one
SQLite transaction, committed before any node is changed), then every
waiter's pre-encoded release message is written in one synchronous loop (no
await, no drain between nodes: the hooks given to :meth:`BarrierBoard.arrive`),
and only then is the event set, so the release costs one message per node on
a stream that is already open — no new SSH session, no process start on the
controller side, no event-loop hop per node. A node that
arrives after the release passes straight through (partial barriers, nodes
replaced later, a controller resuming after a crash: releases are kept in
SQLite through ``on_release``).

Participants are the active nodes of the components whose blocks hold the
barrier; a node that leaves (failed and ignored, or being replaced) is
withdrawn and the threshold is evaluated again. A timeout (from the first
arrival) releases the barrier with the nodes that made it and hands the late
ones to ``on_timeout``, which applies their component's failure policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shoal.logsetup import logger

from .appspec import Barrier

_log = logger(__name__)

ReleaseHook = Callable[["BarrierState"], None]
TimeoutHook = Callable[["BarrierState", list[str]], None]


@dataclass
class BarrierState:
    """One barrier's participants, arrivals and release."""

    spec: Barrier
    participants: set[str] = field(default_factory=set)
    arrived: dict[str, float] = field(default_factory=dict)
    released_at: float | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)

    @property
    def needed(self) -> int:
        return self.spec.needed(len(self.participants)) if self.participants else 0

    @property
    def released(self) -> bool:
        return self.released_at is not None


class BarrierBoard:
    """All barriers of one application run."""

    def __init__(
        self,
        barriers: Iterable[Barrier],
        *,
        on_release: ReleaseHook | None = None,
        on_timeout: TimeoutHook | None = None,
    ) -> None:
        self.states = {b.name: BarrierState(b) for b in barriers}
        self.on_release = on_release
        self.on_timeout = on_timeout

    def join(self, name: str, node: str) -> None:
        """``node`` takes part in barrier ``name``."""
        self.states[name].participants.add(node)

    def withdraw(self, node: str) -> None:
        """``node`` leaves every barrier it has not passed; thresholds are re-evaluated."""
        for state in self.states.values():
            if node in state.participants and not state.released:
                state.participants.discard(node)
                state.arrived.pop(node, None)
                state.hooks.pop(node, None)
                self._evaluate(state)

    def mark_released(self, name: str, when: float) -> None:
        """A release recorded by an earlier run: later arrivals pass straight through."""
        state = self.states[name]
        if state.released_at is None:
            state.released_at = when
            state.event.set()

    async def arrive(
        self, name: str, node: str, on_release: Callable[[], None] | None = None
    ) -> float:
        """Block until barrier ``name`` releases; returns the release time.

        ``on_release`` (when the release happens while this node waits) is
        called synchronously at the release, before any waiter wakes: the
        runner writes its node's pre-encoded release message there, so all
        of them leave in one go.
        """
        state = self.states[name]
        state.participants.add(node)
        if state.released_at is not None:
            return state.released_at
        state.arrived[node] = time.time()
        if on_release is not None:
            state.hooks[node] = on_release
        if state.timer is None and state.spec.timeout:
            loop = asyncio.get_running_loop()
            state.timer = loop.call_later(state.spec.timeout, self._expire, state)
        self._evaluate(state)
        await state.event.wait()
        assert state.released_at is not None
        return state.released_at

    def _evaluate(self, state: BarrierState) -> None:
        if (
            state.released_at is None
            and state.participants
            and (len(state.arrived) >= state.needed)
        ):
            self._release(state)

    def _release(self, state: BarrierState) -> None:
        state.released_at = time.time()
        if self.on_release is not None:  # recorded (SQLite) before any node is changed
            try:
                self.on_release(state)
            except BaseException:  # not recorded: not released (the caller sees why)
                state.released_at = None
                raise
        if state.timer is not None:
            state.timer.cancel()
        recorded = time.time()
        hooks, state.hooks = state.hooks, {}
        for hook in hooks.values():
            try:
                hook()
            except Exception:  # the waiter sends its message itself
                pass
        state.event.set()
        _log.debug(
            "barrier %s released: recorded in %.1f ms, %d go messages written in %.1f ms",
            state.spec.name,
            (recorded - state.released_at) * 1000,
            len(hooks),
            (time.time() - recorded) * 1000,
        )

    def _expire(self, state: BarrierState) -> None:
        if state.released_at is not None:
            return
        late = sorted(state.participants - set(state.arrived))
        self._release(state)
        if self.on_timeout is not None and late:
            self.on_timeout(state, late)
