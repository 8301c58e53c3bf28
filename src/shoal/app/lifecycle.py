"""The application lifecycle as a library: up, status, logs, monitor, down.

``up`` = acquire (nothing touched when it fails) → configure → start, with
the application, its members and released barriers recorded in SQLite before
nodes are changed; changed software on members whose services run is
staged beside the running tree and switched under them by a rollout
(:mod:`shoal.content.rollout`, the spec's ``rollout:`` block: stop → switch →
restart, health-gated, rolled back on failure), so services run the code on
disk; running it again converges (every step is idempotent, see
:mod:`.runtime`), which also makes it the resume after a killed controller
and the repair after a lost node: members that joined the failed set are
replaced (policy ``replace``) by spares that qualify, given the same slot
(``${index}``), or left out (``ignore``/``restart``), or the run stops
(``abort``). :func:`monitor_async` checks the members through their agents
and converges when something is missing; ``--detach`` leaves the running
application to the agents (supervision) and ``shoal sweep``.

Nothing here prints: progress goes to ``UpOptions.say``.
"""

from __future__ import annotations

import asyncio
import glob
import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shoal.agentlink import eventlog
from shoal.agentlink import fleet as agents
from shoal.agentlink.agentclient import AgentClient, cached_home, probe, start_agent
from shoal.content.rollout import rollout_async
from shoal.content.rolloutstate import RolloutStore
from shoal.errors import (
    AgentError,
    AgentNotRunning,
    AppAborted,
    LocalError,
    OperationError,
    ShoalError,
)
from shoal.fanout.results import NodeOutcome
from shoal.nodes import health
from shoal.nodes.health import failed_names
from shoal.nodes.inventory import load_nodes
from shoal.nodes.model import Node
from shoal.state import State, opened
from shoal.transport.base import Connection, Transport, shell_path
from shoal.transport.factory import make_transport

from . import store
from .acquire import acquire, gather_facts
from .appspec import AppSpec, build, load
from .carryover import carry_over, plan_slots
from .located import Located
from .naming import app_dir, step_id
from .policy import Action
from .pool import ConnectionPool
from .runner import Runner
from .runtime import UpOptions, UpReport
from .shrink import dropped, stop_members
from .software import software_tree


def spec_of(record: store.AppRecord) -> AppSpec:
    """The spec a running application was started from (as stored)."""
    return build(Located(record.document, record.file), Path(record.base))


# -- up ----------------------------------------------------------------------------


async def up_async(
    spec: AppSpec, options: UpOptions | None = None, *, state: State | None = None
) -> UpReport:
    """Acquire, configure and start ``spec`` (or converge it when it runs already)."""
    given = options or UpOptions()
    with opened(state) as st, store.app_lock(st, spec.name) as mine:
        if not mine:
            raise LocalError(
                f"app {spec.name}: another process is bringing it up or converging it"
                " (its service, or another shoal app up); try again when it is done"
            )
        began = time.monotonic()
        pool = ConnectionPool(given.transport or make_transport(given.agent))
        opts = replace(given, transport=pool)
        try:
            store.ensure(st)
            previous = store.members(st, spec.name)
            running = await _running_services(st, spec.name, previous, opts)
            carried = carry_over(spec, previous, failed_names(st))
            if carried.abort is not None:
                m = carried.abort
                store.set_status(st, spec.name, status="aborted")
                await stop_all(spec, st, opts.agent)
                raise AppAborted(
                    f"app {spec.name}: {m.node} ({m.component}) is in the failed set; aborted"
                )
            t0 = time.monotonic()
            known = await gather_facts(spec, st, pool)
            alloc = acquire(spec, st, keep=carried.keep, hold=carried.hold, facts=known)
            slots, replaced = plan_slots(alloc, previous)
            wanted = {c.name: c.count for c in spec.components.values()}
            drops = dropped(previous, alloc, {m.node for m, _ in carried.dead}, wanted)
            report_phases = {"acquire": time.monotonic() - t0}
            # decided: record it before touching any node
            store.save_app(
                st,
                spec.name,
                spec.file,
                str(Path(spec.file).resolve().parent),
                spec.document,
                "starting",
            )
            for m, action in carried.dead:
                new_state = "replaced" if action is Action.REPLACE else "failed"
                store.set_member(
                    st, spec.name, m.component, m.node, m.slot, new_state, "node failed"
                )
            for cname, nodes in alloc.members.items():
                for n in nodes:
                    store.set_member(st, spec.name, cname, n.name, slots[(cname, n.name)], "active")
            if replaced:
                opts.checkpoint and opts.checkpoint("replacement recorded")
            stopped = await stop_members(spec.name, drops, st, opts.agent, skip=failed_names(st))
            for d in stopped:
                m = d.member
                opts.say and opts.say(
                    f"{m.component}: {m.node} stopped (slot {m.slot}: {d.reason})"
                )
            runner = Runner(spec, st, alloc, opts, slots)
            runner.report.stopped.extend(
                (d.member.component, d.member.node, d.member.slot) for d in stopped
            )
            runner.report.phases.update(report_phases)
            runner.report.replaced.extend(replaced)
            for cname, old, new in replaced:
                opts.say and opts.say(f"{cname}: {new} replaces {old}")
            store.set_status(st, spec.name, phase="configure")
            t0 = time.monotonic()
            runner.configurer.hold = set(running)
            failures = await runner.configure(alloc.all_members())
            runner.report.phases["configure"] = time.monotonic() - t0
            opts.checkpoint and opts.checkpoint("software staged")
            t0 = time.monotonic()
            failures.update(await _roll_out(runner, running, st))
            if any(runner.configurer.staged.values()):
                runner.report.phases["rollout"] = time.monotonic() - t0
            store.set_status(st, spec.name, phase="start")
            t0 = time.monotonic()
            try:
                await runner.start(failures)
            except AppAborted:
                store.set_status(st, spec.name, status="aborted")
                await stop_all(spec, st, opts.agent)
                raise
            runner.report.phases["start"] = time.monotonic() - t0
            store.set_status(st, spec.name, status="running", phase="running")
            _close_rollouts(runner, st)
            report = runner.report
            report.members = {c: [n.name for n in ns] for c, ns in runner.members.items()}
            report.wall = time.monotonic() - began
            return report
        finally:
            await pool.aclose()


