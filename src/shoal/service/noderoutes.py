"""The service's node routes: warm runs, program operations, the nodes and the failed set.

``POST /api/v1/runs`` ``{"selection", "command", "options"}`` runs the command
on the selected nodes over the links' held connections (no new SSH connection
for a node whose link is up) and answers NDJSON: one line per node as it
finishes, in the JSON form of :meth:`shoal.fanout.results.NodeOutcome.to_json`
(``run --json``'s records), then ``{"summary": {"nodes", "kinds": {KIND: count},
"ok", "duration"}}``. ``options`` are :class:`~shoal.fanout.options.RunOptions`
fields (``timeout``, ``parallel``, ``env``, ``sudo``, ``retries``,
``connect_timeout``, ``delay``); any other key is refused.

``POST /api/v1/proc/{action}`` (``status``, ``start``, ``stop``, ``restart``,
``logs``, ``remove``) ``{"selection", "name"?, "spec"?, "lines"?, "offset"?}``
sends the agent request to every selected node over the warm connections,
answered the same way.

Health is recorded exactly as the CLI records it, once per request, after the
fan-out: ``Policy.OUTCOME`` for runs, ``Policy.REACHABILITY`` for program
operations (:func:`shoal.nodes.health.record`), by the service's writer thread
(:meth:`~shoal.control.controller.Controller.record_health`).

``POST /api/v1/logs/collect`` ``{"selection", "app"?, "free"?}`` is ``shoal
logs collect`` over the warm connections, into the service's central store
(:mod:`shoal.ops.logcollect`), one at a time with the scheduled ``logs`` job
(:attr:`~shoal.control.controller.Controller.logs_lock`), its writes through
the service's writer thread and its segment files written off the loop: one
line per node
whose ``value`` is :meth:`~shoal.ops.logcollect.Collected.to_json`, then the
summary; health recorded as for program operations.

``GET /api/v1/nodes`` lists the inventory (or ``?selection=``) with each node's
link state and reason, its failed-set reason and its live facts;
``GET /api/v1/nodes/failed`` the failed set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from shoal.agentlink.fleet import AgentOptions, call_async
from shoal.control.controller import Controller
from shoal.errors import UsageError
from shoal.fanout.options import RunOptions
from shoal.fanout.results import KINDS, NodeOutcome, Results
from shoal.nodes import health
from shoal.nodes.model import Node
from shoal.nodes.select import resolve

from .inventorycache import inventory_cache

router = APIRouter(prefix="/api/v1")

#: ``options`` keys a run accepts (RunOptions fields a client may set).
RUN_OPTIONS = (
    "timeout", "parallel", "env", "sudo", "retries", "connect_timeout", "delay", "max_output",
)  # fmt: skip
#: Program actions and the agent request each one sends.
PROC_ACTIONS = {
    "status": "proc.status",
    "start": "proc.start",
    "stop": "proc.stop",
    "restart": "proc.restart",
    "logs": "proc.logs",
    "remove": "proc.remove",
}


class RunRequest(BaseModel):
    selection: str | None = None
    command: str
    options: dict[str, Any] = Field(default_factory=dict)


class CollectRequest(BaseModel):
    selection: str | None = None
    app: str | None = None
    free: bool = False


class ProcRequest(BaseModel):
    selection: str | None = None
    name: str | None = None
    spec: dict[str, Any] | None = None
    lines: int | None = None
    offset: int | None = None


def _controller(request: Request) -> Controller:
    ctl: Controller = request.app.state.controller
    return ctl


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def run_options(raw: dict[str, Any]) -> RunOptions:
    """RunOptions from a request's ``options``; UsageError naming an unknown or bad one."""
    unknown = sorted(set(raw) - set(RUN_OPTIONS))
    if unknown:
        raise UsageError(f"unknown run option(s): {', '.join(unknown)} (known: "
                         f"{', '.join(RUN_OPTIONS)})")  # fmt: skip
    try:
        options = RunOptions(**raw)
    except TypeError as exc:
        raise UsageError(f"bad run options: {exc}") from None
    if not isinstance(options.env, dict) or not all(
        isinstance(v, str) for v in options.env.values()
    ):
        raise UsageError("run option env must map names to strings")
    options.validate()
    return options


def summary(results: Results[Any]) -> dict[str, Any]:
    """The last line of an answer: counts per kind, ok, duration."""
    groups = results.by_kind()
    return {
        "summary": {
            "nodes": len(results),
            "kinds": {kind: len(groups[kind]) for kind in KINDS},
            "ok": results.ok,
            "duration": round(results.duration, 4),
        }
    }


