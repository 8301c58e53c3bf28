"""Node agents across the fleet: install, upgrade, start, stop, status, and ``proc``.

Every operation here is a fan-out (:func:`shoal.fanout.fanout`): one SSH
connection per node, bounded parallelism, and a per-node
:class:`~shoal.fanout.results.NodeOutcome` (the agent's answer as ``value``,
what was done as ``action``, or an error; never an exception for one node).
There are two skeletons: :func:`for_each` runs a step on each node's
connection (install, start, stop: shell commands), :func:`each_agent` one
conversation with each node's running agent (status, requests, events, logs).
Both hand every step the resolved :class:`AgentOptions`, so every public
operation is one line: a skeleton and its own named per-node step
(``_install_step``, ``_status_step``...), extra arguments bound with
:func:`functools.partial`.
The controller reaches each agent only through SSH: shell commands to install
and start it, and ``open_unix`` to its socket for everything else (see
:mod:`.client`). Nothing here records health: adapters pass the results to
:func:`shoal.nodes.health.record` with ``Policy.REACHABILITY``.

Install copies the zipapp built by :mod:`shoal.agent.build` to
``<home>/agent.pyz`` only where ``<home>/agent.build`` differs from this
build's id (copied beside it and renamed in once the node's python runs it, so
a read-only or full disk or a missing python leaves the running agent as it
was), and makes sure this build is the one running: an agent of another build
is replaced. How the zipapp reaches a node is the step's ``copy`` (SFTP from
this machine by default; :mod:`shoal.content.agentspread` has nodes fetch it
from peers that run it, for large fleets and slow source links). An agent that
offers ``agent.handover`` execs the new build in its own process, which adopts
the running programs (same pids, same output pipes:
:mod:`shoal.agent.supervisor`); the step then checks that the node
answers with the new build and that every program RUNNING before still runs
with the same pid. An older agent is shut down (its programs stop, their
desired state is kept) and the new one started (they come back). ``batch``
(``N`` nodes or ``P%``) upgrades in consecutive batches, each checked before
the next; a batch with a failed node stops the upgrade, the nodes after it
reported as not attempted. The agent survives the SSH session and the
controller: it double-forks into its own session with stdio on its log.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from shoal.agent.build import AgentBuild, build
from shoal.errors import (
    AgentError,
    AgentLinkBroken,
    AgentNotInstalled,
    AgentNotRunning,
    OperationError,
    UsageError,
    VersionMismatch,
)
from shoal.fanout.options import FanoutOptions
from shoal.fanout.results import NodeOutcome, Results
from shoal.fanout.scheduler import ResultCallback, fanout
from shoal.logsetup import logger
from shoal.nodes.model import Node
from shoal.state import State, opened
from shoal.transport.base import Connection, Transport

from . import eventlog
from .agentclient import (
    DEFAULT_HOME,
    DEFAULT_PYTHON,
    AgentClient,
    cached_home,
    probe,
    remember,
    start_agent,
)

_log = logger(__name__)


@dataclass
class AgentOptions(FanoutOptions):
    """Fan-out options plus where the agent lives on the nodes and how to start it."""

    home: str = DEFAULT_HOME
    python: str = DEFAULT_PYTHON
    call_timeout: float = 60.0


#: One node's outcome of an agent operation (``value``: what the agent answered).
AgentOutcome = NodeOutcome[Any]
#: One step on a node's connection (the controller's state and the options at hand).
NodeOp = Callable[[Connection, Node, State, AgentOptions], Awaitable[AgentOutcome]]
#: One conversation with a node's running agent.
AgentTalk = Callable[[AgentClient, Node, State, AgentOptions], Awaitable[AgentOutcome]]
#: How a write ``fn(state)`` is made: the service's writer thread (its ``submit``), so
#: its event loop never waits for the database's lock; None: on the state, at once.
Write = Callable[[Callable[[State], Any]], Any]
#: How a node gets the zipapp as ``<home>/agent.pyz.new``: ``copy(conn, node, home,
#: python)``, AgentError when it could not (None: SFTP from this machine). The data
#: plane's copy (peers serve it) is :mod:`shoal.content.agentspread`'s.
Copy = Callable[[Connection, Node, str, str], Awaitable[None]]
#: How long the new build's ``version`` may take: a python start, which on a node (or a
#: lab host) starting hundreds at once took over 30 s (250 lab nodes at load 55).
START_CHECK_SECONDS = 120.0


async def for_each(
    nodes: Sequence[Node],
    op: NodeOp,
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
    on_result: ResultCallback[AgentOutcome] | None = None,
) -> Results[AgentOutcome]:
    """Run ``op`` on every node through the fan-out; errors become per-node outcomes.

    ``op`` gets the options resolved (``options`` or the defaults). ``state`` is
    the controller's (agents' working areas are cached there); the default one
    is opened for the call and closed after it. ``on_result`` is called with
    each node's outcome as it finishes (a progress line).
    """
    opts = options or AgentOptions()

    async def operation(conn: Connection, node: Node, index: int) -> AgentOutcome:
        return await op(conn, node, st, for_node(opts, node))

    with opened(state) as st:
        return await fanout(nodes, operation, opts, transport=transport, on_result=on_result)


async def each_agent(
    nodes: Sequence[Node],
    talk: AgentTalk,
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
    on_result: ResultCallback[AgentOutcome] | None = None,
) -> Results[AgentOutcome]:
    """:func:`for_each` with a client of the node's running agent, closed after ``talk``."""

    async def op(conn: Connection, node: Node, st: State, opts: AgentOptions) -> AgentOutcome:
        client = await connect_agent(conn, node, st, opts)
        try:
            return await talk(client, node, st, opts)
        finally:
            await client.close()

    return await for_each(nodes, op, options, transport=transport, state=state, on_result=on_result)