async def _running_services(
    st: State, app: str, previous: list[store.Member], opts: UpOptions
) -> dict[str, set[str]]:
    """Node -> the app's services running there before this pass: its active members'
    services as its stored spec says while the app is ``running``; while it is
    ``starting`` (a pass was interrupted: a killed controller may have left some
    nodes switched, some stopped, some running the old code) those the agents say
    run. Empty otherwise."""
    record = store.get_app(st, app)
    if record is None or record.status not in ("running", "starting"):
        return {}
    try:
        old = spec_of(record)
    except ShoalError:  # the stored spec no longer builds here: nothing to roll
        return {}
    out: dict[str, set[str]] = {}
    for m in previous:
        if m.state == "active" and m.component in old.components:
            comp = old.components[m.component]
            steps = [s for s in comp.steps if s.kind == "service"]
            out.setdefault(m.node, set()).update(step_id(app, comp.name, s.name) for s in steps)
    if record.status == "running" or not out:
        return out
    return await _services_up(st, out, opts)


async def _services_up(
    st: State, wanted: dict[str, set[str]], opts: UpOptions
) -> dict[str, set[str]]:
    """Of ``wanted`` (node -> services), those the node's agent runs (or is starting);
    a node that does not answer runs none of them as far as this pass knows."""
    out: dict[str, set[str]] = {}

    async def talk(
        client: AgentClient, node: Node, st2: State, o: agents.AgentOptions
    ) -> agents.AgentOutcome:
        rows = await client.call("proc.status", timeout=o.call_timeout)
        up = {str(r.get("name")) for r in rows if r.get("state") in _UP}
        if up & wanted[node.name]:
            out[node.name] = up & wanted[node.name]
        return NodeOutcome(node.name)

    nodes = member_nodes(st, list(wanted))
    await agents.each_agent(nodes, talk, opts.agent, state=st, transport=opts.transport)
    return out


_UP = ("RUNNING", "STARTING")  # a service running code now (BACKOFF restarts from disk)