def _streamed(
    fanout: Callable[[Callable[[NodeOutcome[Any]], None]], Awaitable[Results[Any]]],
    policy: health.Policy,
    ctl: Controller,
) -> StreamingResponse:
    """NDJSON of each node's outcome as it comes, then the summary; health recorded once.
    Outcomes already queued when one is written go with it: 32 nodes answering within
    a millisecond are a few writes to the client, not 32 (each a wake-up on both sides)."""

    async def lines() -> AsyncIterator[bytes]:
        queue: asyncio.Queue[NodeOutcome[Any] | None] = asyncio.Queue()
        task = asyncio.ensure_future(fanout(queue.put_nowait))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            ended = False
            while not ended:  # the outcomes that came together go in one chunk (one write)
                batch = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                ended = batch[-1] is None
                if len(batch) > ended:
                    yield b"".join(_line(o.to_json()) for o in batch if o is not None)
            results = task.result()
            await ctl.record_health(results, policy)
            yield _line(summary(results))
        finally:
            if not task.done():  # the client went away: stop the nodes' work
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def runs(request: Request, body: RunRequest) -> StreamingResponse:
    """A warm ``run`` (see the module docstring; ``POST /api/v1/runs`` is
    :mod:`.runroutes`, which answers with this stream for ``stream=1``)."""
    from shoal.fanout.commands import run_async

    if not body.command.strip():
        raise UsageError("run needs a command")
    ctl = _controller(request)
    options = run_options(body.options)
    nodes = resolve(body.selection, state=ctl.state)
    transport = ctl.transport
    return _streamed(
        lambda on_result: run_async(
            nodes, body.command, options, transport=transport, on_result=on_result
        ),
        health.Policy.OUTCOME,
        ctl,
    )


def proc_args(action: str, body: ProcRequest) -> dict[str, Any]:
    """The agent request's arguments for a program action; UsageError when one is missing."""
    if action not in PROC_ACTIONS:
        raise UsageError(f"unknown program action {action!r} (known: {', '.join(PROC_ACTIONS)})")
    if action == "start":
        if body.spec is None:
            raise UsageError("proc start needs a spec")
        return {"spec": body.spec}
    args: dict[str, Any] = {}
    if body.name is not None:
        args["name"] = body.name
    elif action != "status":
        raise UsageError(f"proc {action} needs a program name")
    if action == "logs":
        args["lines"] = body.lines if body.lines is not None else 50
        if body.offset is not None:
            args["offset"] = body.offset
    return args


@router.post("/proc/{action}")
async def proc(request: Request, action: str, body: ProcRequest) -> StreamingResponse:
    """One program operation on every selected node, over the warm connections."""
    args = proc_args(action, body)
    ctl = _controller(request)
    nodes = resolve(body.selection, state=ctl.state)
    transport = ctl.transport

    async def fanout(on_result: Callable[[NodeOutcome[Any]], None]) -> Results[Any]:
        results = await call_async(
            nodes, PROC_ACTIONS[action], args, AgentOptions(), transport=transport,
            state=ctl.state,
        )  # fmt: skip
        for outcome in results:
            on_result(outcome)
        return results

    return _streamed(fanout, health.Policy.REACHABILITY, ctl)


@router.post("/logs/collect")
async def logs_collect(request: Request, body: CollectRequest) -> StreamingResponse:
    """``shoal logs collect`` over the warm connections (see the module docstring)."""
    from shoal.ops import logcollect

    ctl = _controller(request)
    nodes = resolve(body.selection, state=ctl.state)
    options = logcollect.CollectOptions(app=body.app, free=body.free)

    async def fanout(on_result: Callable[[NodeOutcome[Any]], None]) -> Results[Any]:
        async with ctl.logs_lock:
            results = await logcollect.collect_async(
                nodes, options, AgentOptions(), transport=ctl.transport, state=ctl.state,
                write=ctl.journal.submit,
            )  # fmt: skip
        for outcome in results:
            if outcome.value is not None:
                outcome.value = outcome.value.to_json()
            on_result(outcome)
        return results

    return _streamed(fanout, health.Policy.REACHABILITY, ctl)


def _link_status(ctl: Controller) -> dict[str, dict[str, Any]]:
    links = getattr(ctl.links, "links", None)
    if links is None:
        return {}
    return {row["node"]: row for row in links.status()}


def node_record(
    node: Node, link: dict[str, Any] | None, failed: str | None, facts: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": node.name,
        "host": node.host,
        "user": node.user,
        "port": node.port,
        "groups": list(node.groups),
        "attrs": dict(node.attrs),
        "link": link["link"] if link else None,
        "link_reason": link["reason"] if link else None,
        "failed": failed,
        "facts": facts,
    }


@router.get("/nodes")
async def nodes(request: Request, selection: str | None = None) -> list[dict[str, Any]]:
    """The nodes with link state, failed reason and facts (live ones where the links see);
    what the state holds comes from the service's snapshot (:mod:`.inventorycache`)."""
    ctl = _controller(request)
    snap = inventory_cache(request).snapshot(ctl.state)
    # a selection, or an empty inventory (refused as the CLI refuses it): resolved
    chosen = snap.nodes if selection is None and snap.nodes else resolve(selection, state=ctl.state)
    links = _link_status(ctl)
    out = []
    for node in chosen:
        link = links.get(node.name)
        facts: dict[str, Any] = dict(snap.facts.get(node.name, ()))
        if link:
            facts.update(link.get("facts", {}))
        out.append(node_record(node, link, snap.failed.get(node.name), facts))
    return out


@router.get("/nodes/failed")
async def failed_nodes(request: Request) -> list[dict[str, Any]]:
    """The failed set: name, reason, since, updated (natural order)."""
    return [dataclasses.asdict(f) for f in health.failures(_controller(request).state)]
