"""Program logs with offsets, and an application's spec, logs and barriers.

``GET /api/v1/logs/{node}/{program}`` answers NDJSON ``{"data", "offset"}``
pages from the node's agent (its ``proc.logs`` request, the
call of ``shoal agent logs``): the last ``lines`` (default 50), or with
``offset=N`` the bytes after byte N of the log; ``follow=1`` keeps the answer
open and writes each new piece as it appears (read every ``interval``
seconds, default 0.5, over the node's held connection; the page's
``offset`` is where a reader resumes). A node not in the inventory is 404.
``GET /api/v1/logs/{node}/steps/{step}`` is the same for a one-shot step's
log (``step`` is the agent's id ``<app>.<component>.<step>``, its
``step.logs`` request); the step log of an application the node never ran is
the agent's refusal.

``GET /api/v1/apps/{name}/spec`` is the spec the application was brought up
from (as stored, with its file); ``.../logs`` the last lines of every step
and service log per node (``shoal app logs``; ``component``, ``node``,
``lines``); ``.../barriers`` each barrier's arrivals, need and release. An
unknown application is 404.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from shoal.agentlink.fleet import AgentOptions, call_async
from shoal.app import lifecycle, store
from shoal.errors import UnknownNameError, UsageError
from shoal.nodes import inventory
from shoal.nodes.select import resolve

from .routes import controller

router = APIRouter(prefix="/api/v1")


class Barrier(BaseModel):
    """One barrier of an application: arrivals, need, release time (null while waiting)."""

    barrier: str
    arrived: int
    needed: int
    released: float | None


class LogPage(BaseModel):
    """One page of a program's log (a line of ``GET /logs/...``'s NDJSON)."""

    data: str
    offset: int


#: The OpenAPI ``responses`` of the log stream: NDJSON lines of LogPage.
NDJSON_PAGES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "NDJSON: one LogPage per line",
        "content": {"application/x-ndjson": {"schema": LogPage.model_json_schema()}},
    }
}


def require_app(request: Request, name: str) -> store.AppRecord:
    """The stored application, or UnknownNameError (404) naming the known ones."""
    st = controller(request).state
    found = store.get_app(st, name)
    if found is None:
        known = ", ".join(store.list_apps(st)) or "none"
        raise UnknownNameError(f"no application named {name!r} (known: {known})")
    return found


@router.get(
    "/logs/{node}/{program}",
    summary="A program's log on a node, from an offset; follow=1 streams it",
    response_class=StreamingResponse,
    responses=NDJSON_PAGES,
)
async def program_log(
    request: Request,
    node: str,
    program: str,
    offset: int | None = None,
    lines: int = 50,
    follow: bool = False,
    interval: float = 0.5,
) -> StreamingResponse:
    """NDJSON pages ``{"data", "offset"}`` (see the module docstring)."""
    return await _log_pages(
        request, node, "proc.logs", {"name": program}, offset, lines, follow, interval
    )


@router.get(
    "/logs/{node}/steps/{step}",
    summary="A one-shot step's log on a node, from an offset; follow=1 streams it",
    response_class=StreamingResponse,
    responses=NDJSON_PAGES,
)
async def step_log(
    request: Request,
    node: str,
    step: str,
    offset: int | None = None,
    lines: int = 50,
    follow: bool = False,
    interval: float = 0.5,
) -> StreamingResponse:
    """NDJSON pages of the step ``<app>.<component>.<step>``'s log, as a program's."""
    return await _log_pages(
        request, node, "step.logs", {"id": step}, offset, lines, follow, interval
    )


async def _log_pages(
    request: Request,
    node: str,
    op: str,
    target: dict[str, Any],
    offset: int | None,
    lines: int,
    follow: bool,
    interval: float,
) -> StreamingResponse:
    """The NDJSON answer of ``op`` (``proc.logs``, ``step.logs``) about ``target``."""
    if offset is not None and offset < 0:
        raise UsageError(f"offset must be 0 or more, not {offset}")
    if lines < 0:
        raise UsageError(f"lines must be 0 or more, not {lines}")
    if not 0.05 <= interval <= 60:
        raise UsageError(f"interval must be between 0.05 and 60 seconds, not {interval}")
    ctl = controller(request)
    if node not in inventory.existing(ctl.state, [node]):
        raise UnknownNameError(f"unknown node(s) not in the inventory: {node}")
    (found,) = resolve(node, state=ctl.state)

    async def page(at: int | None) -> dict[str, Any]:
        args = dict(target, lines=lines, **({} if at is None else {"offset": at}))
        results = await call_async([found], op, args, AgentOptions(), transport=ctl.transport)
        outcome = results[found.name]
        if outcome.error is not None:
            raise outcome.error
        value: dict[str, Any] = outcome.value or {}
        return {"data": value["data"], "offset": int(value["offset"])}

    first = await page(offset)  # errors (unknown program, node down) answered as errors

    async def pages() -> AsyncIterator[bytes]:
        current = first
        yield _line(current)
        while follow and not ctl.stop.is_set():
            await asyncio.sleep(interval)
            current = await page(current["offset"])
            if current["data"]:
                yield _line(current)

    return StreamingResponse(pages(), media_type="application/x-ndjson")


@router.get("/apps/{name}/spec", summary="The spec an application was brought up from")
async def app_spec(request: Request, name: str) -> dict[str, Any]:
    """The stored spec document, its file and base directory."""
    record = require_app(request, name)
    return {"app": name, "file": record.file, "base": record.base, "spec": record.document}


@router.get("/apps/{name}/logs", summary="The last lines of an application's logs per node")
async def app_logs(
    request: Request,
    name: str,
    component: str | None = None,
    node: str | None = None,
    lines: int = 20,
) -> dict[str, str]:
    """``shoal app logs``: every step and service log's tail, by node."""
    require_app(request, name)
    if lines < 0:
        raise UsageError(f"lines must be 0 or more, not {lines}")
    return await lifecycle.logs_async(
        name, component=component, node=node, lines=lines, state=controller(request).state
    )


@router.get(
    "/apps/{name}/barriers",
    response_model=list[Barrier],
    summary="An application's barriers and their arrivals",
)
async def app_barriers(request: Request, name: str) -> list[dict[str, Any]]:
    """Each barrier: arrived, needed, released (a time, or null while waiting)."""
    require_app(request, name)
    found = store.barriers(controller(request).state, name)
    return [
        {"barrier": b.name, "arrived": b.arrived, "needed": b.needed, "released": b.released}
        for b in sorted(found.values(), key=lambda b: b.name)
    ]


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
