"""The dashboard's pages and assets: ``/`` and ``/ui/FILE``, all shipped in the package.

Everything the browser loads comes from ``shoal/web/static/`` (package data):
no CDN, no build step, so an air-gapped controller serves the whole dashboard.
The page is plain HTML with ES modules; it reads the REST API under
``/api/v1/`` for the initial state and follows ``GET /api/v1/events`` as
Server-Sent Events (an ``EventSource``; no reload, no polling). Assets are
answered with a strict Content-Security-Policy (scripts, styles and images from
the service's own origin only, no inline script) and ``Cache-Control:
no-cache`` so a service upgrade is picked up at the next load. An unknown asset
is 404; a name that leaves the static directory is never read.

:func:`mount` adds the router to the service's FastAPI app; the protocol check
of the API (the ``Shoal-Protocol`` header) covers ``/api/`` only, and the
page's own requests carry that header (its ``EventSource``, which cannot set
headers, gives ``protocol=1`` in its query).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse

#: Where the shipped assets live.
STATIC = Path(__file__).with_name("static")
#: Content types by suffix (the only files the dashboard ships).
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Only the service's own origin; no inline script; no framing by another site.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False)


def asset(name: str) -> Path | None:
    """The shipped file ``name`` (a plain file name in the static directory), else None."""
    if "/" in name or "\\" in name or name.startswith(".") or Path(name).suffix not in TYPES:
        return None
    path = STATIC / name
    return path if path.is_file() else None


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)


@router.get("/")
async def index() -> FileResponse:
    """The dashboard page."""
    return _file(STATIC / "index.html")


@router.get("/ui/{name}", response_model=None)
async def ui_asset(name: str) -> FileResponse | JSONResponse:
    """One shipped asset (script module, style sheet, the world outline)."""
    path = asset(name)
    if path is None:
        body = {"kind": "usage", "type": "UnknownNameError", "error": f"no dashboard file {name}"}
        return JSONResponse(body, status_code=404)
    return _file(path)


def page(scope: dict[str, Any]) -> bool:
    """Whether an ASGI request is for the dashboard's page or assets (not the API)."""
    path = str(scope.get("path", ""))
    return path == "/" or path.startswith("/ui/")


def query_protocol(scope: dict[str, Any]) -> str | None:
    """The ``protocol`` query parameter (an ``EventSource`` cannot send headers), or None."""
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    return next((v for k, v in parse_qsl(query) if k == "protocol"), None)


def mount(app: FastAPI) -> None:
    """Serve the dashboard from ``app`` (the service's app) at ``/`` and ``/ui/``."""
    app.include_router(router)