def for_node(options: AgentOptions, node: Node) -> AgentOptions:
    """``options`` with the node's own python (the inventory's ansible_python_interpreter)."""
    return replace(options, python=node.python) if node.python else options


async def connect_agent(
    conn: Connection, node: Node, state: State, options: AgentOptions
) -> AgentClient:
    """A client for the node's running agent; AgentError when none is installed or running."""
    options = for_node(options, node)
    home = cached_home(state, node.name, options.home)
    if home is not None:
        try:
            return await AgentClient.open(conn, home, options.python)
        except AgentNotRunning:
            pass  # fall through: the working area may have moved, re-resolve it
    found = await probe(conn, options.home)
    if found is None or found.build is None:
        raise AgentNotInstalled(
            f"no agent installed in {options.home} (run: shoal agent install)", node=node.name
        )
    remember(state, node.name, options.home, found.home)
    try:
        return await AgentClient.open(conn, found.home, options.python)
    except AgentNotRunning:
        raise AgentNotRunning(
            f"agent not running in {found.home} (run: shoal sweep)", node=node.name
        ) from None


# -- lifecycle ---------------------------------------------------------------


def local_zipapp(agent: AgentBuild) -> Path:
    """The build written once under the controller's state directory."""
    from shoal.paths import shoal_home

    folder = shoal_home() / "agent"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"agent-{agent.build_id}.pyz"
    if not path.exists() or path.read_bytes() != agent.data:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(agent.data)
        tmp.replace(path)
    return path


async def _hello(
    conn: Connection, home: str, python: str = DEFAULT_PYTHON
) -> dict[str, Any] | None:
    """The running agent's hello, or None when none answers."""
    try:
        client = await AgentClient.open(conn, home, python)
    except AgentNotRunning:
        return None
    try:
        # a live agent's answer can wait out TCP retransmissions on a lossy link (30 %
        # loss: beyond 15 s); a dead one is found by the open above, not by this limit
        result: dict[str, Any] = await client.call("hello", timeout=60)
        return result
    finally:
        await client.close()


async def _wait_gone(conn: Connection, pid: int, timeout: float = 60.0) -> None:
    """Wait on the node until process ``pid`` has exited."""
    steps = int(timeout / 0.1)
    await conn.run(
        f"i=0; while kill -0 {int(pid)} 2>/dev/null && [ $i -lt {steps} ]; do "
        "sleep 0.1; i=$((i+1)); done",
        timeout=timeout + 10,
    )