async def _roll_out(runner: Runner, running: dict[str, set[str]], st: State) -> dict[str, str]:
    """Switch the software staged under running services by a rollout per tree, its
    services restarted and gated; failures by node name. A rollout rolled back leaves
    every node on its previous version and running, and ends the pass."""
    up, failures = runner.up, {}
    record = eventlog.recorder(st, "rollout")  # the journal's rollout events, service or not

    def say(kind: str, node: str | None, text: str) -> None:
        up.say(text)
        record(kind, node, text)

    for sname, held in runner.configurer.staged.items():
        names = [n for n in held if n not in failures]
        if not names:
            continue
        found = {n.name: n for ns in up.members.values() for n in ns}
        nodes = [found[n] for n in names if n in found]
        programs = {
            n: sorted(
                running[n]
                & {
                    step_id(up.spec.name, c.name, s.name)
                    for c in up.components_of(n)
                    if sname in c.software
                    for s in c.steps
                    if s.kind == "service"
                }
            )
            for n in names
        }
        tree = runner.configurer.tree(sname)
        result = await rollout_async(
            nodes,
            tree.depot or str(tree.source),
            {n: f"{up.app_dir(n)}/sw/{sname}" for n in names},
            programs,
            up.spec.rollout,
            up.opts.agent,
            transport=up.transport,
            state=st,
            on_event=say,
            method="copy" if up.opts.software_method == "copy" and not tree.depot else "push",
            checkpoint=up.opts.checkpoint,
        )
        if not result.ok:
            store.set_status(st, up.spec.name, status="running", phase="running")
            raise OperationError(
                f"app {up.spec.name}: software {sname} rolled back on every node it touched"
                f" (rollout {result.id}, {result.state}): {result.reason}"
            )
        for node, why in result.failed.items():
            failures[node] = f"software {sname}: rollout: {why}"
    return failures


def _close_rollouts(runner: Runner, st: State) -> None:
    """Rollouts of this app's software a killed controller left unfinished end
    ``superseded``: this pass put every member on the code on disk, so none is
    resumed or aborted (switched back) later."""
    up = runner.up
    names = [n.name for ns in up.members.values() for n in ns if n.name in up.homes]
    rollouts = RolloutStore(st)
    for sname in up.spec.software:
        dirs = {n: f"{up.app_dir(n)}/sw/{sname}" for n in names}
        rollouts.supersede(dirs, f"app {up.spec.name}: converged by a later app up")


async def stop_all(spec: AppSpec, state: State, options: agents.AgentOptions) -> None:
    """Abort: stop every service and running step of the application on every node
    that answers (files, records and logs stay for ``app down``)."""
    names = list(dict.fromkeys(m.node for m in store.members(state, spec.name)))
    services = _services(spec)

    async def talk(
        client: AgentClient, n: Node, st: State, opts: agents.AgentOptions
    ) -> agents.AgentOutcome:
        for prog in services:
            try:
                await client.call("proc.remove", name=prog, timeout=60)
            except AgentError:
                pass  # not on this node
        status = await client.call("step.status", prefix=f"{spec.name}.", timeout=30)
        for sid in status.get("running", []):
            await client.call("step.forget", prefix=sid, timeout=30)
        return NodeOutcome(n.name, action="stopped")

    await agents.each_agent(member_nodes(state, names), talk, options, state=state)


def _services(spec: AppSpec) -> list[str]:
    return [
        step_id(spec.name, c.name, s.name)
        for c in spec.components.values()
        for s in c.steps
        if s.kind == "service"
    ]


def up(path: str | Path, options: UpOptions | None = None) -> UpReport:
    """``shoal app up SPEC`` without monitoring (see :func:`monitor_async`)."""
    spec = load(path)
    return asyncio.run(up_async(spec, options))


# -- status --------------------------------------------------------------------------


@dataclass
class NodeState:
    component: str
    node: str
    slot: int
    state: str  # active | replaced | failed | stopping | stopped
    reachable: bool | None = None
    programs: list[dict[str, Any]] = field(default_factory=list)
    steps_done: int = 0
    steps_running: int = 0
    detail: str = ""


@dataclass
class AppStatus:
    name: str
    status: str
    phase: str
    file: str
    nodes: list[NodeState] = field(default_factory=list)
    barriers: dict[str, store.BarrierRecord] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """Every active member reachable and every service RUNNING."""
        return all(
            n.reachable and all(p.get("state") == "RUNNING" for p in n.programs)
            for n in self.nodes
            if n.state == "active"
        )

    def as_json(self) -> dict[str, Any]:
        """The JSON form (``app status --json``, ``GET /api/v1/apps/NAME``)."""
        return {
            "app": self.name,
            "status": self.status,
            "healthy": self.healthy,
            "versions": self.versions,
            "barriers": {
                k: {"arrived": b.arrived, "needed": b.needed, "released": b.released}
                for k, b in self.barriers.items()
            },
            "nodes": [
                {
                    "component": n.component,
                    "node": n.node,
                    "slot": n.slot,
                    "state": n.state,
                    "reachable": n.reachable,
                    "steps_done": n.steps_done,
                    "programs": n.programs,
                    "detail": n.detail,
                }
                for n in self.nodes
            ],
        }


def member_nodes(state: State, names: list[str]) -> list[Node]:
    """The inventory's nodes of ``names``, in that order (names it lacks are left out)."""
    found = {n.name: n for n in load_nodes(state, names)}
    return [found[n] for n in names if n in found]


