"""Configure and start an application on its nodes; failure policies.

Theory of operation. :class:`Runner` gets an allocation (members and spares
per component, see :mod:`.acquire`) and

1. **configures** the members in batches: agents installed (skipped where
   this build runs), software pushed (skipped where that version is),
   install steps run by the agent (cached there per version);
2. **starts** every member's process block: one coroutine per (component,
   node) holding one SSH connection and one stream to the node's agent. A
   ``run`` step is ``step.run`` on the agent (the command outlives the
   controller; asking again attaches to it or answers its recorded success),
   a ``service`` is ``proc.start`` (the supervisor's start is idempotent), a
   ``barrier`` step waits on :class:`.barrier.BarrierBoard`. ``after:``
   predecessors wait until the named steps are done on every active member of
   the other component.

Every step is idempotent, so the start phase *is* convergence: re-running it
on a running application changes nothing, and on a half-started one
finishes what is missing. A node that fails (unreachable, a step exiting
non-zero after its retries, a barrier timeout) gets its component's policy:
``restart`` retries the step, then leaves the node out like ``ignore``;
``replace`` takes the next spare that still qualifies, configures it, gives it
the failed node's slot and runs its block (released barriers and satisfied
predecessors let it through); ``abort`` stops the run with
:class:`AppAborted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal.agent import protocol
from shoal.agent.build import AgentBuild, build
from shoal.agentlink import fleet as agents
from shoal.agentlink.client import AgentClient, StreamClient, cached_home
from shoal.errors import ShoalError
from shoal.nodes.model import Node
from shoal.state import State
from shoal.transport.base import Connection, Transport

from . import store
from .acquire import Allocation
from .appspec import VAR_RE, AppSpec, Component, Step
from .barrier import BarrierBoard, BarrierState
from .software import Tree, push_software, tree_digest

Say = Callable[[str], None]


class AppAborted(ShoalError):
    """A component with policy ``abort`` lost a node: the application was stopped."""

    kind = "app"


class NodeFailure(ShoalError):
    kind = "app"


@dataclass
class UpOptions:
    """How ``up`` talks to nodes and how long it waits."""

    agent: agents.AgentOptions = field(default_factory=agents.AgentOptions)
    step_timeout: float = 600.0
    connect_timeout: float = 15.0
    transport: Transport | None = None
    say: Say | None = None  # progress lines (adapters print them)
    software_method: str = "push"  # push (shoal push, P2P) | copy (SFTP per node)


@dataclass
class UpReport:
    """What one ``up`` did: time per phase, members, replacements, failures."""

    app: str
    phases: dict[str, float] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    replaced: list[tuple[str, str, str]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    barriers: dict[str, float | None] = field(default_factory=dict)
    #: barrier -> node -> arrival time (controller clock), for arrivals before the release
    arrivals: dict[str, dict[str, float]] = field(default_factory=dict)
    steps_run: int = 0
    steps_cached: int = 0
    wall: float = 0.0


def app_dir(home: str, app: str) -> str:
    return f"{home.rstrip('/')}/apps/{app}"


def step_id(app: str, comp: str, step: str) -> str:
    return f"{app}.{comp}.{step}"


def program_name(app: str, comp: str, step: str) -> str:
    return f"{app}.{comp}.{step}"


@dataclass
class Session:
    node: Node
    conn: Connection
    client: AgentClient


class Prepared:
    """One agent request encoded ahead of time, to be written without awaiting.

    Only for stream clients (the ``ctl`` fallback runs one SSH command per
    request): :meth:`make` returns None for others.
    """

    def __init__(self, client: StreamClient, request_id: int, line: bytes, op: str) -> None:
        self.client = client
        self.request_id = request_id
        self.line = line
        self.op = op
        self.sent = False

    @classmethod
    def make(cls, client: AgentClient, op: str, **args: Any) -> Prepared | None:
        if not isinstance(client, StreamClient):
            return None
        client._next += 1
        line = protocol.encode(protocol.request(op, client._next, **args))
        return cls(client, client._next, line, op)

    def send(self) -> None:
        self.client.writer.write(self.line)
        self.sent = True

    async def result(self, timeout: float) -> Any:
        try:
            line = await asyncio.wait_for(self.client.reader.readline(), timeout)
            return protocol.check_reply(protocol.decode(line), self.request_id)
        except (TimeoutError, OSError, EOFError, protocol.ProtocolError) as exc:
            raise NodeFailure(f"{self.client.node}: {self.op} failed: {exc}") from None


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
        self.board = BarrierBoard(
            spec.barriers.values(), on_release=self._released, on_timeout=self._timed_out
        )
        for name, rec in store.barriers(state, spec.name).items():
            if rec.released is not None and name in self.board.states:
                self.board.mark_released(name, rec.released)
        self.done: dict[tuple[str, str], set[str]] = {}
        self.done_events: dict[tuple[str, str], asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.abort: AppAborted | None = None
        self._agent: AgentBuild | None = None
        self._trees: dict[str, Tree] = {}
        self._transport: Transport | None = options.transport

    # -- helpers -------------------------------------------------------------

    def say(self, text: str) -> None:
        if self.opts.say is not None:
            self.opts.say(text)

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            from shoal.transport.factory import make_transport

            self._transport = make_transport(self.opts.agent)
        return self._transport

    def components_of(self, node: str) -> list[Component]:
        return [
            self.spec.components[c]
            for c, ns in self.members.items()
            if any(n.name == node for n in ns)
        ]

    def tree(self, name: str) -> Tree:
        if name not in self._trees:
            sw = self.spec.software[name]
            self._trees[name] = Tree(name, sw.source, tree_digest(sw.source))
        return self._trees[name]

    def variables(self, comp: Component, node: Node) -> dict[str, str]:
        home = self.homes.get(node.name, "")
        adir = app_dir(home, self.spec.name)
        values = {
            "node": node.name,
            "index": str(self.slots.get((comp.name, node.name), 0)),
            "component": comp.name,
            "app": self.spec.name,
            "dir": adir,
            "addr": node.address,
            "count": str(len(self.members.get(comp.name, []))),
        }
        for cname, nodes in self.members.items():
            addrs = [n.address for n in nodes]
            values[f"addrs.{cname}"] = ",".join(addrs)
            values[f"addr.{cname}"] = addrs[0] if addrs else ""
            values[f"nodes.{cname}"] = ",".join(n.name for n in nodes)
            values[f"count.{cname}"] = str(len(nodes))
        for sname in self.spec.software:
            values[f"sw.{sname}"] = f"{adir}/sw/{sname}"
        return values

    @staticmethod
    def expand(text: str, values: dict[str, str], *, shell: bool = True) -> str:
        """``text`` with its ``${...}`` replaced; in a command (``shell``) each value is
        one shell word, quoted when it needs it (``${dir}`` under a home with a space)."""

        def sub(m: re.Match[str]) -> str:
            key = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
            if key not in values:
                return m.group(0)
            value = values[key]
            return shlex.quote(value) if shell and value else value

        return VAR_RE.sub(sub, text)

    def environment(self, comp: Component, step: Step, node: Node) -> dict[str, str]:
        values = self.variables(comp, node)
        env = {
            "SHOAL_APP": self.spec.name,
            "SHOAL_COMPONENT": comp.name,
            "SHOAL_NODE": node.name,
            "SHOAL_INDEX": values["index"],
            "SHOAL_APP_DIR": values["dir"],
        }
        env.update({k: self.expand(v, values, shell=False) for k, v in comp.env.items()})
        env.update({k: self.expand(v, values, shell=False) for k, v in step.env.items()})
        return env

    # -- configure -------------------------------------------------------------

    async def configure(self, nodes: Sequence[Node]) -> dict[str, str]:
        """Agents, software, install steps on ``nodes``; failures by node name."""
        failures: dict[str, str] = {}
        if not nodes:
            return failures
        if self._agent is None:
            self._agent = build()
        t0 = time.monotonic()
        installed = await agents.install_async(
            nodes, self.opts.agent, transport=self.transport, state=self.state, agent=self._agent
        )
        for r in installed:
            if not r.ok:
                failures[r.node] = f"agent: {r.reason}"
            else:
                home = cached_home(self.state, r.node, self.opts.agent.home)
                if home:
                    self.homes[r.node] = home
        self._phase("agents", t0)
        t0 = time.monotonic()
        ready = [n for n in nodes if n.name not in failures]
        for sname in self.spec.software:
            users = [
                n
                for n in ready
                if any(sname in c.software for c in self.components_of(n.name))
                and n.name not in failures
            ]
            if not users:
                continue
            tree = self.tree(sname)
            dirs = {
                n.name: f"{app_dir(self.homes[n.name], self.spec.name)}/sw/{sname}" for n in users
            }
            errors = await push_software(
                users,
                tree,
                dirs,
                transport=self.transport,
                state=self.state,
                method=self.opts.software_method,
            )
            for node_name, why in errors.items():
                failures[node_name] = f"software {sname}: {why}"
        self._phase("software", t0)
        t0 = time.monotonic()
        ready = [n for n in ready if n.name not in failures]
        installs = await agents.for_each(
            ready, self._install_op, self.opts.agent, transport=self.transport, state=self.state
        )
        for r in installs:
            if not r.ok:
                failures[r.node] = r.reason
        self._phase("install", t0)
        return failures

    async def _install_op(self, conn: Connection, node: Node, st: State) -> agents.AgentResult:
        client = await agents.connect_agent(conn, node, st, self.opts.agent)
        try:
            adir = app_dir(self.homes[node.name], self.spec.name)
            made = await client.call(
                "step.run",
                id=f"{self.spec.name}.mkdir",
                command=f"mkdir -p {shlex.quote(adir)}",
                timeout=30,
            )
            if made.get("exit") != 0:
                raise NodeFailure(
                    f"{node.name}: cannot create {adir}: {_last_line(made.get('tail', ''))}"
                )
            for sname in self.spec.software:
                if not any(sname in c.software for c in self.components_of(node.name)):
                    continue
                tree = self.tree(sname)
                for i, command in enumerate(self.spec.software[sname].install):
                    res = await client.call(
                        "step.run",
                        id=f"{self.spec.name}.sw.{sname}.{i}",
                        command=command,
                        cwd=f"{adir}/sw/{sname}",
                        env={"SHOAL_SW_VERSION": tree.digest, "SHOAL_APP_DIR": adir},
                        limit=self.opts.step_timeout,
                        timeout=self.opts.step_timeout + 30,
                    )
                    if res.get("exit") != 0:
                        raise NodeFailure(
                            f"{node.name}: install step of {sname} failed "
                            f"({res.get('note') or 'exit ' + str(res.get('exit'))}): "
                            f"{_last_line(res.get('tail', ''))}"
                        )
        finally:
            await client.close()
        return agents.AgentResult(node.name, action="configured")

    def _phase(self, name: str, t0: float) -> None:
        self.report.phases[name] = self.report.phases.get(name, 0.0) + time.monotonic() - t0

    # -- start -------------------------------------------------------------------

    async def start(self, failures: dict[str, str] | None = None) -> None:
        """Run every member's block; returns when all are done, failed or replaced.

        ``failures`` are nodes whose configuration failed: their component's
        policy applies to them first.
        """
        failures = failures or {}
        for comp in self.spec.components.values():
            for step in comp.steps:
                if step.kind == "barrier":
                    for n in self.members[comp.name]:
                        self.board.join(step.command, n.name)
        for cname, nodes in list(self.members.items()):
            comp = self.spec.components[cname]
            for n in list(nodes):
                if n.name in failures:
                    key = f"{cname}/{n.name}!"
                    self.tasks[key] = asyncio.ensure_future(
                        self.node_failed(comp, n, failures[n.name])
                    )
                else:
                    self._spawn(comp, n)
        while self.tasks:
            pending = list(self.tasks.values())
            await asyncio.wait(pending)
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

    def _spawn(self, comp: Component, node: Node) -> None:
        key = f"{comp.name}/{node.name}"
        self.tasks[key] = asyncio.ensure_future(self._guarded(comp, node))

    async def _guarded(self, comp: Component, node: Node) -> None:
        try:
            await self.block(comp, node)
        except asyncio.CancelledError:
            raise
        except ShoalError as exc:
            await self.node_failed(comp, node, _reason(exc, node.name))
        except OSError as exc:
            await self.node_failed(comp, node, f"I/O error: {exc}")

    async def open_session(self, node: Node) -> Session:
        conn = await self.transport.connect(node, timeout=self.opts.connect_timeout)
        try:
            client = await agents.connect_agent(conn, node, self.state, self.opts.agent)
        except BaseException:
            await conn.close()
            raise
        self.homes.setdefault(node.name, client.home)
        return Session(node, conn, client)

    async def block(self, comp: Component, node: Node) -> None:
        """One node's process block, in order."""
        session = await self.open_session(node)
        staged: str | None = None
        try:
            for i, step in enumerate(comp.steps):
                await self.wait_after(comp, step)
                if step.kind == "barrier":
                    following = comp.steps[i + 1] if i + 1 < len(comp.steps) else None
                    release: Prepared | None = None
                    if following is not None and following.kind == "run":
                        staged = await self.stage(session, comp, following)
                        if staged and not following.after:
                            sid = step_id(self.spec.name, comp.name, following.name)
                            release = Prepared.make(session.client, "step.open", id=sid)
                    hook = release.send if release is not None else None
                    await self.wait_barrier(session, step.command, hook)
                    if release is not None and release.sent:
                        await release.result(30)
                        staged = None
                elif step.kind == "run":
                    if staged == step.name:
                        sid = step_id(self.spec.name, comp.name, step.name)
                        await session.client.call("step.open", id=sid, timeout=30)
                    staged = None
                    await self.run_step(session, comp, step)
                else:
                    await self.start_service(session, comp, step)
                self.mark_done(comp, step, node.name)
        finally:
            await session.client.close()
            await session.conn.close()

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
        closed = asyncio.ensure_future(_closed(client))
        try:
            await asyncio.wait({arrival, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not closed.done():
                closed.cancel()
        if arrival.done():
            arrival.result()
            return
        arrival.cancel()
        raise NodeFailure(f"{session.node.name}: connection lost while waiting at barrier {name}")

    async def run_step(self, session: Session, comp: Component, step: Step) -> None:
        node = session.node
        values = self.variables(comp, node)
        timeout = step.timeout or self.opts.step_timeout
        attempts = 1 + (comp.retries if comp.on_failure == "restart" else 0)
        for attempt in range(1, attempts + 1):
            res = await self._step_call(session, comp, step, values, timeout)
            if res.get("cached"):
                self.report.steps_cached += 1
            else:
                self.report.steps_run += 1
            if res.get("exit") == 0:
                return
            why = res.get("note") or f"exit {res.get('exit')}"
            if attempt < attempts:
                self.say(f"{node.name}: {comp.name}.{step.name} failed ({why}); retry {attempt}")
                continue
            raise NodeFailure(
                f"{node.name}: step {comp.name}.{step.name} failed ({why}): "
                f"{_last_line(res.get('tail', ''))}"
            )

    def _step_args(self, comp: Component, step: Step, node: Node) -> dict[str, Any]:
        values = self.variables(comp, node)
        return {
            "id": step_id(self.spec.name, comp.name, step.name),
            "command": self.expand(step.command, values),
            "cwd": values["dir"],
            "env": self.environment(comp, step, node),
            "limit": step.timeout or self.opts.step_timeout,
        }

    async def _step_call(
        self, session: Session, comp: Component, step: Step, values: dict[str, str], timeout: float
    ) -> dict[str, Any]:
        args = self._step_args(comp, step, session.node)
        result: dict[str, Any] = await session.client.call("step.run", timeout=timeout + 30, **args)
        return result

    async def stage(self, session: Session, comp: Component, step: Step) -> str | None:
        """Spawn the step after a barrier held on the node (``gate``), so that the release
        is one small message per node; the step's name when it is held."""
        args = self._step_args(comp, step, session.node)
        reply = await session.client.call("step.run", timeout=60, gate=True, **args)
        return step.name if reply.get("gated") else None

    async def start_service(self, session: Session, comp: Component, step: Step) -> None:
        node = session.node
        values = self.variables(comp, node)
        spec = agents.proc_spec(
            program_name(self.spec.name, comp.name, step.name),
            ["/bin/sh", "-c", self.expand(step.command, values)],
            cwd=values["dir"],
            env=self.environment(comp, step, node),
            restart=step.restart,
            health=self.expand(step.health, values) if step.health else None,
            health_interval=step.health_interval if step.health else None,
        )
        status = await session.client.call("proc.start", timeout=60, spec=spec)
        if status.get("state") not in ("RUNNING", "STARTING", "BACKOFF", "EXITED"):
            raise NodeFailure(
                f"{node.name}: service {comp.name}.{step.name}: {status.get('state')}"
            )
        if step.ready:
            limit = step.timeout or 60.0
            ready = self.expand(step.ready, values)
            command = (
                f"i=0; until ( {ready} ) >/dev/null 2>&1; do i=$((i+1)); "
                f"[ $i -ge {int(limit * 10)} ] && exit 1; sleep 0.1; done"
            )
            res = await session.client.call(
                "step.run",
                timeout=limit + 30,
                id=step_id(self.spec.name, comp.name, step.name) + ".ready",
                command=command,
                cwd=values["dir"],
                limit=limit + 5,
            )
            if res.get("exit") != 0:
                raise NodeFailure(
                    f"{node.name}: service {comp.name}.{step.name} not ready within {limit:g}s"
                )

    # -- predecessors --------------------------------------------------------------

    def _after_keys(self, comp: Component, step: Step) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        for ref in step.after:
            target, _, sname = ref.partition(".")
            if target not in self.spec.components:
                continue  # a step of this component: list order already honours it
            tcomp = self.spec.components[target]
            names = [sname] if sname else [s.name for s in tcomp.steps]
            keys.extend((target, n) for n in names)
        return keys

    def _event(self, key: tuple[str, str]) -> asyncio.Event:
        if key not in self.done_events:
            self.done_events[key] = asyncio.Event()
            self._check_done(key)
        return self.done_events[key]

    def _check_done(self, key: tuple[str, str]) -> None:
        event = self.done_events.get(key)
        if event is None or event.is_set():
            return
        active = {n.name for n in self.members.get(key[0], [])}
        if active <= self.done.get(key, set()):
            event.set()

    async def wait_after(self, comp: Component, step: Step) -> None:
        for key in self._after_keys(comp, step):
            await self._event(key).wait()

    def mark_done(self, comp: Component, step: Step, node: str) -> None:
        key = (comp.name, step.name)
        self.done.setdefault(key, set()).add(node)
        self._check_done(key)

    # -- failures --------------------------------------------------------------------

    def _released(self, barrier: BarrierState) -> None:
        self.report.barriers[barrier.spec.name] = barrier.released_at
        self.report.arrivals[barrier.spec.name] = dict(barrier.arrived)
        store.save_barrier(
            self.state,
            self.spec.name,
            barrier.spec.name,
            len(barrier.arrived),
            barrier.needed,
            barrier.released_at,
        )
        self.say(
            f"barrier {barrier.spec.name} released: {len(barrier.arrived)}/"
            f"{len(barrier.participants)} arrived (needed {barrier.needed})"
        )

    def _timed_out(self, barrier: BarrierState, late: list[str]) -> None:
        for name in late:
            for comp in self.components_of(name):
                node = next(n for n in self.members[comp.name] if n.name == name)
                if comp.on_failure in ("replace", "abort"):
                    task = self.tasks.get(f"{comp.name}/{name}")
                    if task is not None:
                        task.cancel()
                    reason = f"late at barrier {barrier.spec.name} (timeout)"
                    self.tasks[f"{comp.name}/{name}!"] = asyncio.ensure_future(
                        self.node_failed(comp, node, reason)
                    )

    def _leave(self, comp: Component, node: Node) -> None:
        self.members[comp.name] = [n for n in self.members[comp.name] if n.name != node.name]
        self.board.withdraw(node.name)
        for key in list(self.done_events):
            self._check_done(key)

    async def node_failed(self, comp: Component, node: Node, reason: str) -> None:
        """Apply ``comp``'s failure policy to ``node``."""
        self.say(f"{node.name} ({comp.name}) failed: {reason} → {comp.on_failure}")
        policy = comp.on_failure
        if policy == "abort":
            self.abort = AppAborted(
                f"app {self.spec.name}: {node.name} ({comp.name}) failed: {reason}; aborted"
            )
            return
        slot = self.slots.get((comp.name, node.name), 0)
        self._leave(comp, node)
        if policy in ("ignore", "restart"):
            store.set_member(
                self.state, self.spec.name, comp.name, node.name, slot, "failed", reason
            )
            self.report.failed[node.name] = reason
            return
        store.set_member(self.state, self.spec.name, comp.name, node.name, slot, "replaced", reason)
        self.report.failed[node.name] = reason
        while True:
            spare = self.next_spare(comp)
            if spare is None:
                self.say(f"component {comp.name}: no spare left for {node.name}; running short")
                return
            self.members[comp.name].insert(min(slot, len(self.members[comp.name])), spare)
            self.slots[(comp.name, spare.name)] = slot
            store.set_member(self.state, self.spec.name, comp.name, spare.name, slot, "active")
            self.report.replaced.append((comp.name, node.name, spare.name))
            self.say(f"{comp.name}: {spare.name} replaces {node.name} (slot {slot})")
            failures = await self.configure([spare])
            if spare.name not in failures:
                for step in comp.steps:
                    if step.kind == "barrier":
                        self.board.join(step.command, spare.name)
                self._spawn(comp, spare)
                return
            self._leave(comp, spare)
            store.set_member(
                self.state,
                self.spec.name,
                comp.name,
                spare.name,
                slot,
                "replaced",
                failures[spare.name],
            )
            node = spare

    def next_spare(self, comp: Component) -> Node | None:
        """The next spare not used by any component and not in the failed set."""
        from shoal.nodes.health import failed_names

        failed = failed_names(self.state) | set(self.report.failed)
        busy = {n.name for ns in self.members.values() for n in ns}
        while self.spares.get(comp.name):
            candidate = self.spares[comp.name].pop(0)
            if candidate.name not in failed and candidate.name not in busy:
                return candidate
        return None


async def _closed(client: StreamClient) -> None:
    """Returns when the stream to the agent has ended (peeks; consumes nothing)."""
    reader: Any = client.reader
    while True:
        try:
            await reader.readuntil(b"\n\x00never\x00")  # a separator that never comes
        except asyncio.IncompleteReadError:
            return  # end of stream
        except (OSError, EOFError):
            return


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1][-200:] if lines else "(no output)"


def _reason(exc: ShoalError, node: str) -> str:
    text = str(exc)
    return text[len(node) + 2 :] if text.startswith(f"{node}: ") else text
