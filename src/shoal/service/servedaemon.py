"""``shoal serve``'s process: one per state directory, the API on an owner-only Unix socket.

:func:`serve` runs in the foreground (as systemd expects) until SIGTERM,
SIGINT or ``POST /api/v1/service/stop``:

* **Lock**: ``serve.lock`` in the state directory, ``flock``-ed for the life
  of the process with its pid inside; a second start fails with "shoal serve
  already runs for DIR (pid N)". The kernel drops the lock when the process
  dies, however it dies.
* **Socket**: ``serve.sock`` beside it, bound under umask 0177 (so it is
  0600 from its first instant, not chmod-ed after) in the 0700 state
  directory. A socket left by a killed service is replaced (holding the lock
  proves it stale). Each connection's peer credentials (``SO_PEERCRED``) are
  checked: a uid other than the service's is cut before a byte is read.
* **TCP** only when asked (``listen``: ``shoal serve --listen HOST:PORT``),
  each listener behind :class:`.access.TokenGate` (bearer tokens, the
  browser's session cookie, the cross-site check); nothing listens on TCP
  otherwise.
* **HTTP**: FastAPI served by uvicorn in the service's own event loop, beside
  the :class:`~shoal.control.controller.Controller`; uvicorn's own signal
  capture is turned off (this module owns SIGTERM/SIGINT). Every request must
  carry ``Shoal-Protocol: 1``; another value or none is answered 400 naming
  both versions. Library errors become JSON (:func:`.routes.error_response`).
* **Stop**: streams end, links and schedules stop, "service stopped" is
  journaled, the socket is removed and the lock released.

Routers: :mod:`.routes` (status, events, stop), :mod:`.noderoutes` (nodes,
runs, programs), :mod:`.approutes` (applications, sweep), :mod:`.xmlrpc`
(``/RPC2``) and :mod:`.metrics` (``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from shoal.client import PROTOCOL, PROTOCOL_HEADER, SOCKET_NAME
from shoal.control.controller import Controller, ServiceConfig
from shoal.errors import ServiceError, ShoalError, UsageError
from shoal.web import dashboard

from . import access, approutes, metrics, noderoutes, resources, routes, xmlrpc
from .servelock import ServiceLock

log = logging.getLogger("shoal.serve")


class PeerCheckedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, refusing a peer whose uid is not the service's."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        uid = _peer_uid(transport)
        if uid != os.geteuid():
            log.warning(
                "refused a connection from uid %s (the service runs as uid %s)", uid, os.geteuid()
            )
            transport.abort()


def _peer_uid(transport: asyncio.BaseTransport) -> int | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _Server(uvicorn.Server):
    """uvicorn without its signal capture: the service owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_app(ctl: Controller) -> FastAPI:
    """The service's ASGI app over ``ctl``: every router, the protocol check, JSON errors."""
    app = FastAPI(
        title="shoal serve",
        version=str(PROTOCOL),
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.controller = ctl
    for module in (routes, noderoutes, approutes, xmlrpc, metrics):
        app.include_router(module.router)
    resources.install(app)  # the resource routers and the one body limit
    dashboard.mount(app)  # the web dashboard at / and /ui/

    @app.exception_handler(ShoalError)
    async def shoal_error(request: Request, exc: ShoalError) -> JSONResponse:
        return routes.error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return routes.error_response(UsageError(f"bad request: {problems}"))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        body = {"kind": "error", "type": "ShoalError", "error": f"internal error: {exc!r}"}
        return JSONResponse(body, status_code=500)

    app.add_middleware(_ProtocolMiddleware)
    return app


#: Paths other protocols' clients call (XML-RPC, Prometheus): no Shoal-Protocol header.
UNVERSIONED = frozenset({"/RPC2", "/metrics"})


class _ProtocolMiddleware:
    """ASGI middleware: every request carries ``Shoal-Protocol: PROTOCOL``, else 400
    (except on :data:`UNVERSIONED` paths)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in UNVERSIONED or dashboard.page(scope):
            await self.app(scope, receive, send)
            return
        want = PROTOCOL_HEADER.lower().encode()
        got = next((v.decode("latin-1") for k, v in scope["headers"] if k == want), None)
        got = got if got is not None else dashboard.query_protocol(scope)  # EventSource
        if got == str(PROTOCOL):
            await self.app(scope, receive, send)
            return
        client = got if got is not None else f"none (no {PROTOCOL_HEADER} header)"
        body = json.dumps(
            {
                "kind": "version",
                "type": "VersionMismatch",
                "error": f"version mismatch: service {PROTOCOL}, client {client}",
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def bind(path: Path) -> socket.socket:
    """The listening socket at ``path``, 0600 from the start; a stale one is replaced."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ServiceError(f"{path} exists and is not a socket: remove it first")
        path.unlink()  # we hold the lock: whatever served here is gone
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(os.fspath(path))
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {path}: {exc.strerror or exc}") from exc
    finally:
        os.umask(old)
    sock.listen(512)
    return sock


def serve(
    config: ServiceConfig,
    on_ready: Callable[[Path, list[str]], None] | None = None,
    *,
    listen: Sequence[tuple[str, int]] = (),
) -> None:
    """Run the service for ``config.state_dir`` until stopped (see the module docstring).

    ``listen``: TCP addresses to serve too, behind :class:`.access.TokenGate`
    (port 0: any free one). ``on_ready(socket_path, urls)`` is called once the
    socket and every TCP listener listen (``urls``: ``http://HOST:PORT`` each).
    Raises ServiceError (already running, cannot listen) or StateError (the
    database cannot be written: full disk, locked) before or instead of serving.
    """
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = ServiceLock(config.state_dir)
    lock.acquire()
    try:
        asyncio.run(_main(config, on_ready, listen))
    finally:
        lock.release()


def _server(app: Any, http: Any = "h11") -> _Server:
    return _Server(
        uvicorn.Config(
            app,
            http=http,
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=3,
        )
    )


async def _main(
    config: ServiceConfig,
    on_ready: Callable[[Path, list[str]], None] | None,
    listen: Sequence[tuple[str, int]],
) -> None:
    ctl = Controller(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    ctl.stop = stop
    path = config.state_dir / SOCKET_NAME
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    socks: list[socket.socket] = []
    try:
        ctl.start()  # journaled before anyone can connect: a full disk fails here
        tcp = [access.bind_tcp(host, port) for host, port in listen]
        socks += tcp
        store = access.TokenStore(config.state_dir)
        if tcp:
            store.token("admin")  # there is a token to give before anyone can ask
        socks.insert(0, bind(path))
        app = build_app(ctl)
        app.state.listen = [access.url_of(s) for s in tcp]
        servers = [(_server(app, PeerCheckedH11), socks[0])]
        servers += [
            (_server(access.TokenGate(app, store, port=s.getsockname()[1])), s) for s in tcp
        ]
        running = asyncio.create_task(ctl.run(stop), name="controller")
        serving = [
            asyncio.create_task(srv.serve(sockets=[s]), name=f"http {s.getsockname()}")
            for srv, s in servers
        ]
        if on_ready is not None:
            on_ready(path, app.state.listen)
        await asyncio.wait([running, *serving], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for srv, _ in servers:
            srv.should_exit = True
        await asyncio.gather(running, *serving, return_exceptions=True)
        running.result()  # the controller's own failure is the service's
        for task in serving:
            task.result()  # a listener that failed
        if ctl.stop_problem:
            log.warning("stopped, but the stop was not journaled: %s", ctl.stop_problem)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for s in socks:
            s.close()
        if socks:  # the Unix socket was bound: ours, the lock kept every other service out
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        ctl.close()