async def status_async(
    name: str,
    options: agents.AgentOptions | None = None,
    *,
    state: State | None = None,
    transport: Transport | None = None,
) -> AppStatus:
    """Components × nodes × processes from the agents, barriers and versions from state.

    Members that cannot be reached join the failed set of ``state`` and
    answering ones leave it (``Policy.REACHABILITY``): :func:`up_async`
    replaces members by what that set says.
    """
    opts = options or agents.AgentOptions()
    with opened(state) as st:
        record = store.require_app(st, name)
        spec = spec_of(record)
        members = store.members(st, name)
        result = AppStatus(name, record.status, record.phase, record.file)
        result.barriers = store.barriers(st, name)
        for sname, sw in spec.software.items():
            try:
                result.versions[sname] = software_tree(sw, st).digest
            except Exception:  # the local tree moved: still show the rest
                result.versions[sname] = "?"
        active = [m for m in members if m.state == "active"]
        names = list(dict.fromkeys(m.node for m in active))
        prefix = f"{name}."

        async def talk(
            client: AgentClient, node: Node, st2: State, opts: agents.AgentOptions
        ) -> agents.AgentOutcome:
            programs = await client.call("proc.status", timeout=opts.call_timeout)
            steps = await client.call("step.status", prefix=prefix, timeout=opts.call_timeout)
            mine = [p for p in programs if str(p.get("name", "")).startswith(prefix)]
            return NodeOutcome(node.name, value={"programs": mine, "steps": steps})

        answers = (
            await agents.each_agent(
                member_nodes(st, names), talk, opts, state=st, transport=transport
            )
            if names
            else None
        )
        if answers is not None:
            health.record(answers, health.Policy.REACHABILITY, state=st)
        order = {name: i for i, name in enumerate(spec.components)}
        members.sort(key=lambda m: (order.get(m.component, 99), m.slot, m.state != "active"))
        for m in members:
            ns = NodeState(m.component, m.node, m.slot, m.state, detail=m.detail)
            if m.state == "active" and answers is not None and m.node in answers.results:
                r = answers[m.node]
                ns.reachable = r.reached
                if r.ok:
                    comp_prefix = f"{name}.{m.component}."
                    answer: dict[str, Any] = r.value or {}
                    ns.programs = [
                        p for p in answer["programs"] if p["name"].startswith(comp_prefix)
                    ]
                    done = answer["steps"]["done"]
                    ns.steps_done = sum(1 for k in done if k.startswith(comp_prefix))
                    ns.steps_running = sum(
                        1 for k in answer["steps"]["running"] if k.startswith(comp_prefix)
                    )
                else:
                    ns.detail = r.reason
            result.nodes.append(ns)
        return result


# -- monitor -------------------------------------------------------------------------


@dataclass
class MonitorReport:
    rounds: int = 0
    converged: int = 0
    last: UpReport | None = None
    problems: list[str] = field(default_factory=list)


async def monitor_async(
    name: str,
    options: UpOptions | None = None,
    *,
    interval: float = 5.0,
    duration: float | None = None,
    rounds: int | None = None,
    state: State | None = None,
) -> MonitorReport:
    """Check the application every ``interval`` s; restart services that gave up (no
    cool-down: someone is watching) and converge when a member or service is missing
    (:func:`.reconcile.reconcile_async`). Ends after ``duration`` seconds or ``rounds``
    checks (else when cancelled)."""
    from .reconcile import Backoff, RestartBook, reconcile_async

    opts = options or UpOptions()
    out = MonitorReport()
    book = RestartBook(Backoff(first=0.0, reset_after=0.0))
    deadline = None if duration is None else time.monotonic() + duration
    with opened(state) as st:
        while rounds is None or out.rounds < rounds:
            out.rounds += 1
            done = await reconcile_async(name, opts, book, state=st)
            out.problems.extend(done.problems)
            if done.problems and opts.say:
                opts.say("converging: " + "; ".join(done.problems))
            if done.up is not None:
                out.last = done.up
                out.converged += 1
            if done.shortfall and opts.say:
                opts.say(done.shortfall)
            if deadline is not None and time.monotonic() >= deadline:
                break
            if rounds is not None and out.rounds >= rounds:
                break
            await asyncio.sleep(interval)
        return out


# -- logs --------------------------------------------------------------------------


