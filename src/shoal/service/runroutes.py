"""Runs and copies as resources: start at once, read or follow per-node results.

``POST /api/v1/runs`` (the body of :mod:`.noderoutes`) and ``POST
/api/v1/copies`` ``{"selection", "paths": [SRC..., DST], "options"}`` answer
``202 {"id", "href", "state"}`` at once; the fan-out goes on in the service
over the warm connections, through the same library calls as ``shoal run``
and ``shoal cp`` (``cp``'s paths: ``@:PATH`` on the nodes' side, ``@`` in a
local destination fans in). With ``stream=1`` they answer the NDJSON of
:mod:`.noderoutes` instead (what the CLI reads). A job is that same stream,
consumed by the service and kept: health is recorded once when it ends, as
the CLI records it (``Policy.OUTCOME``).

``GET /api/v1/{runs,copies}`` lists them, ``GET .../{id}`` is the state and
the per-node results so far (``run --json``'s records, in the order nodes
finished), ``GET .../{id}/results`` answers NDJSON: each node's record, then
``{"summary": ...}`` (``{"error": ...}`` if the operation failed as a whole,
``{"cancelled": true}``); with ``follow=1`` each record is written as its node
finishes, and ``start=N`` skips the first N. ``DELETE .../{id}`` cancels one
that is still running (the nodes' commands are ended, as by Ctrl-C).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from shoal.errors import UsageError
from shoal.fanout.options import FanoutOptions
from shoal.nodes import health
from shoal.nodes.select import resolve

from . import fastpathroute, noderoutes
from .jobs import ACCEPTED, COLLECTIONS, Job, accepted, jobs
from .routes import controller

router = APIRouter(prefix="/api/v1")

#: ``options`` keys a copy accepts (FanoutOptions fields a client may set).
COPY_OPTIONS = ("timeout", "parallel", "retries", "connect_timeout", "delay")


class CopyRequest(BaseModel):
    """The body of ``POST /api/v1/copies``: ``shoal cp``'s ``SRC... DST`` and options."""

    selection: str | None = None
    paths: list[str]
    options: dict[str, Any] = Field(default_factory=dict)


def start_streamed(
    request: Request, kind: str, body: dict[str, Any], streamed: StreamingResponse
) -> JSONResponse:
    """A fan-out's NDJSON answer (:mod:`.noderoutes`, not started yet) run as a job instead:
    202 at once; each node's record kept as it finishes, the summary at the end. The
    stream records health itself, so a job is exactly the streamed answer, kept."""

    async def work(job: Job) -> dict[str, Any]:
        found: dict[str, Any] = {}
        async for chunk in streamed.body_iterator:
            raw = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
            for line in raw.splitlines():
                record = json.loads(line)
                if "summary" in record:
                    found = record["summary"]
                else:
                    job.add(record)
        return found

    job = jobs(request).start(kind, body, work)
    return JSONResponse(accepted(job), status_code=202, headers={"Location": job.href})


@router.post(
    "/runs",
    status_code=202,
    response_model=None,
    responses=ACCEPTED,
    summary="Start a run on a selection (202 with the run to follow; stream=1: NDJSON)",
)
async def runs(
    request: Request, body: noderoutes.RunRequest, stream: bool = False
) -> StreamingResponse | JSONResponse:
    """``shoal run`` over the warm connections: a run to follow, or with ``stream=1`` each
    node's record as NDJSON then the summary (:mod:`.noderoutes`)."""
    streamed = await noderoutes.runs(request, body)  # the request is checked here
    if stream:
        return streamed
    return start_streamed(request, "run", body.model_dump(), streamed)


router.add_api_route(
    "/cli/run",
    fastpathroute.cli_run,
    methods=["POST"],
    response_model=None,
    summary="shoal run's fast path: the command line in, the CLI's output out (frames)",
)


def checked_options(cls: Any, raw: dict[str, Any], allowed: tuple[str, ...], what: str) -> Any:
    """``cls(**raw)`` for a request's ``options``: only ``allowed`` keys, each value of its
    field's annotated type, then ``validate()``; UsageError naming the first bad one."""
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        known = ", ".join(allowed)
        raise UsageError(f"unknown {what} option(s): {', '.join(unknown)} (known: {known})")
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        if not _of_type(value, types.get(key, "Any")):
            raise UsageError(f"{what} option {key} has the wrong type: {value!r} ({types[key]})")
    options = cls(**raw)
    options.validate()
    return options