async def _shutdown(
    conn: Connection, home: str, hello: dict[str, Any] | None, python: str = DEFAULT_PYTHON
) -> bool:
    """Stop the agent in ``home`` (programs stop, desired state kept); False if none ran."""
    pid: int | None = hello.get("pid") if hello else None
    try:
        client = await AgentClient.open(conn, home, python)
    except AgentNotRunning:
        return False
    try:
        result = await client.call("shutdown", timeout=15)
        pid = int(result.get("pid", pid or 0)) or pid
    except VersionMismatch:
        # an agent of another protocol: stop it by its pidfile instead (SIGTERM)
        h = shlex.quote(home)
        res = await conn.run(f"cat {h}/agent.pid", timeout=15)
        text = res.stdout.decode(errors="replace").strip()
        pid = int(text) if text.isdigit() else None
        if pid:
            await conn.run(f"kill {pid}", timeout=15)
    finally:
        await client.close()
    if pid:
        await _wait_gone(conn, pid)
    return True


async def install_async(
    nodes: Sequence[Node],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    upgrade_only: bool = False,
    state: State | None = None,
    agent: AgentBuild | None = None,
    on_result: ResultCallback[AgentOutcome] | None = None,
    batch: str | None = None,
    write: Write | None = None,
    copy: Copy | None = None,
) -> Results[AgentOutcome]:
    """Copy this build where it is missing and make it the running agent.

    ``upgrade_only`` leaves nodes without an agent alone (``shoal agent upgrade``);
    ``agent`` is the build to ship (default: built from this source tree);
    ``batch`` (``N`` or ``P%``) goes batch by batch, stopping after a failed one;
    ``write`` makes what the steps remember (:data:`Write`); ``copy`` how the
    zipapp reaches a node (:data:`Copy`; default SFTP).
    Actions: ``up to date`` (skipped), ``installed``, ``upgraded from X (N
    programs adopted)``, ``upgraded from X (programs restarted)``, ``started``
    (same build, was not running), ``skipped: no agent``.
    """
    agent = agent or build()
    step = partial(
        _install_step, agent=agent, local=local_zipapp(agent), upgrade_only=upgrade_only,
        write=write, copy=copy,
    )  # fmt: skip
    groups = batches(nodes, batch)
    done: dict[str, AgentOutcome] = {}
    duration = 0.0
    for number, group in enumerate(groups, 1):
        results = await for_each(
            group, step, options, transport=transport, state=state, on_result=on_result
        )
        done.update(results.results)
        duration += results.duration
        if not results.ok and number < len(groups):
            failed = "; ".join(f"{r.node}: {r.reason}" for r in results.failed)
            _log.warning("agent upgrade stopped at batch %d/%d: %s", number, len(groups), failed)
            why = f"not attempted: batch {number}/{len(groups)} failed on {failed}"
            for n in (n for g in groups[number:] for n in g):
                done[n.name] = NodeOutcome(n.name, error=AgentError(why, node=n.name))
            break
    return Results(done, duration)