async def logs_async(
    name: str,
    *,
    component: str | None = None,
    node: str | None = None,
    lines: int = 20,
    options: agents.AgentOptions | None = None,
    state: State | None = None,
) -> dict[str, str]:
    """The last ``lines`` of every step and service log of the application, per node."""
    opts = options or agents.AgentOptions()
    with opened(state) as st:
        store.require_app(st, name)
        members = [
            m
            for m in store.members(st, name, active_only=True)
            if (component is None or m.component == component) and (node is None or m.node == node)
        ]
        names = list(dict.fromkeys(m.node for m in members))
        out: dict[str, str] = {}

        async def op(
            conn: Connection, n: Node, st2: State, opts: agents.AgentOptions
        ) -> agents.AgentOutcome:
            home = cached_home(st2, n.name, opts.home) or opts.home
            h = shell_path(home)
            pat = f"{shlex.quote(name)}.{shlex.quote(component) + '.' if component else ''}"
            res = await conn.run(
                f"for f in {h}/logs/steps/{pat}*.log {h}/logs/{pat}*.log; do"
                f' [ -f "$f" ] || continue; echo "==> ${{f##*/}} <=="; tail -n {int(lines)} "$f";'
                " done",
                timeout=30,
            )
            out[n.name] = res.stdout.decode("utf-8", "replace")
            return NodeOutcome(n.name)

        await agents.for_each(member_nodes(st, names), op, opts, state=st)
        return {k: out[k] for k in names if k in out}


# -- down ----------------------------------------------------------------------------


@dataclass
class DownReport:
    app: str
    nodes: dict[str, str] = field(default_factory=dict)  # node -> "cleaned" or error
    collected: Path | None = None


async def down_async(
    name: str,
    *,
    keep: bool = False,
    collect: Path | None = None,
    options: agents.AgentOptions | None = None,
    state: State | None = None,
) -> DownReport:
    """Stop every process of the application, run its cleanup, remove what it installed
    (unless ``keep``), after collecting its logs into ``collect/NODE/`` (step logs into
    ``collect/NODE/steps/``) if asked. Logs a pull refuses (a symlink out of them, say)
    are not collected; the node is still cleaned and its result says so."""
    opts = options or agents.AgentOptions()
    with opened(state) as st:
        record = store.require_app(st, name)
        spec = spec_of(record)
        names = list(dict.fromkeys(m.node for m in store.members(st, name)))
        services = _services(spec)
        report = DownReport(name, collected=collect)

        async def op(
            conn: Connection, n: Node, st2: State, opts: agents.AgentOptions
        ) -> agents.AgentOutcome:
            try:
                client = await agents.connect_agent(conn, n, st2, opts)
            except AgentNotRunning:  # a node that came back: its agent cleans up too
                found = await probe(conn, opts.home)
                if found is None:
                    raise
                await start_agent(conn, found.home, opts.python)
                client = await agents.connect_agent(conn, n, st2, opts)
            home = client.home
            adir = app_dir(home, name)
            h, q = shlex.quote(home), shlex.quote(adir)
            uncollected: LocalError | None = None
            try:
                if collect is not None:  # steps/ apart: the node names both sets of files
                    target = collect / n.name
                    for pattern, into in (
                        (f"{glob.escape(home)}/logs/{name}.*", target),
                        (f"{glob.escape(home)}/logs/steps/{name}.*", target / "steps"),
                    ):
                        try:
                            await conn.get(pattern, f"{into}/")
                        except OperationError:
                            pass  # nothing matched (or unreadable there): nothing to collect
                        except LocalError as exc:  # refused or unwritable here: say so below
                            uncollected = uncollected or exc
                for prog in services:
                    try:
                        await client.call("proc.remove", name=prog, timeout=60)
                    except AgentError:
                        pass  # not on this node
                for i, command in enumerate(spec.cleanup):
                    await client.call(
                        "step.run",
                        id=f"{name}.cleanup.{i}",
                        command=f"[ -d {q} ] || exit 0; cd {q} && {command}",
                        timeout=120,
                    )
                await client.call("step.forget", prefix=f"{name}.", timeout=60)
            finally:
                await client.close()
            wipe = f"rm -f {h}/logs/{shlex.quote(name)}.*"
            if not keep:
                wipe += f"; rm -rf {q}; rmdir {h}/apps 2>/dev/null; true"
            res = await conn.run(wipe, timeout=60)
            if res.exit_status != 0:
                raise AgentError(f"cleanup failed: {res.stderr.decode()[:200]}", node=n.name)
            if uncollected is not None:
                why = str(uncollected)
                raise LocalError(f"cleaned, but logs not all collected: {why}", n.name)
            return NodeOutcome(n.name, action="cleaned")

        results = await agents.for_each(member_nodes(st, names), op, opts, state=st)
        for r in results:
            report.nodes[r.node] = "cleaned" if r.ok else r.reason
        store.delete_app(st, name)
        return report
