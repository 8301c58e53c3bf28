"""The client of ``shoal serve``: HTTP/1.1 over the service's Unix socket, stdlib only.

The CLI, the tests and the web UI's server side speak to the service through
:class:`ServiceClient`, so the HTTP API is one contract tested once. It is on
``shoal run``'s start-up path, so it imports only ``os``, ``socket`` and
``json`` (no ``http.client``, no ``asyncio``); :meth:`ServiceClient.locate`
answers None at once when no service runs for the state directory (no socket
file, or a stale one left by a killed service: ECONNREFUSED).

Every request carries ``Shoal-Protocol: PROTOCOL``; the service refuses
another version with 400 and a message naming both. Error answers are JSON
``{"kind", "error", "node"?, "type", "fields"?}`` and are raised as the
matching :class:`~shoal.errors.ShoalError` subclass (``type`` names the class
in :mod:`shoal.errors`; ``kind`` picks the most general class of that kind
when the name is unknown): :func:`error_from` is the one place that maps them
back. Streams (newline-delimited JSON) are iterated line by line as the
service writes them.
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing costs ~3 ms of import on shoal run's start-up path
    from collections.abc import Iterator
    from typing import Any

#: The service protocol version this client speaks.
PROTOCOL = 1
#: The header that carries it on every request.
PROTOCOL_HEADER = "Shoal-Protocol"
#: The service's socket, in the state directory.
SOCKET_NAME = "serve.sock"
#: Longest header block accepted from the service.
MAX_HEADERS = 64 * 1024


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text: str) -> str:
    """Percent-encoding of a query value (urllib.parse costs an import of re)."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode())


def state_dir(explicit: str | os.PathLike[str] | None = None) -> str:
    """The state directory (``$SHOAL_HOME`` or the default), not created here."""
    if explicit is not None:
        return os.fspath(explicit)
    env = os.environ.get("SHOAL_HOME")
    return env or os.path.join(os.path.expanduser("~"), ".local", "state", "shoal")


def socket_path(state: str | os.PathLike[str] | None = None) -> str:
    return os.path.join(state_dir(state), SOCKET_NAME)


def error_from(payload: dict[str, Any], status: int) -> Exception:
    """The ShoalError an error answer stands for (see the module docstring)."""
    from shoal import errors

    message = str(payload.get("error") or f"service answered HTTP {status}")
    kind = str(payload.get("kind") or "service")
    cls = getattr(errors, str(payload.get("type") or ""), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.ShoalError)):
        cls = next(
            (
                c
                for c in errors.ShoalError.__subclasses__()
                if c.kind == kind  # direct children first: the most general of a kind
            ),
            errors.ServiceError,
        )
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    for key, value in (payload.get("fields") or {}).items():
        setattr(exc, key, value)
    if payload.get("node"):
        exc.node = str(payload["node"])
    return exc


