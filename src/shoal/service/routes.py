"""The service's own routes: status, the event stream, stop; and errors as JSON.

Handlers are ``async def``: they run in the service's loop, beside the
controller that owns the SQLite connection (a plain ``def`` would run in a
worker thread, where that connection may not be used).

``GET /api/v1/events`` answers newline-delimited JSON, one event per line in
sequence order. ``after=SEQ`` resumes exactly after that sequence number (a
``{"lost": ...}`` line first when retention pruned events the reader had not
seen); without it a read gives the newest ``limit`` (default 100) and a follow
starts at the newest. ``follow=1`` keeps the answer open: each new event is
written as it is committed (the journal wakes the stream, nothing polls) and a
``{"heartbeat": TIME, "last": SEQ}`` line goes out after each idle stretch so
the reader knows the service is alive; the stream ends when the service stops.

Errors (:func:`error_response`): ``{"kind", "error", "node"?, "type", "fields"?}``
with the CLI's kinds, mapped back to the class by :func:`shoal.client.error_from`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from shoal import __version__
from shoal.client import PROTOCOL
from shoal.control.controller import Controller
from shoal.control.journal import event_record
from shoal.errors import SelectionSyntaxError, ShoalError, UnknownNameError, UsageError
from shoal.nodes.select import resolve

router = APIRouter(prefix="/api/v1")

#: Rows read from the journal per query while streaming.
PAGE = 500
#: Events a plain read (no ``after``, no ``follow``) returns by default.
DEFAULT_TAIL = 100

_STATUS_BY_KIND = {
    "usage": 400,
    "selection": 400,
    "config": 400,
    "version": 400,
    "state": 503,
    "service": 503,
}


def error_response(exc: ShoalError) -> JSONResponse:
    """The JSON answer for a library error (status by kind; unknown names 404)."""
    status = 404 if isinstance(exc, UnknownNameError) else _STATUS_BY_KIND.get(exc.kind, 500)
    body: dict[str, Any] = {"kind": exc.kind, "error": str(exc), "type": type(exc).__name__}
    if exc.node:
        body["node"] = exc.node
    if isinstance(exc, SelectionSyntaxError):
        body["pointer"] = exc.pointer()  # the CLI's caret lines under its message
    fields = {
        k: v
        for k, v in vars(exc).items()
        if k != "node" and isinstance(v, str | int | float | bool) and not k.startswith("_")
    }
    if fields:
        body["fields"] = fields
    return JSONResponse(body, status_code=status)


def controller(request: Request) -> Controller:
    ctl: Controller = request.app.state.controller
    return ctl


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    """The service: pid, version, protocol, TCP listeners, uptime, nodes, apps, schedules."""
    return {
        "pid": os.getpid(),
        "version": __version__,
        "protocol": PROTOCOL,
        "listen": getattr(request.app.state, "listen", []),
        **controller(request).status(),
    }


@router.get("/events")
async def events(
    request: Request,
    after: int | None = None,
    follow: bool = False,
    node: str | None = None,
    topic: str | None = None,
    limit: int | None = None,
    selection: str | None = None,
) -> StreamingResponse:
    """Events as NDJSON, or as Server-Sent Events with ``Accept: text/event-stream``
    (see the module docstring and :mod:`.eventstream`)."""
    from . import eventstream

    sse = eventstream.wants_sse(request.headers.get("accept"))
    if sse:
        follow = True
        if after is None:
            after = eventstream.last_event_id(request.headers.get("last-event-id"))
    if after is not None and after < 0:
        raise UsageError(f"after must be a sequence number (0 or more), not {after}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, not {limit}")
    ctl = controller(request)
    lines = _lines(ctl, after, follow, node, topic, limit)
    if selection is not None:
        names = {n.name for n in resolve(selection, state=ctl.state)}
        lines = eventstream.only_nodes(lines, names)
    if sse:
        return StreamingResponse(eventstream.as_sse(lines), media_type=eventstream.SSE,
                                 headers={"Cache-Control": "no-cache"})  # fmt: skip
    return StreamingResponse(lines, media_type="application/x-ndjson")


async def _lines(
    ctl: Controller,
    after: int | None,
    follow: bool,
    node: str | None,
    topic: str | None,
    limit: int | None,
) -> AsyncIterator[bytes]:
    journal, stop = ctl.journal, ctl.stop
    check_lost = after is not None
    if after is None:
        after = (
            journal.last
            if follow
            else journal.tail_start(limit or DEFAULT_TAIL, node=node, topic=topic)
        )
        if not follow:
            limit = limit or DEFAULT_TAIL
    left = limit
    beat = ctl.config.stream_heartbeat
    while True:
        page = journal.read(after, node=node, topic=topic, limit=min(PAGE, left or PAGE))
        if check_lost and page.lost:
            yield _line({"lost": {"after": after, "pruned_through": page.lost}})
        check_lost = False
        if page.events:
            yield b"".join(_line(event_record(r)) for r in page.events)
        after = page.last
        if left is not None:
            left -= len(page.events)
            if left <= 0:
                return
        if len(page.events) >= PAGE:
            continue
        if not follow or stop.is_set():
            return
        if not await journal.wait(after, beat, stop) and not stop.is_set():
            yield _line({"heartbeat": time.time(), "last": after})


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


@router.post("/service/stop")
async def stop_service(request: Request) -> dict[str, Any]:
    """Stop the service: it answers first, then closes links, the socket and the lock."""
    controller(request).stop.set()
    return {"stopping": True, "pid": os.getpid()}
