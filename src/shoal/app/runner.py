"""Configure and start an application on its nodes, applying failure policies.

Theory of operation. :class:`Runner` gets an allocation (members and spares
per component, see :mod:`.acquire`) and

1. **configures** the members in batches (:mod:`.configure`: agents,
   software, install steps);
2. **starts** every member's process block (:mod:`.blocks`): one coroutine
   per (component, node), barriers on one :class:`.barrier.BarrierBoard`,
   ``after:`` predecessors on one :class:`.predecessors.Predecessors`.

Every step is idempotent, so the start phase *is* convergence: re-running it
on a running application changes nothing, and on a half-started one
finishes what is missing. A node that fails (its configuration, a step
exiting non-zero after its retries, unreachable, late at a barrier) gets
what :func:`.policy.decide` says for its component's policy: left out (its
slot held), replaced — the next spare that still qualifies is configured,
given the failed node's slot and runs its block (released barriers and
satisfied predecessors let it through) — or the run stops with
:class:`~shoal.errors.AppAborted`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from shoal.errors import AppAborted, ShoalError
from shoal.nodes.model import Node
from shoal.state import State

from . import store
from .acquire import Allocation, shortfall
from .appspec import AppSpec, Component
from .barrier import BarrierBoard, BarrierState
from .blocks import BlockRunner
from .configure import Configurer
from .policy import Action, FailureKind, decide
from .predecessors import Predecessors
from .runtime import PhaseCount, UpOptions, UpPass, UpReport


class Runner:
    """One configure + start pass over an application (see the module docstring)."""

    def __init__(
        self,
        spec: AppSpec,
        state: State,
        alloc: Allocation,
        options: UpOptions,
        slots: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.up = UpPass(spec, state, alloc, options, slots)
        self.alloc = alloc
        self.board = BarrierBoard(
            spec.barriers.values(), on_release=self._released, on_timeout=self._timed_out
        )
        for name, rec in store.barriers(state, spec.name).items():
            if rec.released is not None and name in self.board.states:
                self.board.mark_released(name, rec.released)
        self.after = Predecessors(spec, self.up.active)
        self.configurer = Configurer(self.up)
        self.blocks = BlockRunner(self.up, self.board, self.after)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.abort: AppAborted | None = None
        self.started: PhaseCount | None = None  # member blocks done, once start begins

    @property
    def report(self) -> UpReport:
        return self.up.report

    @property
    def members(self) -> dict[str, list[Node]]:
        return self.up.members

    async def configure(self, nodes: Sequence[Node]) -> dict[str, str]:
        """Agents, software, install steps on ``nodes``; failures by node name."""
        return await self.configurer.configure(nodes)

    # -- start -------------------------------------------------------------------

    async def start(self, failures: dict[str, str] | None = None) -> None:
        """Run every member's block; returns when all are done, failed or replaced.

        ``failures`` are nodes whose configuration failed: their component's
        policy applies to them first.
        """
        failures = failures or {}
        self.started = self.up.count("start", sum(map(len, self.up.members.values())))
        for comp in self.up.spec.components.values():
            self._join_barriers(comp, self.up.members[comp.name])
        for cname, nodes in list(self.up.members.items()):
            comp = self.up.spec.components[cname]
            for n in list(nodes):
                if n.name in failures:
                    self.tasks[f"{cname}/{n.name}!"] = asyncio.ensure_future(
                        self._unconfigured(comp, n, failures[n.name])
                    )
                else:
                    self._spawn(comp, n)
        while self.tasks:
            await asyncio.wait(list(self.tasks.values()))
            for key in [k for k, t in self.tasks.items() if t.done()]:
                del self.tasks[key]
            if self.abort is not None:
                break
        if self.abort is not None:
            for task in self.tasks.values():
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            raise self.abort

    def _join_barriers(self, comp: Component, nodes: Sequence[Node]) -> None:
        for step in comp.steps:
            if step.kind == "barrier":
                for n in nodes:
                    self.board.join(step.command, n.name)

    def _spawn(self, comp: Component, node: Node) -> None:
        key = f"{comp.name}/{node.name}"
        self.tasks[key] = asyncio.ensure_future(self._guarded(comp, node))

    async def _guarded(self, comp: Component, node: Node) -> None:
        try:
            await self.blocks.run(comp, node)
        except asyncio.CancelledError:
            raise
        except ShoalError as exc:
            await self.node_failed(comp, node, _reason(exc, node.name), FailureKind.NODE_ERROR)
        except OSError as exc:
            await self.node_failed(comp, node, f"I/O error: {exc}", FailureKind.NODE_ERROR)
        finally:
            self._block_done()

    async def _unconfigured(self, comp: Component, node: Node, reason: str) -> None:
        """A member whose configuration failed: its block ends before it starts."""
        try:
            await self.node_failed(comp, node, reason, FailureKind.CONFIGURE)
        finally:
            self._block_done()

    def _block_done(self) -> None:
        if self.started is not None:
            self.started.tick()

    # -- barriers ------------------------------------------------------------------

    def _released(self, barrier: BarrierState) -> None:
        self.report.barriers[barrier.spec.name] = barrier.released_at
        self.report.arrivals[barrier.spec.name] = dict(barrier.arrived)
        store.save_barrier(
            self.up.state,
            self.up.spec.name,
            barrier.spec.name,
            len(barrier.arrived),
            barrier.needed,
            barrier.released_at,
        )
        self.up.say(
            f"barrier {barrier.spec.name} released: {len(barrier.arrived)}/"
            f"{len(barrier.participants)} arrived (needed {barrier.needed})"
        )

    def _timed_out(self, barrier: BarrierState, late: list[str]) -> None:
        for name in late:
            for comp in self.up.components_of(name):
                if decide(comp.on_failure, FailureKind.BARRIER_LATE) is Action.CONTINUE:
                    continue  # it passes the released barrier when it arrives
                node = next(n for n in self.up.members[comp.name] if n.name == name)
                task = self.tasks.get(f"{comp.name}/{name}")
                if task is not None:
                    task.cancel()
                reason = f"late at barrier {barrier.spec.name} (timeout)"
                self.tasks[f"{comp.name}/{name}!"] = asyncio.ensure_future(
                    self.node_failed(comp, node, reason, FailureKind.BARRIER_LATE)
                )

    # -- failures --------------------------------------------------------------------

    def _leave(self, comp: Component, node: Node) -> None:
        members = self.up.members
        members[comp.name] = [n for n in members[comp.name] if n.name != node.name]
        self.board.withdraw(node.name)
        self.after.recheck()

    async def node_failed(
        self, comp: Component, node: Node, reason: str, kind: FailureKind
    ) -> None:
        """Apply ``comp``'s failure policy to ``node``, which met ``kind``."""
        self.up.say(f"{node.name} ({comp.name}) failed: {reason} → {comp.on_failure}")
        action = decide(comp.on_failure, kind)
        app = self.up.spec.name
        if action is Action.ABORT:
            self.abort = AppAborted(
                f"app {app}: {node.name} ({comp.name}) failed: {reason}; aborted"
            )
            return
        slot = self.up.slots.get((comp.name, node.name), 0)
        self._leave(comp, node)
        self.report.failed[node.name] = reason
        if action is not Action.REPLACE:  # left out, its slot held
            store.set_member(self.up.state, app, comp.name, node.name, slot, "failed", reason)
            return
        store.set_member(self.up.state, app, comp.name, node.name, slot, "replaced", reason)
        await self._replace(comp, node, slot)

    async def _replace(self, comp: Component, node: Node, slot: int) -> None:
        """Give ``node``'s slot to the next spare that configures; none left: run short."""
        up, app = self.up, self.up.spec.name
        while True:
            spare = self.next_spare(comp)
            if spare is None:
                running = len(up.members[comp.name])
                wanted = running + 1 if comp.count is None else comp.count
                why = shortfall(app, comp, running, wanted, self.alloc, self.report.failed)
                self.report.shortfalls.append(why)
                up.say(why)
                return
            up.members[comp.name].insert(min(slot, len(up.members[comp.name])), spare)
            up.slots[(comp.name, spare.name)] = slot
            store.set_member(up.state, app, comp.name, spare.name, slot, "active")
            self.report.replaced.append((comp.name, node.name, spare.name))
            up.say(f"{comp.name}: {spare.name} replaces {node.name} (slot {slot})")
            up.checkpoint("replacement recorded")
            failures = await self.configure([spare])
            if spare.name not in failures:
                self._join_barriers(comp, [spare])
                self._spawn(comp, spare)
                if self.started is not None:  # one more block to count
                    self.started.grow()
                return
            self._leave(comp, spare)
            why = failures[spare.name]
            store.set_member(up.state, app, comp.name, spare.name, slot, "replaced", why)
            node = spare

    def next_spare(self, comp: Component) -> Node | None:
        """The next spare not used by any component and not in the failed set."""
        from shoal.nodes.health import failed_names

        failed = failed_names(self.up.state) | set(self.report.failed)
        busy = {n.name for ns in self.up.members.values() for n in ns}
        spares = self.up.spares
        while spares.get(comp.name):
            candidate = spares[comp.name].pop(0)
            if candidate.name not in failed and candidate.name not in busy:
                return candidate
        return None


def _reason(exc: ShoalError, node: str) -> str:
    text = str(exc)
    return text[len(node) + 2 :] if text.startswith(f"{node}: ") else text
