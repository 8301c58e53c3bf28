"""One ``up`` pass: its options, the state its pieces share, and its report.

:class:`UpOptions` says how ``up`` talks to nodes and how long it waits;
:class:`UpReport` is what it did. :class:`UpPass` is the state that
configure (:mod:`.configure`), the process blocks (:mod:`.blocks`) and the
runner that applies failure policies (:mod:`.runner`) share while one pass
runs: the spec, the controller's state, the members of every component in
slot order with their spares and slots, each node's agent home, the
transport and the report. Members change while the pass runs (a node left
out, a spare taking a slot), and the ``${...}`` values of a member
(:func:`.naming.values`) are read from here each time a step is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.agentlink import fleet as agents
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport.base import Transport

from . import naming
from .acquire import Allocation
from .appspec import AppSpec, Component

Say = Callable[[str], None]
#: ``on_progress(phase, done, total)``: ``done`` of ``total`` nodes have finished
#: ``phase`` (``agents``, ``software NAME``, ``install``; ``start``: member blocks).
Progress = Callable[[str, int, int], None]


@dataclass
class UpOptions:
    """How ``up`` talks to nodes and how long it waits."""

    agent: agents.AgentOptions = field(default_factory=agents.AgentOptions)
    step_timeout: float = 600.0
    connect_timeout: float = 15.0
    transport: Transport | None = None
    say: Say | None = None  # progress lines (adapters print them)
    #: counts of the long phases as nodes finish them (adapters draw a live line)
    on_progress: Progress | None = None
    #: called at named points of a pass ("replacement recorded": the new member is in
    #: SQLite, no node changed yet); tests use it to kill a controller exactly there
    checkpoint: Callable[[str], None] | None = None
    software_method: str = "push"  # push (shoal push, P2P) | copy (SFTP per node)
    plain_data: bool = False  # software pushes without TLS (--plain-data)


@dataclass
class UpReport:
    """What one ``up`` did: time per phase, members, replacements, failures."""

    app: str
    phases: dict[str, float] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    replaced: list[tuple[str, str, str]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    #: members dropped by a smaller count or a narrower select: (component, node, slot)
    stopped: list[tuple[str, str, int]] = field(default_factory=list)
    #: components left short of their count, each with why (acquire.shortfall)
    shortfalls: list[str] = field(default_factory=list)
    barriers: dict[str, float | None] = field(default_factory=dict)
    #: barrier -> node -> arrival time (controller clock), for arrivals before the release
    arrivals: dict[str, dict[str, float]] = field(default_factory=dict)
    steps_run: int = 0
    steps_cached: int = 0
    wall: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The JSON form (``app up --json``, ``POST /api/v1/apps``)."""
        return {
            "app": self.app,
            "wall": round(self.wall, 3),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "members": self.members,
            "replaced": [list(r) for r in self.replaced],
            "stopped": [list(r) for r in self.stopped],
            "shortfalls": self.shortfalls,
            "failed": self.failed,
            "barriers": self.barriers,
            "steps_run": self.steps_run,
            "steps_cached": self.steps_cached,
        }


class UpPass:
    """What the pieces of one ``up`` pass share (see the module docstring)."""

    def __init__(
        self,
        spec: AppSpec,
        state: State,
        alloc: Allocation,
        options: UpOptions,
        slots: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.spec = spec
        self.state = state
        self.opts = options
        self.members: dict[str, list[Node]] = {c: list(ns) for c, ns in alloc.members.items()}
        self.spares: dict[str, list[Node]] = {c: list(ns) for c, ns in alloc.spares.items()}
        self.slots: dict[tuple[str, str], int] = slots or {
            (c, n.name): i for c, ns in self.members.items() for i, n in enumerate(ns)
        }
        self.homes: dict[str, str] = {}
        self.report = UpReport(spec.name)
        self._transport: Transport | None = options.transport

    def say(self, text: str) -> None:
        if self.opts.say is not None:
            self.opts.say(text)

    def count(self, phase: str, total: int) -> PhaseCount:
        """A counter of ``phase`` over ``total`` nodes, told to ``on_progress`` (0 now)."""
        return PhaseCount(self.opts.on_progress, phase, total)

    def checkpoint(self, point: str) -> None:
        if self.opts.checkpoint is not None:
            self.opts.checkpoint(point)

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            from shoal.transport.factory import make_transport

            self._transport = make_transport(self.opts.agent)
        return self._transport

    def components_of(self, node: str) -> list[Component]:
        """The components ``node`` is an active member of."""
        return [
            self.spec.components[c]
            for c, ns in self.members.items()
            if any(n.name == node for n in ns)
        ]

    def active(self, component: str) -> list[str]:
        """Names of the active members of ``component``."""
        return [n.name for n in self.members.get(component, [])]

    def values(self, comp: Component, node: Node) -> dict[str, str]:
        """The ``${...}`` values of ``node`` as a member of ``comp``, as of now."""
        return naming.values(
            self.spec,
            comp,
            node,
            home=self.homes.get(node.name, ""),
            slot=self.slots.get((comp.name, node.name), 0),
            members=self.members,
        )

    def app_dir(self, node: str) -> str:
        """The application's directory on ``node`` (its agent home must be known)."""
        return naming.app_dir(self.homes[node], self.spec.name)

    def phase(self, name: str, t0: float) -> None:
        """Add the time since ``t0`` to phase ``name`` of the report."""
        self.report.phases[name] = self.report.phases.get(name, 0.0) + time.monotonic() - t0


class PhaseCount:
    """How many of a phase's nodes are done, told to ``UpOptions.on_progress`` on change."""

    def __init__(self, tell: Progress | None, phase: str, total: int) -> None:
        self.tell = tell
        self.phase = phase
        self.total = total
        self.done = 0
        self._told()

    def tick(self, _outcome: object = None) -> None:
        """One more done (usable as a fan-out's ``on_result``)."""
        self.set(self.done + 1)

    def set(self, done: int) -> None:
        if done != self.done:
            self.done = done
            self._told()

    def grow(self) -> None:
        """One more to do (a spare replacing a member)."""
        self.total += 1
        self._told()

    def _told(self) -> None:
        if self.tell is not None:
            self.tell(self.phase, self.done, self.total)


def last_line(text: str) -> str:
    """The last non-empty line of a step's output tail (at most 200 characters)."""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][-200:] if lines else "(no output)"
