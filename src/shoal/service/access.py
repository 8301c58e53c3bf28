"""Who may use ``shoal serve`` over TCP: bearer tokens, the browser's session cookie, CSRF.

The owner-only Unix socket needs none of this (the peer uid check is its
authentication). TCP listens only when ``shoal serve --listen HOST:PORT`` asks,
and then every request passes :class:`TokenGate` before any route:

* **Tokens** (:class:`TokenStore`): ``tokens.json`` in the state directory,
  mode 0600 from its first byte (written to a temporary file created 0600,
  renamed over), one token per scope: ``admin`` (everything) and ``read``
  (only what changes nothing). ``shoal serve token [--read-only]`` prints
  one, made when missing; ``--rotate`` replaces it and the running service
  refuses the old one from the next request (the store re-reads the file
  when its inode, size or mtime changes). Presented tokens are compared with
  :func:`hmac.compare_digest` against every stored one.
* **Answers**: no token or a wrong one: 401 (``WWW-Authenticate: Bearer``); a
  read token on a request that may change state or start a process: 403.
  What a read token may do is decided here alone (:func:`read_only_allows`):
  GET, HEAD and OPTIONS, plus the explicit :data:`READ_ALLOWED` list of POSTs
  that change nothing. XML-RPC decides per method, from
  ``request.state.scope`` (``"admin"`` or ``"read"``) set here.
* **Browser login** (Jupyter's convention): ``GET /any/path?token=TOKEN``
  answers 303 to the same URL without ``token``, setting an ``HttpOnly;
  SameSite=Strict`` session cookie (a value derived from the token, so the
  cookie never holds the bearer token and a rotation ends the session).
* **Cross-site requests**: a request authenticated by the cookie alone that
  is not GET/HEAD/OPTIONS must show it comes from the service's own page:
  ``Origin`` (else ``Referer``) equal to ``http://`` + its ``Host``, or the
  :data:`CSRF_HEADER` header, which a cross-site form cannot send (and a
  cross-site script cannot either: the service answers no CORS preflight).
  Otherwise 403.

Stdlib only (``shoal serve token`` imports it without FastAPI).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from shoal.errors import ServiceError, StateError, UsageError

TOKENS_NAME = "tokens.json"
SCOPES = ("admin", "read")
#: The header the dashboard's own page sends with every state-changing request.
CSRF_HEADER = "X-Shoal-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: (method, path) a read-only token may use besides the safe methods: they change nothing.
READ_ALLOWED = frozenset(
    {
        ("POST", "/api/v1/select"),  # evaluates an expression
        ("POST", "/RPC2"),  # XML-RPC refuses a read token per method (Method.writes)
    }
)


def read_only_allows(method: str, path: str) -> bool:
    """Whether a read-only token may make this request (the one place that decides)."""
    return method in SAFE_METHODS or (method, path.rstrip("/") or "/") in READ_ALLOWED


# -- the tokens ------------------------------------------------------------------------


class TokenStore:
    """The tokens of one state directory (``tokens.json``, 0600)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / TOKENS_NAME
        self._seen: tuple[int, int, int] | None = None
        self._tokens: dict[str, str] = {}

    def token(self, scope: str = "admin", *, rotate: bool = False) -> str:
        """The token of ``scope``: made when missing, a new one when ``rotate``."""
        if scope not in SCOPES:
            raise UsageError(f"token scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        with self._locked():
            tokens = self._read()
            if rotate or scope not in tokens:
                tokens[scope] = secrets.token_urlsafe(32)
                self._write(tokens)
            return tokens[scope]

    def scope_of(self, presented: str) -> str | None:
        """The scope of a presented bearer token, or None (compared in constant time)."""
        return self._match(presented, lambda token: token)

    def scope_of_session(self, presented: str) -> str | None:
        """The scope of a presented session cookie value, or None."""
        return self._match(presented, session_value)

    def _match(self, presented: str, form: Any) -> str | None:
        found = None
        given = presented.encode("utf-8", "surrogateescape")
        for scope, token in self._current().items():  # every one compared: no early exit
            if hmac.compare_digest(given, form(token).encode()):
                found = scope
        return found

    def _current(self) -> dict[str, str]:
        """The stored tokens, read again whenever the file changed (a rotation)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._tokens = None, {}
            return {}
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen != self._seen:
            self._tokens, self._seen = self._read(), seen
        return self._tokens

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read the service's tokens {self.path}: {exc}") from exc
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, dict):
            raise StateError(f"{self.path} is not a token file: remove it and make new tokens")
        return {
            s: str(t["token"])
            for s, t in tokens.items()
            if s in SCOPES and isinstance(t, dict) and t.get("token")
        }

    def _write(self, tokens: dict[str, str]) -> None:
        body = {"tokens": {s: {"token": t, "created": time.time()} for s, t in tokens.items()}}
        tmp = self.path.with_name(f".{TOKENS_NAME}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(body, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StateError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One maker or rotator at a time (the read-modify-write of the file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(".tokens.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def session_value(token: str) -> str:
    """The session cookie's value for ``token`` (derived: the cookie never holds the token)."""
    return hmac.new(token.encode(), b"shoal serve session", hashlib.sha256).hexdigest()


# -- the listening address -------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` for IPv6) as (host, port); UsageError otherwise."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"--listen {text}: write an IPv6 address in brackets, [ADDR]:PORT")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text}: expected HOST:PORT (PORT 0-65535; 0: any free)")
    return host, int(port)


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6, as the address says)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a listening socket (IPv6 in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# -- the gate --------------------------------------------------------------------------


class TokenGate:
    """ASGI middleware in front of the TCP listener (see the module docstring)."""

    def __init__(self, app: Any, store: TokenStore, *, port: int) -> None:
        self.app = app
        self.store = store
        self.cookie = f"shoal-session-{port}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            refusal = self._admit(scope)
        except StateError as exc:  # the token file cannot be read: nobody gets in
            refusal = (503, str(exc), [])
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message, headers = refusal
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await _answer(send, status, message, headers)

    def _admit(self, scope: dict[str, Any]) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """None when the request may pass (its scope noted), else (status, message, headers)."""
        headers = _headers(scope)
        method = scope.get("method", "GET")
        path = scope.get("path", "/")
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        login = [v for k, v in query if k == "token"]
        bearer = _bearer(headers.get("authorization", ""))
        by_cookie = False
        if login:
            level = self.store.scope_of(login[-1])
            if level is not None and method in ("GET", "HEAD") and scope["type"] == "http":
                return self._login(scope, path, query, level)
        elif bearer is not None:
            level = self.store.scope_of(bearer)
        else:
            level = self._cookie_scope(headers.get("cookie", ""))
            by_cookie = level is not None
        if level is None:
            why = "a wrong token" if login or bearer is not None else "no token"
            return (
                401,
                f"unauthorized: {why}; this service needs 'Authorization: Bearer TOKEN' on TCP"
                " (shoal serve token prints it)",
                [(b"www-authenticate", b'Bearer realm="shoal serve"')],
            )
        if level == "read" and not read_only_allows(method, path):
            why = "needs an admin token (this one is read-only)"
            return 403, f"forbidden: {method} {path} {why}", []
        if by_cookie and (method not in SAFE_METHODS or scope["type"] == "websocket"):
            problem = _cross_site(headers)
            if problem:
                return 403, f"forbidden: {method} {path} by the session cookie alone: {problem}", []
        scope.setdefault("state", {})["scope"] = level
        return None

    def _login(
        self, scope: dict[str, Any], path: str, query: list[tuple[str, str]], level: str
    ) -> tuple[int, str, list[tuple[bytes, bytes]]]:
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        location = quote(scope.get("root_path", "") + path) + (f"?{rest}" if rest else "")
        token = self.store.token(level)
        cookie = f"{self.cookie}={session_value(token)}; HttpOnly; SameSite=Strict; Path=/"
        return (
            303,
            f"logged in ({level}): see {location}",
            [(b"location", location.encode()), (b"set-cookie", cookie.encode())],
        )

    def _cookie_scope(self, header: str) -> str | None:
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie:
                return self.store.scope_of_session(value)
        return None


def _cross_site(headers: dict[str, str]) -> str | None:
    """Why a cookie-only request may be cross-site, or None when it shows it is not."""
    if headers.get(CSRF_HEADER.lower()):
        return None
    own = f"http://{headers.get('host', '')}"
    origin = headers.get("origin")
    if origin is not None:
        return None if origin == own else f"its Origin {origin} is not {own}"
    referer = headers.get("referer")
    if referer is not None:
        if referer == own or referer.startswith(own + "/"):
            return None
        return f"its Referer is not a page of {own}"
    return f"no Origin, Referer or {CSRF_HEADER} header shows it comes from {own}"


def _bearer(value: str) -> str | None:
    kind, _, token = value.strip().partition(" ")
    return token.strip() if kind.lower() == "bearer" and token.strip() else None


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in scope.get("headers", ()):
        out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out


async def _answer(send: Any, status: int, message: str, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps({"kind": "service", "type": "ServiceError", "error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