def batches(nodes: Sequence[Node], batch: str | None) -> list[list[Node]]:
    """The nodes in consecutive batches of ``batch`` (``N`` or ``P%``; None: one)."""
    items = list(nodes)
    if not batch or not items:
        return [items] if items else []
    text = batch.strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError
            size = max(1, int(len(items) * share / 100))
        else:
            size = int(text)
            if size < 1:
                raise ValueError
    except ValueError:
        raise UsageError(f"--batch {batch!r}: a count of nodes (5) or a share (25%)") from None
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _install_step(
    conn: Connection,
    node: Node,
    st: State,
    opts: AgentOptions,
    *,
    agent: AgentBuild,
    local: Path,
    upgrade_only: bool,
    write: Write | None = None,
    copy: Copy | None = None,
) -> AgentOutcome:
    found = await probe(conn, opts.home, create=not upgrade_only)
    if found is None or (upgrade_only and found.build is None):
        return NodeOutcome(node.name, action="skipped: no agent")

    def keep(hello: dict[str, Any] | None = None) -> None:  # bound now, written by write
        save = partial(remember, node=node.name, home_spec=opts.home, home=found.home, hello=hello)
        if write is None:
            save(st)
        else:
            write(save)

    keep()
    try:
        hello = await _hello(conn, found.home, opts.python)
    except VersionMismatch:
        hello = {"build": "other protocol"}
    running = hello.get("build") if hello else None
    if found.build == agent.build_id and running == agent.build_id:
        keep(hello)
        return NodeOutcome(node.name, action="up to date", value=hello)
    _log.info(
        "%s: agent in %s: build %s on disk, %s running; bringing %s up",
        *(node.name, found.home, found.build, running, agent.build_id),
    )
    if found.build != agent.build_id:
        await _put_build(conn, node, local, found.home, agent.build_id, opts.python, copy)
    if running is not None and running != agent.build_id and hello and hello.get("handover"):
        hello = await _handover(conn, node, found.home, opts.python, agent.build_id)
        keep(hello)
        adopted = hello.get("adopted", 0)
        return NodeOutcome(
            node.name, action=f"upgraded from {running} ({adopted} programs adopted)", value=hello
        )
    if running is not None and running != agent.build_id:
        await _shutdown(conn, found.home, hello, opts.python)
        action = f"upgraded from {running} (programs restarted)"
    elif running is None:
        action = "installed" if found.build != agent.build_id else "started"
    else:
        action = "installed"
    if running != agent.build_id:
        await start_agent(conn, found.home, opts.python)
    hello = await _hello(conn, found.home, opts.python)
    if hello is None:
        raise AgentNotRunning("agent started but does not answer", node=node.name)
    keep(hello)
    return NodeOutcome(node.name, action=action, value=hello)


async def _put_build(
    conn: Connection,
    node: Node,
    local: Path,
    home: str,
    build_id: str,
    python: str,
    copy: Copy | None = None,
) -> None:
    """Copy the build beside the working area's ``agent.pyz``, check that ``python``
    runs it there, and rename it in: a copy that fails (a read-only or full disk) or a
    build that cannot start (no such python, one too old) leaves the running agent
    and its file as they were. AgentError says why in the shell's words (SFTP says
    only "Failure")."""
    h = shlex.quote(home)
    try:
        if copy is not None:
            await copy(conn, node, home, python)
        else:
            await conn.put(str(local), f"{home}/agent.pyz.new")
    except OperationError as exc:
        res = await conn.run(f": > {h}/agent.pyz.new; rm -f {h}/agent.pyz.new", timeout=30)
        said = res.stderr.decode(errors="replace").strip().splitlines()
        why = said[-1].rsplit(": ", 1)[-1] if said else str(exc)  # the errno's text
        raise AgentError(f"cannot put the new agent in {home}: {why}", node=node.name) from None
    # a python start: on a node (or a lab host) starting hundreds at once it can take
    # tens of seconds without anything being wrong
    tried = await conn.run(
        f"{shlex.quote(python)} {h}/agent.pyz.new version", timeout=START_CHECK_SECONDS
    )
    answer = tried.stdout.decode(errors="replace")
    if tried.exit_status != 0 or _build_of(answer) != build_id:
        said = tried.stderr.decode(errors="replace").strip().splitlines()
        await conn.run(f"rm -f {h}/agent.pyz.new", timeout=30)
        why = said[-1] if said else f"exit {tried.exit_status}, {answer.strip()[:80]!r}"
        raise AgentError(f"the new agent does not start with {python}: {why}", node=node.name)
    res = await conn.run(
        f"mv -f {h}/agent.pyz.new {h}/agent.pyz && printf '%s\\n' {build_id} > "
        f"{h}/agent.build.tmp && mv -f {h}/agent.build.tmp {h}/agent.build",
        timeout=30,
    )
    if res.exit_status != 0:
        said = res.stderr.decode(errors="replace").strip().splitlines()
        raise AgentError(
            f"cannot record the build in {home}: {said[-1] if said else 'failed'}", node=node.name
        )


def _build_of(version: str) -> object:
    """The build id in ``agent.pyz version``'s JSON (None when it is not that)."""
    try:
        found = json.loads(version)
    except ValueError:
        return None
    return found.get("build") if isinstance(found, dict) else None


