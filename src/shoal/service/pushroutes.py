"""Pushes as resources, versions and rollback: ``shoal push|versions|rollback`` over the API.

``POST /api/v1/pushes`` ``{"source_dir", "remote_dir", "selection", "options"}``
starts :func:`shoal.content.push.push_async` (the CLI's call) over the
service's connections and answers ``202 {"id", "href", "state"}`` at once.
``source_dir`` is a directory on the service's machine. ``options`` are
:class:`~shoal.content.push.PushOptions` fields (:data:`PUSH_OPTIONS`; rates
in bytes/s).

``GET /api/v1/pushes/{id}`` is its state: the latest progress (totals, and per
node: needed, received, from the source, from peers, state) and, once over,
each node's record (``push --json``'s) and the summary. ``GET
/api/v1/pushes/{id}/progress?follow=1`` is NDJSON: ``{"progress": P}`` at
each new snapshot (four a second while bytes move), ``{"result": R}`` per
node at the end, then ``{"end": PUSH}``. Health is recorded as the CLI
records a push (``Policy.REACHABILITY``).

``GET /api/v1/versions?remote_dir=&selection=`` is each node's current and
kept versions; ``POST /api/v1/rollback`` ``{"remote_dir", "selection", "to"?}``
switches back, one record per node (``versions|rollback --json``'s).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from shoal.agentlink.fleet import AgentOptions
from shoal.content.push import (
    NodePush,
    PushOptions,
    PushProgress,
    push_async,
    rollback_async,
    versions_async,
)
from shoal.errors import UsageError
from shoal.fanout.results import Results
from shoal.nodes import health
from shoal.nodes.select import resolve

from .jobs import ACCEPTED, Job, accepted, jobs
from .noderoutes import summary
from .routes import controller
from .runroutes import checked_options

router = APIRouter(prefix="/api/v1")

#: ``options`` keys a push accepts.
PUSH_OPTIONS = (
    "pack", "keep", "rate_limit", "source_rate", "allow_setuid", "replace_empty_dir",
    "durable", "install", "parallel", "timeout", "connect_timeout", "retries", "plain_data",
)  # fmt: skip


class PushRequest(BaseModel):
    """The body of ``POST /api/v1/pushes``."""

    source_dir: str
    remote_dir: str
    selection: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class RollbackRequest(BaseModel):
    """The body of ``POST /api/v1/rollback``."""

    remote_dir: str
    selection: str | None = None
    to: str | None = None


def push_options(raw: dict[str, Any]) -> PushOptions:
    """PushOptions from a request's ``options``; UsageError naming an unknown or bad one."""
    options: PushOptions = checked_options(PushOptions, raw, PUSH_OPTIONS, "push")
    if options.keep < 1:
        raise UsageError("push option keep must be at least 1")
    return options


def progress_json(p: PushProgress) -> dict[str, Any]:
    """A progress snapshot: the totals and every node's counts."""
    totals = {k: v for k, v in dataclasses.asdict(p).items() if k != "nodes"}
    nodes = {
        name: {
            "need_bytes": s.need_bytes,
            "received": s.received,
            "from_source": s.from_source,
            "from_peers": s.from_peers,
            "state": s.state,
        }
        for name, s in p.nodes.items()
    }
    return {**totals, "eta": p.eta, "nodes": nodes}


def push_record(n: NodePush, version: str) -> dict[str, Any]:
    """One node's push (``push --json``'s record)."""
    return {
        **n.to_json(),
        "previous": n.previous,
        "current": n.current,
        "received": n.received,
        "from_source": n.from_source,
        "from_peers": n.from_peers,
        "reused": n.reused,
        "version": version,
    }


@router.post(
    "/pushes",
    status_code=202,
    responses=ACCEPTED,
    summary="Start a push of a tree to a selection",
)
async def pushes(request: Request, body: PushRequest) -> JSONResponse:
    """``shoal push`` as a job: 202 with the push to follow (see the module docstring)."""
    if not body.remote_dir.strip():
        raise UsageError("push needs a remote_dir")
    options = push_options(body.options)
    ctl = controller(request)
    nodes = resolve(body.selection, state=ctl.state)

    async def work(job: Job) -> dict[str, Any]:
        result = await push_async(
            nodes, body.source_dir, body.remote_dir, options, transport=ctl.transport,
            state=ctl.state, on_progress=lambda p: job.set_progress(progress_json(p)),
        )  # fmt: skip
        await ctl.record_health(result, health.Policy.REACHABILITY)
        for n in result:
            job.add(push_record(n, result.version))
        return {
            **summary(result)["summary"],
            "version": result.version,
            "total_bytes": result.total_bytes,
            "files": result.files,
            "source_sent": result.source_sent,
            "skipped": result.skipped,
        }

    job = jobs(request).start("push", body.model_dump(), work)
    return JSONResponse(accepted(job), status_code=202, headers={"Location": job.href})


@router.get("/pushes", summary="List the pushes this service keeps")
async def list_pushes(request: Request) -> list[dict[str, Any]]:
    """The pushes, newest last, without their per-node records."""
    return [j.as_json(records=False) for j in jobs(request).list("push")]


@router.get("/pushes/{job_id}", summary="A push: progress per node, results, summary")
async def show_push(request: Request, job_id: str) -> dict[str, Any]:
    """The push's state, latest progress and (once over) per-node records."""
    return jobs(request).get("push", job_id).as_json()


@router.get(
    "/pushes/{job_id}/progress",
    summary="A push's progress per node as NDJSON (follow=1: live)",
    response_class=StreamingResponse,
)
async def push_progress(request: Request, job_id: str, follow: bool = False) -> StreamingResponse:
    """NDJSON of progress snapshots, per-node results, then the end (module docstring)."""
    job = jobs(request).get("push", job_id)
    stop = controller(request).stop

    async def lines() -> AsyncIterator[bytes]:
        if not follow:
            if job.progress is not None:
                yield _line({"progress": job.progress})
            for record in job.records:
                yield _line({"result": record})
            if job.done:
                yield _line({"end": job.as_json(records=False)})
            return
        async for item in job.follow(stop, progress=True):
            yield _line(item)

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _agent_records(results: Results[Any]) -> list[dict[str, Any]]:
    return [r.to_json() for r in results]


@router.get("/versions", summary="Each node's current and kept versions of a directory")
async def versions(
    request: Request, remote_dir: str, selection: str | None = None
) -> list[dict[str, Any]]:
    """``shoal versions --json``: one record per node (value: current and versions)."""
    ctl = controller(request)
    nodes = resolve(selection, state=ctl.state)
    found = await versions_async(nodes, remote_dir, AgentOptions(), transport=ctl.transport)
    await ctl.record_health(found, health.Policy.REACHABILITY)
    return _agent_records(found)


@router.post("/rollback", summary="Switch a directory back to its previous (or a named) version")
async def rollback(request: Request, body: RollbackRequest) -> list[dict[str, Any]]:
    """``shoal rollback --json``: one record per node (value: previous and current)."""
    ctl = controller(request)
    nodes = resolve(body.selection, state=ctl.state)
    switched = await rollback_async(
        nodes, body.remote_dir, body.to, AgentOptions(), transport=ctl.transport
    )
    await ctl.record_health(switched, health.Policy.REACHABILITY)
    return _agent_records(switched)


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
