"""The service's application routes: list, status, up, down, and a sweep now.

``GET /api/v1/apps`` lists the applications in the state (with what the
keeper's last round found); ``GET /api/v1/apps/{name}`` is the status the
CLI's ``app status --json`` prints, read from the agents over the service's
connections. ``POST /api/v1/apps`` brings an application up from a spec path
on this machine (``{"spec": PATH, "select": {COMPONENT: EXPR}?, "stream":
bool?}``): it returns at once with the application to follow (its events are
topic ``app``), or, with ``stream``, answers NDJSON: one ``{"line": ...}`` per
progress line, then ``{"report": ...}`` or ``{"error": ...}``. ``POST
/api/v1/apps/{name}/down`` takes it down; ``POST /api/v1/sweep`` runs one
keeper round over every kept application now (with ``{"selection": EXPR}``:
the sweep of those nodes alone, each node's entry answered). Every ``up`` and ``down`` goes
through the keeper, one at a time per application.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from shoal.app import lifecycle, store
from shoal.app.appspec import AppSpec, load
from shoal.control.keeper import Keeper
from shoal.errors import ServiceError, ShoalError, UsageError

from .logroutes import require_app
from .routes import controller, error_response

router = APIRouter(prefix="/api/v1")


class UpRequest(BaseModel):
    """The body of ``POST /api/v1/apps``."""

    spec: str
    select: dict[str, str] | None = None
    stream: bool = False


def keeper(request: Request) -> Keeper:
    found = controller(request).keeper
    if not isinstance(found, Keeper):
        raise ServiceError("this service keeps no applications (no keeper loaded)")
    return found


def with_selection(spec: AppSpec, select: dict[str, str]) -> AppSpec:
    """``spec`` with the selection of some components replaced (kept in its document)."""
    unknown = sorted(set(select) - set(spec.components))
    if unknown:
        known = ", ".join(spec.components)
        raise UsageError(f"app {spec.name}: no component {', '.join(unknown)} (known: {known})")
    document = json.loads(json.dumps(spec.document))
    components = dict(spec.components)
    for name, expr in select.items():
        document["components"][name]["select"] = expr
        components[name] = dataclasses.replace(components[name], select=expr)
    return dataclasses.replace(spec, components=components, document=document)


@router.get("/apps")
async def apps(request: Request) -> list[dict[str, Any]]:
    """Every application in the state, with the keeper's last round of it."""
    k = keeper(request)
    out = []
    for name in store.list_apps(k.state):
        record = store.require_app(k.state, name)
        members = store.members(k.state, name)
        out.append(
            {
                "app": name,
                "status": record.status,
                "phase": record.phase,
                "file": record.file,
                "active": sum(1 for m in members if m.state == "active"),
                "kept": record.status in ("running", "starting"),
                "last_round": k.last.get(name),
            }
        )
    return out


@router.get("/apps/{name}")
async def app_status(request: Request, name: str) -> dict[str, Any]:
    """The application's status from its agents (``app status --json``); 404 if unknown."""
    require_app(request, name)
    k = keeper(request)
    opts = k.options()
    status = await lifecycle.status_async(name, opts.agent, state=k.state, transport=opts.transport)
    return status.as_json()


@router.post("/apps", response_model=None)
async def app_up(request: Request, body: UpRequest) -> dict[str, Any] | StreamingResponse:
    """Bring an application up (see the module docstring)."""
    k = keeper(request)
    spec = load(body.spec)
    if body.select:
        spec = with_selection(spec, body.select)
    if not body.stream:
        task = asyncio.ensure_future(k.up(spec))
        task.add_done_callback(lambda t: _failed(k, spec.name, t))
        return {"app": spec.name, "accepted": True, "follow": "/api/v1/events?topic=app"}
    return StreamingResponse(_progress(k, spec), media_type="application/x-ndjson")


def _failed(k: Keeper, name: str, task: asyncio.Future[Any]) -> None:
    """A detached up's failure: a journal event and a log line."""
    exc = None if task.cancelled() else task.exception()
    if exc is not None:
        k.up_failed(name, exc)


async def _progress(k: Keeper, spec: AppSpec) -> AsyncIterator[bytes]:
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    task = asyncio.ensure_future(k.up(spec, say=lines.put_nowait))
    task.add_done_callback(lambda _: lines.put_nowait(None))
    while (text := await lines.get()) is not None:
        yield _line({"line": text})
    try:
        report = task.result()
    except ShoalError as exc:
        yield _line({"error": json.loads(error_response(exc).body)})
    else:
        yield _line({"report": report.as_json()})


@router.post("/apps/{name}/down")
async def app_down(request: Request, name: str) -> dict[str, Any]:
    """Take the application down (its processes stopped, its files removed)."""
    report = await keeper(request).down(name)
    return {"app": report.app, "nodes": report.nodes}


class SweepRequest(BaseModel):
    """The body of ``POST /api/v1/sweep`` for a selection (``shoal sweep``)."""

    selection: str | None = None


@router.post("/sweep")
async def sweep(request: Request, body: SweepRequest | None = None) -> dict[str, Any]:
    """The sweep of the managed nodes, then one keeper round over every kept
    application, now. With a body: the sweep of the nodes ``selection`` names
    alone, each node's entry answered (``shoal sweep`` through the service)."""
    if body is not None:
        return await _sweep_nodes(controller(request), body.selection)
    swept = await controller(request).sweep()
    rounds = await keeper(request).sweep()
    return {
        "swept": swept,
        "apps": [
            {
                "app": r.app,
                "healthy": r.healthy,
                "busy": r.busy,
                "problems": r.problems,
                "restarted": [list(x) for x in r.restarted],
                "converged": r.converged,
                "shortfall": r.shortfall,
            }
            for r in rounds
        ],
    }


async def _sweep_nodes(ctl: Any, selection: str | None) -> dict[str, Any]:
    from shoal.nodes.select import resolve

    began = time.monotonic()
    nodes = resolve(selection, state=ctl.state)
    found = await ctl.sweep_nodes(nodes)
    entries = [dataclasses.asdict(e) for e in found]
    return {"entries": entries, "duration": time.monotonic() - began}


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"