async def _handover(
    conn: Connection, node: Node, home: str, python: str, build_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    """Have the running agent exec ``build_id`` in place and check the result: the
    node answers with the new build, and every program RUNNING before runs with
    the same pid. The new agent's ``status`` (``adopted``: how many kept)."""
    client = await AgentClient.open(conn, home, python)
    try:
        before = await client.call("status", timeout=15)
        try:
            await client.call("agent.handover", timeout=15)
        except AgentLinkBroken:
            pass  # the exec closed the connection first: the poll below tells
    finally:
        await client.close()
    running = {
        p["name"]: p["pid"] for p in before.get("programs", []) if p.get("state") == "RUNNING"
    }
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    status: dict[str, Any] | None = None
    while loop.time() < deadline:
        try:
            client = await AgentClient.open(conn, home, python)
        except AgentNotRunning:
            await asyncio.sleep(0.2)
            continue
        try:
            status = await client.call("status", timeout=15)
        except AgentLinkBroken:
            status = None  # reached the old build as it exec'd
        finally:
            await client.close()
        if status is not None and status.get("build") == build_id:
            break
        await asyncio.sleep(0.2)
    if status is None or status.get("build") != build_id:
        raise AgentError(
            f"agent in {home} does not answer with build {build_id} within {timeout:g}s "
            "after the handover",
            node=node.name,
        )
    after = {p["name"]: p for p in status.get("programs", [])}
    lost = [
        f"{name} (pid {pid} before, {after.get(name, {}).get('state', 'gone')} "
        f"pid {after.get(name, {}).get('pid')} after)"
        for name, pid in sorted(running.items())
        if after.get(name, {}).get("pid") != pid or after[name].get("state") != "RUNNING"
    ]
    if lost:
        raise AgentError(f"upgraded, but programs not kept: {', '.join(lost)}", node=node.name)
    status["adopted"] = len(running)
    return status


async def start_async(
    nodes: Sequence[Node],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    restart: bool = False,
    state: State | None = None,
) -> Results[AgentOutcome]:
    """Start installed agents (``restart``: stop the running one first)."""
    step = partial(_start_step, restart=restart)
    return await for_each(nodes, step, options, transport=transport, state=state)


async def _start_step(
    conn: Connection, node: Node, st: State, opts: AgentOptions, *, restart: bool
) -> AgentOutcome:
    found = await probe(conn, opts.home)
    if found is None or found.build is None:
        raise AgentNotInstalled(f"no agent installed in {opts.home}", node=node.name)
    remember(st, node.name, opts.home, found.home)
    stopped = await _shutdown(conn, found.home, None, opts.python) if restart else False
    started = await start_agent(conn, found.home, opts.python)
    hello = await _hello(conn, found.home, opts.python)
    remember(st, node.name, opts.home, found.home, hello)
    action = "restarted" if stopped else ("started" if started else "already running")
    return NodeOutcome(node.name, action=action, value=hello)


async def stop_async(
    nodes: Sequence[Node],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
) -> Results[AgentOutcome]:
    """Shut agents down; their programs stop and come back with the next agent."""
    return await for_each(nodes, _stop_step, options, transport=transport, state=state)


async def _stop_step(conn: Connection, node: Node, st: State, opts: AgentOptions) -> AgentOutcome:
    found = await probe(conn, opts.home)
    if found is None or found.build is None:
        return NodeOutcome(node.name, action="no agent")
    stopped = await _shutdown(conn, found.home, None, opts.python)
    return NodeOutcome(node.name, action="stopped" if stopped else "not running")


async def status_async(
    nodes: Sequence[Node],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
) -> Results[AgentOutcome]:
    """Each agent's ``status`` (versions, build, pid, uptime, errors, programs)."""
    return await each_agent(nodes, _status_step, options, transport=transport, state=state)


async def _status_step(
    client: AgentClient, node: Node, st: State, opts: AgentOptions
) -> AgentOutcome:
    status = await client.call("status", timeout=opts.call_timeout)
    remember(st, node.name, opts.home, client.home, status)
    return NodeOutcome(node.name, value=status)


def build_skew(results: Results[AgentOutcome]) -> dict[str, list[str]]:
    """Running builds (``protocol/build``) → nodes; more than one key means skew."""
    skew: dict[str, list[str]] = {}
    for r in results:
        if r.ok and isinstance(r.value, dict):
            key = f"protocol {r.value.get('protocol')} build {r.value.get('build')}"
        elif isinstance(r.error, VersionMismatch):
            key = r.reason
        else:
            continue
        skew.setdefault(key, []).append(r.node)
    return skew


# -- programs ------------------------------------------------------------------


async def call_async(
    nodes: Sequence[Node],
    op_name: str,
    args: dict[str, Any] | None = None,
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    pull_events: bool = False,
    state: State | None = None,
) -> Results[AgentOutcome]:
    """One agent request on every node (``proc.start``, ``proc.status``...)."""
    step = partial(_call_step, op_name=op_name, args=dict(args or {}), pull_events=pull_events)
    return await each_agent(nodes, step, options, transport=transport, state=state)


async def _call_step(
    client: AgentClient,
    node: Node,
    st: State,
    opts: AgentOptions,
    *,
    op_name: str,
    args: dict[str, Any],
    pull_events: bool,
) -> AgentOutcome:
    value = await client.call(op_name, timeout=opts.call_timeout, **args)
    if pull_events:
        await eventlog.pull(client, st)
    return NodeOutcome(node.name, value=value)


def proc_spec(name: str, command: Sequence[str], **fields: Any) -> dict[str, Any]:
    """A program spec for ``proc.start`` (fields left None take the agent's defaults)."""
    spec: dict[str, Any] = {"name": name, "command": list(command)}
    spec.update({k: v for k, v in fields.items() if v is not None})
    return spec


async def proc_start_async(
    nodes: Sequence[Node],
    spec: dict[str, Any],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
) -> Results[AgentOutcome]:
    return await call_async(nodes, "proc.start", {"spec": spec}, options, transport=transport)


async def logs_async(
    node: Node,
    name: str,
    *,
    lines: int = 50,
    offset: int | None = None,
    options: AgentOptions | None = None,
    transport: Transport | None = None,
) -> AgentOutcome:
    """A program's log on one node: the last ``lines``, or the bytes after ``offset``."""
    args: dict[str, Any] = {"name": name, "lines": lines}
    if offset is not None:
        args["offset"] = offset
    results = await call_async([node], "proc.logs", args, options, transport=transport)
    return results[node.name]


async def pull_events_async(
    nodes: Sequence[Node],
    options: AgentOptions | None = None,
    *,
    transport: Transport | None = None,
    state: State | None = None,
) -> Results[AgentOutcome]:
    """Pull new events from every agent into the controller's state; value = rows added."""
    return await each_agent(nodes, _pull_step, options, transport=transport, state=state)


async def _pull_step(
    client: AgentClient, node: Node, st: State, opts: AgentOptions
) -> AgentOutcome:
    return NodeOutcome(node.name, value=await eventlog.pull(client, st))


LogSink = Callable[[str, str], None]


async def follow_logs(
    nodes: Sequence[Node],
    name: str,
    sink: LogSink,
    *,
    lines: int = 10,
    interval: float = 0.5,
    options: AgentOptions | None = None,
    transport: Transport | None = None,
    rounds: int | None = None,
) -> Results[AgentOutcome]:
    """Send each node's log of ``name`` to ``sink(node, text)``: the last ``lines``,
    then new output every ``interval`` seconds over one connection per node,
    until cancelled (or ``rounds`` polls, for tests)."""

    async def talk(client: AgentClient, node: Node, st: State, opts: AgentOptions) -> AgentOutcome:
        page = await client.call("proc.logs", name=name, lines=lines)
        if page["data"]:
            sink(node.name, page["data"])
        offset = int(page["offset"])
        count = 0
        while rounds is None or count < rounds:
            count += 1
            await asyncio.sleep(interval)
            page = await client.call("proc.logs", name=name, offset=offset)
            if page["data"]:
                sink(node.name, page["data"])
            offset = int(page["offset"])
        return NodeOutcome(node.name, value=offset)

    return await each_agent(nodes, talk, options, transport=transport)