class ServiceClient:
    """Requests to one service socket; each request on its own connection (cheap on AF_UNIX)."""

    def __init__(self, path: str, *, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    @classmethod
    def locate(
        cls, state: str | os.PathLike[str] | None = None, *, timeout: float = 60.0
    ) -> ServiceClient | None:
        """A client of the service running for ``state`` (default: ``$SHOAL_HOME``), or None."""
        path = socket_path(state)
        try:
            sock = cls._connect(path, 2.0)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return None
        except OSError:
            return None  # not a socket, or not ours to use: no service for this client
        sock.close()
        return cls(path, timeout=timeout)

    @staticmethod
    def _connect(path: str, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return sock

    # -- the API ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/status"))

    def events(
        self,
        after: int | None = None,
        *,
        node: str | None = None,
        topic: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events (``after``: resume after that sequence number; a ``lost`` line
        first when the journal was pruned past it)."""
        query = {"after": after, "node": node, "topic": topic, "limit": limit}
        return list(self.stream("GET", "/api/v1/events", query=query))

    def follow(
        self,
        after: int | None = None,
        *,
        node: str | None = None,
        topic: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events as they are stored, heartbeat lines (``{"heartbeat": ...}``) included."""
        query = {"after": after, "node": node, "topic": topic, "follow": 1}
        return self.stream("GET", "/api/v1/events", query=query)

    def stop(self) -> dict[str, Any]:
        """Ask the service to stop (it answers, then stops)."""
        return dict(self.request("POST", "/api/v1/service/stop"))

    # -- nodes, selections, plans -----------------------------------------------------

    def nodes(self, selection: str | None = None) -> list[dict[str, Any]]:
        """Inventory, link state, failed reason and facts of each node."""
        return list(self.request("GET", "/api/v1/nodes", query={"selection": selection}))

    def node(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/nodes/{quote(name)}"))

    def failed(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/nodes/failed"))

    def select(self, expr: str) -> dict[str, Any]:
        """What ``expr`` selects now (SelectionSyntaxError, with its caret, on bad syntax)."""
        return dict(self.request("POST", "/api/v1/select", body={"expr": expr}))

    def plans(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/plans"))

    def plan(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/plans/{quote(name)}"))

    def save_plan(self, name: str, expr: str) -> dict[str, Any]:
        return dict(self.request("PUT", f"/api/v1/plans/{quote(name)}", body={"expr": expr}))

    def remove_plan(self, name: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/api/v1/plans/{quote(name)}"))

    # -- runs, copies, pushes (jobs: started at once, then read or followed) -------------

    def start_run(
        self, command: str, selection: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """Start ``command`` on the selection: ``{"id", "href", "state"}`` at once."""
        body = {"command": command, "selection": selection, "options": options}
        return dict(self.request("POST", "/api/v1/runs", body=body))

    def start_copy(
        self, paths: list[str], selection: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """Start ``shoal cp PATHS...`` on the selection: ``{"id", "href", "state"}``."""
        body = {"paths": list(paths), "selection": selection, "options": options}
        return dict(self.request("POST", "/api/v1/copies", body=body))

    def start_push(
        self,
        source_dir: str,
        remote_dir: str,
        selection: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Start a push of ``source_dir`` (on the service's machine): ``{"id", "href", ...}``."""
        body = {
            "source_dir": source_dir,
            "remote_dir": remote_dir,
            "selection": selection,
            "options": options,
        }
        return dict(self.request("POST", "/api/v1/pushes", body=body))

    def job(self, href: str) -> dict[str, Any]:
        """A run, copy or push by its ``href``: state, progress, per-node results so far."""
        return dict(self.request("GET", href))

    def results(
        self, href: str, *, follow: bool = False, start: int = 0
    ) -> Iterator[dict[str, Any]]:
        """A run's or copy's per-node records, then ``{"summary": ...}`` (or ``error``,
        ``cancelled``); ``follow``: as the nodes finish."""
        query = {"follow": 1 if follow else None, "start": start or None}
        return self.stream("GET", f"{href}/results", query=query)

    def push_progress(self, href: str, *, follow: bool = False) -> Iterator[dict[str, Any]]:
        """A push's ``{"progress"}`` snapshots (per node), ``{"result"}`` per node, ``{"end"}``."""
        return self.stream("GET", f"{href}/progress", query={"follow": 1 if follow else None})

    def cancel(self, href: str) -> dict[str, Any]:
        return dict(self.request("DELETE", href))

    def versions(self, remote_dir: str, selection: str | None = None) -> list[dict[str, Any]]:
        query = {"remote_dir": remote_dir, "selection": selection}
        return list(self.request("GET", "/api/v1/versions", query=query))

    def rollback(
        self, remote_dir: str, selection: str | None = None, to: str | None = None
    ) -> list[dict[str, Any]]:
        body = {"remote_dir": remote_dir, "selection": selection, "to": to}
        return list(self.request("POST", "/api/v1/rollback", body=body))

    # -- applications and logs ---------------------------------------------------------

    def app(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/apps/{quote(name)}"))

    def app_spec(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/apps/{quote(name)}/spec"))

    def app_logs(self, name: str, **query: Any) -> dict[str, str]:
        """``component``, ``node``, ``lines``: every step and service log's tail by node."""
        return dict(self.request("GET", f"/api/v1/apps/{quote(name)}/logs", query=query))

    def barriers(self, name: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/api/v1/apps/{quote(name)}/barriers"))

    def log(
        self,
        node: str,
        program: str,
        *,
        offset: int | None = None,
        lines: int | None = None,
        follow: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """A program's log as ``{"data", "offset"}`` pages (``follow``: as it grows)."""
        query = {"offset": offset, "lines": lines, "follow": 1 if follow else None}
        return self.stream("GET", f"/api/v1/logs/{quote(node)}/{quote(program)}", query=query)

    def step_log(
        self,
        node: str,
        step: str,
        *,
        offset: int | None = None,
        lines: int | None = None,
        follow: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """A one-shot step's log (``<app>.<component>.<step>``) as :meth:`log` pages."""
        query = {"offset": offset, "lines": lines, "follow": 1 if follow else None}
        return self.stream("GET", f"/api/v1/logs/{quote(node)}/steps/{quote(step)}", query=query)

    # -- HTTP ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        target: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One JSON request; the decoded JSON answer (errors raised as ShoalError)."""
        with _Exchange(self, method, target, query, body) as ex:
            return json.loads(ex.read_all() or b"null")

    def stream(
        self,
        method: str,
        target: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """One request whose answer is newline-delimited JSON, yielded line by line."""
        with _Exchange(self, method, target, query, body) as ex:
            pending = b""
            for chunk in ex.chunks():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            if pending.strip():
                yield json.loads(pending)


class _Exchange:
    """One HTTP/1.1 request and its answer on a fresh connection."""

    def __init__(
        self,
        client: ServiceClient,
        method: str,
        target: str,
        query: dict[str, Any] | None,
        body: Any,
    ) -> None:
        from shoal.errors import ServiceError

        params = [f"{k}={quote(str(v))}" for k, v in (query or {}).items() if v is not None]
        if params:
            target += "?" + "&".join(params)
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: shoal\r\n{PROTOCOL_HEADER}: {PROTOCOL}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n"
        )
        if body is not None:
            head += "Content-Type: application/json\r\n"
        self.where = client.path
        try:
            self.sock = ServiceClient._connect(client.path, client.timeout)
        except OSError as exc:
            raise ServiceError(f"no service answers on {client.path}: {exc.strerror}") from exc
        try:
            self.sock.sendall(head.encode() + b"\r\n" + data)
            self.file = self.sock.makefile("rb")
            self.status, self.headers = self._read_head()
        except OSError as exc:
            self.sock.close()
            raise self._gone(exc) from exc
        except BaseException:
            self.sock.close()
            raise
        if self.status >= 400:
            try:
                text = self.read_all()
                payload = json.loads(text) if text else {}
            except (OSError, ValueError):
                payload = {}
            finally:
                self.close()
            raise error_from(payload if isinstance(payload, dict) else {}, self.status)

    def _gone(self, exc: BaseException) -> Exception:
        from shoal.errors import ServiceError

        why = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        return ServiceError(f"the service on {self.where} stopped answering: {why}")

    def _read_head(self) -> tuple[int, dict[str, str]]:
        line = self.file.readline(MAX_HEADERS)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ConnectionError(f"not an HTTP answer: {line[:60]!r}")
        headers: dict[str, str] = {}
        total = len(line)
        while True:
            h = self.file.readline(MAX_HEADERS)
            total += len(h)
            if total > MAX_HEADERS or not h:
                raise ConnectionError("header block cut short or too long")
            if h in (b"\r\n", b"\n"):
                return int(parts[1]), headers
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives (chunked or Content-Length or until close)."""
        try:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size_line = self.file.readline(1024)
                    if not size_line:
                        raise ConnectionError("stream cut in the middle")
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.file.readline(MAX_HEADERS) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return
                    data = self.file.read(size)
                    self.file.readline(16)
                    if len(data) < size:
                        raise ConnectionError("stream cut in the middle")
                    yield data
            elif "content-length" in self.headers:
                left = int(self.headers["content-length"])
                while left > 0:
                    data = self.file.read1(min(left, 65536))
                    if not data:
                        raise ConnectionError("answer cut in the middle")
                    left -= len(data)
                    yield data
            else:
                while data := self.file.read1(65536):
                    yield data
        except (OSError, ValueError) as exc:
            raise self._gone(exc) from exc

    def read_all(self) -> bytes:
        return b"".join(self.chunks())

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> _Exchange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
