"""The API's resource routers and the one request-body limit, installed on the service's app.

:func:`install` includes the routers of :data:`ROUTERS` (after the core ones of
:mod:`.routes`, :mod:`.noderoutes` and :mod:`.approutes`, so that a fixed path
such as ``/nodes/failed`` is matched before ``/nodes/{name}``) and wraps the
whole app in :class:`BodyLimit`: a request body over :data:`MAX_BODY` bytes is
answered 413 with kind ``usage`` before any handler reads it, whatever the
route (a declared ``Content-Length`` is refused at once; a chunked body is
counted as it arrives).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI

from shoal.errors import UsageError

from . import logroutes, pushroutes, runroutes, selectroutes
from .routes import error_response

#: Resource routers, included in this order.
ROUTERS = (selectroutes, runroutes, pushroutes, logroutes)
#: Largest request body accepted, in bytes.
MAX_BODY = 1 << 20


def install(app: FastAPI, max_body: int = MAX_BODY) -> None:
    """Include the resource routers and the body limit."""
    for module in ROUTERS:
        app.include_router(module.router)
    app.add_middleware(BodyLimit, limit=max_body)


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes."""

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(scope, receive, send, declared.decode("latin-1"))
                return
            await self.app(scope, receive, send)
            return
        # no length declared (chunked): read it here, within the limit, then replay it
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send, f"more than {self.limit}")
                return
        await self.app(scope, _replay([{"type": "http.request", "body": body}], receive), send)

    async def _refuse(
        self, scope: dict[str, Any], receive: Any, send: Callable[..., Awaitable[None]], size: str
    ) -> None:
        response = error_response(
            UsageError(f"request body too large: {size} bytes (the limit is {self.limit} bytes)")
        )
        response.status_code = 413
        await response(scope, receive, send)


def _replay(messages: list[dict[str, Any]], then: Any = None) -> Any:
    """A ``receive`` that gives ``messages`` first, then waits on ``then`` (disconnects)."""
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        message: dict[str, Any] = await then()
        return message

    return receive
