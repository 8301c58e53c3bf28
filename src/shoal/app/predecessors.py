"""``after:`` predecessors: a step waits until named steps are done on every member.

A step's ``after:`` names steps of other components (``comp`` = all of its
steps, ``comp.step`` = one). :class:`Predecessors` records, per (component,
step), the nodes where the step is done, and sets one event per (component,
step) once every *active* member of that component has done it. Members
change while the pass runs (a node left out, a spare joining): the caller
reports a departure with :meth:`Predecessors.recheck`, so waiters are not
held by a node that is gone; a spare joining later finds the event already
set and passes, as a replaced node's predecessors were satisfied before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from .appspec import AppSpec, Step

#: component -> names of its active members (read each time, members change)
ActiveOf = Callable[[str], Collection[str]]


class Predecessors:
    """Done steps and their events for one ``up`` pass."""

    def __init__(self, spec: AppSpec, active: ActiveOf) -> None:
        self.spec = spec
        self.active = active
        self.done: dict[tuple[str, str], set[str]] = {}
        self.events: dict[tuple[str, str], asyncio.Event] = {}

    def keys(self, step: Step) -> list[tuple[str, str]]:
        """The (component, step) pairs ``step`` waits for."""
        keys: list[tuple[str, str]] = []
        for ref in step.after:
            target, _, sname = ref.partition(".")
            if target not in self.spec.components:
                continue  # a step of this component: list order already honours it
            tcomp = self.spec.components[target]
            names = [sname] if sname else [s.name for s in tcomp.steps]
            keys.extend((target, n) for n in names)
        return keys

    async def wait(self, step: Step) -> None:
        """Return once every predecessor of ``step`` is done on every active member."""
        for key in self.keys(step):
            await self._event(key).wait()

    def mark_done(self, component: str, step: str, node: str) -> None:
        key = (component, step)
        self.done.setdefault(key, set()).add(node)
        self._check(key)

    def recheck(self) -> None:
        """Members changed: events whose remaining members are all done are set."""
        for key in list(self.events):
            self._check(key)

    def _event(self, key: tuple[str, str]) -> asyncio.Event:
        if key not in self.events:
            self.events[key] = asyncio.Event()
            self._check(key)
        return self.events[key]

    def _check(self, key: tuple[str, str]) -> None:
        event = self.events.get(key)
        if event is None or event.is_set():
            return
        if set(self.active(key[0])) <= self.done.get(key, set()):
            event.set()
