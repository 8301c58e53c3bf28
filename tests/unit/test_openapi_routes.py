"""The OpenAPI document of `shoal serve` against the routes it actually serves, and the
pure pieces of the API faces: the one body limit, SSE framing, Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from shoal.errors import UsageError
from shoal.service import eventstream
from shoal.service.resources import BodyLimit
from shoal.service.servedaemon import build_app

METHODS = {"GET", "PUT", "POST", "DELETE", "PATCH"}


class _Controller:
    """build_app only stores the controller; no route is called here."""


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return build_app(_Controller())  # type: ignore[arg-type]


def _routes(app: FastAPI) -> list[Any]:
    """Every route the app serves, included routers walked (FastAPI >= 0.165 nests them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def served(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every schema route as the app matches it."""
    return [
        (method, route.path_format)
        for route in _routes(app)
        if isinstance(getattr(route, "original_route", route), APIRoute) and route.include_in_schema
        for method in route.methods
        if method in METHODS
    ]


def documented(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in METHODS
    ]


def test_the_document_is_at_its_address_and_openapi_3(app: FastAPI) -> None:
    assert app.openapi_url == "/api/v1/openapi.json"
    assert app.openapi()["openapi"].startswith("3.")


def test_every_served_route_is_documented_and_nothing_else(app: FastAPI) -> None:
    routes, doc = served(app), documented(app.openapi())
    assert len(routes) > 30  # the whole API is there, not an empty app
    twice = [k for k, n in Counter(routes).items() if n > 1]
    assert not twice, f"served twice (the second is never reached): {twice}"
    assert set(routes) - set(doc) == set(), "served but not in the document"
    assert set(doc) - set(routes) == set(), "documented but not served"


def test_every_route_has_a_summary_and_a_description(app: FastAPI) -> None:
    doc = app.openapi()
    missing = [
        (method, path)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if not op.get("summary") or not (op.get("description") or "").strip()
    ]
    assert not missing
    # a summary of its own, not FastAPI's title-cased function name, on the resource routes
    for route in _routes(app):
        if isinstance(getattr(route, "original_route", route), APIRoute) and (
            route.endpoint.__module__.endswith(
                ("selectroutes", "runroutes", "pushroutes", "logroutes")
            )
        ):
            assert route.summary, route.path_format


def test_bodies_are_typed_in_the_document(app: FastAPI) -> None:
    doc = app.openapi()
    for path, method in (
        ("/api/v1/select", "post"),
        ("/api/v1/runs", "post"),
        ("/api/v1/copies", "post"),
        ("/api/v1/pushes", "post"),
        ("/api/v1/rollback", "post"),
    ):
        schema = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert "$ref" in schema["schema"], path
    for path in ("/api/v1/runs", "/api/v1/copies", "/api/v1/pushes"):
        answer = doc["paths"][path]["post"]["responses"]["202"]["content"]["application/json"]
        assert answer["schema"]["$ref"].endswith("/Accepted"), path
    select = doc["paths"]["/api/v1/select"]["post"]["responses"]["200"]["content"]
    assert select["application/json"]["schema"]["$ref"].endswith("/Selection")
    logs = doc["paths"]["/api/v1/logs/{node}/{program}"]["get"]["responses"]["200"]["content"]
    assert "application/x-ndjson" in logs


# -- the body limit ---------------------------------------------------------------------


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % len(body)})


def _call(headers: list[tuple[bytes, bytes]], parts: list[bytes]) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(BodyLimit(_echo, limit=10)(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_declared_body_over_the_limit_is_413_before_the_app() -> None:
    status, body = _call([(b"content-length", b"11")], [b"x" * 11])
    assert status == 413
    answer = json.loads(body)
    assert answer["kind"] == "usage" and "too large: 11 bytes" in answer["error"]
    assert _call([(b"content-length", b"10")], [b"x" * 10]) == (200, b"10")


def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    assert _call([], [b"x" * 6, b"x" * 5])[0] == 413
    assert _call([], [b"x" * 6, b"x" * 4]) == (200, b"10")


# -- SSE ---------------------------------------------------------------------------------


async def _lines(*records: dict[str, Any]) -> AsyncIterator[bytes]:
    yield b"".join(json.dumps(r).encode() + b"\n" for r in records)


async def _collect(lines: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in lines])


def test_sse_frames_events_heartbeats_and_lost() -> None:
    out = asyncio.run(
        _collect(
            eventstream.as_sse(
                _lines(
                    {"lost": {"after": 1, "pruned_through": 3}},
                    {"seq": 4, "topic": "node", "node": "n1"},
                    {"heartbeat": 1.0, "last": 4},
                )
            )
        )
    )
    frames = out.decode().split("\n\n")
    assert frames[0] == "retry: 1000"
    assert frames[1].startswith("event: lost\ndata: ")
    assert frames[2] == 'id: 4\nevent: node\ndata: {"seq": 4, "topic": "node", "node": "n1"}'
    assert frames[3] == ": heartbeat 4"


def test_the_selection_filter_keeps_its_nodes_and_the_stream_lines() -> None:
    lines = _lines({"seq": 1, "node": "n1"}, {"seq": 2, "node": "n2"}, {"seq": 3, "node": None},
                   {"heartbeat": 1.0, "last": 3})  # fmt: skip
    kept = asyncio.run(_collect(eventstream.only_nodes(lines, {"n2"}))).splitlines()
    assert [json.loads(k) for k in kept] == [
        {"seq": 2, "node": "n2"},
        {"heartbeat": 1.0, "last": 3},
    ]


def test_last_event_id() -> None:
    assert eventstream.last_event_id(None) is None
    assert eventstream.last_event_id(" 42 ") == 42
    with pytest.raises(UsageError, match="Last-Event-ID"):
        eventstream.last_event_id("4x")
