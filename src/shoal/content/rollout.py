"""Staged rollouts: new content on a fleet by stages, health-gated, rolled back on failure.

Theory of operation (the state machine is :mod:`.rolloutstate`, in SQLite):

1. **Stage the content.** One P2P push (:func:`shoal.content.push.push_async`
   with ``switch=False``) to every target node: each node assembles and
   verifies the new version beside the running one and switches nothing (with
   ``method="copy"``: an SFTP copy kept beside the running copy). What
   each node ran before (its ``previous``) is recorded. A node that cannot
   stage counts against the failure budget.
2. **Stages in order** (``@alpha``-style selections or cumulative shares such as
   ``10%``, ``50%``, ``100%``; nodes not named by any stage form a last one). In
   a stage at most ``max_unavailable`` nodes are down at once; each node:
   ``stopping`` (its programs stopped) → ``switching`` (``content.activate``:
   one rename, no transfer; a software copy, ``method="copy"``: the rename swap
   of :func:`.copyswitch.switch_command`) → ``starting`` (programs restarted) →
   ``gating``:
   every program RUNNING with the same pid, its health check not failing, for
   ``min_healthy_time`` seconds, before the stage's deadline → ``healthy``.
   Between stages: a pause of ``pause`` seconds, or (``pause=None``) a human
   gate: the rollout stops ``paused`` until :func:`resume_async`.
3. **Failure.** A node whose gate fails is switched back at once and counted;
   so is a node that dies. When the count exceeds ``failure_budget`` (0: the
   first failure), every node the rollout touched is switched back to its
   previous version and restarted (no re-analysis, no transfer) and the
   rollout ends ``rolled_back`` with the node and check that failed.
   :func:`abort_async` does the same on request.

Every step is written before it is carried out and every step is idempotent,
so :func:`resume_async` (or the same rollout run again) after a killed
controller redoes the step a node was in and carries on: no node is left
stopped. Progress goes to an ``on_event(kind, node, message)`` callback (the
CLI prints it; the service journals it); nothing here prints.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shoal.agentlink.agentclient import AgentClient
from shoal.agentlink.fleet import AgentOptions, AgentOutcome, each_agent
from shoal.errors import OperationError, ShoalError, UsageError
from shoal.fanout.results import NodeOutcome
from shoal.nodes.model import Node
from shoal.nodes.select import evaluate, universe
from shoal.state import State, opened
from shoal.transport.base import Transport

from .copyswitch import copy_tree_async, switch_command, tree_digest
from .push import PushOptions, push_async, scan_source
from .rolloutstate import TOUCHED, Record, RolloutStore

#: on_event(kind, node or None, message)
EventHook = Callable[[str, str | None, str], None]
POLL = 0.1  # seconds between a gate's status reads
REVERTED = "; switched back"  # the note of a failed node already on its previous version
FINISHED = ("done", "rolled_back", "superseded")  # nothing left to resume or abort


@dataclass
class RolloutPlan:
    """How to roll out: the ``rollout:`` block of a spec, or ``shoal rollout``'s flags."""

    stages: list[str] = field(default_factory=lambda: ["100%"])
    max_unavailable: str = "1"  # nodes down at once within a stage: N or N%
    failure_budget: int = 0  # failed nodes tolerated over the whole rollout
    min_healthy_time: float = 2.0
    stage_deadline: float = 120.0
    pause: float | None = 0.0  # seconds between stages; None: wait for `rollout resume`
    plain_data: bool = False  # the staging push without TLS (--plain-data); a resume keeps it

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutPlan:
        """A validated plan; UsageError names the bad key."""
        known = {"stages", "max_unavailable", "failure_budget", "min_healthy_time"}
        known |= {"stage_deadline", "pause"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(
                f"rollout: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        plan = cls()
        if "stages" in data:
            raw = data["stages"]
            plan.stages = parse_stages(raw) if isinstance(raw, str) else [str(s) for s in raw]
        if "max_unavailable" in data:
            plan.max_unavailable = str(data["max_unavailable"])
        if "failure_budget" in data:
            plan.failure_budget = int(data["failure_budget"])
        for key in ("min_healthy_time", "stage_deadline"):
            if key in data:
                setattr(plan, key, float(data[key]))
        if "pause" in data:
            plan.pause = None if str(data["pause"]) == "manual" else float(data["pause"])
        plan.check()
        return plan

    def check(self) -> None:
        if not self.stages:
            raise UsageError("rollout: at least one stage")
        for label in self.stages:
            if label.endswith("%"):
                _share(label)
        unavailable(self.max_unavailable, 1)
        if self.failure_budget < 0 or self.min_healthy_time < 0 or self.stage_deadline <= 0:
            raise UsageError(
                "rollout: failure_budget and min_healthy_time >= 0, stage_deadline > 0"
            )
        if self.pause is not None and self.pause < 0:
            raise UsageError("rollout: pause is seconds >= 0 or 'manual'")


def parse_stages(text: str) -> list[str]:
    """``'@alpha,10%,50%,100%'`` → its stages (selections and shares)."""
    stages = [s.strip() for s in text.split(",") if s.strip()]
    if not stages:
        raise UsageError(f"--stages {text!r}: no stage")
    return stages


def _share(label: str) -> float:
    try:
        value = float(label[:-1])
    except ValueError:
        raise UsageError(f"stage {label!r}: a share is a number and %, e.g. 10%") from None
    if not 0 < value <= 100:
        raise UsageError(f"stage {label!r}: a share is between 0 and 100%")
    return value


def unavailable(text: str, size: int) -> int:
    """``max_unavailable`` (N or N%) for a stage of ``size`` nodes: at least 1."""
    try:
        if text.endswith("%"):
            return max(1, int(size * float(text[:-1]) / 100))
        value = int(text)
    except ValueError:
        raise UsageError(f"max_unavailable {text!r}: a count or a share such as 25%") from None
    if value < 1:
        raise UsageError(f"max_unavailable {text!r}: at least 1")
    return value


def assign_stages(
    names: Sequence[str], stages: Sequence[str], select: Callable[[str], set[str]]
) -> list[tuple[str, list[str]]]:
    """Each stage's nodes: a selection takes the targets it names not yet taken, a share
    tops the cumulative count up to that share; the rest form a last stage. Empty
    stages are left out."""
    taken: list[str] = []
    out: list[tuple[str, list[str]]] = []
    for label in stages:
        left = [n for n in names if n not in taken]
        if label.endswith("%"):
            want = math.ceil(len(names) * _share(label) / 100) - len(taken)
            chosen = left[: max(0, want)]
        else:
            picked = select(label)
            chosen = [n for n in left if n in picked]
        if chosen:
            out.append((label, chosen))
            taken.extend(chosen)
    rest = [n for n in names if n not in taken]
    if rest:
        out.append(("rest", rest))
    return out


@dataclass
class RolloutResult:
    """What a rollout did: its state, why it stopped, each node's step and downtime."""

    id: str
    state: str
    reason: str = ""
    version: str = ""
    steps: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # node -> which check failed
    downtime: dict[str, float] = field(default_factory=dict)  # stop -> all programs running
    rollback_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.state in ("done", "paused")


class _Run:
    """One controller's pass over a rollout (a fresh one or a resumed one)."""

    def __init__(
        self,
        rec: Record,
        store: RolloutStore,
        nodes: dict[str, Node],
        options: AgentOptions,
        transport: Transport | None,
        on_event: EventHook | None,
        checkpoint: Callable[[str], None] | None = None,
    ) -> None:
        self.rec, self.store, self.nodes = rec, store, nodes
        self.opts, self.transport, self.on_event = options, transport, on_event
        self.checkpoint = checkpoint  # tests kill the controller at a named point
        self.plan = RolloutPlan(**rec.plan["plan"])
        self.programs: dict[str, list[str]] = rec.plan["programs"]
        self.dirs: dict[str, str] = rec.plan["dirs"]
        self.method: str = rec.plan.get("method", "push")  # push | copy (a software copy)
        self.result = RolloutResult(rec.id, rec.state, rec.reason, rec.version)
        self.stopped: dict[str, float] = {}  # node -> when its programs were stopped

    def say(self, kind: str, node: str | None, message: str) -> None:
        if self.on_event is not None:
            self.on_event(kind, node, message)

    def step(self, node: str, step: str, detail: str = "") -> None:
        self.store.step(self.rec.id, node, step, detail)
        self.rec.nodes[node].step = step
        self.rec.nodes[node].detail = detail

    def failures(self) -> dict[str, str]:
        return {n: s.detail for n, s in self.rec.nodes.items() if s.step == "failed"}

    def finish(self, state: str, reason: str = "") -> RolloutResult:
        self.store.set_state(self.rec.id, state, reason=reason)
        rec = self.store.get(self.rec.id)
        res = self.result
        res.state, res.reason = rec.state, rec.reason
        res.steps = {n: s.step for n, s in rec.nodes.items()}
        res.failed = {n: s.detail for n, s in rec.nodes.items() if s.step == "failed"}
        self.say(
            f"rollout.{state}",
            None,
            f"rollout {rec.id} {state}" + (f": {reason}" if reason else ""),
        )
        return res

    # -- the phases ---------------------------------------------------------------

    async def stage_content(self, source: str) -> None:
        """Every target gets the version, switched nowhere; its previous one recorded."""
        if self.method == "copy":
            return await self._stage_copies(Path(source))
        groups: dict[str, list[Node]] = {}
        for name in self.rec.nodes:
            groups.setdefault(self.dirs[name], []).append(self.nodes[name])
        previous: dict[str, str | None] = {}
        for target, members in groups.items():
            given = {f.name: getattr(self.opts, f.name) for f in fields(AgentOptions)}
            popts = PushOptions(**given, switch=False, plain_data=self.plan.plain_data)
            result = await push_async(members, source, target, popts, transport=self.transport)
            for outcome in result:
                if outcome.ok:
                    previous[outcome.node] = outcome.previous
                else:
                    self.step(outcome.node, "failed", f"staging: {outcome.reason}")
                    self.say(
                        "rollout.node_failed", outcome.node, f"staging failed: {outcome.reason}"
                    )
        self._staged(previous)

    async def _stage_copies(self, source: Path) -> None:
        """The copy of ``source`` kept beside every target's copy in place."""
        kept: dict[str, str] = {}
        names = list(self.rec.nodes)
        copied = await copy_tree_async(
            [self.nodes[n] for n in names],
            source,
            self.rec.version,
            self.dirs,
            self.opts,
            stage=names,
            previous=kept,
            transport=self.transport,
        )
        previous: dict[str, str | None] = {}
        for outcome in copied:
            if outcome.ok:  # copied: nothing was there before
                same = outcome.stdout == "same"
                previous[outcome.node] = kept.get(outcome.node, self.rec.version if same else None)
            else:
                why = outcome.reason or outcome.stderr.strip()
                self.step(outcome.node, "failed", f"staging: {why}")
                self.say("rollout.node_failed", outcome.node, f"staging failed: {why}")
        self._staged(previous)

    def _staged(self, previous: dict[str, str | None]) -> None:
        self.store.set_previous(self.rec.id, previous)
        for node, v in previous.items():
            self.rec.nodes[node].previous = v
        self.say("rollout.staged", None, f"{len(previous)} node(s) hold {self.rec.version}")

    async def stages(self) -> RolloutResult:
        rid = self.rec.id
        for idx in range(self.rec.stage, len(self.rec.stages)):
            label, sstate = self.rec.stages[idx]
            if sstate == "passed":
                continue
            if len(self.failures()) > self.plan.failure_budget:
                return await self.rollback(self._budget_reason())
            self.store.set_state(rid, "running", stage=idx)
            self.store.set_stage(rid, idx, "running")
            todo = [s.node for s in self.rec.in_stage(idx) if s.step not in ("healthy", "failed")]
            self.say("rollout.stage", None, f"stage {idx + 1} ({label}): {len(todo)} node(s)")
            width = unavailable(self.plan.max_unavailable, len(self.rec.in_stage(idx)))
            await self._update(todo, width, time.monotonic() + self.plan.stage_deadline)
            if len(self.failures()) > self.plan.failure_budget:
                self.store.set_stage(rid, idx, "failed")
                return await self.rollback(self._budget_reason())
            self.store.set_stage(rid, idx, "passed")
            self.say("rollout.stage_passed", None, f"stage {idx + 1} ({label}) passed")
            if idx + 1 < len(self.rec.stages):
                if self.plan.pause is None:
                    self.store.set_state(rid, "paused", stage=idx + 1)
                    return self.finish(
                        "paused", f"after stage {idx + 1}: shoal rollout resume {rid}"
                    )
                await asyncio.sleep(self.plan.pause)
        return self.finish("done")

    def _budget_reason(self) -> str:
        failed = self.failures()
        first = next(iter(failed.items()))
        return (
            f"{len(failed)} node(s) failed, budget {self.plan.failure_budget}: "
            f"{first[0]}: {first[1]}"
        )

    async def _update(self, names: list[str], width: int, deadline: float) -> None:
        """Stop → switch → start → gate on ``names``, ``width`` at a time."""
        if not names:
            return
        opts = replace(self.opts, parallel=width)

        async def talk(client: AgentClient, node: Node, st: State, o: AgentOptions) -> AgentOutcome:
            name = node.name
            try:
                await self._switch(client, name, self.rec.version, "stopping")
                self.step(name, "gating")
                up = await self._gate(client, name, deadline)
            except OperationError as exc:  # it answers: put it back at once
                raise OperationError(str(exc) + await self._back(client, name), node=name) from None
            self.result.downtime[name] = up
            self.step(name, "healthy")
            self.say("rollout.node_healthy", name, f"healthy (down {up:.2f}s)")
            return NodeOutcome(name, action="updated")

        results = await each_agent(
            [self.nodes[n] for n in names], talk, opts, transport=self.transport
        )
        for r in results:
            if not r.ok:
                self.step(r.node, "failed", r.reason)
                self.say("rollout.node_failed", r.node, r.reason)

    async def _switch(self, client: AgentClient, name: str, version: str, first: str) -> None:
        """Stop the node's programs, switch its directory to ``version``, restart them."""
        self.step(name, first)
        self.stopped[name] = time.monotonic()
        for prog in self.programs[name]:
            await client.call("proc.stop", name=prog, timeout=60)
        if first == "stopping":
            self.step(name, "switching")
        if self.method == "copy":
            # a step of its own each time (a recorded success would answer a switch back)
            sid = f"rollout.{self.rec.id}.{secrets.token_hex(4)}"
            swap = switch_command(self.dirs[name], version)
            done = await client.call("step.run", id=sid, command=swap, limit=50, timeout=60)
            await client.call("step.forget", prefix=sid, timeout=30)
            if done.get("exit") != 0:
                tail = str(done.get("tail", "")).strip().splitlines()
                raise OperationError(
                    f"switch to {version}: {tail[-1] if tail else done.get('note', 'failed')}",
                    node=name,
                )
        else:
            await client.call("content.activate", dir=self.dirs[name], version=version, timeout=60)
        if first == "stopping":
            self.checkpoint and self.checkpoint("rollout switched")  # switched, stopped
            self.step(name, "starting")
        for prog in self.programs[name]:
            await client.call("proc.restart", name=prog, timeout=60)

    async def _gate(self, client: AgentClient, name: str, deadline: float) -> float:
        """Seconds from the stop to every program running; raises OperationError naming
        the program and check that failed."""
        stopped = self.stopped.get(name, time.monotonic())
        pids: dict[str, Any] | None = None
        since = up = 0.0
        waiting = "not running yet"
        while True:
            rows = {r["name"]: r for r in await client.call("proc.status", timeout=30)}
            now = time.monotonic()
            current: dict[str, Any] = {}
            waiting = ""
            for prog in self.programs[name]:
                r = rows.get(prog)
                if r is None:
                    raise OperationError(f"gate: program {prog} is not on this node", node=name)
                if r["state"] in ("FATAL", "EXITED"):
                    why = r.get("last_exit") or r["state"]
                    raise OperationError(f"gate: {prog} {r['state']} ({why})", node=name)
                if r.get("health") == "failing":
                    raise OperationError(
                        f"gate: {prog} health check failing: {r.get('health_detail')}", node=name
                    )
                if r["state"] != "RUNNING":
                    waiting = waiting or f"{prog} {r['state']}"
                current[prog] = r["pid"]
            if waiting:
                pids = None
            elif current != pids:
                if pids is not None:
                    waiting = "restarted"
                pids, since = current, now
                up = up or now - stopped
            if not waiting and pids is not None and now - since >= self.plan.min_healthy_time:
                return up
            if now > deadline:
                raise OperationError(
                    f"gate: not healthy for {self.plan.min_healthy_time:g}s within the stage "
                    f"deadline ({waiting or 'running too briefly'})",
                    node=name,
                )
            await asyncio.sleep(POLL)

    async def _back(self, client: AgentClient, name: str) -> str:
        """Switch one failed node back; the note for its failure."""
        previous = self.rec.nodes[name].previous
        if previous is None:
            return ""
        try:
            await self._switch(client, name, previous, "rolling_back")
        except ShoalError:
            return ""  # the rollback of the whole rollout tries again
        return REVERTED

    async def rollback(self, reason: str) -> RolloutResult:
        """Switch every node the rollout touched back to its previous version and restart
        its programs: no gate, no transfer."""
        rid = self.rec.id
        self.store.set_state(rid, "rolling_back", reason=reason)
        self.say("rollout.rolling_back", None, reason)
        began = time.monotonic()
        touched = [
            s.node
            for s in self.rec.nodes.values()
            if s.step in TOUCHED and s.previous and not s.detail.endswith(REVERTED)
        ]
        opts = replace(self.opts, parallel=self.opts.parallel or max(1, len(touched)))
        keep_failed = self.failures()

        async def talk(client: AgentClient, node: Node, st: State, o: AgentOptions) -> AgentOutcome:
            previous = self.rec.nodes[node.name].previous
            assert previous is not None
            await self._switch(client, node.name, previous, "rolling_back")
            self.step(node.name, "rolled_back", keep_failed.get(node.name, ""))
            return NodeOutcome(node.name, action="rolled back")

        results = await each_agent(
            [self.nodes[n] for n in touched], talk, opts, transport=self.transport
        )
        self.result.rollback_seconds = time.monotonic() - began
        left = [r for r in results if not r.ok]
        for r in left:
            self.say("rollout.node_failed", r.node, f"rollback: {r.reason}")
        if left:
            note = f"{reason}; {len(left)} node(s) not reached: rollout resume retries them"
            res = self.finish("rolling_back", note)
            res.failed.update({r.node: f"rollback: {r.reason}" for r in left})
        else:
            res = self.finish("rolled_back", reason)
        res.failed.update({n: d for n, d in keep_failed.items() if n not in res.failed})
        return res


# -- entry points ----------------------------------------------------------------------


async def rollout_async(
    nodes: Sequence[Node],
    source: str,
    remote_dir: str | Mapping[str, str],
    programs: Sequence[str] | Mapping[str, Sequence[str]],
    plan: RolloutPlan | None = None,
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
    on_event: EventHook | None = None,
    method: str = "push",
    checkpoint: Callable[[str], None] | None = None,
) -> RolloutResult:
    """Roll ``source`` (a directory or ``depot:NAME@VERSION``) out to ``remote_dir`` on
    ``nodes``, restarting ``programs`` (the same names everywhere, or by node); see the
    module docstring. ``remote_dir`` may differ by node (a mapping). ``method="copy"``:
    ``source`` is a directory of software copies (:mod:`.copyswitch`), not a push.
    ``checkpoint`` is called at named points (``rollout switched``: a node's directory
    switched, its programs not restarted yet); tests kill the controller there."""
    plan = plan or RolloutPlan()
    plan.check()
    opts = options or AgentOptions()
    names = [n.name for n in nodes]
    dirs = dict(remote_dir) if isinstance(remote_dir, Mapping) else dict.fromkeys(names, remote_dir)
    progs = (
        {n: list(programs.get(n, ())) for n in names}
        if isinstance(programs, Mapping)
        else {n: list(programs) for n in names}
    )
    with opened(state) as st:
        if method == "copy":
            version = tree_digest(Path(source))
        else:
            version = (await scan_source(source, PushOptions(), st)).version
        world = universe(st)
        stages = assign_stages(names, plan.stages, lambda e: set(evaluate(e, world)))
        store = RolloutStore(st)
        label = remote_dir if isinstance(remote_dir, str) else ",".join(sorted(set(dirs.values())))
        document = {"plan": asdict(plan), "programs": progs, "dirs": dirs, "source": source}
        document["method"] = method
        rid = store.create(label, version, document, stages)
        rec = store.get(rid)
        run = _Run(rec, store, {n.name: n for n in nodes}, opts, transport, on_event, checkpoint)
        for old in store.supersede(dirs, f"superseded by rollout {rid}", keep=rid):
            run.say("rollout.superseded", None, f"rollout {old} superseded by {rid}")
        run.say(
            "rollout.created",
            None,
            f"rollout {rid}: {version} to {len(names)} node(s) in {len(stages)} stage(s)",
        )
        await run.stage_content(source)
        return await run.stages()


def _reopened(
    rid: str,
    st: State,
    nodes: Sequence[Node],
    options: AgentOptions | None,
    transport: Transport | None,
    on_event: EventHook | None,
) -> _Run:
    """The stored rollout ``rid`` ready to carry on (resume, abort)."""
    store = RolloutStore(st)
    return _Run(
        store.get(rid),
        store,
        {n.name: n for n in nodes},
        options or AgentOptions(),
        transport,
        on_event,
    )


async def resume_async(
    rid: str,
    nodes: Sequence[Node],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
    on_event: EventHook | None = None,
) -> RolloutResult:
    """Carry rollout ``rid`` on from where it stopped (a killed controller, a human gate)."""
    with opened(state) as st:
        run = _reopened(rid, st, nodes, options, transport, on_event)
        rec = run.rec
        missing = sorted(set(rec.nodes) - set(run.nodes))
        if missing:
            raise UsageError(f"rollout {rid}: nodes not in the inventory: {', '.join(missing)}")
        if rec.state in FINISHED:
            return run.finish(rec.state, rec.reason)
        if rec.state == "rolling_back":
            return await run.rollback(rec.reason)
        if rec.state == "staging":
            await run.stage_content(str(rec.plan["source"]))
        return await run.stages()


async def abort_async(
    rid: str,
    nodes: Sequence[Node],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
    on_event: EventHook | None = None,
) -> RolloutResult:
    """Roll every node rollout ``rid`` touched back to its previous version."""
    with opened(state) as st:
        run = _reopened(rid, st, nodes, options, transport, on_event)
        rec = run.rec
        if rec.state in FINISHED:
            raise UsageError(f"rollout {rid} is {rec.state}: nothing to abort")
        return await run.rollback("aborted by request")
