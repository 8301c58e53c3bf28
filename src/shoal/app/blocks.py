"""A member's process block: its steps, in order, over one stream to its agent.

Theory of operation. :meth:`BlockRunner.run` holds one SSH connection and
one agent stream per (component, node) for the whole block. Before each step
it waits for the step's ``after:`` predecessors (:mod:`.predecessors`). A
``run`` step is ``step.run`` on the agent (the command outlives the
controller; asking again attaches to it or answers its recorded success); one
that exits non-zero is tried again while the policy says so
(:func:`.policy.decide`, kind ``STEP_EXIT``). A ``service`` is ``proc.start``
(the supervisor's start is idempotent), then its ``ready`` check. A
``barrier`` step arrives at :class:`.barrier.BarrierBoard` and waits; when a
``run`` step follows it, that step is first spawned held on the node
(``gate``) and its release (``step.open``) encoded ahead
(:meth:`StreamClient.prepare <shoal.agentlink.agentclient.StreamClient.prepare>`),
so the barrier's release writes one small message per node in one loop
iteration. While waiting, the stream is watched: a connection that drops
fails the node instead of holding the barrier forever.

Failures are raised (:class:`~shoal.errors.MemberFailed` and the agent
client's errors, each message starting with the node's name); the runner
applies the component's policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.agentlink import fleet as agents
from shoal.agentlink.agentclient import AgentClient, PreparedRequest, StreamClient
from shoal.errors import MemberFailed
from shoal.nodes.model import Node
from shoal.transport.base import Connection

from .appspec import Component, Step
from .barrier import BarrierBoard
from .naming import environment, expand, step_id
from .pkgscripts import PackageScripts
from .policy import Action, FailureKind, decide
from .predecessors import Predecessors
from .runtime import UpPass, last_line


@dataclass
class Session:
    """The connection and agent stream a block holds."""

    node: Node
    conn: Connection
    client: AgentClient


class BlockRunner:
    """Runs process blocks for one pass (see the module docstring)."""

    def __init__(self, up: UpPass, board: BarrierBoard, after: Predecessors) -> None:
        self.up = up
        self.board = board
        self.after = after
        self.scripts = PackageScripts(up.spec, up.state)

    async def open_session(self, node: Node) -> Session:
        conn = await self.up.transport.connect(node, timeout=self.up.opts.connect_timeout)
        try:
            client = await agents.connect_agent(conn, node, self.up.state, self.up.opts.agent)
        except BaseException:
            await conn.close()
            raise
        self.up.homes.setdefault(node.name, client.home)
        return Session(node, conn, client)

    async def run(self, comp: Component, node: Node) -> None:
        """``node``'s process block of ``comp``, in order."""
        session = await self.open_session(node)
        staged: str | None = None
        try:
            for i, step in enumerate(comp.steps):
                await self.after.wait(step)
                if step.kind == "barrier":
                    following = comp.steps[i + 1] if i + 1 < len(comp.steps) else None
                    staged = await self.pass_barrier(session, comp, step, following)
                elif step.kind == "run":
                    if staged == step.name:
                        sid = step_id(self.up.spec.name, comp.name, step.name)
                        await session.client.call("step.open", id=sid, timeout=30)
                    staged = None
                    await self.run_step(session, comp, step)
                else:
                    await self.start_service(session, comp, step)
                self.after.mark_done(comp.name, step.name, node.name)
        finally:
            await session.client.close()
            await session.conn.close()

    async def pass_barrier(
        self, session: Session, comp: Component, step: Step, following: Step | None
    ) -> str | None:
        """Wait at barrier ``step``; the name of the following run step when it is held
        on the node still (staged, and not released with the barrier)."""
        staged: str | None = None
        release: PreparedRequest | None = None
        if following is not None and following.kind == "run":
            staged = await self.stage(session, comp, following)
            client = session.client
            if staged and not following.after and isinstance(client, StreamClient):
                sid = step_id(self.up.spec.name, comp.name, following.name)
                release = client.prepare("step.open", id=sid)
        hook = release.send if release is not None else None
        await self.wait_barrier(session, step.command, hook)
        if release is not None and release.sent:
            await release.result(30)
            staged = None
        return staged

    async def wait_barrier(
        self, session: Session, name: str, hook: Callable[[], None] | None
    ) -> None:
        """Arrive at barrier ``name`` and wait, watching the node's stream meanwhile: a
        connection that drops (SSH keepalive) fails the node instead of holding the
        barrier forever. Nothing is read from the stream: a line that arrives is left
        in its buffer (the reply to the release written by ``hook``)."""
        arrival = asyncio.ensure_future(self.board.arrive(name, session.node.name, hook))
        client = session.client
        if not isinstance(client, StreamClient):
            await arrival
            return
        closed = asyncio.ensure_future(client.closed())
        try:
            await asyncio.wait({arrival, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not closed.done():
                closed.cancel()
        if arrival.done():
            arrival.result()
            return
        arrival.cancel()
        raise MemberFailed(f"{session.node.name}: connection lost while waiting at barrier {name}")

    def _step_args(self, comp: Component, step: Step, node: Node) -> dict[str, Any]:
        values = self.up.values(comp, node)
        return {
            "id": step_id(self.up.spec.name, comp.name, step.name),
            "command": expand(step.command, values),
            "cwd": values["dir"],
            "env": environment(self.up.spec, comp, step, node, values),
            "limit": step.timeout or self.up.opts.step_timeout,
        }

    async def run_step(self, session: Session, comp: Component, step: Step) -> None:
        node = session.node
        timeout = step.timeout or self.up.opts.step_timeout
        retries_left = comp.retries
        attempt = 0
        while True:
            attempt += 1
            args = self._step_args(comp, step, node)
            res = await session.client.call("step.run", timeout=timeout + 30, **args)
            if res.get("cached"):
                self.up.report.steps_cached += 1
            else:
                self.up.report.steps_run += 1
            if res.get("exit") == 0:
                return
            why = res.get("note") or f"exit {res.get('exit')}"
            action = decide(comp.on_failure, FailureKind.STEP_EXIT, retries_left=retries_left)
            if action is Action.RETRY:
                retries_left -= 1
                self.up.say(f"{node.name}: {comp.name}.{step.name} failed ({why}); retry {attempt}")
                continue
            raise MemberFailed(
                f"{node.name}: step {comp.name}.{step.name} failed ({why}): "
                f"{last_line(res.get('tail', ''))}"
            )

    async def stage(self, session: Session, comp: Component, step: Step) -> str | None:
        """Spawn the step after a barrier held on the node (``gate``), so that the release
        is one small message per node; the step's name when it is held."""
        args = self._step_args(comp, step, session.node)
        reply = await session.client.call("step.run", timeout=60, gate=True, **args)
        return step.name if reply.get("gated") else None

    async def start_service(self, session: Session, comp: Component, step: Step) -> None:
        node = session.node
        values = self.up.values(comp, node)
        command, health, stop = step.command, step.health, None
        if step.lifecycle:
            scripts = self.scripts.service_fields(step)
            command = scripts["command"] or command
            health, stop = scripts["health"], scripts["stop_command"]
        spec = agents.proc_spec(
            step_id(self.up.spec.name, comp.name, step.name),
            ["/bin/sh", "-c", expand(command, values)],
            cwd=values["dir"],
            env=environment(self.up.spec, comp, step, node, values),
            restart=step.restart,
            health=expand(health, values) if health else None,
            health_interval=step.health_interval if health else None,
            stop_command=expand(stop, values) if stop else None,
        )
        status = await session.client.call("proc.start", timeout=60, spec=spec)
        if status.get("state") not in ("RUNNING", "STARTING", "BACKOFF", "EXITED"):
            raise MemberFailed(
                f"{node.name}: service {comp.name}.{step.name}: {status.get('state')}"
            )
        if step.ready:
            await self._wait_ready(session, comp, step, values)

    async def _wait_ready(
        self, session: Session, comp: Component, step: Step, values: dict[str, str]
    ) -> None:
        limit = step.timeout or 60.0
        ready = expand(step.ready or "", values)
        command = (
            f"i=0; until ( {ready} ) >/dev/null 2>&1; do i=$((i+1)); "
            f"[ $i -ge {int(limit * 10)} ] && exit 1; sleep 0.1; done"
        )
        res = await session.client.call(
            "step.run",
            timeout=limit + 30,
            id=step_id(self.up.spec.name, comp.name, step.name) + ".ready",
            command=command,
            cwd=values["dir"],
            limit=limit + 5,
        )
        if res.get("exit") != 0:
            raise MemberFailed(
                f"{session.node.name}: service {comp.name}.{step.name} not ready within {limit:g}s"
            )