def _of_type(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a dataclass field's annotation (its text)."""
    if value is None:
        return "None" in annotation or "Any" in annotation
    if isinstance(value, bool):
        return "bool" in annotation or "Any" in annotation
    checks = (("bool", bool), ("float", (int, float)), ("int", int), ("str", str), ("dict", dict))
    for name, kinds in checks:
        if name in annotation:
            return isinstance(value, kinds)
    return True


def copy_options(raw: dict[str, Any]) -> FanoutOptions:
    """FanoutOptions from a request's ``options``; UsageError naming an unknown or bad one."""
    options: FanoutOptions = checked_options(FanoutOptions, raw, COPY_OPTIONS, "copy")
    return options


@router.post(
    "/copies",
    status_code=202,
    response_model=None,
    responses=ACCEPTED,
    summary="Start a copy (shoal cp) on a selection (202; stream=1: NDJSON)",
)
async def copies(
    request: Request, body: CopyRequest, stream: bool = False
) -> StreamingResponse | JSONResponse:
    """``shoal cp`` as a job: 202 with the copy to follow (see the module docstring), or
    with ``stream=1`` NDJSON as a run answers."""
    from shoal.fanout.copies import copy_async, plan_copy

    plan_copy(body.paths)  # a bad form is refused before any node is touched
    options = copy_options(body.options)
    ctl = controller(request)
    nodes = resolve(body.selection, state=ctl.state)
    transport = ctl.transport
    streamed = noderoutes._streamed(
        lambda on_result: copy_async(
            nodes, body.paths, options, transport=transport, on_result=on_result
        ),
        health.Policy.OUTCOME,
        ctl,
    )
    if stream:
        return streamed
    return start_streamed(request, "copy", body.model_dump(), streamed)


def final_line(job: Job) -> dict[str, Any]:
    """The last line of a finished job's results."""
    if job.state == "done":
        return {"summary": job.summary}
    if job.state == "cancelled":
        return {"cancelled": True}
    return {"error": job.error}


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


async def result_lines(job: Job, follow: bool, start: int, stop: Any) -> AsyncIterator[bytes]:
    if not follow:
        for record in job.records[max(0, start) :]:
            yield _line(record)
        if job.done:
            yield _line(final_line(job))
        return
    async for item in job.follow(stop, start):
        if "result" in item:
            yield _line(item["result"])
        elif "end" in item:
            yield _line(final_line(job))


def _add_resource_routes(kind: str) -> None:
    """List, show, results and cancel for one kind of fan-out job."""
    collection = COLLECTIONS[kind]

    async def listed(request: Request) -> list[dict[str, Any]]:
        """The jobs of this kind, newest last, without their per-node records."""
        return [j.as_json(records=False) for j in jobs(request).list(kind)]

    async def show(request: Request, job_id: str) -> dict[str, Any]:
        """State, request, summary or error, and the per-node records so far."""
        return jobs(request).get(kind, job_id).as_json()

    async def results(
        request: Request, job_id: str, follow: bool = False, start: int = 0
    ) -> StreamingResponse:
        """NDJSON: each node's record, then the summary (see the module docstring)."""
        job = jobs(request).get(kind, job_id)
        lines = result_lines(job, follow, start, controller(request).stop)
        return StreamingResponse(lines, media_type="application/x-ndjson")

    async def cancel(request: Request, job_id: str) -> dict[str, Any]:
        """Cancel it if it still runs (its nodes' work is ended)."""
        job = jobs(request).get(kind, job_id)
        if not job.done and job.task is not None:
            job.task.cancel()
        return {"id": job.id, "state": job.state, "cancelling": not job.done}

    base = f"/{collection}"
    router.add_api_route(base, listed, methods=["GET"], name=f"list_{collection}",
                         summary=f"List the {collection} this service keeps")  # fmt: skip
    router.add_api_route(f"{base}/{{job_id}}", show, methods=["GET"], name=f"show_{kind}",
                         summary=f"A {kind}: state and per-node results so far")  # fmt: skip
    router.add_api_route(
        f"{base}/{{job_id}}/results", results, methods=["GET"], name=f"{kind}_results",
        summary=f"A {kind}'s per-node results as NDJSON (follow=1: as nodes finish)",
        response_class=StreamingResponse,
    )  # fmt: skip
    router.add_api_route(f"{base}/{{job_id}}", cancel, methods=["DELETE"],
                         name=f"cancel_{kind}", summary=f"Cancel a running {kind}")  # fmt: skip


_add_resource_routes("run")
_add_resource_routes("copy")
